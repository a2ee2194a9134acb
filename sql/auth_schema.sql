-- The auth service's own tables: its settings, invitations to a workspace, the email
-- outbox, and the counters that throttle sign-in attempts. GoTrue's tables (auth.users,
-- identities, sessions, refresh_tokens, one_time_tokens) are in supabase_compat.sql.

--------------------------------------------------------------------------------------------
-- crm_private.auth_settings: what an operator tunes, one row per setting that differs from
-- its default (crm_private.auth_config() lists every setting with its default). Shared by
-- every edge, so two edges never disagree about a limit.
--------------------------------------------------------------------------------------------
CREATE TABLE crm_private.auth_settings (
    key text NOT NULL CHECK (key IN (
        'site_url', 'uri_allow_list', 'autoconfirm', 'disable_signup', 'password_min_length',
        'session_inactivity_timeout', 'session_timebox', 'refresh_token_reuse_interval',
        'otp_expiry', 'invite_expiry', 'login_failures_per_email', 'login_failures_per_ip',
        'login_window', 'signups_per_ip', 'signups_per_email', 'recovers_per_ip',
        'recovers_per_email', 'verifies_per_ip', 'verify_failures_per_email', 'send_window',
        'reauthentication_expiry', 'security_burst_per_minute')),
    value jsonb NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT auth_settings_pkey PRIMARY KEY (key)
);
COMMENT ON TABLE crm_private.auth_settings IS 'Auth settings that differ from their defaults (see crm_private.auth_config()). Operators write it; nobody else can read it.';

--------------------------------------------------------------------------------------------
-- core.invitations: an invitation to join a workspace with a role (PRD F3.1-F3.3). The
-- link's secret is never stored: token_hash is sha256 of the token the link carries,
-- code_hash that of the 6-digit code bound to the email. Members never read either column.
--------------------------------------------------------------------------------------------
CREATE TABLE core.invitations (
    tenant_id uuid NOT NULL,
    id uuid NOT NULL DEFAULT gen_random_uuid(),
    email text NOT NULL CHECK (email = pg_catalog.lower(email) AND pg_catalog.char_length(email) BETWEEN 3 AND 255),
    role text NOT NULL,
    user_id uuid NOT NULL,
    invited_by uuid,
    status text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'accepted', 'revoked')),
    token_hash text,
    code_hash text,
    expires_at timestamptz NOT NULL,
    sent_at timestamptz NOT NULL DEFAULT now(),
    accepted_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    created_by uuid,
    updated_by uuid,
    CONSTRAINT invitations_pkey PRIMARY KEY (tenant_id, id),
    CONSTRAINT invitations_tenant_fkey FOREIGN KEY (tenant_id) REFERENCES core.tenants (id),
    CONSTRAINT invitations_user_fkey FOREIGN KEY (user_id) REFERENCES auth.users (id) ON DELETE CASCADE,
    CONSTRAINT invitations_role_fkey FOREIGN KEY (role) REFERENCES core.roles (key),
    CONSTRAINT invitations_pending_has_token CHECK ((status = 'pending') = (token_hash IS NOT NULL))
);
CREATE UNIQUE INDEX invitations_pending_email_key ON core.invitations (tenant_id, email) WHERE status = 'pending';
CREATE INDEX invitations_tenant_created_idx ON core.invitations (tenant_id, created_at, id);
-- Not led by tenant_id: /verify finds an invitation by its token before any tenant is known.
CREATE UNIQUE INDEX invitations_token_hash_key ON core.invitations (token_hash) WHERE token_hash IS NOT NULL;
CREATE INDEX invitations_user_idx ON core.invitations (user_id);
CREATE INDEX invitations_role_idx ON core.invitations (role);
COMMENT ON TABLE core.invitations IS 'Invitations to join a workspace with a role: pending (valid until expires_at), accepted or revoked.';

CREATE TRIGGER invitations_stamp BEFORE INSERT OR UPDATE ON core.invitations
    FOR EACH ROW EXECUTE FUNCTION crm_private.stamp_row();

ALTER TABLE core.invitations ENABLE ROW LEVEL SECURITY;
ALTER TABLE core.invitations FORCE ROW LEVEL SECURITY;
CREATE POLICY invitations_select ON core.invitations AS PERMISSIVE FOR SELECT TO authenticated
    USING (tenant_id = crm_private.tenant_id() AND crm_private.has_permission('users.invite'));
COMMENT ON POLICY invitations_select ON core.invitations IS 'Members who may invite see their workspace''s invitations.';
-- No INSERT or UPDATE policy (nor grant): invitations are written only by the SECURITY
-- DEFINER functions of team.sql and auth.sql, which check who may invite.

--------------------------------------------------------------------------------------------
-- Member management: admins (users.manage) change roles and status (F3.4, F3.5, F4.2);
-- every member edits their own profile (F3.6). Which columns each may change is in the
-- grants; the last-admin rule is in crm_private.guard_last_admin (a trigger, so it also
-- holds for operators).
--------------------------------------------------------------------------------------------
CREATE POLICY memberships_update ON core.memberships AS PERMISSIVE FOR UPDATE TO authenticated
    USING (tenant_id = crm_private.tenant_id()
           AND (crm_private.has_permission('users.manage') OR user_id = crm_private.user_id()))
    WITH CHECK (tenant_id = crm_private.tenant_id()
                AND (crm_private.has_permission('users.manage') OR user_id = crm_private.user_id()));
COMMENT ON POLICY memberships_update ON core.memberships IS 'Admins update any member of their workspace; everyone updates their own row (profile columns only, by grant).';

--------------------------------------------------------------------------------------------
-- core.email_outbox: every email the auth service sends, written in the same transaction as
-- the event (signup, invitation, recovery, email change). The edge claims due rows with
-- crm_private.outbox_claim (SKIP LOCKED, with a lease) and delivers them, so two edges
-- never send the same message; a failure is retried with backoff.
--------------------------------------------------------------------------------------------
CREATE TABLE core.email_outbox (
    id bigint GENERATED BY DEFAULT AS IDENTITY,
    tenant_id uuid,
    kind text NOT NULL CHECK (kind IN ('signup', 'recovery', 'invite', 'magiclink', 'email_change', 'reauthentication')),
    recipient text NOT NULL,
    subject text NOT NULL,
    body text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    attempts integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    leased_until timestamptz,
    sent_at timestamptz,
    last_error text,
    CONSTRAINT email_outbox_pkey PRIMARY KEY (id),
    CONSTRAINT email_outbox_tenant_fkey FOREIGN KEY (tenant_id) REFERENCES core.tenants (id) ON DELETE CASCADE
);
CREATE INDEX email_outbox_due_idx ON core.email_outbox (next_attempt_at) WHERE sent_at IS NULL;
CREATE INDEX email_outbox_tenant_idx ON core.email_outbox (tenant_id);
COMMENT ON TABLE core.email_outbox IS 'Emails to send (verification, invitation, recovery, email change), delivered by the edge. Holds one-time codes: no role may read it.';
ALTER TABLE core.email_outbox ENABLE ROW LEVEL SECURITY;
ALTER TABLE core.email_outbox FORCE ROW LEVEL SECURITY;

--------------------------------------------------------------------------------------------
-- crm_private.auth_throttle: attempt counters per bucket (`login:email:…`, `login:ip:…`,
-- `signup:ip:…`, …) and fixed window, counted in the database so every edge shares them.
--------------------------------------------------------------------------------------------
CREATE TABLE crm_private.auth_throttle (
    bucket text NOT NULL,
    window_start timestamptz NOT NULL,
    hits integer NOT NULL DEFAULT 0,
    CONSTRAINT auth_throttle_pkey PRIMARY KEY (bucket, window_start)
);
CREATE INDEX auth_throttle_window_idx ON crm_private.auth_throttle (window_start);
COMMENT ON TABLE crm_private.auth_throttle IS 'Attempt counters for sign-in, signup, recovery and verification throttling.';

-- No policies: no role but the owner (through the SECURITY DEFINER functions) touches these.
ALTER TABLE crm_private.auth_settings ENABLE ROW LEVEL SECURITY;
ALTER TABLE crm_private.auth_settings FORCE ROW LEVEL SECURITY;
ALTER TABLE crm_private.auth_throttle ENABLE ROW LEVEL SECURITY;
ALTER TABLE crm_private.auth_throttle FORCE ROW LEVEL SECURITY;

ALTER TABLE crm_private.auth_settings OWNER TO crm_owner;
ALTER TABLE core.invitations OWNER TO crm_owner;
ALTER TABLE core.email_outbox OWNER TO crm_owner;
ALTER TABLE crm_private.auth_throttle OWNER TO crm_owner;

SELECT pg_catalog.pg_extension_config_dump('crm_private.auth_settings', '');
SELECT pg_catalog.pg_extension_config_dump('core.invitations', '');
SELECT pg_catalog.pg_extension_config_dump('core.email_outbox', '');
SELECT pg_catalog.pg_extension_config_dump('core.email_outbox_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('crm_private.auth_throttle', '');
