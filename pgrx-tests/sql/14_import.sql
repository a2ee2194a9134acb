-- CSV import (issue 10, journey 1.7): what crm_private.import_begin and import_run do with
-- the rows the edge COPYs into pg_temp.import_rows (here inserted directly): per-row
-- errors naming line and field, a dry run and an all-or-nothing run that write nothing,
-- skip_bad_rows writing exactly the good rows, duplicates skipped, updated or refused,
-- ids kept, organizations with parents in the same file, cycles, a reference to another
-- workspace's organization (not found, recorded as a probe), the audit entry, and who may
-- import.
SET client_min_messages = error;

-- One import as the logged-in caller: rows are JSON arrays of cells (null: empty), lines
-- counted from 2 (the header is line 1). Ids in the report are masked.
CREATE FUNCTION tests.import_csv(entity text, header text[], rows jsonb, options jsonb DEFAULT '{}', mapping jsonb DEFAULT NULL)
    RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    r jsonb;
BEGIN
    PERFORM crm_private.import_begin(entity, header, mapping);
    INSERT INTO pg_temp.import_rows (line, cells)
    SELECT t.n + 1, ARRAY(SELECT jsonb_array_elements_text(t.x)) FROM jsonb_array_elements(rows) WITH ORDINALITY AS t(x, n);
    r := crm_private.import_run(entity, header, mapping, options);
    RETURN regexp_replace(r::text, '[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}', '<id>', 'g')::jsonb;
END
$$;
GRANT EXECUTE ON FUNCTION tests.import_csv(text, text[], jsonb, jsonb, jsonb) TO PUBLIC;
-- A report's counts, and its errors and duplicates one per line.
CREATE FUNCTION tests.counts(r jsonb) RETURNS text LANGUAGE sql AS $$
    SELECT format('written=%s rows=%s created=%s updated=%s skipped=%s failed=%s', r -> 'written', r -> 'rows',
                  r -> 'created', r -> 'updated', r -> 'skipped', r -> 'failed')
$$;
CREATE FUNCTION tests.problems(r jsonb) RETURNS SETOF text LANGUAGE sql AS $$
    SELECT format('line %s: %s %s %s', e ->> 'line', e ->> 'field', e ->> 'code', e ->> 'message')
      FROM jsonb_array_elements(r -> 'errors') e
    UNION ALL
    SELECT format('line %s: duplicate by %s, %s', d ->> 'line', d ->> 'by', d ->> 'action')
      FROM jsonb_array_elements(r -> 'duplicates') d
    UNION ALL
    SELECT 'no errors, no duplicates' WHERE r -> 'errors' = '[]' AND r -> 'duplicates' = '[]'
$$;
GRANT EXECUTE ON FUNCTION tests.counts(jsonb), tests.problems(jsonb) TO PUBLIC;
SELECT crm_private.flush_events() >= 0 AS earlier_files_stored;
SELECT coalesce(max(id), 0) AS sec_mark FROM core.security_events \gset

BEGIN;
SELECT tests.seed();
SELECT tests.tenant_id('acme') AS acme_id, tests.tenant_id('globex') AS globex_id \gset
SELECT tests.login('gil@globex.test', 'globex');
SELECT (api.create_organization('Globex HQ') #>> '{organization,id}') AS globex_org \gset
RESET ROLE;
SELECT tests.login('ann@acme.test', 'acme');
SELECT api.define_custom_field('contact', 'tier', 'Tier', 'select', options => '["gold", "silver"]') ->> 'key' AS field;
SELECT (api.create_organization('Inkworks') #>> '{organization,id}') AS inkworks \gset
SELECT api.create_contact('Olga', 'Old', 'old@acme.test') #>> '{contact,email}' AS existing;
SELECT count(*) AS contacts_before FROM crm.contacts \gset

-- A file with good and bad rows: a dry run reports every row and writes nothing.
SELECT jsonb_build_array(
    jsonb_build_array('Ada', 'Lovelace', 'ada@ok.test', :'inkworks', 'gold', null),
    jsonb_build_array('Bob', null, 'not-an-email', null, null, null),
    jsonb_build_array('Cy', null, 'cy@ok.test', null, null, '44'),
    jsonb_build_array('Ada', 'Again', 'ADA@ok.test', null, null, null),
    jsonb_build_array('Dee', null, 'dee@ok.test', :'globex_org', null, null),
    jsonb_build_array('Olga', null, 'OLD@acme.test', null, 'silver', null),
    jsonb_build_array(null, null, 'nofirst@ok.test', null, null, null),
    jsonb_build_array('Eve', null, null, null, 'platinum', null),
    jsonb_build_array('Fay', 'Short')) AS bad_file \gset
SELECT tests.import_csv('contacts', '{first_name,last_name,email,organization_id,custom.tier,custom.shoe_size}',
                        :'bad_file', '{"dry_run": true}') AS report \gset
SELECT tests.counts(:'report');
SELECT tests.problems(:'report');
SELECT count(*) = :contacts_before AS dry_run_wrote_nothing FROM crm.contacts;

-- All or nothing (the default): the same report, nothing written.
SELECT tests.import_csv('contacts', '{first_name,last_name,email,organization_id,custom.tier,custom.shoe_size}',
                        :'bad_file') AS report \gset
SELECT tests.counts(:'report');
SELECT count(*) = :contacts_before AS all_or_nothing_wrote_nothing FROM crm.contacts;

-- skip_bad_rows: exactly the good row, with its organization and custom field; the
-- duplicate skipped; audited once with the counts.
SELECT tests.counts(tests.import_csv('contacts', '{first_name,last_name,email,organization_id,custom.tier,custom.shoe_size}',
                                     :'bad_file', '{"mode": "skip_bad_rows"}'));
SELECT first_name, last_name, email, o.name AS organization, c.custom_fields, c.assigned_to = tests.user_id('ann@acme.test') AS theirs
  FROM crm.contacts c LEFT JOIN crm.organizations o ON o.tenant_id = c.tenant_id AND o.id = c.organization_id
 ORDER BY c.email;
SELECT action, changes FROM core.audit_log WHERE tenant_id = tests.tenant_id('acme') AND action = 'data.imported' ORDER BY id;

-- Duplicates by email: updated (empty cells keep their value), or refused when every row
-- is to be new.
SELECT tests.counts(r), tests.problems(r)
  FROM tests.import_csv('contacts', '{email,first_name,last_name,custom.tier}',
                        '[["old@acme.test", "Olga", "Newname", "silver"]]', '{"on_duplicate": "update"}') r;
SELECT first_name, last_name, custom_fields FROM crm.contacts WHERE email = 'old@acme.test';
SELECT tests.counts(r), tests.problems(r)
  FROM tests.import_csv('contacts', '{email,first_name}', '[["old@acme.test", "Olga"]]', '{"on_duplicate": "create"}') r;

-- Ids are kept for new records, matched for existing ones, and never twice in a file.
SELECT tests.counts(r), tests.problems(r)
  FROM tests.import_csv('contacts', '{id,first_name,email}',
                        '[["0f8fad5b-d9cb-469f-a165-70867728950e", "Ida", "ida@ok.test"],
                          ["0f8fad5b-d9cb-469f-a165-70867728950e", "Ida", "ida2@ok.test"],
                          ["not-a-uuid", "Ivo", null]]', '{"mode": "skip_bad_rows"}') r;
SELECT id, first_name FROM crm.contacts WHERE first_name = 'Ida';
SELECT tests.counts(r), tests.problems(r)
  FROM tests.import_csv('contacts', '{id,first_name,email}', '[["0F8FAD5B-D9CB-469F-A165-70867728950E", "Ida", "ida@ok.test"]]') r;

-- Another file's columns, mapped; a row deleted in the source comes back deleted (its
-- email does not count against the live ones); unknown columns and mappings are refused
-- before any row is read, answered rather than raised (the header stays out of the log).
SELECT tests.counts(r), tests.problems(r)
  FROM tests.import_csv('contacts', '{Given,Mail,Notes,deleted_at}',
                        '[["Gus", "gus@ok.test", "likes tea", null], ["Gone", "ada@ok.test", null, "2026-01-01T10:00:00Z"],
                          ["Bad", "bad@ok.test", null, "2026-01-01"]]',
                        '{"mode": "skip_bad_rows"}', '{"Given": "first_name", "Mail": "email", "Notes": null}') r;
SELECT first_name, email, deleted_at FROM crm.contacts WHERE first_name IN ('Gus', 'Gone', 'Bad') ORDER BY 1;
SELECT crm_private.import_begin('contacts', '{first_name,emial}') -> 'error' AS unknown_column;
SELECT crm_private.import_begin('contacts', '{Name}', '{"Name": "full_name"}') -> 'error' AS bad_mapping;
SELECT crm_private.import_begin('contacts', '{first_name,Mail,email}', '{"Mail": "email"}') -> 'error' AS two_emails;
SELECT tests.try($$SELECT crm_private.import_begin('deals', '{name}')$$) AS not_importable;
SELECT tests.try($$SELECT tests.import_csv('contacts', '{first_name}', '[]', '{"mode": "best_effort"}')$$) AS bad_mode;
SELECT tests.try($$SELECT tests.import_csv('contacts', '{first_name}', '[]', '{"dryrun": true}')$$) AS unknown_option;

-- Organizations: a parent later in the file, a parent that fails, a cycle, a parent in
-- another workspace; a name that exists is a duplicate.
SELECT tests.counts(r), tests.problems(r)
  FROM tests.import_csv('organizations', '{id,name,parent_id,size}',
                        jsonb_build_array(
                            jsonb_build_array('11111111-1111-4111-8111-111111111111', 'Child', '22222222-2222-4222-8222-222222222222', null),
                            jsonb_build_array('22222222-2222-4222-8222-222222222222', 'Parent', null, '11-50'),
                            jsonb_build_array('33333333-3333-4333-8333-333333333333', 'Bad size', null, '12'),
                            jsonb_build_array('44444444-4444-4444-8444-444444444444', 'Orphan', '33333333-3333-4333-8333-333333333333', null),
                            jsonb_build_array('55555555-5555-4555-8555-555555555555', 'Loop A', '66666666-6666-4666-8666-666666666666', null),
                            jsonb_build_array('66666666-6666-4666-8666-666666666666', 'Loop B', '55555555-5555-4555-8555-555555555555', null),
                            jsonb_build_array(null, 'Abroad', :'globex_org', null),
                            jsonb_build_array(null, 'INKWORKS', null, null)),
                        '{"mode": "skip_bad_rows"}') r;
SELECT o.name, p.name AS parent, o.size FROM crm.organizations o
  LEFT JOIN crm.organizations p ON p.tenant_id = o.tenant_id AND p.id = o.parent_id
 WHERE o.tenant_id = tests.tenant_id('acme') ORDER BY o.name;

-- Moving organizations in the tree: Parent under a new top, Child under Inkworks; the
-- tables' own cycle check never sees a state between two of the file's changes. A change
-- that would close a circle through a new organization fails, with what hangs below it.
SELECT tests.counts(r), tests.problems(r)
  FROM tests.import_csv('organizations', '{id,name,parent_id}',
                        jsonb_build_array(
                            jsonb_build_array('11111111-1111-4111-8111-111111111111', null, :'inkworks'),
                            jsonb_build_array('22222222-2222-4222-8222-222222222222', null, '77777777-7777-4777-8777-777777777777'),
                            jsonb_build_array('77777777-7777-4777-8777-777777777777', 'New top', null)),
                        '{"on_duplicate": "update"}') r;
SELECT tests.counts(r), tests.problems(r)
  FROM tests.import_csv('organizations', '{id,name,parent_id}',
                        jsonb_build_array(
                            jsonb_build_array('77777777-7777-4777-8777-777777777777', null, '88888888-8888-4888-8888-888888888888'),
                            jsonb_build_array('88888888-8888-4888-8888-888888888888', 'Circle', '22222222-2222-4222-8222-222222222222'),
                            jsonb_build_array('99999999-9999-4999-8999-999999999999', 'Below it', '88888888-8888-4888-8888-888888888888')),
                        '{"on_duplicate": "update", "mode": "skip_bad_rows"}') r;
SELECT o.name, p.name AS parent FROM crm.organizations o
  LEFT JOIN crm.organizations p ON p.tenant_id = o.tenant_id AND p.id = o.parent_id
 WHERE o.tenant_id = tests.tenant_id('acme') ORDER BY o.name;

-- A deleted organization is still one of the workspace's (an export's contacts may refer
-- to one); a deleted contact is not updated, it is restored first. A row that fails does
-- not take a later row with the same email down with it.
SELECT api.delete_organization((SELECT id FROM crm.organizations WHERE name = 'New top')) IS NOT NULL AS deleted_org;
SELECT api.delete_contact((SELECT id FROM crm.contacts WHERE first_name = 'Ida')) IS NOT NULL AS deleted_contact;
SELECT tests.counts(r), tests.problems(r)
  FROM tests.import_csv('contacts', '{id,first_name,email,organization_id}',
                        jsonb_build_array(
                            jsonb_build_array(null, 'Hal', 'hal@ok.test', (SELECT id FROM crm.organizations WHERE name = 'New top')),
                            jsonb_build_array('0f8fad5b-d9cb-469f-a165-70867728950e', 'Ida', 'ida@ok.test', null),
                            jsonb_build_array(null, 'Jo', 'jo@ok.test', '00000000-0000-4000-8000-000000000000'),
                            jsonb_build_array(null, 'Jo', 'jo@ok.test', null)),
                        '{"on_duplicate": "update", "mode": "skip_bad_rows"}') r;
SELECT first_name, email FROM crm.contacts WHERE first_name IN ('Hal', 'Jo') ORDER BY 1;
RESET ROLE;

-- Neither the probe nor the refusals were written by the caller; the probes are recorded.
SELECT tests.login('mo@acme.test', 'acme');
SELECT tests.try($$SELECT crm_private.import_begin('contacts', '{first_name}')$$) AS manager;
SELECT tests.try($$SELECT crm_private.import_run('contacts', '{first_name}')$$) AS manager_run;
RESET ROLE;
SELECT tests.login('rita@acme.test', 'acme');
SELECT tests.try($$SELECT crm_private.import_begin('contacts', '{first_name}')$$) AS rep;
RESET ROLE;
-- Another workspace's admin imports into their own workspace only.
SELECT tests.login('gil@globex.test', 'globex');
SELECT tests.counts(tests.import_csv('contacts', '{first_name,email,organization_id}',
                                     jsonb_build_array(jsonb_build_array('Gwen', 'gwen@globex.test', :'inkworks'),
                                                       jsonb_build_array('Gwen', 'old@acme.test', null)),
                                     '{"mode": "skip_bad_rows"}'));
SELECT first_name, email FROM crm.contacts ORDER BY email;
RESET ROLE;
SELECT t.slug, c.email FROM crm.contacts c JOIN core.tenants t ON t.id = c.tenant_id
 WHERE c.email IN ('old@acme.test', 'gwen@globex.test') ORDER BY 1, 2;
ROLLBACK;

SELECT crm_private.flush_events() >= 0 AS stored;
SELECT CASE e.tenant_id WHEN :'acme_id' THEN 'acme' WHEN :'globex_id' THEN 'globex' END AS tenant, e.kind,
       e.details
  FROM core.security_events e
 WHERE e.id > :sec_mark AND e.details ->> 'via' = 'import' ORDER BY e.id;
