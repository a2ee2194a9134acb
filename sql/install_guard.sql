-- The first statement of `CREATE EXTENSION pg_crm`.
--
-- The script runs as a superuser with the extension's schema, crm_private (pg_crm.control),
-- first on its search_path; CREATE EXTENSION creates that schema if it is missing and reuses
-- it as it is otherwise. Whoever owned or could create objects in a crm_private that existed
-- before could have planted functions or operators that the script's own expressions would
-- then pick up and run as superuser, or replace pg_crm's objects later. So the schema must be
-- new: owned by a superuser, nobody else allowed to create in it, and empty.
DO $guard$
DECLARE
    saved_path text := pg_catalog.current_setting('search_path');
    problem text;
BEGIN
    -- Until the schema is known to be clean, resolve names in pg_catalog only.
    PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);
    SELECT CASE
             WHEN NOT r.rolsuper THEN 'it is owned by ' || r.rolname || ', not by a superuser'
             WHEN EXISTS (SELECT 1 FROM aclexplode(n.nspacl) a
                          WHERE a.privilege_type = 'CREATE' AND a.grantee <> n.nspowner)
               THEN 'roles other than its owner may create objects in it'
             WHEN EXISTS (SELECT 1 FROM pg_class WHERE relnamespace = n.oid)
               OR EXISTS (SELECT 1 FROM pg_proc WHERE pronamespace = n.oid)
               OR EXISTS (SELECT 1 FROM pg_operator WHERE oprnamespace = n.oid)
               OR EXISTS (SELECT 1 FROM pg_type WHERE typnamespace = n.oid)
               OR EXISTS (SELECT 1 FROM pg_collation WHERE collnamespace = n.oid)
               OR EXISTS (SELECT 1 FROM pg_conversion WHERE connamespace = n.oid)
               OR EXISTS (SELECT 1 FROM pg_opclass WHERE opcnamespace = n.oid)
               OR EXISTS (SELECT 1 FROM pg_opfamily WHERE opfnamespace = n.oid)
               OR EXISTS (SELECT 1 FROM pg_ts_config WHERE cfgnamespace = n.oid)
               OR EXISTS (SELECT 1 FROM pg_ts_dict WHERE dictnamespace = n.oid)
               THEN 'it already holds objects'
           END
      INTO problem
      FROM pg_namespace n JOIN pg_roles r ON r.oid = n.nspowner
     WHERE n.nspname = 'crm_private';
    IF problem IS NOT NULL THEN
        RAISE EXCEPTION 'pg_crm installs into its own schema crm_private, but the existing crm_private cannot be trusted: %', problem
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'drop the schema crm_private (or rename it) and run CREATE EXTENSION pg_crm again';
    END IF;
    PERFORM pg_catalog.set_config('search_path', saved_path, true);
END
$guard$;
