-- Security events (PRD F5.6) and the access log (journey 4.6): what was refused, and who
-- read which records. Pushed by pg_crm into a shared-memory queue while the request runs
-- (so they outlive its rollback, and a READ ONLY transaction can record them) and written
-- here by its background worker through crm_private.store_events (see pg_crm's events.rs).
-- Append-only like the audit log (no grant but SELECT for admins, a trigger refuses UPDATE
-- and TRUNCATE); the retention job deletes what is older than the workspace's retention.
-- They may hold personal data (the PRD allows it); today they hold ids, reasons and
-- PostgreSQL's error messages, which name tables and fields, not values.

-- Whether a workspace keeps an access log (on unless an admin turns it off).
ALTER TABLE core.tenants ADD COLUMN access_log boolean NOT NULL DEFAULT true;
COMMENT ON COLUMN core.tenants.access_log IS 'Whether record views, searches and exports of the workspace are recorded in core.access_events (default on).';

CREATE SEQUENCE core.security_events_id_seq;
CREATE TABLE core.security_events (
    tenant_id uuid NOT NULL,
    id bigint NOT NULL DEFAULT nextval('core.security_events_id_seq'),
    occurred_at timestamptz NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now(),
    kind text NOT NULL,
    user_id uuid,
    request_id text,
    details jsonb NOT NULL DEFAULT '{}',
    CONSTRAINT security_events_pkey PRIMARY KEY (tenant_id, id)
);
ALTER SEQUENCE core.security_events_id_seq OWNED BY core.security_events.id;
CREATE INDEX security_events_user_idx ON core.security_events (tenant_id, user_id, occurred_at);
-- Operators read across workspaces by time; retention deletes by it.
CREATE INDEX security_events_time_idx ON core.security_events (occurred_at);
COMMENT ON TABLE core.security_events IS 'Refusals and probes (PRD F5.6): gate_refused, policy_violation, permission_denied, cross_tenant_probe, burst. tenant_id is the workspace the request was for (the nil uuid when it named none); no foreign key: a refused request may name a workspace that does not exist.';

CREATE SEQUENCE core.access_events_id_seq;
CREATE TABLE core.access_events (
    tenant_id uuid NOT NULL,
    id bigint NOT NULL DEFAULT nextval('core.access_events_id_seq'),
    occurred_at timestamptz NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now(),
    user_id uuid,
    action text NOT NULL,
    object_type text NOT NULL,
    object_id uuid,
    request_id text,
    details jsonb NOT NULL DEFAULT '{}',
    CONSTRAINT access_events_pkey PRIMARY KEY (tenant_id, id)
);
ALTER SEQUENCE core.access_events_id_seq OWNED BY core.access_events.id;
CREATE INDEX access_events_object_idx ON core.access_events (tenant_id, object_type, object_id);
CREATE INDEX access_events_user_idx ON core.access_events (tenant_id, user_id, id);
CREATE INDEX access_events_time_idx ON core.access_events (occurred_at);
COMMENT ON TABLE core.access_events IS 'Who read what (journey 4.6): contact.viewed, deal.viewed, organization.viewed, contacts.searched (details.results and the first ten result_ids), by user and request.';

ALTER TABLE core.security_events ENABLE ROW LEVEL SECURITY;
ALTER TABLE core.security_events FORCE ROW LEVEL SECURITY;
ALTER TABLE core.access_events ENABLE ROW LEVEL SECURITY;
ALTER TABLE core.access_events FORCE ROW LEVEL SECURITY;
CREATE POLICY security_events_select ON core.security_events AS PERMISSIVE FOR SELECT TO authenticated
    USING (tenant_id = crm_private.tenant_id() AND crm_private.has_permission('audit.read'));
CREATE POLICY access_events_select ON core.access_events AS PERMISSIVE FOR SELECT TO authenticated
    USING (tenant_id = crm_private.tenant_id() AND crm_private.has_permission('audit.read'));
ALTER TABLE core.security_events OWNER TO crm_owner;
ALTER TABLE core.access_events OWNER TO crm_owner;
SELECT pg_catalog.pg_extension_config_dump('core.security_events_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('core.security_events', '');
SELECT pg_catalog.pg_extension_config_dump('core.access_events_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('core.access_events', '');
CREATE TRIGGER security_events_immutable BEFORE UPDATE OR DELETE OR TRUNCATE ON core.security_events
    FOR EACH STATEMENT EXECUTE FUNCTION crm_private.audit_log_immutable();
CREATE TRIGGER access_events_immutable BEFORE UPDATE OR DELETE OR TRUNCATE ON core.access_events
    FOR EACH STATEMENT EXECUTE FUNCTION crm_private.audit_log_immutable();

-- Probes name an id; finding which workspace holds it needs an index on the id without the
-- tenant. On its hash, not the id itself: an index on (id) would be what the planner picks
-- for every join by id, without the tenant in its condition (tests/tests/crm_plans.rs
-- refuses such plans); nothing but note_missing asks for uuid_hash(id).
CREATE INDEX organizations_probe_idx ON crm.organizations (pg_catalog.uuid_hash(id));
CREATE INDEX contacts_probe_idx ON crm.contacts (pg_catalog.uuid_hash(id));
CREATE INDEX deals_probe_idx ON crm.deals (pg_catalog.uuid_hash(id));

-- How many security events of one user within a minute make a burst (flagged once a minute).
CREATE FUNCTION crm_private.security_burst_threshold() RETURNS integer
    LANGUAGE sql STABLE
    AS $$ SELECT (crm_private.auth_config() ->> 'security_burst_per_minute')::integer $$;
COMMENT ON FUNCTION crm_private.security_burst_threshold() IS 'Security events per user and minute that are flagged as a burst: the auth setting security_burst_per_minute, 20 by default.';

-- The worker's writer: the events it took from the queue (a JSON array, oldest first).
-- Security events are stored and each logged as one WARNING line; access events only for
-- workspaces that keep an access log; then any user past the burst threshold in the last
-- minute (and not flagged in it yet) gets a `burst` event. Returns how many it stored.
CREATE FUNCTION crm_private.store_events(events jsonb) RETURNS bigint
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    v_security bigint;
    v_access bigint;
    v_logged jsonb;
    v_line jsonb;
    r record;
BEGIN
    WITH stored AS (
        INSERT INTO core.security_events (tenant_id, occurred_at, kind, user_id, request_id, details)
        SELECT (e ->> 'tenant_id')::uuid,
               timestamptz '2000-01-01 00:00:00+00' + make_interval(secs => (e ->> 'at')::double precision / 1e6),
               e ->> 'kind', (e ->> 'user_id')::uuid, e ->> 'request_id', coalesce(e -> 'details', '{}')
          FROM jsonb_array_elements(events) WITH ORDINALITY x(e, n)
         WHERE e ->> 'stream' = 'security'
         ORDER BY n
        RETURNING *)
    SELECT count(*), coalesce(jsonb_agg(jsonb_build_object('kind', s.kind, 'tenant_id', s.tenant_id, 'user_id', s.user_id,
               'request_id', s.request_id, 'occurred_at', s.occurred_at, 'details', s.details) ORDER BY s.id), '[]')
      INTO v_security, v_logged FROM stored s;
    FOR v_line IN SELECT * FROM jsonb_array_elements(v_logged) LOOP
        RAISE WARNING 'pg_crm security event: %', v_line::text;
    END LOOP;
    WITH stored AS (
        INSERT INTO core.access_events (tenant_id, occurred_at, user_id, action, object_type, object_id, request_id, details)
        SELECT (e ->> 'tenant_id')::uuid,
               timestamptz '2000-01-01 00:00:00+00' + make_interval(secs => (e ->> 'at')::double precision / 1e6),
               (e ->> 'user_id')::uuid, e ->> 'kind', coalesce(e #>> '{details,object_type}', ''),
               (e #>> '{details,object_id}')::uuid, e ->> 'request_id',
               coalesce(e -> 'details', '{}') - 'object_type' - 'object_id'
          FROM jsonb_array_elements(events) WITH ORDINALITY x(e, n)
          JOIN core.tenants t ON t.id = (e ->> 'tenant_id')::uuid AND t.access_log
         WHERE e ->> 'stream' = 'access'
         ORDER BY n
        RETURNING 1)
    SELECT count(*) INTO v_access FROM stored;
    IF v_security > 0 THEN
        FOR r IN
            SELECT s.tenant_id, s.user_id, count(*) AS n FROM core.security_events s
             WHERE (s.tenant_id, s.user_id) IN (SELECT (e ->> 'tenant_id')::uuid, (e ->> 'user_id')::uuid
                                                  FROM jsonb_array_elements(events) e WHERE e ->> 'stream' = 'security')
               AND s.occurred_at > now() - interval '1 minute' AND s.kind <> 'burst'
             GROUP BY 1, 2
            HAVING count(*) >= crm_private.security_burst_threshold()
               AND NOT EXISTS (SELECT 1 FROM core.security_events b
                                WHERE b.tenant_id = s.tenant_id AND b.user_id = s.user_id AND b.kind = 'burst'
                                  AND b.occurred_at > now() - interval '1 minute')
        LOOP
            INSERT INTO core.security_events (tenant_id, occurred_at, kind, user_id, details)
            VALUES (r.tenant_id, now(), 'burst', r.user_id, jsonb_build_object('events_last_minute', r.n));
            RAISE WARNING 'pg_crm security event: %', jsonb_build_object('kind', 'burst', 'tenant_id', r.tenant_id,
                'user_id', r.user_id, 'details', jsonb_build_object('events_last_minute', r.n))::text;
        END LOOP;
    END IF;
    RETURN v_security + v_access;
END
$$;
COMMENT ON FUNCTION crm_private.store_events(jsonb) IS 'pg_crm''s worker: stores the events it took from the shared-memory queue (security events, each also logged as a WARNING line; access events of workspaces with access_log on) and flags bursts.';

-- A record the caller's workspace does not hold (answered "not found"): if another workspace
-- holds that id, the request was a cross-tenant probe. Reveals nothing to the caller.
CREATE FUNCTION crm_private.note_missing(what text, id uuid) RETURNS void
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    v_tenant uuid := crm_private.tenant_id();
    v_elsewhere boolean;
BEGIN
    IF id IS NULL OR v_tenant IS NULL THEN
        RETURN;
    END IF;
    v_elsewhere := CASE regexp_replace(what, '^(live|deleted) ', '')
        WHEN 'organization' THEN EXISTS (SELECT 1 FROM crm.organizations o
                                          WHERE uuid_hash(o.id) = uuid_hash(note_missing.id) AND o.id = note_missing.id AND o.tenant_id <> v_tenant)
        WHEN 'contact' THEN EXISTS (SELECT 1 FROM crm.contacts c
                                     WHERE uuid_hash(c.id) = uuid_hash(note_missing.id) AND c.id = note_missing.id AND c.tenant_id <> v_tenant)
        WHEN 'deal' THEN EXISTS (SELECT 1 FROM crm.deals d
                                  WHERE uuid_hash(d.id) = uuid_hash(note_missing.id) AND d.id = note_missing.id AND d.tenant_id <> v_tenant)
        ELSE false END;
    IF v_elsewhere THEN
        PERFORM crm_private.record_security_event('cross_tenant_probe', jsonb_build_object('object_type', what, 'object_id', id));
    END IF;
END
$$;
COMMENT ON FUNCTION crm_private.note_missing(text, uuid) IS 'Records a cross-tenant probe when another workspace holds the id the caller asked for (called where a record is answered "not found").';

CREATE FUNCTION crm_private.not_found(what text, field text, id uuid) RETURNS void
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    PERFORM crm_private.note_missing(what, id);
    PERFORM crm_private.not_found(what, field);
END
$$;
COMMENT ON FUNCTION crm_private.not_found(text, text, uuid) IS 'Raises P0002 naming the field, after noting a cross-tenant probe if another workspace holds the id.';

--------------------------------------------------------------------------------------------
-- Reading
--------------------------------------------------------------------------------------------

CREATE FUNCTION api.list_security_events(kind text DEFAULT NULL, user_id uuid DEFAULT NULL, since timestamptz DEFAULT NULL,
                                         until timestamptz DEFAULT NULL, page_size integer DEFAULT 25, cursor text DEFAULT NULL)
    RETURNS jsonb
    LANGUAGE plpgsql STABLE SECURITY INVOKER
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    v_n integer := crm_private.page_size(list_security_events.page_size);
    v_after record := crm_private.read_cursor(list_security_events.cursor, 'security_events', 'newest');
    v_before bigint := v_after.value::bigint;
    v_rows jsonb;
    v_next text;
BEGIN
    PERFORM crm_private.require_permission('audit.read');
    SELECT coalesce(jsonb_agg(x.j ORDER BY x.id DESC) FILTER (WHERE x.rn <= v_n), '[]'::jsonb),
           CASE WHEN count(*) > v_n THEN
                crm_private.make_cursor('security_events', 'newest', (min(x.id) FILTER (WHERE x.rn <= v_n))::text, crm_private.tenant_id()) END
      INTO v_rows, v_next
      FROM (SELECT row_number() OVER (ORDER BY e.id DESC) AS rn, e.id,
                   jsonb_build_object('id', e.id, 'occurred_at', e.occurred_at, 'kind', e.kind, 'user_id', e.user_id,
                                      'request_id', e.request_id, 'details', e.details) AS j
              FROM core.security_events e
             WHERE e.tenant_id = crm_private.tenant_id()
               AND (v_before IS NULL OR e.id < v_before)
               AND (list_security_events.kind IS NULL OR e.kind = list_security_events.kind)
               AND (list_security_events.user_id IS NULL OR e.user_id = list_security_events.user_id)
               AND (list_security_events.since IS NULL OR e.occurred_at >= list_security_events.since)
               AND (list_security_events.until IS NULL OR e.occurred_at < list_security_events.until)
             ORDER BY e.id DESC
             LIMIT v_n + 1) x;
    RETURN jsonb_build_object('data', v_rows, 'next_cursor', v_next);
END
$$;
COMMENT ON FUNCTION api.list_security_events(text, uuid, timestamptz, timestamptz, integer, text) IS
'The workspace''s security events, newest first (PRD F5.6): {data: [{id, occurred_at, kind, user_id, request_id, details}], next_cursor}. Kinds: gate_refused (a request refused at the gate: not a member, deactivated, suspended workspace, ended session), policy_violation (a row-level security check), permission_denied, cross_tenant_probe (an id another workspace holds), burst (one user past the threshold within a minute). Recorded even when the request failed or was read-only; stored about 0.1 s later. Filters: kind, user_id, since, until. page_size 1-100. Admins (audit.read); others 42501.';

CREATE FUNCTION api.list_access_events(user_id uuid DEFAULT NULL, object_type text DEFAULT NULL, object_id uuid DEFAULT NULL,
                                       since timestamptz DEFAULT NULL, until timestamptz DEFAULT NULL,
                                       page_size integer DEFAULT 25, cursor text DEFAULT NULL)
    RETURNS jsonb
    LANGUAGE plpgsql STABLE SECURITY INVOKER
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    v_n integer := crm_private.page_size(list_access_events.page_size);
    v_after record := crm_private.read_cursor(list_access_events.cursor, 'access_events', 'newest');
    v_before bigint := v_after.value::bigint;
    v_rows jsonb;
    v_next text;
BEGIN
    PERFORM crm_private.require_permission('audit.read');
    SELECT coalesce(jsonb_agg(x.j ORDER BY x.id DESC) FILTER (WHERE x.rn <= v_n), '[]'::jsonb),
           CASE WHEN count(*) > v_n THEN
                crm_private.make_cursor('access_events', 'newest', (min(x.id) FILTER (WHERE x.rn <= v_n))::text, crm_private.tenant_id()) END
      INTO v_rows, v_next
      FROM (SELECT row_number() OVER (ORDER BY e.id DESC) AS rn, e.id,
                   jsonb_build_object('id', e.id, 'occurred_at', e.occurred_at, 'user_id', e.user_id, 'action', e.action,
                                      'object_type', e.object_type, 'object_id', e.object_id, 'request_id', e.request_id,
                                      'details', e.details) AS j
              FROM core.access_events e
             WHERE e.tenant_id = crm_private.tenant_id()
               AND (v_before IS NULL OR e.id < v_before)
               AND (list_access_events.user_id IS NULL OR e.user_id = list_access_events.user_id)
               AND (list_access_events.object_type IS NULL OR e.object_type = list_access_events.object_type)
               AND (list_access_events.object_id IS NULL OR e.object_id = list_access_events.object_id)
               AND (list_access_events.since IS NULL OR e.occurred_at >= list_access_events.since)
               AND (list_access_events.until IS NULL OR e.occurred_at < list_access_events.until)
             ORDER BY e.id DESC
             LIMIT v_n + 1) x;
    RETURN jsonb_build_object('data', v_rows, 'next_cursor', v_next);
END
$$;
COMMENT ON FUNCTION api.list_access_events(uuid, text, uuid, timestamptz, timestamptz, integer, text) IS
'Who read what in the workspace, newest first (journey 4.6): {data: [{id, occurred_at, user_id, action, object_type, object_id, request_id, details}], next_cursor}. Actions: contact.viewed, deal.viewed, organization.viewed, contacts.searched (details.results: how many the page showed, result_ids: the first ten). Recorded unless the workspace turned its access log off; stored about 0.1 s later. Filters: user_id, object_type, object_id (e.g. everyone who opened one contact), since, until. page_size 1-100. Admins (audit.read); others 42501.';

-- Retention of the events: the workspace's audit retention, by the hourly upkeep.
CREATE FUNCTION crm_private.events_apply_retention(at timestamptz DEFAULT now()) RETURNS bigint
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    v_security bigint;
    v_access bigint;
BEGIN
    PERFORM set_config('pg_crm.audit_maintenance', 'on', true);
    DELETE FROM core.security_events e
     WHERE e.occurred_at < at - interval '12 months'
       AND e.occurred_at < at - make_interval(months => coalesce(
               (SELECT t.audit_retention_months FROM core.tenants t WHERE t.id = e.tenant_id), 13));
    GET DIAGNOSTICS v_security = ROW_COUNT;
    DELETE FROM core.access_events e
     WHERE e.occurred_at < at - interval '12 months'
       AND e.occurred_at < at - make_interval(months => coalesce(
               (SELECT t.audit_retention_months FROM core.tenants t WHERE t.id = e.tenant_id), 13));
    GET DIAGNOSTICS v_access = ROW_COUNT;
    PERFORM set_config('pg_crm.audit_maintenance', 'off', true);
    RETURN v_security + v_access;
END
$$;
COMMENT ON FUNCTION crm_private.events_apply_retention(timestamptz) IS 'Job: deletes security and access events older than their workspace''s retention (audit_retention_months, 13 by default). Safe to run twice.';
