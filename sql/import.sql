--------------------------------------------------------------------------------------------
-- CSV import (journey 1.7): contacts and organizations. The edge streams the file
-- (POST /rest/v1/import/{contacts|organizations}) into a staging table with COPY; the rows
-- are then checked and written set-based, with every rule of the live tables.
--
-- All in the request's one transaction, in its tenant context:
-- 1. crm_private.import_begin checks data.import and the file's columns (Rust:
--    domain::import::targets) and creates the staging tables: temporary, dropped at commit,
--    so nothing of the file outlives the request and no other session sees it;
-- 2. the edge COPYs the rows into pg_temp.import_rows (line, cells);
-- 3. crm_private.import_run checks each row alone (Rust: domain::import::row, the same
--    field rules as every write), then what needs the database, set-based: duplicates within
--    the file, references (organizations of this workspace, active members), what exists
--    already (by id, else by email for contacts and by name for organizations), what each
--    row does, parent cycles; writes as the caller (row-level security and the tables'
--    triggers apply, custom fields are checked again); audits; and returns the report.
--
-- A dry run writes too, inside a block it then undoes, so it finds exactly what a real run
-- would. All or nothing (the default) writes nothing when any row has an error; skip_bad_rows
-- writes the good rows. A write that still fails (a rule no check above foresaw) fails the
-- whole request: nothing is half-written.
--------------------------------------------------------------------------------------------

CREATE FUNCTION crm_private.import_begin(entity text, header text[], mapping jsonb DEFAULT NULL) RETURNS jsonb
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    v_targets jsonb;
BEGIN
    PERFORM crm_private.require_permission('data.import');
    v_targets := crm_private.import_targets(import_begin.entity, import_begin.header, import_begin.mapping);
    DROP TABLE IF EXISTS pg_temp.import_rows, pg_temp.import_work;
    CREATE TEMP TABLE import_rows (line bigint NOT NULL, cells text[] NOT NULL) ON COMMIT DROP;
    CREATE TEMP TABLE import_work (
        line bigint PRIMARY KEY,
        id uuid,
        rec jsonb,
        -- Contacts: the email, organizations: the name, lower case (what duplicates match on).
        key text,
        deleted boolean NOT NULL DEFAULT false,
        missing jsonb,
        existing_id uuid,
        dup_by text,
        -- create, update, skipped or error.
        action text,
        reason text,
        err_field text,
        err_code text,
        err_message text
    ) ON COMMIT DROP;
    GRANT SELECT, INSERT ON pg_temp.import_rows TO authenticated;
    GRANT SELECT, INSERT, UPDATE ON pg_temp.import_work TO authenticated;
    RETURN jsonb_build_object('entity', import_begin.entity, 'columns', v_targets);
END
$$;
COMMENT ON FUNCTION crm_private.import_begin(text, text[], jsonb) IS
'A CSV import''s first step: checks data.import and the file''s columns (22023 naming an unknown column or mapping key), creates the staging table pg_temp.import_rows (line, cells) for COPY, and answers {entity, columns: [field or null per column]}.';

-- A cross-tenant probe, once per import: ids the file references that this workspace does
-- not hold but another does. Reveals nothing to the caller.
CREATE FUNCTION crm_private.import_note_probes(what text, ids uuid[]) RETURNS void
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    v_tenant uuid := crm_private.tenant_id();
    v_elsewhere uuid[];
BEGIN
    IF v_tenant IS NULL OR coalesce(cardinality(ids), 0) = 0 OR what <> 'organization' THEN
        RETURN;
    END IF;
    v_elsewhere := ARRAY(SELECT DISTINCT o.id FROM crm.organizations o
                          WHERE uuid_hash(o.id) = ANY (ARRAY(SELECT uuid_hash(i) FROM unnest(ids) i))
                            AND o.id = ANY (ids) AND o.tenant_id <> v_tenant
                          ORDER BY o.id);
    IF cardinality(v_elsewhere) > 0 THEN
        PERFORM crm_private.record_security_event('cross_tenant_probe', jsonb_build_object(
            'object_type', what, 'object_ids', to_jsonb(v_elsewhere[1:10]), 'count', cardinality(v_elsewhere), 'via', 'import'));
    END IF;
END
$$;
COMMENT ON FUNCTION crm_private.import_note_probes(text, uuid[]) IS 'Records one cross-tenant probe for an import that referenced ids another workspace holds.';

CREATE FUNCTION crm_private.import_audit(entity text, counts jsonb) RETURNS void
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    v_tenant uuid := crm_private.tenant_id();
BEGIN
    PERFORM crm_private.require_permission('data.import');
    PERFORM crm_private.audit(v_tenant, 'data.imported', 'tenant', v_tenant::text,
                              jsonb_build_object('after', jsonb_build_object('entity', entity) || counts));
END
$$;
COMMENT ON FUNCTION crm_private.import_audit(text, jsonb) IS 'Audits an import (data.imported) with its counts.';

CREATE FUNCTION crm_private.import_run(entity text, header text[], mapping jsonb DEFAULT NULL, options jsonb DEFAULT '{}')
    RETURNS jsonb
    LANGUAGE plpgsql VOLATILE SECURITY INVOKER
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    v_tenant uuid := crm_private.tenant_id();
    v_kind text := import_run.entity;
    v_contacts boolean := import_run.entity = 'contacts';
    v_singular text;
    v_targets jsonb;
    v_defs jsonb;
    v_options jsonb := coalesce(import_run.options, '{}');
    v_dry boolean := false;
    v_mode text;
    v_dup text;
    v_key text;
    v_failed bigint;
    v_write boolean;
    v_created bigint := 0;
    v_updated bigint := 0;
    v_report jsonb;
BEGIN
    PERFORM crm_private.require_permission('data.import');
    v_targets := crm_private.import_targets(v_kind, import_run.header, import_run.mapping);
    v_singular := CASE WHEN v_contacts THEN 'contact' ELSE 'organization' END;
    IF jsonb_typeof(v_options) <> 'object' THEN
        RAISE EXCEPTION 'options must be a JSON object' USING ERRCODE = 'invalid_parameter_value', DETAIL = 'field: options';
    END IF;
    FOR v_key IN SELECT k FROM jsonb_object_keys(v_options) k LOOP
        IF v_key NOT IN ('dry_run', 'mode', 'on_duplicate') THEN
            RAISE EXCEPTION 'unknown import option % (dry_run, mode, on_duplicate)', v_key
                USING ERRCODE = 'invalid_parameter_value', DETAIL = 'field: ' || v_key;
        END IF;
    END LOOP;
    IF v_options ? 'dry_run' THEN
        IF jsonb_typeof(v_options -> 'dry_run') <> 'boolean' THEN
            RAISE EXCEPTION 'invalid dry_run: must be true or false' USING ERRCODE = 'invalid_parameter_value', DETAIL = 'field: dry_run';
        END IF;
        v_dry := (v_options ->> 'dry_run')::boolean;
    END IF;
    v_mode := coalesce(v_options ->> 'mode', 'all_or_nothing');
    IF v_mode NOT IN ('all_or_nothing', 'skip_bad_rows') THEN
        RAISE EXCEPTION 'invalid mode: must be all_or_nothing or skip_bad_rows' USING ERRCODE = 'invalid_parameter_value', DETAIL = 'field: mode';
    END IF;
    v_dup := coalesce(v_options ->> 'on_duplicate', 'skip');
    IF v_dup NOT IN ('skip', 'update', 'create') THEN
        RAISE EXCEPTION 'invalid on_duplicate: must be skip, update or create' USING ERRCODE = 'invalid_parameter_value', DETAIL = 'field: on_duplicate';
    END IF;
    SELECT coalesce(jsonb_agg(jsonb_build_object('key', f.key, 'label', f.label, 'type', f.type,
                                                 'required', f.required, 'options', f.options)), '[]'::jsonb)
      INTO v_defs
      FROM core.custom_fields f WHERE f.tenant_id = v_tenant AND f.entity = v_singular;

    -- Each row alone.
    INSERT INTO pg_temp.import_work (line, id, rec, key, deleted, missing, err_field, err_code, err_message)
    SELECT x.line, (x.c ->> 'id')::uuid, x.c -> 'record',
           lower(CASE WHEN v_contacts THEN x.c #>> '{record,email}' ELSE x.c #>> '{record,name}' END),
           coalesce((x.c ->> 'deleted')::boolean, false), x.c -> 'missing',
           x.c #>> '{error,field}', CASE WHEN x.c ? 'error' THEN '22023' END, x.c #>> '{error,message}'
      FROM (SELECT r.line, crm_private.import_row(v_kind, v_targets, v_defs, r.cells) AS c FROM pg_temp.import_rows r) x;
    UPDATE pg_temp.import_work w SET action = 'skipped', reason = 'deleted in the source'
     WHERE w.err_code IS NULL AND w.deleted;

    -- Within the file: an id, or a contact's email, that an earlier line has.
    UPDATE pg_temp.import_work w SET err_field = 'id', err_code = '23505', err_message = 'the same id is on line ' || f.first
      FROM (SELECT x.id, min(x.line) AS first FROM pg_temp.import_work x
             WHERE x.err_code IS NULL AND x.action IS NULL AND x.id IS NOT NULL GROUP BY x.id HAVING count(*) > 1) f
     WHERE w.id = f.id AND w.line > f.first AND w.err_code IS NULL AND w.action IS NULL;
    IF v_contacts THEN
        UPDATE pg_temp.import_work w SET err_field = 'email', err_code = '23505', err_message = 'the same email is on line ' || f.first
          FROM (SELECT x.key, min(x.line) AS first FROM pg_temp.import_work x
                 WHERE x.err_code IS NULL AND x.action IS NULL AND x.key IS NOT NULL GROUP BY x.key HAVING count(*) > 1) f
         WHERE w.key = f.key AND w.line > f.first AND w.err_code IS NULL AND w.action IS NULL;

        -- References: a live organization of this workspace, an active member.
        UPDATE pg_temp.import_work w SET err_field = 'organization_id', err_code = 'P0002', err_message = 'no organization with this id'
         WHERE w.err_code IS NULL AND w.action IS NULL AND w.rec ? 'organization_id'
           AND NOT EXISTS (SELECT 1 FROM crm.organizations o
                            WHERE o.tenant_id = v_tenant AND o.id = (w.rec ->> 'organization_id')::uuid AND o.deleted_at IS NULL);
        UPDATE pg_temp.import_work w SET err_field = 'assigned_to', err_code = 'P0002', err_message = 'no active member with this id'
         WHERE w.err_code IS NULL AND w.action IS NULL AND w.rec ? 'assigned_to'
           AND NOT EXISTS (SELECT 1 FROM core.memberships m
                            WHERE m.tenant_id = v_tenant AND m.user_id = (w.rec ->> 'assigned_to')::uuid AND m.status = 'active');

        -- What exists: the same id (live or deleted), else a live contact with the email.
        UPDATE pg_temp.import_work w SET existing_id = c.id, dup_by = 'id'
          FROM crm.contacts c
         WHERE c.tenant_id = v_tenant AND c.id = w.id AND w.err_code IS NULL AND w.action IS NULL;
        UPDATE pg_temp.import_work w SET existing_id = c.id, dup_by = 'email'
          FROM crm.contacts c
         WHERE c.tenant_id = v_tenant AND lower(c.email) = w.key AND c.deleted_at IS NULL
           AND w.existing_id IS NULL AND w.err_code IS NULL AND w.action IS NULL;
    ELSE
        -- What exists: the same id (live or deleted), else the oldest live organization
        -- with the name.
        UPDATE pg_temp.import_work w SET existing_id = o.id, dup_by = 'id'
          FROM crm.organizations o
         WHERE o.tenant_id = v_tenant AND o.id = w.id AND w.err_code IS NULL AND w.action IS NULL;
        UPDATE pg_temp.import_work w SET existing_id = m.id, dup_by = 'name'
          FROM (SELECT DISTINCT ON (lower(o.name)) lower(o.name) AS key, o.id
                  FROM crm.organizations o
                 WHERE o.tenant_id = v_tenant AND o.deleted_at IS NULL
                   AND lower(o.name) IN (SELECT x.key FROM pg_temp.import_work x WHERE x.key IS NOT NULL)
                 ORDER BY lower(o.name), o.created_at, o.id) m
         WHERE m.key = w.key AND w.existing_id IS NULL AND w.err_code IS NULL AND w.action IS NULL;
    END IF;

    -- What each row does. With on_duplicate = create, a row that matches an existing id (or
    -- a contact's email, unique among live contacts) cannot be created; an organization's
    -- name is not unique, so it can.
    IF v_dup = 'create' THEN
        UPDATE pg_temp.import_work w SET err_field = w.dup_by, err_code = '23505',
               err_message = format('a %s with this %s exists already: %s', v_singular, w.dup_by, w.existing_id)
         WHERE w.existing_id IS NOT NULL AND w.dup_by IN ('id', 'email') AND w.err_code IS NULL AND w.action IS NULL;
    ELSIF v_dup = 'update' THEN
        UPDATE pg_temp.import_work w SET err_field = w.dup_by, err_code = '23505',
               err_message = format('matches the same %s as line %s', v_singular, f.first)
          FROM (SELECT x.existing_id, min(x.line) AS first FROM pg_temp.import_work x
                 WHERE x.err_code IS NULL AND x.action IS NULL AND x.existing_id IS NOT NULL
                 GROUP BY x.existing_id HAVING count(*) > 1) f
         WHERE w.existing_id = f.existing_id AND w.line > f.first AND w.err_code IS NULL AND w.action IS NULL;
    END IF;
    UPDATE pg_temp.import_work w
       SET action = CASE WHEN w.existing_id IS NULL OR (v_dup = 'create' AND w.dup_by = 'name') THEN 'create'
                         WHEN v_dup = 'update' THEN 'update'
                         ELSE 'skipped' END,
           reason = CASE WHEN w.existing_id IS NOT NULL AND v_dup = 'skip' THEN 'duplicate' END
     WHERE w.err_code IS NULL AND w.action IS NULL;
    -- A new record needs its required fields; an update keeps what it has.
    UPDATE pg_temp.import_work w SET err_field = w.missing ->> 0, err_code = '22023', err_message = 'is required'
     WHERE w.action = 'create' AND w.err_code IS NULL AND jsonb_array_length(w.missing) > 0;
    IF v_contacts THEN
        -- An update may not take an email another live contact holds.
        UPDATE pg_temp.import_work w SET err_field = 'email', err_code = '23505',
               err_message = 'a contact with this email exists already: ' || c.id
          FROM crm.contacts c
         WHERE w.action = 'update' AND w.err_code IS NULL AND w.key IS NOT NULL
           AND c.tenant_id = v_tenant AND lower(c.email) = w.key AND c.deleted_at IS NULL AND c.id <> w.existing_id;
    ELSE
        -- A parent is a live organization of this workspace or one this file creates; none
        -- may become its own ancestor. Repeated until nothing changes: a row whose parent
        -- fails fails too.
        FOR pass IN 1 .. 2 LOOP
            LOOP
                UPDATE pg_temp.import_work w SET err_field = 'parent_id', err_code = 'P0002',
                       err_message = coalesce((SELECT 'the organization on line ' || p.line || ' is not imported'
                                                 FROM pg_temp.import_work p WHERE p.id = (w.rec ->> 'parent_id')::uuid ORDER BY p.line LIMIT 1),
                                              'no organization with this id')
                 WHERE w.err_code IS NULL AND w.action IN ('create', 'update') AND w.rec ? 'parent_id'
                   AND NOT EXISTS (SELECT 1 FROM crm.organizations o
                                    WHERE o.tenant_id = v_tenant AND o.id = (w.rec ->> 'parent_id')::uuid AND o.deleted_at IS NULL)
                   AND NOT EXISTS (SELECT 1 FROM pg_temp.import_work p
                                    WHERE p.id = (w.rec ->> 'parent_id')::uuid AND p.action = 'create' AND p.err_code IS NULL);
                EXIT WHEN NOT FOUND;
            END LOOP;
            EXIT WHEN pass = 2;
            UPDATE pg_temp.import_work w SET err_field = 'parent_id', err_code = '22023',
                   err_message = 'would make an organization its own ancestor'
             WHERE w.err_code IS NULL AND w.action IN ('create', 'update')
               AND coalesce(w.existing_id, w.id) IN (
                   WITH RECURSIVE edge(id, parent) AS (
                       SELECT coalesce(e.existing_id, e.id), (e.rec ->> 'parent_id')::uuid
                         FROM pg_temp.import_work e
                        WHERE e.err_code IS NULL AND e.action IN ('create', 'update') AND e.rec ? 'parent_id'
                          AND coalesce(e.existing_id, e.id) IS NOT NULL),
                   walk(start, cur, depth) AS (
                       SELECT edge.id, edge.parent, 1 FROM edge
                       UNION ALL
                       SELECT walk.start, coalesce(e.parent, o.parent_id), walk.depth + 1
                         FROM walk
                         LEFT JOIN edge e ON e.id = walk.cur
                         LEFT JOIN crm.organizations o ON e.id IS NULL AND o.tenant_id = v_tenant AND o.id = walk.cur
                        WHERE walk.cur <> walk.start AND walk.depth < 1000)
                   SELECT walk.start FROM walk WHERE walk.cur = walk.start);
        END LOOP;
    END IF;
    UPDATE pg_temp.import_work w SET action = 'error' WHERE w.err_code IS NOT NULL;
    SELECT count(*) INTO v_failed FROM pg_temp.import_work w WHERE w.action = 'error';
    PERFORM crm_private.import_note_probes('organization', ARRAY(
        SELECT DISTINCT (w.rec ->> w.err_field)::uuid FROM pg_temp.import_work w
         WHERE w.err_code = 'P0002' AND w.err_field IN ('organization_id', 'parent_id')
           AND NOT EXISTS (SELECT 1 FROM pg_temp.import_work p WHERE p.id = (w.rec ->> w.err_field)::uuid)));
    v_write := v_failed = 0 OR v_mode = 'skip_bad_rows';

    IF v_write THEN
        BEGIN
            IF v_contacts THEN
                INSERT INTO crm.contacts (tenant_id, id, first_name, last_name, email, phone, title, organization_id,
                                          assigned_to, custom_fields)
                SELECT v_tenant, coalesce(w.id, gen_random_uuid()), w.rec ->> 'first_name', w.rec ->> 'last_name',
                       w.rec ->> 'email', w.rec ->> 'phone', w.rec ->> 'title', (w.rec ->> 'organization_id')::uuid,
                       (w.rec ->> 'assigned_to')::uuid, coalesce(w.rec -> 'custom_fields', '{}'::jsonb)
                  FROM pg_temp.import_work w WHERE w.action = 'create' ORDER BY w.line;
                GET DIAGNOSTICS v_created = ROW_COUNT;
                UPDATE crm.contacts c
                   SET first_name = coalesce(w.rec ->> 'first_name', c.first_name),
                       last_name = coalesce(w.rec ->> 'last_name', c.last_name),
                       email = coalesce(w.rec ->> 'email', c.email),
                       phone = coalesce(w.rec ->> 'phone', c.phone),
                       title = coalesce(w.rec ->> 'title', c.title),
                       organization_id = coalesce((w.rec ->> 'organization_id')::uuid, c.organization_id),
                       assigned_to = coalesce((w.rec ->> 'assigned_to')::uuid, c.assigned_to),
                       custom_fields = c.custom_fields || coalesce(w.rec -> 'custom_fields', '{}'::jsonb)
                  FROM pg_temp.import_work w
                 WHERE c.tenant_id = v_tenant AND c.id = w.existing_id AND w.action = 'update';
                GET DIAGNOSTICS v_updated = ROW_COUNT;
            ELSE
                INSERT INTO crm.organizations (tenant_id, id, name, industry, size, location, website, parent_id, custom_fields)
                SELECT v_tenant, coalesce(w.id, gen_random_uuid()), w.rec ->> 'name', w.rec ->> 'industry', w.rec ->> 'size',
                       w.rec ->> 'location', w.rec ->> 'website', (w.rec ->> 'parent_id')::uuid,
                       coalesce(w.rec -> 'custom_fields', '{}'::jsonb)
                  FROM pg_temp.import_work w WHERE w.action = 'create' ORDER BY w.line;
                GET DIAGNOSTICS v_created = ROW_COUNT;
                UPDATE crm.organizations o
                   SET name = coalesce(w.rec ->> 'name', o.name),
                       industry = coalesce(w.rec ->> 'industry', o.industry),
                       size = coalesce(w.rec ->> 'size', o.size),
                       location = coalesce(w.rec ->> 'location', o.location),
                       website = coalesce(w.rec ->> 'website', o.website),
                       parent_id = coalesce((w.rec ->> 'parent_id')::uuid, o.parent_id),
                       custom_fields = o.custom_fields || coalesce(w.rec -> 'custom_fields', '{}'::jsonb)
                  FROM pg_temp.import_work w
                 WHERE o.tenant_id = v_tenant AND o.id = w.existing_id AND w.action = 'update';
                GET DIAGNOSTICS v_updated = ROW_COUNT;
            END IF;
            PERFORM crm_private.import_audit(v_kind, jsonb_build_object(
                'created', v_created, 'updated', v_updated, 'failed', v_failed,
                'skipped', (SELECT count(*) FROM pg_temp.import_work w WHERE w.action = 'skipped')));
            IF v_dry THEN
                -- Undoes the block's writes (and its audit entry).
                RAISE EXCEPTION 'dry run' USING ERRCODE = 'CRMDR';
            END IF;
        EXCEPTION WHEN SQLSTATE 'CRMDR' THEN
            NULL;
        END;
    END IF;

    SELECT jsonb_build_object(
               'entity', v_kind, 'dry_run', v_dry, 'mode', v_mode, 'on_duplicate', v_dup,
               'written', v_write AND NOT v_dry,
               'rows', count(*),
               'created', CASE WHEN v_write THEN v_created ELSE 0 END,
               'updated', CASE WHEN v_write THEN v_updated ELSE 0 END,
               'skipped', count(*) FILTER (WHERE w.action = 'skipped'),
               'failed', v_failed,
               'errors', coalesce((SELECT jsonb_agg(jsonb_build_object('line', e.line, 'field', e.err_field, 'code', e.err_code,
                                                                      'message', e.err_message) ORDER BY e.line)
                                     FROM (SELECT * FROM pg_temp.import_work x WHERE x.action = 'error' ORDER BY x.line LIMIT 1000) e),
                                  '[]'::jsonb),
               'errors_truncated', v_failed > 1000,
               'duplicates', coalesce((SELECT jsonb_agg(jsonb_build_object('line', d.line, 'existing_id', d.existing_id, 'by', d.dup_by,
                                                                          'action', d.action) ORDER BY d.line)
                                         FROM (SELECT * FROM pg_temp.import_work x WHERE x.existing_id IS NOT NULL
                                                ORDER BY x.line LIMIT 1000) d),
                                      '[]'::jsonb))
      INTO v_report
      FROM pg_temp.import_work w;
    RETURN v_report;
END
$$;
COMMENT ON FUNCTION crm_private.import_run(text, text[], jsonb, jsonb) IS
'A CSV import''s second step, after the rows are in pg_temp.import_rows: checks every row (field rules, custom fields, duplicates within the file, references, what exists by id and by email or name), writes as the caller unless all_or_nothing meets an error (a dry run writes and undoes it), audits (data.imported), and returns {entity, dry_run, mode, on_duplicate, written, rows, created, updated, skipped, failed, errors: [{line, field, code, message}], errors_truncated, duplicates: [{line, existing_id, by, action}]}. options: {dry_run, mode: all_or_nothing | skip_bad_rows, on_duplicate: skip | update | create}.';
