-- The auth service (Supabase Auth / GoTrue compatible), as PL/pgSQL: its plans are kept per
-- connection. The edge parses HTTP and signs JWTs; everything else is here, so two edges
-- share every rule, counter and session.
--
-- Each endpoint is one function `crm_private.auth_<endpoint>(req jsonb) RETURNS jsonb`.
-- `req` is {body, query, ip, user_agent, user: {id, session_id} (a verified bearer token),
-- id (a path parameter)}. The reply is one of:
--   {"error": {status, code, message, ...}}   GoTrue's error (the edge adds retry_after as
--                                             Retry-After); only counters were written
--   {"session": {claims, refresh_token, user}, "redirect_to": ...}
--                                             the edge signs claims into an access token
--   {"body": ..., "total": n}                 a JSON reply as is (total: admin list pages)
--   {"status": 204}                           no content
-- They are SECURITY DEFINER (they read and write auth.*) with a pinned search_path, and only
-- crm_auth, the role the edge's auth endpoints run as, may call them (grants.sql).

--------------------------------------------------------------------------------------------
-- Small helpers
--------------------------------------------------------------------------------------------

-- How long a session lives without being used or refreshed (30 days unless set), and
-- whether a session is live, as GET/PUT /user and the refresh grant check it. The gate
-- (crm_private.begin_request) writes the same rule out in its kept plan, for speed: keep
-- them in step.
CREATE FUNCTION crm_private.session_inactivity_seconds() RETURNS double precision
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $$
    SELECT coalesce((SELECT (c.value #>> '{}')::double precision FROM crm_private.auth_settings c
                      WHERE c.key = 'session_inactivity_timeout'), 2592000)
$$;
COMMENT ON FUNCTION crm_private.session_inactivity_seconds() IS 'Seconds a session may go unused before it ends (setting session_inactivity_timeout, default 30 days).';

-- Scalar arguments (a session's not_after, and when it was last used or refreshed) so the
-- planner inlines it; a whole-row argument would make it a per-row SQL function call.
CREATE FUNCTION crm_private.session_is_live(not_after timestamptz, last_used timestamptz) RETURNS boolean
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $$
    SELECT (not_after IS NULL OR not_after > pg_catalog.now())
       AND last_used > pg_catalog.now() - pg_catalog.make_interval(secs => crm_private.session_inactivity_seconds())
$$;
COMMENT ON FUNCTION crm_private.session_is_live(timestamptz, timestamptz) IS 'Whether a session is live: not past not_after, and used or refreshed (last_used: coalesce(updated_at, created_at)) within the inactivity timeout.';

-- Every setting with its default, overlaid with crm_private.auth_settings.
CREATE FUNCTION crm_private.auth_config() RETURNS jsonb
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    RETURN jsonb_build_object(
        'site_url', 'http://localhost:3000',
        'uri_allow_list', '[]'::jsonb,
        'autoconfirm', false,
        'disable_signup', false,
        'password_min_length', 8,
        'session_inactivity_timeout', crm_private.session_inactivity_seconds(),
        'session_timebox', 0,
        'refresh_token_reuse_interval', 10,
        'otp_expiry', 86400,
        'invite_expiry', 604800,
        'login_failures_per_email', 10,
        'login_failures_per_ip', 50,
        'login_window', 300,
        'signups_per_ip', 30,
        'signups_per_email', 5,
        'recovers_per_ip', 30,
        'recovers_per_email', 5,
        'verifies_per_ip', 60,
        'verify_failures_per_email', 5,
        'reauthentication_expiry', 300,
        'security_burst_per_minute', 20,
        'send_window', 3600)
        || coalesce((SELECT jsonb_object_agg(s.key, s.value) FROM crm_private.auth_settings s), '{}'::jsonb);
END
$$;
COMMENT ON FUNCTION crm_private.auth_config() IS 'Every auth setting: the defaults, overlaid with the rows of crm_private.auth_settings.';

CREATE FUNCTION crm_private.auth_error(status integer, code text, message text, extra jsonb DEFAULT '{}')
    RETURNS jsonb
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT pg_catalog.jsonb_build_object('error',
              pg_catalog.jsonb_build_object('status', status, 'code', code, 'message', message) || extra) $$;
COMMENT ON FUNCTION crm_private.auth_error(integer, text, text, jsonb) IS 'A GoTrue error reply: {error: {status, code, message, ...}}.';

-- sha256, hex: how every bearer secret (refresh token, link token) is stored.
CREATE FUNCTION crm_private.auth_digest(secret text) RETURNS text
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    AS $$ SELECT pg_catalog.encode(pg_catalog.sha256(pg_catalog.convert_to(secret, 'UTF8')), 'hex') $$;
COMMENT ON FUNCTION crm_private.auth_digest(text) IS 'sha256 (hex) of a secret: refresh and link tokens are stored only this way.';

-- A one-time code and a link token: {code, link_token}. The link token (the token_hash of a
-- link) is 256 random bits, not derived from the code as GoTrue derives it, so knowing the
-- email does not let anyone search the code space through it; the 6-digit code, typed with
-- the email, is throttled per email at /verify instead. Only digests are stored: the link
-- token's (auth_digest) and the code's bound to its account (auth_code_digest).
CREATE FUNCTION crm_private.auth_new_otp(email text) RETURNS text[]
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    RETURN ARRAY[crm_private.random_digits(6), encode(sha224(convert_to(crm_private.random_token(32), 'UTF8')), 'hex')];
END
$$;
COMMENT ON FUNCTION crm_private.auth_new_otp(text) IS 'A six-digit one-time code and a random link token: {code, link_token}.';

-- The stored form of a one-time code: bound to what it is for (a user id, or an invitation's
-- email), so equal codes of different accounts differ.
CREATE FUNCTION crm_private.auth_code_digest(owner text, code text) RETURNS text
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    AS $$ SELECT crm_private.auth_digest(owner || ':' || code) $$;

-- Counts an attempt in a window shared by every edge. Returns the seconds to wait when the
-- bucket is over its limit (0: go ahead). count_hit false only looks. A limit <= 0 is off.
-- The count slides: this window's hits plus the previous window's, weighted by how much of
-- it still overlaps the last window_seconds, so attempts cannot double up around a window
-- boundary.
CREATE FUNCTION crm_private.auth_throttle(bucket text, max_hits integer, window_seconds integer, count_hit boolean)
    RETURNS integer
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    v_window timestamptz;
    v_hits integer;
    v_previous integer;
    v_elapsed double precision;
    v_effective double precision;
BEGIN
    IF max_hits IS NULL OR max_hits <= 0 OR bucket IS NULL THEN
        RETURN 0;
    END IF;
    window_seconds := greatest(coalesce(window_seconds, 60), 1);
    v_window := to_timestamp(floor(extract(epoch FROM now()) / window_seconds) * window_seconds);
    v_elapsed := extract(epoch FROM now() - v_window) / window_seconds;
    IF count_hit THEN
        INSERT INTO crm_private.auth_throttle AS t (bucket, window_start, hits)
        VALUES (auth_throttle.bucket, v_window, 1)
        ON CONFLICT ON CONSTRAINT auth_throttle_pkey DO UPDATE SET hits = t.hits + 1
        RETURNING t.hits - 1 INTO v_hits;
        -- Old windows are removed now and then, by whoever happens to count.
        IF random() < 0.01 THEN
            DELETE FROM crm_private.auth_throttle t WHERE t.window_start < now() - interval '2 days';
        END IF;
    ELSE
        SELECT t.hits INTO v_hits FROM crm_private.auth_throttle t
         WHERE t.bucket = auth_throttle.bucket AND t.window_start = v_window;
    END IF;
    SELECT t.hits INTO v_previous FROM crm_private.auth_throttle t
     WHERE t.bucket = auth_throttle.bucket AND t.window_start = v_window - make_interval(secs => window_seconds);
    v_effective := coalesce(v_hits, 0) + coalesce(v_previous, 0) * (1 - v_elapsed);
    IF v_effective >= max_hits THEN
        IF coalesce(v_hits, 0) >= max_hits OR coalesce(v_previous, 0) = 0 THEN
            RETURN greatest(1, ceil(extract(epoch FROM v_window + make_interval(secs => window_seconds) - now())))::integer;
        END IF;
        -- Over only through the previous window's share: wait until enough of it has slid out.
        RETURN greatest(1, ceil(window_seconds * (1 - v_elapsed
                                 - (max_hits - coalesce(v_hits, 0) - 1)::double precision / v_previous)))::integer;
    END IF;
    RETURN 0;
END
$$;
COMMENT ON FUNCTION crm_private.auth_throttle(text, integer, integer, boolean) IS 'Counts an attempt in a bucket''s current window; returns the seconds to wait if over the limit, else 0.';

-- The client address the edge saw, or NULL.
CREATE FUNCTION crm_private.auth_ip(req jsonb) RETURNS inet
    LANGUAGE plpgsql IMMUTABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    RETURN (req ->> 'ip')::inet;
EXCEPTION WHEN invalid_text_representation THEN
    RETURN NULL;
END
$$;

-- The throttling bucket of the client address: an IPv4 address, or an IPv6 /64 (one
-- client can have a whole /64).
CREATE FUNCTION crm_private.auth_ip_bucket(req jsonb) RETURNS text
    LANGUAGE plpgsql IMMUTABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    v_ip inet := crm_private.auth_ip(req);
BEGIN
    IF v_ip IS NULL THEN
        RETURN 'unknown';
    END IF;
    IF family(v_ip) = 6 THEN
        RETURN network(set_masklen(v_ip, 64))::text;
    END IF;
    RETURN host(v_ip);
END
$$;

-- A redirect target for verification links: the request's if it is under the site URL or an
-- entry of uri_allow_list, otherwise the site URL (GoTrue's rule; never an open redirect).
CREATE FUNCTION crm_private.auth_redirect(requested text, cfg jsonb) RETURNS text
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    allowed text;
BEGIN
    IF requested IS NULL OR requested = '' OR requested ~ '[\s[:cntrl:]"''`<>\\]' THEN
        RETURN cfg ->> 'site_url';
    END IF;
    FOR allowed IN
        SELECT cfg ->> 'site_url'
        UNION ALL SELECT jsonb_array_elements_text(coalesce(cfg -> 'uri_allow_list', '[]'))
    LOOP
        IF allowed <> '' AND (requested = allowed OR starts_with(requested, rtrim(allowed, '/') || '/')
                              OR starts_with(requested, allowed || '?') OR starts_with(requested, allowed || '#')) THEN
            RETURN requested;
        END IF;
    END LOOP;
    RETURN cfg ->> 'site_url';
END
$$;

-- Queues an email with a verification link and code (written in the caller's transaction).
CREATE FUNCTION crm_private.auth_queue_email(tenant uuid, kind text, recipient text, otp text[], redirect_to text)
    RETURNS void
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    cfg jsonb := crm_private.auth_config();
    v_link text;
    v_subject text;
    v_intro text;
BEGIN
    v_link := rtrim(cfg ->> 'site_url', '/') || '/auth/v1/verify?token=' || otp[2] || '&type=' || kind
              || '&redirect_to=' || crm_private.url_encode(crm_private.auth_redirect(redirect_to, cfg));
    CASE kind
        WHEN 'signup' THEN
            v_subject := 'Confirm your signup';
            v_intro := 'Confirm your email address to finish signing up for Aura.';
        WHEN 'invite' THEN
            v_subject := 'You have been invited to Aura';
            v_intro := 'You have been invited to join a workspace on Aura. Follow the link to accept and set your password (valid for 7 days, once).';
        WHEN 'recovery' THEN
            v_subject := 'Reset your password';
            v_intro := 'Follow the link to reset your Aura password. If you did not ask for this, ignore this email.';
        WHEN 'magiclink' THEN
            v_subject := 'Your sign-in link';
            v_intro := 'Follow the link to sign in to Aura.';
        ELSE
            v_subject := 'Confirm your new email address';
            v_intro := 'Follow the link to confirm your new email address for Aura.';
    END CASE;
    INSERT INTO core.email_outbox (tenant_id, kind, recipient, subject, body)
    VALUES (tenant, kind, recipient, v_subject,
            v_intro || E'\n\n' || v_link || E'\n\nOr enter this code:\nCode: ' || otp[1] || E'\n');
END
$$;
COMMENT ON FUNCTION crm_private.auth_queue_email(uuid, text, text, text[], text) IS 'Writes a verification email (link and code) to core.email_outbox in the current transaction.';

-- The user's workspace: the oldest membership (in this phase a user has one).
CREATE FUNCTION crm_private.auth_membership(user_id uuid)
    RETURNS TABLE (tenant_id uuid, role text, member_status text, tenant_status text)
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    RETURN QUERY
    SELECT m.tenant_id, m.role, m.status, t.status
      FROM core.memberships m JOIN core.tenants t ON t.id = m.tenant_id
     WHERE m.user_id = auth_membership.user_id
     ORDER BY m.created_at, m.id
     LIMIT 1;
END
$$;

-- GoTrue's user object, with the workspace in app_metadata.
CREATE FUNCTION crm_private.auth_user_json(u auth.users) RETURNS jsonb
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    v_identities jsonb;
    v_member record;
    v_app jsonb := coalesce(u.raw_app_meta_data, '{}'::jsonb) - 'tenant_id' - 'tenant_role';
BEGIN
    SELECT coalesce(jsonb_agg(jsonb_build_object(
               'identity_id', i.id, 'id', i.provider_id, 'user_id', i.user_id,
               'identity_data', i.identity_data, 'provider', i.provider,
               'last_sign_in_at', i.last_sign_in_at, 'created_at', i.created_at,
               'updated_at', i.updated_at, 'email', i.email) ORDER BY i.created_at, i.id), '[]'::jsonb)
      INTO v_identities
      FROM auth.identities i WHERE i.user_id = u.id;
    SELECT * INTO v_member FROM crm_private.auth_membership(u.id);
    IF v_member.tenant_id IS NOT NULL THEN
        v_app := v_app || jsonb_build_object('tenant_id', v_member.tenant_id, 'tenant_role', v_member.role);
    END IF;
    RETURN jsonb_build_object(
            'id', u.id, 'aud', coalesce(u.aud, 'authenticated'), 'role', coalesce(u.role, 'authenticated'),
            'email', coalesce(u.email, ''), 'phone', coalesce(u.phone, ''),
            'app_metadata', v_app, 'user_metadata', coalesce(u.raw_user_meta_data, '{}'::jsonb),
            'identities', v_identities, 'created_at', u.created_at, 'updated_at', u.updated_at,
            'is_anonymous', coalesce(u.is_anonymous, false))
        || jsonb_strip_nulls(jsonb_build_object(
            'email_confirmed_at', u.email_confirmed_at, 'confirmed_at', u.confirmed_at,
            'invited_at', u.invited_at, 'confirmation_sent_at', u.confirmation_sent_at,
            'recovery_sent_at', u.recovery_sent_at, 'new_email', nullif(u.email_change, ''),
            'email_change_sent_at', CASE WHEN coalesce(u.email_change, '') <> '' THEN u.email_change_sent_at END,
            'last_sign_in_at', u.last_sign_in_at, 'banned_until', u.banned_until,
            'deleted_at', u.deleted_at));
END
$$;
COMMENT ON FUNCTION crm_private.auth_user_json(auth.users) IS 'GoTrue''s user object for a user, with tenant_id and tenant_role in app_metadata.';

CREATE FUNCTION crm_private.auth_new_refresh_token(user_id uuid, session_id uuid, parent text) RETURNS text
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    v_token text := crm_private.random_token(24);
BEGIN
    INSERT INTO auth.refresh_tokens (instance_id, token, user_id, revoked, created_at, updated_at, parent, session_id)
    VALUES ('00000000-0000-0000-0000-000000000000', crm_private.auth_digest(v_token), user_id::text,
            false, now(), now(), parent, session_id);
    RETURN v_token;
END
$$;

-- The session reply: the claims the edge signs (it adds iss, aud, iat, exp), the refresh
-- token and the user.
CREATE FUNCTION crm_private.auth_session_reply(u auth.users, session_id uuid, refresh_token text, method text)
    RETURNS jsonb
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    v_user jsonb := crm_private.auth_user_json(u);
BEGIN
    RETURN jsonb_build_object('session', jsonb_build_object(
        'claims', jsonb_build_object(
            'sub', u.id, 'email', coalesce(u.email, ''), 'phone', '',
            'app_metadata', v_user -> 'app_metadata', 'user_metadata', v_user -> 'user_metadata',
            'role', 'authenticated', 'aal', 'aal1',
            'amr', jsonb_build_array(jsonb_build_object('method', method, 'timestamp', floor(extract(epoch FROM now()))::bigint)),
            'session_id', session_id, 'is_anonymous', coalesce(u.is_anonymous, false)),
        'refresh_token', refresh_token,
        'user', v_user));
END
$$;

-- A new session for a user who has just proven who they are.
CREATE FUNCTION crm_private.auth_issue_session(user_id uuid, req jsonb, method text) RETURNS jsonb
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    cfg jsonb := crm_private.auth_config();
    v_session uuid := gen_random_uuid();
    v_token text;
    u auth.users;
    v_timebox integer := coalesce((cfg ->> 'session_timebox')::integer, 0);
BEGIN
    INSERT INTO auth.sessions (id, user_id, created_at, updated_at, aal, not_after, refreshed_at, user_agent, ip)
    VALUES (v_session, user_id, now(), now(), 'aal1',
            CASE WHEN v_timebox > 0 THEN now() + make_interval(secs => v_timebox) END,
            now() AT TIME ZONE 'UTC', left(req ->> 'user_agent', 512), crm_private.auth_ip(req));
    v_token := crm_private.auth_new_refresh_token(user_id, v_session, NULL);
    UPDATE auth.users x SET last_sign_in_at = now(), updated_at = now()
     WHERE x.id = auth_issue_session.user_id RETURNING * INTO u;
    UPDATE auth.identities i SET last_sign_in_at = now() WHERE i.user_id = auth_issue_session.user_id;
    PERFORM crm_private.audit_auth(auth_issue_session.user_id, 'auth.signed_in', req,
        jsonb_build_object('after', jsonb_build_object('session_id', v_session, 'method', method)));
    RETURN crm_private.auth_session_reply(u, v_session, v_token, method);
END
$$;
COMMENT ON FUNCTION crm_private.auth_issue_session(uuid, jsonb, text) IS 'Starts a session for a user: the session row, its first refresh token, and the reply the edge signs.';

-- Why a user may not have a session now (NULL: they may): banned, deleted, or their only
-- workspace membership deactivated or the workspace suspended.
CREATE FUNCTION crm_private.auth_refusal(u auth.users) RETURNS jsonb
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    v_member record;
BEGIN
    IF u.deleted_at IS NOT NULL THEN
        RETURN crm_private.auth_error(400, 'invalid_credentials', 'Invalid login credentials');
    END IF;
    IF u.banned_until IS NOT NULL AND u.banned_until > now() THEN
        RETURN crm_private.auth_error(400, 'user_banned', 'User is banned');
    END IF;
    SELECT * INTO v_member FROM crm_private.auth_membership(u.id);
    IF v_member.tenant_id IS NOT NULL THEN
        -- As the gate decides (pg_crm's domain::lifecycle): during a pending deletion only
        -- the workspace's active admins sign in (to cancel it).
        IF v_member.tenant_status = 'pending_deletion' AND (v_member.role <> 'admin' OR v_member.member_status <> 'active') THEN
            RETURN crm_private.auth_error(400, 'user_banned', 'This workspace is scheduled for deletion');
        ELSIF v_member.tenant_status = 'deleted' THEN
            RETURN crm_private.auth_error(400, 'user_banned', 'This workspace has been deleted');
        ELSIF v_member.tenant_status NOT IN ('active', 'pending_deletion') THEN
            RETURN crm_private.auth_error(400, 'user_banned', 'This workspace is suspended');
        END IF;
        IF v_member.member_status <> 'active' THEN
            RETURN crm_private.auth_error(400, 'user_banned', 'Your membership of this workspace is deactivated');
        END IF;
    END IF;
    RETURN NULL;
END
$$;

-- Request validation shared by the endpoints.
CREATE FUNCTION crm_private.auth_text(body jsonb, field text) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT CASE WHEN pg_catalog.jsonb_typeof(body -> field) = 'string' THEN body ->> field END $$;

CREATE FUNCTION crm_private.auth_bad_type(body jsonb, fields text[], kind text) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$
    SELECT f FROM pg_catalog.unnest(fields) AS f
     WHERE body ? f AND pg_catalog.jsonb_typeof(body -> f) NOT IN (kind, 'null')
     LIMIT 1
$$;

-- The password rules: NULL if acceptable, else the error reply.
CREATE FUNCTION crm_private.auth_password_refusal(password text, cfg jsonb) RETURNS jsonb
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    v_min integer := coalesce((cfg ->> 'password_min_length')::integer, 8);
    v_problem text := crm_private.password_problem(password, v_min);
BEGIN
    IF v_problem = 'too_long' THEN
        RETURN crm_private.auth_error(422, 'validation_failed', 'Password cannot be longer than 72 characters');
    ELSIF v_problem IS NOT NULL THEN
        RETURN crm_private.auth_error(422, 'weak_password',
            format('Password should be at least %s characters.', v_min),
            jsonb_build_object('weak_password', jsonb_build_object('reasons', jsonb_build_array('length'))));
    END IF;
    RETURN NULL;
END
$$;

-- The user of a verified access token whose session is live, or an error reply.
CREATE FUNCTION crm_private.auth_current_user(req jsonb, OUT u auth.users, OUT refusal jsonb)
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    cfg jsonb := crm_private.auth_config();
    v_user uuid;
    v_session uuid;
BEGIN
    BEGIN
        v_user := (req #>> '{user,id}')::uuid;
        v_session := (req #>> '{user,session_id}')::uuid;
    EXCEPTION WHEN invalid_text_representation THEN
        v_user := NULL;
    END;
    IF v_user IS NULL OR v_session IS NULL OR NOT EXISTS (
        SELECT 1 FROM auth.sessions s
         WHERE s.id = v_session AND s.user_id = v_user
           AND crm_private.session_is_live(s.not_after, coalesce(s.updated_at, s.created_at))) THEN
        refusal := crm_private.auth_error(403, 'session_not_found', 'Session from session_id claim in JWT does not exist');
        RETURN;
    END IF;
    SELECT * INTO u FROM auth.users x WHERE x.id = v_user;
    IF NOT FOUND OR u.deleted_at IS NOT NULL THEN
        refusal := crm_private.auth_error(403, 'user_not_found', 'User from sub claim in JWT does not exist');
    ELSIF u.banned_until IS NOT NULL AND u.banned_until > now() THEN
        refusal := crm_private.auth_error(403, 'user_banned', 'User is banned');
    END IF;
END
$$;

-- Issues a link token for a user and queues the email. kind: signup, recovery, magiclink.
CREATE FUNCTION crm_private.auth_send_link(u auth.users, kind text, redirect_to text) RETURNS void
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    v_otp text[] := crm_private.auth_new_otp(u.email);
    v_hash text := crm_private.auth_digest(v_otp[2]);
    v_code text := crm_private.auth_code_digest(u.id::text, v_otp[1]);
    v_type auth.one_time_token_type := CASE kind WHEN 'signup' THEN 'confirmation_token' ELSE 'recovery_token' END;
    v_tenant uuid := (SELECT m.tenant_id FROM crm_private.auth_membership(u.id) m);
BEGIN
    IF kind = 'signup' THEN
        UPDATE auth.users x SET confirmation_token = v_code, confirmation_sent_at = now() WHERE x.id = u.id;
    ELSE
        UPDATE auth.users x SET recovery_token = v_code, recovery_sent_at = now() WHERE x.id = u.id;
    END IF;
    INSERT INTO auth.one_time_tokens (id, user_id, token_type, token_hash, relates_to, created_at, updated_at)
    VALUES (gen_random_uuid(), u.id, v_type, v_hash, u.email, now() AT TIME ZONE 'UTC', now() AT TIME ZONE 'UTC')
    ON CONFLICT (user_id, token_type) DO UPDATE
        SET token_hash = EXCLUDED.token_hash, relates_to = EXCLUDED.relates_to,
            created_at = EXCLUDED.created_at, updated_at = EXCLUDED.updated_at;
    PERFORM crm_private.auth_queue_email(v_tenant, kind, u.email, v_otp, redirect_to);
END
$$;

-- Ends sessions of a user: all, or all but one.
CREATE FUNCTION crm_private.auth_end_sessions(user_id uuid, except_session uuid DEFAULT NULL) RETURNS void
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    DELETE FROM auth.sessions s
     WHERE s.user_id = auth_end_sessions.user_id
       AND (except_session IS NULL OR s.id <> except_session);
END
$$;
COMMENT ON FUNCTION crm_private.auth_end_sessions(uuid, uuid) IS 'Ends a user''s sessions (all, or all but one): their refresh tokens go with them and the gate refuses their access tokens at once.';

--------------------------------------------------------------------------------------------
-- POST /signup: the user and their workspace, with them as its admin (PRD F1.1).
--------------------------------------------------------------------------------------------
CREATE FUNCTION crm_private.auth_signup(req jsonb) RETURNS jsonb
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    cfg jsonb := crm_private.auth_config();
    b jsonb := coalesce(req -> 'body', '{}'::jsonb);
    v_data jsonb;
    v_email text;
    v_password text;
    v_refusal jsonb;
    v_wait integer;
    v_autoconfirm boolean := coalesce((cfg ->> 'autoconfirm')::boolean, false);
    v_company text;
    v_full_name text;
    v_name text;
    v_tenant uuid;
    v_id uuid := gen_random_uuid();
    u auth.users;
BEGIN
    IF coalesce((cfg ->> 'disable_signup')::boolean, false) THEN
        RETURN crm_private.auth_error(422, 'signup_disabled', 'Signups not allowed for this instance');
    END IF;
    IF crm_private.auth_bad_type(b, ARRAY['email', 'password'], 'string') IS NOT NULL
       OR crm_private.auth_bad_type(b, ARRAY['data'], 'object') IS NOT NULL THEN
        RETURN crm_private.auth_error(400, 'validation_failed', 'Could not read the request body: email and password must be strings and data an object');
    END IF;
    v_data := coalesce(nullif(b -> 'data', 'null'::jsonb), '{}'::jsonb);
    IF coalesce(crm_private.auth_text(b, 'email'), '') = '' THEN
        RETURN crm_private.auth_error(400, 'validation_failed', 'To signup, please provide your email');
    END IF;
    v_email := crm_private.normalize_email(b ->> 'email');
    IF v_email IS NULL THEN
        RETURN crm_private.auth_error(400, 'validation_failed', 'Unable to validate email address: invalid format');
    END IF;
    v_password := crm_private.auth_text(b, 'password');
    IF coalesce(v_password, '') = '' THEN
        RETURN crm_private.auth_error(422, 'validation_failed', 'Signup requires a valid password');
    END IF;
    v_refusal := crm_private.auth_password_refusal(v_password, cfg);
    IF v_refusal IS NOT NULL THEN
        RETURN v_refusal;
    END IF;
    v_company := nullif(btrim(crm_private.auth_text(v_data, 'company_name')), '');
    v_full_name := nullif(btrim(crm_private.auth_text(v_data, 'full_name')), '');
    IF char_length(v_company) > 200 OR char_length(v_full_name) > 200 THEN
        RETURN crm_private.auth_error(422, 'validation_failed', 'company_name and full_name may have at most 200 characters');
    END IF;

    v_wait := greatest(
        crm_private.auth_throttle('signup:ip:' || crm_private.auth_ip_bucket(req), (cfg ->> 'signups_per_ip')::integer, (cfg ->> 'send_window')::integer, true),
        crm_private.auth_throttle('signup:email:' || crm_private.auth_digest(v_email), (cfg ->> 'signups_per_email')::integer, (cfg ->> 'send_window')::integer, true));
    IF v_wait > 0 THEN
        RETURN crm_private.auth_error(429, 'over_request_rate_limit', 'Request rate limit reached', jsonb_build_object('retry_after', v_wait));
    END IF;

    SELECT * INTO u FROM auth.users x WHERE x.email = v_email AND NOT x.is_sso_user FOR UPDATE;
    IF FOUND AND coalesce(u.encrypted_password, '') = '' AND u.deleted_at IS NULL
       AND NOT EXISTS (SELECT 1 FROM core.memberships m WHERE m.user_id = u.id) THEN
        -- An account nobody has claimed (made for an invitation, or by an operator, without a
        -- password): this signup claims it, as it would a new one. Its pending invitations
        -- stay; accepting one later is refused, as for any member of a workspace.
        v_id := u.id;
        UPDATE auth.users x
           SET encrypted_password = crm_private.password_hash(v_password),
               email_confirmed_at = CASE WHEN v_autoconfirm THEN now() ELSE x.email_confirmed_at END,
               raw_user_meta_data = coalesce(x.raw_user_meta_data, '{}'::jsonb) || v_data, updated_at = now()
         WHERE x.id = v_id
        RETURNING * INTO u;
    ELSIF FOUND THEN
        IF v_autoconfirm THEN
            RETURN crm_private.auth_error(422, 'user_already_exists', 'User already registered');
        END IF;
        IF u.email_confirmed_at IS NULL AND u.deleted_at IS NULL THEN
            -- Not confirmed yet: the latest signup's password is the one the link confirms, so
            -- an earlier signup by someone else with this address gains nothing.
            UPDATE auth.users x SET encrypted_password = crm_private.password_hash(v_password), updated_at = now()
             WHERE x.id = u.id;
            PERFORM crm_private.auth_send_link(u, 'signup', crm_private.auth_text(req -> 'query', 'redirect_to'));
            SELECT * INTO u FROM auth.users x WHERE x.id = u.id;
            RETURN jsonb_build_object('body', crm_private.auth_user_json(u));
        END IF;
        -- As GoTrue does without auto-confirm: a reply shaped like a new user's, so the
        -- response does not tell whether the address has an account.
        RETURN jsonb_build_object('body', jsonb_build_object(
            'id', gen_random_uuid(), 'aud', 'authenticated', 'role', 'authenticated', 'email', v_email,
            'phone', '', 'confirmation_sent_at', now(),
            'app_metadata', jsonb_build_object('provider', 'email', 'providers', jsonb_build_array('email')),
            'user_metadata', '{}'::jsonb, 'identities', '[]'::jsonb, 'created_at', now(),
            'updated_at', now(), 'is_anonymous', false));
    END IF;

    IF u.id IS NULL THEN
        INSERT INTO auth.users (instance_id, id, aud, role, email, encrypted_password, email_confirmed_at,
                                raw_app_meta_data, raw_user_meta_data, created_at, updated_at, is_sso_user, is_anonymous)
        VALUES ('00000000-0000-0000-0000-000000000000', v_id, 'authenticated', 'authenticated', v_email,
                crm_private.password_hash(v_password), CASE WHEN v_autoconfirm THEN now() END,
                jsonb_build_object('provider', 'email', 'providers', jsonb_build_array('email')),
                v_data, now(), now(), false, false)
        RETURNING * INTO u;
        INSERT INTO auth.identities (provider_id, user_id, identity_data, provider, created_at, updated_at)
        VALUES (v_id::text, v_id,
                jsonb_build_object('sub', v_id::text, 'email', v_email, 'email_verified', v_autoconfirm, 'phone_verified', false),
                'email', now(), now());
    END IF;

    v_name := coalesce(v_company,
                       left(coalesce(v_full_name, split_part(v_email, '@', 1)), 188) || '''s workspace');
    INSERT INTO core.tenants (name, slug, created_by, updated_by)
    VALUES (v_name, crm_private.slugify(v_name) || '-' || substr(md5(gen_random_uuid()::text), 1, 8), v_id, v_id)
    RETURNING id INTO v_tenant;
    PERFORM crm_private.seed_pipeline(v_tenant);
    INSERT INTO core.memberships (tenant_id, user_id, role, display_name, created_by, updated_by)
    VALUES (v_tenant, v_id, 'admin', v_full_name, v_id, v_id);

    IF v_autoconfirm THEN
        RETURN crm_private.auth_issue_session(v_id, req, 'password');
    END IF;
    PERFORM crm_private.auth_send_link(u, 'signup', crm_private.auth_text(req -> 'query', 'redirect_to'));
    SELECT * INTO u FROM auth.users x WHERE x.id = v_id;
    RETURN jsonb_build_object('body', crm_private.auth_user_json(u));
END
$$;
COMMENT ON FUNCTION crm_private.auth_signup(jsonb) IS 'POST /auth/v1/signup: creates the user and a new workspace with them as its admin, in one transaction.';

--------------------------------------------------------------------------------------------
-- POST /token?grant_type=password
--------------------------------------------------------------------------------------------
CREATE FUNCTION crm_private.auth_token_password(req jsonb) RETURNS jsonb
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    cfg jsonb := crm_private.auth_config();
    b jsonb := coalesce(req -> 'body', '{}'::jsonb);
    v_email text;
    v_password text;
    v_wait integer;
    v_ok boolean;
    v_refusal jsonb;
    v_window integer := (cfg ->> 'login_window')::integer;
    u auth.users;
BEGIN
    IF crm_private.auth_bad_type(b, ARRAY['email', 'password'], 'string') IS NOT NULL THEN
        RETURN crm_private.auth_error(400, 'validation_failed', 'Could not read the request body: email and password must be strings');
    END IF;
    v_password := crm_private.auth_text(b, 'password');
    IF coalesce(crm_private.auth_text(b, 'email'), '') = '' OR v_password IS NULL THEN
        RETURN crm_private.auth_error(400, 'validation_failed', 'Email and password are required');
    END IF;
    v_email := coalesce(crm_private.normalize_email(b ->> 'email'), lower(btrim(b ->> 'email')));
    IF char_length(v_email) > 255 THEN
        RETURN crm_private.auth_error(400, 'invalid_credentials', 'Invalid login credentials');
    END IF;
    v_wait := greatest(
        crm_private.auth_throttle('login:email:' || crm_private.auth_digest(v_email), (cfg ->> 'login_failures_per_email')::integer, v_window, false),
        crm_private.auth_throttle('login:ip:' || crm_private.auth_ip_bucket(req), (cfg ->> 'login_failures_per_ip')::integer, v_window, false));
    IF v_wait > 0 THEN
        RETURN crm_private.auth_error(429, 'over_request_rate_limit', 'Request rate limit reached', jsonb_build_object('retry_after', v_wait));
    END IF;
    SELECT * INTO u FROM auth.users x WHERE x.email = v_email AND NOT x.is_sso_user AND x.deleted_at IS NULL;
    IF FOUND AND u.encrypted_password IS NOT NULL AND u.encrypted_password <> '' THEN
        v_ok := crm_private.password_matches(v_password, u.encrypted_password);
    ELSE
        -- As long as a wrong password: the reply time does not tell whether the account exists.
        PERFORM crm_private.password_hash(left(v_password, 72));
        v_ok := false;
    END IF;
    IF NOT v_ok THEN
        PERFORM crm_private.auth_throttle('login:email:' || crm_private.auth_digest(v_email), (cfg ->> 'login_failures_per_email')::integer, v_window, true);
        PERFORM crm_private.auth_throttle('login:ip:' || crm_private.auth_ip_bucket(req), (cfg ->> 'login_failures_per_ip')::integer, v_window, true);
        IF u.id IS NOT NULL THEN
            PERFORM crm_private.audit_auth(u.id, 'auth.sign_in_failed', req, '{}', false);
        END IF;
        RETURN crm_private.auth_error(400, 'invalid_credentials', 'Invalid login credentials');
    END IF;
    IF u.email_confirmed_at IS NULL THEN
        RETURN crm_private.auth_error(400, 'email_not_confirmed', 'Email not confirmed');
    END IF;
    v_refusal := crm_private.auth_refusal(u);
    IF v_refusal IS NOT NULL THEN
        RETURN v_refusal;
    END IF;
    RETURN crm_private.auth_issue_session(u.id, req, 'password');
END
$$;
COMMENT ON FUNCTION crm_private.auth_token_password(jsonb) IS 'POST /auth/v1/token?grant_type=password: a session for a correct email and password; failures are counted per email and per client address.';

--------------------------------------------------------------------------------------------
-- POST /token?grant_type=refresh_token: rotation with reuse detection. A token used again
-- after it was rotated ends the whole session, unless within the short reuse interval
-- (concurrent refreshes by one client), which gets a new sibling token.
--------------------------------------------------------------------------------------------
CREATE FUNCTION crm_private.auth_token_refresh(req jsonb) RETURNS jsonb
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    cfg jsonb := crm_private.auth_config();
    b jsonb := coalesce(req -> 'body', '{}'::jsonb);
    v_token text := crm_private.auth_text(b, 'refresh_token');
    rt auth.refresh_tokens;
    s auth.sessions;
    u auth.users;
    v_refusal jsonb;
    v_new text;
BEGIN
    IF coalesce(v_token, '') = '' THEN
        RETURN crm_private.auth_error(400, 'validation_failed', 'refresh_token required');
    END IF;
    SELECT * INTO rt FROM auth.refresh_tokens t WHERE t.token = crm_private.auth_digest(v_token);
    IF NOT FOUND OR rt.session_id IS NULL THEN
        RETURN crm_private.auth_error(400, 'refresh_token_not_found', 'Invalid Refresh Token: Refresh Token Not Found');
    END IF;
    -- One refresh at a time per session.
    SELECT * INTO s FROM auth.sessions x WHERE x.id = rt.session_id FOR UPDATE;
    IF NOT FOUND THEN
        RETURN crm_private.auth_error(400, 'refresh_token_not_found', 'Invalid Refresh Token: Refresh Token Not Found');
    END IF;
    SELECT * INTO rt FROM auth.refresh_tokens t WHERE t.id = rt.id;
    IF NOT crm_private.session_is_live(s.not_after, coalesce(s.updated_at, s.created_at)) THEN
        DELETE FROM auth.sessions x WHERE x.id = s.id;
        RETURN crm_private.auth_error(400, 'session_expired', 'Invalid Refresh Token: Session Expired');
    END IF;
    IF rt.revoked THEN
        IF rt.updated_at > now() - make_interval(secs => (cfg ->> 'refresh_token_reuse_interval')::double precision) THEN
            v_new := crm_private.auth_new_refresh_token(s.user_id, s.id, rt.token);
        ELSE
            DELETE FROM auth.sessions x WHERE x.id = s.id;
            RETURN crm_private.auth_error(400, 'refresh_token_already_used', 'Invalid Refresh Token: Already Used');
        END IF;
    END IF;
    SELECT * INTO u FROM auth.users x WHERE x.id = s.user_id;
    v_refusal := crm_private.auth_refusal(u);
    IF v_refusal IS NOT NULL THEN
        RETURN v_refusal;
    END IF;
    IF v_new IS NULL THEN
        UPDATE auth.refresh_tokens t SET revoked = true, updated_at = now() WHERE t.id = rt.id;
        v_new := crm_private.auth_new_refresh_token(s.user_id, s.id, rt.token);
    END IF;
    UPDATE auth.sessions x SET updated_at = now(), refreshed_at = now() AT TIME ZONE 'UTC' WHERE x.id = s.id;
    RETURN crm_private.auth_session_reply(u, s.id, v_new, 'token_refresh');
END
$$;
COMMENT ON FUNCTION crm_private.auth_token_refresh(jsonb) IS 'POST /auth/v1/token?grant_type=refresh_token: rotates the refresh token; reusing a rotated one ends the session.';

--------------------------------------------------------------------------------------------
-- POST /logout?scope=global|local|others
--------------------------------------------------------------------------------------------
CREATE FUNCTION crm_private.auth_logout(req jsonb) RETURNS jsonb
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    v_scope text := coalesce(nullif(crm_private.auth_text(req -> 'query', 'scope'), ''), 'global');
    v_user uuid;
    v_session uuid;
BEGIN
    IF v_scope NOT IN ('global', 'local', 'others') THEN
        RETURN crm_private.auth_error(400, 'validation_failed', 'Unsupported logout scope: use global, local or others');
    END IF;
    BEGIN
        v_user := (req #>> '{user,id}')::uuid;
        v_session := (req #>> '{user,session_id}')::uuid;
    EXCEPTION WHEN invalid_text_representation THEN
        RETURN crm_private.auth_error(403, 'session_not_found', 'Session from session_id claim in JWT does not exist');
    END;
    IF v_session IS NULL OR NOT EXISTS (SELECT 1 FROM auth.sessions s WHERE s.id = v_session AND s.user_id = v_user) THEN
        RETURN crm_private.auth_error(403, 'session_not_found', 'Session from session_id claim in JWT does not exist');
    END IF;
    IF v_scope = 'local' THEN
        DELETE FROM auth.sessions s WHERE s.id = v_session;
    ELSIF v_scope = 'others' THEN
        PERFORM crm_private.auth_end_sessions(v_user, v_session);
    ELSE
        PERFORM crm_private.auth_end_sessions(v_user);
    END IF;
    PERFORM crm_private.audit_auth(v_user, 'auth.signed_out', req,
        jsonb_build_object('after', jsonb_build_object('session_id', v_session, 'scope', v_scope)));
    RETURN jsonb_build_object('status', 204);
END
$$;
COMMENT ON FUNCTION crm_private.auth_logout(jsonb) IS 'POST /auth/v1/logout: ends this session (local), the others, or all (global, the default).';

--------------------------------------------------------------------------------------------
-- GET /user and PUT /user
--------------------------------------------------------------------------------------------
CREATE FUNCTION crm_private.auth_user_get(req jsonb) RETURNS jsonb
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    cur record := crm_private.auth_current_user(req);
BEGIN
    IF cur.refusal IS NOT NULL THEN
        RETURN cur.refusal;
    END IF;
    RETURN jsonb_build_object('body', crm_private.auth_user_json(cur.u));
END
$$;
COMMENT ON FUNCTION crm_private.auth_user_get(jsonb) IS 'GET /auth/v1/user: the signed-in user.';

CREATE FUNCTION crm_private.auth_user_update(req jsonb) RETURNS jsonb
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    cfg jsonb := crm_private.auth_config();
    b jsonb := coalesce(req -> 'body', '{}'::jsonb);
    cur record := crm_private.auth_current_user(req);
    u auth.users;
    v_refusal jsonb;
    v_password text;
    v_email text;
    v_otp text[];
BEGIN
    IF cur.refusal IS NOT NULL THEN
        RETURN cur.refusal;
    END IF;
    u := cur.u;
    IF crm_private.auth_bad_type(b, ARRAY['email', 'password', 'nonce'], 'string') IS NOT NULL
       OR crm_private.auth_bad_type(b, ARRAY['data'], 'object') IS NOT NULL THEN
        RETURN crm_private.auth_error(400, 'validation_failed', 'Could not read the request body: email and password must be strings and data an object');
    END IF;
    v_password := crm_private.auth_text(b, 'password');
    IF b ? 'email' AND crm_private.auth_text(b, 'email') IS NOT NULL THEN
        v_email := crm_private.normalize_email(b ->> 'email');
        IF v_email IS NULL THEN
            RETURN crm_private.auth_error(400, 'validation_failed', 'Unable to validate email address: invalid format');
        END IF;
        IF v_email = u.email THEN
            v_email := NULL;
        ELSIF EXISTS (SELECT 1 FROM auth.users x WHERE x.email = v_email AND x.id <> u.id AND NOT x.is_sso_user) THEN
            RETURN crm_private.auth_error(422, 'email_exists', 'A user with this email address has already been registered');
        END IF;
    END IF;
    IF v_password IS NOT NULL THEN
        v_refusal := crm_private.auth_password_refusal(v_password, cfg);
        IF v_refusal IS NOT NULL THEN
            RETURN v_refusal;
        END IF;
        IF crm_private.password_matches(v_password, u.encrypted_password) THEN
            RETURN crm_private.auth_error(422, 'same_password', 'New password should be different from the old password.');
        END IF;
    END IF;

    IF jsonb_typeof(b -> 'data') = 'object' THEN
        UPDATE auth.users x
           SET raw_user_meta_data = jsonb_strip_nulls(coalesce(x.raw_user_meta_data, '{}'::jsonb) || (b -> 'data')),
               updated_at = now()
         WHERE x.id = u.id;
    END IF;
    IF v_password IS NOT NULL THEN
        UPDATE auth.users x
           SET encrypted_password = crm_private.password_hash(v_password), recovery_token = '',
               updated_at = now()
         WHERE x.id = u.id;
        DELETE FROM auth.one_time_tokens t WHERE t.user_id = u.id AND t.token_type = 'recovery_token';
        -- A new password ends every other session (a reset locks out whoever knew the old one).
        PERFORM crm_private.auth_end_sessions(u.id, (req #>> '{user,session_id}')::uuid);
        PERFORM crm_private.audit_auth(u.id, 'auth.password_changed', req);
    END IF;
    IF v_email IS NOT NULL THEN
        v_otp := crm_private.auth_new_otp(v_email);
        UPDATE auth.users x
           SET email_change = v_email, email_change_token_new = crm_private.auth_code_digest(u.id::text, v_otp[1]),
               email_change_sent_at = now(), email_change_confirm_status = 0, updated_at = now()
         WHERE x.id = u.id;
        INSERT INTO auth.one_time_tokens (id, user_id, token_type, token_hash, relates_to, created_at, updated_at)
        VALUES (gen_random_uuid(), u.id, 'email_change_token_new', crm_private.auth_digest(v_otp[2]), v_email,
                now() AT TIME ZONE 'UTC', now() AT TIME ZONE 'UTC')
        ON CONFLICT (user_id, token_type) DO UPDATE
            SET token_hash = EXCLUDED.token_hash, relates_to = EXCLUDED.relates_to,
                created_at = EXCLUDED.created_at, updated_at = EXCLUDED.updated_at;
        PERFORM crm_private.auth_queue_email((SELECT m.tenant_id FROM crm_private.auth_membership(u.id) m),
                                             'email_change', v_email, v_otp,
                                             crm_private.auth_text(req -> 'query', 'redirect_to'));
    END IF;
    SELECT * INTO u FROM auth.users x WHERE x.id = u.id;
    RETURN jsonb_build_object('body', crm_private.auth_user_json(u));
END
$$;
COMMENT ON FUNCTION crm_private.auth_user_update(jsonb) IS 'PUT /auth/v1/user: user_metadata (data), password (ends the other sessions), email (confirmed through a link to the new address).';

--------------------------------------------------------------------------------------------
-- POST /recover: the same reply whether or not the address has an account.
--------------------------------------------------------------------------------------------
CREATE FUNCTION crm_private.auth_recover(req jsonb) RETURNS jsonb
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    cfg jsonb := crm_private.auth_config();
    b jsonb := coalesce(req -> 'body', '{}'::jsonb);
    v_email text;
    v_wait integer;
    u auth.users;
BEGIN
    IF crm_private.auth_bad_type(b, ARRAY['email'], 'string') IS NOT NULL
       OR coalesce(crm_private.auth_text(b, 'email'), '') = '' THEN
        RETURN crm_private.auth_error(400, 'validation_failed', 'Password recovery requires an email');
    END IF;
    v_email := crm_private.normalize_email(b ->> 'email');
    IF v_email IS NULL THEN
        RETURN crm_private.auth_error(400, 'validation_failed', 'Unable to validate email address: invalid format');
    END IF;
    v_wait := greatest(
        crm_private.auth_throttle('recover:ip:' || crm_private.auth_ip_bucket(req), (cfg ->> 'recovers_per_ip')::integer, (cfg ->> 'send_window')::integer, true),
        crm_private.auth_throttle('recover:email:' || crm_private.auth_digest(v_email), (cfg ->> 'recovers_per_email')::integer, (cfg ->> 'send_window')::integer, true));
    IF v_wait > 0 THEN
        RETURN crm_private.auth_error(429, 'over_email_send_rate_limit', 'Email rate limit exceeded', jsonb_build_object('retry_after', v_wait));
    END IF;
    SELECT * INTO u FROM auth.users x WHERE x.email = v_email AND NOT x.is_sso_user AND x.deleted_at IS NULL;
    IF FOUND THEN
        PERFORM crm_private.auth_send_link(u, 'recovery', crm_private.auth_text(req -> 'query', 'redirect_to'));
        PERFORM crm_private.audit_auth(u.id, 'auth.password_reset_requested', req, '{}', false);
    END IF;
    RETURN jsonb_build_object('body', '{}'::jsonb);
END
$$;
COMMENT ON FUNCTION crm_private.auth_recover(jsonb) IS 'POST /auth/v1/recover: emails a recovery link if the address has an account; replies the same either way.';

--------------------------------------------------------------------------------------------
-- POST /reauthenticate (NFR-S8): a one-time code to the signed-in user's email, the `nonce`
-- that sensitive operations require (crm_private.require_reauthentication): member removal
-- now, workspace deletion and data export when they exist. Like GoTrue's, the code is
-- single use and short-lived (reauthentication_expiry, 300 s); a new request replaces it.
--------------------------------------------------------------------------------------------
CREATE FUNCTION crm_private.auth_reauthenticate(req jsonb) RETURNS jsonb
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    cfg jsonb := crm_private.auth_config();
    cur record := crm_private.auth_current_user(req);
    v_code text := crm_private.random_digits(6);
    v_wait integer;
BEGIN
    IF cur.refusal IS NOT NULL THEN
        RETURN cur.refusal;
    END IF;
    v_wait := crm_private.auth_throttle('reauthenticate:user:' || (cur.u).id, (cfg ->> 'recovers_per_email')::integer,
                                        (cfg ->> 'send_window')::integer, true);
    IF v_wait > 0 THEN
        RETURN crm_private.auth_error(429, 'over_email_send_rate_limit', 'Email rate limit exceeded', jsonb_build_object('retry_after', v_wait));
    END IF;
    UPDATE auth.users x
       SET reauthentication_token = crm_private.auth_code_digest('reauthentication:' || x.id, v_code),
           reauthentication_sent_at = now()
     WHERE x.id = (cur.u).id;
    INSERT INTO core.email_outbox (tenant_id, kind, recipient, subject, body)
    VALUES ((SELECT m.tenant_id FROM crm_private.auth_membership((cur.u).id) m), 'reauthentication', (cur.u).email,
            'Confirm it is you',
            'Enter this code in Aura to confirm a sensitive change (valid for '
            || greatest((cfg ->> 'reauthentication_expiry')::integer / 60, 1) || E' minutes, once).\n\nCode: ' || v_code
            || E'\n\nIf you did not ask for it, someone else may be using your account: change your password.\n');
    RETURN jsonb_build_object('body', '{}'::jsonb);
END
$$;
COMMENT ON FUNCTION crm_private.auth_reauthenticate(jsonb) IS 'POST /auth/v1/reauthenticate: emails the signed-in user a one-time code, the nonce sensitive operations require.';

-- Consumes the request user's reauthentication code, or refuses the operation (42501). Only
-- its digest is stored; it is cleared on use. A wrong code raises, which rolls back the
-- request, so guesses are bounded by the rate limit (AURA_RATE_LIMIT per user and minute:
-- 500 in the 5 minutes a code lives, against 1,000,000 codes).
CREATE FUNCTION crm_private.require_reauthentication(nonce text) RETURNS void
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    v_user uuid := crm_private.user_id();
BEGIN
    IF coalesce(btrim(nonce), '') = '' THEN
        RAISE EXCEPTION 'this operation needs a reauthentication nonce' USING ERRCODE = 'insufficient_privilege',
            DETAIL = 'field: nonce', HINT = 'POST /auth/v1/reauthenticate emails you a code; pass it as nonce';
    END IF;
    UPDATE auth.users x SET reauthentication_token = '', reauthentication_sent_at = NULL
     WHERE x.id = v_user
       AND x.reauthentication_token = crm_private.auth_code_digest('reauthentication:' || x.id, btrim(nonce))
       AND x.reauthentication_sent_at > now() - make_interval(secs => (crm_private.auth_config() ->> 'reauthentication_expiry')::integer);
    IF NOT FOUND THEN
        RAISE EXCEPTION 'the reauthentication nonce is wrong, used or expired' USING ERRCODE = 'insufficient_privilege',
            DETAIL = 'field: nonce', HINT = 'POST /auth/v1/reauthenticate emails you a new code';
    END IF;
END
$$;
COMMENT ON FUNCTION crm_private.require_reauthentication(text) IS 'Sensitive operations call this first: it consumes the request user''s fresh reauthentication code (POST /auth/v1/reauthenticate) or raises 42501.';

--------------------------------------------------------------------------------------------
-- POST /verify and GET /verify: a link token (token_hash, or token + email) for signup,
-- recovery, magiclink, invite or email_change; single use, within its expiry.
--------------------------------------------------------------------------------------------
CREATE FUNCTION crm_private.auth_verify(req jsonb) RETURNS jsonb
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    cfg jsonb := crm_private.auth_config();
    -- GET carries token (the link token), type and redirect_to in the query string.
    b jsonb := coalesce(req -> 'body', '{}'::jsonb) || coalesce(req -> 'query', '{}'::jsonb);
    v_type text;
    v_link text;
    v_hash text;
    v_email text;
    v_code text;
    v_wait integer;
    v_expired jsonb := crm_private.auth_error(403, 'otp_expired', 'Token has expired or is invalid');
    v_user uuid;
    v_refusal jsonb;
    v_window integer := greatest((cfg ->> 'otp_expiry')::integer, 60);
    inv core.invitations;
    u auth.users;
BEGIN
    IF crm_private.auth_bad_type(b, ARRAY['type', 'token', 'token_hash', 'email', 'redirect_to'], 'string') IS NOT NULL THEN
        RETURN crm_private.auth_error(400, 'validation_failed', 'Could not read the request: type, token, token_hash and email must be strings');
    END IF;
    v_type := crm_private.auth_text(b, 'type');
    IF v_type IS NULL OR v_type NOT IN ('signup', 'recovery', 'invite', 'magiclink', 'email_change', 'email') THEN
        RETURN crm_private.auth_error(400, 'validation_failed', 'Verify requires a verification type: signup, recovery, invite, magiclink or email_change');
    END IF;
    v_wait := crm_private.auth_throttle('verify:ip:' || crm_private.auth_ip_bucket(req), (cfg ->> 'verifies_per_ip')::integer, 300, true);
    IF v_wait > 0 THEN
        RETURN crm_private.auth_error(429, 'over_request_rate_limit', 'Request rate limit reached', jsonb_build_object('retry_after', v_wait));
    END IF;
    v_link := nullif(crm_private.auth_text(b, 'token_hash'), '');
    IF v_link IS NULL AND req ? 'query' AND NOT (req -> 'body') ? 'token' THEN
        v_link := nullif(crm_private.auth_text(req -> 'query', 'token'), '');
    END IF;
    IF v_link IS NULL THEN
        -- A code typed with the email: at most verify_failures_per_email wrong ones per
        -- expiry window, so the million codes cannot be tried.
        v_email := crm_private.normalize_email(crm_private.auth_text(b, 'email'));
        v_code := btrim(crm_private.auth_text(b, 'token'));
        IF v_email IS NULL OR coalesce(v_code, '') = '' THEN
            RETURN crm_private.auth_error(400, 'validation_failed', 'Verify requires either a token and an email, or a token_hash');
        END IF;
        v_wait := crm_private.auth_throttle('verify:email:' || crm_private.auth_digest(v_email),
                                            (cfg ->> 'verify_failures_per_email')::integer, v_window, false);
        IF v_wait > 0 THEN
            RETURN crm_private.auth_error(429, 'over_request_rate_limit', 'Too many wrong codes for this email: request a new one later',
                                          jsonb_build_object('retry_after', v_wait));
        END IF;
    ELSE
        v_hash := crm_private.auth_digest(v_link);
    END IF;

    -- Find what the token is for, locked, before writing anything.
    IF v_type = 'invite' THEN
        IF v_hash IS NOT NULL THEN
            SELECT * INTO inv FROM core.invitations i WHERE i.token_hash = v_hash AND i.status = 'pending' FOR UPDATE;
        ELSE
            SELECT * INTO inv FROM core.invitations i
             WHERE i.email = v_email AND i.status = 'pending'
               AND i.code_hash = crm_private.auth_code_digest(v_email, v_code)
             ORDER BY i.sent_at DESC LIMIT 1 FOR UPDATE;
        END IF;
        IF inv.id IS NOT NULL AND inv.expires_at > now() THEN
            SELECT * INTO u FROM auth.users x WHERE x.id = inv.user_id FOR UPDATE;
            -- The invitation is for the address it was sent to: an account whose email has
            -- changed since is not who was invited.
            IF u.id IS NULL OR u.email IS DISTINCT FROM inv.email THEN
                u := NULL;
            END IF;
        END IF;
    ELSE
        IF v_hash IS NOT NULL THEN
            SELECT t.user_id INTO v_user FROM auth.one_time_tokens t
             WHERE t.token_hash = v_hash
               AND t.token_type = CASE v_type WHEN 'signup' THEN 'confirmation_token'
                                              WHEN 'email' THEN 'confirmation_token'
                                              WHEN 'email_change' THEN 'email_change_token_new'
                                              ELSE 'recovery_token' END::auth.one_time_token_type;
            SELECT * INTO u FROM auth.users x WHERE x.id = v_user FOR UPDATE;
        ELSIF v_type = 'email_change' THEN
            SELECT * INTO u FROM auth.users x
             WHERE x.email_change = v_email AND x.email_change_token_new = crm_private.auth_code_digest(x.id::text, v_code)
             FOR UPDATE;
        ELSIF v_type IN ('signup', 'email') THEN
            SELECT * INTO u FROM auth.users x
             WHERE x.email = v_email AND x.confirmation_token = crm_private.auth_code_digest(x.id::text, v_code)
             FOR UPDATE;
        ELSE
            SELECT * INTO u FROM auth.users x
             WHERE x.email = v_email AND x.recovery_token = crm_private.auth_code_digest(x.id::text, v_code)
             FOR UPDATE;
        END IF;
        IF u.id IS NOT NULL AND (
               (v_type IN ('signup', 'email') AND (u.confirmation_token IS NULL OR u.confirmation_token = ''
                    OR u.confirmation_sent_at + make_interval(secs => v_window) <= now()))
            OR (v_type IN ('recovery', 'magiclink') AND (u.recovery_token IS NULL OR u.recovery_token = ''
                    OR u.recovery_sent_at + make_interval(secs => v_window) <= now()))
            OR (v_type = 'email_change' AND (coalesce(u.email_change, '') = ''
                    OR u.email_change_sent_at + make_interval(secs => v_window) <= now()))) THEN
            u := NULL;
        END IF;
    END IF;
    IF u.id IS NULL THEN
        IF v_email IS NOT NULL THEN
            PERFORM crm_private.auth_throttle('verify:email:' || crm_private.auth_digest(v_email),
                                              (cfg ->> 'verify_failures_per_email')::integer, v_window, true);
        END IF;
        RETURN v_expired;
    END IF;
    v_user := u.id;
    -- Banned or deleted accounts get nothing, and nothing is written for them.
    IF u.deleted_at IS NOT NULL OR (u.banned_until IS NOT NULL AND u.banned_until > now()) THEN
        RETURN crm_private.auth_refusal(u);
    END IF;

    IF v_type = 'invite' THEN
        -- One workspace per user in this phase; the user row lock above serialises two
        -- acceptances of invitations to different workspaces.
        IF EXISTS (SELECT 1 FROM core.memberships m WHERE m.user_id = v_user) THEN
            RETURN crm_private.auth_error(409, 'user_already_exists', 'This account already belongs to a workspace');
        END IF;
        IF NOT EXISTS (SELECT 1 FROM core.tenants t WHERE t.id = inv.tenant_id AND t.status = 'active') THEN
            RETURN v_expired;
        END IF;
        UPDATE core.invitations i SET status = 'accepted', token_hash = NULL, code_hash = NULL, accepted_at = now()
         WHERE i.tenant_id = inv.tenant_id AND i.id = inv.id;
        INSERT INTO core.memberships (tenant_id, user_id, role, created_by, updated_by)
        VALUES (inv.tenant_id, v_user, inv.role, inv.invited_by, inv.invited_by);
        UPDATE auth.users x SET email_confirmed_at = coalesce(x.email_confirmed_at, now()), updated_at = now()
         WHERE x.id = v_user;
        UPDATE auth.identities i SET identity_data = i.identity_data || '{"email_verified": true}'
         WHERE i.user_id = v_user AND i.provider = 'email';
    ELSE
        v_refusal := crm_private.auth_refusal(u);
        IF v_refusal IS NOT NULL THEN
            RETURN v_refusal;
        END IF;
        IF v_type IN ('signup', 'email') THEN
            UPDATE auth.users x SET email_confirmed_at = coalesce(x.email_confirmed_at, now()), confirmation_token = '',
                                    updated_at = now()
             WHERE x.id = v_user;
            UPDATE auth.identities i SET identity_data = i.identity_data || '{"email_verified": true}'
             WHERE i.user_id = v_user AND i.provider = 'email';
            DELETE FROM auth.one_time_tokens t WHERE t.user_id = v_user AND t.token_type = 'confirmation_token';
        ELSIF v_type IN ('recovery', 'magiclink') THEN
            UPDATE auth.users x SET email_confirmed_at = coalesce(x.email_confirmed_at, now()), recovery_token = '',
                                    updated_at = now()
             WHERE x.id = v_user;
            DELETE FROM auth.one_time_tokens t WHERE t.user_id = v_user AND t.token_type = 'recovery_token';
        ELSE  -- email_change
            IF EXISTS (SELECT 1 FROM auth.users x WHERE x.email = u.email_change AND x.id <> v_user) THEN
                RETURN crm_private.auth_error(422, 'email_exists', 'A user with this email address has already been registered');
            END IF;
            UPDATE auth.users x SET email = x.email_change, email_change = '', email_change_token_new = '',
                                    email_change_confirm_status = 0, recovery_token = '', updated_at = now()
             WHERE x.id = v_user;
            UPDATE auth.identities i SET identity_data = i.identity_data || jsonb_build_object('email', u.email_change),
                                         updated_at = now()
             WHERE i.user_id = v_user AND i.provider = 'email';
            -- Links sent to the old address stop working, and so does every other session.
            DELETE FROM auth.one_time_tokens t WHERE t.user_id = v_user;
            UPDATE core.invitations i SET status = 'revoked', token_hash = NULL, code_hash = NULL
             WHERE i.user_id = v_user AND i.status = 'pending';
            PERFORM crm_private.auth_end_sessions(v_user);
        END IF;
    END IF;

    SELECT * INTO u FROM auth.users x WHERE x.id = v_user;
    RETURN crm_private.auth_issue_session(v_user, req, 'otp')
        || jsonb_build_object('redirect_to', crm_private.auth_redirect(crm_private.auth_text(b, 'redirect_to'), cfg),
                              'type', v_type);
END
$$;
COMMENT ON FUNCTION crm_private.auth_verify(jsonb) IS 'POST/GET /auth/v1/verify: redeems a link token or code (signup, recovery, magiclink, invite, email_change) once, and starts a session.';

--------------------------------------------------------------------------------------------
-- Invitations, shared by api.invite_user and the operators' POST /invite.
--------------------------------------------------------------------------------------------

-- The account an invitation is for: found by email, or created without a password. 409 if
-- it belongs to another workspace (one workspace per user in this phase) or is a member
-- here already.
CREATE FUNCTION crm_private.invitee(tenant uuid, email text) RETURNS uuid
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    v_id uuid;
BEGIN
    SELECT x.id INTO v_id FROM auth.users x WHERE x.email = invitee.email AND NOT x.is_sso_user;
    IF FOUND THEN
        -- One message whether the workspace is this one or another: an inviter learns
        -- nothing about other workspaces.
        IF EXISTS (SELECT 1 FROM core.memberships m WHERE m.user_id = v_id) THEN
            RAISE EXCEPTION 'this email belongs to a member of a workspace already'
                USING ERRCODE = 'unique_violation',
                      HINT = 'in this version a person belongs to one workspace';
        END IF;
        UPDATE auth.users x SET invited_at = coalesce(x.invited_at, now()) WHERE x.id = v_id;
        RETURN v_id;
    END IF;
    v_id := gen_random_uuid();
    INSERT INTO auth.users (instance_id, id, aud, role, email, invited_at, raw_app_meta_data,
                            raw_user_meta_data, created_at, updated_at, is_sso_user, is_anonymous)
    VALUES ('00000000-0000-0000-0000-000000000000', v_id, 'authenticated', 'authenticated', email, now(),
            jsonb_build_object('provider', 'email', 'providers', jsonb_build_array('email')),
            '{}'::jsonb, now(), now(), false, false);
    INSERT INTO auth.identities (provider_id, user_id, identity_data, provider, created_at, updated_at)
    VALUES (v_id::text, v_id,
            jsonb_build_object('sub', v_id::text, 'email', email, 'email_verified', false, 'phone_verified', false),
            'email', now(), now());
    RETURN v_id;
END
$$;
COMMENT ON FUNCTION crm_private.invitee(uuid, text) IS 'The account an invitation to a workspace is for (found or created); 23505 if it is a member here or of another workspace.';

-- Issues an invitation (the rules are the caller's: api.invite_user checks the inviter's
-- permissions, POST /invite is for operators): revokes an expired pending one for the same
-- address, finds or creates the account, stores the row with the digests of a new link token
-- and code, and queues the email.
CREATE FUNCTION crm_private.invitation_issue(tenant uuid, email text, role text, invited_by uuid, redirect_to text)
    RETURNS core.invitations
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    v_otp text[] := crm_private.auth_new_otp(email);
    inv core.invitations;
BEGIN
    IF EXISTS (SELECT 1 FROM core.invitations i
                WHERE i.tenant_id = tenant AND i.email = invitation_issue.email AND i.status = 'pending'
                  AND i.expires_at > now()) THEN
        RAISE EXCEPTION 'this email has a pending invitation already' USING ERRCODE = 'unique_violation',
            HINT = 'resend it with resend_invitation(id), or revoke it first';
    END IF;
    UPDATE core.invitations i SET status = 'revoked', token_hash = NULL, code_hash = NULL
     WHERE i.tenant_id = tenant AND i.email = invitation_issue.email AND i.status = 'pending';
    INSERT INTO core.invitations (tenant_id, email, role, user_id, invited_by, token_hash, code_hash, expires_at)
    VALUES (tenant, email, role, crm_private.invitee(tenant, email), invited_by,
            crm_private.auth_digest(v_otp[2]), crm_private.auth_code_digest(email, v_otp[1]),
            now() + make_interval(secs => (crm_private.auth_config() ->> 'invite_expiry')::double precision))
    RETURNING * INTO inv;
    PERFORM crm_private.auth_queue_email(tenant, 'invite', email, v_otp, redirect_to);
    RETURN inv;
END
$$;
COMMENT ON FUNCTION crm_private.invitation_issue(uuid, text, text, uuid, text) IS 'Issues an invitation to a workspace (account, row with token digests, email); the caller has checked who may invite.';

-- A pending invitation sent again: new link token and code (the old ones stop working), new expiry.
CREATE FUNCTION crm_private.invitation_reissue(inv core.invitations) RETURNS core.invitations
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    v_otp text[] := crm_private.auth_new_otp(inv.email);
BEGIN
    UPDATE core.invitations i
       SET token_hash = crm_private.auth_digest(v_otp[2]), code_hash = crm_private.auth_code_digest(inv.email, v_otp[1]),
           expires_at = now() + make_interval(secs => (crm_private.auth_config() ->> 'invite_expiry')::double precision),
           sent_at = now()
     WHERE i.tenant_id = inv.tenant_id AND i.id = inv.id
    RETURNING * INTO inv;
    PERFORM crm_private.auth_queue_email(inv.tenant_id, 'invite', inv.email, v_otp, NULL);
    RETURN inv;
END
$$;

CREATE FUNCTION crm_private.invitation_json(i core.invitations) RETURNS jsonb
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $$
    SELECT pg_catalog.jsonb_build_object(
        'id', i.id, 'email', i.email, 'role', i.role, 'status',
        CASE WHEN i.status = 'pending' AND i.expires_at <= pg_catalog.now() THEN 'expired' ELSE i.status END,
        'invited_by', i.invited_by, 'expires_at', i.expires_at, 'sent_at', i.sent_at,
        'accepted_at', i.accepted_at, 'created_at', i.created_at)
$$;
COMMENT ON FUNCTION crm_private.invitation_json(core.invitations) IS 'The public JSON shape of an invitation (never its token).';

--------------------------------------------------------------------------------------------
-- Operators (a service_role JWT at the edge): GoTrue's admin API.
--------------------------------------------------------------------------------------------

-- A Go duration (GoTrue's ban_duration: "24h", "1h30m", "90s") as an interval, or NULL.
CREATE FUNCTION crm_private.auth_duration(d text) RETURNS interval
    LANGUAGE plpgsql IMMUTABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    IF d IS NULL OR d !~ '^([0-9]+(\.[0-9]+)?(h|m|s|ms))+$' THEN
        RETURN NULL;
    END IF;
    RETURN replace(d, 'ms', 'milliseconds ')::interval;
EXCEPTION WHEN OTHERS THEN
    RETURN NULL;
END
$$;

-- Applies the admin attributes GoTrue's admin API takes, after validating them all.
CREATE FUNCTION crm_private.auth_admin_apply(u auth.users, b jsonb, creating boolean) RETURNS jsonb
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    cfg jsonb := crm_private.auth_config();
    v_email text;
    v_password text := crm_private.auth_text(b, 'password');
    v_refusal jsonb;
    v_ban interval;
BEGIN
    IF crm_private.auth_bad_type(b, ARRAY['email', 'password', 'ban_duration', 'role', 'phone'], 'string') IS NOT NULL
       OR crm_private.auth_bad_type(b, ARRAY['user_metadata', 'app_metadata'], 'object') IS NOT NULL
       OR crm_private.auth_bad_type(b, ARRAY['email_confirm'], 'boolean') IS NOT NULL THEN
        RETURN crm_private.auth_error(400, 'validation_failed', 'Could not read the request body: check the attribute types');
    END IF;
    IF b ? 'email' AND crm_private.auth_text(b, 'email') IS NOT NULL THEN
        v_email := crm_private.normalize_email(b ->> 'email');
        IF v_email IS NULL THEN
            RETURN crm_private.auth_error(400, 'validation_failed', 'Unable to validate email address: invalid format');
        END IF;
        IF EXISTS (SELECT 1 FROM auth.users x WHERE x.email = v_email AND x.id <> u.id AND NOT x.is_sso_user) THEN
            RETURN crm_private.auth_error(422, 'email_exists', 'A user with this email address has already been registered');
        END IF;
    ELSIF creating THEN
        RETURN crm_private.auth_error(400, 'validation_failed', 'Unable to validate email address: invalid format');
    END IF;
    IF v_password IS NOT NULL THEN
        v_refusal := crm_private.auth_password_refusal(v_password, cfg);
        IF v_refusal IS NOT NULL THEN
            RETURN v_refusal;
        END IF;
    END IF;
    IF crm_private.auth_text(b, 'ban_duration') IS NOT NULL AND b ->> 'ban_duration' <> 'none' THEN
        v_ban := crm_private.auth_duration(b ->> 'ban_duration');
        IF v_ban IS NULL THEN
            RETURN crm_private.auth_error(400, 'validation_failed', 'invalid format for ban duration: use a duration such as 24h, 90m or none');
        END IF;
    END IF;

    IF v_email IS NOT NULL AND v_email IS DISTINCT FROM u.email THEN
        UPDATE auth.users x SET email = v_email, updated_at = now() WHERE x.id = u.id;
        UPDATE auth.identities i SET identity_data = i.identity_data || jsonb_build_object('email', v_email), updated_at = now()
         WHERE i.user_id = u.id AND i.provider = 'email';
    END IF;
    IF v_password IS NOT NULL THEN
        UPDATE auth.users x SET encrypted_password = crm_private.password_hash(v_password), updated_at = now() WHERE x.id = u.id;
        IF NOT creating THEN
            PERFORM crm_private.auth_end_sessions(u.id);
        END IF;
    END IF;
    IF (b -> 'email_confirm') = 'true'::jsonb THEN
        UPDATE auth.users x SET email_confirmed_at = coalesce(x.email_confirmed_at, now()) WHERE x.id = u.id;
        UPDATE auth.identities i SET identity_data = i.identity_data || '{"email_verified": true}'
         WHERE i.user_id = u.id AND i.provider = 'email';
    END IF;
    IF jsonb_typeof(b -> 'user_metadata') = 'object' THEN
        UPDATE auth.users x SET raw_user_meta_data = jsonb_strip_nulls(coalesce(x.raw_user_meta_data, '{}') || (b -> 'user_metadata')),
                                updated_at = now()
         WHERE x.id = u.id;
    END IF;
    IF jsonb_typeof(b -> 'app_metadata') = 'object' THEN
        -- The workspace is the membership's business, never app_metadata's.
        UPDATE auth.users x SET raw_app_meta_data = jsonb_strip_nulls(coalesce(x.raw_app_meta_data, '{}')
                                    || ((b -> 'app_metadata') - 'tenant_id' - 'tenant_role')),
                                updated_at = now()
         WHERE x.id = u.id;
    END IF;
    IF b ->> 'ban_duration' = 'none' THEN
        UPDATE auth.users x SET banned_until = NULL, updated_at = now() WHERE x.id = u.id;
    ELSIF v_ban IS NOT NULL THEN
        UPDATE auth.users x SET banned_until = now() + v_ban, updated_at = now() WHERE x.id = u.id;
        PERFORM crm_private.auth_end_sessions(u.id);
    END IF;
    RETURN NULL;
END
$$;

CREATE FUNCTION crm_private.auth_admin_user_id(req jsonb) RETURNS uuid
    LANGUAGE plpgsql IMMUTABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    RETURN (req ->> 'id')::uuid;
EXCEPTION WHEN invalid_text_representation THEN
    RETURN NULL;
END
$$;

CREATE FUNCTION crm_private.auth_admin_list_users(req jsonb) RETURNS jsonb
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    q jsonb := coalesce(req -> 'query', '{}'::jsonb);
    v_page integer;
    v_per_page integer;
    v_users jsonb;
BEGIN
    BEGIN
        v_page := coalesce(nullif(q ->> 'page', '')::integer, 1);
        v_per_page := coalesce(nullif(q ->> 'per_page', '')::integer, 50);
    EXCEPTION WHEN invalid_text_representation OR numeric_value_out_of_range THEN
        RETURN crm_private.auth_error(400, 'validation_failed', 'page and per_page must be positive integers');
    END;
    IF v_page < 1 OR v_per_page < 1 THEN
        RETURN crm_private.auth_error(400, 'validation_failed', 'page and per_page must be positive integers');
    END IF;
    v_per_page := least(v_per_page, 1000);
    SELECT coalesce(jsonb_agg(crm_private.auth_user_json(x) ORDER BY x.created_at DESC, x.id), '[]'::jsonb)
      INTO v_users
      FROM (SELECT * FROM auth.users y ORDER BY y.created_at DESC, y.id
             OFFSET (v_page - 1)::bigint * v_per_page LIMIT v_per_page) x;
    RETURN jsonb_build_object(
        'body', jsonb_build_object('users', v_users, 'aud', 'authenticated'),
        'total', (SELECT count(*) FROM auth.users), 'page', v_page, 'per_page', v_per_page);
END
$$;
COMMENT ON FUNCTION crm_private.auth_admin_list_users(jsonb) IS 'GET /auth/v1/admin/users?page&per_page (operators).';

CREATE FUNCTION crm_private.auth_admin_get_user(req jsonb) RETURNS jsonb
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    u auth.users;
BEGIN
    SELECT * INTO u FROM auth.users x WHERE x.id = crm_private.auth_admin_user_id(req);
    IF NOT FOUND THEN
        RETURN crm_private.auth_error(404, 'user_not_found', 'User not found');
    END IF;
    RETURN jsonb_build_object('body', crm_private.auth_user_json(u));
END
$$;
COMMENT ON FUNCTION crm_private.auth_admin_get_user(jsonb) IS 'GET /auth/v1/admin/users/{id} (operators).';

CREATE FUNCTION crm_private.auth_admin_create_user(req jsonb) RETURNS jsonb
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    b jsonb := coalesce(req -> 'body', '{}'::jsonb);
    v_id uuid := gen_random_uuid();
    v_refusal jsonb;
    u auth.users;
BEGIN
    INSERT INTO auth.users (instance_id, id, aud, role, raw_app_meta_data, raw_user_meta_data,
                            created_at, updated_at, is_sso_user, is_anonymous)
    VALUES ('00000000-0000-0000-0000-000000000000', v_id, 'authenticated', 'authenticated',
            jsonb_build_object('provider', 'email', 'providers', jsonb_build_array('email')),
            '{}'::jsonb, now(), now(), false, false)
    RETURNING * INTO u;
    v_refusal := crm_private.auth_admin_apply(u, b, true);
    IF v_refusal IS NOT NULL THEN
        -- Nothing of the new user may stay: the edge commits error replies (for counters).
        DELETE FROM auth.users x WHERE x.id = v_id;
        RETURN v_refusal;
    END IF;
    SELECT * INTO u FROM auth.users x WHERE x.id = v_id;
    INSERT INTO auth.identities (provider_id, user_id, identity_data, provider, created_at, updated_at)
    VALUES (v_id::text, v_id,
            jsonb_build_object('sub', v_id::text, 'email', u.email, 'email_verified', u.email_confirmed_at IS NOT NULL,
                               'phone_verified', false),
            'email', now(), now());
    RETURN jsonb_build_object('body', crm_private.auth_user_json(u));
END
$$;
COMMENT ON FUNCTION crm_private.auth_admin_create_user(jsonb) IS 'POST /auth/v1/admin/users (operators).';

CREATE FUNCTION crm_private.auth_admin_update_user(req jsonb) RETURNS jsonb
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    v_refusal jsonb;
    u auth.users;
BEGIN
    SELECT * INTO u FROM auth.users x WHERE x.id = crm_private.auth_admin_user_id(req) FOR UPDATE;
    IF NOT FOUND THEN
        RETURN crm_private.auth_error(404, 'user_not_found', 'User not found');
    END IF;
    v_refusal := crm_private.auth_admin_apply(u, coalesce(req -> 'body', '{}'::jsonb), false);
    IF v_refusal IS NOT NULL THEN
        RETURN v_refusal;
    END IF;
    SELECT * INTO u FROM auth.users x WHERE x.id = u.id;
    RETURN jsonb_build_object('body', crm_private.auth_user_json(u));
END
$$;
COMMENT ON FUNCTION crm_private.auth_admin_update_user(jsonb) IS 'PUT /auth/v1/admin/users/{id} (operators): email, password, email_confirm, user_metadata, app_metadata, ban_duration ("24h", or "none").';

CREATE FUNCTION crm_private.auth_admin_delete_user(req jsonb) RETURNS jsonb
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    b jsonb := coalesce(req -> 'body', '{}'::jsonb);
    u auth.users;
BEGIN
    SELECT * INTO u FROM auth.users x WHERE x.id = crm_private.auth_admin_user_id(req) FOR UPDATE;
    IF NOT FOUND THEN
        RETURN crm_private.auth_error(404, 'user_not_found', 'User not found');
    END IF;
    PERFORM crm_private.auth_end_sessions(u.id);
    IF (b -> 'should_soft_delete') = 'true'::jsonb
       OR EXISTS (SELECT 1 FROM core.memberships m WHERE m.user_id = u.id) THEN
        -- A member's records keep pointing at them: the account is closed and anonymised,
        -- and their memberships deactivated, but the row stays.
        UPDATE core.memberships m SET status = 'deactivated' WHERE m.user_id = u.id AND m.status <> 'deactivated';
        DELETE FROM auth.identities i WHERE i.user_id = u.id;
        DELETE FROM auth.one_time_tokens t WHERE t.user_id = u.id;
        UPDATE core.invitations i SET status = 'revoked', token_hash = NULL, code_hash = NULL
         WHERE i.user_id = u.id AND i.status = 'pending';
        UPDATE auth.users x SET deleted_at = now(), email = NULL, encrypted_password = '',
                                raw_user_meta_data = '{}', updated_at = now()
         WHERE x.id = u.id;
    ELSE
        DELETE FROM auth.users x WHERE x.id = u.id;
    END IF;
    RETURN jsonb_build_object('body', '{}'::jsonb);
END
$$;
COMMENT ON FUNCTION crm_private.auth_admin_delete_user(jsonb) IS 'DELETE /auth/v1/admin/users/{id} (operators): deletes the user, or (should_soft_delete, or a workspace member) closes and anonymises the account.';

-- POST /invite (operators): data.tenant_id names the workspace, data.role the role (rep).
CREATE FUNCTION crm_private.auth_invite(req jsonb) RETURNS jsonb
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    b jsonb := coalesce(req -> 'body', '{}'::jsonb);
    v_email text;
    v_tenant uuid;
    v_role text;
    v_user uuid;
    u auth.users;
BEGIN
    IF crm_private.auth_bad_type(b, ARRAY['email'], 'string') IS NOT NULL
       OR crm_private.auth_bad_type(b, ARRAY['data'], 'object') IS NOT NULL THEN
        RETURN crm_private.auth_error(400, 'validation_failed', 'Could not read the request body: email must be a string and data an object');
    END IF;
    v_email := crm_private.normalize_email(crm_private.auth_text(b, 'email'));
    IF v_email IS NULL THEN
        RETURN crm_private.auth_error(400, 'validation_failed', 'Unable to validate email address: invalid format');
    END IF;
    BEGIN
        v_tenant := (b #>> '{data,tenant_id}')::uuid;
    EXCEPTION WHEN invalid_text_representation THEN
        v_tenant := NULL;
    END;
    v_role := coalesce(b #>> '{data,role}', 'rep');
    IF v_tenant IS NULL OR NOT EXISTS (SELECT 1 FROM core.tenants t WHERE t.id = v_tenant) THEN
        RETURN crm_private.auth_error(400, 'validation_failed', 'An invitation needs data.tenant_id, the workspace to join');
    END IF;
    IF NOT EXISTS (SELECT 1 FROM core.roles r WHERE r.key = v_role) THEN
        RETURN crm_private.auth_error(400, 'validation_failed', 'data.role must be admin, manager or rep');
    END IF;
    IF EXISTS (SELECT 1 FROM auth.users x JOIN core.memberships m ON m.user_id = x.id WHERE x.email = v_email) THEN
        RETURN crm_private.auth_error(422, 'email_exists', 'A user with this email address has already been registered');
    END IF;
    v_user := (crm_private.invitation_issue(v_tenant, v_email, v_role, NULL,
                                            crm_private.auth_text(req -> 'query', 'redirect_to'))).user_id;
    SELECT * INTO u FROM auth.users x WHERE x.id = v_user;
    RETURN jsonb_build_object('body', crm_private.auth_user_json(u));
END
$$;
COMMENT ON FUNCTION crm_private.auth_invite(jsonb) IS 'POST /auth/v1/invite (operators): invites an email to the workspace data.tenant_id with data.role.';

--------------------------------------------------------------------------------------------
-- The email outbox, for the edge's sender.
--------------------------------------------------------------------------------------------
CREATE FUNCTION crm_private.outbox_claim(max_messages integer, lease_seconds integer) RETURNS SETOF jsonb
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    RETURN QUERY
    UPDATE core.email_outbox o
       SET leased_until = now() + make_interval(secs => lease_seconds), attempts = o.attempts + 1
     WHERE o.id IN (SELECT d.id FROM core.email_outbox d
                     WHERE d.sent_at IS NULL AND d.next_attempt_at <= now()
                       AND (d.leased_until IS NULL OR d.leased_until <= now())
                     ORDER BY d.next_attempt_at, d.id
                     LIMIT greatest(max_messages, 1)
                       FOR UPDATE SKIP LOCKED)
    RETURNING jsonb_build_object('id', o.id, 'kind', o.kind, 'to', o.recipient, 'subject', o.subject,
                                 'body', o.body, 'attempts', o.attempts, 'created_at', o.created_at);
END
$$;
COMMENT ON FUNCTION crm_private.outbox_claim(integer, integer) IS 'Leases up to max_messages due emails to one sender (SKIP LOCKED: two senders never get the same message).';

CREATE FUNCTION crm_private.outbox_sent(id bigint) RETURNS void
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    UPDATE core.email_outbox o SET sent_at = now(), leased_until = NULL, last_error = NULL
     WHERE o.id = outbox_sent.id;
END
$$;

CREATE FUNCTION crm_private.outbox_failed(id bigint, error text) RETURNS void
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    UPDATE core.email_outbox o
       SET leased_until = NULL, last_error = left(error, 500),
           next_attempt_at = now() + make_interval(secs => least(power(2, o.attempts) * 5, 3600))
     WHERE o.id = outbox_failed.id;
END
$$;

--------------------------------------------------------------------------------------------
-- On Supabase: GoTrue's custom access token hook. GoTrue calls it with {user_id, claims,
-- authentication_method} and signs the claims it returns.
--------------------------------------------------------------------------------------------
CREATE FUNCTION core.custom_access_token_hook(event jsonb) RETURNS jsonb
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    v_claims jsonb := coalesce(event -> 'claims', '{}'::jsonb);
    v_app jsonb := coalesce(v_claims -> 'app_metadata', '{}'::jsonb) - 'tenant_id' - 'tenant_role';
    v_user uuid;
    v_member record;
BEGIN
    BEGIN
        v_user := (event ->> 'user_id')::uuid;
    EXCEPTION WHEN invalid_text_representation THEN
        v_user := NULL;
    END;
    SELECT m.tenant_id, m.role INTO v_member
      FROM core.memberships m JOIN core.tenants t ON t.id = m.tenant_id
     WHERE m.user_id = v_user AND m.status = 'active' AND t.status = 'active'
     ORDER BY m.created_at, m.id
     LIMIT 1;
    IF v_member.tenant_id IS NOT NULL THEN
        v_app := v_app || jsonb_build_object('tenant_id', v_member.tenant_id, 'tenant_role', v_member.role);
    END IF;
    RETURN jsonb_build_object('claims', v_claims || jsonb_build_object('app_metadata', v_app));
END
$$;
COMMENT ON FUNCTION core.custom_access_token_hook(jsonb) IS 'Supabase Auth custom access token hook: puts the user''s active workspace (tenant_id, tenant_role) into app_metadata.';

-- For development and tests (scripts/dev-token): a session for a user, as a sign-in makes.
CREATE FUNCTION crm_private.create_session(user_id uuid) RETURNS uuid
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    v_session uuid := gen_random_uuid();
BEGIN
    INSERT INTO auth.sessions (id, user_id, created_at, updated_at, aal, refreshed_at)
    VALUES (v_session, user_id, now(), now(), 'aal1', now() AT TIME ZONE 'UTC');
    RETURN v_session;
END
$$;
COMMENT ON FUNCTION crm_private.create_session(uuid) IS 'Operators: starts a session for a user without a sign-in (what scripts/dev-token puts into its tokens).';

-- GET /settings: what a client may know about this auth service.
CREATE FUNCTION crm_private.auth_settings_public(req jsonb) RETURNS jsonb
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    cfg jsonb := crm_private.auth_config();
BEGIN
    RETURN jsonb_build_object('body', jsonb_build_object(
        'external', jsonb_build_object('email', true, 'phone', false, 'anonymous_users', false),
        'disable_signup', coalesce((cfg ->> 'disable_signup')::boolean, false),
        'mailer_autoconfirm', coalesce((cfg ->> 'autoconfirm')::boolean, false),
        'phone_autoconfirm', false, 'sms_provider', '', 'saml_enabled', false,
        'password_min_length', (cfg ->> 'password_min_length')::integer));
END
$$;
COMMENT ON FUNCTION crm_private.auth_settings_public(jsonb) IS 'GET /auth/v1/settings.';

-- Where a failed GET /verify sends the browser: the request's redirect_to if allowed, else the site.
CREATE FUNCTION crm_private.auth_redirect_target(req jsonb) RETURNS jsonb
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    RETURN jsonb_build_object('redirect_to',
        crm_private.auth_redirect(crm_private.auth_text(req -> 'query', 'redirect_to'), crm_private.auth_config()));
END
$$;
