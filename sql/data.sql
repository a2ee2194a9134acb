--------------------------------------------------------------------------------------------
-- Data in and out (NFR-D1, NFR-D2, journey 1.7): the workspace export's plan, a person's
-- data (subject access) and its erasure.
--
-- The export itself streams through the edge (GET /rest/v1/export): it first calls
-- crm_private.export_begin, which checks the permission and the reauthentication nonce,
-- audits the export and answers with one query per entity; then it runs those queries in a
-- read-only snapshot inside the same tenant context, so row-level security still decides
-- what leaves. Every query filters by the tenant and walks its table's (tenant_id, id) key,
-- so rows stream in key order without a sort.
--
-- Erasure keeps the audit chain valid because the chained part of an audit entry never
-- holds a contact's personal data (ids, roles, statuses and stages only): the contact's
-- rows are anonymised in place, and the audit, access and security logs that name its id
-- name nothing else about the person.
--------------------------------------------------------------------------------------------

-- (The permissions data.export, data.import and data.erase are schema.sql's, with the others.)

-- The columns of a table that the export carries (catalog order), without the ones it
-- excludes: a column added later is exported without a change here.
CREATE FUNCTION crm_private.export_columns(tbl regclass, excluded text[]) RETURNS text[]
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
SELECT coalesce(array_agg(a.attname::text ORDER BY a.attnum), '{}')
  FROM pg_attribute a
 WHERE a.attrelid = tbl AND a.attnum > 0 AND NOT a.attisdropped AND a.attname <> ALL (excluded)
$$;
COMMENT ON FUNCTION crm_private.export_columns(regclass, text[]) IS 'The columns of a table the export carries, in catalog order.';

-- What the export carries, per entity: the table, the columns it leaves out (derived
-- columns, the owner columns row-level security keeps, secrets), whose custom fields
-- become CSV columns, and the key the rows come in (the table's primary key after tenant_id).
CREATE FUNCTION crm_private.export_entities() RETURNS TABLE (entity text, tbl regclass, excluded text[], custom_entity text, key text)
    LANGUAGE sql IMMUTABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
VALUES ('organizations', 'crm.organizations'::regclass, '{website_domain}'::text[], 'organization', 'id'),
       ('contacts', 'crm.contacts', '{phone_digits,sort_name,search_text}', 'contact', 'id'),
       ('deals', 'crm.deals', '{}', 'deal', 'id'),
       ('deal_stage_changes', 'crm.deal_stage_changes', '{deal_owner}', NULL, 'id'),
       ('assignment_changes', 'crm.assignment_changes', '{}', NULL, 'id'),
       ('activities', 'crm.activities', '{contact_owner,deal_owner}', NULL, 'id'),
       ('custom_fields', 'core.custom_fields', '{}', NULL, 'id'),
       ('pipeline_stages', 'crm.pipeline_stages', '{}', NULL, 'key'),
       ('invitations', 'core.invitations', '{token_hash,code_hash}', NULL, 'id'),
       ('audit_log', 'core.audit_log', '{xid}', NULL, 'id'),
       ('security_events', 'core.security_events', '{}', NULL, 'id'),
       ('access_events', 'core.access_events', '{}', NULL, 'id')
$$;
COMMENT ON FUNCTION crm_private.export_entities() IS 'The tables a workspace export carries, the columns it leaves out, and whose custom fields become CSV columns.';

-- GET /rest/v1/export, step one (the edge calls it in its own committed transaction, so
-- the export is on record even if the download breaks off): checks data.export and the
-- reauthentication nonce, audits the export and logs it as an access, and answers with
-- {tenant_id, format, exported_at, entities: [{entity, columns, query}]}. `columns` are the
-- CSV file's (custom fields as custom.<key>); each query yields one JSON object per row,
-- as text, in the caller's tenant context.
CREATE FUNCTION crm_private.export_begin(format text, nonce text) RETURNS jsonb
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    v_tenant uuid := crm_private.tenant_id();
    v_entities jsonb;
BEGIN
    PERFORM crm_private.require_permission('data.export');
    IF export_begin.format IS NULL OR export_begin.format NOT IN ('json', 'csv') THEN
        RAISE EXCEPTION 'format must be json or csv' USING ERRCODE = 'invalid_parameter_value', DETAIL = 'field: format';
    END IF;
    PERFORM crm_private.require_reauthentication(nonce);
    SELECT jsonb_agg(x.j ORDER BY x.n) INTO v_entities
      FROM (SELECT e.n,
                   jsonb_build_object(
                       'entity', e.entity,
                       'columns', to_jsonb(array_remove(crm_private.export_columns(e.tbl, e.excluded), 'custom_fields')
                                           || coalesce((SELECT array_agg('custom.' || f.key ORDER BY f.created_at, f.key)
                                                          FROM core.custom_fields f
                                                         WHERE f.tenant_id = v_tenant AND f.entity = e.custom_entity), '{}')),
                       'query', format('SELECT pg_catalog.to_jsonb(x)::text FROM (SELECT %s FROM %s t WHERE t.tenant_id = crm_private.tenant_id()) x ORDER BY x.%I',
                                       (SELECT string_agg(quote_ident(c), ', ') FROM unnest(crm_private.export_columns(e.tbl, e.excluded)) c),
                                       e.tbl, e.key)) AS j
              FROM crm_private.export_entities() WITH ORDINALITY e(entity, tbl, excluded, custom_entity, key, n)
            UNION ALL
            -- Members with their email (crm_private.member_json), after the CRM's records.
            SELECT 100, jsonb_build_object(
                       'entity', 'members',
                       'columns', '["user_id", "email", "role", "status", "display_name", "avatar_url", "department", "joined_at", "updated_at"]'::jsonb,
                       'query', 'SELECT crm_private.member_json(m)::text FROM core.memberships m WHERE m.tenant_id = crm_private.tenant_id() ORDER BY m.id')) x;
    PERFORM crm_private.audit(v_tenant, 'data.exported', 'tenant', v_tenant::text,
                              jsonb_build_object('after', jsonb_build_object('format', export_begin.format)));
    PERFORM crm_private.log_access('data.exported', 'tenant', v_tenant, jsonb_build_object('format', export_begin.format));
    RETURN jsonb_build_object('tenant_id', v_tenant, 'format', export_begin.format, 'exported_at', now(),
                              'entities', v_entities);
END
$$;
COMMENT ON FUNCTION crm_private.export_begin(text, text) IS 'The workspace export''s first step (GET /rest/v1/export): checks data.export and the reauthentication nonce, audits the export, and answers with one query per entity for the edge to stream.';

--------------------------------------------------------------------------------------------
-- Subject access and erasure (NFR-D1)
--------------------------------------------------------------------------------------------

-- The contact and the contacts merged into it, at any depth: one person's records.
CREATE FUNCTION crm_private.person_contacts(tenant uuid, id uuid) RETURNS SETOF uuid
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
WITH RECURSIVE person(id) AS (
    SELECT c.id FROM crm.contacts c WHERE c.tenant_id = person_contacts.tenant AND c.id = person_contacts.id
    UNION
    SELECT c.id FROM crm.contacts c JOIN person p ON c.merged_into = p.id WHERE c.tenant_id = person_contacts.tenant)
SELECT p.id FROM person p
$$;
COMMENT ON FUNCTION crm_private.person_contacts(uuid, uuid) IS 'A contact and every contact merged into it (at any depth) in a tenant.';

-- The subject access export (api.export_contact). A definer: it reads the audit and access
-- logs about the person whatever the caller's own grants, in the caller's tenant only.
CREATE FUNCTION crm_private.contact_export(id uuid) RETURNS jsonb
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    v_tenant uuid := crm_private.tenant_id();
    v_ids uuid[];
    v_result jsonb;
BEGIN
    PERFORM crm_private.require_permission('data.export');
    v_ids := ARRAY(SELECT crm_private.person_contacts(v_tenant, contact_export.id));
    IF cardinality(v_ids) = 0 THEN
        PERFORM crm_private.not_found('contact', 'id', contact_export.id);
    END IF;
    SELECT jsonb_build_object(
        'contact_id', contact_export.id,
        'exported_at', now(),
        'contacts', (SELECT jsonb_agg(crm_private.contact_json(c) ORDER BY c.id = contact_export.id DESC, c.created_at, c.id)
                       FROM crm.contacts c WHERE c.tenant_id = v_tenant AND c.id = ANY (v_ids)),
        'organizations', (SELECT coalesce(jsonb_agg(jsonb_build_object('id', o.id, 'name', o.name, 'website', o.website) ORDER BY o.id), '[]')
                            FROM crm.organizations o
                           WHERE o.tenant_id = v_tenant
                             AND o.id IN (SELECT c.organization_id FROM crm.contacts c WHERE c.tenant_id = v_tenant AND c.id = ANY (v_ids))),
        'deals', (SELECT coalesce(jsonb_agg(jsonb_build_object('id', d.id, 'name', d.name, 'amount', d.amount, 'currency', d.currency,
                                                               'stage', d.stage, 'expected_close_date', d.expected_close_date,
                                                               'notes', d.notes, 'created_at', d.created_at, 'deleted_at', d.deleted_at)
                                            ORDER BY d.created_at, d.id), '[]')
                    FROM crm.deals d WHERE d.tenant_id = v_tenant AND d.contact_id = ANY (v_ids)),
        'activities', (SELECT coalesce(jsonb_agg(jsonb_build_object('id', a.id, 'type', a.type, 'description', a.description,
                                                                    'occurred_at', a.occurred_at, 'deal_id', a.deal_id,
                                                                    'archived_at', a.archived_at)
                                                 ORDER BY a.occurred_at, a.id), '[]')
                         FROM crm.activities a WHERE a.tenant_id = v_tenant AND a.contact_id = ANY (v_ids)),
        'audit_log', (SELECT coalesce(jsonb_agg(jsonb_build_object('occurred_at', l.occurred_at, 'action', l.action, 'actor_id', l.actor_id,
                                                                   'actor_role', l.actor_role, 'changes', l.changes)
                                                ORDER BY l.id), '[]')
                        FROM core.audit_log l
                       WHERE l.tenant_id = v_tenant AND l.object_type = 'contact' AND l.object_id = ANY (v_ids::text[])),
        'access_log', (SELECT coalesce(jsonb_agg(jsonb_build_object('occurred_at', e.occurred_at, 'action', e.action, 'user_id', e.user_id)
                                                 ORDER BY e.id), '[]')
                         FROM core.access_events e
                        WHERE e.tenant_id = v_tenant AND e.object_type = 'contact' AND e.object_id = ANY (v_ids)))
      INTO v_result;
    PERFORM crm_private.audit(v_tenant, 'contact.exported', 'contact', contact_export.id::text, '{}');
    PERFORM crm_private.log_access('contact.exported', 'contact', contact_export.id);
    RETURN v_result;
END
$$;
COMMENT ON FUNCTION crm_private.contact_export(uuid) IS 'What api.export_contact returns (checks data.export itself).';

CREATE FUNCTION api.export_contact(id uuid) RETURNS jsonb
    LANGUAGE plpgsql VOLATILE SECURITY INVOKER
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    RETURN crm_private.contact_export(export_contact.id);
END
$$;
COMMENT ON FUNCTION api.export_contact(uuid) IS
'Subject access (GDPR, NFR-D1): everything the workspace holds about one person as JSON: {contact_id, exported_at, contacts (the contact and the ones merged into it), organizations, deals, activities, audit_log, access_log}. Needs data.export (admins); audited. P0002 if the workspace has no contact with this id.';

-- What erasure replaces a person's data with.
CREATE FUNCTION crm_private.erased() RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT '[erased]'::text $$;
COMMENT ON FUNCTION crm_private.erased() IS 'The text erasure leaves where a person''s data was.';

-- `t` with every occurrence of each of `words` (case-insensitive, taken literally) replaced
-- by the erasure marker.
CREATE FUNCTION crm_private.scrub(t text, words text[]) RETURNS text
    LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    w text;
BEGIN
    IF t IS NULL THEN
        RETURN NULL;
    END IF;
    FOREACH w IN ARRAY words LOOP
        t := regexp_replace(t, regexp_replace(w, '([\\.^$|?*+()\[\]{}-])', '\\\1', 'g'), crm_private.erased(), 'gi');
    END LOOP;
    RETURN t;
END
$$;
COMMENT ON FUNCTION crm_private.scrub(text, text[]) IS 'A text with each of the given words (literal, any case) replaced by the erasure marker.';

-- The erasure (api.erase_contact). A definer: activities are immutable to everyone else,
-- and it must reach every row of the person whatever the caller's row-level security.
CREATE FUNCTION crm_private.contact_erase(id uuid, nonce text) RETURNS jsonb
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    v_tenant uuid := crm_private.tenant_id();
    v_ids uuid[];
    v_words text[];
    v_activities bigint;
    v_texts bigint := 0;
    v_n bigint;
BEGIN
    PERFORM crm_private.require_permission('data.erase');
    PERFORM crm_private.require_reauthentication(nonce);
    -- Locks the person's rows: a concurrent update cannot bring a name back.
    v_ids := ARRAY(SELECT c.id FROM crm.contacts c
                    WHERE c.tenant_id = v_tenant AND c.id IN (SELECT crm_private.person_contacts(v_tenant, contact_erase.id))
                    ORDER BY c.id FOR UPDATE);
    IF cardinality(v_ids) = 0 THEN
        PERFORM crm_private.not_found('contact', 'id', contact_erase.id);
    END IF;
    -- What may also appear in free text about them: email, phone, full name.
    -- Longest first: "Zora Quill" before "Zora Q".
    SELECT coalesce(array_agg(x.w ORDER BY pg_catalog.char_length(x.w) DESC, x.w), '{}') INTO v_words
      FROM (SELECT DISTINCT v.w FROM crm.contacts c,
           LATERAL (VALUES (c.email), (c.phone), (c.first_name || coalesce(' ' || c.last_name, '')), (c.last_name || ', ' || c.first_name)) v(w)
     WHERE c.tenant_id = v_tenant AND c.id = ANY (v_ids) AND c.first_name <> crm_private.erased()
       AND pg_catalog.char_length(v.w) >= 3) x;
    PERFORM set_config('pg_crm.erasing', 'on', true);
    UPDATE crm.contacts c
       SET first_name = crm_private.erased(), last_name = NULL, email = NULL, phone = NULL, title = NULL,
           custom_fields = '{}', deleted_at = coalesce(c.deleted_at, now()), deleted_by = coalesce(c.deleted_by, crm_private.user_id())
     WHERE c.tenant_id = v_tenant AND c.id = ANY (v_ids);
    -- Their activities' texts are about them; other texts lose only the words above.
    UPDATE crm.activities a SET description = crm_private.erased()
     WHERE a.tenant_id = v_tenant AND a.contact_id = ANY (v_ids) AND a.description <> crm_private.erased();
    GET DIAGNOSTICS v_activities = ROW_COUNT;
    IF cardinality(v_words) > 0 THEN
        UPDATE crm.activities a SET description = crm_private.scrub(a.description, v_words)
         WHERE a.tenant_id = v_tenant AND a.description ILIKE ANY (SELECT '%' || w || '%' FROM unnest(v_words) w);
        GET DIAGNOSTICS v_n = ROW_COUNT;
        v_texts := v_texts + v_n;
        UPDATE crm.deals d SET name = crm_private.scrub(d.name, v_words), notes = crm_private.scrub(d.notes, v_words),
                               lost_reason = crm_private.scrub(d.lost_reason, v_words)
         WHERE d.tenant_id = v_tenant
           AND concat_ws(' ', d.name, d.notes, d.lost_reason) ILIKE ANY (SELECT '%' || w || '%' FROM unnest(v_words) w);
        GET DIAGNOSTICS v_n = ROW_COUNT;
        v_texts := v_texts + v_n;
        UPDATE crm.deal_stage_changes s SET reason = crm_private.scrub(s.reason, v_words)
         WHERE s.tenant_id = v_tenant AND s.reason ILIKE ANY (SELECT '%' || w || '%' FROM unnest(v_words) w);
        GET DIAGNOSTICS v_n = ROW_COUNT;
        v_texts := v_texts + v_n;
    END IF;
    PERFORM set_config('pg_crm.erasing', 'off', true);
    PERFORM crm_private.audit(v_tenant, 'contact.erased', 'contact', contact_erase.id::text,
        jsonb_build_object('after', jsonb_build_object('contacts', cardinality(v_ids), 'activities', v_activities, 'texts', v_texts)));
    RETURN jsonb_build_object('contact_id', contact_erase.id, 'contacts', cardinality(v_ids), 'activities', v_activities,
                              'texts', v_texts);
END
$$;
COMMENT ON FUNCTION crm_private.contact_erase(uuid, text) IS 'What api.erase_contact does (checks data.erase and the nonce itself).';

CREATE FUNCTION api.erase_contact(id uuid, nonce text) RETURNS jsonb
    LANGUAGE plpgsql VOLATILE SECURITY INVOKER
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    RETURN crm_private.contact_erase(erase_contact.id, erase_contact.nonce);
END
$$;
COMMENT ON FUNCTION api.erase_contact(uuid, text) IS
'Erasure (GDPR, NFR-D1): removes a person''s personal data from the workspace: the contact and the contacts merged into it keep their ids (deals and history still point at them) but lose name, email, phone, title and custom field values and are deleted; their activities'' texts are erased; the person''s email, phone and full name are erased from other activities, deal names, notes and lost reasons. The audit, access and security logs name the contact by id only, so they keep it and the audit chain still verifies. Needs data.erase (admins) and a reauthentication nonce (POST /auth/v1/reauthenticate); audited as contact.erased with counts only. Returns {contact_id, contacts, activities, texts}.';
