-- Tenant isolation, by role: what each of the six users sees and may change.

-- Every member sees exactly their own tenant and its team, whatever their role.
BEGIN;
SELECT tests.seed();
CREATE TEMP TABLE seen (email text, slug text, tenants_visible bigint, tenant_names text,
                        members_visible bigint, foreign_members bigint, workspace text);
GRANT ALL ON seen TO authenticated;
DO $$
DECLARE
    u record;
BEGIN
    FOR u IN SELECT * FROM (VALUES
        ('ann@acme.test', 'acme'), ('mo@acme.test', 'acme'), ('rita@acme.test', 'acme'),
        ('gil@globex.test', 'globex'), ('gia@globex.test', 'globex'), ('gus@globex.test', 'globex')) v(email, slug)
    LOOP
        PERFORM tests.login(u.email, u.slug);
        INSERT INTO seen
        SELECT u.email, u.slug,
               (SELECT count(*) FROM core.tenants),
               (SELECT string_agg(name, ',') FROM core.tenants),
               (SELECT count(*) FROM core.memberships),
               (SELECT count(*) FROM core.memberships WHERE tenant_id <> crm_private.tenant_id()),
               api.get_workspace() ->> 'slug';
        RESET ROLE;
    END LOOP;
END
$$;
SELECT * FROM seen ORDER BY slug, email;
ROLLBACK;

-- Only admins change the workspace; nobody changes another tenant's.
BEGIN;
SELECT tests.seed();
SELECT tests.login('mo@acme.test', 'acme');
SELECT tests.try($$SELECT api.update_workspace(name => 'Mo was here')$$) AS manager_update;
-- Going around the api function: RLS leaves the manager no row to update.
WITH hit AS (UPDATE core.tenants SET name = 'Mo was here' RETURNING 1)
SELECT count(*) AS manager_rows_updated FROM hit;
RESET ROLE;
SELECT tests.login('rita@acme.test', 'acme');
SELECT tests.try($$SELECT api.update_workspace(industry => 'Rita')$$) AS rep_update;
RESET ROLE;
SELECT tests.login('ann@acme.test', 'acme');
SELECT api.update_workspace(name => 'Acme Inc') ->> 'name' AS admin_update;
-- Tenant A's admin aims at tenant B directly: RLS shows no row to change.
WITH hit AS (UPDATE core.tenants SET name = 'pwned' WHERE slug = 'globex' RETURNING 1)
SELECT count(*) AS globex_rows_updated FROM hit;
SELECT tests.try($$UPDATE core.tenants SET status = 'suspended'$$) AS admin_sets_status;
SELECT tests.try($$UPDATE core.tenants SET slug = 'acme2'$$) AS admin_sets_slug;
SELECT tests.try($$INSERT INTO core.tenants (name, slug) VALUES ('New', 'new')$$) AS insert_tenant;
SELECT tests.try($$DELETE FROM core.tenants$$) AS delete_tenant;
-- An admin may change roles in their own workspace (api.set_member_role does), never in another.
WITH hit AS (UPDATE core.memberships SET role = 'admin' WHERE tenant_id = tests.tenant_id('globex') RETURNING 1)
SELECT count(*) AS globex_memberships_updated FROM hit;
SELECT tests.try($$INSERT INTO core.memberships (tenant_id, user_id, role) VALUES (crm_private.tenant_id(), crm_private.user_id(), 'admin')$$) AS insert_membership;
RESET ROLE;
SELECT slug, name, status FROM core.tenants ORDER BY slug;
ROLLBACK;

-- Without a tenant context (or as a non-member) reads return nothing and writes fail.
BEGIN;
SELECT tests.seed();
SET LOCAL ROLE authenticated;
SELECT (SELECT count(*) FROM core.tenants) AS tenants, (SELECT count(*) FROM core.memberships) AS members,
       api.get_workspace() AS workspace, api.whoami() AS whoami;
SELECT tests.try($$SELECT api.update_workspace(name => 'x')$$) AS update_without_context;
SELECT tests.try($$SELECT crm_private.update_workspace('x', NULL, NULL, NULL)$$) AS impl_without_context;
ROLLBACK;
