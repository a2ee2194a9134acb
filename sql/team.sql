-- Team management (PRD F3, F4; journey 4): invitations, members, roles, profiles. The `api`
-- functions are SECURITY INVOKER, so row-level security decides what they touch; they check
-- permissions first only to give a clear error. The few steps that reach auth.* or the
-- outbox are SECURITY DEFINER helpers that check the request context themselves.

--------------------------------------------------------------------------------------------
-- Rules every membership change obeys, whoever makes it (a request or an operator): only
-- users.manage changes roles and status; the last active admin stays; deactivation ends the
-- member's sessions.
--------------------------------------------------------------------------------------------
CREATE FUNCTION crm_private.guard_membership_change() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    IF (NEW.role, NEW.status, NEW.user_id, NEW.tenant_id) IS DISTINCT FROM (OLD.role, OLD.status, OLD.user_id, OLD.tenant_id)
       AND crm_private.user_id() IS NOT NULL AND NOT crm_private.has_permission('users.manage') THEN
        RAISE EXCEPTION 'only admins change members'' roles and status' USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF OLD.role = 'admin' AND OLD.status = 'active' AND (NEW.role <> 'admin' OR NEW.status <> 'active') THEN
        -- One admin change per workspace at a time, so two admins cannot demote each other.
        PERFORM 1 FROM core.tenants t WHERE t.id = OLD.tenant_id FOR NO KEY UPDATE;
        IF NOT EXISTS (SELECT 1 FROM core.memberships m
                        WHERE m.tenant_id = OLD.tenant_id AND m.role = 'admin' AND m.status = 'active'
                          AND m.id <> OLD.id) THEN
            RAISE EXCEPTION 'the workspace must keep at least one active admin'
                USING ERRCODE = 'check_violation', HINT = 'make another member an admin first';
        END IF;
    END IF;
    IF NEW.status = 'deactivated' AND OLD.status <> 'deactivated' THEN
        DELETE FROM auth.sessions s WHERE s.user_id = NEW.user_id;
    END IF;
    RETURN NEW;
END
$$;
COMMENT ON FUNCTION crm_private.guard_membership_change() IS 'Trigger: roles and status change only with users.manage; the last active admin stays; deactivation ends the member''s sessions.';

CREATE TRIGGER memberships_guard BEFORE UPDATE ON core.memberships
    FOR EACH ROW EXECUTE FUNCTION crm_private.guard_membership_change();

--------------------------------------------------------------------------------------------
-- Helpers
--------------------------------------------------------------------------------------------

-- Raises 42501 unless the request has a tenant context and its role holds `permission`.
CREATE FUNCTION crm_private.require_permission(permission text) RETURNS void
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    IF crm_private.tenant_id() IS NULL THEN
        RAISE EXCEPTION 'no tenant context for this request' USING ERRCODE = 'insufficient_privilege',
            HINT = 'call crm_private.begin_request(claims, tenant) first in this transaction';
    END IF;
    IF NOT crm_private.has_permission(permission) THEN
        RAISE EXCEPTION 'your role may not do this (it needs the % permission)', permission
            USING ERRCODE = 'insufficient_privilege';
    END IF;
END
$$;
COMMENT ON FUNCTION crm_private.require_permission(text) IS 'Raises 42501 unless the current request''s role holds the permission.';

-- A page size for list functions: 25 by default, 1 to 100.
CREATE FUNCTION crm_private.page_size(requested integer) RETURNS integer
    LANGUAGE plpgsql IMMUTABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    IF requested IS NULL THEN
        RETURN 25;
    END IF;
    IF requested < 1 OR requested > 100 THEN
        RAISE EXCEPTION 'invalid page_size: must be 1 to 100' USING ERRCODE = 'invalid_parameter_value',
            DETAIL = 'field: page_size';
    END IF;
    RETURN requested;
END
$$;

-- Opaque keyset cursors over (created_at, id).
CREATE FUNCTION crm_private.encode_cursor(at timestamptz, id uuid) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$
    SELECT pg_catalog.rtrim(pg_catalog.translate(pg_catalog.encode(pg_catalog.convert_to(
               pg_catalog.to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US') || '|' || id::text,
               'UTF8'), 'base64'), E'+/\n', '-_'), '=')
$$;

CREATE FUNCTION crm_private.decode_cursor(cursor text, OUT at timestamptz, OUT id uuid)
    LANGUAGE plpgsql IMMUTABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    v_text text;
BEGIN
    IF cursor IS NULL THEN
        RETURN;
    END IF;
    v_text := convert_from(decode(translate(cursor, '-_', '+/') || repeat('=', (4 - length(cursor) % 4) % 4), 'base64'), 'UTF8');
    at := (split_part(v_text, '|', 1) || '+00')::timestamptz;
    id := split_part(v_text, '|', 2)::uuid;
    IF at IS NULL OR id IS NULL THEN
        RAISE EXCEPTION 'invalid cursor';
    END IF;
EXCEPTION WHEN OTHERS THEN
    RAISE EXCEPTION 'invalid cursor: pass the next_cursor of the previous page' USING ERRCODE = 'invalid_parameter_value',
        DETAIL = 'field: cursor';
END
$$;

-- A member's email, for members of the current request's workspace only.
CREATE FUNCTION crm_private.member_email(user_id uuid) RETURNS text
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    RETURN (SELECT u.email::text
              FROM core.memberships m JOIN auth.users u ON u.id = m.user_id
             WHERE m.tenant_id = crm_private.tenant_id() AND m.user_id = member_email.user_id);
END
$$;
COMMENT ON FUNCTION crm_private.member_email(uuid) IS 'The email of a member of the current request''s workspace (NULL for anyone else).';

CREATE FUNCTION crm_private.member_json(m core.memberships) RETURNS jsonb
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $$
    SELECT pg_catalog.jsonb_build_object(
        'user_id', m.user_id, 'email', crm_private.member_email(m.user_id), 'role', m.role,
        'status', m.status, 'display_name', m.display_name, 'avatar_url', m.avatar_url,
        'department', m.department, 'joined_at', m.created_at, 'updated_at', m.updated_at)
$$;
COMMENT ON FUNCTION crm_private.member_json(core.memberships) IS 'The public JSON shape of a member.';

-- Invitations are written only here (members may read them, never write them: a written
-- token or user id would be a way into someone else's account). Each entry point checks the
-- caller's permission for the invitation's role, in the request's own workspace.
CREATE FUNCTION crm_private.require_invite_right(role text) RETURNS void
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    PERFORM crm_private.require_permission('users.invite');
    IF role IS DISTINCT FROM 'rep' AND NOT crm_private.has_permission('users.manage') THEN
        RAISE EXCEPTION 'managers may invite sales reps only' USING ERRCODE = 'insufficient_privilege';
    END IF;
END
$$;

CREATE FUNCTION crm_private.invitation_create(email text, role text) RETURNS jsonb
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    v_email text := crm_private.normalize_email(email);
BEGIN
    PERFORM crm_private.require_invite_right(role);
    IF role IS NULL OR NOT EXISTS (SELECT 1 FROM core.roles r WHERE r.key = invitation_create.role) THEN
        RAISE EXCEPTION 'invalid role: must be admin, manager or rep' USING ERRCODE = 'invalid_parameter_value',
            DETAIL = 'field: role';
    END IF;
    IF v_email IS NULL THEN
        RAISE EXCEPTION 'invalid email: must be an email address' USING ERRCODE = 'invalid_parameter_value',
            DETAIL = 'field: email';
    END IF;
    RETURN crm_private.invitation_json(
        crm_private.invitation_issue(crm_private.tenant_id(), v_email, role, crm_private.user_id(), NULL));
END
$$;
COMMENT ON FUNCTION crm_private.invitation_create(text, text) IS 'For api.invite_user: issues an invitation in the request''s workspace after checking the caller may invite this role.';

-- Resend or revoke a pending invitation of the request's workspace, if the caller may send it.
CREATE FUNCTION crm_private.invitation_change(id uuid, revoke boolean) RETURNS jsonb
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    inv core.invitations;
BEGIN
    PERFORM crm_private.require_permission('users.invite');
    SELECT * INTO inv FROM core.invitations i
     WHERE i.tenant_id = crm_private.tenant_id() AND i.id = invitation_change.id AND i.status = 'pending'
       AND (i.role = 'rep' OR crm_private.has_permission('users.manage'))
       FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no pending invitation with this id' USING ERRCODE = 'no_data_found';
    END IF;
    IF revoke THEN
        UPDATE core.invitations i SET status = 'revoked', token_hash = NULL, code_hash = NULL
         WHERE i.tenant_id = inv.tenant_id AND i.id = inv.id
        RETURNING * INTO inv;
    ELSE
        inv := crm_private.invitation_reissue(inv);
    END IF;
    RETURN crm_private.invitation_json(inv);
END
$$;
COMMENT ON FUNCTION crm_private.invitation_change(uuid, boolean) IS 'For api.resend_invitation and api.revoke_invitation: a pending invitation of the request''s workspace that the caller may send.';

--------------------------------------------------------------------------------------------
-- api: invitations
--------------------------------------------------------------------------------------------
CREATE FUNCTION api.invite_user(email text, role text DEFAULT 'rep') RETURNS jsonb
    LANGUAGE plpgsql VOLATILE SECURITY INVOKER
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    RETURN crm_private.invitation_create(invite_user.email, invite_user.role);
END
$$;
COMMENT ON FUNCTION api.invite_user(text, text) IS
'Invite someone to the workspace by email with a role (PRD F3.1, F3.2): admins invite any role, managers invite reps (otherwise 42501). They get an email with a single-use link (and a code) valid 7 days, accepted through /auth/v1/verify (type invite), where they set a password. 23505 if the email has a pending invitation or belongs to a member of a workspace. Returns the invitation {id, email, role, status, invited_by, expires_at, sent_at, accepted_at, created_at}.';

CREATE FUNCTION api.list_invitations(page_size integer DEFAULT 25, cursor text DEFAULT NULL) RETURNS jsonb
    LANGUAGE plpgsql STABLE SECURITY INVOKER
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    v_n integer := crm_private.page_size(list_invitations.page_size);
    v_after record := crm_private.decode_cursor(list_invitations.cursor);
    v_rows jsonb;
    v_next text;
BEGIN
    PERFORM crm_private.require_permission('users.invite');
    SELECT coalesce(jsonb_agg(x.j ORDER BY x.rn) FILTER (WHERE x.rn <= v_n), '[]'::jsonb),
           CASE WHEN count(*) > v_n THEN max(x.c) FILTER (WHERE x.rn = v_n) END
      INTO v_rows, v_next
      FROM (SELECT row_number() OVER (ORDER BY i.created_at, i.id) AS rn,
                   jsonb_build_object(
                       'id', i.id, 'email', i.email, 'role', i.role,
                       'status', CASE WHEN i.status = 'pending' AND i.expires_at <= now() THEN 'expired' ELSE i.status END,
                       'invited_by', i.invited_by, 'expires_at', i.expires_at, 'sent_at', i.sent_at,
                       'accepted_at', i.accepted_at, 'created_at', i.created_at) AS j,
                   crm_private.encode_cursor(i.created_at, i.id) AS c
              FROM core.invitations i
             WHERE i.tenant_id = crm_private.tenant_id()
               AND (v_after.at IS NULL OR (i.created_at, i.id) > (v_after.at, v_after.id))
             ORDER BY i.created_at, i.id
             LIMIT v_n + 1) x;
    RETURN jsonb_build_object('data', v_rows, 'next_cursor', v_next);
END
$$;
COMMENT ON FUNCTION api.list_invitations(integer, text) IS
'The workspace''s invitations, oldest first, with their status (pending, expired, accepted, revoked): {data: [...], next_cursor}. page_size 1-100 (default 25); pass next_cursor back as cursor for the next page. Admins and managers (users.invite); others 42501.';

CREATE FUNCTION api.resend_invitation(id uuid) RETURNS jsonb
    LANGUAGE plpgsql VOLATILE SECURITY INVOKER
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    RETURN crm_private.invitation_change(resend_invitation.id, false);
END
$$;
COMMENT ON FUNCTION api.resend_invitation(uuid) IS
'Send a pending (or expired) invitation again with a new link and code valid 7 days; the old ones stop working. Whoever may send it (admins any, managers rep invitations); P0002 if there is no such pending invitation.';

CREATE FUNCTION api.revoke_invitation(id uuid) RETURNS jsonb
    LANGUAGE plpgsql VOLATILE SECURITY INVOKER
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    RETURN crm_private.invitation_change(revoke_invitation.id, true);
END
$$;
COMMENT ON FUNCTION api.revoke_invitation(uuid) IS
'Revoke a pending invitation: its link stops working at once. Whoever may send it; P0002 if there is no such pending invitation.';

--------------------------------------------------------------------------------------------
-- api: members
--------------------------------------------------------------------------------------------
CREATE FUNCTION api.list_members(page_size integer DEFAULT 25, cursor text DEFAULT NULL) RETURNS jsonb
    LANGUAGE plpgsql STABLE SECURITY INVOKER
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    v_n integer := crm_private.page_size(list_members.page_size);
    v_after record := crm_private.decode_cursor(list_members.cursor);
    v_rows jsonb;
    v_next text;
BEGIN
    PERFORM crm_private.require_permission('workspace.read');
    SELECT coalesce(jsonb_agg(x.j ORDER BY x.rn) FILTER (WHERE x.rn <= v_n), '[]'::jsonb),
           CASE WHEN count(*) > v_n THEN max(x.c) FILTER (WHERE x.rn = v_n) END
      INTO v_rows, v_next
      FROM (SELECT row_number() OVER (ORDER BY m.created_at, m.id) AS rn,
                   crm_private.member_json(m) AS j, crm_private.encode_cursor(m.created_at, m.id) AS c
              FROM core.memberships m
             WHERE m.tenant_id = crm_private.tenant_id()
               AND (v_after.at IS NULL OR (m.created_at, m.id) > (v_after.at, v_after.id))
             ORDER BY m.created_at, m.id
             LIMIT v_n + 1) x;
    RETURN jsonb_build_object('data', v_rows, 'next_cursor', v_next);
END
$$;
COMMENT ON FUNCTION api.list_members(integer, text) IS
'The workspace''s members in joining order: {data: [{user_id, email, role, status, display_name, avatar_url, department, joined_at, updated_at}], next_cursor}. page_size 1-100 (default 25); pass next_cursor back as cursor. Any role.';

-- Shared by set_member_role, deactivate_member and reactivate_member.
CREATE FUNCTION crm_private.change_member(user_id uuid, new_role text, new_status text) RETURNS jsonb
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    v_member core.memberships;
BEGIN
    PERFORM crm_private.require_permission('users.manage');
    UPDATE core.memberships m
       SET role = coalesce(new_role, m.role), status = coalesce(new_status, m.status)
     WHERE m.tenant_id = crm_private.tenant_id() AND m.user_id = change_member.user_id
    RETURNING * INTO v_member;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no such member in this workspace' USING ERRCODE = 'no_data_found';
    END IF;
    RETURN crm_private.member_json(v_member);
END
$$;

CREATE FUNCTION api.set_member_role(user_id uuid, role text) RETURNS jsonb
    LANGUAGE plpgsql VOLATILE SECURITY INVOKER
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    PERFORM crm_private.require_permission('users.manage');
    IF set_member_role.role IS NULL OR NOT EXISTS (SELECT 1 FROM core.roles r WHERE r.key = set_member_role.role) THEN
        RAISE EXCEPTION 'invalid role: must be admin, manager or rep' USING ERRCODE = 'invalid_parameter_value',
            DETAIL = 'field: role';
    END IF;
    RETURN crm_private.change_member(set_member_role.user_id, set_member_role.role, NULL);
END
$$;
COMMENT ON FUNCTION api.set_member_role(uuid, text) IS
'Change a member''s role to admin, manager or rep (PRD F4.2); takes effect on their next request. Admins only (42501). The last active admin cannot be demoted (23514). P0002 if no such member. Returns the member.';

CREATE FUNCTION api.deactivate_member(user_id uuid, nonce text DEFAULT NULL) RETURNS jsonb
    LANGUAGE plpgsql VOLATILE SECURITY INVOKER
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    -- Who may, before the code is spent: a member without the right keeps their code.
    PERFORM crm_private.require_permission('users.manage');
    PERFORM crm_private.require_reauthentication(deactivate_member.nonce);
    RETURN crm_private.change_member(deactivate_member.user_id, NULL, 'deactivated');
END
$$;
COMMENT ON FUNCTION api.deactivate_member(uuid, text) IS
'Deactivate (remove) a member (PRD F3.4): their data stays, their sessions end and access ends on their next request; they cannot sign in. Sensitive (NFR-S8): nonce is the code POST /auth/v1/reauthenticate emails to the caller, fresh (5 minutes) and single use; without it, or with a wrong or used one, 42501 naming nonce. Admins only (42501). The last active admin cannot be deactivated (23514). P0002 if no such member. Returns the member.';

CREATE FUNCTION api.reactivate_member(user_id uuid) RETURNS jsonb
    LANGUAGE plpgsql VOLATILE SECURITY INVOKER
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    RETURN crm_private.change_member(reactivate_member.user_id, NULL, 'active');
END
$$;
COMMENT ON FUNCTION api.reactivate_member(uuid) IS
'Reactivate a deactivated member (PRD F3.5): they can sign in again with their role and records. Admins only (42501). P0002 if no such member. Returns the member.';

CREATE FUNCTION api.update_profile(display_name text DEFAULT NULL, avatar_url text DEFAULT NULL, department text DEFAULT NULL)
    RETURNS jsonb
    LANGUAGE plpgsql VOLATILE SECURITY INVOKER
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    v_name text := btrim(update_profile.display_name);
    v_avatar text := btrim(update_profile.avatar_url);
    v_department text := btrim(update_profile.department);
    v_member core.memberships;
BEGIN
    PERFORM crm_private.require_permission('workspace.read');
    IF v_name <> '' AND char_length(v_name) > 200 THEN
        RAISE EXCEPTION 'invalid display_name: at most 200 characters' USING ERRCODE = 'invalid_parameter_value',
            DETAIL = 'field: display_name';
    END IF;
    IF v_avatar <> '' AND (v_avatar !~* '^https?://[^\s[:cntrl:]"''`<>\\]+$' OR v_avatar ~* '^https?://[^/?#]*@'
                           OR char_length(v_avatar) > 2048) THEN
        RAISE EXCEPTION 'invalid avatar_url: must be an http(s) URL' USING ERRCODE = 'invalid_parameter_value',
            DETAIL = 'field: avatar_url';
    END IF;
    IF v_department <> '' AND char_length(v_department) > 100 THEN
        RAISE EXCEPTION 'invalid department: at most 100 characters' USING ERRCODE = 'invalid_parameter_value',
            DETAIL = 'field: department';
    END IF;
    UPDATE core.memberships m
       SET display_name = CASE WHEN v_name IS NULL THEN m.display_name ELSE nullif(v_name, '') END,
           avatar_url = CASE WHEN v_avatar IS NULL THEN m.avatar_url ELSE nullif(v_avatar, '') END,
           department = CASE WHEN v_department IS NULL THEN m.department ELSE nullif(v_department, '') END
     WHERE m.tenant_id = crm_private.tenant_id() AND m.user_id = crm_private.user_id()
    RETURNING * INTO v_member;
    RETURN crm_private.member_json(v_member);
END
$$;
COMMENT ON FUNCTION api.update_profile(text, text, text) IS
'Update one''s own profile in the workspace (PRD F3.6). Omitted or null arguments keep their value; an empty string clears. display_name up to 200 characters, avatar_url an http(s) URL, department up to 100 characters (22023 naming the field otherwise). Any role. Returns the member.';

CREATE FUNCTION api.my_permissions() RETURNS jsonb
    LANGUAGE plpgsql STABLE SECURITY INVOKER
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    PERFORM crm_private.require_permission('workspace.read');
    RETURN jsonb_build_object(
        'role', crm_private.tenant_role(),
        'permissions', coalesce((SELECT jsonb_agg(rp.permission ORDER BY rp.permission)
                                   FROM core.role_permissions rp
                                  WHERE rp.role = crm_private.tenant_role()), '[]'::jsonb));
END
$$;
COMMENT ON FUNCTION api.my_permissions() IS
'The caller''s role and the permissions it holds (PRD F4.4): {role, permissions: ["users.invite", ...]}. Any role.';
