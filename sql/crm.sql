-- The CRM's `api` functions (PRD F6–F10). Each is SECURITY INVOKER PL/pgSQL (plans kept per
-- connection), so row-level security decides what it touches; each filters by
-- crm_private.tenant_id() explicitly as well and pages by keyset. Field checks are Rust
-- (crm_private.fields_check), and a reference to a record the caller cannot see — in
-- another tenant, assigned to someone else, or nonexistent — is answered the same way:
-- P0002 (404) naming the field.

--------------------------------------------------------------------------------------------
-- Shared helpers
--------------------------------------------------------------------------------------------

-- Opaque keyset cursors, bound to a list, its sort order and the tenant.
CREATE FUNCTION crm_private.make_cursor(list text, sort text, value text, id uuid) RETURNS text
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $$
    SELECT pg_catalog.rtrim(pg_catalog.translate(pg_catalog.encode(pg_catalog.convert_to(
               pg_catalog.jsonb_build_array(list, sort, crm_private.tenant_id(), value, id)::text, 'UTF8'), 'base64'),
               E'+/\n', '-_'), '=')
$$;
COMMENT ON FUNCTION crm_private.make_cursor(text, text, text, uuid) IS 'A next_cursor: the list, its sort order, the tenant and the last row''s sort key and id.';

CREATE FUNCTION crm_private.read_cursor(cursor text, list text, sort text, OUT value text, OUT id uuid)
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    v jsonb;
BEGIN
    IF cursor IS NULL THEN
        RETURN;
    END IF;
    BEGIN
        v := convert_from(decode(translate(cursor, '-_', '+/') || repeat('=', (4 - length(cursor) % 4) % 4), 'base64'), 'UTF8')::jsonb;
    EXCEPTION WHEN OTHERS THEN
        v := NULL;
    END;
    IF jsonb_typeof(v) IS DISTINCT FROM 'array' OR v ->> 0 IS DISTINCT FROM list OR v ->> 1 IS DISTINCT FROM sort
       OR v ->> 2 IS DISTINCT FROM crm_private.tenant_id()::text
       OR coalesce(v ->> 4, '') !~ '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$' THEN
        RAISE EXCEPTION 'invalid cursor: pass the next_cursor of the previous page of this list, with the same sort'
            USING ERRCODE = 'invalid_parameter_value', DETAIL = 'field: cursor';
    END IF;
    value := v ->> 3;
    id := (v ->> 4)::uuid;
END
$$;
COMMENT ON FUNCTION crm_private.read_cursor(text, text, text) IS 'Reads a cursor made by make_cursor for this list, sort and tenant (22023 naming cursor otherwise).';

CREATE FUNCTION crm_private.time_key(at timestamptz) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT pg_catalog.to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') $$;

CREATE FUNCTION crm_private.bad_sort(allowed text[]) RETURNS void
    LANGUAGE plpgsql IMMUTABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    RAISE EXCEPTION 'invalid sort: must be one of %', array_to_string(allowed, ', ')
        USING ERRCODE = 'invalid_parameter_value', DETAIL = 'field: sort';
END
$$;

CREATE FUNCTION crm_private.not_found(what text, field text) RETURNS void
    LANGUAGE plpgsql IMMUTABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    RAISE EXCEPTION 'no % with this id', what USING ERRCODE = 'no_data_found', DETAIL = 'field: ' || field;
END
$$;

-- Reassignment targets: active members of the request's tenant.
CREATE FUNCTION crm_private.require_assignee(user_id uuid) RETURNS void
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    IF user_id IS NULL OR NOT EXISTS (SELECT 1 FROM core.memberships m
                                       WHERE m.tenant_id = crm_private.tenant_id() AND m.user_id = require_assignee.user_id
                                         AND m.status = 'active') THEN
        RAISE EXCEPTION 'no active member with this id' USING ERRCODE = 'no_data_found', DETAIL = 'field: assigned_to';
    END IF;
END
$$;

-- The JSON shapes (inlinable).
CREATE FUNCTION crm_private.organization_json(o crm.organizations) RETURNS jsonb
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $$
    SELECT pg_catalog.jsonb_build_object(
        'id', o.id, 'name', o.name, 'industry', o.industry, 'size', o.size, 'location', o.location,
        'website', o.website, 'parent_id', o.parent_id, 'custom_fields', o.custom_fields,
        'deleted_at', o.deleted_at, 'created_at', o.created_at, 'updated_at', o.updated_at,
        'created_by', o.created_by, 'updated_by', o.updated_by)
$$;
CREATE FUNCTION crm_private.contact_json(c crm.contacts) RETURNS jsonb
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $$
    SELECT pg_catalog.jsonb_build_object(
        'id', c.id, 'first_name', c.first_name, 'last_name', c.last_name, 'email', c.email, 'phone', c.phone,
        'title', c.title, 'organization_id', c.organization_id, 'assigned_to', c.assigned_to,
        'custom_fields', c.custom_fields, 'merged_into', c.merged_into, 'deleted_at', c.deleted_at,
        'created_at', c.created_at, 'updated_at', c.updated_at, 'created_by', c.created_by, 'updated_by', c.updated_by)
$$;
CREATE FUNCTION crm_private.deal_json(d crm.deals) RETURNS jsonb
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $$
    SELECT pg_catalog.jsonb_build_object(
        'id', d.id, 'name', d.name, 'amount', d.amount, 'currency', d.currency, 'stage', d.stage,
        'probability', d.probability, 'expected_close_date', d.expected_close_date, 'closed_at', d.closed_at,
        'lost_reason', d.lost_reason, 'contact_id', d.contact_id, 'organization_id', d.organization_id,
        'assigned_to', d.assigned_to, 'notes', d.notes, 'custom_fields', d.custom_fields, 'deleted_at', d.deleted_at,
        'created_at', d.created_at, 'updated_at', d.updated_at, 'created_by', d.created_by, 'updated_by', d.updated_by)
$$;
CREATE FUNCTION crm_private.activity_json(a crm.activities) RETURNS jsonb
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $$
    SELECT pg_catalog.jsonb_build_object(
        'id', a.id, 'type', a.type, 'description', a.description, 'occurred_at', a.occurred_at,
        'actor_id', a.actor_id, 'contact_id', a.contact_id, 'deal_id', a.deal_id,
        'archived_at', a.archived_at, 'archived_by', a.archived_by, 'created_at', a.created_at)
$$;

-- References a write names must be live records the caller can see (RLS decides).
CREATE FUNCTION crm_private.require_organization(id uuid, field text) RETURNS void
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    IF id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM crm.organizations o
                                       WHERE o.tenant_id = crm_private.tenant_id() AND o.id = require_organization.id
                                         AND o.deleted_at IS NULL) THEN
        PERFORM crm_private.not_found('organization', field, require_organization.id);
    END IF;
END
$$;
CREATE FUNCTION crm_private.require_contact(id uuid, field text) RETURNS void
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    IF id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM crm.contacts c
                                       WHERE c.tenant_id = crm_private.tenant_id() AND c.id = require_contact.id
                                         AND c.deleted_at IS NULL) THEN
        PERFORM crm_private.not_found('contact', field, require_contact.id);
    END IF;
END
$$;
CREATE FUNCTION crm_private.require_deal(id uuid, field text) RETURNS void
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    IF id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM crm.deals d
                                       WHERE d.tenant_id = crm_private.tenant_id() AND d.id = require_deal.id
                                         AND d.deleted_at IS NULL) THEN
        PERFORM crm_private.not_found('deal', field, require_deal.id);
    END IF;
END
$$;

-- F7.7: one live contact per email in a tenant. The look-up sees every contact of the
-- tenant (a rep's duplicate may belong to a colleague), and says only its id.
CREATE FUNCTION crm_private.contact_with_email(email text, except_id uuid) RETURNS uuid
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    RETURN (SELECT c.id FROM crm.contacts c
             WHERE c.tenant_id = crm_private.tenant_id() AND lower(c.email) = lower(contact_with_email.email)
               AND c.deleted_at IS NULL AND c.id IS DISTINCT FROM except_id);
END
$$;
COMMENT ON FUNCTION crm_private.contact_with_email(text, uuid) IS 'The live contact of the request''s tenant with this email (case-insensitive), other than except_id, if any.';

CREATE FUNCTION crm_private.require_unique_email(email text, except_id uuid) RETURNS void
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    v_existing uuid;
BEGIN
    IF email IS NULL THEN
        RETURN;
    END IF;
    v_existing := crm_private.contact_with_email(email, except_id);
    IF v_existing IS NOT NULL THEN
        RAISE EXCEPTION 'a contact with this email exists already: %', v_existing USING ERRCODE = 'unique_violation',
            DETAIL = 'field: email; existing_id: ' || v_existing, HINT = 'merge_contacts joins two contacts';
    END IF;
END
$$;

--------------------------------------------------------------------------------------------
-- Duplicates (design card) and search (F7.3): candidates by index, scored by Rust
-- (domain::duplicates) or ranked by trigram similarity.
--
-- Trigram operators, LIKE and lower() are not leakproof, so under row-level security the
-- planner must apply a table's policy before them and cannot use them as index conditions:
-- every search would read the whole tenant (measured at 100,000 contacts: ~600 ms, a
-- sequential scan). These helpers therefore read the tables as their owner, without RLS,
-- and apply the policy's rule themselves, computed once into variables from the same
-- helpers the policies use: the request's tenant, live rows, and for contacts an assignee
-- between crm_private.first_visible_assignee() and last_visible_assignee(). They return
-- only what the caller's own SELECT would see. Their trigram conditions are planned for each
-- pattern (plan_cache_mode = force_custom_plan): a generic plan cannot tell how selective a
-- pattern is, and was measured reading the whole tenant by assignee instead (~640 ms). And
-- they do not scan tables sequentially (enable_seqscan = off): the planner costs a trigram
-- comparison like an equality, so at 20,000 organizations it preferred a sequential scan
-- (measured 43 ms) to the tenant's trigram index (a few ms).
--------------------------------------------------------------------------------------------
CREATE FUNCTION crm_private.contact_duplicates(first_name text, last_name text, email text, phone text,
                                               organization_id uuid, except_id uuid) RETURNS jsonb
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    SET enable_seqscan = off
    SET plan_cache_mode = force_custom_plan
    AS $$
DECLARE
    v_name text := lower(btrim(coalesce(first_name, '') || ' ' || coalesce(last_name, '')));
    v_phone text := right(crm_private.phone_digits(phone), 10);
    v_email text := lower(email);
    v_domain text := nullif(split_part(lower(email), '@', 2), '');
    v_tenant uuid := crm_private.tenant_id();
    v_first uuid := crm_private.first_visible_assignee();
    v_last uuid := crm_private.last_visible_assignee();
BEGIN
    RETURN (
        SELECT coalesce(jsonb_agg(jsonb_build_object('id', x.id, 'first_name', x.first_name, 'last_name', x.last_name,
                                                     'email', x.email, 'phone', x.phone, 'organization_id', x.organization_id,
                                                     'score', x.s -> 'score', 'reason', x.s -> 'reason')
                                  ORDER BY (x.s ->> 'score')::float8 DESC, x.id), '[]'::jsonb)
          FROM (SELECT c.*, crm_private.contact_duplicate(contact_duplicates.first_name, contact_duplicates.last_name,
                          contact_duplicates.email, contact_duplicates.phone, contact_duplicates.organization_id,
                          c.first_name, c.last_name, c.email, c.phone, c.organization_id) AS s
                  FROM (SELECT DISTINCT ON (k.id) k.* FROM (
                          (SELECT c1.* FROM crm.contacts c1
                            WHERE c1.tenant_id = v_tenant AND v_email IS NOT NULL AND lower(c1.email) = v_email
                              AND c1.deleted_at IS NULL AND c1.assigned_to BETWEEN v_first AND v_last LIMIT 20)
                          UNION ALL
                          (SELECT c2.* FROM crm.contacts c2
                            WHERE c2.tenant_id = v_tenant AND length(v_phone) >= 4 AND right(c2.phone_digits, 10) = v_phone
                              AND c2.deleted_at IS NULL AND c2.assigned_to BETWEEN v_first AND v_last LIMIT 20)
                          UNION ALL
                          -- A similar name counts only in the same organization or under the
                          -- same email domain (domain::duplicates): only those are read.
                          (SELECT c3.* FROM crm.contacts c3
                            WHERE c3.tenant_id = v_tenant AND length(v_name) >= 3
                              AND c3.organization_id = contact_duplicates.organization_id AND v_name <% c3.search_text
                              AND c3.deleted_at IS NULL AND c3.assigned_to BETWEEN v_first AND v_last LIMIT 50)
                          UNION ALL
                          -- (By the domain's index, or by the name's trigrams where the
                          -- domain is common: the planner knows the domains' frequencies.)
                          (SELECT c4.* FROM crm.contacts c4
                            WHERE c4.tenant_id = v_tenant AND length(v_name) >= 3 AND v_domain IS NOT NULL
                              AND split_part(lower(c4.email), '@', 2) = v_domain AND v_name <% c4.search_text
                              AND c4.deleted_at IS NULL AND c4.assigned_to BETWEEN v_first AND v_last LIMIT 50)) k
                         WHERE k.id IS DISTINCT FROM except_id) c) x
         WHERE x.s IS NOT NULL);
END
$$;
COMMENT ON FUNCTION crm_private.contact_duplicates(text, text, text, text, uuid, uuid) IS 'Likely duplicates of a contact among the live contacts the caller sees: [{id, names, email, phone, organization_id, score, reason}], best first.';

CREATE FUNCTION crm_private.organization_duplicates(name text, website_domain text, except_id uuid) RETURNS jsonb
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    SET enable_seqscan = off
    SET plan_cache_mode = force_custom_plan
    AS $$
DECLARE
    v_name text := lower(btrim(coalesce(name, '')));
    v_tenant uuid := crm_private.tenant_id();
BEGIN
    RETURN (
        SELECT coalesce(jsonb_agg(jsonb_build_object('id', x.id, 'name', x.name, 'website', x.website,
                                                     'score', x.s -> 'score', 'reason', x.s -> 'reason')
                                  ORDER BY (x.s ->> 'score')::float8 DESC, x.id), '[]'::jsonb)
          FROM (SELECT o.*, crm_private.organization_duplicate(organization_duplicates.name, organization_duplicates.website_domain, o.name, o.website_domain) AS s
                  FROM (SELECT DISTINCT ON (k.id) k.* FROM (
                          (SELECT o1.* FROM crm.organizations o1
                            WHERE o1.tenant_id = v_tenant AND organization_duplicates.website_domain IS NOT NULL
                              AND o1.website_domain = organization_duplicates.website_domain AND o1.deleted_at IS NULL LIMIT 20)
                          UNION ALL
                          (SELECT o2.* FROM crm.organizations o2
                            WHERE o2.tenant_id = v_tenant AND length(v_name) >= 2 AND lower(o2.name) % v_name
                              AND o2.deleted_at IS NULL LIMIT 50)) k
                         WHERE k.id IS DISTINCT FROM except_id) o) x
         WHERE x.s IS NOT NULL);
END
$$;
COMMENT ON FUNCTION crm_private.organization_duplicates(text, text, uuid) IS 'Likely duplicates of an organization among the live ones: [{id, name, website, score, reason}], best first.';

--------------------------------------------------------------------------------------------
-- api: organizations (F6)
--------------------------------------------------------------------------------------------
CREATE FUNCTION api.create_organization(name text, industry text DEFAULT NULL, size text DEFAULT NULL,
                                        location text DEFAULT NULL, website text DEFAULT NULL,
                                        parent_id uuid DEFAULT NULL, custom_fields jsonb DEFAULT NULL) RETURNS jsonb
    LANGUAGE plpgsql VOLATILE SECURITY INVOKER
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    v jsonb;
    o crm.organizations;
BEGIN
    PERFORM crm_private.require_permission('workspace.read');
    v := crm_private.fields_check('organization', 'create', jsonb_strip_nulls(jsonb_build_object(
        'name', create_organization.name, 'industry', create_organization.industry, 'size', create_organization.size,
        'location', create_organization.location, 'website', create_organization.website,
        'parent_id', create_organization.parent_id, 'custom_fields', create_organization.custom_fields)));
    PERFORM crm_private.require_organization((v ->> 'parent_id')::uuid, 'parent_id');
    INSERT INTO crm.organizations (tenant_id, name, industry, size, location, website, parent_id, custom_fields)
    VALUES (crm_private.tenant_id(), v ->> 'name', v ->> 'industry', v ->> 'size', v ->> 'location', v ->> 'website',
            (v ->> 'parent_id')::uuid, coalesce(v -> 'custom_fields', '{}'::jsonb))
    RETURNING * INTO o;
    RETURN jsonb_build_object('organization', crm_private.organization_json(o),
                              'duplicates', crm_private.organization_duplicates(o.name, o.website_domain, o.id));
END
$$;
COMMENT ON FUNCTION api.create_organization(text, text, text, text, text, uuid, jsonb) IS
'Create an organization (PRD F6.1): name (1-200 characters), industry, size (1-10, 11-50, 51-200, 201-500, 501-1000, 1001-5000, 5001+), location, website (http(s) URL), parent_id (an organization of the workspace), custom_fields (checked against the definitions). Any role. Returns {organization, duplicates: [{id, name, website, score, reason}]} (likely duplicates by website or name). 22023 naming the field for bad input; P0002 if parent_id names no organization.';

CREATE FUNCTION api.get_organization(id uuid) RETURNS jsonb
    LANGUAGE plpgsql STABLE SECURITY INVOKER
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    o crm.organizations;
BEGIN
    PERFORM crm_private.require_permission('workspace.read');
    SELECT * INTO o FROM crm.organizations x WHERE x.tenant_id = crm_private.tenant_id() AND x.id = get_organization.id;
    IF NOT FOUND THEN
        PERFORM crm_private.not_found('organization', 'id', get_organization.id);
    END IF;
    PERFORM crm_private.log_access('organization.viewed', 'organization', o.id);
    RETURN crm_private.organization_json(o);
END
$$;
COMMENT ON FUNCTION api.get_organization(uuid) IS
'One organization of the workspace (also a soft-deleted one: see deleted_at). Any role. P0002 if there is none with this id.';

CREATE FUNCTION api.list_organizations(parent_id uuid DEFAULT NULL, subtree_of uuid DEFAULT NULL, sort text DEFAULT 'name',
                                       deleted boolean DEFAULT false, page_size integer DEFAULT 25, cursor text DEFAULT NULL)
    RETURNS jsonb
    LANGUAGE plpgsql STABLE SECURITY INVOKER
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    v_n integer := crm_private.page_size(list_organizations.page_size);
    v_sort text := coalesce(list_organizations.sort, 'name');
    v_deleted boolean := coalesce(list_organizations.deleted, false);
    v_after record;
    v_rows jsonb;
    v_next text;
BEGIN
    PERFORM crm_private.require_permission('workspace.read');
    IF v_sort NOT IN ('name', 'newest') THEN
        PERFORM crm_private.bad_sort(ARRAY['name', 'newest']);
    END IF;
    IF parent_id IS NOT NULL AND subtree_of IS NOT NULL THEN
        RAISE EXCEPTION 'invalid subtree_of: give parent_id or subtree_of, not both' USING ERRCODE = 'invalid_parameter_value',
            DETAIL = 'field: subtree_of';
    END IF;
    PERFORM crm_private.require_organization(coalesce(parent_id, subtree_of),
                                             CASE WHEN parent_id IS NOT NULL THEN 'parent_id' ELSE 'subtree_of' END);
    v_after := crm_private.read_cursor(list_organizations.cursor, 'organizations', v_sort);
    IF subtree_of IS NOT NULL THEN
        -- The whole subtree below an organization (not the organization itself), by name.
        IF v_sort <> 'name' THEN
            PERFORM crm_private.bad_sort(ARRAY['name']);
        END IF;
        WITH RECURSIVE tree(id, depth) AS (
            SELECT o.id, 1 FROM crm.organizations o WHERE o.tenant_id = crm_private.tenant_id() AND o.parent_id = subtree_of
            UNION ALL
            SELECT o.id, t.depth + 1 FROM tree t JOIN crm.organizations o
                ON o.tenant_id = crm_private.tenant_id() AND o.parent_id = t.id WHERE t.depth < 100)
        SELECT coalesce(jsonb_agg(x.j ORDER BY x.rn) FILTER (WHERE x.rn <= v_n), '[]'::jsonb),
               CASE WHEN count(*) > v_n THEN max(crm_private.make_cursor('organizations', 'name', x.kv, x.kid)) FILTER (WHERE x.rn = v_n) END
          INTO v_rows, v_next
          FROM (SELECT row_number() OVER (ORDER BY lower(o.name), o.id) AS rn,
                       crm_private.organization_json(o) || jsonb_build_object('depth', t.depth) AS j,
                       lower(o.name) AS kv, o.id AS kid
                  FROM tree t JOIN crm.organizations o ON o.tenant_id = crm_private.tenant_id() AND o.id = t.id
                 WHERE (o.deleted_at IS NOT NULL) = v_deleted
                   AND (v_after.id IS NULL OR (lower(o.name), o.id) > (v_after.value, v_after.id))
                 ORDER BY lower(o.name), o.id LIMIT v_n + 1) x;
    ELSIF v_sort = 'name' THEN
        SELECT coalesce(jsonb_agg(x.j ORDER BY x.rn) FILTER (WHERE x.rn <= v_n), '[]'::jsonb),
               CASE WHEN count(*) > v_n THEN max(crm_private.make_cursor('organizations', 'name', x.kv, x.kid)) FILTER (WHERE x.rn = v_n) END
          INTO v_rows, v_next
          FROM (SELECT row_number() OVER (ORDER BY lower(o.name), o.id) AS rn, crm_private.organization_json(o) AS j,
                       lower(o.name) AS kv, o.id AS kid
                  FROM crm.organizations o
                 WHERE o.tenant_id = crm_private.tenant_id() AND (o.deleted_at IS NOT NULL) = v_deleted
                   AND (list_organizations.parent_id IS NULL OR o.parent_id = list_organizations.parent_id)
                   AND (v_after.id IS NULL OR (lower(o.name), o.id) > (v_after.value, v_after.id))
                 ORDER BY lower(o.name), o.id LIMIT v_n + 1) x;
    ELSE
        SELECT coalesce(jsonb_agg(x.j ORDER BY x.rn) FILTER (WHERE x.rn <= v_n), '[]'::jsonb),
               CASE WHEN count(*) > v_n THEN max(crm_private.make_cursor('organizations', 'newest', crm_private.time_key(x.kv), x.kid)) FILTER (WHERE x.rn = v_n) END
          INTO v_rows, v_next
          FROM (SELECT row_number() OVER (ORDER BY o.created_at DESC, o.id DESC) AS rn, crm_private.organization_json(o) AS j,
                       o.created_at AS kv, o.id AS kid
                  FROM crm.organizations o
                 WHERE o.tenant_id = crm_private.tenant_id() AND (o.deleted_at IS NOT NULL) = v_deleted
                   AND (list_organizations.parent_id IS NULL OR o.parent_id = list_organizations.parent_id)
                   AND (v_after.id IS NULL OR (o.created_at, o.id) < (v_after.value::timestamptz, v_after.id))
                 ORDER BY o.created_at DESC, o.id DESC LIMIT v_n + 1) x;
    END IF;
    RETURN jsonb_build_object('data', v_rows, 'next_cursor', v_next);
END
$$;
COMMENT ON FUNCTION api.list_organizations(uuid, uuid, text, boolean, integer, text) IS
'The workspace''s organizations: {data, next_cursor}. parent_id: only its direct subsidiaries; subtree_of: its whole subtree (each row with its depth). sort: name (default) or newest. deleted: true lists the soft-deleted ones instead. page_size 1-100 (default 25); pass next_cursor back as cursor. Any role.';

CREATE FUNCTION api.update_organization(id uuid, changes jsonb) RETURNS jsonb
    LANGUAGE plpgsql VOLATILE SECURITY INVOKER
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    v jsonb;
    o crm.organizations;
BEGIN
    PERFORM crm_private.require_permission('workspace.read');
    v := crm_private.fields_check('organization', 'update', changes);
    IF v ? 'parent_id' THEN
        PERFORM crm_private.require_organization((v ->> 'parent_id')::uuid, 'parent_id');
    END IF;
    UPDATE crm.organizations x
       SET name = CASE WHEN v ? 'name' THEN v ->> 'name' ELSE x.name END,
           industry = CASE WHEN v ? 'industry' THEN v ->> 'industry' ELSE x.industry END,
           size = CASE WHEN v ? 'size' THEN v ->> 'size' ELSE x.size END,
           location = CASE WHEN v ? 'location' THEN v ->> 'location' ELSE x.location END,
           website = CASE WHEN v ? 'website' THEN v ->> 'website' ELSE x.website END,
           parent_id = CASE WHEN v ? 'parent_id' THEN (v ->> 'parent_id')::uuid ELSE x.parent_id END,
           custom_fields = CASE WHEN v ? 'custom_fields' THEN x.custom_fields || (v -> 'custom_fields') ELSE x.custom_fields END
     WHERE x.tenant_id = crm_private.tenant_id() AND x.id = update_organization.id AND x.deleted_at IS NULL
    RETURNING * INTO o;
    IF NOT FOUND THEN
        PERFORM crm_private.not_found('organization', 'id', update_organization.id);
    END IF;
    RETURN crm_private.organization_json(o);
END
$$;
COMMENT ON FUNCTION api.update_organization(uuid, jsonb) IS
'Change an organization (PRD F6.3): changes is an object of the fields to set (name, industry, size, location, website, parent_id, custom_fields); null clears an optional field; custom_fields are merged key by key (null removes a key). A parent that would make a cycle is refused (22023). Any role. Returns the organization; P0002 if there is no live organization with this id.';

CREATE FUNCTION crm_private.set_organization_deleted(id uuid, deleted boolean) RETURNS jsonb
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    o crm.organizations;
BEGIN
    PERFORM crm_private.require_permission('workspace.read');
    UPDATE crm.organizations x SET deleted_at = CASE WHEN deleted THEN now() END
     WHERE x.tenant_id = crm_private.tenant_id() AND x.id = set_organization_deleted.id AND (x.deleted_at IS NULL) = deleted
    RETURNING * INTO o;
    IF NOT FOUND THEN
        PERFORM crm_private.not_found(CASE WHEN deleted THEN 'live organization' ELSE 'deleted organization' END, 'id', set_organization_deleted.id);
    END IF;
    RETURN crm_private.organization_json(o);
END
$$;

CREATE FUNCTION api.delete_organization(id uuid) RETURNS jsonb
    LANGUAGE plpgsql VOLATILE SECURITY INVOKER
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    RETURN crm_private.set_organization_deleted(delete_organization.id, true);
END
$$;
COMMENT ON FUNCTION api.delete_organization(uuid) IS
'Soft-delete an organization (PRD F6.4): it leaves the lists, its data stays, restore_organization brings it back. Any role. P0002 if there is no live organization with this id.';

CREATE FUNCTION api.restore_organization(id uuid) RETURNS jsonb
    LANGUAGE plpgsql VOLATILE SECURITY INVOKER
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    RETURN crm_private.set_organization_deleted(restore_organization.id, false);
END
$$;
COMMENT ON FUNCTION api.restore_organization(uuid) IS
'Restore a soft-deleted organization. Any role. P0002 if there is no deleted organization with this id.';

--------------------------------------------------------------------------------------------
-- api: contacts (F7)
--------------------------------------------------------------------------------------------
CREATE FUNCTION api.create_contact(first_name text, last_name text DEFAULT NULL, email text DEFAULT NULL,
                                   phone text DEFAULT NULL, title text DEFAULT NULL, organization_id uuid DEFAULT NULL,
                                   assigned_to uuid DEFAULT NULL, custom_fields jsonb DEFAULT NULL) RETURNS jsonb
    LANGUAGE plpgsql VOLATILE SECURITY INVOKER
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    v jsonb;
    c crm.contacts;
    v_assignee uuid;
BEGIN
    PERFORM crm_private.require_permission('workspace.read');
    v := crm_private.fields_check('contact', 'create', jsonb_strip_nulls(jsonb_build_object(
        'first_name', create_contact.first_name, 'last_name', create_contact.last_name, 'email', create_contact.email,
        'phone', create_contact.phone, 'title', create_contact.title, 'organization_id', create_contact.organization_id,
        'assigned_to', create_contact.assigned_to, 'custom_fields', create_contact.custom_fields)));
    v_assignee := coalesce((v ->> 'assigned_to')::uuid, crm_private.user_id());
    IF v_assignee <> crm_private.user_id() AND NOT crm_private.has_permission('deals.assign') THEN
        RAISE EXCEPTION 'sales reps create contacts for themselves (only managers and admins assign them to others)'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    PERFORM crm_private.require_assignee(v_assignee);
    PERFORM crm_private.require_organization((v ->> 'organization_id')::uuid, 'organization_id');
    PERFORM crm_private.require_unique_email(v ->> 'email', NULL);
    INSERT INTO crm.contacts (tenant_id, first_name, last_name, email, phone, title, organization_id, assigned_to, custom_fields)
    VALUES (crm_private.tenant_id(), v ->> 'first_name', v ->> 'last_name', v ->> 'email', v ->> 'phone', v ->> 'title',
            (v ->> 'organization_id')::uuid, v_assignee, coalesce(v -> 'custom_fields', '{}'::jsonb))
    RETURNING * INTO c;
    RETURN jsonb_build_object('contact', crm_private.contact_json(c),
                              'duplicates', crm_private.contact_duplicates(c.first_name, c.last_name, c.email, c.phone,
                                                                           c.organization_id, c.id));
END
$$;
COMMENT ON FUNCTION api.create_contact(text, text, text, text, text, uuid, uuid, jsonb) IS
'Create a contact (PRD F7.1): first_name (required), last_name, email, phone, title, organization_id, assigned_to (default: the caller; only managers and admins name someone else), custom_fields. The email is unique among the workspace''s live contacts, case-insensitively: 23505 (409) naming the existing contact''s id. Returns {contact, duplicates: [{id, first_name, last_name, email, phone, organization_id, score, reason}]} (likely duplicates by phone, or by a similar name in the same organization or email domain). Any role.';

CREATE FUNCTION api.get_contact(id uuid) RETURNS jsonb
    LANGUAGE plpgsql STABLE SECURITY INVOKER
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    c crm.contacts;
BEGIN
    PERFORM crm_private.require_permission('workspace.read');
    SELECT * INTO c FROM crm.contacts x WHERE x.tenant_id = crm_private.tenant_id() AND x.id = get_contact.id;
    IF NOT FOUND THEN
        PERFORM crm_private.not_found('contact', 'id', get_contact.id);
    END IF;
    PERFORM crm_private.log_access('contact.viewed', 'contact', c.id);
    RETURN crm_private.contact_json(c);
END
$$;
COMMENT ON FUNCTION api.get_contact(uuid) IS
'One contact (also a soft-deleted one). Sales reps see the contacts assigned to them, managers and admins all (PRD F9). P0002 if the caller sees none with this id.';

CREATE FUNCTION api.list_contacts(organization_id uuid DEFAULT NULL, assigned_to uuid DEFAULT NULL, sort text DEFAULT 'newest',
                                  deleted boolean DEFAULT false, page_size integer DEFAULT 25, cursor text DEFAULT NULL)
    RETURNS jsonb
    LANGUAGE plpgsql STABLE SECURITY INVOKER
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    v_n integer := crm_private.page_size(list_contacts.page_size);
    v_sort text := coalesce(list_contacts.sort, 'newest');
    v_deleted boolean := coalesce(list_contacts.deleted, false);
    v_after record;
    v_rows jsonb;
    v_next text;
BEGIN
    PERFORM crm_private.require_permission('workspace.read');
    IF v_sort NOT IN ('newest', 'name') THEN
        PERFORM crm_private.bad_sort(ARRAY['newest', 'name']);
    END IF;
    v_after := crm_private.read_cursor(list_contacts.cursor, 'contacts', v_sort);
    IF v_sort = 'newest' THEN
        SELECT coalesce(jsonb_agg(x.j ORDER BY x.rn) FILTER (WHERE x.rn <= v_n), '[]'::jsonb),
               CASE WHEN count(*) > v_n THEN max(crm_private.make_cursor('contacts', 'newest', crm_private.time_key(x.kv), x.kid)) FILTER (WHERE x.rn = v_n) END
          INTO v_rows, v_next
          FROM (SELECT row_number() OVER (ORDER BY c.created_at DESC, c.id DESC) AS rn, crm_private.contact_json(c) AS j,
                       c.created_at AS kv, c.id AS kid
                  FROM crm.contacts c
                 WHERE c.tenant_id = crm_private.tenant_id() AND (c.deleted_at IS NOT NULL) = v_deleted
                   AND (list_contacts.organization_id IS NULL OR c.organization_id = list_contacts.organization_id)
                   AND (list_contacts.assigned_to IS NULL OR c.assigned_to = list_contacts.assigned_to)
                   AND (v_after.id IS NULL OR (c.created_at, c.id) < (v_after.value::timestamptz, v_after.id))
                 ORDER BY c.created_at DESC, c.id DESC LIMIT v_n + 1) x;
    ELSE
        SELECT coalesce(jsonb_agg(x.j ORDER BY x.rn) FILTER (WHERE x.rn <= v_n), '[]'::jsonb),
               CASE WHEN count(*) > v_n THEN max(crm_private.make_cursor('contacts', 'name', x.kv, x.kid)) FILTER (WHERE x.rn = v_n) END
          INTO v_rows, v_next
          FROM (SELECT row_number() OVER (ORDER BY c.sort_name, c.id) AS rn, crm_private.contact_json(c) AS j,
                       c.sort_name AS kv, c.id AS kid
                  FROM crm.contacts c
                 WHERE c.tenant_id = crm_private.tenant_id() AND (c.deleted_at IS NOT NULL) = v_deleted
                   AND (list_contacts.organization_id IS NULL OR c.organization_id = list_contacts.organization_id)
                   AND (list_contacts.assigned_to IS NULL OR c.assigned_to = list_contacts.assigned_to)
                   AND (v_after.id IS NULL OR (c.sort_name, c.id) > (v_after.value, v_after.id))
                 ORDER BY c.sort_name, c.id LIMIT v_n + 1) x;
    END IF;
    RETURN jsonb_build_object('data', v_rows, 'next_cursor', v_next);
END
$$;
COMMENT ON FUNCTION api.list_contacts(uuid, uuid, text, boolean, integer, text) IS
'The contacts the caller sees (reps: assigned to them; managers and admins: all): {data, next_cursor}. Filters organization_id, assigned_to. sort: newest (default) or name (last name, first name). deleted: true lists the soft-deleted ones instead. page_size 1-100 (default 25); pass next_cursor back as cursor.';

-- The contacts the request sees that match a search, best first after the cursor (rank,
-- id), at most `n`: see the note on RLS and trigram operators above.
--
-- What is looked up depends on q, never on the cursor, so every page of one search comes
-- from the same set:
-- - an email (q has an @) that a visible contact has exactly: that contact, by the unique
--   email index;
-- - a phone number (digits is set when q is 4 or more digits and punctuation): the contacts
--   whose phone ends in q's last ten digits (ten or more: the phone index), or whose text
--   contains q's digits (fewer: the trigram index);
-- - otherwise text: the contacts whose name, email or phone digits contain q, and the
--   contacts of the organizations whose name contains it (the trigram indexes, exact
--   substrings). Only when fewer than 10 contacts match so are similar words looked for too
--   (typos): word similarity >= 0.6, or >= 0.5 when that finds fewer than 10 records. The
--   comparison reads every record that shares a few trigrams with q, so it is kept for when
--   it is needed and as strict as it can be (measured on 200,000 contacts: 'carar' at 0.5
--   reads 16,000 rows in 320 ms where the substring search reads 750 rows in 3.5 ms;
--   'bersn' at 0.5 31,000 rows in 310 ms, at 0.6 2,400 in 38 ms).
-- Ranks: an exact email 1; q at the start of a word 0.95; q inside a word 0.9; a similar
-- word its similarity, at most 0.85; through the organization 0.8 x the organization's rank.
CREATE FUNCTION crm_private.contact_search(q text, pattern text, digits text, after_rank numeric, after_id uuid, n integer)
    RETURNS TABLE (id uuid, contact jsonb, rank numeric)
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    SET pg_trgm.word_similarity_threshold = 0.6
    SET enable_seqscan = off
    SET plan_cache_mode = force_custom_plan
    AS $$
DECLARE
    v_tenant uuid := crm_private.tenant_id();
    v_first uuid := crm_private.first_visible_assignee();
    v_last uuid := crm_private.last_visible_assignee();
    -- pattern is '%' || q (escaped) || '%'; with a space in front, q starts a word.
    v_word text := '% ' || substr(pattern, 2);
    v_digits text := btrim(digits, '%');
    v_ids uuid[];
    v_ranks numeric[];
    v_small boolean;
BEGIN
    IF strpos(q, '@') > 0 AND EXISTS (
            SELECT 1 FROM crm.contacts c
             WHERE c.tenant_id = v_tenant AND lower(c.email) = q AND c.deleted_at IS NULL
               AND c.assigned_to BETWEEN v_first AND v_last) THEN
        RETURN QUERY
        SELECT c.id, crm_private.contact_json(c), 1.000
          FROM crm.contacts c
         WHERE c.tenant_id = v_tenant AND lower(c.email) = q AND c.deleted_at IS NULL
           AND c.assigned_to BETWEEN v_first AND v_last
           AND (after_id IS NULL OR after_rank > 1.000 OR (after_rank = 1.000 AND c.id > after_id));
        RETURN;
    END IF;
    -- A tenant of fewer than 2,000 contacts is read row by row through its btree (LIKE is
    -- cheap) rather than through the trigram indexes, whose posting lists hold every tenant's
    -- rows: 27 matches among 1,131 contacts took 4.4 ms by trigrams and 0.25 ms by rows. The
    -- `|| ''` keeps the planner off the trigram index.
    v_small := (SELECT count(*) FROM (SELECT 1 FROM crm.contacts c WHERE c.tenant_id = v_tenant LIMIT 2000) x) < 2000;
    IF digits IS NOT NULL THEN
        RETURN QUERY
        SELECT c.id, crm_private.contact_json(c), 0.950
          FROM crm.contacts c
         WHERE c.tenant_id = v_tenant AND c.deleted_at IS NULL AND c.assigned_to BETWEEN v_first AND v_last
           AND CASE WHEN length(v_digits) >= 10 THEN right(c.phone_digits, 10) = v_digits WHEN v_small THEN (c.search_text || '') LIKE digits ELSE c.search_text LIKE digits END
           AND (after_id IS NULL OR after_rank > 0.950 OR (after_rank = 0.950 AND c.id > after_id))
         ORDER BY c.id LIMIT n;
        RETURN;
    END IF;
    -- The substring matches, read once: the contacts whose text contains q and those of the
    -- organizations whose name does, each with its best rank.
    SELECT coalesce(array_agg(b.id), '{}'), coalesce(array_agg(b.s), '{}') INTO v_ids, v_ranks
      FROM (SELECT h.id, max(h.s) AS s
              FROM (SELECT c.id, CASE WHEN lower(c.email) = q THEN 1.0 WHEN ' ' || c.search_text LIKE v_word THEN 0.95 ELSE 0.9 END AS s
                      FROM crm.contacts c
                     WHERE c.tenant_id = v_tenant AND c.deleted_at IS NULL AND c.assigned_to BETWEEN v_first AND v_last
                       AND CASE WHEN v_small THEN (c.search_text || '') LIKE pattern ELSE c.search_text LIKE pattern END
                    UNION ALL
                    SELECT c.id, 0.8 * CASE WHEN ' ' || lower(o.name) LIKE v_word THEN 0.95 ELSE 0.9 END
                      FROM crm.organizations o JOIN crm.contacts c ON c.tenant_id = v_tenant AND c.organization_id = o.id
                     WHERE o.tenant_id = v_tenant AND o.deleted_at IS NULL
                       AND CASE WHEN v_small THEN (lower(o.name) || '') LIKE pattern ELSE lower(o.name) LIKE pattern END
                       AND c.deleted_at IS NULL AND c.assigned_to BETWEEN v_first AND v_last) h
             GROUP BY h.id) b;
    IF cardinality(v_ids) < 10 THEN
        -- Similar words too: at 0.6, or at 0.5 when 0.6 finds fewer than 10 records.
        IF (SELECT count(*) FROM (SELECT 1 FROM crm.contacts c
                                   WHERE c.tenant_id = v_tenant AND q <% c.search_text AND c.deleted_at IS NULL
                                     AND c.assigned_to BETWEEN v_first AND v_last LIMIT 10) x)
           + (SELECT count(*) FROM (SELECT 1 FROM crm.organizations o
                                     WHERE o.tenant_id = v_tenant AND q <% lower(o.name) AND o.deleted_at IS NULL LIMIT 10) x) < 10 THEN
            PERFORM set_config('pg_trgm.word_similarity_threshold', '0.5', true);
        END IF;
        SELECT coalesce(array_agg(b.id), '{}'), coalesce(array_agg(b.s), '{}') INTO v_ids, v_ranks
          FROM (SELECT h.id, max(h.s) AS s
                  FROM (SELECT u.id, u.s FROM unnest(v_ids, v_ranks) u(id, s)
                        UNION ALL
                        SELECT c.id, least(word_similarity(q, c.search_text)::numeric, 0.85)
                          FROM crm.contacts c
                         WHERE c.tenant_id = v_tenant AND c.deleted_at IS NULL AND c.assigned_to BETWEEN v_first AND v_last
                           AND q <% c.search_text
                        UNION ALL
                        SELECT c.id, 0.8 * least(word_similarity(q, lower(o.name))::numeric, 0.85)
                          FROM crm.organizations o JOIN crm.contacts c ON c.tenant_id = v_tenant AND c.organization_id = o.id
                         WHERE o.tenant_id = v_tenant AND o.deleted_at IS NULL AND q <% lower(o.name)
                           AND c.deleted_at IS NULL AND c.assigned_to BETWEEN v_first AND v_last) h
                 GROUP BY h.id) b;
    END IF;
    RETURN QUERY
    WITH page AS (
        SELECT b.id, b.score
          FROM (SELECT u.id, round(u.s::numeric, 3) AS score FROM unnest(v_ids, v_ranks) u(id, s)) b
         WHERE after_id IS NULL OR b.score < after_rank OR (b.score = after_rank AND b.id > after_id)
         ORDER BY b.score DESC, b.id LIMIT n)
    -- Only the page's rows are read again, for their JSON.
    SELECT p.id, crm_private.contact_json(c), p.score
      FROM page p JOIN crm.contacts c ON c.tenant_id = v_tenant AND c.id = p.id
     ORDER BY p.score DESC, p.id;
END
$$;
COMMENT ON FUNCTION crm_private.contact_search(text, text, text, numeric, uuid, integer) IS 'api.search_contacts'' matches: the live contacts the request sees (tenant and assignee rule of the contacts policy) whose name, email, phone or organization match, ranked, at most n after the cursor.';

CREATE FUNCTION api.search_contacts(q text, page_size integer DEFAULT 25, cursor text DEFAULT NULL) RETURNS jsonb
    LANGUAGE plpgsql STABLE SECURITY INVOKER
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    v_n integer := crm_private.page_size(search_contacts.page_size);
    v_q text := lower(btrim(coalesce(q, '')));
    v_like text;
    v_digits text;
    v_after record;
    v_rows jsonb;
    v_next text;
BEGIN
    PERFORM crm_private.require_permission('workspace.read');
    IF char_length(v_q) < 2 OR char_length(v_q) > 200 THEN
        RAISE EXCEPTION 'invalid q: search for 2 to 200 characters' USING ERRCODE = 'invalid_parameter_value', DETAIL = 'field: q';
    END IF;
    v_like := '%' || replace(replace(replace(v_q, '\', '\\'), '%', '\%'), '_', '\_') || '%';
    v_digits := nullif(regexp_replace(v_q, '[^0-9]', '', 'g'), '');
    IF length(v_digits) < 4 OR v_q ~ '[a-z]' THEN
        v_digits := NULL;
    ELSE
        v_digits := '%' || right(v_digits, 10) || '%';
    END IF;
    v_after := crm_private.read_cursor(search_contacts.cursor, 'search_contacts:' || md5(v_q), 'rank');
    SELECT coalesce(jsonb_agg(h.contact || jsonb_build_object('rank', h.rank) ORDER BY h.rank DESC, h.id)
                        FILTER (WHERE h.n <= v_n), '[]'::jsonb),
           max(crm_private.make_cursor('search_contacts:' || md5(v_q), 'rank', h.rank::text, h.id)) FILTER (WHERE h.n = v_n AND h.more)
      INTO v_rows, v_next
      FROM (SELECT x.*, row_number() OVER (ORDER BY x.rank DESC, x.id) AS n, count(*) OVER () > v_n AS more
              FROM crm_private.contact_search(v_q, v_like, v_digits, v_after.value::numeric, v_after.id, v_n + 1) x) h;
    -- The access log: how many contacts the search showed, and the first ten (ids only: the
    -- query may name a person).
    PERFORM crm_private.log_access('contacts.searched', 'contact', NULL,
        jsonb_build_object('results', jsonb_array_length(v_rows),
                           'result_ids', (SELECT coalesce(jsonb_agg(r.value -> 'id'), '[]')
                                            FROM jsonb_array_elements(v_rows) WITH ORDINALITY r WHERE r.ordinality <= 10)));
    RETURN jsonb_build_object('data', v_rows, 'next_cursor', v_next);
END
$$;
COMMENT ON FUNCTION api.search_contacts(text, integer, text) IS
'Search the contacts the caller sees by name, email, phone or company in one call (PRD F7.3), best match first: {data: [{...contact, rank}], next_cursor}. A fragment matches anywhere in a name, email or company (rank 0.95 at the start of a word, 0.9 inside one, 0.8x through the company); when fewer than 10 records contain it, similar words are found too (typos, rank up to 0.85). A complete email finds its contact (rank 1). Phone numbers are compared as digits, so +1 (555) 010-0200 finds 5550100200 (ten or more digits: the last ten must match). q: 2-200 characters. page_size 1-100 (default 25); pass next_cursor back with the same q.';

CREATE FUNCTION api.update_contact(id uuid, changes jsonb) RETURNS jsonb
    LANGUAGE plpgsql VOLATILE SECURITY INVOKER
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    v jsonb;
    c crm.contacts;
BEGIN
    PERFORM crm_private.require_permission('workspace.read');
    v := crm_private.fields_check('contact', 'update', changes);
    IF v ? 'organization_id' THEN
        PERFORM crm_private.require_organization((v ->> 'organization_id')::uuid, 'organization_id');
    END IF;
    IF v ->> 'email' IS NOT NULL THEN
        PERFORM crm_private.require_unique_email(v ->> 'email', update_contact.id);
    END IF;
    UPDATE crm.contacts x
       SET first_name = CASE WHEN v ? 'first_name' THEN v ->> 'first_name' ELSE x.first_name END,
           last_name = CASE WHEN v ? 'last_name' THEN v ->> 'last_name' ELSE x.last_name END,
           email = CASE WHEN v ? 'email' THEN v ->> 'email' ELSE x.email END,
           phone = CASE WHEN v ? 'phone' THEN v ->> 'phone' ELSE x.phone END,
           title = CASE WHEN v ? 'title' THEN v ->> 'title' ELSE x.title END,
           organization_id = CASE WHEN v ? 'organization_id' THEN (v ->> 'organization_id')::uuid ELSE x.organization_id END,
           custom_fields = CASE WHEN v ? 'custom_fields' THEN x.custom_fields || (v -> 'custom_fields') ELSE x.custom_fields END
     WHERE x.tenant_id = crm_private.tenant_id() AND x.id = update_contact.id AND x.deleted_at IS NULL
    RETURNING * INTO c;
    IF NOT FOUND THEN
        PERFORM crm_private.not_found('contact', 'id', update_contact.id);
    END IF;
    RETURN crm_private.contact_json(c);
END
$$;
COMMENT ON FUNCTION api.update_contact(uuid, jsonb) IS
'Change a contact (PRD F7.4): changes is an object of the fields to set (first_name, last_name, email, phone, title, organization_id, custom_fields); null clears an optional field; custom_fields are merged key by key. assigned_to changes with assign_contact. 23505 if the email belongs to another live contact. Returns the contact; P0002 if the caller sees no live contact with this id.';

CREATE FUNCTION api.assign_contact(id uuid, assigned_to uuid) RETURNS jsonb
    LANGUAGE plpgsql VOLATILE SECURITY INVOKER
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    c crm.contacts;
BEGIN
    PERFORM crm_private.require_permission('deals.assign');
    PERFORM crm_private.require_assignee(assign_contact.assigned_to);
    UPDATE crm.contacts x SET assigned_to = assign_contact.assigned_to
     WHERE x.tenant_id = crm_private.tenant_id() AND x.id = assign_contact.id AND x.deleted_at IS NULL
    RETURNING * INTO c;
    IF NOT FOUND THEN
        PERFORM crm_private.not_found('contact', 'id', assign_contact.id);
    END IF;
    RETURN crm_private.contact_json(c);
END
$$;
COMMENT ON FUNCTION api.assign_contact(uuid, uuid) IS
'Reassign a contact to an active member (PRD F8.6, F9.5): managers and admins only (42501 otherwise); recorded with who, when, from and to; the contact''s activities follow it. Returns the contact; P0002 if no such contact or active member.';

CREATE FUNCTION crm_private.set_contact_deleted(id uuid, deleted boolean) RETURNS jsonb
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    c crm.contacts;
BEGIN
    PERFORM crm_private.require_permission('workspace.read');
    IF NOT deleted THEN
        SELECT * INTO c FROM crm.contacts x
         WHERE x.tenant_id = crm_private.tenant_id() AND x.id = set_contact_deleted.id AND x.deleted_at IS NOT NULL;
        IF FOUND THEN
            PERFORM crm_private.require_unique_email(c.email, c.id);
        END IF;
    END IF;
    UPDATE crm.contacts x SET deleted_at = CASE WHEN deleted THEN now() END
     WHERE x.tenant_id = crm_private.tenant_id() AND x.id = set_contact_deleted.id AND (x.deleted_at IS NULL) = deleted
    RETURNING * INTO c;
    IF NOT FOUND THEN
        PERFORM crm_private.not_found(CASE WHEN deleted THEN 'live contact' ELSE 'deleted contact' END, 'id', set_contact_deleted.id);
    END IF;
    RETURN crm_private.contact_json(c);
END
$$;

CREATE FUNCTION api.delete_contact(id uuid) RETURNS jsonb
    LANGUAGE plpgsql VOLATILE SECURITY INVOKER
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    RETURN crm_private.set_contact_deleted(delete_contact.id, true);
END
$$;
COMMENT ON FUNCTION api.delete_contact(uuid) IS
'Soft-delete a contact (PRD F7.5): it leaves lists and search, its data and activities stay, and its email is free again. Whoever sees it. P0002 if the caller sees no live contact with this id.';

CREATE FUNCTION api.restore_contact(id uuid) RETURNS jsonb
    LANGUAGE plpgsql VOLATILE SECURITY INVOKER
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    RETURN crm_private.set_contact_deleted(restore_contact.id, false);
END
$$;
COMMENT ON FUNCTION api.restore_contact(uuid) IS
'Restore a soft-deleted contact; 23505 if a live contact has taken its email meanwhile. Whoever sees it. P0002 if the caller sees no deleted contact with this id.';

CREATE FUNCTION api.find_duplicate_contacts(id uuid DEFAULT NULL, first_name text DEFAULT NULL, last_name text DEFAULT NULL,
                                            email text DEFAULT NULL, phone text DEFAULT NULL, organization_id uuid DEFAULT NULL)
    RETURNS jsonb
    LANGUAGE plpgsql STABLE SECURITY INVOKER
    SET search_path = pg_catalog, pg_temp
    SET pg_trgm.word_similarity_threshold = 0.5
    AS $$
DECLARE
    c crm.contacts;
BEGIN
    PERFORM crm_private.require_permission('workspace.read');
    IF find_duplicate_contacts.id IS NOT NULL THEN
        SELECT * INTO c FROM crm.contacts x WHERE x.tenant_id = crm_private.tenant_id() AND x.id = find_duplicate_contacts.id;
        IF NOT FOUND THEN
            PERFORM crm_private.not_found('contact', 'id', find_duplicate_contacts.id);
        END IF;
        RETURN jsonb_build_object('data', crm_private.contact_duplicates(c.first_name, c.last_name, c.email, c.phone,
                                                                         c.organization_id, c.id));
    END IF;
    IF num_nonnulls(first_name, last_name, email, phone) = 0 THEN
        RAISE EXCEPTION 'invalid id: give a contact''s id, or the fields of a contact to check' USING ERRCODE = 'invalid_parameter_value',
            DETAIL = 'field: id';
    END IF;
    RETURN jsonb_build_object('data', crm_private.contact_duplicates(find_duplicate_contacts.first_name, find_duplicate_contacts.last_name,
        find_duplicate_contacts.email, find_duplicate_contacts.phone, find_duplicate_contacts.organization_id, NULL));
END
$$;
COMMENT ON FUNCTION api.find_duplicate_contacts(uuid, text, text, text, text, uuid) IS
'Likely duplicates, among the contacts the caller sees, of an existing contact (id) or of one about to be created (first_name, last_name, email, phone, organization_id): {data: [{id, first_name, last_name, email, phone, organization_id, score, reason}]}, best first. Reasons: same_email, same_phone, similar_name_same_organization, similar_name_same_email_domain.';

-- Activities move only through here: the merged contact must already be marked as merged
-- into the kept one (the immutability trigger checks the same).
CREATE FUNCTION crm_private.move_activities(from_contact uuid, to_contact uuid) RETURNS integer
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    v_moved integer;
BEGIN
    PERFORM crm_private.require_permission('records.read_all');
    UPDATE crm.activities a SET contact_id = to_contact,
           contact_owner = (SELECT c.assigned_to FROM crm.contacts c WHERE c.tenant_id = a.tenant_id AND c.id = to_contact)
     WHERE a.tenant_id = crm_private.tenant_id() AND a.contact_id = from_contact
       AND EXISTS (SELECT 1 FROM crm.contacts m WHERE m.tenant_id = crm_private.tenant_id() AND m.id = from_contact
                      AND m.merged_into = to_contact);
    GET DIAGNOSTICS v_moved = ROW_COUNT;
    RETURN v_moved;
END
$$;
COMMENT ON FUNCTION crm_private.move_activities(uuid, uuid) IS 'For api.merge_contacts: moves a merged contact''s activities to the contact it was merged into.';

CREATE FUNCTION api.merge_contacts(keep_id uuid, merge_id uuid) RETURNS jsonb
    LANGUAGE plpgsql VOLATILE SECURITY INVOKER
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    k crm.contacts;
    m crm.contacts;
    v_deals integer;
    v_activities integer;
BEGIN
    PERFORM crm_private.require_permission('records.read_all');
    IF keep_id = merge_id THEN
        RAISE EXCEPTION 'invalid merge_id: a contact cannot be merged into itself' USING ERRCODE = 'invalid_parameter_value',
            DETAIL = 'field: merge_id';
    END IF;
    SELECT * INTO k FROM crm.contacts x WHERE x.tenant_id = crm_private.tenant_id() AND x.id = keep_id AND x.deleted_at IS NULL FOR UPDATE;
    IF NOT FOUND THEN
        PERFORM crm_private.not_found('contact', 'keep_id', keep_id);
    END IF;
    SELECT * INTO m FROM crm.contacts x WHERE x.tenant_id = crm_private.tenant_id() AND x.id = merge_id AND x.deleted_at IS NULL FOR UPDATE;
    IF NOT FOUND THEN
        PERFORM crm_private.not_found('contact', 'merge_id', merge_id);
    END IF;
    UPDATE crm.contacts x SET merged_into = keep_id, deleted_at = now()
     WHERE x.tenant_id = crm_private.tenant_id() AND x.id = merge_id;
    UPDATE crm.deals d SET contact_id = keep_id WHERE d.tenant_id = crm_private.tenant_id() AND d.contact_id = merge_id;
    GET DIAGNOSTICS v_deals = ROW_COUNT;
    v_activities := crm_private.move_activities(merge_id, keep_id);
    -- What the kept contact lacks, the merged one fills in.
    UPDATE crm.contacts x
       SET last_name = coalesce(x.last_name, m.last_name), email = coalesce(x.email, m.email),
           phone = coalesce(x.phone, m.phone), title = coalesce(x.title, m.title),
           organization_id = coalesce(x.organization_id, m.organization_id)
     WHERE x.tenant_id = crm_private.tenant_id() AND x.id = keep_id
    RETURNING * INTO k;
    RETURN jsonb_build_object('contact', crm_private.contact_json(k), 'merged_id', merge_id,
                              'moved_deals', v_deals, 'moved_activities', v_activities);
END
$$;
COMMENT ON FUNCTION api.merge_contacts(uuid, uuid) IS
'Merge a duplicate contact into another: its deals and activities move to the kept contact, fields the kept one lacks are filled from it, and the merged contact is soft-deleted with merged_into set (recorded). Managers and admins (records.read_all; 42501 otherwise). Returns {contact, merged_id, moved_deals, moved_activities}; P0002 naming keep_id or merge_id if the caller sees no such live contact.';

--------------------------------------------------------------------------------------------
-- api: deals (F8)
--------------------------------------------------------------------------------------------
CREATE FUNCTION crm_private.require_stage(stage text) RETURNS void
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    IF stage IS NULL OR NOT EXISTS (SELECT 1 FROM crm.pipeline_stages s
                                     WHERE s.tenant_id = crm_private.tenant_id() AND s.key = require_stage.stage) THEN
        RAISE EXCEPTION 'invalid stage: no stage % in this workspace', coalesce(quote_literal(stage), 'NULL')
            USING ERRCODE = 'invalid_parameter_value', DETAIL = 'field: stage', HINT = 'list_pipeline_stages() names them';
    END IF;
END
$$;

CREATE FUNCTION api.create_deal(name text, amount numeric DEFAULT NULL, currency text DEFAULT NULL, stage text DEFAULT NULL,
                                probability integer DEFAULT NULL, expected_close_date date DEFAULT NULL,
                                contact_id uuid DEFAULT NULL, organization_id uuid DEFAULT NULL, assigned_to uuid DEFAULT NULL,
                                notes text DEFAULT NULL, custom_fields jsonb DEFAULT NULL) RETURNS jsonb
    LANGUAGE plpgsql VOLATILE SECURITY INVOKER
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    v jsonb;
    d crm.deals;
    v_assignee uuid;
BEGIN
    PERFORM crm_private.require_permission('workspace.read');
    v := crm_private.fields_check('deal', 'create', jsonb_strip_nulls(jsonb_build_object(
        'name', create_deal.name, 'amount', create_deal.amount, 'currency', create_deal.currency, 'stage', create_deal.stage,
        'probability', create_deal.probability, 'expected_close_date', create_deal.expected_close_date,
        'contact_id', create_deal.contact_id, 'organization_id', create_deal.organization_id,
        'assigned_to', create_deal.assigned_to, 'notes', create_deal.notes, 'custom_fields', create_deal.custom_fields)));
    v_assignee := coalesce((v ->> 'assigned_to')::uuid, crm_private.user_id());
    IF v_assignee <> crm_private.user_id() AND NOT crm_private.has_permission('deals.assign') THEN
        RAISE EXCEPTION 'sales reps create deals for themselves (only managers and admins assign them to others)'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    PERFORM crm_private.require_assignee(v_assignee);
    IF v ? 'stage' THEN
        PERFORM crm_private.require_stage(v ->> 'stage');
    END IF;
    PERFORM crm_private.require_contact((v ->> 'contact_id')::uuid, 'contact_id');
    PERFORM crm_private.require_organization((v ->> 'organization_id')::uuid, 'organization_id');
    INSERT INTO crm.deals (tenant_id, name, amount, currency, stage, probability, expected_close_date, contact_id,
                           organization_id, assigned_to, notes, custom_fields)
    VALUES (crm_private.tenant_id(), v ->> 'name', coalesce((v ->> 'amount')::numeric, 0), coalesce(v ->> 'currency', 'USD'),
            v ->> 'stage', (v ->> 'probability')::smallint, (v ->> 'expected_close_date')::date, (v ->> 'contact_id')::uuid,
            (v ->> 'organization_id')::uuid, v_assignee, v ->> 'notes', coalesce(v -> 'custom_fields', '{}'::jsonb))
    RETURNING * INTO d;
    RETURN crm_private.deal_json(d);
END
$$;
COMMENT ON FUNCTION api.create_deal(text, numeric, text, text, integer, date, uuid, uuid, uuid, text, jsonb) IS
'Create a deal (PRD F8.1): name (required), amount (>= 0, 2 decimals; default 0), currency (ISO 4217, default USD), stage (a key of list_pipeline_stages(); default the first open stage), probability (0-100; default the stage''s), expected_close_date, contact_id, organization_id, assigned_to (default the caller; only managers and admins name someone else), notes, custom_fields. The first stage is recorded in the deal''s history. Returns the deal. 22023 naming the field for bad input; P0002 naming contact_id or organization_id if the caller sees no such record.';

CREATE FUNCTION api.get_deal(id uuid) RETURNS jsonb
    LANGUAGE plpgsql STABLE SECURITY INVOKER
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    d crm.deals;
BEGIN
    PERFORM crm_private.require_permission('workspace.read');
    SELECT * INTO d FROM crm.deals x WHERE x.tenant_id = crm_private.tenant_id() AND x.id = get_deal.id;
    IF NOT FOUND THEN
        PERFORM crm_private.not_found('deal', 'id', get_deal.id);
    END IF;
    PERFORM crm_private.log_access('deal.viewed', 'deal', d.id);
    RETURN crm_private.deal_json(d);
END
$$;
COMMENT ON FUNCTION api.get_deal(uuid) IS
'One deal (also a soft-deleted one). Sales reps see the deals assigned to them, managers and admins all. P0002 if the caller sees none with this id.';

CREATE FUNCTION api.list_deals(stage text DEFAULT NULL, assigned_to uuid DEFAULT NULL, organization_id uuid DEFAULT NULL,
                               contact_id uuid DEFAULT NULL, min_probability integer DEFAULT NULL,
                               max_probability integer DEFAULT NULL, close_from date DEFAULT NULL, close_to date DEFAULT NULL,
                               sort text DEFAULT 'newest', deleted boolean DEFAULT false, page_size integer DEFAULT 25,
                               cursor text DEFAULT NULL) RETURNS jsonb
    LANGUAGE plpgsql STABLE SECURITY INVOKER
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    v_n integer := crm_private.page_size(list_deals.page_size);
    v_sort text := coalesce(list_deals.sort, 'newest');
    v_deleted boolean := coalesce(list_deals.deleted, false);
    v_min integer := coalesce(min_probability, 0);
    v_max integer := coalesce(max_probability, 100);
    v_after record;
    v_rows jsonb;
    v_next text;
BEGIN
    PERFORM crm_private.require_permission('workspace.read');
    IF v_sort NOT IN ('newest', 'close_date', 'amount') THEN
        PERFORM crm_private.bad_sort(ARRAY['newest', 'close_date', 'amount']);
    END IF;
    IF list_deals.stage IS NOT NULL THEN
        PERFORM crm_private.require_stage(list_deals.stage);
    END IF;
    IF v_min NOT BETWEEN 0 AND 100 THEN
        RAISE EXCEPTION 'invalid min_probability: 0 to 100' USING ERRCODE = 'invalid_parameter_value', DETAIL = 'field: min_probability';
    END IF;
    IF v_max NOT BETWEEN 0 AND 100 OR v_max < v_min THEN
        RAISE EXCEPTION 'invalid max_probability: 0 to 100, not below min_probability' USING ERRCODE = 'invalid_parameter_value',
            DETAIL = 'field: max_probability';
    END IF;
    IF close_to < close_from THEN
        RAISE EXCEPTION 'invalid close_to: before close_from' USING ERRCODE = 'invalid_parameter_value', DETAIL = 'field: close_to';
    END IF;
    v_after := crm_private.read_cursor(list_deals.cursor, 'deals', v_sort);
    IF v_sort = 'newest' THEN
        SELECT coalesce(jsonb_agg(x.j ORDER BY x.rn) FILTER (WHERE x.rn <= v_n), '[]'::jsonb),
               CASE WHEN count(*) > v_n THEN max(crm_private.make_cursor('deals', 'newest', crm_private.time_key(x.kv), x.kid)) FILTER (WHERE x.rn = v_n) END
          INTO v_rows, v_next
          FROM (SELECT row_number() OVER (ORDER BY d.created_at DESC, d.id DESC) AS rn, crm_private.deal_json(d) AS j,
                       d.created_at AS kv, d.id AS kid
                  FROM crm.deals d
                 WHERE d.tenant_id = crm_private.tenant_id() AND (d.deleted_at IS NOT NULL) = v_deleted
                   AND (list_deals.stage IS NULL OR d.stage = list_deals.stage)
                   AND (list_deals.assigned_to IS NULL OR d.assigned_to = list_deals.assigned_to)
                   AND (list_deals.organization_id IS NULL OR d.organization_id = list_deals.organization_id)
                   AND (list_deals.contact_id IS NULL OR d.contact_id = list_deals.contact_id)
                   AND d.probability BETWEEN v_min AND v_max
                   AND (close_from IS NULL OR d.expected_close_date >= close_from)
                   AND (close_to IS NULL OR d.expected_close_date <= close_to)
                   AND (v_after.id IS NULL OR (d.created_at, d.id) < (v_after.value::timestamptz, v_after.id))
                 ORDER BY d.created_at DESC, d.id DESC LIMIT v_n + 1) x;
    ELSIF v_sort = 'close_date' THEN
        SELECT coalesce(jsonb_agg(x.j ORDER BY x.rn) FILTER (WHERE x.rn <= v_n), '[]'::jsonb),
               CASE WHEN count(*) > v_n THEN max(crm_private.make_cursor('deals', 'close_date', x.kv, x.kid)) FILTER (WHERE x.rn = v_n) END
          INTO v_rows, v_next
          FROM (SELECT row_number() OVER (ORDER BY coalesce(d.expected_close_date, 'infinity'::date), d.id) AS rn,
                       crm_private.deal_json(d) AS j,
                       to_char(coalesce(d.expected_close_date, 'infinity'::date), 'YYYY-MM-DD') AS kv, d.id AS kid
                  FROM crm.deals d
                 WHERE d.tenant_id = crm_private.tenant_id() AND (d.deleted_at IS NOT NULL) = v_deleted
                   AND (list_deals.stage IS NULL OR d.stage = list_deals.stage)
                   AND (list_deals.assigned_to IS NULL OR d.assigned_to = list_deals.assigned_to)
                   AND (list_deals.organization_id IS NULL OR d.organization_id = list_deals.organization_id)
                   AND (list_deals.contact_id IS NULL OR d.contact_id = list_deals.contact_id)
                   AND d.probability BETWEEN v_min AND v_max
                   AND (close_from IS NULL OR d.expected_close_date >= close_from)
                   AND (close_to IS NULL OR d.expected_close_date <= close_to)
                   AND (v_after.id IS NULL OR (coalesce(d.expected_close_date, 'infinity'::date), d.id)
                                               > (CASE WHEN v_after.value ~ '^\d{4}-' THEN v_after.value::date ELSE 'infinity'::date END, v_after.id))
                 ORDER BY coalesce(d.expected_close_date, 'infinity'::date), d.id LIMIT v_n + 1) x;
    ELSE
        SELECT coalesce(jsonb_agg(x.j ORDER BY x.rn) FILTER (WHERE x.rn <= v_n), '[]'::jsonb),
               CASE WHEN count(*) > v_n THEN max(crm_private.make_cursor('deals', 'amount', x.kv, x.kid)) FILTER (WHERE x.rn = v_n) END
          INTO v_rows, v_next
          FROM (SELECT row_number() OVER (ORDER BY d.amount DESC, d.id DESC) AS rn, crm_private.deal_json(d) AS j,
                       d.amount::text AS kv, d.id AS kid
                  FROM crm.deals d
                 WHERE d.tenant_id = crm_private.tenant_id() AND (d.deleted_at IS NOT NULL) = v_deleted
                   AND (list_deals.stage IS NULL OR d.stage = list_deals.stage)
                   AND (list_deals.assigned_to IS NULL OR d.assigned_to = list_deals.assigned_to)
                   AND (list_deals.organization_id IS NULL OR d.organization_id = list_deals.organization_id)
                   AND (list_deals.contact_id IS NULL OR d.contact_id = list_deals.contact_id)
                   AND d.probability BETWEEN v_min AND v_max
                   AND (close_from IS NULL OR d.expected_close_date >= close_from)
                   AND (close_to IS NULL OR d.expected_close_date <= close_to)
                   AND (v_after.id IS NULL OR (d.amount, d.id) < (v_after.value::numeric, v_after.id))
                 ORDER BY d.amount DESC, d.id DESC LIMIT v_n + 1) x;
    END IF;
    RETURN jsonb_build_object('data', v_rows, 'next_cursor', v_next);
END
$$;
COMMENT ON FUNCTION api.list_deals(text, uuid, uuid, uuid, integer, integer, date, date, text, boolean, integer, text) IS
'The deals the caller sees (reps: assigned to them; managers and admins: all), filtered by any combination of stage, assigned_to, organization_id, contact_id, min_probability/max_probability (0-100) and close_from/close_to (expected close date, inclusive) (PRD F8.3): {data, next_cursor}. sort: newest (default), close_date (soonest first, undated last) or amount (largest first). deleted: true lists the soft-deleted ones instead. page_size 1-100 (default 25); pass next_cursor back as cursor with the same sort. 22023 naming the filter for an unknown stage, a probability outside 0-100 or dates in the wrong order.';

CREATE FUNCTION api.update_deal(id uuid, changes jsonb) RETURNS jsonb
    LANGUAGE plpgsql VOLATILE SECURITY INVOKER
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    v jsonb;
    d crm.deals;
BEGIN
    PERFORM crm_private.require_permission('workspace.read');
    v := crm_private.fields_check('deal', 'update', changes);
    IF v ? 'contact_id' THEN
        PERFORM crm_private.require_contact((v ->> 'contact_id')::uuid, 'contact_id');
    END IF;
    IF v ? 'organization_id' THEN
        PERFORM crm_private.require_organization((v ->> 'organization_id')::uuid, 'organization_id');
    END IF;
    IF v ? 'name' AND v ->> 'name' IS NULL OR v ? 'currency' AND v ->> 'currency' IS NULL
       OR v ? 'probability' AND v ->> 'probability' IS NULL THEN
        RAISE EXCEPTION 'invalid changes: name, currency and probability cannot be cleared' USING ERRCODE = 'invalid_parameter_value',
            DETAIL = 'field: changes';
    END IF;
    UPDATE crm.deals x
       SET name = CASE WHEN v ? 'name' THEN v ->> 'name' ELSE x.name END,
           amount = CASE WHEN v ? 'amount' THEN coalesce((v ->> 'amount')::numeric, 0) ELSE x.amount END,
           currency = CASE WHEN v ? 'currency' THEN v ->> 'currency' ELSE x.currency END,
           probability = CASE WHEN v ? 'probability' THEN (v ->> 'probability')::smallint ELSE x.probability END,
           expected_close_date = CASE WHEN v ? 'expected_close_date' THEN (v ->> 'expected_close_date')::date ELSE x.expected_close_date END,
           contact_id = CASE WHEN v ? 'contact_id' THEN (v ->> 'contact_id')::uuid ELSE x.contact_id END,
           organization_id = CASE WHEN v ? 'organization_id' THEN (v ->> 'organization_id')::uuid ELSE x.organization_id END,
           notes = CASE WHEN v ? 'notes' THEN v ->> 'notes' ELSE x.notes END,
           custom_fields = CASE WHEN v ? 'custom_fields' THEN x.custom_fields || (v -> 'custom_fields') ELSE x.custom_fields END
     WHERE x.tenant_id = crm_private.tenant_id() AND x.id = update_deal.id AND x.deleted_at IS NULL
    RETURNING * INTO d;
    IF NOT FOUND THEN
        PERFORM crm_private.not_found('deal', 'id', update_deal.id);
    END IF;
    RETURN crm_private.deal_json(d);
END
$$;
COMMENT ON FUNCTION api.update_deal(uuid, jsonb) IS
'Change a deal (PRD F8.4): changes is an object of the fields to set (name, amount, currency, probability, expected_close_date, contact_id, organization_id, notes, custom_fields); null clears an optional field. The stage changes with move_deal and reopen_deal, the assignee with assign_deal; a won or lost deal keeps its probability. Returns the deal; P0002 if the caller sees no live deal with this id.';

CREATE FUNCTION api.move_deal(id uuid, stage text, reason text DEFAULT NULL, probability integer DEFAULT NULL) RETURNS jsonb
    LANGUAGE plpgsql VOLATILE SECURITY INVOKER
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    d crm.deals;
BEGIN
    PERFORM crm_private.require_permission('workspace.read');
    PERFORM crm_private.require_stage(move_deal.stage);
    -- A NULL probability takes the stage's default (crm_private.deal_stage_rules).
    UPDATE crm.deals x SET stage = move_deal.stage, probability = move_deal.probability,
           lost_reason = nullif(btrim(move_deal.reason), '')
     WHERE x.tenant_id = crm_private.tenant_id() AND x.id = move_deal.id AND x.deleted_at IS NULL
    RETURNING * INTO d;
    IF NOT FOUND THEN
        PERFORM crm_private.not_found('deal', 'id', move_deal.id);
    END IF;
    RETURN crm_private.deal_json(d);
END
$$;
COMMENT ON FUNCTION api.move_deal(uuid, text, text, integer) IS
'Move a deal to another stage (PRD F8.7): entering a stage sets its default probability unless probability (0-100) is given; won sets 100 and the close time; lost needs a reason (1-500 characters) and sets 0; a won or lost deal moves only through reopen_deal. Each move is recorded with who, when, from and to (deal_stage_history). Returns the deal. 22023 naming stage, reason or probability for a move the rules refuse; P0002 if the caller sees no live deal with this id.';

CREATE FUNCTION api.reopen_deal(id uuid, stage text DEFAULT NULL, probability integer DEFAULT NULL) RETURNS jsonb
    LANGUAGE plpgsql VOLATILE SECURITY INVOKER
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    d crm.deals;
    v_stage text := reopen_deal.stage;
BEGIN
    PERFORM crm_private.require_permission('workspace.read');
    SELECT * INTO d FROM crm.deals x
     WHERE x.tenant_id = crm_private.tenant_id() AND x.id = reopen_deal.id AND x.deleted_at IS NULL FOR UPDATE;
    IF NOT FOUND THEN
        PERFORM crm_private.not_found('deal', 'id', reopen_deal.id);
    END IF;
    IF v_stage IS NULL THEN
        -- Back where it was before it closed, or the first open stage.
        v_stage := coalesce(
            (SELECT h.from_stage FROM crm.deal_stage_changes h JOIN crm.pipeline_stages s
                 ON s.tenant_id = h.tenant_id AND s.key = h.from_stage AND s.kind = 'open'
              WHERE h.tenant_id = crm_private.tenant_id() AND h.deal_id = d.id AND h.to_stage = d.stage
              ORDER BY h.changed_at DESC, h.id DESC LIMIT 1),
            (SELECT s.key FROM crm.pipeline_stages s WHERE s.tenant_id = crm_private.tenant_id() AND s.kind = 'open'
              ORDER BY s.position, s.key LIMIT 1));
    ELSE
        PERFORM crm_private.require_stage(v_stage);
    END IF;
    UPDATE crm.deals x SET stage = v_stage, probability = reopen_deal.probability, closed_at = NULL, lost_reason = NULL
     WHERE x.tenant_id = crm_private.tenant_id() AND x.id = d.id
    RETURNING * INTO d;
    RETURN crm_private.deal_json(d);
END
$$;
COMMENT ON FUNCTION api.reopen_deal(uuid, text, integer) IS
'Reopen a won or lost deal into an open stage (default: the stage it closed from), with that stage''s probability unless probability is given; clears the close time and lost reason; recorded in the history. 22023 naming stage if the deal is not closed or the stage is not open; P0002 if the caller sees no live deal with this id.';

CREATE FUNCTION api.assign_deal(id uuid, assigned_to uuid) RETURNS jsonb
    LANGUAGE plpgsql VOLATILE SECURITY INVOKER
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    d crm.deals;
BEGIN
    PERFORM crm_private.require_permission('deals.assign');
    PERFORM crm_private.require_assignee(assign_deal.assigned_to);
    UPDATE crm.deals x SET assigned_to = assign_deal.assigned_to
     WHERE x.tenant_id = crm_private.tenant_id() AND x.id = assign_deal.id AND x.deleted_at IS NULL
    RETURNING * INTO d;
    IF NOT FOUND THEN
        PERFORM crm_private.not_found('deal', 'id', assign_deal.id);
    END IF;
    RETURN crm_private.deal_json(d);
END
$$;
COMMENT ON FUNCTION api.assign_deal(uuid, uuid) IS
'Reassign a deal to an active member (PRD F8.6, F9.5): managers and admins only (42501 otherwise); recorded with who, when, from and to; its activities and history follow it. Returns the deal; P0002 if no such deal or active member.';

CREATE FUNCTION crm_private.set_deal_deleted(id uuid, deleted boolean) RETURNS jsonb
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    d crm.deals;
BEGIN
    PERFORM crm_private.require_permission('workspace.read');
    UPDATE crm.deals x SET deleted_at = CASE WHEN deleted THEN now() END
     WHERE x.tenant_id = crm_private.tenant_id() AND x.id = set_deal_deleted.id AND (x.deleted_at IS NULL) = deleted
    RETURNING * INTO d;
    IF NOT FOUND THEN
        PERFORM crm_private.not_found(CASE WHEN deleted THEN 'live deal' ELSE 'deleted deal' END, 'id', set_deal_deleted.id);
    END IF;
    RETURN crm_private.deal_json(d);
END
$$;

CREATE FUNCTION api.delete_deal(id uuid) RETURNS jsonb
    LANGUAGE plpgsql VOLATILE SECURITY INVOKER
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    RETURN crm_private.set_deal_deleted(delete_deal.id, true);
END
$$;
COMMENT ON FUNCTION api.delete_deal(uuid) IS
'Soft-delete a deal (PRD F8.5): it leaves lists and the pipeline summary; its data and history stay. Whoever sees it. P0002 if the caller sees no live deal with this id.';

CREATE FUNCTION api.restore_deal(id uuid) RETURNS jsonb
    LANGUAGE plpgsql VOLATILE SECURITY INVOKER
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    RETURN crm_private.set_deal_deleted(restore_deal.id, false);
END
$$;
COMMENT ON FUNCTION api.restore_deal(uuid) IS
'Restore a soft-deleted deal. Whoever sees it. P0002 if the caller sees no deleted deal with this id.';

CREATE FUNCTION api.deal_stage_history(id uuid, page_size integer DEFAULT 25, cursor text DEFAULT NULL) RETURNS jsonb
    LANGUAGE plpgsql STABLE SECURITY INVOKER
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    v_n integer := crm_private.page_size(deal_stage_history.page_size);
    v_after record;
    v_rows jsonb;
    v_next text;
BEGIN
    PERFORM crm_private.require_permission('workspace.read');
    IF NOT EXISTS (SELECT 1 FROM crm.deals d WHERE d.tenant_id = crm_private.tenant_id() AND d.id = deal_stage_history.id) THEN
        PERFORM crm_private.not_found('deal', 'id', deal_stage_history.id);
    END IF;
    v_after := crm_private.read_cursor(deal_stage_history.cursor, 'deal_stage_history:' || deal_stage_history.id, 'newest');
    SELECT coalesce(jsonb_agg(x.j ORDER BY x.rn) FILTER (WHERE x.rn <= v_n), '[]'::jsonb),
           CASE WHEN count(*) > v_n THEN max(crm_private.make_cursor('deal_stage_history:' || deal_stage_history.id, 'newest', crm_private.time_key(x.kv), x.kid)) FILTER (WHERE x.rn = v_n) END
      INTO v_rows, v_next
      FROM (SELECT row_number() OVER (ORDER BY h.changed_at DESC, h.id DESC) AS rn,
                   jsonb_build_object('id', h.id, 'from_stage', h.from_stage, 'to_stage', h.to_stage,
                                      'probability', h.probability, 'reason', h.reason, 'changed_by', h.changed_by,
                                      'changed_at', h.changed_at) AS j,
                   h.changed_at AS kv, h.id AS kid
              FROM crm.deal_stage_changes h
             WHERE h.tenant_id = crm_private.tenant_id() AND h.deal_id = deal_stage_history.id
               AND (v_after.id IS NULL OR (h.changed_at, h.id) < (v_after.value::timestamptz, v_after.id))
             ORDER BY h.changed_at DESC, h.id DESC LIMIT v_n + 1) x;
    RETURN jsonb_build_object('data', v_rows, 'next_cursor', v_next);
END
$$;
COMMENT ON FUNCTION api.deal_stage_history(uuid, integer, text) IS
'A deal''s stage changes, newest first (PRD F8.8): {data: [{id, from_stage, to_stage, probability, reason, changed_by, changed_at}], next_cursor}. Whoever sees the deal. P0002 if the caller sees no deal with this id.';

CREATE FUNCTION api.list_pipeline_stages() RETURNS jsonb
    LANGUAGE plpgsql STABLE SECURITY INVOKER
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    PERFORM crm_private.require_permission('workspace.read');
    RETURN jsonb_build_object('data', coalesce((
        SELECT jsonb_agg(jsonb_build_object('key', s.key, 'label', s.label, 'position', s.position,
                                            'default_probability', s.default_probability, 'kind', s.kind)
                         ORDER BY s.position, s.key)
          FROM crm.pipeline_stages s WHERE s.tenant_id = crm_private.tenant_id()), '[]'::jsonb), 'next_cursor', NULL);
END
$$;
COMMENT ON FUNCTION api.list_pipeline_stages() IS
'The workspace''s pipeline in order (PRD F8.7, F8.9): {data: [{key, label, position, default_probability, kind: open|won|lost}], next_cursor: null}. New workspaces start with prospect, qualified, proposal, negotiation, won, lost. Any role.';

CREATE FUNCTION api.pipeline_summary() RETURNS jsonb
    LANGUAGE plpgsql STABLE SECURITY INVOKER
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    PERFORM crm_private.require_permission('workspace.read');
    -- The sums are kept per assignee, stage, currency and open by triggers (deal_totals.sql);
    -- the totals' policy is the deals' one, so these are the sums of the deals the caller sees.
    RETURN jsonb_build_object(
        'by_stage', coalesce((
            SELECT jsonb_agg(jsonb_build_object('stage', s.key, 'label', s.label, 'kind', s.kind, 'position', s.position,
                                                'totals', coalesce(t.totals, '[]'::jsonb)) ORDER BY s.position, s.key)
              FROM crm.pipeline_stages s
              LEFT JOIN (SELECT g.stage, jsonb_agg(jsonb_build_object('currency', g.currency, 'count', g.n, 'total', g.total,
                                                                     'weighted_total', g.weighted) ORDER BY g.currency) AS totals
                           FROM (SELECT d.stage, d.currency, sum(d.deals) AS n, sum(d.amount) AS total,
                                        round(sum(d.weighted), 2) AS weighted
                                   FROM crm.deal_totals d WHERE d.tenant_id = crm_private.tenant_id()
                                  GROUP BY d.stage, d.currency HAVING sum(d.deals) > 0) g
                          GROUP BY g.stage) t ON t.stage = s.key
             WHERE s.tenant_id = crm_private.tenant_id()), '[]'::jsonb),
        'by_owner', coalesce((
            SELECT jsonb_agg(jsonb_build_object('assigned_to', o.assigned_to, 'display_name', m.display_name,
                                                'totals', o.totals) ORDER BY m.display_name, o.assigned_to)
              FROM (SELECT g.assigned_to, jsonb_agg(jsonb_build_object('currency', g.currency, 'count', g.n, 'total', g.total,
                                                                      'weighted_total', g.weighted) ORDER BY g.currency) AS totals
                      FROM (SELECT d.assigned_to, d.currency, sum(d.deals) AS n, sum(d.amount) AS total,
                                   round(sum(d.weighted), 2) AS weighted
                              FROM crm.deal_totals d WHERE d.tenant_id = crm_private.tenant_id() AND d.open
                             GROUP BY d.assigned_to, d.currency HAVING sum(d.deals) > 0) g
                     GROUP BY g.assigned_to) o
              LEFT JOIN core.memberships m ON m.tenant_id = crm_private.tenant_id() AND m.user_id = o.assigned_to), '[]'::jsonb));
END
$$;
COMMENT ON FUNCTION api.pipeline_summary() IS
'The pipeline at a glance (journey 2), over the live deals the caller sees: by_stage (every stage in order, with per-currency {currency, count, total, weighted_total}) and by_owner (open deals per assignee, per currency). weighted_total is the sum of amount x probability / 100. Any role (reps see their own pipeline).';

--------------------------------------------------------------------------------------------
-- api: activities (F10)
--------------------------------------------------------------------------------------------
CREATE FUNCTION api.log_activity(type text, description text, occurred_at timestamptz DEFAULT NULL, contact_id uuid DEFAULT NULL,
                                 deal_id uuid DEFAULT NULL) RETURNS jsonb
    LANGUAGE plpgsql VOLATILE SECURITY INVOKER
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    v jsonb;
    a crm.activities;
BEGIN
    PERFORM crm_private.require_permission('workspace.read');
    v := crm_private.fields_check('activity', 'create', jsonb_strip_nulls(jsonb_build_object(
        'type', log_activity.type, 'description', log_activity.description,
        'occurred_at', to_char(log_activity.occurred_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
        'contact_id', log_activity.contact_id, 'deal_id', log_activity.deal_id)));
    PERFORM crm_private.require_contact(log_activity.contact_id, 'contact_id');
    PERFORM crm_private.require_deal(log_activity.deal_id, 'deal_id');
    INSERT INTO crm.activities (tenant_id, type, description, occurred_at, actor_id, contact_id, deal_id)
    VALUES (crm_private.tenant_id(), v ->> 'type', v ->> 'description', coalesce(log_activity.occurred_at, now()),
            crm_private.user_id(), log_activity.contact_id, log_activity.deal_id)
    RETURNING * INTO a;
    RETURN crm_private.activity_json(a);
END
$$;
COMMENT ON FUNCTION api.log_activity(text, text, timestamptz, uuid, uuid) IS
'Log a call, email, meeting or note (PRD F10.1, F10.2) about a contact (required) and optionally one of its deals: type, description (1-10000 characters), occurred_at (default now). The caller is its actor. Immutable once written (archive_activity hides it). Whoever sees the contact (and the deal). Returns the activity; P0002 naming contact_id or deal_id if the caller sees no such record.';

CREATE FUNCTION api.list_activities(contact_id uuid DEFAULT NULL, deal_id uuid DEFAULT NULL, archived boolean DEFAULT false,
                                    page_size integer DEFAULT 25, cursor text DEFAULT NULL) RETURNS jsonb
    LANGUAGE plpgsql STABLE SECURITY INVOKER
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    v_n integer := crm_private.page_size(list_activities.page_size);
    v_archived boolean := coalesce(list_activities.archived, false);
    v_after record;
    v_rows jsonb;
    v_next text;
BEGIN
    PERFORM crm_private.require_permission('workspace.read');
    IF list_activities.contact_id IS NOT NULL AND NOT EXISTS (
           SELECT 1 FROM crm.contacts c WHERE c.tenant_id = crm_private.tenant_id() AND c.id = list_activities.contact_id) THEN
        PERFORM crm_private.not_found('contact', 'contact_id', list_activities.contact_id);
    END IF;
    IF list_activities.deal_id IS NOT NULL AND NOT EXISTS (
           SELECT 1 FROM crm.deals d WHERE d.tenant_id = crm_private.tenant_id() AND d.id = list_activities.deal_id) THEN
        PERFORM crm_private.not_found('deal', 'deal_id', list_activities.deal_id);
    END IF;
    v_after := crm_private.read_cursor(list_activities.cursor, 'activities', 'newest');
    SELECT coalesce(jsonb_agg(x.j ORDER BY x.rn) FILTER (WHERE x.rn <= v_n), '[]'::jsonb),
           CASE WHEN count(*) > v_n THEN max(crm_private.make_cursor('activities', 'newest', crm_private.time_key(x.kv), x.kid)) FILTER (WHERE x.rn = v_n) END
      INTO v_rows, v_next
      FROM (SELECT row_number() OVER (ORDER BY a.occurred_at DESC, a.id DESC) AS rn, crm_private.activity_json(a) AS j,
                   a.occurred_at AS kv, a.id AS kid
              FROM crm.activities a
             WHERE a.tenant_id = crm_private.tenant_id() AND (a.archived_at IS NOT NULL) = v_archived
               AND (list_activities.contact_id IS NULL OR a.contact_id = list_activities.contact_id)
               AND (list_activities.deal_id IS NULL OR a.deal_id = list_activities.deal_id)
               AND (v_after.id IS NULL OR (a.occurred_at, a.id) < (v_after.value::timestamptz, v_after.id))
             ORDER BY a.occurred_at DESC, a.id DESC LIMIT v_n + 1) x;
    RETURN jsonb_build_object('data', v_rows, 'next_cursor', v_next);
END
$$;
COMMENT ON FUNCTION api.list_activities(uuid, uuid, boolean, integer, text) IS
'Activity history, newest first (PRD F10.3): of a contact, of a deal, or (neither given) everything the caller sees: {data: [{id, type, description, occurred_at, actor_id, contact_id, deal_id, archived_at, archived_by, created_at}], next_cursor}. archived: true lists the archived ones instead. page_size 1-100 (default 25); pass next_cursor back as cursor. P0002 naming contact_id or deal_id if the caller sees no such record.';

-- Archiving is the one change an activity allows, and no role holds UPDATE on the table:
-- this helper checks that the caller sees the activity and wrote it (or sees everything).
CREATE FUNCTION crm_private.archive_activity(id uuid) RETURNS jsonb
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    a crm.activities;
BEGIN
    PERFORM crm_private.require_permission('workspace.read');
    UPDATE crm.activities x SET archived_at = now(), archived_by = crm_private.user_id()
     WHERE x.tenant_id = crm_private.tenant_id() AND x.id = archive_activity.id AND x.archived_at IS NULL
       AND crm_private.sees_either(x.contact_owner, x.deal_owner)
       AND (x.actor_id = crm_private.user_id() OR crm_private.has_permission('records.read_all'))
    RETURNING * INTO a;
    IF NOT FOUND THEN
        PERFORM crm_private.not_found('unarchived activity of yours', 'id');
    END IF;
    RETURN crm_private.activity_json(a);
END
$$;
COMMENT ON FUNCTION crm_private.archive_activity(uuid) IS 'For api.archive_activity: archives an activity the caller sees and logged (managers and admins: any).';

CREATE FUNCTION api.archive_activity(id uuid) RETURNS jsonb
    LANGUAGE plpgsql VOLATILE SECURITY INVOKER
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    RETURN crm_private.archive_activity(archive_activity.id);
END
$$;
COMMENT ON FUNCTION api.archive_activity(uuid) IS
'Archive (soft-delete) an activity (PRD F10.4): it leaves the history but is never changed or removed. Its author, or managers and admins. Returns the activity; P0002 if the caller has no such unarchived activity to archive.';

--------------------------------------------------------------------------------------------
-- api: custom fields (F6.6, F7.6, F8.9)
--------------------------------------------------------------------------------------------
CREATE FUNCTION crm_private.custom_field_json(f core.custom_fields) RETURNS jsonb
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $$
    SELECT pg_catalog.jsonb_build_object('id', f.id, 'entity', f.entity, 'key', f.key, 'label', f.label, 'type', f.type,
                                         'required', f.required, 'options', f.options, 'created_at', f.created_at)
$$;

CREATE FUNCTION crm_private.require_entity(entity text) RETURNS void
    LANGUAGE plpgsql IMMUTABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    IF entity IS NULL OR entity NOT IN ('organization', 'contact', 'deal') THEN
        RAISE EXCEPTION 'invalid entity: must be organization, contact or deal' USING ERRCODE = 'invalid_parameter_value',
            DETAIL = 'field: entity';
    END IF;
END
$$;

CREATE FUNCTION api.define_custom_field(entity text, key text, label text, type text, required boolean DEFAULT false,
                                        options jsonb DEFAULT NULL) RETURNS jsonb
    LANGUAGE plpgsql VOLATILE SECURITY INVOKER
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    v jsonb;
    f core.custom_fields;
BEGIN
    PERFORM crm_private.require_permission('fields.manage');
    PERFORM crm_private.require_entity(define_custom_field.entity);
    v := crm_private.custom_field_definition(define_custom_field.key, define_custom_field.label, define_custom_field.type,
                                             define_custom_field.required, define_custom_field.options);
    IF EXISTS (SELECT 1 FROM core.custom_fields x WHERE x.tenant_id = crm_private.tenant_id()
                  AND x.entity = define_custom_field.entity AND x.key = v ->> 'key') THEN
        RAISE EXCEPTION 'a custom field % exists already for %', v ->> 'key', define_custom_field.entity
            USING ERRCODE = 'unique_violation', DETAIL = 'field: key';
    END IF;
    IF (SELECT count(*) FROM core.custom_fields x WHERE x.tenant_id = crm_private.tenant_id()
           AND x.entity = define_custom_field.entity) >= 100 THEN
        RAISE EXCEPTION 'invalid entity: at most 100 custom fields per entity' USING ERRCODE = 'invalid_parameter_value',
            DETAIL = 'field: entity';
    END IF;
    INSERT INTO core.custom_fields (tenant_id, entity, key, label, type, required, options)
    VALUES (crm_private.tenant_id(), define_custom_field.entity, v ->> 'key', v ->> 'label', v ->> 'type',
            (v ->> 'required')::boolean, v -> 'options')
    RETURNING * INTO f;
    RETURN crm_private.custom_field_json(f);
END
$$;
COMMENT ON FUNCTION api.define_custom_field(text, text, text, text, boolean, jsonb) IS
'Define a custom field (PRD F6.6, F7.6, F8.9) for organization, contact or deal: key (a-z, 0-9, _; up to 40), label, type (text, number, date, boolean, select, url), required (enforced on new records and on changes), options (the choices of a select). Values are then checked on every write; unknown keys and wrong types are refused with 22023 naming custom_fields.<key>. Admins only (fields.manage; 42501 otherwise). 23505 if the key exists for that entity.';

CREATE FUNCTION api.list_custom_fields(entity text DEFAULT NULL) RETURNS jsonb
    LANGUAGE plpgsql STABLE SECURITY INVOKER
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    PERFORM crm_private.require_permission('workspace.read');
    IF list_custom_fields.entity IS NOT NULL THEN
        PERFORM crm_private.require_entity(list_custom_fields.entity);
    END IF;
    RETURN jsonb_build_object('data', coalesce((
        SELECT jsonb_agg(crm_private.custom_field_json(f) ORDER BY f.entity, f.key)
          FROM core.custom_fields f
         WHERE f.tenant_id = crm_private.tenant_id() AND (list_custom_fields.entity IS NULL OR f.entity = list_custom_fields.entity)),
        '[]'::jsonb), 'next_cursor', NULL);
END
$$;
COMMENT ON FUNCTION api.list_custom_fields(text) IS
'The workspace''s custom field definitions (all, or of one entity), by entity and key: {data: [{id, entity, key, label, type, required, options, created_at}], next_cursor: null} (at most 100 per entity, so one page). Any role.';

CREATE FUNCTION api.delete_custom_field(entity text, key text) RETURNS jsonb
    LANGUAGE plpgsql VOLATILE SECURITY INVOKER
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    f core.custom_fields;
BEGIN
    PERFORM crm_private.require_permission('fields.manage');
    PERFORM crm_private.require_entity(delete_custom_field.entity);
    DELETE FROM core.custom_fields x
     WHERE x.tenant_id = crm_private.tenant_id() AND x.entity = delete_custom_field.entity AND x.key = delete_custom_field.key
    RETURNING * INTO f;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no custom field with this key' USING ERRCODE = 'no_data_found', DETAIL = 'field: key';
    END IF;
    RETURN crm_private.custom_field_json(f);
END
$$;
COMMENT ON FUNCTION api.delete_custom_field(text, text) IS
'Delete a custom field definition. Records keep the values they hold (nothing breaks); new values for the key are refused. Admins only (fields.manage; 42501 otherwise). P0002 if there is no such field. Returns the deleted definition.';

--------------------------------------------------------------------------------------------
-- Trigram search needs pg_trgm's operators (<%, %), which live in whatever schema pg_trgm
-- was created in: the functions that use them get that schema on their search_path, after
-- pg_catalog.
--------------------------------------------------------------------------------------------
DO $trgm$
DECLARE
    v_schema text := (SELECT n.nspname FROM pg_catalog.pg_extension e JOIN pg_catalog.pg_namespace n ON n.oid = e.extnamespace
                       WHERE e.extname = 'pg_trgm');
    v_function regprocedure;
BEGIN
    FOREACH v_function IN ARRAY ARRAY[
        'crm_private.contact_search(text, text, text, numeric, uuid, integer)'::regprocedure,
        'api.find_duplicate_contacts(uuid, text, text, text, text, uuid)'::regprocedure,
        'crm_private.contact_duplicates(text, text, text, text, uuid, uuid)'::regprocedure,
        'crm_private.organization_duplicates(text, text, uuid)'::regprocedure]
    LOOP
        EXECUTE pg_catalog.format('ALTER FUNCTION %s SET search_path = pg_catalog, %I, pg_temp', v_function, v_schema);
    END LOOP;
END
$trgm$;
