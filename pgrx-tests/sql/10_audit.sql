-- The audit log (issue 9): one entry per audited action, with its actor, object and change;
-- nothing for a rolled-back action; immutable even for its owner; readable by admins only;
-- tamper-evident (verify names the altered, deleted and forged entries); months past
-- retention dropped while the chain still verifies.

-- The audit entries after `after`, with ids, actors and objects shown by name (test-only,
-- SECURITY DEFINER: reads the log whatever the caller).
CREATE FUNCTION tests.audit_trail(after bigint DEFAULT 0)
    RETURNS TABLE (actor text, actor_role text, action text, object text, changes jsonb, has_request_id boolean, client_ip text)
    LANGUAGE sql STABLE SECURITY DEFINER AS $$
SELECT coalesce((SELECT u.email FROM auth.users u WHERE u.id = e.actor_id), e.actor_id::text, '-'),
       e.actor_role, e.action,
       (SELECT t.slug FROM core.tenants t WHERE t.id = e.tenant_id) || ':' || coalesce(CASE e.object_type
            WHEN 'member' THEN (SELECT u.email FROM auth.users u WHERE u.id::text = e.object_id)
            WHEN 'user' THEN (SELECT u.email FROM auth.users u WHERE u.id::text = e.object_id)
            WHEN 'invitation' THEN (SELECT i.email FROM core.invitations i WHERE i.id::text = e.object_id)
            WHEN 'tenant' THEN (SELECT t.slug FROM core.tenants t WHERE t.id::text = e.object_id)
            WHEN 'contact' THEN (SELECT c.first_name FROM crm.contacts c WHERE c.id::text = e.object_id)
            WHEN 'deal' THEN (SELECT d.name FROM crm.deals d WHERE d.id::text = e.object_id)
            WHEN 'custom_field' THEN coalesce(e.changes #>> '{before,key}', e.changes #>> '{after,key}') END, e.object_id),
       -- ids and times differ per run: shown as what they stand for
       (SELECT jsonb_object_agg(side, (SELECT jsonb_object_agg(k, CASE
                    WHEN k IN ('assigned_to', 'user_id') THEN to_jsonb((SELECT u.email FROM auth.users u WHERE u.id::text = v #>> '{}'))
                    WHEN k = 'merged_into' THEN to_jsonb((SELECT c.first_name FROM crm.contacts c WHERE c.id::text = v #>> '{}'))
                    WHEN k IN ('deleted_at', 'expires_at', 'session_id') AND jsonb_typeof(v) = 'string' THEN '"<set>"'
                    ELSE v END)
                  FROM jsonb_each(e.changes -> side) x(k, v)))
          FROM unnest(ARRAY['before', 'after']) side WHERE e.changes ? side),
       e.request_id IS NOT NULL, e.client_ip
  FROM core.audit_log e WHERE e.id > after ORDER BY e.id
$$;
CREATE FUNCTION tests.audit_mark() RETURNS bigint LANGUAGE sql STABLE SECURITY DEFINER AS
$$ SELECT coalesce(max(id), 0) FROM core.audit_log $$;
GRANT EXECUTE ON FUNCTION tests.audit_trail(bigint), tests.audit_mark() TO PUBLIC;

-- What the operator's setup writes: the workspaces, their first admins and members.
BEGIN;
SELECT tests.seed();
SELECT * FROM tests.audit_trail();
ROLLBACK;

-- Each action of a request: exactly one entry, by the request's user and role, carrying
-- the request id and client address the edge set.
BEGIN;
SELECT tests.seed();
UPDATE auth.users SET encrypted_password = crm_private.password_hash('correct horse battery'), email_confirmed_at = now();
CREATE TEMP TABLE mark AS SELECT tests.audit_mark() AS id;
GRANT SELECT ON mark TO PUBLIC;
SELECT tests.login('ann@acme.test', 'acme');
SET LOCAL pg_crm.request_id = 'req-1';
SET LOCAL pg_crm.client_ip = '198.51.100.7';
SELECT api.set_member_role(tests.user_id('mo@acme.test'), 'rep') ->> 'role' AS mo_is_now;
SELECT api.set_member_role(tests.user_id('mo@acme.test'), 'manager') ->> 'role' AS mo_is_again;
SELECT api.deactivate_member(tests.user_id('rita@acme.test'), tests.nonce()) ->> 'status' AS rita;
SELECT api.reactivate_member(tests.user_id('rita@acme.test')) ->> 'status' AS rita_again;
SELECT api.invite_user('nia@acme.test', 'rep') ->> 'status' AS invited;
SELECT api.revoke_invitation((SELECT i.id FROM core.invitations i WHERE i.email = 'nia@acme.test')) ->> 'status' AS revoked;
SELECT api.update_workspace(name => 'Acme Inc', industry => 'Anvils') ->> 'name' AS workspace;
SELECT api.create_contact('Cleo', 'Client', 'cleo@client.test', assigned_to => tests.user_id('rita@acme.test')) #>> '{contact,first_name}' AS contact;
SELECT api.create_contact('Cleo', 'Client', 'cleo.c@client.test') #>> '{contact,first_name}' AS twin;
SELECT api.assign_contact((SELECT id FROM crm.contacts WHERE email = 'cleo@client.test'), tests.user_id('mo@acme.test')) ->> 'first_name' AS reassigned;
SELECT api.delete_contact((SELECT id FROM crm.contacts WHERE email = 'cleo@client.test')) ->> 'first_name' AS deleted;
SELECT api.restore_contact((SELECT id FROM crm.contacts WHERE email = 'cleo@client.test')) ->> 'first_name' AS restored;
SELECT api.merge_contacts((SELECT id FROM crm.contacts WHERE email = 'cleo@client.test'),
                          (SELECT id FROM crm.contacts WHERE email = 'cleo.c@client.test')) IS NOT NULL AS merged;
SELECT api.create_deal('Anvil order', 1000, 'USD') ->> 'stage' AS deal;
SELECT api.move_deal((SELECT id FROM crm.deals WHERE name = 'Anvil order'), 'qualified') ->> 'stage' AS moved;
SELECT api.update_deal((SELECT id FROM crm.deals WHERE name = 'Anvil order'), '{"amount": 1200}') ->> 'amount' AS not_audited;
SELECT api.delete_deal((SELECT id FROM crm.deals WHERE name = 'Anvil order')) ->> 'name' AS deal_deleted;
SELECT api.define_custom_field('contact', 'tier', 'Tier', 'text') ->> 'key' AS field;
SELECT api.delete_custom_field('contact', 'tier') ->> 'key' AS field_deleted;
SELECT * FROM tests.audit_trail((SELECT id FROM mark));
ROLLBACK;

-- The operator (a DBA, no request context): suspends and reactivates. Auth events name the
-- user (or 'anonymous' for whoever tried) and the address from the auth request.
BEGIN;
SELECT tests.seed();
UPDATE auth.users SET encrypted_password = crm_private.password_hash('correct horse battery'), email_confirmed_at = now();
CREATE TEMP TABLE mark AS SELECT tests.audit_mark() AS id;
SELECT crm_private.suspend_tenant(tests.tenant_id('acme'));
SELECT crm_private.reactivate_tenant(tests.tenant_id('acme'));
SELECT crm_private.auth_token_password('{"body": {"email": "mo@acme.test", "password": "wrong"}, "ip": "203.0.113.9"}') #>> '{error,code}' AS failed;
SELECT crm_private.auth_token_password('{"body": {"email": "nobody@acme.test", "password": "wrong"}, "ip": "203.0.113.9"}') #>> '{error,code}' AS unknown_account;
SELECT crm_private.auth_token_password('{"body": {"email": "mo@acme.test", "password": "correct horse battery"}, "ip": "203.0.113.9"}') ? 'session' AS signed_in;
SELECT crm_private.auth_recover('{"body": {"email": "rita@acme.test"}, "ip": "203.0.113.9"}') IS NOT NULL AS recovery;
SELECT crm_private.auth_logout(jsonb_build_object('user', jsonb_build_object('id', tests.user_id('mo@acme.test'),
       'session_id', (SELECT s.id FROM auth.sessions s WHERE s.user_id = tests.user_id('mo@acme.test') ORDER BY s.created_at DESC LIMIT 1)),
       'ip', '203.0.113.9')) ->> 'status' AS logout;
-- An invitation (an operator's) accepted by the invitee with the emailed code; a password
-- changed by its user.
SELECT (crm_private.invitation_issue(tests.tenant_id('acme'), 'nia@acme.test', 'rep', NULL, NULL)).status AS invited;
SELECT crm_private.auth_verify(jsonb_build_object('body', jsonb_build_object('type', 'invite', 'email', 'nia@acme.test',
       'token', (SELECT substring(o.body FROM 'Code: ([0-9]{6})') FROM core.email_outbox o
                  WHERE o.recipient = 'nia@acme.test' AND o.kind = 'invite' ORDER BY o.id DESC LIMIT 1)),
       'ip', '203.0.113.9')) ? 'session' AS accepted;
SELECT NOT crm_private.auth_user_update(jsonb_build_object('user', jsonb_build_object('id', tests.user_id('rita@acme.test'),
       'session_id', tests.session('rita@acme.test')), 'body', jsonb_build_object('password', 'a new horse battery staple'),
       'ip', '203.0.113.9')) ? 'error' AS password_changed;
SELECT * FROM tests.audit_trail((SELECT id FROM mark));
ROLLBACK;

-- A rolled-back action leaves no entry; a refused one neither.
BEGIN;
SELECT tests.seed();
CREATE TEMP TABLE mark AS SELECT tests.audit_mark() AS id;
GRANT SELECT ON mark TO PUBLIC;
SELECT tests.login('ann@acme.test', 'acme');
SAVEPOINT before_change;
SELECT api.set_member_role(tests.user_id('mo@acme.test'), 'rep') ->> 'role' AS changed;
ROLLBACK TO SAVEPOINT before_change;
SELECT tests.try($$SELECT api.set_member_role(tests.user_id('mo@acme.test'), 'emperor')$$) AS refused;
SELECT count(*) AS entries FROM tests.audit_trail((SELECT id FROM mark));
ROLLBACK;

-- Nobody rewrites it: no grant for any request role, and triggers refuse UPDATE, DELETE
-- and TRUNCATE even for the table owner. Callers cannot write it either.
BEGIN;
SELECT tests.seed();
SELECT crm_private.seal_audit_log() > 0 AS sealed;
SET LOCAL ROLE crm_owner;
SELECT tests.try($$UPDATE core.audit_log SET action = 'nothing'$$) AS owner_update;
SELECT tests.try($$DELETE FROM core.audit_log$$) AS owner_delete;
SELECT tests.try($$TRUNCATE core.audit_log$$) AS owner_truncate;
SELECT tests.try($$TRUNCATE core.audit_log_default$$) AS owner_truncate_partition;
SELECT tests.try($$DELETE FROM core.audit_log_default$$) AS owner_deletes_in_a_partition;
SELECT tests.try($$UPDATE core.audit_log_default SET action = 'nothing'$$) AS owner_updates_in_a_partition;
SELECT tests.try($$UPDATE core.audit_sealed SET digest = '\x00'$$) AS owner_update_digest;
SELECT tests.try($$DELETE FROM core.audit_seals$$) AS owner_delete_seal;
RESET ROLE;
SELECT tests.login('ann@acme.test', 'acme');
SELECT tests.try($$INSERT INTO core.audit_log (tenant_id, actor_role, action, object_type) VALUES (crm_private.tenant_id(), 'admin', 'forged', 'x')$$) AS admin_insert;
SELECT tests.try($$UPDATE core.audit_log SET action = 'nothing'$$) AS admin_update;
SELECT tests.try($$SELECT crm_private.audit(crm_private.tenant_id(), 'forged', 'x', NULL)$$) AS admin_calls_the_writer;
SELECT tests.try($$SELECT crm_private.seal_audit_log()$$) AS admin_seals;
SELECT tests.try($$SELECT crm_private.verify_audit_chain(crm_private.tenant_id())$$) AS admin_verifies_any_tenant;
SELECT tests.try($$SELECT count(*) FROM core.audit_seals$$) AS admin_reads_seals;
SELECT tests.try($$SET LOCAL pg_crm.audit_maintenance = on$$) AS admin_maintenance;
ROLLBACK;

-- Reading: admins see their own workspace's trail, filtered and paged; managers and reps
-- get 42501; another workspace's admin sees none of it.
BEGIN;
SELECT tests.seed();
SELECT tests.login('ann@acme.test', 'acme');
SELECT api.set_member_role(tests.user_id('mo@acme.test'), 'rep') ->> 'role';
SELECT api.set_member_role(tests.user_id('mo@acme.test'), 'manager') ->> 'role';
SELECT e ->> 'action' AS action, e ->> 'actor_role' AS actor_role, e -> 'changes' AS changes
  FROM jsonb_array_elements(api.list_audit_events(action => 'member.role_changed') -> 'data') e;
SELECT jsonb_array_length(api.list_audit_events(object_type => 'member', object_id => tests.user_id('mo@acme.test')::text) -> 'data') AS about_mo,
       jsonb_array_length(api.list_audit_events(actor => tests.user_id('ann@acme.test')) -> 'data') AS by_ann,
       jsonb_array_length(api.list_audit_events(since => now() + interval '1 minute') -> 'data') AS future,
       jsonb_array_length(api.list_audit_events(until => now()) -> 'data') AS before_this_transaction;
-- Pages: newest first, each entry once.
CREATE TEMP TABLE pages AS
    WITH RECURSIVE p(n, page) AS (
        SELECT 1, api.list_audit_events(page_size => 2)
        UNION ALL
        SELECT n + 1, api.list_audit_events(page_size => 2, cursor => page ->> 'next_cursor') FROM p WHERE page ->> 'next_cursor' IS NOT NULL)
    SELECT n, (e ->> 'id')::bigint AS id FROM p, jsonb_array_elements(p.page -> 'data') e;
SELECT count(*) AS listed, count(DISTINCT id) AS distinct_ids, count(*) = (SELECT count(*) FROM core.audit_log) AS all_of_acme,
       bool_and(id < coalesce(lag, id + 1)) AS newest_first
  FROM (SELECT id, lag(id) OVER (ORDER BY n, id DESC) FROM pages) x;
SELECT tests.try($$SELECT api.list_audit_events(cursor => 'bogus')$$) AS bad_cursor;
SELECT tests.try($$SELECT api.list_audit_events(page_size => 0)$$) AS bad_page_size;
RESET ROLE;
SELECT tests.login('mo@acme.test', 'acme');
SELECT tests.try($$SELECT api.list_audit_events()$$) AS manager_lists;
SELECT tests.try($$SELECT api.verify_audit_log()$$) AS manager_verifies;
SELECT count(*) AS manager_reads_table FROM core.audit_log;
RESET ROLE;
SELECT tests.login('rita@acme.test', 'acme');
SELECT tests.try($$SELECT api.list_audit_events()$$) AS rep_lists;
SELECT tests.try($$SELECT api.verify_audit_log()$$) AS rep_verifies;
RESET ROLE;
SELECT tests.login('gil@globex.test', 'globex');
SELECT count(*) FILTER (WHERE e ->> 'object_id' = tests.user_id('mo@acme.test')::text) AS about_acme_members,
       count(*) AS globex_entries
  FROM jsonb_array_elements(api.list_audit_events(page_size => 100) -> 'data') e;
SELECT count(*) AS acme_rows_visible FROM core.audit_log WHERE tenant_id = tests.tenant_id('acme');
RESET ROLE;
SET LOCAL ROLE anon;
SELECT tests.try($$SELECT api.list_audit_events()$$) AS anon_lists;
ROLLBACK;

-- Tampering: entries sealed, then a superuser (triggers off) alters one, deletes one and
-- forges one into the past. Verification names each, in entry order; the other workspace's
-- chain is untouched. Shown by position in the trail (ids differ per run).
BEGIN;
SELECT tests.seed();
SELECT tests.login('ann@acme.test', 'acme');
SELECT api.set_member_role(tests.user_id('mo@acme.test'), 'rep') ->> 'role';
SELECT api.set_member_role(tests.user_id('rita@acme.test'), 'manager') ->> 'role';
SELECT api.update_workspace(name => 'Acme Inc') ->> 'name';
RESET ROLE;
SELECT crm_private.seal_audit_log() AS sealed, crm_private.seal_audit_log() AS sealed_again;
SELECT tests.login('ann@acme.test', 'acme');
SELECT v ->> 'valid' AS valid, v ->> 'seals' AS seals, v ->> 'entries_verified' AS verified,
       v ->> 'entries_not_sealed_yet' AS unsealed, v -> 'first_broken' AS first_broken
  FROM api.verify_audit_log() v;
SELECT api.set_member_role(tests.user_id('mo@acme.test'), 'manager') ->> 'role';
SELECT api.verify_audit_log() ->> 'entries_not_sealed_yet' AS written_since;
RESET ROLE;
SELECT crm_private.seal_audit_log() AS sealed;
CREATE TEMP TABLE acme_trail AS
    SELECT row_number() OVER (ORDER BY id) AS n, id FROM core.audit_log WHERE tenant_id = tests.tenant_id('acme');
SET LOCAL session_replication_role = replica;
UPDATE core.audit_log SET changes = '{"after": {"role": "admin"}}' WHERE id = (SELECT id FROM acme_trail WHERE n = 5);
DELETE FROM core.audit_log WHERE id = (SELECT id FROM acme_trail WHERE n = 6);
INSERT INTO core.audit_log (tenant_id, id, occurred_at, xid, actor_role, action, object_type, object_id)
SELECT tenant_id, nextval('core.audit_log_id_seq'), occurred_at, '3'::xid8, 'admin', 'member.role_changed', 'member', object_id
  FROM core.audit_log WHERE id = (SELECT id FROM acme_trail WHERE n = 2);
SET LOCAL session_replication_role = origin;
SELECT v ->> 'valid' AS valid, (SELECT n FROM acme_trail WHERE id = (v #>> '{first_broken,entry_id}')::bigint) AS first_broken_entry,
       v #>> '{first_broken,problem}' AS first_problem
  FROM crm_private.verify_audit_chain(tests.tenant_id('acme')) v;
SELECT coalesce((SELECT n::text FROM acme_trail WHERE id = (p ->> 'entry_id')::bigint), 'the forged one') AS entry, p ->> 'problem' AS problem
  FROM jsonb_array_elements(crm_private.verify_audit_chain(tests.tenant_id('acme')) -> 'problems') p;
SELECT crm_private.verify_audit_chain(tests.tenant_id('globex')) ->> 'valid' AS globex_valid;
-- The admin's own verification says the same.
SELECT tests.login('ann@acme.test', 'acme');
SELECT jsonb_array_length(api.verify_audit_log() -> 'problems') AS problems_the_admin_sees;
RESET ROLE;
-- A rewritten seal breaks the chain from there.
SET LOCAL session_replication_role = replica;
UPDATE core.audit_seals SET entries = entries + 1 WHERE tenant_id = tests.tenant_id('globex') AND seq = 1;
SET LOCAL session_replication_role = origin;
SELECT p ->> 'seal' AS seal, p ->> 'problem' AS problem
  FROM jsonb_array_elements(crm_private.verify_audit_chain(tests.tenant_id('globex')) -> 'problems') p;
ROLLBACK;

-- Retention with a test clock: months older than the retention are dropped whole (with
-- their digests); the seals stay, so what remains still verifies. A workspace asking for
-- longer retention keeps every workspace's month (partitions are shared).
BEGIN;
SELECT tests.seed();
SELECT crm_private.audit_ensure_partitions() AS partitions_made, crm_private.audit_ensure_partitions() AS made_again;
SELECT crm_private.audit_ensure_partitions(now() - interval '14 months') AS old_partitions_made;
-- Entries of 14 and 12 months ago (as a restore of an old log would bring them).
INSERT INTO core.audit_log (tenant_id, occurred_at, actor_role, action, object_type, object_id)
VALUES (tests.tenant_id('acme'), now() - interval '14 months', 'operator', 'tenant.updated', 'tenant', tests.tenant_id('acme')),
       (tests.tenant_id('acme'), now() - interval '12 months', 'operator', 'tenant.updated', 'tenant', tests.tenant_id('acme'));
SELECT crm_private.seal_audit_log() > 0 AS sealed;
SELECT count(*) AS partitions FROM pg_inherits WHERE inhparent = 'core.audit_log'::regclass;
UPDATE core.tenants SET audit_retention_months = 15 WHERE slug = 'globex';
SELECT crm_private.audit_apply_retention() AS dropped_while_globex_keeps_15;
UPDATE core.tenants SET audit_retention_months = 13 WHERE slug = 'globex';
SELECT crm_private.audit_apply_retention() AS dropped, crm_private.audit_apply_retention() AS dropped_again;
SELECT count(*) FILTER (WHERE occurred_at < now() - interval '13 months') AS older_than_13_months,
       count(*) FILTER (WHERE occurred_at < now() - interval '11 months') AS about_12_months_old
  FROM core.audit_log WHERE tenant_id = tests.tenant_id('acme');
SELECT v ->> 'valid' AS valid, v -> 'problems' AS problems FROM crm_private.verify_audit_chain(tests.tenant_id('acme')) v;
SELECT tests.try($$UPDATE core.tenants SET audit_retention_months = 6 WHERE slug = 'acme'$$) AS shorter_than_12;
-- The jobs in one call: sealing now; upkeep when due.
SELECT crm_private.run_jobs() ? 'audit_entries_sealed' AS ran;
ROLLBACK;
