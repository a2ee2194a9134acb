-- pg_crm schema: schemas, the table owner, request-context helpers, core tables and their
-- row-level security. Grants are not here: every grant is written out in grants.sql.

-- On plain PostgreSQL pg_crm is the auth service, so the auth objects supabase_compat.sql
-- provides belong to the extension: those it created just now are members already, and
-- those an earlier run created (supabase_compat.sql applied on its own, or pg_crm 0.1.0,
-- which released them) are adopted. auth.users is registered for pg_dump with the CRM's
-- tables, so a dump carries its rows and restores without re-creating what CREATE
-- EXTENSION creates. Where an auth service manages the schema (Supabase: GoTrue keeps its
-- migrations in auth.schema_migrations), nothing in it is pg_crm's and nothing is touched.
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
                       ('pg_catalog.pg_proc'::regclass, 'auth.jwt()'::regprocedure::oid),
                       ('pg_catalog.pg_type'::regclass, 'auth.aal_level'::regtype::oid),
                       ('pg_catalog.pg_type'::regclass, 'auth.one_time_token_type'::regtype::oid),
                       ('pg_catalog.pg_class'::regclass, 'auth.identities'::regclass::oid),
                       ('pg_catalog.pg_class'::regclass, 'auth.sessions'::regclass::oid),
                       ('pg_catalog.pg_class'::regclass, 'auth.refresh_tokens'::regclass::oid),
                       ('pg_catalog.pg_class'::regclass, 'auth.refresh_tokens_id_seq'::regclass::oid),
                       ('pg_catalog.pg_class'::regclass, 'auth.one_time_tokens'::regclass::oid))
               AS o(classid, objid)
         WHERE NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d
                            WHERE d.classid = o.classid AND d.objid = o.objid AND d.deptype = 'e')
         ORDER BY o.classid <> 'pg_catalog.pg_namespace'::regclass  -- the schema first
    LOOP
        EXECUTE pg_catalog.format('ALTER EXTENSION pg_crm ADD %s', object.what);
    END LOOP;
    PERFORM pg_catalog.pg_extension_config_dump('auth.users', '');
    PERFORM pg_catalog.pg_extension_config_dump('auth.identities', '');
    PERFORM pg_catalog.pg_extension_config_dump('auth.sessions', '');
    PERFORM pg_catalog.pg_extension_config_dump('auth.refresh_tokens', '');
    PERFORM pg_catalog.pg_extension_config_dump('auth.refresh_tokens_id_seq', '');
    PERFORM pg_catalog.pg_extension_config_dump('auth.one_time_tokens', '');
END
$adopt$;

-- Tables are owned by a role nobody logs in as, so no connection ever holds owner rights.
DO $owner$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'crm_owner') THEN
        CREATE ROLE crm_owner NOLOGIN NOINHERIT;
    END IF;
    -- The edge's /auth/v1 endpoints run as crm_auth (SET LOCAL ROLE): it may call the auth
    -- service's functions and nothing else.
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'crm_auth') THEN
        CREATE ROLE crm_auth NOLOGIN NOINHERIT;
    END IF;
    GRANT crm_auth TO authenticator;
END
$owner$;

CREATE SCHEMA core;         -- platform tables: tenants, memberships
-- crm_private (helpers and internals; never exposed over HTTP) is the extension's own schema
-- (pg_crm.control): CREATE EXTENSION creates it before this script runs.
CREATE SCHEMA api;          -- the only schema the edge reaches
COMMENT ON SCHEMA core IS 'Aura platform tables (tenants, memberships). Tenant-scoped, row-level secured.';
COMMENT ON SCHEMA crm_private IS 'Aura internals: request-context helpers, business rules, operator functions. Never exposed over HTTP.';
COMMENT ON SCHEMA api IS 'Aura public API: the functions the edge exposes as POST/GET /rest/v1/rpc/{fn}.';

--------------------------------------------------------------------------------------------
-- Request context. `crm_private.begin_request` sets these three settings with SET LOCAL
-- after its live checks; policies read them only through these helpers. They are
-- LANGUAGE sql STABLE with no SET clause and no table access, so the planner inlines them
-- into the policy and evaluates them once per scan, which lets `tenant_id = ...` become an
-- index condition. `nullif(..., '')`: once a transaction-local setting has ended,
-- current_setting(..., true) reads '' rather than NULL.
--------------------------------------------------------------------------------------------
CREATE FUNCTION crm_private.tenant_id() RETURNS pg_catalog.uuid
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $$ SELECT nullif(pg_catalog.current_setting('app.current_tenant_id', true), '')::pg_catalog.uuid $$;
COMMENT ON FUNCTION crm_private.tenant_id() IS 'The current request''s tenant (set by crm_private.begin_request), or NULL.';

CREATE FUNCTION crm_private.user_id() RETURNS pg_catalog.uuid
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $$ SELECT nullif(pg_catalog.current_setting('app.current_user_id', true), '')::pg_catalog.uuid $$;
COMMENT ON FUNCTION crm_private.user_id() IS 'The current request''s user (set by crm_private.begin_request), or NULL.';

CREATE FUNCTION crm_private.tenant_role() RETURNS pg_catalog.text
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $$ SELECT nullif(pg_catalog.current_setting('app.tenant_role', true), '') $$;
COMMENT ON FUNCTION crm_private.tenant_role() IS 'The current user''s role in the current tenant (admin, manager, rep), or NULL.';

-- created_at/updated_at/created_by/updated_by belong to the database, not to callers: inside
-- a request (the gate has set a user) they are always the database's. Without one, an
-- operator or a restore is writing: an INSERT keeps the stamps it supplies (pg_dump's COPY
-- carries the original ones) and the column defaults fill in the rest.
CREATE FUNCTION crm_private.stamp_row() RETURNS trigger
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

--------------------------------------------------------------------------------------------
-- core.tenants: one row per customer workspace. Its `id` is the tenant id every other
-- table carries. Created and suspended by operators (crm_private functions); a tenant's
-- admins update the workspace metadata (PRD F1.2, F1.3).
--------------------------------------------------------------------------------------------
CREATE TABLE core.tenants (
    id uuid NOT NULL DEFAULT gen_random_uuid(),
    name text NOT NULL CHECK (pg_catalog.char_length(pg_catalog.btrim(name)) BETWEEN 1 AND 200),
    slug text NOT NULL CHECK (slug ~ '^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$'),
    logo_url text CHECK (logo_url ~* '^https?://[^\s[:cntrl:]"''`<>\\]+$' AND pg_catalog.char_length(logo_url) <= 2048),
    industry text CHECK (pg_catalog.char_length(industry) BETWEEN 1 AND 100),
    timezone text NOT NULL DEFAULT 'UTC' CHECK (pg_catalog.char_length(timezone) BETWEEN 1 AND 64),
    status text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'suspended')),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    created_by uuid,
    updated_by uuid,
    CONSTRAINT tenants_pkey PRIMARY KEY (id)
);
CREATE UNIQUE INDEX tenants_slug_key ON core.tenants (slug);
COMMENT ON TABLE core.tenants IS 'Customer workspaces. id is the tenant id; status suspended revokes all access on the next request (PRD F1.5).';

CREATE TRIGGER tenants_stamp BEFORE INSERT OR UPDATE ON core.tenants
    FOR EACH ROW EXECUTE FUNCTION crm_private.stamp_row();

-- The role's permissions (core.role_permissions), as the gate loaded them for this request:
-- `,key,key,`. Policies and api functions ask crm_private.has_permission; no table is read
-- inside a policy (Citus refuses that on distributed tables).
CREATE FUNCTION crm_private.has_permission(permission text) RETURNS boolean
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $$ SELECT coalesce(pg_catalog.strpos(pg_catalog.current_setting('app.permissions', true), ',' || permission || ',') > 0, false) $$;
COMMENT ON FUNCTION crm_private.has_permission(text) IS 'Whether the current request''s role holds a permission (core.role_permissions, loaded by crm_private.begin_request).';

--------------------------------------------------------------------------------------------
-- Roles and permissions as data (PRD F4.1, F4.3, F4.4): a role is a row, what it may do is
-- rows in core.role_permissions, so a custom role needs rows, not a schema change. The gate
-- loads the caller's permissions once per request; crm_private.has_permission reads them.
-- The Rust permission table (pg_crm's domain::roles) is tested against these rows.
-- Built-in rows come with the extension; pg_dump carries only the others.
--------------------------------------------------------------------------------------------
CREATE TABLE core.roles (
    key text NOT NULL CHECK (key ~ '^[a-z][a-z0-9_]{0,39}$'),
    label text NOT NULL CHECK (pg_catalog.char_length(label) BETWEEN 1 AND 100),
    builtin boolean NOT NULL DEFAULT false,
    CONSTRAINT roles_pkey PRIMARY KEY (key)
);
COMMENT ON TABLE core.roles IS 'Member roles. admin, manager and rep are built in.';

CREATE TABLE core.permissions (
    key text NOT NULL CHECK (key ~ '^[a-z]+(\.[a-z_]+)+$'),
    description text NOT NULL,
    builtin boolean NOT NULL DEFAULT false,
    CONSTRAINT permissions_pkey PRIMARY KEY (key)
);
COMMENT ON TABLE core.permissions IS 'Named permissions that roles hold (users.invite, users.manage, ...).';

CREATE TABLE core.role_permissions (
    role text NOT NULL REFERENCES core.roles (key) ON DELETE CASCADE,
    permission text NOT NULL REFERENCES core.permissions (key) ON DELETE CASCADE,
    builtin boolean NOT NULL DEFAULT false,
    CONSTRAINT role_permissions_pkey PRIMARY KEY (role, permission)
);
CREATE INDEX role_permissions_permission_idx ON core.role_permissions (permission);
COMMENT ON TABLE core.role_permissions IS 'Which role holds which permission.';

INSERT INTO core.roles (key, label, builtin) VALUES
    ('admin', 'Admin', true), ('manager', 'Sales manager', true), ('rep', 'Sales rep', true);
INSERT INTO core.permissions (key, description, builtin) VALUES
    ('workspace.read', 'See the workspace and its members', true),
    ('workspace.update', 'Change the workspace''s name, logo, industry and time zone', true),
    ('users.invite', 'Invite sales reps; see, resend and revoke invitations', true),
    ('users.manage', 'Invite any role, change roles, deactivate and reactivate members', true),
    ('deals.assign', 'Reassign deals and contacts to another member', true),
    ('records.read_all', 'See every contact and deal of the workspace, not only one''s own', true),
    ('audit.read', 'Read the audit log', true),
    ('data.export', 'Export the workspace''s data', true),
    ('data.import', 'Import contacts and organizations from CSV', true),
    ('data.erase', 'Erase a person''s personal data (GDPR)', true),
    ('fields.manage', 'Define and delete custom fields', true),
    ('workspace.delete', 'Ask for the workspace''s deletion, or cancel it', true);
INSERT INTO core.role_permissions (role, permission, builtin)
SELECT r, p, true
  FROM (VALUES
        ('admin', 'workspace.read'), ('admin', 'workspace.update'), ('admin', 'users.invite'),
        ('admin', 'users.manage'), ('admin', 'deals.assign'), ('admin', 'records.read_all'),
        ('admin', 'audit.read'), ('admin', 'data.export'), ('admin', 'fields.manage'), ('admin', 'workspace.delete'),
        ('admin', 'data.import'), ('admin', 'data.erase'),
        ('manager', 'workspace.read'), ('manager', 'users.invite'), ('manager', 'deals.assign'),
        ('manager', 'records.read_all'),
        ('rep', 'workspace.read')) AS v(r, p);

--------------------------------------------------------------------------------------------
-- core.memberships: a user's place in a tenant, with their role. Deactivation is a status,
-- never a delete, so the member's records keep their history (PRD F3.4, F3.5).
--------------------------------------------------------------------------------------------
CREATE TABLE core.memberships (
    tenant_id uuid NOT NULL,
    id uuid NOT NULL DEFAULT gen_random_uuid(),
    user_id uuid NOT NULL,
    role text NOT NULL,
    status text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'deactivated')),
    display_name text CHECK (pg_catalog.char_length(display_name) BETWEEN 1 AND 200),
    avatar_url text CHECK (avatar_url ~* '^https?://[^\s[:cntrl:]"''`<>\\]+$' AND pg_catalog.char_length(avatar_url) <= 2048),
    department text CHECK (pg_catalog.char_length(department) BETWEEN 1 AND 100),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    created_by uuid,
    updated_by uuid,
    CONSTRAINT memberships_pkey PRIMARY KEY (tenant_id, id),
    CONSTRAINT memberships_tenant_user_key UNIQUE (tenant_id, user_id),
    CONSTRAINT memberships_tenant_fkey FOREIGN KEY (tenant_id) REFERENCES core.tenants (id),
    CONSTRAINT memberships_user_fkey FOREIGN KEY (user_id) REFERENCES auth.users (id),
    CONSTRAINT memberships_role_fkey FOREIGN KEY (role) REFERENCES core.roles (key)
);
CREATE INDEX memberships_tenant_role_idx ON core.memberships (tenant_id, role);
-- The one index not led by tenant_id: auth.users is not tenant-scoped, and deleting or
-- updating a user must find their memberships without scanning every tenant's.
CREATE INDEX memberships_user_idx ON core.memberships (user_id);
-- Also not led by tenant_id: removing a role (a row of core.roles) checks its members.
CREATE INDEX memberships_role_idx ON core.memberships (role);
COMMENT ON TABLE core.memberships IS 'Users'' membership of a tenant: role (admin, manager, rep), status, profile.';

CREATE TRIGGER memberships_stamp BEFORE INSERT OR UPDATE ON core.memberships
    FOR EACH ROW EXECUTE FUNCTION crm_private.stamp_row();

--------------------------------------------------------------------------------------------
-- Row-level security. One permissive policy per command, TO authenticated, tenant match
-- first. No restrictive policies and no subqueries: Citus refuses subqueries in policies of
-- distributed tables and re-creates restrictive policies as permissive on its shards.
-- A command without a policy is denied (and not granted either).
--------------------------------------------------------------------------------------------
ALTER TABLE core.tenants ENABLE ROW LEVEL SECURITY;
ALTER TABLE core.tenants FORCE ROW LEVEL SECURITY;

CREATE POLICY tenants_select ON core.tenants AS PERMISSIVE FOR SELECT TO authenticated
    USING (id = crm_private.tenant_id());
COMMENT ON POLICY tenants_select ON core.tenants IS 'Members see their own workspace only.';

CREATE POLICY tenants_update ON core.tenants AS PERMISSIVE FOR UPDATE TO authenticated
    USING (id = crm_private.tenant_id() AND crm_private.has_permission('workspace.update'))
    WITH CHECK (id = crm_private.tenant_id() AND crm_private.has_permission('workspace.update'));
COMMENT ON POLICY tenants_update ON core.tenants IS 'Only the tenant''s admins change its workspace metadata (F1.3).';

ALTER TABLE core.memberships ENABLE ROW LEVEL SECURITY;
ALTER TABLE core.memberships FORCE ROW LEVEL SECURITY;

CREATE POLICY memberships_select ON core.memberships AS PERMISSIVE FOR SELECT TO authenticated
    USING (tenant_id = crm_private.tenant_id());
COMMENT ON POLICY memberships_select ON core.memberships IS 'Members see their own tenant''s team.';

-- Roles and permissions are the same for every tenant: every member may read them.
ALTER TABLE core.roles ENABLE ROW LEVEL SECURITY;
ALTER TABLE core.roles FORCE ROW LEVEL SECURITY;
CREATE POLICY roles_select ON core.roles AS PERMISSIVE FOR SELECT TO authenticated USING (true);
ALTER TABLE core.permissions ENABLE ROW LEVEL SECURITY;
ALTER TABLE core.permissions FORCE ROW LEVEL SECURITY;
CREATE POLICY permissions_select ON core.permissions AS PERMISSIVE FOR SELECT TO authenticated USING (true);
ALTER TABLE core.role_permissions ENABLE ROW LEVEL SECURITY;
ALTER TABLE core.role_permissions FORCE ROW LEVEL SECURITY;
CREATE POLICY role_permissions_select ON core.role_permissions AS PERMISSIVE FOR SELECT TO authenticated USING (true);

ALTER TABLE core.tenants OWNER TO crm_owner;
ALTER TABLE core.memberships OWNER TO crm_owner;
ALTER TABLE core.roles OWNER TO crm_owner;
ALTER TABLE core.permissions OWNER TO crm_owner;
ALTER TABLE core.role_permissions OWNER TO crm_owner;

-- Tables an extension creates are left out of pg_dump unless registered: without this a
-- DBA's backup would hold the schema and none of the rows.
SELECT pg_catalog.pg_extension_config_dump('core.tenants', '');
SELECT pg_catalog.pg_extension_config_dump('core.memberships', '');
SELECT pg_catalog.pg_extension_config_dump('core.roles', 'WHERE NOT builtin');
SELECT pg_catalog.pg_extension_config_dump('core.permissions', 'WHERE NOT builtin');
SELECT pg_catalog.pg_extension_config_dump('core.role_permissions', 'WHERE NOT builtin');
