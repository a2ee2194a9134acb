-- Every privilege pg_crm grants, in one place. Nothing is granted by default: PUBLIC loses
-- everything first, then each role gets exactly what it needs, by name. The regression
-- suite (pgrx-tests/sql/grants.sql) proves the result from a low-privilege role.

REVOKE ALL ON SCHEMA core, crm_private, api FROM PUBLIC;
REVOKE ALL ON ALL TABLES IN SCHEMA core FROM PUBLIC;
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA core, crm_private, api FROM PUBLIC;
-- ...and functions later upgrade scripts add start without PUBLIC's EXECUTE too.
ALTER DEFAULT PRIVILEGES IN SCHEMA core, crm_private, api REVOKE EXECUTE ON FUNCTIONS FROM PUBLIC;

-- crm_owner owns the tables; foreign-key checks run as the referenced table's owner.
GRANT USAGE ON SCHEMA core TO crm_owner;

-- authenticated: the role every edge request runs as (SET LOCAL ROLE), after
-- crm_private.begin_request has set its tenant context.
GRANT USAGE ON SCHEMA api, core, crm_private TO authenticated;

GRANT SELECT ON core.tenants TO authenticated;
GRANT SELECT ON core.roles, core.permissions, core.role_permissions TO authenticated;
GRANT UPDATE (role, status, display_name, avatar_url, department) ON core.memberships TO authenticated;
-- Every column but the token digests; no writes (the SECURITY DEFINER functions write).
GRANT SELECT (tenant_id, id, email, role, user_id, invited_by, status, expires_at, sent_at, accepted_at,
              created_at, updated_at, created_by, updated_by) ON core.invitations TO authenticated;
GRANT UPDATE (name, logo_url, industry, timezone) ON core.tenants TO authenticated;
GRANT SELECT ON core.memberships TO authenticated;

GRANT EXECUTE ON FUNCTION
    crm_private.begin_request(jsonb, uuid),
    crm_private.tenant_id(),
    crm_private.user_id(),
    crm_private.tenant_role(),
    crm_private.workspace_json(core.tenants),
    crm_private.current_user_email(),
    crm_private.update_workspace(text, text, text, text),
    api.whoami(),
    api.get_workspace(),
    api.update_workspace(text, text, text, text),
    crm_private.has_permission(text),
    crm_private.require_permission(text),
    crm_private.page_size(integer),
    crm_private.encode_cursor(timestamptz, uuid),
    crm_private.decode_cursor(text),
    crm_private.normalize_email(text),
    crm_private.member_email(uuid),
    crm_private.member_json(core.memberships),
    crm_private.require_invite_right(text),
    crm_private.invitation_create(text, text),
    crm_private.invitation_change(uuid, boolean),
    crm_private.change_member(uuid, text, text),
    api.invite_user(text, text),
    api.list_invitations(integer, text),
    api.resend_invitation(uuid),
    api.revoke_invitation(uuid),
    api.list_members(integer, text),
    api.set_member_role(uuid, text),
    api.deactivate_member(uuid),
    api.reactivate_member(uuid),
    api.update_profile(text, text, text),
    api.my_permissions()
TO authenticated;

-- crm_auth: the role the edge's /auth/v1 endpoints run as (SET LOCAL ROLE crm_auth). It
-- reaches auth.* only through these SECURITY DEFINER functions, and nothing else.
GRANT USAGE ON SCHEMA crm_private TO crm_auth;
GRANT EXECUTE ON FUNCTION
    crm_private.auth_signup(jsonb),
    crm_private.auth_token_password(jsonb),
    crm_private.auth_token_refresh(jsonb),
    crm_private.auth_logout(jsonb),
    crm_private.auth_user_get(jsonb),
    crm_private.auth_user_update(jsonb),
    crm_private.auth_recover(jsonb),
    crm_private.auth_verify(jsonb),
    crm_private.auth_invite(jsonb),
    crm_private.auth_admin_list_users(jsonb),
    crm_private.auth_admin_get_user(jsonb),
    crm_private.auth_admin_create_user(jsonb),
    crm_private.auth_admin_update_user(jsonb),
    crm_private.auth_admin_delete_user(jsonb),
    crm_private.auth_settings_public(jsonb),
    crm_private.auth_redirect_target(jsonb),
    crm_private.outbox_claim(integer, integer),
    crm_private.outbox_sent(bigint),
    crm_private.outbox_failed(bigint, text)
TO crm_auth;

-- On Supabase, GoTrue calls the access token hook as supabase_auth_admin.
DO $hook$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'supabase_auth_admin') THEN
        GRANT USAGE ON SCHEMA core TO supabase_auth_admin;
        GRANT EXECUTE ON FUNCTION core.custom_access_token_hook(jsonb) TO supabase_auth_admin;
    END IF;
END
$hook$;

-- anon and service_role get nothing. The operator functions (crm_private.create_tenant,
-- add_member, set_tenant_status, set_member_status, suspend_tenant, reactivate_tenant,
-- create_session) and the auth helpers not listed above are for the DBA (a superuser) only.
