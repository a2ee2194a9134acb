-- Fixtures for the regression suite (committed; every other file runs in begin … rollback).
CREATE EXTENSION pg_crm CASCADE;
CREATE SCHEMA tests;

-- Two tenants, each with an admin, a manager and a rep.
CREATE FUNCTION tests.seed() RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    acme uuid;
    globex uuid;
BEGIN
    acme := (crm_private.create_tenant('Acme', 'acme', 'ann@acme.test', 'Ann Admin') ->> 'tenant_id')::uuid;
    PERFORM crm_private.add_member(acme, 'mo@acme.test', 'manager', 'Mo Manager');
    PERFORM crm_private.add_member(acme, 'rita@acme.test', 'rep', 'Rita Rep');
    globex := (crm_private.create_tenant('Globex', 'globex', 'gil@globex.test', 'Gil Admin') ->> 'tenant_id')::uuid;
    PERFORM crm_private.add_member(globex, 'gia@globex.test', 'manager', 'Gia Manager');
    PERFORM crm_private.add_member(globex, 'gus@globex.test', 'rep', 'Gus Rep');
END
$$;

-- Look-ups the tests make while acting as `authenticated` (which may not read these
-- tables directly): test-only SECURITY DEFINER helpers.
CREATE FUNCTION tests.user_id(email text) RETURNS uuid LANGUAGE sql STABLE SECURITY DEFINER AS
$$ SELECT id FROM auth.users WHERE email = $1 $$;
CREATE FUNCTION tests.tenant_id(slug text) RETURNS uuid LANGUAGE sql STABLE SECURITY DEFINER AS
$$ SELECT id FROM core.tenants WHERE slug = $1 $$;

-- The user's session (the first one, made on first use, as a sign-in makes it).
CREATE FUNCTION tests.session(email text) RETURNS uuid LANGUAGE plpgsql SECURITY DEFINER AS $$
BEGIN
    RETURN coalesce((SELECT s.id FROM auth.sessions s WHERE s.user_id = tests.user_id(email) ORDER BY s.created_at, s.id LIMIT 1),
                    crm_private.create_session(tests.user_id(email)));
END
$$;

-- The claims the edge would pass for this user (and their session) and tenant.
CREATE FUNCTION tests.claims(email text, slug text) RETURNS jsonb LANGUAGE sql VOLATILE AS $$
    SELECT jsonb_build_object('sub', tests.user_id(email), 'role', 'authenticated', 'aud', 'authenticated',
                              'email', email, 'session_id', tests.session(email),
                              'app_metadata', jsonb_build_object('tenant_id', tests.tenant_id(slug)))
$$;

-- Do what the edge does at the start of a request: SET LOCAL ROLE authenticated, then
-- crm_private.begin_request(claims, tenant). Call as the superuser.
CREATE FUNCTION tests.login(email text, slug text) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    c jsonb := tests.claims(email, slug);
    t uuid := tests.tenant_id(slug);
BEGIN
    SET LOCAL ROLE authenticated;
    PERFORM crm_private.begin_request(c, t);
END
$$;

-- Run a statement; say 'ok' or its SQLSTATE and message (errors are caught in a
-- subtransaction, so the surrounding test transaction goes on).
CREATE FUNCTION tests.try(statement text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE statement;
    RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
    RETURN SQLSTATE || ': ' || SQLERRM;
END
$$;

GRANT USAGE ON SCHEMA tests TO PUBLIC;
GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA tests TO PUBLIC;
