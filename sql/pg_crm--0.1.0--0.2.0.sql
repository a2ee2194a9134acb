-- pg_crm 0.1.0 → 0.2.0 (ALTER EXTENSION pg_crm UPDATE). Frozen once released: a later
-- change goes into a new script. `make test` checks that a database upgraded with this file
-- has exactly the schema of a fresh 0.2.0 install (pgrx-tests/upgrade.sh).
\echo Use "ALTER EXTENSION pg_crm UPDATE" to load this file. \quit

-- The extension lives in its own schema, crm_private, instead of public (pg_crm.control now
-- names it). This records what a fresh install records: the extension in crm_private, and
-- crm_private no longer a member (the schema holding an extension cannot be one).
ALTER EXTENSION pg_crm DROP SCHEMA crm_private;
UPDATE pg_catalog.pg_depend
   SET refobjid = 'crm_private'::regnamespace
 WHERE classid = 'pg_catalog.pg_extension'::regclass
   AND objid = (SELECT oid FROM pg_catalog.pg_extension WHERE extname = 'pg_crm')
   AND refclassid = 'pg_catalog.pg_namespace'::regclass
   AND refobjid = 'public'::regnamespace;
UPDATE pg_catalog.pg_extension
   SET extnamespace = 'crm_private'::regnamespace
 WHERE extname = 'pg_crm';
-- Dropping the schema from the extension also dropped its recorded initial privileges; a
-- fresh install records them from grants.sql, so grant again here.
REVOKE ALL ON SCHEMA crm_private FROM PUBLIC;
GRANT USAGE ON SCHEMA crm_private TO authenticated;

-- URLs: no quotes, backticks, angle brackets or backslashes (the api has refused them since
-- 0.2.0; this is the last line for direct writes). A stored value that breaks the new rule
-- could only have come from 0.1.0's laxer check; it is dropped rather than kept unsafe.
UPDATE core.tenants SET logo_url = NULL WHERE logo_url ~ '[\s"''`<>\\]';
UPDATE core.memberships SET avatar_url = NULL WHERE avatar_url ~ '[\s"''`<>\\]';
ALTER TABLE core.tenants
    DROP CONSTRAINT tenants_logo_url_check,
    ADD CONSTRAINT tenants_logo_url_check
        CHECK (logo_url ~* '^https?://[^\s"''`<>\\]+$' AND pg_catalog.char_length(logo_url) <= 2048);
ALTER TABLE core.memberships
    DROP CONSTRAINT memberships_avatar_url_check,
    ADD CONSTRAINT memberships_avatar_url_check
        CHECK (avatar_url ~* '^https?://[^\s"''`<>\\]+$' AND pg_catalog.char_length(avatar_url) <= 2048);

-- Deleting or updating a user finds their memberships by index.
CREATE INDEX memberships_user_idx ON core.memberships (user_id);

-- pg_dump carries the rows of the extension's tables.
SELECT pg_catalog.pg_extension_config_dump('core.tenants', '');
SELECT pg_catalog.pg_extension_config_dump('core.memberships', '');

-- whoami: identity and email from the gate's context and auth.users, never from the
-- (rewritable) request.jwt.claims; PL/pgSQL so its plan is kept per connection.
CREATE FUNCTION crm_private.current_user_email() RETURNS text
    LANGUAGE plpgsql STABLE SECURITY DEFINER PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    RETURN (SELECT u.email::text FROM auth.users u WHERE u.id = crm_private.user_id());
END
$$;
COMMENT ON FUNCTION crm_private.current_user_email() IS 'The email of the current request''s user (the gate''s app.current_user_id), from auth.users.';
REVOKE ALL ON FUNCTION crm_private.current_user_email() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION crm_private.current_user_email() TO authenticated;

CREATE OR REPLACE FUNCTION api.whoami() RETURNS jsonb
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
