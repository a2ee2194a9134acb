--------------------------------------------------------------------------------------------
-- CSV import (journey 1.7): contacts and organizations. The edge streams the file
-- (POST /rest/v1/import/{contacts|organizations}) into a staging table with COPY; the rows
-- are then checked and written set-based, with every rule of the live tables.
--
-- All in the request's one transaction, in its tenant context:
-- 1. crm_private.import_begin checks the permissions and the file's columns (Rust:
--    domain::import::targets) and creates the staging tables: temporary, dropped at commit,
--    so nothing of the file outlives the request and no other session sees it;
-- 2. the edge COPYs the rows into pg_temp.import_rows (line, cells);
-- 3. crm_private.import_run checks each row alone (Rust: domain::import::row, the same
--    field rules as every write), then what needs the database, set-based: what exists
--    already (by id, else by email for contacts and by name for organizations), what each
--    row does, references (organizations of this workspace, active members), duplicates
--    within the file, and the organizations' parent tree as it will be; writes as the
--    caller (row-level security and the tables' triggers apply, custom fields are checked
--    again); audits; and returns the report.
--
-- Imports of one workspace take turns (a transaction-level advisory lock), so two cannot
-- both find an email free and both write it. A dry run writes too, inside a block it then
-- undoes, so it finds exactly what a real run would. All or nothing (the default) writes
-- nothing when any row has an error; skip_bad_rows writes the good rows. A record written
-- meanwhile by another request (an API call) makes its row an error, not the request's.
-- Refusals of the file itself are answered, not raised, so a header line (which may be a
-- row of personal data in a file without one) never reaches the server log.
--------------------------------------------------------------------------------------------

CREATE FUNCTION crm_private.import_begin(entity text, header text[], mapping jsonb DEFAULT NULL) RETURNS jsonb
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    v_checked jsonb;
BEGIN
    PERFORM crm_private.require_permission('data.import');
    -- The duplicate checks must see every record of the workspace.
    PERFORM crm_private.require_permission('records.read_all');
    v_checked := crm_private.import_targets_checked(import_begin.entity, import_begin.header, import_begin.mapping);
    IF v_checked ? 'error' THEN
        RETURN v_checked;
    END IF;
    IF v_checked -> 'columns' ? 'assigned_to' THEN
        PERFORM crm_private.require_permission('deals.assign');
    END IF;
    DROP TABLE IF EXISTS pg_temp.import_rows, pg_temp.import_work, pg_temp.import_graph;
    CREATE TEMP TABLE import_rows (line bigint NOT NULL, cells text[] NOT NULL) ON COMMIT DROP;
    CREATE TEMP TABLE import_work (
        line bigint PRIMARY KEY,
        id uuid,
        rec jsonb,
        -- Contacts: the email of a live row, organizations: the name; lower case (what
        -- duplicates match on).
        key text,
        deleted_at timestamptz,
        missing jsonb,
        existing_id uuid,
        existing_deleted boolean,
        dup_by text,
        -- create, update, skipped or error.
        action text,
        -- Organizations: the level in the parent tree once written (0: no parent).
        depth integer,
        written boolean NOT NULL DEFAULT false,
        err_field text,
        err_code text,
        err_message text
    ) ON COMMIT DROP;
    CREATE INDEX import_work_id_idx ON pg_temp.import_work (id);
    CREATE INDEX import_work_existing_idx ON pg_temp.import_work (existing_id);
    -- Organizations: the parent tree as it will be (every organization of the workspace,
    -- with the file's changes).
    CREATE TEMP TABLE import_graph (id uuid PRIMARY KEY, parent uuid) ON COMMIT DROP;
    CREATE INDEX import_graph_parent_idx ON pg_temp.import_graph (parent);
    GRANT SELECT, INSERT ON pg_temp.import_rows TO authenticated;
    GRANT SELECT, INSERT, UPDATE ON pg_temp.import_work TO authenticated;
    GRANT SELECT, INSERT, DELETE ON pg_temp.import_graph TO authenticated;
    RETURN jsonb_build_object('entity', import_begin.entity, 'columns', v_checked -> 'columns');
END
$$;
COMMENT ON FUNCTION crm_private.import_begin(text, text[], jsonb) IS
'A CSV import''s first step: checks data.import and records.read_all (and deals.assign for an assigned_to column), and the file''s columns, and creates the staging table pg_temp.import_rows (line, cells) for COPY. Answers {entity, columns: [field or null per column]}, or {error: {field, message}} for a column or mapping it cannot take (answered, not raised: the header stays out of the server log).';

-- A cross-tenant probe, once per import: references to ids this workspace does not hold but
-- another does. Only their number is recorded (the caller's admins read the workspace's
-- events, and must not learn which of their ids exist elsewhere).
CREATE FUNCTION crm_private.import_note_probes(what text, ids uuid[]) RETURNS void
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    v_tenant uuid := crm_private.tenant_id();
    v_elsewhere bigint;
BEGIN
    IF v_tenant IS NULL OR coalesce(cardinality(ids), 0) = 0 OR what <> 'organization' THEN
        RETURN;
    END IF;
    SELECT count(DISTINCT o.id) INTO v_elsewhere FROM crm.organizations o
     WHERE uuid_hash(o.id) = ANY (ARRAY(SELECT uuid_hash(i) FROM unnest(ids) i))
       AND o.id = ANY (ids) AND o.tenant_id <> v_tenant;
    IF v_elsewhere > 0 THEN
        PERFORM crm_private.record_security_event('cross_tenant_probe', jsonb_build_object(
            'object_type', what, 'count', v_elsewhere, 'via', 'import'));
    END IF;
END
$$;
COMMENT ON FUNCTION crm_private.import_note_probes(text, uuid[]) IS 'Records one cross-tenant probe (with a count, no ids) for an import that referenced ids another workspace holds.';

-- The import's audit entry, with the counts read from the staging table itself.
CREATE FUNCTION crm_private.import_audit(entity text) RETURNS void
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    v_tenant uuid := crm_private.tenant_id();
    v_counts jsonb;
BEGIN
    PERFORM crm_private.require_permission('data.import');
    SELECT jsonb_build_object('entity', entity,
                              'created', count(*) FILTER (WHERE w.action = 'create' AND w.written),
                              'updated', count(*) FILTER (WHERE w.action = 'update'),
                              'skipped', count(*) FILTER (WHERE w.action = 'skipped'),
                              'failed', count(*) FILTER (WHERE w.action = 'error'))
      INTO v_counts
      FROM pg_temp.import_work w;
    PERFORM crm_private.audit(v_tenant, 'data.imported', 'tenant', v_tenant::text, jsonb_build_object('after', v_counts));
END
$$;
COMMENT ON FUNCTION crm_private.import_audit(text) IS 'Audits an import (data.imported) with the counts of its staging table.';

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
    v_depth integer;
    v_failed bigint;
    v_new_errors bigint;
    v_write boolean;
    v_created bigint := 0;
    v_updated bigint := 0;
    v_conflicts bigint[] := '{}';
    v_report jsonb;
BEGIN
    PERFORM crm_private.require_permission('data.import');
    PERFORM crm_private.require_permission('records.read_all');
    v_targets := crm_private.import_targets(v_kind, import_run.header, import_run.mapping);
    IF v_targets ? 'assigned_to' THEN
        PERFORM crm_private.require_permission('deals.assign');
    END IF;
    v_singular := CASE WHEN v_contacts THEN 'contact' ELSE 'organization' END;
    IF jsonb_typeof(v_options) <> 'object' THEN
        RAISE EXCEPTION 'options must be a JSON object' USING ERRCODE = 'invalid_parameter_value', DETAIL = 'field: options';
    END IF;
    FOR v_key IN SELECT k FROM jsonb_object_keys(v_options) k LOOP
        IF v_key NOT IN ('dry_run', 'mode', 'on_duplicate') THEN
            RAISE EXCEPTION 'unknown import option (dry_run, mode, on_duplicate)'
                USING ERRCODE = 'invalid_parameter_value', DETAIL = 'field: options';
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
    -- One import of a workspace at a time.
    PERFORM pg_advisory_xact_lock(hashtext('pg_crm.import'), hashtext(v_tenant::text));
    SELECT coalesce(jsonb_agg(jsonb_build_object('key', f.key, 'label', f.label, 'type', f.type,
                                                 'required', f.required, 'options', f.options)), '[]'::jsonb)
      INTO v_defs
      FROM core.custom_fields f WHERE f.tenant_id = v_tenant AND f.entity = v_singular;

    -- Each row alone.
    INSERT INTO pg_temp.import_work (line, id, rec, key, deleted_at, missing, err_field, err_code, err_message, action)
    SELECT x.line, (x.c ->> 'id')::uuid, x.c -> 'record',
           CASE WHEN v_contacts AND x.c ->> 'deleted_at' IS NULL THEN lower(x.c #>> '{record,email}')
                WHEN NOT v_contacts THEN lower(x.c #>> '{record,name}') END,
           (x.c ->> 'deleted_at')::timestamptz, x.c -> 'missing',
           x.c #>> '{error,field}', CASE WHEN x.c ? 'error' THEN '22023' END, x.c #>> '{error,message}',
           CASE WHEN x.c ? 'error' THEN 'error' END
      FROM (SELECT r.line, crm_private.import_row(v_kind, v_targets, v_defs, r.cells) AS c FROM pg_temp.import_rows r) x;

    -- What exists: the same id (live or deleted), else a live record with the same email
    -- (contacts) or name (organizations, the oldest), for a row that is live itself.
    IF v_contacts THEN
        UPDATE pg_temp.import_work w SET existing_id = c.id, existing_deleted = c.deleted_at IS NOT NULL, dup_by = 'id'
          FROM crm.contacts c
         WHERE c.tenant_id = v_tenant AND c.id = w.id AND w.action IS NULL;
        UPDATE pg_temp.import_work w SET existing_id = c.id, existing_deleted = false, dup_by = 'email'
          FROM crm.contacts c
         WHERE c.tenant_id = v_tenant AND lower(c.email) = w.key AND c.deleted_at IS NULL
           AND w.existing_id IS NULL AND w.deleted_at IS NULL AND w.action IS NULL;
    ELSE
        UPDATE pg_temp.import_work w SET existing_id = o.id, existing_deleted = o.deleted_at IS NOT NULL, dup_by = 'id'
          FROM crm.organizations o
         WHERE o.tenant_id = v_tenant AND o.id = w.id AND w.action IS NULL;
        UPDATE pg_temp.import_work w SET existing_id = m.id, existing_deleted = false, dup_by = 'name'
          FROM (SELECT DISTINCT ON (lower(o.name)) lower(o.name) AS key, o.id
                  FROM crm.organizations o
                 WHERE o.tenant_id = v_tenant AND o.deleted_at IS NULL
                   AND lower(o.name) IN (SELECT x.key FROM pg_temp.import_work x WHERE x.key IS NOT NULL)
                 ORDER BY lower(o.name), o.created_at, o.id) m
         WHERE m.key = w.key AND w.existing_id IS NULL AND w.deleted_at IS NULL AND w.action IS NULL;
    END IF;

    -- What each row does. A row deleted in the source never changes an existing record.
    -- With on_duplicate = create, a row that matches an existing id (or a contact's email,
    -- unique among live contacts) cannot be created; an organization's name is not unique,
    -- so it can. A deleted record is not updated: it is restored first.
    UPDATE pg_temp.import_work w
       SET action = CASE WHEN w.existing_id IS NULL OR (v_dup = 'create' AND w.dup_by = 'name') THEN 'create'
                         WHEN w.deleted_at IS NOT NULL OR v_dup = 'skip' THEN 'skipped'
                         WHEN v_dup = 'update' AND w.existing_deleted THEN 'deleted here'
                         WHEN v_dup = 'update' THEN 'update'
                         ELSE 'taken' END
     WHERE w.action IS NULL;
    UPDATE pg_temp.import_work w SET action = 'error', err_field = 'id', err_code = '55000',
           err_message = format('the %s with this id is deleted in this workspace: restore it first', v_singular)
     WHERE w.action = 'deleted here';
    UPDATE pg_temp.import_work w SET action = 'error', err_field = w.dup_by, err_code = '23505',
           err_message = format('a %s with this %s exists already: %s', v_singular, w.dup_by, w.existing_id)
     WHERE w.action = 'taken';
    -- A new record needs its required fields; an update keeps what it has.
    UPDATE pg_temp.import_work w SET action = 'error', err_field = w.missing ->> 0, err_code = '22023', err_message = 'is required'
     WHERE w.action = 'create' AND jsonb_array_length(w.missing) > 0;
    -- A new record without an id gets one now (the parent tree needs it).
    UPDATE pg_temp.import_work w SET id = gen_random_uuid() WHERE w.action = 'create' AND w.id IS NULL;

    -- References a written row makes (an update's unchanged value is not checked again):
    -- an organization of this workspace (a deleted one too, as an export's records may
    -- refer to one), an active member.
    IF v_contacts THEN
        UPDATE pg_temp.import_work w SET action = 'error', err_field = 'organization_id', err_code = 'P0002',
               err_message = 'no organization with this id'
         WHERE w.action IN ('create', 'update') AND w.rec ? 'organization_id'
           AND NOT EXISTS (SELECT 1 FROM crm.contacts c
                            WHERE w.action = 'update' AND c.tenant_id = v_tenant AND c.id = w.existing_id
                              AND c.organization_id = (w.rec ->> 'organization_id')::uuid)
           AND NOT EXISTS (SELECT 1 FROM crm.organizations o
                            WHERE o.tenant_id = v_tenant AND o.id = (w.rec ->> 'organization_id')::uuid);
        UPDATE pg_temp.import_work w SET action = 'error', err_field = 'assigned_to', err_code = 'P0002',
               err_message = 'no active member with this id'
         WHERE w.action IN ('create', 'update') AND w.rec ? 'assigned_to'
           AND NOT EXISTS (SELECT 1 FROM crm.contacts c
                            WHERE w.action = 'update' AND c.tenant_id = v_tenant AND c.id = w.existing_id
                              AND c.assigned_to = (w.rec ->> 'assigned_to')::uuid)
           AND NOT EXISTS (SELECT 1 FROM core.memberships m
                            WHERE m.tenant_id = v_tenant AND m.user_id = (w.rec ->> 'assigned_to')::uuid AND m.status = 'active');
    END IF;

    -- Within the file, among the rows that write: an id, an existing record, or a live
    -- contact's email that an earlier line has.
    UPDATE pg_temp.import_work w SET action = 'error', err_field = 'id', err_code = '23505',
           err_message = 'the same id is on line ' || f.first
      FROM (SELECT x.id, min(x.line) AS first FROM pg_temp.import_work x
             WHERE x.action = 'create' GROUP BY x.id HAVING count(*) > 1) f
     WHERE w.id = f.id AND w.line > f.first AND w.action = 'create';
    UPDATE pg_temp.import_work w SET action = 'error', err_field = w.dup_by, err_code = '23505',
           err_message = format('matches the same %s as line %s', v_singular, f.first)
      FROM (SELECT x.existing_id, min(x.line) AS first FROM pg_temp.import_work x
             WHERE x.action = 'update' GROUP BY x.existing_id HAVING count(*) > 1) f
     WHERE w.existing_id = f.existing_id AND w.line > f.first AND w.action = 'update';
    IF v_contacts THEN
        UPDATE pg_temp.import_work w SET action = 'error', err_field = 'email', err_code = '23505',
               err_message = 'the same email is on line ' || f.first
          FROM (SELECT x.key, min(x.line) AS first FROM pg_temp.import_work x
                 WHERE x.action IN ('create', 'update') AND x.key IS NOT NULL GROUP BY x.key HAVING count(*) > 1) f
         WHERE w.key = f.key AND w.line > f.first AND w.action IN ('create', 'update');
        -- An update may not take an email another live contact holds.
        UPDATE pg_temp.import_work w SET action = 'error', err_field = 'email', err_code = '23505',
               err_message = 'a contact with this email exists already: ' || c.id
          FROM crm.contacts c
         WHERE w.action = 'update' AND w.key IS NOT NULL
           AND c.tenant_id = v_tenant AND lower(c.email) = w.key AND c.deleted_at IS NULL AND c.id <> w.existing_id;
    ELSE
        -- The parent tree as it will be: every organization of the workspace, with the
        -- parents the file's rows give. A written row must hang below a top organization
        -- (no parent) through existing organizations: otherwise its parent does not exist,
        -- or it would be its own ancestor. Walked down from the tops once (linear); a second
        -- round finds nothing new, as a row that fails leaves only rows below it unplaced.
        FOR pass IN 1 .. 3 LOOP
            DELETE FROM pg_temp.import_graph;
            INSERT INTO pg_temp.import_graph (id, parent)
            SELECT coalesce(w.existing_id, w.id),
                   CASE WHEN w.rec ? 'parent_id' THEN (w.rec ->> 'parent_id')::uuid ELSE o.parent_id END
              FROM pg_temp.import_work w
              LEFT JOIN crm.organizations o ON o.tenant_id = v_tenant AND o.id = w.existing_id
             WHERE w.action IN ('create', 'update')
            ON CONFLICT (id) DO NOTHING;
            INSERT INTO pg_temp.import_graph (id, parent)
            SELECT o.id, o.parent_id FROM crm.organizations o WHERE o.tenant_id = v_tenant
            ON CONFLICT (id) DO NOTHING;
            UPDATE pg_temp.import_work w SET depth = NULL WHERE w.action IN ('create', 'update');
            WITH RECURSIVE tree(id, depth) AS (
                SELECT g.id, 0 FROM pg_temp.import_graph g WHERE g.parent IS NULL
                UNION ALL
                SELECT g.id, t.depth + 1 FROM tree t JOIN pg_temp.import_graph g ON g.parent = t.id)
            UPDATE pg_temp.import_work w SET depth = t.depth
              FROM tree t
             WHERE t.id = coalesce(w.existing_id, w.id) AND w.action IN ('create', 'update');
            UPDATE pg_temp.import_work w SET action = 'error', err_field = 'parent_id',
                   err_code = CASE WHEN w.depth IS NOT NULL THEN '54000'
                                   WHEN EXISTS (SELECT 1 FROM pg_temp.import_graph g WHERE g.id = (w.rec ->> 'parent_id')::uuid)
                                   THEN '22023' ELSE 'P0002' END,
                   err_message = CASE WHEN w.depth IS NOT NULL THEN 'more than 1000 levels of parent organizations'
                                      WHEN EXISTS (SELECT 1 FROM pg_temp.import_graph g WHERE g.id = (w.rec ->> 'parent_id')::uuid)
                                      THEN 'its parents never reach a top organization: it would be its own ancestor, or below one that would'
                                      ELSE coalesce((SELECT 'the organization on line ' || p.line || ' is not imported'
                                                       FROM pg_temp.import_work p WHERE p.id = (w.rec ->> 'parent_id')::uuid
                                                      ORDER BY p.line LIMIT 1),
                                                    'no organization with this id') END
             WHERE w.action IN ('create', 'update') AND (w.depth IS NULL OR w.depth > 1000);
            GET DIAGNOSTICS v_new_errors = ROW_COUNT;
            EXIT WHEN v_new_errors = 0;
            IF pass = 3 THEN
                RAISE EXCEPTION 'the import''s parent tree did not settle' USING ERRCODE = 'internal_error';
            END IF;
        END LOOP;
    END IF;

    SELECT count(*) INTO v_failed FROM pg_temp.import_work w WHERE w.action = 'error';
    PERFORM crm_private.import_note_probes('organization', ARRAY(
        SELECT DISTINCT (w.rec ->> w.err_field)::uuid FROM pg_temp.import_work w
         WHERE w.err_code = 'P0002' AND w.err_field IN ('organization_id', 'parent_id')
           AND NOT EXISTS (SELECT 1 FROM pg_temp.import_work p WHERE p.id = (w.rec ->> w.err_field)::uuid)));
    v_write := v_failed = 0 OR v_mode = 'skip_bad_rows';

    IF v_write THEN
        BEGIN
            IF v_contacts THEN
                -- A record another request wrote meanwhile (the same id, or a live email)
                -- is not overwritten: its row becomes an error below.
                WITH written AS (
                    INSERT INTO crm.contacts (tenant_id, id, first_name, last_name, email, phone, title, organization_id,
                                              assigned_to, custom_fields, deleted_at)
                    SELECT v_tenant, w.id, w.rec ->> 'first_name', w.rec ->> 'last_name',
                           w.rec ->> 'email', w.rec ->> 'phone', w.rec ->> 'title', (w.rec ->> 'organization_id')::uuid,
                           (w.rec ->> 'assigned_to')::uuid, coalesce(w.rec -> 'custom_fields', '{}'::jsonb), w.deleted_at
                      FROM pg_temp.import_work w WHERE w.action = 'create' ORDER BY w.line
                    ON CONFLICT DO NOTHING
                    RETURNING id)
                UPDATE pg_temp.import_work w SET written = true FROM written x WHERE w.id = x.id AND w.action = 'create';
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
                -- Parents before their children, so the tables' own cycle check never sees
                -- a state between two of the file's changes.
                WITH written AS (
                    INSERT INTO crm.organizations (tenant_id, id, name, industry, size, location, website, parent_id,
                                                   custom_fields, deleted_at)
                    SELECT v_tenant, w.id, w.rec ->> 'name', w.rec ->> 'industry', w.rec ->> 'size',
                           w.rec ->> 'location', w.rec ->> 'website', (w.rec ->> 'parent_id')::uuid,
                           coalesce(w.rec -> 'custom_fields', '{}'::jsonb), w.deleted_at
                      FROM pg_temp.import_work w WHERE w.action = 'create' ORDER BY w.depth, w.line
                    ON CONFLICT DO NOTHING
                    RETURNING id)
                UPDATE pg_temp.import_work w SET written = true FROM written x WHERE w.id = x.id AND w.action = 'create';
                GET DIAGNOSTICS v_created = ROW_COUNT;
                FOR v_depth IN SELECT DISTINCT w.depth FROM pg_temp.import_work w WHERE w.action = 'update' ORDER BY 1 LOOP
                    UPDATE crm.organizations o
                       SET name = coalesce(w.rec ->> 'name', o.name),
                           industry = coalesce(w.rec ->> 'industry', o.industry),
                           size = coalesce(w.rec ->> 'size', o.size),
                           location = coalesce(w.rec ->> 'location', o.location),
                           website = coalesce(w.rec ->> 'website', o.website),
                           parent_id = coalesce((w.rec ->> 'parent_id')::uuid, o.parent_id),
                           custom_fields = o.custom_fields || coalesce(w.rec -> 'custom_fields', '{}'::jsonb)
                      FROM pg_temp.import_work w
                     WHERE o.tenant_id = v_tenant AND o.id = w.existing_id AND w.action = 'update' AND w.depth = v_depth;
                    GET DIAGNOSTICS v_new_errors = ROW_COUNT;
                    v_updated := v_updated + v_new_errors;
                END LOOP;
            END IF;
            -- (Kept in a variable: the block's undo does not undo variables.)
            v_conflicts := ARRAY(SELECT w.line FROM pg_temp.import_work w WHERE w.action = 'create' AND NOT w.written);
            v_failed := v_failed + cardinality(v_conflicts);
            IF cardinality(v_conflicts) > 0 THEN
                UPDATE pg_temp.import_work w SET action = 'error' WHERE w.line = ANY (v_conflicts);
            END IF;
            IF cardinality(v_conflicts) > 0 AND v_mode = 'all_or_nothing' THEN
                -- Undoes the block's writes: all or nothing.
                RAISE EXCEPTION 'conflict' USING ERRCODE = 'CRMCF';
            END IF;
            PERFORM crm_private.import_audit(v_kind);
            IF v_dry THEN
                -- Undoes the block's writes (and its audit entry).
                RAISE EXCEPTION 'dry run' USING ERRCODE = 'CRMDR';
            END IF;
        EXCEPTION
            WHEN SQLSTATE 'CRMDR' THEN
                NULL;
            WHEN SQLSTATE 'CRMCF' THEN
                v_write := false;
        END;
        -- A record another request wrote meanwhile (the same id, or a live email): its row
        -- is an error, not the whole import's.
        UPDATE pg_temp.import_work w SET action = 'error', err_field = 'id', err_code = '23505',
               err_message = format('a %s with this id or email was written meanwhile by another request', v_singular)
         WHERE w.line = ANY (v_conflicts);
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
'A CSV import''s second step, after the rows are in pg_temp.import_rows: checks every row (field rules, custom fields, what exists by id and by email or name, references, duplicates within the file, the organizations'' parent tree), writes as the caller unless all_or_nothing meets an error (a dry run writes and undoes it), audits (data.imported), and returns {entity, dry_run, mode, on_duplicate, written, rows, created, updated, skipped, failed, errors: [{line, field, code, message}], errors_truncated, duplicates: [{line, existing_id, by, action}]}. options: {dry_run, mode: all_or_nothing | skip_bad_rows, on_duplicate: skip | update | create}.';
