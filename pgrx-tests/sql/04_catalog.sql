-- The table shape, checked in the catalog. Each query lists violations: expected empty.
BEGIN;
CREATE TEMP VIEW crm_tables AS
    SELECT c.oid AS rel, c.oid::regclass AS name
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname IN ('core', 'crm', 'crm_private', 'api') AND c.relkind IN ('r', 'p') AND NOT c.relispartition;

-- The tables this check covers (so a table cannot slip out of it unnoticed).
SELECT name FROM crm_tables ORDER BY name::text;

-- The tables that are not tenant-scoped, named one by one: the tenant registry, the role and
-- permission reference tables every tenant shares, and the platform tables of the auth service
-- and of the edges' rate limits (reached only through SECURITY DEFINER functions and operator
-- functions). Every other table is a tenant table.
CREATE TEMP VIEW platform_tables AS
    SELECT c.oid AS rel, c.oid::regclass AS name FROM pg_class c
    WHERE c.oid IN ('core.tenants'::regclass, 'core.roles'::regclass, 'core.permissions'::regclass,
                    'core.role_permissions'::regclass, 'core.email_outbox'::regclass,
                    'crm_private.auth_settings'::regclass, 'crm_private.auth_throttle'::regclass,
                    'crm_private.rate_limits'::regclass, 'crm_private.rate_usage'::regclass,
                    'crm_private.audit_state'::regclass, 'crm_private.tenant_purges'::regclass);
-- Written once by pg_crm and never changed: their own time and actor columns instead of the
-- stamps, and a trigger that refuses UPDATE, DELETE and TRUNCATE instead.
CREATE TEMP VIEW append_only_tables AS
    SELECT c.oid AS rel, c.oid::regclass AS name FROM pg_class c
    WHERE c.oid IN ('core.audit_log'::regclass, 'core.audit_sealed'::regclass, 'core.audit_seals'::regclass,
                    'core.security_events'::regclass, 'core.access_events'::regclass);
CREATE TEMP VIEW tenant_tables AS
    SELECT * FROM crm_tables WHERE rel NOT IN (SELECT rel FROM platform_tables);

-- RLS enabled and forced.
SELECT name AS rls_not_forced FROM crm_tables t JOIN pg_class c ON c.oid = t.rel
WHERE NOT (c.relrowsecurity AND c.relforcerowsecurity) ORDER BY 1;

-- Tables owned by anything but the NOLOGIN owner role.
SELECT name AS wrong_owner, pg_get_userbyid(c.relowner) FROM crm_tables t JOIN pg_class c ON c.oid = t.rel
WHERE pg_get_userbyid(c.relowner) <> 'crm_owner' ORDER BY 1;

-- No restrictive policy; every policy is for `authenticated` only.
SELECT polrelid::regclass, polname AS restrictive_or_not_authenticated FROM pg_policy p JOIN crm_tables t ON t.rel = p.polrelid
WHERE NOT p.polpermissive OR p.polroles <> ARRAY['authenticated'::regrole::oid] ORDER BY 1, 2;

-- At most one policy per command (a FOR ALL policy counts for each).
WITH per_cmd AS (
    SELECT p.polrelid, unnest(CASE p.polcmd WHEN '*' THEN ARRAY['r', 'a', 'w', 'd'] ELSE ARRAY[p.polcmd::text] END) AS cmd
    FROM pg_policy p JOIN crm_tables t ON t.rel = p.polrelid)
SELECT polrelid::regclass, cmd AS several_policies_for FROM per_cmd GROUP BY 1, 2 HAVING count(*) > 1 ORDER BY 1, 2;

-- Every command granted to authenticated has its policy (and none is granted without).
WITH granted AS (
    SELECT t.rel, cmd, CASE cmd WHEN 'r' THEN has_any_column_privilege('authenticated', t.rel, 'SELECT')
                                WHEN 'a' THEN has_any_column_privilege('authenticated', t.rel, 'INSERT')
                                WHEN 'w' THEN has_any_column_privilege('authenticated', t.rel, 'UPDATE')
                                WHEN 'd' THEN has_table_privilege('authenticated', t.rel, 'DELETE') END AS granted,
           EXISTS (SELECT 1 FROM pg_policy p WHERE p.polrelid = t.rel AND p.polcmd IN (cmd::"char", '*')) AS has_policy
    FROM crm_tables t CROSS JOIN unnest(ARRAY['r', 'a', 'w', 'd']) cmd)
SELECT rel::regclass, cmd AS granted_without_policy FROM granted WHERE granted AND NOT has_policy ORDER BY 1, 2;

-- No subquery in any policy (Citus refuses them on distributed tables).
SELECT polrelid::regclass, polname AS has_subquery FROM pg_policy p JOIN crm_tables t ON t.rel = p.polrelid
WHERE coalesce(pg_get_expr(p.polqual, p.polrelid), '') || coalesce(pg_get_expr(p.polwithcheck, p.polrelid), '') ~* '\mselect\M'
ORDER BY 1, 2;

-- The tenant match comes first in every policy.
SELECT polrelid::regclass, polname AS tenant_match_not_first FROM pg_policy p JOIN crm_tables t ON t.rel = p.polrelid
WHERE t.rel NOT IN ('core.roles'::regclass, 'core.permissions'::regclass, 'core.role_permissions'::regclass) AND coalesce(pg_get_expr(p.polqual, p.polrelid), pg_get_expr(p.polwithcheck, p.polrelid)) !~ '^\(*(id|tenant_id) = crm_private\.tenant_id\(\)'
ORDER BY 1, 2;

-- Functions policies call: which ones, and that each is an inlinable SQL helper
-- (LANGUAGE sql, not VOLATILE, not SECURITY DEFINER, no SET clause, no table read).
SELECT DISTINCT d.refobjid::regprocedure::text AS called_from_policies
FROM pg_depend d JOIN pg_policy p ON d.classid = 'pg_policy'::regclass AND d.objid = p.oid
JOIN crm_tables t ON t.rel = p.polrelid
WHERE d.refclassid = 'pg_proc'::regclass ORDER BY 1;
SELECT DISTINCT f.oid::regprocedure AS not_an_inlinable_helper
FROM pg_depend d JOIN pg_policy p ON d.classid = 'pg_policy'::regclass AND d.objid = p.oid
JOIN pg_proc f ON d.refclassid = 'pg_proc'::regclass AND f.oid = d.refobjid
WHERE f.prolang <> (SELECT oid FROM pg_language WHERE lanname = 'sql')
   OR f.provolatile = 'v' OR f.prosecdef OR f.proconfig IS NOT NULL OR f.prosrc ~* '\mfrom\M'
ORDER BY 1;

-- Tenant-scoped tables: tenant_id uuid NOT NULL leading the primary key; every index
-- leads with it (core.tenants is the tenant registry, keyed by the tenant id itself).
-- (A partitioned table's key is each partition's own: see sql/audit.sql.)
WITH keyed AS (
    SELECT t.name, coalesce(i.inhrelid, t.rel) AS rel
    FROM tenant_tables t JOIN pg_class c ON c.oid = t.rel
    LEFT JOIN pg_inherits i ON c.relkind = 'p' AND i.inhparent = t.rel)
SELECT DISTINCT name AS no_leading_tenant_key FROM keyed k
WHERE NOT EXISTS (
    SELECT 1 FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
    WHERE i.indrelid = k.rel AND i.indisprimary AND a.attname = 'tenant_id' AND a.attnotnull
      AND a.atttypid = 'uuid'::regtype)
ORDER BY 1;
-- The exceptions: indexes serving a foreign key to a table that is not tenant-scoped
-- (auth.users, core.roles), and the invitation token look-up (/verify knows no tenant yet),
-- listed here so another cannot slip in.
SELECT i.indexrelid::regclass AS index_not_led_by_tenant,
       EXISTS (SELECT 1 FROM pg_constraint c
               WHERE c.contype = 'f' AND c.conrelid = i.indrelid AND c.conkey[1] = i.indkey[0]
                 AND c.confrelid NOT IN (SELECT rel FROM tenant_tables)) AS serves_fk_to_non_tenant_table
FROM pg_index i JOIN tenant_tables t ON t.rel = i.indrelid
JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
WHERE a.attname <> 'tenant_id' ORDER BY 1;

-- Every foreign key has an index led by its columns (a delete or key update of the referenced
-- row must not scan the referencing table); splinter's unindexed_foreign_keys.
SELECT c.conrelid::regclass, c.conname AS fk_without_index FROM pg_constraint c JOIN crm_tables t ON t.rel = c.conrelid
WHERE c.contype = 'f' AND NOT EXISTS (
    SELECT 1 FROM pg_index i WHERE i.indrelid = c.conrelid AND i.indisvalid AND i.indpred IS NULL
       AND (i.indkey::int2[])[0:cardinality(c.conkey) - 1] @> c.conkey
       AND (i.indkey::int2[])[0:cardinality(c.conkey) - 1] <@ c.conkey)
ORDER BY 1, 2;

-- Foreign keys between tenant tables are composite, led by tenant_id.
SELECT c.conname AS fk_not_tenant_scoped FROM pg_constraint c JOIN tenant_tables t ON t.rel = c.conrelid
JOIN (SELECT rel FROM tenant_tables UNION ALL SELECT 'core.tenants'::regclass) r ON r.rel = c.confrelid
WHERE c.contype = 'f' AND (SELECT attname FROM pg_attribute WHERE attrelid = c.conrelid AND attnum = c.conkey[1]) <> 'tenant_id'
ORDER BY 1;

-- Every api function is SECURITY INVOKER (RLS governs what it touches), pins its
-- search_path, and is documented with COMMENT ON FUNCTION (the OpenAPI text).
SELECT p.oid::regprocedure AS api_function_not_invoker_pinned_documented FROM pg_proc p
WHERE p.pronamespace = 'api'::regnamespace
  AND (p.prosecdef OR p.proconfig IS NULL OR coalesce(obj_description(p.oid, 'pg_proc'), '') = '')
ORDER BY 1;

-- Identity comes from the gate's settings (crm_private.user_id() and friends), never from the
-- token claims a session can rewrite: no function or policy reads request.jwt.* or calls
-- auth.uid()/auth.jwt()/auth.role().
SELECT p.oid::regprocedure AS reads_request_claims FROM pg_proc p
WHERE p.pronamespace IN ('core'::regnamespace, 'crm_private'::regnamespace, 'api'::regnamespace)
  AND p.prosrc ~* '(request\.jwt|auth\.(uid|jwt|role)\s*\()'
ORDER BY 1;
SELECT polrelid::regclass, polname AS policy_reads_request_claims FROM pg_policy p JOIN crm_tables t ON t.rel = p.polrelid
WHERE coalesce(pg_get_expr(p.polqual, p.polrelid), '') || coalesce(pg_get_expr(p.polwithcheck, p.polrelid), '')
      ~* '(request\.jwt|auth\.(uid|jwt|role)\()'
ORDER BY 1, 2;

-- The extension lives in its own schema, not in public (splinter's extension_in_public), and
-- registers every table that holds data for pg_dump.
SELECT extnamespace::regnamespace AS extension_schema FROM pg_extension WHERE extname = 'pg_crm';
SELECT name AS not_dumped_with_data FROM crm_tables t JOIN pg_class c ON c.oid = t.rel
WHERE t.rel <> ALL (SELECT unnest(extconfig) FROM pg_extension WHERE extname = 'pg_crm')
  AND c.relkind <> 'p'
ORDER BY 1;
-- A partitioned table's rows are its partitions': each is registered (created with the
-- extension) or not a member of it at all (created later, dumped as a table of its own).
SELECT i.inhrelid::regclass AS partition_not_dumped FROM pg_inherits i JOIN crm_tables t ON t.rel = i.inhparent
WHERE EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = i.inhrelid AND d.deptype = 'e')
  AND i.inhrelid <> ALL (SELECT unnest(extconfig) FROM pg_extension WHERE extname = 'pg_crm')
ORDER BY 1;
-- Partitions are reached only through their parent (whose policies apply): no grants.
SELECT i.inhrelid::regclass AS partition_granted FROM pg_inherits i JOIN crm_tables t ON t.rel = i.inhparent
WHERE has_table_privilege('authenticated', i.inhrelid, 'SELECT, INSERT, UPDATE, DELETE')
ORDER BY 1;
-- On plain PostgreSQL the auth objects are pg_crm's (no GoTrue manages them), auth.users
-- among the tables pg_dump carries.
SELECT pg_describe_object(classid, objid, 0) AS auth_member_of_pg_crm FROM pg_depend
WHERE deptype = 'e' AND refobjid = (SELECT oid FROM pg_extension WHERE extname = 'pg_crm')
  AND pg_describe_object(classid, objid, 0) ~ '(schema auth|auth\.)'
ORDER BY 1;
SELECT 'auth.users'::regclass = ANY (extconfig) AS auth_users_dumped FROM pg_extension WHERE extname = 'pg_crm';

-- SECURITY DEFINER functions all pin their search_path: pg_catalog, pg_temp, or for those
-- that use trigram operators pg_catalog, the schema of pg_trgm, pg_temp (listed below), a
-- schema where none of the API roles may create anything.
SELECT p.oid::regprocedure AS definer_without_pinned_search_path FROM pg_proc p
WHERE p.pronamespace IN ('core'::regnamespace, 'crm_private'::regnamespace, 'api'::regnamespace)
  AND p.prosecdef AND NOT coalesce(p.proconfig::text[] && ARRAY['search_path=pg_catalog, pg_temp',
        'search_path=pg_catalog, ' || (SELECT quote_ident(n.nspname) FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
                                        WHERE e.extname = 'pg_trgm') || ', pg_temp'], false)
ORDER BY 1;
SELECT p.oid::regprocedure AS definer_with_pg_trgm_on_its_path FROM pg_proc p
WHERE p.pronamespace IN ('core'::regnamespace, 'crm_private'::regnamespace, 'api'::regnamespace)
  AND p.prosecdef AND NOT p.proconfig::text[] && ARRAY['search_path=pg_catalog, pg_temp']
ORDER BY 1;
SELECT rolname AS may_create_in_the_pg_trgm_schema FROM pg_roles
 WHERE rolname IN ('authenticated', 'anon', 'authenticator', 'crm_auth', 'service_role')
   AND has_schema_privilege(rolname, (SELECT extnamespace FROM pg_extension WHERE extname = 'pg_trgm'), 'CREATE')
ORDER BY 1;

-- The stamp columns and their trigger on every table.
SELECT name AS missing_stamps FROM (SELECT * FROM tenant_tables UNION ALL SELECT 'core.tenants'::regclass, 'core.tenants'::regclass) t
WHERE t.rel NOT IN (SELECT rel FROM append_only_tables) AND ((SELECT count(*) FROM pg_attribute WHERE attrelid = t.rel AND NOT attisdropped
       AND attname IN ('created_at', 'updated_at', 'created_by', 'updated_by')) <> 4
   OR NOT EXISTS (SELECT 1 FROM pg_trigger g WHERE g.tgrelid = t.rel AND g.tgfoid = 'crm_private.stamp_row()'::regprocedure))
ORDER BY 1;
SELECT name AS append_only_without_guard FROM append_only_tables t
WHERE (SELECT count(DISTINCT e) FROM pg_trigger g
         CROSS JOIN unnest(ARRAY['update', 'delete', 'truncate']) e
        WHERE g.tgrelid = t.rel AND g.tgtype::integer & 1 = 0 AND g.tgfoid = 'crm_private.audit_log_immutable()'::regprocedure
          AND g.tgtype::integer & CASE e WHEN 'update' THEN 16 WHEN 'delete' THEN 8 ELSE 32 END <> 0) <> 3
ORDER BY 1;
ROLLBACK;

-- The tenant match is an index condition: the helpers inline into a stable expression.
BEGIN;
SELECT tests.seed();
SELECT tests.login('mo@acme.test', 'acme');
SET LOCAL enable_seqscan = off;
EXPLAIN (COSTS OFF) SELECT * FROM core.memberships;
EXPLAIN (COSTS OFF) SELECT * FROM core.tenants;
ROLLBACK;
