-- The CRM (issue 7): what each role may do through every api function and directly on every
-- crm table, that nothing crosses tenants, and the record rules (email uniqueness, stage
-- transitions, immutable activities, custom fields, duplicates, keyset pages).

-- Fixtures: Acme's records, made by its members through the api.
CREATE FUNCTION tests.crm_seed() RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    PERFORM tests.seed();
    PERFORM tests.login('ann@acme.test', 'acme');
    PERFORM api.define_custom_field('contact', 'linkedin', 'LinkedIn', 'url');
    PERFORM api.define_custom_field('deal', 'source', 'Source', 'select', false, '["web", "referral"]');
    PERFORM api.create_organization('Initech', 'Software', '51-200', 'Austin', 'https://www.initech.test');
    RESET ROLE;
    PERFORM tests.login('rita@acme.test', 'acme');
    PERFORM api.create_contact('Peter', 'Gibbons', 'peter@initech.test', '+1 (555) 010-0200',
                               organization_id => (SELECT id FROM crm.organizations WHERE name = 'Initech'));
    PERFORM api.create_deal('TPS reports', 12000, 'USD', contact_id => (SELECT id FROM crm.contacts WHERE first_name = 'Peter'));
    PERFORM api.log_activity('call', 'Discussed the TPS reports', NULL, (SELECT id FROM crm.contacts WHERE first_name = 'Peter'),
                             (SELECT id FROM crm.deals WHERE name = 'TPS reports'));
    RESET ROLE;
    PERFORM tests.login('mo@acme.test', 'acme');
    PERFORM api.create_contact('Milton', 'Waddams', 'milton@initech.test');
    RESET ROLE;
END
$$;
-- Acme's record ids by name, for the cases below.
CREATE FUNCTION tests.rec(what text) RETURNS uuid LANGUAGE sql STABLE SECURITY DEFINER AS $$
    SELECT CASE what
        WHEN 'org' THEN (SELECT id FROM crm.organizations WHERE tenant_id = tests.tenant_id('acme') AND name = 'Initech')
        WHEN 'peter' THEN (SELECT id FROM crm.contacts WHERE tenant_id = tests.tenant_id('acme') AND first_name = 'Peter')
        WHEN 'milton' THEN (SELECT id FROM crm.contacts WHERE tenant_id = tests.tenant_id('acme') AND first_name = 'Milton')
        WHEN 'deal' THEN (SELECT id FROM crm.deals WHERE tenant_id = tests.tenant_id('acme') AND name = 'TPS reports')
        WHEN 'activity' THEN (SELECT id FROM crm.activities WHERE tenant_id = tests.tenant_id('acme') ORDER BY created_at LIMIT 1) END
$$;
GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA tests TO PUBLIC;

-- Every api function × {admin, manager, rep, another tenant's admin}: generated from the
-- catalog, so a function added without its cases shows up here as missing.
BEGIN;
SELECT tests.crm_seed();
CREATE TEMP TABLE cases (fn text PRIMARY KEY, call text NOT NULL);
INSERT INTO cases VALUES
    ('api.whoami()', $$SELECT api.whoami()$$),
    ('api.get_workspace()', $$SELECT api.get_workspace()$$),
    ('api.update_workspace(text,text,text,text)', $$SELECT api.update_workspace(industry => 'Paper')$$),
    ('api.my_permissions()', $$SELECT api.my_permissions()$$),
    ('api.invite_user(text,text)', $$SELECT api.invite_user('new@acme.test')$$),
    ('api.list_invitations(integer,text)', $$SELECT api.list_invitations()$$),
    ('api.resend_invitation(uuid)', $$SELECT api.resend_invitation(gen_random_uuid())$$),
    ('api.revoke_invitation(uuid)', $$SELECT api.revoke_invitation(gen_random_uuid())$$),
    ('api.list_members(integer,text)', $$SELECT api.list_members()$$),
    ('api.set_member_role(uuid,text)', $$SELECT api.set_member_role(tests.user_id('rita@acme.test'), 'rep')$$),
    ('api.deactivate_member(uuid,text)', $$SELECT api.deactivate_member(tests.user_id('mo@acme.test'), tests.nonce())$$),
    ('api.reactivate_member(uuid)', $$SELECT api.reactivate_member(tests.user_id('mo@acme.test'))$$),
    ('api.update_profile(text,text,text)', $$SELECT api.update_profile('Me')$$),
    ('api.create_organization(text,text,text,text,text,uuid,jsonb)', $$SELECT api.create_organization('Hooli', parent_id => tests.rec('org'))$$),
    ('api.get_organization(uuid)', $$SELECT api.get_organization(tests.rec('org'))$$),
    ('api.list_organizations(uuid,uuid,text,boolean,integer,text)', $$SELECT api.list_organizations(subtree_of => tests.rec('org'))$$),
    ('api.update_organization(uuid,jsonb)', $$SELECT api.update_organization(tests.rec('org'), '{"location": "Dallas"}')$$),
    ('api.delete_organization(uuid)', $$SELECT api.delete_organization(tests.rec('org'))$$),
    ('api.restore_organization(uuid)', $$SELECT api.restore_organization(tests.rec('org'))$$),
    ('api.create_contact(text,text,text,text,text,uuid,uuid,jsonb)', $$SELECT api.create_contact('Bob', organization_id => tests.rec('org'))$$),
    ('api.get_contact(uuid)', $$SELECT api.get_contact(tests.rec('peter'))$$),
    ('api.list_contacts(uuid,uuid,text,boolean,integer,text)', $$SELECT api.list_contacts(organization_id => tests.rec('org'))$$),
    ('api.search_contacts(text,integer,text)', $$SELECT api.search_contacts('gibbons')$$),
    ('api.update_contact(uuid,jsonb)', $$SELECT api.update_contact(tests.rec('peter'), '{"title": "Engineer"}')$$),
    ('api.assign_contact(uuid,uuid)', $$SELECT api.assign_contact(tests.rec('peter'), tests.user_id('rita@acme.test'))$$),
    ('api.delete_contact(uuid)', $$SELECT api.delete_contact(tests.rec('peter'))$$),
    ('api.restore_contact(uuid)', $$SELECT api.restore_contact(tests.rec('peter'))$$),
    ('api.find_duplicate_contacts(uuid,text,text,text,text,uuid)', $$SELECT api.find_duplicate_contacts(tests.rec('peter'))$$),
    ('api.merge_contacts(uuid,uuid)', $$SELECT api.merge_contacts(tests.rec('peter'), tests.rec('milton'))$$),
    ('api.create_deal(text,numeric,text,text,integer,date,uuid,uuid,uuid,text,jsonb)', $$SELECT api.create_deal('Upsell', contact_id => tests.rec('peter'))$$),
    ('api.get_deal(uuid)', $$SELECT api.get_deal(tests.rec('deal'))$$),
    ('api.list_deals(text,uuid,uuid,uuid,integer,integer,date,date,text,boolean,integer,text)', $$SELECT api.list_deals(contact_id => tests.rec('peter'))$$),
    ('api.update_deal(uuid,jsonb)', $$SELECT api.update_deal(tests.rec('deal'), '{"amount": 15000}')$$),
    ('api.move_deal(uuid,text,text,integer)', $$SELECT api.move_deal(tests.rec('deal'), 'qualified')$$),
    ('api.reopen_deal(uuid,text,integer)', $$SELECT api.reopen_deal(tests.rec('deal'))$$),
    ('api.assign_deal(uuid,uuid)', $$SELECT api.assign_deal(tests.rec('deal'), tests.user_id('rita@acme.test'))$$),
    ('api.delete_deal(uuid)', $$SELECT api.delete_deal(tests.rec('deal'))$$),
    ('api.restore_deal(uuid)', $$SELECT api.restore_deal(tests.rec('deal'))$$),
    ('api.deal_stage_history(uuid,integer,text)', $$SELECT api.deal_stage_history(tests.rec('deal'))$$),
    ('api.list_pipeline_stages()', $$SELECT api.list_pipeline_stages()$$),
    ('api.pipeline_summary()', $$SELECT api.pipeline_summary()$$),
    ('api.log_activity(text,text,timestamp with time zone,uuid,uuid)', $$SELECT api.log_activity('note', 'Met at the fair', NULL, tests.rec('peter'))$$),
    ('api.list_activities(uuid,uuid,boolean,integer,text)', $$SELECT api.list_activities(tests.rec('peter'))$$),
    ('api.archive_activity(uuid)', $$SELECT api.archive_activity(tests.rec('activity'))$$),
    ('api.define_custom_field(text,text,text,text,boolean,jsonb)', $$SELECT api.define_custom_field('organization', 'tier', 'Tier', 'number')$$),
    ('api.list_custom_fields(text)', $$SELECT api.list_custom_fields('contact')$$),
    ('api.delete_custom_field(text,text)', $$SELECT api.delete_custom_field('contact', 'linkedin')$$),
    ('api.list_audit_events(uuid,text,text,text,timestamp with time zone,timestamp with time zone,integer,text)',
     $$SELECT api.list_audit_events()$$),
    ('api.verify_audit_log()', $$SELECT api.verify_audit_log()$$),
    ('api.list_security_events(text,uuid,timestamp with time zone,timestamp with time zone,integer,text)',
     $$SELECT api.list_security_events()$$),
    ('api.list_access_events(uuid,text,uuid,timestamp with time zone,timestamp with time zone,integer,text)',
     $$SELECT api.list_access_events()$$),
    ('api.get_workspace_settings()', $$SELECT api.get_workspace_settings()$$),
    ('api.update_workspace_settings(jsonb)', $$SELECT api.update_workspace_settings('{"access_log": false}')$$),
    ('api.request_workspace_deletion(text)', $$SELECT api.request_workspace_deletion(tests.nonce())$$),
    ('api.cancel_workspace_deletion()', $$SELECT api.cancel_workspace_deletion()$$),
    ('api.export_contact(uuid)', $$SELECT api.export_contact(tests.rec('peter'))$$),
    ('api.erase_contact(uuid,text)', $$SELECT api.erase_contact(tests.rec('peter'), tests.nonce())$$);
SELECT p.oid::regprocedure AS api_function_without_cases FROM pg_proc p
WHERE p.pronamespace = 'api'::regnamespace AND p.oid::regprocedure::text NOT IN (SELECT fn FROM cases) ORDER BY 1;
SELECT fn AS case_without_function FROM cases
WHERE fn NOT IN (SELECT p.oid::regprocedure::text FROM pg_proc p WHERE p.pronamespace = 'api'::regnamespace);
-- Each call in its own subtransaction (tests.try), so one role's write does not change what
-- the next sees: the outcome is 'ok' or the SQLSTATE and message.
CREATE FUNCTION pg_temp.as_member(email text, slug text, call text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    v text;
BEGIN
    PERFORM tests.login(email, slug);
    BEGIN
        EXECUTE call;
        v := 'ok';
        RAISE EXCEPTION USING ERRCODE = 'P0004';  -- roll the call back
    EXCEPTION WHEN assert_failure THEN
        NULL;
    WHEN OTHERS THEN
        v := SQLSTATE || ': ' || SQLERRM;
    END;
    RESET ROLE;
    RETURN v;
END
$$;
SELECT fn, pg_temp.as_member('ann@acme.test', 'acme', call) AS admin, pg_temp.as_member('mo@acme.test', 'acme', call) AS manager,
       pg_temp.as_member('rita@acme.test', 'acme', call) AS rep, pg_temp.as_member('gil@globex.test', 'globex', call) AS other_tenant
FROM cases WHERE fn NOT IN ('api.whoami()', 'api.get_workspace()', 'api.my_permissions()', 'api.list_members(integer,text)')
ORDER BY fn;
ROLLBACK;

-- The RLS matrix: every crm table (and core.custom_fields) × role × command, as
-- `authenticated` directly in SQL. SELECT: rows seen; UPDATE: rows changed (a no-op SET of
-- the first updatable column, or the error); INSERT of a copy of a row; DELETE: refused.
BEGIN;
SELECT tests.crm_seed();
-- A statement's outcome (rows it touched, or its error), rolled back either way.
CREATE FUNCTION pg_temp.attempt(statement text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    n bigint;
    v text;
BEGIN
    BEGIN
        EXECUTE statement;
        GET DIAGNOSTICS n = ROW_COUNT;
        v := n || ' rows';
        RAISE EXCEPTION USING ERRCODE = 'P0004';
    EXCEPTION WHEN assert_failure THEN
        NULL;
    WHEN OTHERS THEN
        v := SQLSTATE || ': ' || SQLERRM;
    END;
    RETURN v;
END
$$;
CREATE FUNCTION pg_temp.matrix(email text, slug text, tbl regclass) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    v_select text; v_update text; v_insert text; v_delete text;
    v_col text := (SELECT min(a.attname) FROM pg_attribute a, aclexplode(a.attacl) x
                    WHERE a.attrelid = tbl AND x.grantee = 'authenticated'::regrole AND x.privilege_type = 'UPDATE');
    v_cols text := (SELECT string_agg(quote_ident(a.attname), ', ' ORDER BY a.attnum) FROM pg_attribute a, aclexplode(a.attacl) x
                     WHERE a.attrelid = tbl AND x.grantee = 'authenticated'::regrole AND x.privilege_type = 'INSERT'
                       AND a.attname NOT IN ('email', 'key', 'id'));
    n bigint;
BEGIN
    PERFORM tests.login(email, slug);
    EXECUTE format('SELECT count(*) FROM %s', tbl) INTO n;
    v_select := n::text;
    v_update := pg_temp.attempt(format('UPDATE %s SET %I = %I', tbl, coalesce(v_col, 'tenant_id'), coalesce(v_col, 'tenant_id')));
    v_insert := CASE WHEN v_cols IS NULL THEN pg_temp.attempt(format('INSERT INTO %s DEFAULT VALUES', tbl))
                     ELSE pg_temp.attempt(format('INSERT INTO %s (%s) SELECT %s FROM %s LIMIT 1', tbl, v_cols, v_cols, tbl)) END;
    v_delete := pg_temp.attempt(format('DELETE FROM %s', tbl));
    RESET ROLE;
    RETURN format('select %s | update %s | insert %s | delete %s', v_select, v_update, left(v_insert, 60), left(v_delete, 50));
END
$$;
SELECT t.tbl, r.who, pg_temp.matrix(r.email, r.slug, t.tbl)
FROM (VALUES ('core.custom_fields'::regclass), ('crm.pipeline_stages'), ('crm.organizations'), ('crm.contacts'),
             ('crm.deals'), ('crm.deal_stage_changes'), ('crm.assignment_changes'), ('crm.activities'), ('crm.deal_totals'),
             ('core.audit_log'), ('core.security_events'), ('core.access_events')) t(tbl)
CROSS JOIN (VALUES (1, 'admin', 'ann@acme.test', 'acme'), (2, 'manager', 'mo@acme.test', 'acme'),
                   (3, 'rep', 'rita@acme.test', 'acme'), (4, 'other tenant', 'gil@globex.test', 'globex')) r(n, who, email, slug)
ORDER BY t.tbl::text, r.n;
-- Every crm table is in the matrix.
SELECT c.oid::regclass AS table_missing_from_matrix FROM pg_class c
WHERE c.relnamespace = 'crm'::regnamespace AND c.relkind = 'r'
  AND c.oid::regclass::text NOT IN ('crm.pipeline_stages', 'crm.organizations', 'crm.contacts', 'crm.deals',
                                    'crm.deal_stage_changes', 'crm.assignment_changes', 'crm.activities', 'crm.deal_totals');
ROLLBACK;

-- Cross-tenant links are refused by the composite foreign keys, whoever writes (here the
-- superuser, who bypasses row-level security).
BEGIN;
SELECT tests.crm_seed();
SELECT tests.login('gil@globex.test', 'globex');
SELECT api.create_organization('Globex Org') -> 'organization' ->> 'name' AS globex_org;
SELECT (api.create_contact('Hank') -> 'contact' ->> 'id') IS NOT NULL AS globex_contact;
RESET ROLE;
SELECT tests.try(format($$INSERT INTO crm.contacts (tenant_id, first_name, organization_id, assigned_to)
                          VALUES (%L, 'X', %L, %L)$$, tests.tenant_id('acme'), (SELECT id FROM crm.organizations WHERE name = 'Globex Org'),
                        tests.user_id('ann@acme.test'))) AS contact_to_other_tenants_org;
SELECT tests.try(format($$INSERT INTO crm.deals (tenant_id, name, contact_id, assigned_to)
                          VALUES (%L, 'X', %L, %L)$$, tests.tenant_id('acme'), (SELECT id FROM crm.contacts WHERE first_name = 'Hank'),
                        tests.user_id('ann@acme.test'))) AS deal_to_other_tenants_contact;
SELECT tests.try(format($$INSERT INTO crm.activities (tenant_id, type, description, actor_id, contact_id, deal_id)
                          VALUES (%L, 'note', 'x', %L, %L, %L)$$, tests.tenant_id('globex'), tests.user_id('gil@globex.test'),
                        (SELECT id FROM crm.contacts WHERE first_name = 'Hank'), tests.rec('deal'))) AS activity_to_other_tenants_deal;
SELECT tests.try(format($$UPDATE crm.deals SET assigned_to = %L WHERE id = %L$$, tests.user_id('gil@globex.test'), tests.rec('deal'))) AS deal_to_other_tenants_member;
-- Through the api, another tenant's record answers like one that does not exist.
SELECT tests.login('gil@globex.test', 'globex');
SELECT tests.try(format('SELECT api.create_deal(%L, contact_id => %L)', 'X', tests.rec('peter'))) AS api_other_tenants_contact,
       tests.try(format('SELECT api.create_deal(%L, contact_id => %L)', 'X', gen_random_uuid())) AS api_no_such_contact;
SELECT tests.try(format('SELECT api.log_activity(%L, %L, NULL, %L)', 'call', 'x', tests.rec('peter'))) AS api_other_tenants_activity;
ROLLBACK;

-- Email: unique per tenant among live contacts, case-insensitively; free again once deleted.
BEGIN;
SELECT tests.crm_seed();
SELECT tests.login('gil@globex.test', 'globex');
SELECT api.create_contact('Peter', 'G', 'PETER@initech.test') -> 'contact' ->> 'email' AS same_email_other_tenant;
RESET ROLE;
SELECT tests.login('mo@acme.test', 'acme');
SELECT regexp_replace(tests.try($$SELECT api.create_contact('Pete', email => 'Peter@Initech.test')$$), '[0-9a-f-]{36}', '<id>') AS same_email_same_tenant;
SELECT api.delete_contact(tests.rec('peter')) ->> 'deleted_at' IS NOT NULL AS deleted;
SELECT api.create_contact('Pete', email => 'Peter@Initech.test') -> 'contact' ->> 'email' AS allowed_after_delete;
SELECT regexp_replace(tests.try(format('SELECT api.restore_contact(%L)', tests.rec('peter'))), '[0-9a-f-]{36}', '<id>') AS restore_blocked;
ROLLBACK;

-- Stage rules (Rust, domain::pipeline), the history, and reassignment.
BEGIN;
SELECT tests.crm_seed();
SELECT tests.login('rita@acme.test', 'acme');
SELECT d ->> 'stage' AS stage, d ->> 'probability' AS probability FROM api.get_deal(tests.rec('deal')) d;
SELECT api.move_deal(tests.rec('deal'), 'proposal') ->> 'probability' AS proposal_default;
SELECT api.move_deal(tests.rec('deal'), 'negotiation', probability => 80) ->> 'probability' AS negotiation_given;
SELECT tests.try(format('SELECT api.move_deal(%L, %L)', tests.rec('deal'), 'lost')) AS lost_without_reason;
SELECT tests.try(format('SELECT api.move_deal(%L, %L)', tests.rec('deal'), 'closing')) AS unknown_stage;
SELECT tests.try(format('SELECT api.move_deal(%L, %L, probability => 101)', tests.rec('deal'), 'qualified')) AS probability_101;
SELECT d ->> 'probability' AS won_probability, d ->> 'closed_at' IS NOT NULL AS closed FROM api.move_deal(tests.rec('deal'), 'won') d;
SELECT tests.try(format('SELECT api.move_deal(%L, %L)', tests.rec('deal'), 'proposal')) AS move_closed_deal;
SELECT tests.try(format($$SELECT api.update_deal(%L, '{"probability": 50}')$$, tests.rec('deal'))) AS closed_probability;
SELECT tests.try(format($$UPDATE crm.deals SET stage = 'proposal' WHERE id = %L$$, tests.rec('deal'))) AS direct_sql_move_closed;
SELECT d ->> 'stage' AS reopened_into, d ->> 'probability' AS probability FROM api.reopen_deal(tests.rec('deal')) d;
SELECT api.move_deal(tests.rec('deal'), 'lost', 'Budget cut') ->> 'lost_reason' AS lost_reason;
SELECT h ->> 'from_stage' AS from_stage, h ->> 'to_stage' AS to_stage, h ->> 'probability' AS probability, h ->> 'reason' AS reason,
       h ->> 'changed_by' = tests.user_id('rita@acme.test')::text AS by_rita
FROM jsonb_array_elements(api.deal_stage_history(tests.rec('deal')) -> 'data') h;
SELECT tests.try(format('SELECT api.assign_deal(%L, %L)', tests.rec('deal'), tests.user_id('mo@acme.test'))) AS rep_reassigns;
SELECT tests.try(format($$UPDATE crm.deals SET assigned_to = %L WHERE id = %L$$, tests.user_id('mo@acme.test'), tests.rec('deal'))) AS rep_reassigns_in_sql;
RESET ROLE;
SELECT tests.login('mo@acme.test', 'acme');
SELECT api.assign_deal(tests.rec('deal'), tests.user_id('mo@acme.test')) ->> 'assigned_to' = tests.user_id('mo@acme.test')::text AS manager_reassigns;
SELECT a.from_user = tests.user_id('rita@acme.test') AS from_rita, a.to_user = tests.user_id('mo@acme.test') AS to_mo,
       a.changed_by = tests.user_id('mo@acme.test') AS by_mo FROM crm.assignment_changes a;
RESET ROLE;
-- Rita no longer sees the deal, its history or the activity logged on it (it follows the deal
-- and the contact, which is still hers).
SELECT tests.login('rita@acme.test', 'acme');
SELECT tests.try(format('SELECT api.get_deal(%L)', tests.rec('deal'))) AS rita_gets_deal,
       (SELECT count(*) FROM crm.deal_stage_changes) AS rita_history_rows, (SELECT count(*) FROM crm.activities) AS rita_activities;
ROLLBACK;

-- Activities are immutable: no api path and no direct UPDATE; the trigger holds even for the
-- table's owner. Archiving is the one change.
BEGIN;
SELECT tests.crm_seed();
SELECT tests.login('rita@acme.test', 'acme');
SELECT tests.try($$UPDATE crm.activities SET description = 'rewritten'$$) AS authenticated_updates;
SELECT p.proname AS api_function_that_updates_activities FROM pg_proc p
WHERE p.pronamespace = 'api'::regnamespace AND p.prosrc ~* 'update\s+crm\.activities';
SELECT api.archive_activity(tests.rec('activity')) ->> 'archived_at' IS NOT NULL AS archived;
SELECT jsonb_array_length(api.list_activities(tests.rec('peter')) -> 'data') AS listed,
       jsonb_array_length(api.list_activities(tests.rec('peter'), archived => true) -> 'data') AS archived_listed;
RESET ROLE;
SELECT tests.try($$UPDATE crm.activities SET description = 'rewritten'$$) AS superuser_updates;
ROLLBACK;

-- Field checks (Rust, domain::fields) and custom fields: 22023 naming the field.
BEGIN;
SELECT tests.crm_seed();
SELECT tests.login('rita@acme.test', 'acme');
SELECT tests.try($$SELECT api.create_contact('')$$) AS empty_name,
       tests.try($$SELECT api.create_contact('A', email => 'not-an-email')$$) AS bad_email,
       tests.try($$SELECT api.create_contact('A', custom_fields => '{"twitter": "@a"}')$$) AS unknown_custom_field,
       tests.try($$SELECT api.create_contact('A', custom_fields => '{"linkedin": "javascript:alert(1)"}')$$) AS bad_url;
SELECT tests.try($$SELECT api.create_deal('D', -5)$$) AS negative_amount,
       tests.try($$SELECT api.create_deal('D', 5, 'XYZ')$$) AS unknown_currency,
       tests.try($$SELECT api.create_deal('D', custom_fields => '{"source": "cold call"}')$$) AS bad_option,
       tests.try($$SELECT api.list_deals(close_from => '2026-12-31', close_to => '2026-01-01')$$) AS dates_reversed,
       tests.try($$SELECT api.list_deals(min_probability => -1)$$) AS probability_below_0,
       tests.try(format('SELECT api.update_deal(%L, %L)', tests.rec('deal'), '{"colour": "red"}')) AS unknown_change,
       tests.try(format('SELECT api.update_deal(%L, %L)', tests.rec('deal'), '{"stage": "won"}')) AS stage_in_update;
SELECT api.create_contact('Ann', 'Other', custom_fields => '{"linkedin": "https://linkedin.test/ann"}') #>> '{contact,custom_fields,linkedin}' AS url_kept;
SELECT tests.try(format('SELECT api.list_contacts(cursor => %L)', crm_private.make_cursor('deals', 'newest', '2026-01-01T00:00:00Z', gen_random_uuid()))) AS cursor_of_another_list,
       tests.try(format('SELECT api.list_contacts(sort => %L, cursor => %L)', 'name', crm_private.make_cursor('contacts', 'newest', '2026-01-01T00:00:00Z', gen_random_uuid()))) AS cursor_of_another_sort,
       tests.try($$SELECT api.list_contacts(cursor => 'bm90IGEgY3Vyc29y')$$) AS garbage_cursor,
       tests.try($$SELECT api.list_deals(sort => 'colour')$$) AS unknown_sort,
       tests.try($$SELECT api.list_deals(page_size => 101)$$) AS page_size_101;
RESET ROLE;
-- Deleting a definition leaves the values in place.
SELECT tests.login('ann@acme.test', 'acme');
SELECT api.delete_custom_field('contact', 'linkedin') ->> 'key' AS deleted_definition;
SELECT c -> 'custom_fields' AS kept FROM jsonb_array_elements(api.search_contacts('ann other') -> 'data') c;
SELECT tests.try($$SELECT api.define_custom_field('contact', 'Bad Key', 'x', 'text')$$) AS bad_key,
       tests.try($$SELECT api.define_custom_field('contact', 'tier', 'Tier', 'select')$$) AS select_without_options;
ROLLBACK;

-- Search and duplicates.
BEGIN;
SELECT tests.crm_seed();
SELECT tests.login('mo@acme.test', 'acme');
SELECT q, (SELECT string_agg(c ->> 'first_name', ', ' ORDER BY (c ->> 'rank')::numeric DESC, c ->> 'first_name')
             FROM jsonb_array_elements(api.search_contacts(q) -> 'data') c) AS found
FROM (VALUES ('gibbons'), ('gibons'), ('pet'), ('+1 (555) 010-0200'), ('5550100200'), ('initech'), ('milton@initech.test'), ('nobody')) v(q);
SELECT d ->> 'reason' AS reason, d ->> 'score' AS score
FROM jsonb_array_elements(api.create_contact('Petr', 'Gibbons', 'pg@initech.test', '555 010 0200 x12') -> 'duplicates') d;
SELECT d ->> 'reason' AS org_duplicate FROM jsonb_array_elements(api.create_organization('Initech, Inc.') -> 'duplicates') d;
SELECT m ->> 'moved_deals' AS deals, m ->> 'moved_activities' AS activities, m #>> '{contact,first_name}' AS kept
FROM api.merge_contacts(tests.rec('peter'), (SELECT id FROM crm.contacts WHERE first_name = 'Petr')) m;
ROLLBACK;
-- Search and duplicate candidates read the table without RLS (crm_private.contact_search,
-- contact_duplicates) and apply the policy's rule themselves: a rep finds only the contacts
-- assigned to them, another tenant nothing, and no context nothing.
BEGIN;
SELECT tests.crm_seed();
CREATE FUNCTION pg_temp.found(q text) RETURNS text LANGUAGE sql AS $$
    SELECT coalesce(string_agg(c ->> 'first_name', ', ' ORDER BY c ->> 'first_name'), '-')
      FROM jsonb_array_elements(api.search_contacts(q) -> 'data') c $$;
SELECT tests.login('rita@acme.test', 'acme');
SELECT q, pg_temp.found(q) AS rep_finds,
       (SELECT bool_and((c ->> 'assigned_to')::uuid = crm_private.user_id()) FROM jsonb_array_elements(api.search_contacts(q) -> 'data') c) AS all_theirs
FROM (VALUES ('gibbons'), ('pet'), ('5550100200'), ('initech')) v(q);
SELECT coalesce(jsonb_array_length(api.find_duplicate_contacts(email => 'Peter@Initech.test') -> 'data'), 0) AS rep_duplicates;
RESET ROLE;
SELECT tests.login('mo@acme.test', 'acme');
SELECT jsonb_array_length(api.find_duplicate_contacts(email => 'milton@initech.test') -> 'data') AS manager_duplicates_of_milton;
RESET ROLE;
SELECT tests.login('rita@acme.test', 'acme');
SELECT jsonb_array_length(api.find_duplicate_contacts(email => 'milton@initech.test') -> 'data') AS rep_duplicates_of_milton_not_theirs;
RESET ROLE;
SELECT tests.login('gil@globex.test', 'globex');
SELECT q, pg_temp.found(q) AS other_tenant_finds FROM (VALUES ('gibbons'), ('5550100200'), ('initech')) v(q);
SELECT jsonb_array_length(api.find_duplicate_contacts(email => 'Peter@Initech.test') -> 'data') AS other_tenant_duplicates;
RESET ROLE;
SELECT count(*) AS without_context FROM crm_private.contact_search('gibbons', '%gibbons%', NULL, NULL, NULL, 10);
ROLLBACK;

-- Keyset pages: stable, complete, no repeats.
BEGIN;
SELECT tests.crm_seed();
SELECT tests.login('mo@acme.test', 'acme');
SELECT count(*) FROM (SELECT api.create_deal('Deal ' || i, i * 10, expected_close_date => date '2027-01-01' + (i % 7)) FROM generate_series(1, 30) i) x;
CREATE FUNCTION pg_temp.all_pages(sort text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    page jsonb;
    cur text;
    seen text[] := '{}';
BEGIN
    LOOP
        page := api.list_deals(sort => sort, page_size => 7, cursor => cur);
        seen := seen || ARRAY(SELECT d ->> 'name' FROM jsonb_array_elements(page -> 'data') d);
        cur := page ->> 'next_cursor';
        EXIT WHEN cur IS NULL;
    END LOOP;
    RETURN cardinality(seen) || ' rows, ' || (SELECT count(DISTINCT s) FROM unnest(seen) s) || ' distinct';
END
$$;
SELECT s, pg_temp.all_pages(s) FROM unnest(ARRAY['newest', 'close_date', 'amount']) s;
SELECT string_agg(d ->> 'amount', ', ') AS largest_first FROM jsonb_array_elements(api.list_deals(sort => 'amount', page_size => 3) -> 'data') d;
SELECT string_agg(d ->> 'expected_close_date', ', ') AS soonest_first FROM jsonb_array_elements(api.list_deals(sort => 'close_date', page_size => 3) -> 'data') d;
ROLLBACK;
