-- crm_private.begin_request: the one gate to a tenant context.

-- An active member of an active tenant gets the context, from live data.
BEGIN;
SELECT tests.seed();
SELECT tests.login('mo@acme.test', 'acme');
SELECT current_user, crm_private.tenant_role() AS role,
       crm_private.tenant_id() = tests.tenant_id('acme') AS tenant_ok,
       crm_private.user_id() = tests.user_id('mo@acme.test') AS user_ok,
       auth.uid() = tests.user_id('mo@acme.test') AS auth_uid_ok,
       auth.jwt() ->> 'email' AS jwt_email;
SELECT api.whoami() - 'user_id' - 'tenant_id' AS whoami;
ROLLBACK;

-- The role comes from the membership, never from the token.
BEGIN;
SELECT tests.seed();
SET LOCAL ROLE authenticated;
SELECT crm_private.begin_request(
    tests.claims('rita@acme.test', 'acme') || '{"app_metadata": {"tenant_role": "admin"}}',
    tests.tenant_id('acme'));
SELECT crm_private.tenant_role() AS role;
ROLLBACK;

-- Refusals: 42501, and no context is left behind.
BEGIN;
SELECT tests.seed();
SET LOCAL ROLE authenticated;
SELECT tests.try($$SELECT crm_private.begin_request(NULL, tests.tenant_id('acme'))$$) AS no_claims;
SELECT tests.try($$SELECT crm_private.begin_request('{"sub": "nobody"}', tests.tenant_id('acme'))$$) AS bad_sub;
SELECT tests.try($$SELECT crm_private.begin_request(tests.claims('ann@acme.test', 'acme'), NULL)$$) AS no_tenant;
SELECT tests.try($$SELECT crm_private.begin_request(tests.claims('ann@acme.test', 'acme'), tests.tenant_id('globex'))$$) AS other_tenant;
SELECT tests.try($$SELECT crm_private.begin_request(tests.claims('ann@acme.test', 'acme'), gen_random_uuid())$$) AS unknown_tenant;
SELECT crm_private.tenant_id() IS NULL AS no_tenant_set, crm_private.user_id() IS NULL AS no_user_set,
       crm_private.tenant_role() IS NULL AS no_role_set;
ROLLBACK;

-- A deactivated member loses access on the next request; so does everyone in a
-- suspended tenant. Reactivation restores it.
BEGIN;
SELECT tests.seed();
SELECT crm_private.set_member_status(tests.tenant_id('acme'), tests.user_id('rita@acme.test'), 'deactivated');
SELECT crm_private.suspend_tenant(tests.tenant_id('globex'));
SET LOCAL ROLE authenticated;
SELECT tests.try($$SELECT crm_private.begin_request(tests.claims('rita@acme.test', 'acme'), tests.tenant_id('acme'))$$) AS deactivated;
SELECT tests.try($$SELECT crm_private.begin_request(tests.claims('gil@globex.test', 'globex'), tests.tenant_id('globex'))$$) AS suspended;
SELECT tests.try($$SELECT crm_private.begin_request(tests.claims('mo@acme.test', 'acme'), tests.tenant_id('acme'))$$) AS colleague_unaffected;
RESET ROLE;
-- A banned or deleted account (auth.users) is refused too, whatever its memberships.
UPDATE auth.users SET banned_until = now() + interval '1 day' WHERE email = 'mo@acme.test';
UPDATE auth.users SET deleted_at = now() WHERE email = 'ann@acme.test';
SET LOCAL ROLE authenticated;
SELECT tests.try($$SELECT crm_private.begin_request(tests.claims('mo@acme.test', 'acme'), tests.tenant_id('acme'))$$) AS banned;
SELECT tests.try($$SELECT crm_private.begin_request(tests.claims('ann@acme.test', 'acme'), tests.tenant_id('acme'))$$) AS deleted;
RESET ROLE;
UPDATE auth.users SET banned_until = now() - interval '1 day' WHERE email = 'mo@acme.test';
SET LOCAL ROLE authenticated;
SELECT tests.try($$SELECT crm_private.begin_request(tests.claims('mo@acme.test', 'acme'), tests.tenant_id('acme'))$$) AS ban_expired;
RESET ROLE;
SELECT crm_private.reactivate_tenant(tests.tenant_id('globex'));
SET LOCAL ROLE authenticated;
SELECT tests.try($$SELECT crm_private.begin_request(tests.claims('gil@globex.test', 'globex'), tests.tenant_id('globex'))$$) AS reactivated;
ROLLBACK;

-- Identity comes from the gate only. request.jwt.claims (kept for Supabase's auth.uid() and
-- auth.jwt()) can be rewritten by the session after begin_request; nothing of pg_crm's
-- reads it, so a rewrite changes what auth.uid() says and nothing else.
BEGIN;
SELECT tests.seed();
SELECT tests.login('rita@acme.test', 'acme');
SELECT set_config('request.jwt.claims',
                  jsonb_build_object('sub', tests.user_id('gil@globex.test'), 'email', 'gil@globex.test',
                                     'role', 'authenticated',
                                     'app_metadata', jsonb_build_object('tenant_id', tests.tenant_id('globex'),
                                                                        'tenant_role', 'admin'))::text,
                  true) IS NOT NULL AS claims_rewritten;
SELECT auth.uid() = tests.user_id('gil@globex.test') AS auth_uid_spoofed,
       crm_private.user_id() = tests.user_id('rita@acme.test') AS gate_user_kept,
       crm_private.tenant_id() = tests.tenant_id('acme') AS gate_tenant_kept,
       crm_private.tenant_role() AS gate_role;
SELECT api.whoami() - 'user_id' - 'tenant_id' AS whoami_after_spoof;
SELECT api.get_workspace() ->> 'slug' AS workspace_after_spoof;
SELECT tests.try($$SELECT api.update_workspace(name => 'Spoofed')$$) AS update_after_spoof;
SELECT count(*) AS memberships_visible, count(*) FILTER (WHERE tenant_id = tests.tenant_id('globex')) AS globex_visible
FROM core.memberships;
ROLLBACK;

-- The context cannot be forged with SET: the settings are superuser-only.
BEGIN;
SELECT tests.seed();
SET LOCAL ROLE authenticated;
SELECT tests.try(format('SET LOCAL app.current_tenant_id = %L', tests.tenant_id('acme'))) AS set_tenant;
SELECT tests.try($$SET LOCAL app.tenant_role = 'admin'$$) AS set_role;
SELECT tests.try(format('SELECT set_config(%L, %L, true)', 'app.current_user_id', tests.user_id('ann@acme.test'))) AS set_config_user;
SELECT count(*) AS tenants_visible FROM core.tenants;
ROLLBACK;

-- The context is transaction-local: the next transaction starts without one.
BEGIN;
SELECT tests.seed();
SELECT tests.login('ann@acme.test', 'acme');
SELECT crm_private.tenant_id() IS NOT NULL AS has_context;
COMMIT;
SELECT crm_private.tenant_id() IS NULL AS no_context_after_commit,
       current_setting('app.current_tenant_id', true) AS raw_setting;
-- (the seed above was committed: remove it, its audit entries too, which only pg_crm's
-- own maintenance setting allows)
BEGIN;
DELETE FROM core.memberships;
DELETE FROM crm.pipeline_stages;
SET LOCAL pg_crm.audit_maintenance = on;
DELETE FROM core.audit_log;
DELETE FROM core.tenants;
DELETE FROM auth.users;
COMMIT;
