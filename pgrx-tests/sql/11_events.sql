-- Security events and the access log (issue 9): refusals at the gate, policy violations,
-- permission errors and cross-tenant probes are recorded although the request fails and
-- rolls back (also from a READ ONLY transaction); reads are recorded unless the workspace
-- turned its access log off; admins read their own workspace's events only.
--
-- The events go through pg_crm's shared-memory queue; no background worker runs in this
-- database, so crm_private.flush_events() stores them when the test says so. Each stored
-- security event is also a WARNING line in the server log (not shown to this client).
SET client_min_messages = error;
SELECT crm_private.flush_events() >= 0 AS earlier_files_stored;
SELECT coalesce(max(id), 0) AS sec_mark FROM core.security_events \gset
SELECT coalesce(max(id), 0) AS acc_mark FROM core.access_events \gset

-- Who is who, by name: ids differ per run, and most rows below are rolled back, so the
-- names are kept in a psql variable (\gset), which a rollback leaves alone.
CREATE FUNCTION pg_temp.names() RETURNS jsonb LANGUAGE sql AS $$
    SELECT jsonb_object_agg(id, name) FROM (
        SELECT id, slug AS name FROM core.tenants UNION ALL SELECT id, email FROM auth.users
        UNION ALL SELECT id, 'contact ' || first_name FROM crm.contacts
        UNION ALL SELECT id, 'organization ' || name FROM crm.organizations
        UNION ALL SELECT id, 'deal ' || name FROM crm.deals
        UNION ALL SELECT '00000000-0000-0000-0000-000000000000', 'no tenant') x
$$;
CREATE FUNCTION pg_temp.name(id uuid, names jsonb) RETURNS text LANGUAGE sql AS
$$ SELECT CASE WHEN $1 IS NOT NULL THEN coalesce($2 ->> $1::text, '?') END $$;
CREATE FUNCTION pg_temp.named(details jsonb, names jsonb) RETURNS jsonb LANGUAGE sql AS
$$ SELECT CASE WHEN $1 ? 'object_id' THEN $1 || jsonb_build_object('object_id', pg_temp.name(($1 ->> 'object_id')::uuid, $2)) ELSE $1 END $$;

-- Refusals and probes inside a transaction that rolls back: the events stay.
BEGIN;
SELECT tests.seed();
SELECT tests.login('gil@globex.test', 'globex');
SELECT api.create_contact('Gina', email => 'gina@globex.test') #>> '{contact,first_name}' AS globex_contact;
RESET ROLE;
SELECT pg_temp.names() AS names \gset
UPDATE core.memberships SET status = 'deactivated' WHERE user_id = tests.user_id('rita@acme.test');
SET LOCAL ROLE authenticated;
SET LOCAL pg_crm.request_id = 'req-refused';
SELECT tests.try($$SELECT crm_private.begin_request(tests.claims('rita@acme.test', 'acme'), tests.tenant_id('acme'))$$) AS deactivated;
SELECT tests.try($$SELECT crm_private.begin_request(tests.claims('gil@globex.test', 'globex'), tests.tenant_id('acme'))$$) AS not_a_member;
SELECT tests.try($$SELECT crm_private.begin_request('{"role": "authenticated"}', NULL)$$) AS no_user_no_tenant;
RESET ROLE;
SELECT tests.login('ann@acme.test', 'acme');
SET LOCAL pg_crm.request_id = 'req-probe';
SELECT tests.try($$SELECT api.get_contact((SELECT id FROM crm.contacts WHERE email = 'gina@globex.test'))$$) AS probe;
SELECT tests.try($$SELECT api.get_contact(gen_random_uuid())$$) AS an_unknown_id_is_no_probe;
RESET ROLE;
ROLLBACK;
SELECT crm_private.flush_events() AS stored_after_rollback;
SELECT pg_temp.name(tenant_id, :'names') AS tenant, kind, pg_temp.name(user_id, :'names') AS user_name, request_id,
       pg_temp.named(details, :'names') AS details
  FROM core.security_events WHERE id > :sec_mark ORDER BY id;
SELECT max(id) AS sec_mark FROM core.security_events \gset

-- Errors PostgreSQL itself raises in a request: a WITH CHECK failure, a table without a
-- grant. Recorded as they are reported, although the transaction aborts.
BEGIN;
SELECT tests.seed();
SELECT pg_temp.names() AS names \gset
SELECT tests.login('rita@acme.test', 'acme');
INSERT INTO crm.contacts (tenant_id, first_name) SELECT tests.tenant_id('globex'), 'Mallory';
ROLLBACK;
BEGIN;
SELECT tests.seed();
SELECT pg_temp.names() AS names2 \gset
SELECT tests.login('mo@acme.test', 'acme');
SELECT count(*) FROM core.audit_seals;
ROLLBACK;
-- From a READ ONLY transaction (a GET): a probe. (The workspaces are committed from here
-- on, and removed at the end.)
BEGIN;
SELECT tests.seed();
SELECT tests.login('gil@globex.test', 'globex');
SELECT (api.create_contact('Gus') #>> '{contact,id}') AS gus \gset
RESET ROLE;
SELECT tests.session('ann@acme.test') IS NOT NULL AND tests.session('mo@acme.test') IS NOT NULL AS signed_in;
SELECT pg_temp.names() AS names3 \gset
COMMIT;
BEGIN READ ONLY;
SELECT tests.login('ann@acme.test', 'acme');
SELECT api.get_contact(:'gus');
ROLLBACK;
SELECT crm_private.flush_events() AS stored;
SELECT pg_temp.name(tenant_id, :'names'::jsonb || :'names2' || :'names3') AS tenant, kind,
       pg_temp.name(user_id, :'names'::jsonb || :'names2' || :'names3') AS user_name,
       pg_temp.named(details, :'names3') AS details
  FROM core.security_events WHERE id > :sec_mark ORDER BY id;
SELECT max(id) AS sec_mark FROM core.security_events \gset

-- A burst: one user past the threshold (here 5) within a minute is flagged, once.
BEGIN;
INSERT INTO crm_private.auth_settings (key, value) VALUES ('security_burst_per_minute', '5');
SELECT crm_private.auth_config() ->> 'security_burst_per_minute' AS threshold;
SELECT tests.login('ann@acme.test', 'acme');
SELECT count(*) AS probes FROM generate_series(1, 6) i WHERE tests.try(format('SELECT api.get_contact(%L) -- %s', :'gus', i)) LIKE 'P0002%';
RESET ROLE;
SELECT crm_private.flush_events() AS stored;
SELECT tests.login('ann@acme.test', 'acme');
SELECT tests.try(format('SELECT api.get_contact(%L)', :'gus')) AS one_more;
RESET ROLE;
SELECT crm_private.flush_events() AS stored_again;
SELECT kind, count(*), max(details ->> 'events_last_minute') AS events_last_minute
  FROM core.security_events WHERE id > :sec_mark GROUP BY kind ORDER BY kind;
ROLLBACK;

-- Reading them: admins of the workspace, through the API; other roles 42501; another
-- workspace's admin sees none of these.
BEGIN;
SELECT tests.login('ann@acme.test', 'acme');
SELECT e ->> 'kind' AS kind, pg_temp.name((e ->> 'user_id')::uuid, :'names3') AS user_name
  FROM jsonb_array_elements(api.list_security_events(page_size => 100) -> 'data') e
 WHERE (e ->> 'id')::bigint > :sec_mark - 100 ORDER BY (e ->> 'id')::bigint;
SELECT jsonb_array_length(api.list_security_events(kind => 'cross_tenant_probe') -> 'data') AS probes,
       jsonb_array_length(api.list_security_events(user_id => tests.user_id('mo@acme.test')) -> 'data') AS by_mo,
       jsonb_array_length(api.list_security_events(page_size => 1) -> 'data') AS one_page,
       api.list_security_events(page_size => 1) ->> 'next_cursor' IS NOT NULL AS more;
RESET ROLE;
SELECT tests.login('mo@acme.test', 'acme');
SELECT tests.try($$SELECT api.list_security_events()$$) AS manager;
SELECT tests.try($$SELECT api.list_access_events()$$) AS manager_access;
SELECT count(*) AS manager_reads_table FROM core.security_events;
RESET ROLE;
SELECT tests.login('gil@globex.test', 'globex');
SELECT count(*) AS globex_admin_sees FROM jsonb_array_elements(api.list_security_events(page_size => 100) -> 'data') e;
RESET ROLE;
ROLLBACK;

-- The access log: record views and searches, by whom; not when the workspace turned it off.
BEGIN;
SELECT tests.login('ann@acme.test', 'acme');
SELECT (api.create_contact('Cleo', 'Client', 'cleo@client.test') #>> '{contact,id}') AS cleo \gset
SELECT (api.create_organization('Client Co') #>> '{organization,id}') AS org \gset
SELECT (api.create_deal('Client deal', 100, 'USD') ->> 'id') AS deal \gset
RESET ROLE;
SELECT pg_temp.names() AS names4 \gset
SELECT tests.login('ann@acme.test', 'acme');
SET LOCAL pg_crm.request_id = 'req-read';
SELECT api.get_contact(:'cleo') ->> 'first_name' AS viewed;
SELECT api.get_organization(:'org') ->> 'name' AS viewed;
SELECT api.get_deal(:'deal') ->> 'name' AS viewed;
SELECT jsonb_array_length(api.search_contacts('cleo') -> 'data') AS found;
SELECT jsonb_array_length(api.search_contacts('nobody') -> 'data') AS found;
RESET ROLE;
SELECT crm_private.flush_events() AS stored;
SELECT pg_temp.name(tenant_id, :'names4') AS tenant, pg_temp.name(user_id, :'names4') AS user_name, action, object_type,
       pg_temp.name(object_id, :'names4') AS object, request_id, details ->> 'results' AS results,
       (SELECT string_agg(pg_temp.name((x #>> '{}')::uuid, :'names4'), ', ') FROM jsonb_array_elements(details -> 'result_ids') x) AS result_names
  FROM core.access_events WHERE id > :acc_mark ORDER BY id;
SELECT tests.login('ann@acme.test', 'acme');
SELECT e ->> 'action' AS action, pg_temp.name((e ->> 'object_id')::uuid, :'names4') AS object
  FROM jsonb_array_elements(api.list_access_events(object_id => :'cleo') -> 'data') e;
SELECT jsonb_array_length(api.list_access_events(user_id => tests.user_id('mo@acme.test')) -> 'data') AS by_mo;
RESET ROLE;
SELECT tests.login('gil@globex.test', 'globex');
SELECT jsonb_array_length(api.list_access_events(page_size => 100) -> 'data') AS globex_admin_sees;
RESET ROLE;
SELECT max(id) AS acc_mark FROM core.access_events \gset
UPDATE core.tenants SET access_log = false WHERE slug = 'acme';
SELECT tests.login('ann@acme.test', 'acme');
SELECT api.get_contact(:'cleo') ->> 'first_name' AS viewed_unlogged;
RESET ROLE;
SELECT crm_private.flush_events() AS stored;
SELECT count(*) AS recorded_while_off FROM core.access_events WHERE id > :acc_mark;
-- Outside a request (a DBA), nothing is recorded.
SELECT crm_private.log_access('contact.viewed', 'contact', :'cleo');
SELECT crm_private.flush_events() AS stored_for_a_dba;
ROLLBACK;

-- Nobody rewrites them either; the queue's counters.
BEGIN;
SET LOCAL ROLE crm_owner;
SELECT tests.try($$DELETE FROM core.security_events$$) AS owner_delete;
SELECT tests.try($$UPDATE core.access_events SET action = 'x'$$) AS owner_update;
RESET ROLE;
SELECT tests.login('ann@acme.test', 'acme');
SELECT tests.try($$SELECT crm_private.record_security_event('forged', '{}')$$) AS member_forges;
SELECT tests.try($$SELECT crm_private.flush_events()$$) AS member_flushes;
RESET ROLE;
SELECT s ->> 'preloaded' AS preloaded, (s ->> 'waiting')::int AS waiting, (s ->> 'dropped')::int AS dropped, s ->> 'slots' AS slots
  FROM crm_private.event_queue_status() s;
ROLLBACK;

-- The committed fixture of the READ ONLY probe goes.
BEGIN;
DELETE FROM crm.contacts;
DELETE FROM core.memberships;
DELETE FROM crm.pipeline_stages;
SET LOCAL pg_crm.audit_maintenance = on;
DELETE FROM core.audit_log;
DELETE FROM core.tenants;
DELETE FROM auth.users;
COMMIT;
