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
    api.update_workspace(text, text, text, text)
TO authenticated;

-- anon and service_role get nothing yet. The operator functions (crm_private.create_tenant,
-- add_member, set_tenant_status, set_member_status, suspend_tenant, reactivate_tenant) are
-- for the DBA (a superuser) only.
