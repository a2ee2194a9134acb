-- The `api` schema: the only functions the edge exposes. Each is SECURITY INVOKER, so the
-- caller's row-level security governs everything it touches, and each filters by
-- `crm_private.tenant_id()` explicitly as well (the planner can then use the tenant index
-- before any non-leakproof operator, and Citus can route the query to one shard).

-- Inlinable (no SET clause; it calls only a qualified pg_catalog function), so it costs
-- nothing beyond the query that uses it.
CREATE FUNCTION crm_private.workspace_json(t core.tenants) RETURNS jsonb
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $$
    SELECT pg_catalog.jsonb_build_object(
        'id', t.id, 'name', t.name, 'slug', t.slug, 'logo_url', t.logo_url,
        'industry', t.industry, 'timezone', t.timezone, 'status', t.status,
        'created_at', t.created_at, 'updated_at', t.updated_at)
$$;
COMMENT ON FUNCTION crm_private.workspace_json(core.tenants) IS 'The public JSON shape of a workspace.';

-- The signed-in user's email, from auth.users (which `authenticated` may not read). The
-- identity is the gate's (`app.current_user_id`), never the token's claims: those stay
-- readable as `request.jwt.claims` but any session can rewrite them with set_config.
CREATE FUNCTION crm_private.current_user_email() RETURNS text
    LANGUAGE plpgsql STABLE SECURITY DEFINER PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    RETURN (SELECT u.email::text FROM auth.users u WHERE u.id = crm_private.user_id());
END
$$;
COMMENT ON FUNCTION crm_private.current_user_email() IS 'The email of the current request''s user (the gate''s app.current_user_id), from auth.users.';

-- PL/pgSQL, not LANGUAGE sql: a sql function with a SET clause is parsed and planned on
-- every call, PL/pgSQL keeps its plan per connection (ARCHITECTURE.md, request-path cost).
CREATE FUNCTION api.whoami() RETURNS jsonb
    LANGUAGE plpgsql STABLE SECURITY INVOKER PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    RETURN (
        SELECT jsonb_build_object(
            'user_id', m.user_id, 'tenant_id', m.tenant_id, 'role', m.role,
            'display_name', m.display_name, 'email', crm_private.current_user_email())
        FROM core.memberships m
        WHERE m.tenant_id = crm_private.tenant_id()
          AND m.user_id = crm_private.user_id());
END
$$;
COMMENT ON FUNCTION api.whoami() IS
'Who is calling: {user_id, tenant_id, role, display_name, email} of the current request''s member, as the database knows them (the email from the account, not from the token). Any role. NULL without a tenant context.';

CREATE FUNCTION api.get_workspace() RETURNS jsonb
    LANGUAGE plpgsql STABLE SECURITY INVOKER PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    RETURN (
        SELECT crm_private.workspace_json(t)
        FROM core.tenants t
        WHERE t.id = crm_private.tenant_id());
END
$$;
COMMENT ON FUNCTION api.get_workspace() IS
'The caller''s workspace: {id, name, slug, logo_url, industry, timezone, status, created_at, updated_at}. Any role (PRD F1.2). NULL without a tenant context.';

CREATE FUNCTION api.update_workspace(
    name text DEFAULT NULL,
    logo_url text DEFAULT NULL,
    industry text DEFAULT NULL,
    timezone text DEFAULT NULL
) RETURNS jsonb
    LANGUAGE plpgsql VOLATILE SECURITY INVOKER
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    RETURN crm_private.update_workspace($1, $2, $3, $4);
END
$$;
COMMENT ON FUNCTION api.update_workspace(text, text, text, text) IS
'Update the caller''s workspace metadata (PRD F1.3). Tenant admins only (otherwise 42501). Omitted or null arguments keep their value; an empty string clears logo_url or industry. name: 1-200 characters; logo_url: http(s) URL; industry: up to 100 characters; timezone: an IANA zone such as Europe/Berlin. Invalid values raise 22023 naming the field. Returns the updated workspace.';
