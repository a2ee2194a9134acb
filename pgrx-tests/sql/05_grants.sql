-- Privileges: nothing by default, each grant by name (sql/grants.sql), proven here.
BEGIN;
-- Nothing in pg_crm's schemas is usable by PUBLIC.
SELECT n.nspname AS public_usage FROM pg_namespace n
WHERE n.nspname IN ('core', 'crm_private', 'api') AND has_schema_privilege('public', n.oid, 'USAGE');
SELECT p.oid::regprocedure AS public_execute FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
WHERE n.nspname IN ('core', 'crm_private', 'api') AND has_function_privilege('public', p.oid, 'EXECUTE') ORDER BY 1;

-- Table and column privileges, all of them.
SELECT c.oid::regclass AS "table", a.grantee::regrole, a.privilege_type
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace, aclexplode(c.relacl) a
WHERE n.nspname IN ('core', 'crm', 'crm_private', 'api') AND a.grantee <> c.relowner
ORDER BY c.oid::regclass::text, a.grantee::regrole::text, 3;
SELECT c.oid::regclass AS "table", att.attname AS "column", a.grantee::regrole, a.privilege_type
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_attribute att ON att.attrelid = c.oid, aclexplode(att.attacl) a
WHERE n.nspname IN ('core', 'crm', 'crm_private', 'api')
ORDER BY c.oid::regclass::text, 2, a.grantee::regrole::text, 4;

-- Functions each API role may execute.
SELECT r.rolname, p.oid::regprocedure AS executes
FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
CROSS JOIN (VALUES ('anon'), ('authenticated'), ('service_role'), ('authenticator'), ('crm_auth')) r(rolname)
WHERE n.nspname IN ('core', 'crm_private', 'api') AND has_function_privilege(r.rolname, p.oid, 'EXECUTE')
ORDER BY 1, p.oid::regprocedure::text;

-- The edge's login role: not superuser, no BYPASSRLS, owns nothing; the API roles bypass nothing
-- but service_role; the table owner cannot log in.
SELECT rolname, rolsuper, rolbypassrls, rolcanlogin, rolinherit FROM pg_roles
WHERE rolname IN ('anon', 'authenticated', 'service_role', 'authenticator', 'crm_owner') ORDER BY 1;
SELECT count(*) AS objects_owned_by_authenticator FROM (
    SELECT relowner AS o FROM pg_class UNION ALL SELECT proowner FROM pg_proc
    UNION ALL SELECT nspowner FROM pg_namespace UNION ALL SELECT typowner FROM pg_type) x
WHERE o IN ('authenticator'::regrole, 'authenticated'::regrole, 'anon'::regrole);
ROLLBACK;

-- A role with no grants reaches nothing; anon neither.
BEGIN;
CREATE ROLE aura_lowpriv NOLOGIN;
SET LOCAL ROLE aura_lowpriv;
SELECT tests.try('SELECT count(*) FROM core.tenants') AS read_tenants;
SELECT tests.try('SELECT api.whoami()') AS call_api;
SELECT tests.try($$SELECT crm_private.begin_request('{}', NULL)$$) AS begin_request;
RESET ROLE;
SET LOCAL ROLE anon;
SELECT tests.try('SELECT count(*) FROM core.memberships') AS anon_reads_members;
SELECT tests.try('SELECT api.get_workspace()') AS anon_calls_api;
SELECT tests.try($$SELECT crm_private.create_tenant('x', 'x', 'x@x.test')$$) AS anon_creates_tenant;
RESET ROLE;
SET LOCAL ROLE authenticated;
SELECT tests.try($$SELECT crm_private.create_tenant('x', 'x', 'x@x.test')$$) AS member_creates_tenant;
SELECT tests.try('SELECT crm_private.suspend_tenant(gen_random_uuid())') AS member_suspends;
SELECT tests.try('SELECT count(*) FROM auth.users') AS member_reads_users;
ROLLBACK;
