-- A workspace's life and its end (PRD F1.4, F1.5, NFR-D3; issue 9).
--
-- An admin asks for deletion with a re-authentication code: the workspace becomes
-- `pending_deletion`, every member's access ends at once (the gate, see pg_crm's
-- domain::lifecycle), and its admins can still cancel. After the grace period (30 days by
-- default; a workspace may ask for more, an operator may shorten it) pg_crm's job applies
-- the workspace's retention policy: `archive` first writes a complete bundle of its rows to
-- the archive directory; both then remove every row of the workspace, in batches, so no
-- other workspace ever waits for it. What stays: the tenant row as a tombstone (no name, no
-- slug of its own) and the audit entries of the deletion itself (ids and statuses only),
-- sealed into a chain of their own.

-- (The admins' permission workspace.delete is among the built-in ones in schema.sql.)

ALTER TABLE core.tenants DROP CONSTRAINT tenants_status_check;
ALTER TABLE core.tenants ADD CONSTRAINT tenants_status_check
    CHECK (status IN ('active', 'suspended', 'pending_deletion', 'deleted'));
ALTER TABLE core.tenants
    ADD COLUMN retention_policy text NOT NULL DEFAULT 'hard_delete'
        CONSTRAINT tenants_retention_policy_check CHECK (retention_policy IN ('hard_delete', 'archive')),
    ADD COLUMN deletion_grace_days integer NOT NULL DEFAULT 30
        CONSTRAINT tenants_deletion_grace_days_check CHECK (deletion_grace_days BETWEEN 0 AND 365),
    ADD COLUMN deletion_requested_at timestamptz,
    ADD COLUMN deletion_requested_by uuid,
    ADD COLUMN deletion_due_at timestamptz,
    ADD COLUMN deleted_at timestamptz,
    ADD COLUMN archive_path text;
COMMENT ON COLUMN core.tenants.retention_policy IS 'What deletion does with the data: hard_delete (remove every row) or archive (write a bundle of every row to the archive directory, then remove them).';
COMMENT ON COLUMN core.tenants.deletion_grace_days IS 'Days between a deletion request and the deletion (30 by default; admins may set 30 to 365, operators shorten it per request).';
-- The job's one read: workspaces whose deletion is due.
CREATE INDEX tenants_deletion_due_idx ON core.tenants (deletion_due_at) WHERE status = 'pending_deletion';

-- The users of a workspace being deleted, noted when the purge starts (the memberships that
-- say who they were go in its first batch). Removed with the purge.
CREATE TABLE crm_private.tenant_purges (
    tenant_id uuid NOT NULL,
    user_ids uuid[] NOT NULL,
    started_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT tenant_purges_pkey PRIMARY KEY (tenant_id)
);
ALTER TABLE crm_private.tenant_purges ENABLE ROW LEVEL SECURITY;
ALTER TABLE crm_private.tenant_purges FORCE ROW LEVEL SECURITY;
ALTER TABLE crm_private.tenant_purges OWNER TO crm_owner;
SELECT pg_catalog.pg_extension_config_dump('crm_private.tenant_purges', '');
COMMENT ON TABLE crm_private.tenant_purges IS 'Workspaces whose purge has started, with the users to remove at its end.';

-- The workspace an admin of a workspace waiting for deletion is in (set by the gate instead
-- of the tenant context), or NULL.
CREATE FUNCTION crm_private.pending_deletion_tenant() RETURNS uuid
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $$ SELECT nullif(pg_catalog.current_setting('app.pending_deletion_tenant', true), '')::pg_catalog.uuid $$;
COMMENT ON FUNCTION crm_private.pending_deletion_tenant() IS 'The workspace waiting for deletion whose admin the request is (set by crm_private.begin_request), or NULL.';

CREATE FUNCTION crm_private.settings_json(t core.tenants) RETURNS jsonb
    LANGUAGE sql STABLE
    AS $$
SELECT jsonb_build_object('status', t.status, 'retention_policy', t.retention_policy, 'access_log', t.access_log,
                          'audit_retention_months', t.audit_retention_months, 'deletion_grace_days', t.deletion_grace_days,
                          'deletion_requested_at', t.deletion_requested_at, 'deletion_due_at', t.deletion_due_at)
$$;
COMMENT ON FUNCTION crm_private.settings_json(core.tenants) IS 'A workspace''s settings and deletion state, as api.get_workspace_settings shows them.';

-- The settings of the request's workspace, or of the workspace waiting for deletion whose
-- admin the request is.
CREATE FUNCTION crm_private.workspace_settings() RETURNS jsonb
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    t core.tenants;
BEGIN
    IF crm_private.pending_deletion_tenant() IS NOT NULL THEN
        SELECT * INTO t FROM core.tenants x WHERE x.id = crm_private.pending_deletion_tenant();
    ELSE
        PERFORM crm_private.require_permission('workspace.read');
        SELECT * INTO t FROM core.tenants x WHERE x.id = crm_private.tenant_id();
    END IF;
    RETURN crm_private.settings_json(t);
END
$$;
COMMENT ON FUNCTION crm_private.workspace_settings() IS 'The current request''s workspace settings (also for an admin of a workspace waiting for deletion).';

CREATE FUNCTION api.get_workspace_settings() RETURNS jsonb
    LANGUAGE plpgsql STABLE SECURITY INVOKER
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    RETURN crm_private.workspace_settings();
END
$$;
COMMENT ON FUNCTION api.get_workspace_settings() IS
'The workspace''s settings and deletion state: {status, retention_policy (hard_delete or archive), access_log, audit_retention_months, deletion_grace_days, deletion_requested_at, deletion_due_at}. Any member; also an admin of a workspace waiting for deletion (status pending_deletion), who can do nothing else but cancel it.';

CREATE FUNCTION api.update_workspace_settings(changes jsonb) RETURNS jsonb
    LANGUAGE plpgsql VOLATILE SECURITY INVOKER
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    v_key text;
    t core.tenants;
BEGIN
    PERFORM crm_private.require_permission('workspace.update');
    IF jsonb_typeof(changes) IS DISTINCT FROM 'object' OR changes = '{}' THEN
        RAISE EXCEPTION 'invalid changes: an object naming at least one setting' USING ERRCODE = 'invalid_parameter_value',
            DETAIL = 'field: changes';
    END IF;
    FOR v_key IN SELECT jsonb_object_keys(changes) LOOP
        IF v_key NOT IN ('retention_policy', 'access_log', 'audit_retention_months', 'deletion_grace_days') THEN
            RAISE EXCEPTION 'invalid changes: % is not a setting (retention_policy, access_log, audit_retention_months, deletion_grace_days)', v_key
                USING ERRCODE = 'invalid_parameter_value', DETAIL = 'field: changes.' || v_key;
        END IF;
    END LOOP;
    IF changes ? 'retention_policy' AND coalesce(changes ->> 'retention_policy', '') NOT IN ('hard_delete', 'archive') THEN
        RAISE EXCEPTION 'invalid retention_policy: hard_delete or archive' USING ERRCODE = 'invalid_parameter_value',
            DETAIL = 'field: changes.retention_policy';
    END IF;
    IF changes ? 'access_log' AND jsonb_typeof(changes -> 'access_log') IS DISTINCT FROM 'boolean' THEN
        RAISE EXCEPTION 'invalid access_log: true or false' USING ERRCODE = 'invalid_parameter_value',
            DETAIL = 'field: changes.access_log';
    END IF;
    IF changes ? 'audit_retention_months' AND (jsonb_typeof(changes -> 'audit_retention_months') IS DISTINCT FROM 'number'
       OR (changes ->> 'audit_retention_months') !~ '^[0-9]+$' OR (changes ->> 'audit_retention_months')::numeric NOT BETWEEN 12 AND 120) THEN
        RAISE EXCEPTION 'invalid audit_retention_months: a whole number of months, 12 to 120' USING ERRCODE = 'invalid_parameter_value',
            DETAIL = 'field: changes.audit_retention_months';
    END IF;
    IF changes ? 'deletion_grace_days' AND (jsonb_typeof(changes -> 'deletion_grace_days') IS DISTINCT FROM 'number'
       OR (changes ->> 'deletion_grace_days') !~ '^[0-9]+$' OR (changes ->> 'deletion_grace_days')::numeric NOT BETWEEN 30 AND 365) THEN
        RAISE EXCEPTION 'invalid deletion_grace_days: a whole number of days, 30 to 365' USING ERRCODE = 'invalid_parameter_value',
            DETAIL = 'field: changes.deletion_grace_days';
    END IF;
    UPDATE core.tenants x
       SET retention_policy = coalesce(changes ->> 'retention_policy', x.retention_policy),
           access_log = coalesce((changes ->> 'access_log')::boolean, x.access_log),
           audit_retention_months = coalesce((changes ->> 'audit_retention_months')::integer, x.audit_retention_months),
           deletion_grace_days = coalesce((changes ->> 'deletion_grace_days')::integer, x.deletion_grace_days)
     WHERE x.id = crm_private.tenant_id()
    RETURNING * INTO t;
    RETURN crm_private.settings_json(t);
END
$$;
COMMENT ON FUNCTION api.update_workspace_settings(jsonb) IS
'Change the workspace''s settings: {retention_policy: hard_delete | archive, access_log: boolean, audit_retention_months: 12-120, deletion_grace_days: 30-365}; omitted ones keep their value. Returns the settings. Admins (workspace.update); others 42501; an unknown key or a bad value 22023 naming it.';

-- Schedules a workspace's deletion (an admin's request, or an operator's, who may name any
-- time, now included) and ends every member's sessions. Safe to call again: a later call
-- moves the due time.
CREATE FUNCTION crm_private.schedule_tenant_deletion(tenant uuid, due_at timestamptz DEFAULT NULL, requested_by uuid DEFAULT NULL)
    RETURNS jsonb
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    t core.tenants;
BEGIN
    UPDATE core.tenants x
       SET status = 'pending_deletion',
           deletion_requested_at = coalesce(x.deletion_requested_at, now()),
           deletion_requested_by = coalesce(x.deletion_requested_by, requested_by),
           deletion_due_at = coalesce(schedule_tenant_deletion.due_at, now() + make_interval(days => x.deletion_grace_days))
     WHERE x.id = schedule_tenant_deletion.tenant AND x.status IN ('active', 'suspended', 'pending_deletion')
    RETURNING * INTO t;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no workspace with this id that can be deleted' USING ERRCODE = 'no_data_found', DETAIL = 'field: tenant';
    END IF;
    DELETE FROM auth.sessions s
     WHERE s.user_id IN (SELECT m.user_id FROM core.memberships m WHERE m.tenant_id = t.id)
       AND NOT EXISTS (SELECT 1 FROM core.memberships o JOIN core.tenants ot ON ot.id = o.tenant_id
                        WHERE o.user_id = s.user_id AND o.tenant_id <> t.id AND ot.status = 'active');
    RETURN crm_private.settings_json(t);
END
$$;
COMMENT ON FUNCTION crm_private.schedule_tenant_deletion(uuid, timestamptz, uuid) IS 'Operator: schedules a workspace''s deletion at due_at (default: after its grace period; now() deletes at the next job run); members lose access at once and their sessions end. Calling it again moves the due time.';

-- The admin's request, as pg_crm: for the request's own workspace only.
CREATE FUNCTION crm_private.request_current_deletion() RETURNS jsonb
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    PERFORM crm_private.require_permission('workspace.delete');
    RETURN crm_private.schedule_tenant_deletion(crm_private.tenant_id(), NULL, crm_private.user_id());
END
$$;
COMMENT ON FUNCTION crm_private.request_current_deletion() IS 'api.request_workspace_deletion''s action, as pg_crm, for the request''s workspace (holders of workspace.delete).';

CREATE FUNCTION api.request_workspace_deletion(nonce text DEFAULT NULL) RETURNS jsonb
    LANGUAGE plpgsql VOLATILE SECURITY INVOKER
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    PERFORM crm_private.require_permission('workspace.delete');
    PERFORM crm_private.require_reauthentication(nonce);
    RETURN crm_private.request_current_deletion();
END
$$;
COMMENT ON FUNCTION api.request_workspace_deletion(text) IS
'Ask for the workspace''s deletion (PRD F1.4). Sensitive: nonce is the code /auth/v1/reauthenticate emailed to the caller (403 42501 naming nonce without a fresh one). Every member''s access ends at once; after the grace period (deletion_grace_days) the workspace''s data is deleted, or archived then deleted (retention_policy). Until then its admins can sign in only to cancel (api.cancel_workspace_deletion). Returns the settings with deletion_due_at. Admins (workspace.delete).';

CREATE FUNCTION crm_private.cancel_tenant_deletion(tenant uuid) RETURNS jsonb
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    t core.tenants;
BEGIN
    UPDATE core.tenants x
       SET status = 'active', deletion_requested_at = NULL, deletion_requested_by = NULL, deletion_due_at = NULL
     WHERE x.id = cancel_tenant_deletion.tenant AND x.status = 'pending_deletion'
       AND NOT EXISTS (SELECT 1 FROM crm_private.tenant_purges p WHERE p.tenant_id = x.id)
    RETURNING * INTO t;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no deletion of this workspace is pending' USING ERRCODE = 'no_data_found';
    END IF;
    RETURN crm_private.settings_json(t);
END
$$;
COMMENT ON FUNCTION crm_private.cancel_tenant_deletion(uuid) IS 'Operator: cancels a pending deletion (before its purge has started); the workspace is active again.';

-- The admin's cancel: only an active admin of the workspace waiting for deletion (the gate
-- checked that, and so does this).
CREATE FUNCTION crm_private.cancel_pending_deletion() RETURNS jsonb
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    v_tenant uuid := crm_private.pending_deletion_tenant();
BEGIN
    IF v_tenant IS NULL OR NOT EXISTS (
           SELECT 1 FROM core.memberships m JOIN core.role_permissions rp ON rp.role = m.role AND rp.permission = 'workspace.delete'
            WHERE m.tenant_id = v_tenant AND m.user_id = crm_private.user_id() AND m.status = 'active') THEN
        IF crm_private.tenant_id() IS NOT NULL THEN
            PERFORM crm_private.require_permission('workspace.delete');
            RAISE EXCEPTION 'no deletion of this workspace is pending' USING ERRCODE = 'no_data_found';
        END IF;
        RAISE EXCEPTION 'no workspace waiting for deletion in this request' USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN crm_private.cancel_tenant_deletion(v_tenant);
END
$$;
COMMENT ON FUNCTION crm_private.cancel_pending_deletion() IS 'api.cancel_workspace_deletion''s check and action, as pg_crm.';

CREATE FUNCTION api.cancel_workspace_deletion() RETURNS jsonb
    LANGUAGE plpgsql VOLATILE SECURITY INVOKER
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    RETURN crm_private.cancel_pending_deletion();
END
$$;
COMMENT ON FUNCTION api.cancel_workspace_deletion() IS
'Cancel the workspace''s pending deletion: it is active again and members can sign in. Admins of the workspace, during the grace period (P0002 when no deletion is pending).';

--------------------------------------------------------------------------------------------
-- The deletion job
--------------------------------------------------------------------------------------------

-- Every table that holds rows of a workspace, from the catalog (so a table added later is
-- covered): a tenant_id column in pg_crm's schemas, partitions through their parent.
CREATE FUNCTION crm_private.tenant_tables() RETURNS SETOF regclass
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
SELECT c.oid::regclass
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
  JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'tenant_id' AND NOT a.attisdropped
 WHERE n.nspname IN ('core', 'crm', 'crm_private') AND c.relkind IN ('r', 'p') AND NOT c.relispartition
 ORDER BY c.oid::regclass::text
$$;
COMMENT ON FUNCTION crm_private.tenant_tables() IS 'The tables that hold a workspace''s rows (a tenant_id column in core, crm or crm_private), from the catalog.';

-- The archive: one NDJSON file per workspace, a header line and then one line per row of
-- every tenant table (and the workspace's row and its members' accounts, without password
-- hashes), written by the server with COPY.
CREATE FUNCTION crm_private.archive_tenant(tenant uuid) RETURNS text
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    v_path text := crm_private.archive_directory() || '/' || tenant || '-' || to_char(now() AT TIME ZONE 'UTC', 'YYYYMMDD"T"HH24MISS') || '.ndjson';
    v_query text;
BEGIN
    SELECT string_agg(format('SELECT jsonb_build_object(%L, %L, %L, to_jsonb(r))::text FROM %s r WHERE r.tenant_id = %L',
                             'table', t::text, 'row', t, tenant), ' UNION ALL ')
      INTO v_query FROM crm_private.tenant_tables() t;
    v_query := format('SELECT jsonb_build_object(%L, %L, %L, %L, %L, now(), %L, (SELECT extversion FROM pg_extension WHERE extname = %L))::text',
                      'archive', 'pg_crm workspace', 'tenant_id', tenant, 'created_at', 'version', 'pg_crm')
        || format(' UNION ALL SELECT jsonb_build_object(%L, %L, %L, to_jsonb(r))::text FROM core.tenants r WHERE r.id = %L',
                  'table', 'core.tenants', 'row', tenant)
        || format(' UNION ALL SELECT jsonb_build_object(%L, %L, %L, to_jsonb(u) - %L - %L - %L - %L)::text FROM auth.users u WHERE u.id IN (SELECT m.user_id FROM core.memberships m WHERE m.tenant_id = %L)',
                  'table', 'auth.users', 'row', 'encrypted_password', 'confirmation_token', 'recovery_token', 'reauthentication_token', tenant)
        || ' UNION ALL ' || v_query;
    EXECUTE format('COPY (%s) TO %L', v_query, v_path);
    RETURN v_path;
END
$$;
COMMENT ON FUNCTION crm_private.archive_tenant(uuid) IS 'Operator/job: writes every row of a workspace (its tables from the catalog, its tenant row, its members'' accounts without secrets) as one NDJSON file in the archive directory; returns the file''s path.';

-- One run of a workspace's purge: at most max_rows rows per table, with triggers off
-- (session_replication_role = replica: no audit entry per removed row, no foreign key
-- checks, which the composite keys make pointless here: nothing outside the workspace
-- points into it). Row locks on this workspace's rows only. Returns true once nothing of
-- the workspace is left but its tombstone and the audit entries of its deletion.
CREATE FUNCTION crm_private.purge_tenant_batch(tenant uuid, max_rows integer DEFAULT 5000) RETURNS boolean
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    t regclass;
    v_left boolean := false;
    v_rows bigint;
    v_users uuid[];
BEGIN
    -- Its members, and the people it invited (an invitation creates the account).
    INSERT INTO crm_private.tenant_purges (tenant_id, user_ids)
    SELECT purge_tenant_batch.tenant, coalesce(array_agg(DISTINCT u.user_id), '{}')
      FROM (SELECT m.user_id FROM core.memberships m WHERE m.tenant_id = purge_tenant_batch.tenant
            UNION SELECT i.user_id FROM core.invitations i WHERE i.tenant_id = purge_tenant_batch.tenant) u
    ON CONFLICT (tenant_id) DO NOTHING;
    PERFORM set_config('session_replication_role', 'replica', true);
    FOR t IN SELECT * FROM crm_private.tenant_tables() LOOP
        CONTINUE WHEN t = 'crm_private.tenant_purges'::regclass;
        EXECUTE format('DELETE FROM %s x WHERE (x.tableoid, x.ctid) IN (SELECT y.tableoid, y.ctid FROM %s y WHERE y.tenant_id = %L %s LIMIT %s)',
                       t, t, tenant,
                       CASE WHEN t = 'core.audit_log'::regclass THEN 'AND y.action NOT LIKE ''tenant.deletion%'' ' ELSE '' END,
                       max_rows);
        GET DIAGNOSTICS v_rows = ROW_COUNT;
        v_left := v_left OR v_rows = max_rows;
    END LOOP;
    PERFORM set_config('session_replication_role', 'origin', true);
    IF v_left THEN
        RETURN false;
    END IF;
    -- Done: the members' accounts (unless they belong to another workspace), the tombstone,
    -- and the audit entries of the deletion, resealed as a chain of their own.
    SELECT p.user_ids INTO v_users FROM crm_private.tenant_purges p WHERE p.tenant_id = purge_tenant_batch.tenant;
    DELETE FROM auth.users u
     WHERE u.id = ANY (v_users) AND NOT EXISTS (SELECT 1 FROM core.memberships m WHERE m.user_id = u.id);
    DELETE FROM crm_private.tenant_purges p WHERE p.tenant_id = purge_tenant_batch.tenant;
    UPDATE core.tenants x
       SET status = 'deleted', deleted_at = now(), name = 'Deleted workspace', slug = 'deleted-' || x.id,
           logo_url = NULL, industry = NULL
     WHERE x.id = purge_tenant_batch.tenant;
    PERFORM crm_private.seal_audit_log(purge_tenant_batch.tenant);
    RETURN true;
END
$$;
COMMENT ON FUNCTION crm_private.purge_tenant_batch(uuid, integer) IS 'Job: removes up to max_rows rows per table of a workspace being deleted; true once only its tombstone and the audit entries of its deletion are left.';

-- The deletion job: every workspace whose deletion is due, archived first when its policy
-- says so, then purged a batch per run. Safe to run twice (each step checks what is done).
CREATE FUNCTION crm_private.run_due_deletions(at timestamptz DEFAULT now(), max_rows integer DEFAULT 5000) RETURNS integer
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    t core.tenants;
    v_done integer := 0;
BEGIN
    FOR t IN SELECT * FROM core.tenants x WHERE x.status = 'pending_deletion' AND x.deletion_due_at <= at
              ORDER BY x.deletion_due_at FOR UPDATE SKIP LOCKED LOOP
        IF t.retention_policy = 'archive' AND t.archive_path IS NULL THEN
            UPDATE core.tenants x SET archive_path = crm_private.archive_tenant(t.id) WHERE x.id = t.id;
        END IF;
        IF crm_private.purge_tenant_batch(t.id, max_rows) THEN
            v_done := v_done + 1;
        END IF;
    END LOOP;
    RETURN v_done;
END
$$;
COMMENT ON FUNCTION crm_private.run_due_deletions(timestamptz, integer) IS 'Job (run by crm_private.run_jobs every second): archives, then purges a batch of, every workspace whose deletion is due; returns how many finished. `at` is the clock.';

-- An operator's deletion without a grace period: scheduled now and purged to the end.
CREATE FUNCTION crm_private.delete_tenant_now(tenant uuid) RETURNS jsonb
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    t core.tenants;
BEGIN
    PERFORM crm_private.schedule_tenant_deletion(tenant, now());
    SELECT * INTO t FROM core.tenants x WHERE x.id = tenant;
    IF t.retention_policy = 'archive' AND t.archive_path IS NULL THEN
        UPDATE core.tenants x SET archive_path = crm_private.archive_tenant(tenant) WHERE x.id = tenant;
    END IF;
    WHILE NOT crm_private.purge_tenant_batch(tenant, 50000) LOOP
    END LOOP;
    SELECT * INTO t FROM core.tenants x WHERE x.id = tenant;
    RETURN jsonb_build_object('tenant_id', t.id, 'status', t.status, 'deleted_at', t.deleted_at, 'archive_path', t.archive_path);
END
$$;
COMMENT ON FUNCTION crm_private.delete_tenant_now(uuid) IS 'Operator: deletes a workspace at once under its retention policy (archive first, if so), in one transaction; returns {tenant_id, status, deleted_at, archive_path}.';
