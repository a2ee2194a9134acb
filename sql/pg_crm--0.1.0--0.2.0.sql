-- pg_crm 0.1.0 → 0.2.0 (ALTER EXTENSION pg_crm UPDATE). Frozen once released: a later
-- change goes into a new script. `make test` checks that a database upgraded with this file
-- has exactly the schema of a fresh 0.2.0 install (pgrx-tests/lifecycle.sh).
\echo Use "ALTER EXTENSION pg_crm UPDATE" to load this file. \quit

-- The update runs as superuser with the extension's old schema (public, for 0.1.0) first on
-- the search path, where other roles may have created functions and operators. Every name
-- below is qualified; this makes sure no expression resolves to anything outside pg_catalog.
SELECT pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);

-- The extension lives in its own schema, crm_private, instead of wherever 0.1.0 was created
-- (pg_crm.control now names it). This records what a fresh install records: the extension
-- in crm_private, and crm_private no longer a member (the schema holding an extension cannot
-- be one of its members).
ALTER EXTENSION pg_crm DROP SCHEMA crm_private;
DO $move$
DECLARE
    moved int;
BEGIN
    UPDATE pg_catalog.pg_depend d
       SET refobjid = 'crm_private'::regnamespace
      FROM pg_catalog.pg_extension e
     WHERE e.extname = 'pg_crm'
       AND d.classid = 'pg_catalog.pg_extension'::regclass::oid AND d.objid = e.oid
       AND d.refclassid = 'pg_catalog.pg_namespace'::regclass::oid
       AND d.refobjid = e.extnamespace;
    GET DIAGNOSTICS moved = ROW_COUNT;
    IF moved <> 1 THEN
        RAISE EXCEPTION 'pg_crm upgrade: expected one dependency of the extension on its schema, found %', moved;
    END IF;
    UPDATE pg_catalog.pg_extension
       SET extnamespace = 'crm_private'::regnamespace
     WHERE extname = 'pg_crm';
END
$move$;
-- Dropping the schema from the extension also dropped its recorded initial privileges; a
-- fresh install records them from grants.sql, so grant again here.
REVOKE ALL ON SCHEMA crm_private FROM PUBLIC;
GRANT USAGE ON SCHEMA crm_private TO authenticated;

-- On plain PostgreSQL the auth objects supabase_compat.sql provides belong to pg_crm (0.1.0
-- released them; see schema.sql): adopt them and register auth.users for pg_dump, unless
-- an auth service manages the schema (Supabase's GoTrue keeps auth.schema_migrations).
DO $adopt$
DECLARE
    object record;
BEGIN
    IF pg_catalog.to_regclass('auth.schema_migrations') IS NOT NULL THEN
        RETURN;
    END IF;
    FOR object IN
        SELECT pg_catalog.pg_describe_object(o.classid, o.objid, 0) AS what
          FROM (VALUES ('pg_catalog.pg_namespace'::regclass, 'auth'::regnamespace::oid),
                       ('pg_catalog.pg_class'::regclass, 'auth.users'::regclass::oid),
                       ('pg_catalog.pg_proc'::regclass, 'auth.uid()'::regprocedure::oid),
                       ('pg_catalog.pg_proc'::regclass, 'auth.role()'::regprocedure::oid),
                       ('pg_catalog.pg_proc'::regclass, 'auth.jwt()'::regprocedure::oid))
               AS o(classid, objid)
         WHERE NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d
                            WHERE d.classid = o.classid AND d.objid = o.objid AND d.deptype = 'e')
         ORDER BY o.classid <> 'pg_catalog.pg_namespace'::regclass  -- the schema first
    LOOP
        EXECUTE pg_catalog.format('ALTER EXTENSION pg_crm ADD %s', object.what);
    END LOOP;
    PERFORM pg_catalog.pg_extension_config_dump('auth.users', '');
END
$adopt$;

-- Stamps: an INSERT without a request context (an operator, a restore) keeps the stamps it
-- supplies, so a pg_dump restores with its original created_at/updated_at.
CREATE OR REPLACE FUNCTION crm_private.stamp_row() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    actor uuid := crm_private.user_id();
BEGIN
    IF TG_OP = 'INSERT' THEN
        IF actor IS NOT NULL THEN
            NEW.created_at := now();
            NEW.created_by := actor;
            NEW.updated_at := now();
            NEW.updated_by := actor;
        ELSE
            NEW.created_at := coalesce(NEW.created_at, now());
            NEW.updated_at := coalesce(NEW.updated_at, NEW.created_at);
        END IF;
        RETURN NEW;
    END IF;
    NEW.created_at := OLD.created_at;
    NEW.created_by := OLD.created_by;
    NEW.updated_at := now();
    NEW.updated_by := actor;
    RETURN NEW;
END
$$;
COMMENT ON FUNCTION crm_private.stamp_row() IS 'Trigger: maintains created_at, updated_at, created_by, updated_by (an INSERT without a request context, by an operator or a restore, keeps the stamps it supplies).';

-- URLs: no quotes, backticks, angle brackets, backslashes or control characters, and no user
-- name (the api has refused them since 0.2.0; the CHECK is the last line for direct writes).
-- A stored value that breaks the new rules could only have come from 0.1.0's laxer check; it
-- is cleared rather than kept unsafe.
UPDATE core.tenants SET logo_url = NULL
 WHERE logo_url ~ '[\s[:cntrl:]"''`<>\\]' OR logo_url ~* '^https?://[^/?#]*@';
UPDATE core.memberships SET avatar_url = NULL
 WHERE avatar_url ~ '[\s[:cntrl:]"''`<>\\]' OR avatar_url ~* '^https?://[^/?#]*@';
ALTER TABLE core.tenants
    DROP CONSTRAINT tenants_logo_url_check,
    ADD CONSTRAINT tenants_logo_url_check
        CHECK (logo_url ~* '^https?://[^\s[:cntrl:]"''`<>\\]+$' AND pg_catalog.char_length(logo_url) <= 2048);
ALTER TABLE core.memberships
    DROP CONSTRAINT memberships_avatar_url_check,
    ADD CONSTRAINT memberships_avatar_url_check
        CHECK (avatar_url ~* '^https?://[^\s[:cntrl:]"''`<>\\]+$' AND pg_catalog.char_length(avatar_url) <= 2048);

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

-- The workspace functions keep their plans: workspace_json is inlinable (no SET clause),
-- get_workspace and the update_workspace wrapper are PL/pgSQL (ARCHITECTURE.md, request-path
-- cost). Same results, same grants and comments.
CREATE OR REPLACE FUNCTION crm_private.workspace_json(t core.tenants) RETURNS jsonb
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $$
    SELECT pg_catalog.jsonb_build_object(
        'id', t.id, 'name', t.name, 'slug', t.slug, 'logo_url', t.logo_url,
        'industry', t.industry, 'timezone', t.timezone, 'status', t.status,
        'created_at', t.created_at, 'updated_at', t.updated_at)
$$;

CREATE OR REPLACE FUNCTION api.get_workspace() RETURNS jsonb
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

CREATE OR REPLACE FUNCTION api.update_workspace(
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
