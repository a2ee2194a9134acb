-- A person's data (issue 10, NFR-D1): subject access (api.export_contact) and erasure
-- (api.erase_contact): afterwards no tenant table holds the person's email, name or phone
-- (checked across the catalog), the audit chain still verifies, and the erasure is audited
-- with counts only. The export's plan (crm_private.export_begin): every tenant table that
-- holds a workspace's records, and nothing without the permission and a nonce.

-- The tenant tables (from the catalog) with a row of `tenant` whose text contains `needle`.
CREATE FUNCTION tests.tables_containing(tenant uuid, needle text) RETURNS SETOF text
    LANGUAGE plpgsql STABLE SECURITY DEFINER AS $$
DECLARE
    t regclass;
    n bigint;
BEGIN
    FOR t IN SELECT crm_private.tenant_tables() LOOP
        EXECUTE format('SELECT count(*) FROM %s x WHERE x.tenant_id = $1 AND x::text ILIKE $2', t) INTO n
            USING tenant, '%' || needle || '%';
        IF n > 0 THEN
            RETURN NEXT t::text || ' (' || n || ')';
        END IF;
    END LOOP;
END
$$;
GRANT EXECUTE ON FUNCTION tests.tables_containing(uuid, text) TO PUBLIC;

BEGIN;
SELECT tests.seed();
SELECT tests.login('ann@acme.test', 'acme');
SELECT api.define_custom_field('contact', 'shoe_size', 'Shoe size', 'text') ->> 'key' AS field;
SELECT api.create_organization('Inkworks') ->> 'name' AS org;
CREATE TEMP TABLE ids AS
SELECT (api.create_contact('Zora', 'Quill', 'zora@quillworks.test', '+1 555 0199', 'Buyer',
                           custom_fields => '{"shoe_size": "38"}') #>> '{contact,id}')::uuid AS zora,
       (api.create_contact('Zora', 'Q', 'zq@home.test', '555-0177') #>> '{contact,id}')::uuid AS twin,
       (api.create_contact('Otto', 'Other', 'otto@other.test') #>> '{contact,id}')::uuid AS otto;
GRANT SELECT ON ids TO PUBLIC;
SELECT api.merge_contacts((SELECT zora FROM ids), (SELECT twin FROM ids)) IS NOT NULL AS merged;
SELECT api.log_activity('call', 'Zora wants a quote', contact_id => (SELECT zora FROM ids)) ->> 'type' AS her_activity;
SELECT api.log_activity('note', 'Otto knows Zora Quill (zora@quillworks.test, +1 555 0199) from school',
                        contact_id => (SELECT otto FROM ids)) ->> 'type' AS mentions_her;
SELECT api.create_deal('Quill, Zora: renewal', 500, 'USD', contact_id => (SELECT zora FROM ids),
                       notes => 'Call Zora Quill on +1 555 0199') ->> 'stage' AS deal;
SELECT api.get_contact((SELECT zora FROM ids)) ->> 'first_name' AS viewed;

-- Subject access: the contact, the one merged into it, her deal and activities, the audit
-- and access log entries about her.
SELECT x ->> 'contact_id' = (SELECT zora FROM ids)::text AS for_her,
       (SELECT array_agg(c ->> 'email' ORDER BY c ->> 'email') FROM jsonb_array_elements(x -> 'contacts') c) AS contacts,
       x #>> '{contacts,0,custom_fields,shoe_size}' AS shoe_size,
       (SELECT array_agg(d ->> 'name') FROM jsonb_array_elements(x -> 'deals') d) AS deals,
       (SELECT array_agg(a ->> 'description') FROM jsonb_array_elements(x -> 'activities') a) AS activities,
       (SELECT array_agg(DISTINCT a ->> 'action') FROM jsonb_array_elements(x -> 'audit_log') a) AS audited
  FROM api.export_contact((SELECT zora FROM ids)) x;

-- Erasure needs a nonce, data.erase (admins), and a contact of the caller's workspace.
SELECT tests.try($$SELECT api.erase_contact((SELECT zora FROM ids), NULL)$$) AS without_nonce;
SELECT tests.try($$SELECT api.erase_contact((SELECT zora FROM ids), '000000')$$) AS wrong_nonce;
RESET ROLE;
SELECT tests.login('mo@acme.test', 'acme');
SELECT tests.try($$SELECT api.erase_contact((SELECT zora FROM ids), tests.nonce())$$) AS manager;
RESET ROLE;
SELECT tests.login('gil@globex.test', 'globex');
SELECT tests.try($$SELECT api.erase_contact((SELECT zora FROM ids), tests.nonce())$$) AS other_workspace;
SELECT tests.try($$SELECT api.export_contact((SELECT zora FROM ids))$$) AS other_workspace_export;
RESET ROLE;

SELECT tests.login('ann@acme.test', 'acme');
SELECT x - 'contact_id' AS erased, x ->> 'contact_id' = (SELECT zora FROM ids)::text AS for_her
  FROM api.erase_contact((SELECT zora FROM ids), tests.nonce()) x;
RESET ROLE;

-- Nothing of hers is left in any tenant table (the catalog's list, so a table added later is
-- covered); Otto's note and the deal keep their other words.
SELECT needle, tests.tables_containing(tests.tenant_id('acme'), needle) AS still_holds
  FROM unnest(ARRAY['zora', 'quill', 'quillworks.test', 'zq@home', '555 0199', '555-0177', '5550199']) needle
 ORDER BY 1, 2;
SELECT description FROM crm.activities WHERE contact_id = (SELECT otto FROM ids);
SELECT name, notes, deleted_at IS NULL AS live FROM crm.deals WHERE tenant_id = tests.tenant_id('acme') AND name LIKE '%renewal%';
SELECT first_name, last_name, email, phone, title, custom_fields, deleted_at IS NOT NULL AS deleted
  FROM crm.contacts WHERE id IN ((SELECT zora FROM ids), (SELECT twin FROM ids)) ORDER BY id = (SELECT zora FROM ids) DESC;
-- Her organization is a company's data, not hers.
SELECT name FROM crm.organizations WHERE tenant_id = tests.tenant_id('acme') AND name = 'Inkworks';

-- Audited once, with counts only; the chain verifies after sealing.
SELECT action, changes FROM core.audit_log
 WHERE tenant_id = tests.tenant_id('acme') AND action IN ('contact.erased', 'contact.exported') ORDER BY id;
SELECT crm_private.seal_audit_log() >= 0 AS sealed;
SELECT crm_private.verify_audit_chain(tests.tenant_id('acme')) ->> 'valid' AS chain_valid;
ROLLBACK;

-- The export's plan: an entity per tenant table holding records, each query filtered by
-- the tenant; only with data.export and a fresh nonce; the export audited.
BEGIN;
SELECT tests.seed();
SELECT tests.login('ann@acme.test', 'acme');
SELECT api.define_custom_field('contact', 'tier', 'Tier', 'text') ->> 'key' AS field;
SELECT tests.try($$SELECT crm_private.export_begin('json', NULL)$$) AS without_nonce;
SELECT tests.try($$SELECT crm_private.export_begin('xml', tests.nonce())$$) AS bad_format;
CREATE TEMP TABLE plan AS SELECT crm_private.export_begin('csv', tests.nonce()) AS p;
GRANT SELECT ON plan TO PUBLIC;
SELECT e ->> 'entity' AS entity, e -> 'columns' AS csv_columns,
       e ->> 'query' LIKE '%WHERE t.tenant_id = crm_private.tenant_id()%' OR e ->> 'entity' = 'members' AS tenant_filtered
  FROM plan, jsonb_array_elements(p -> 'entities') e ORDER BY 1;
-- Every query runs as the request's role, and yields this tenant's rows only.
SELECT e ->> 'entity' AS entity, tests.try(e ->> 'query') AS runs
  FROM plan, jsonb_array_elements(p -> 'entities') e ORDER BY 1;
RESET ROLE;
-- A tenant table the export leaves out must be one that holds no workspace records.
SELECT t::text AS tenant_table_not_exported FROM crm_private.tenant_tables() t
 WHERE t NOT IN (SELECT e.tbl FROM crm_private.export_entities() e) AND t <> 'core.memberships'::regclass
 ORDER BY 1;
SELECT action, changes FROM core.audit_log WHERE tenant_id = tests.tenant_id('acme') AND action = 'data.exported';
SELECT tests.login('mo@acme.test', 'acme');
SELECT tests.try($$SELECT crm_private.export_begin('json', tests.nonce())$$) AS manager;
RESET ROLE;
ROLLBACK;
