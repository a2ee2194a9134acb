-- A workspace's settings and its deletion (issue 9): settings for admins; a deletion request
-- needs a re-authentication code, ends every member's access at once and leaves its admins
-- only the cancel; after the grace period the job removes every row of the workspace from
-- every tenant table (from the catalog) and nothing of another; `archive` writes every row
-- to a bundle first; what stays is a tombstone and the sealed audit entries of the deletion.
SET client_min_messages = error;

-- Rows of a workspace in each table that holds workspace rows (from the catalog, so a table
-- added later is counted too).
CREATE FUNCTION pg_temp.rows_of(tenant uuid) RETURNS TABLE (tbl text, n bigint) LANGUAGE plpgsql AS $$
DECLARE
    t regclass;
BEGIN
    FOR t IN SELECT * FROM crm_private.tenant_tables() LOOP
        tbl := t::text;
        EXECUTE format('SELECT count(*) FROM %s WHERE tenant_id = %L', t, tenant) INTO n;
        RETURN NEXT;
    END LOOP;
END
$$;

-- The end of a request inside a test transaction (as the superuser): no context left.
CREATE FUNCTION pg_temp.end_request() RETURNS void LANGUAGE sql AS $$
    SELECT set_config(s, '', true) FROM unnest(ARRAY['app.current_tenant_id', 'app.current_user_id', 'app.tenant_role',
                                                     'app.permissions', 'app.pending_deletion_tenant']) s
$$;

-- Settings: any member reads them; admins change them, value by value.
BEGIN;
SELECT tests.seed();
SELECT tests.login('rita@acme.test', 'acme');
SELECT api.get_workspace_settings() AS rep_reads;
SELECT tests.try($$SELECT api.update_workspace_settings('{"access_log": false}')$$) AS rep_changes;
RESET ROLE;
SELECT tests.login('ann@acme.test', 'acme');
SELECT api.update_workspace_settings('{"retention_policy": "archive", "access_log": false, "audit_retention_months": 24, "deletion_grace_days": 45}') AS changed;
SELECT tests.try($$SELECT api.update_workspace_settings('{"colour": "red"}')$$) AS unknown_key;
SELECT tests.try($$SELECT api.update_workspace_settings('{}')$$) AS nothing;
SELECT tests.try($$SELECT api.update_workspace_settings('{"retention_policy": "burn"}')$$) AS bad_policy;
SELECT tests.try($$SELECT api.update_workspace_settings('{"access_log": "yes"}')$$) AS bad_flag;
SELECT tests.try($$SELECT api.update_workspace_settings('{"audit_retention_months": 6}')$$) AS too_short_retention;
SELECT tests.try($$SELECT api.update_workspace_settings('{"audit_retention_months": 12.5}')$$) AS fractional;
SELECT tests.try($$SELECT api.update_workspace_settings('{"deletion_grace_days": 7}')$$) AS too_short_grace;
SELECT e ->> 'action' AS action, e -> 'changes' AS changes
  FROM jsonb_array_elements(api.list_audit_events(action => 'tenant.settings_changed') -> 'data') e;
RESET ROLE;
SELECT tests.login('gil@globex.test', 'globex');
SELECT api.get_workspace_settings() ->> 'retention_policy' AS globex_untouched;
RESET ROLE;
ROLLBACK;

-- Deletion: refused without a code; with one, members lose access at once, the admin can
-- only cancel; cancelling restores everything.
BEGIN;
SELECT tests.seed();
SELECT tests.login('ann@acme.test', 'acme');
SELECT tests.try($$SELECT api.request_workspace_deletion()$$) AS no_nonce;
SELECT tests.try($$SELECT api.request_workspace_deletion('000000')$$) AS wrong_nonce;
RESET ROLE;
SELECT tests.login('mo@acme.test', 'acme');
SELECT tests.try($$SELECT api.request_workspace_deletion(tests.nonce())$$) AS manager_requests;
RESET ROLE;
SELECT tests.login('ann@acme.test', 'acme');
SELECT (api.create_contact('Cleo') #>> '{contact,first_name}') AS contact;
SELECT s ->> 'status' AS status, (s ->> 'deletion_due_at')::timestamptz - now() AS grace
  FROM api.request_workspace_deletion(tests.nonce()) s;
RESET ROLE;
SET LOCAL ROLE authenticated;
SELECT tests.try($$SELECT crm_private.begin_request(tests.claims('mo@acme.test', 'acme'), tests.tenant_id('acme'))$$) AS manager_now;
SELECT tests.try($$SELECT crm_private.begin_request(tests.claims('rita@acme.test', 'acme'), tests.tenant_id('acme'))$$) AS rep_now;
RESET ROLE;
SELECT count(*) AS sessions_left FROM auth.sessions s JOIN core.memberships m ON m.user_id = s.user_id
 WHERE m.tenant_id = tests.tenant_id('acme');
-- The admin signs in again (a new session) and gets in, but sees nothing and can do
-- nothing but read the settings and cancel.
SELECT crm_private.create_session(tests.user_id('ann@acme.test')) IS NOT NULL AS signed_in_again;
SELECT tests.login('ann@acme.test', 'acme');
SELECT crm_private.tenant_id() IS NULL AS no_tenant_context, crm_private.pending_deletion_tenant() = tests.tenant_id('acme') AS pending;
SELECT count(*) AS contacts_seen FROM crm.contacts;
SELECT count(*) AS workspaces_seen FROM core.tenants;
SELECT tests.try($$SELECT api.list_contacts()$$) AS admin_lists;
SELECT api.get_workspace() IS NULL AS workspace_hidden;
SELECT api.get_workspace_settings() ->> 'status' AS admin_reads_settings;
SELECT api.cancel_workspace_deletion() ->> 'status' AS cancelled;
RESET ROLE;
SELECT tests.login('mo@acme.test', 'acme');
SELECT api.whoami() ->> 'role' AS manager_back;
SELECT tests.try($$SELECT api.cancel_workspace_deletion()$$) AS manager_cancels;
RESET ROLE;
SELECT tests.login('ann@acme.test', 'acme');
SELECT tests.try($$SELECT api.cancel_workspace_deletion()$$) AS nothing_to_cancel;
SELECT e ->> 'action' AS action, e -> 'changes' -> 'before' AS before, e #> '{changes,after,status}' AS after
  FROM jsonb_array_elements(api.list_audit_events(object_type => 'tenant') -> 'data') e ORDER BY (e ->> 'id')::bigint;
RESET ROLE;
ROLLBACK;

-- The job: before the grace period ends, nothing; after it (a test clock), every row of the
-- workspace goes, from every tenant table; the other workspace keeps every row.
BEGIN;
SELECT tests.seed();
UPDATE auth.users SET encrypted_password = crm_private.password_hash('correct horse battery'), email_confirmed_at = now();
SELECT tests.login('ann@acme.test', 'acme');
SELECT (api.create_organization('Client Co') #>> '{organization,id}') AS org \gset
SELECT (api.create_contact('Cleo', 'Client', 'cleo@client.test', organization_id => :'org') #>> '{contact,id}') AS cleo \gset
SELECT (api.create_deal('Client deal', 100, 'USD', contact_id => :'cleo') ->> 'stage') AS deal;
SELECT (api.log_activity('note', 'Met Cleo', NULL, :'cleo') ->> 'type') AS activity;
SELECT (api.define_custom_field('contact', 'tier', 'Tier', 'text') ->> 'key') AS field;
SELECT (api.invite_user('nia@acme.test', 'rep') ->> 'status') AS invited;
SELECT count(*) AS viewed FROM api.get_contact(:'cleo');
RESET ROLE;
SELECT tests.login('gil@globex.test', 'globex');
SELECT (api.create_contact('Gina') #>> '{contact,first_name}') AS globex_contact;
RESET ROLE;
SELECT crm_private.flush_events() >= 0 AS events_stored, crm_private.seal_audit_log() > 0 AS sealed;
CREATE TEMP TABLE globex_before AS SELECT * FROM pg_temp.rows_of(tests.tenant_id('globex'));
SELECT count(*) FILTER (WHERE n > 0) AS acme_tables_with_rows FROM pg_temp.rows_of(tests.tenant_id('acme'));
SELECT tests.tenant_id('acme') AS acme \gset
SELECT tests.login('ann@acme.test', 'acme');
SELECT api.request_workspace_deletion(tests.nonce()) ->> 'status' AS requested;
RESET ROLE;
SELECT pg_temp.end_request();
SELECT crm_private.run_due_deletions() AS deleted_during_grace, crm_private.run_due_deletions(now() + interval '29 days') AS day_29;
-- In batches (two rows per table and run here), then done.
SELECT crm_private.run_due_deletions(now() + interval '31 days', 2) AS first_batch;
SELECT count(*) FILTER (WHERE n > 0) > 0 AS rows_left_after_one_batch FROM pg_temp.rows_of(:'acme');
DO $$
BEGIN
    FOR i IN 1..50 LOOP
        EXIT WHEN (SELECT status FROM core.tenants WHERE slug LIKE 'deleted-%') = 'deleted';
        PERFORM crm_private.run_due_deletions(now() + interval '31 days', 2);
    END LOOP;
END
$$;
SELECT status, name, slug = 'deleted-' || id AS tombstone_slug, logo_url, industry, deleted_at IS NOT NULL AS deleted_at
  FROM core.tenants WHERE id = :'acme';
-- What is left of acme, table by table: only the audit entries of its deletion, sealed.
SELECT tbl, n FROM pg_temp.rows_of(:'acme') WHERE n > 0 ORDER BY tbl;
SELECT action, actor_role FROM core.audit_log WHERE tenant_id = :'acme' ORDER BY id;
SELECT v ->> 'valid' AS valid, v ->> 'entries_verified' AS verified FROM crm_private.verify_audit_chain(:'acme') v;
SELECT count(*) AS acme_accounts_left FROM auth.users WHERE email LIKE '%@acme.test';
SELECT count(*) AS acme_events_left FROM core.security_events WHERE tenant_id = :'acme';
-- Globex: every row as before.
SELECT b.tbl, b.n AS before, a.n AS after FROM globex_before b JOIN pg_temp.rows_of(tests.tenant_id('globex')) a USING (tbl)
 WHERE a.n <> b.n ORDER BY 1;
SELECT count(*) FILTER (WHERE n > 0) AS globex_tables_with_rows FROM globex_before;
-- The deleted workspace's members cannot sign in; globex's can.
SELECT crm_private.auth_token_password('{"body": {"email": "ann@acme.test", "password": "correct horse battery"}}') #>> '{error,code}' AS ann_signs_in;
SELECT crm_private.auth_token_password('{"body": {"email": "gil@globex.test", "password": "correct horse battery"}}') ? 'session' AS gil_signs_in;
SELECT crm_private.run_due_deletions(now() + interval '40 days') AS run_again;
ROLLBACK;

-- archive: a bundle with every row of the workspace is written first (read back here);
-- an operator deletes at once.
BEGIN;
SELECT tests.seed();
SELECT tests.login('gil@globex.test', 'globex');
SELECT (api.create_contact('Gina', email => 'gina@globex.test') #>> '{contact,first_name}') AS contact;
SELECT (api.create_deal('Globex deal', 50, 'EUR') ->> 'stage') AS deal;
SELECT api.update_workspace_settings('{"retention_policy": "archive"}') ->> 'retention_policy' AS policy;
RESET ROLE;
CREATE TEMP TABLE globex_rows AS SELECT * FROM pg_temp.rows_of(tests.tenant_id('globex'));
INSERT INTO globex_rows VALUES ('core.tenants', 1),
    ('auth.users', (SELECT count(*) FROM core.memberships WHERE tenant_id = tests.tenant_id('globex')));
SELECT tests.tenant_id('globex') AS globex \gset
SELECT d ->> 'status' AS status, d ->> 'archive_path' LIKE '%/pg_crm_archive/' || :'globex' || '-%.ndjson' AS archived
  FROM crm_private.delete_tenant_now(:'globex') d;
SELECT archive_path AS bundle FROM core.tenants WHERE id = :'globex' \gset
CREATE TEMP TABLE bundle AS
    SELECT l::jsonb AS line FROM regexp_split_to_table(rtrim(pg_read_file(:'bundle'), E'\n'), E'\n') l;
SELECT line ->> 'archive' AS header, line ->> 'tenant_id' = :'globex' AS its_tenant FROM bundle WHERE line ? 'archive';
-- Every row the workspace had is in the bundle, table by table (the audit log as it was
-- when the archive was written); no secret is.
SELECT r.tbl, r.n AS rows_before, count(b.line) AS in_bundle
  FROM globex_rows r LEFT JOIN bundle b ON b.line ->> 'table' = r.tbl
 WHERE r.n > 0 GROUP BY r.tbl, r.n HAVING count(b.line) <> r.n AND r.tbl NOT IN ('core.audit_log') ORDER BY 1;
SELECT count(*) > 0 AS audit_entries_in_bundle FROM bundle WHERE line ->> 'table' = 'core.audit_log';
SELECT count(*) AS contacts_in_bundle FROM bundle WHERE line #>> '{row,email}' = 'gina@globex.test';
SELECT count(*) AS secrets_in_bundle FROM bundle WHERE line -> 'row' ? 'encrypted_password';
SELECT tbl, n FROM pg_temp.rows_of(:'globex') WHERE n > 0 ORDER BY tbl;
SELECT tests.try(format('SELECT crm_private.delete_tenant_now(%L)', :'globex')) AS again;
ROLLBACK;

-- Who may call the operator functions: nobody but a superuser.
BEGIN;
SELECT tests.seed();
SELECT tests.login('ann@acme.test', 'acme');
SELECT tests.try(format('SELECT crm_private.delete_tenant_now(%L)', tests.tenant_id('acme'))) AS admin_deletes_now;
SELECT tests.try(format('SELECT crm_private.schedule_tenant_deletion(%L)', tests.tenant_id('globex'))) AS admin_schedules;
SELECT tests.try($$SELECT crm_private.run_due_deletions()$$) AS admin_runs_the_job;
RESET ROLE;
ROLLBACK;
