-- pg_crm 0.6.0 -> 0.7.0 (issue 9): the audit log (core.audit_log, partitioned by month,
-- immutable, sealed into a hash chain per tenant), security events and the access log
-- (written by pg_crm's background worker from its shared-memory queue), the jobs the worker
-- runs (crm_private.run_jobs), and the api functions that read them.
-- Frozen once released.

-- pg_crm's Rust functions for the event queue (events.rs).
-- pg_crm::events::log_access
-- requires:
--   schema
CREATE  FUNCTION "log_access"(
	"action" TEXT, /* & str */
	"object_type" TEXT, /* & str */
	"object_id" uuid, /* Option < pgrx :: Uuid > */
	"details" jsonb DEFAULT NULL /* Option < JsonB > */
) RETURNS void
VOLATILE PARALLEL UNSAFE 
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'log_access_wrapper';

-- pg_crm::events::record_security_event
-- requires:
--   schema
CREATE  FUNCTION "record_security_event"(
	"kind" TEXT, /* & str */
	"details" jsonb, /* Option < JsonB > */
	"tenant" uuid DEFAULT NULL, /* Option < pgrx :: Uuid > */
	"user_id" uuid DEFAULT NULL /* Option < pgrx :: Uuid > */
) RETURNS void
VOLATILE PARALLEL UNSAFE 
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'record_security_event_wrapper';

-- pg_crm::events::event_queue_status
-- requires:
--   schema
CREATE  FUNCTION "event_queue_status"() RETURNS jsonb /* JsonB */
STRICT VOLATILE PARALLEL UNSAFE 
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'event_queue_status_wrapper';

-- pg_crm::events::flush_events
-- requires:
--   schema
CREATE  FUNCTION "flush_events"() RETURNS bigint /* i64 */
STRICT VOLATILE PARALLEL UNSAFE 
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'flush_events_wrapper';

-- pg_crm::archive::archive_directory
-- requires:
--   schema
CREATE  FUNCTION "archive_directory"() RETURNS TEXT /* String */
STRICT VOLATILE PARALLEL UNSAFE 
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'archive_directory_wrapper';

-- The audit log (PRD F9.5, F11.3-F11.5; issue 9): who did what to which object, and when.
--
-- Written only by pg_crm: by the triggers below (memberships, invitations, tenants, record
-- deletions, restores and merges, reassignments, stage changes, custom field definitions)
-- and by its own functions (sign-ins, failed sign-ins, password resets, logouts), through
-- crm_private.audit, which no caller may execute. An entry written in a transaction that
-- rolls back is gone with it: the log holds what happened, not what was tried (refusals are
-- security events).
--
-- Immutable: nobody has an UPDATE or DELETE grant or policy on it, and a trigger refuses
-- UPDATE, DELETE and TRUNCATE even for the table owner. Only pg_crm's partition upkeep
-- (moving rows out of the default partition) and the retention job (whole expired months)
-- remove rows, under pg_crm.audit_maintenance, a setting only a superuser can turn on.
--
-- Tamper-evident without a hot row: writers only append to core.audit_log (one insert, no
-- shared row, no lock beyond the table's). A single sealer (crm_private.seal_audit_log, run
-- every second by pg_crm's background worker, safe to run twice: it takes an advisory
-- lock) later records each committed entry's digest in core.audit_sealed and closes a seal
-- per tenant in core.audit_seals, whose hash covers the previous seal's hash and the
-- digests of its entries. A superuser who edits, deletes or back-dates an entry afterwards
-- is named by crm_private.verify_audit_chain (and api.verify_audit_log): 'altered' (the
-- entry no longer matches its sealed digest), 'deleted' (sealed, gone), 'forged' (present,
-- never sealed, although older than the sealer's horizon), 'seal_altered'. What it cannot
-- catch is the same for every hash chain kept in the database it protects: a superuser who
-- rewrites the entries, their digests and every later seal consistently, or who appends an
-- entry looking like a fresh one before the next seal. Copy the newest seal hash elsewhere
-- (crm_private.audit_chain_head) to anchor it outside.
--
-- Retention: partitioned by month (UTC). Months are created ahead by the upkeep job; until
-- they exist, entries land in the default partition and are moved when their month is
-- created. A month is dropped whole once it is older than every tenant's retention (13
-- months by default, at least 12; a tenant may keep longer). The seals stay (ids and
-- digests, no personal data) and are the anchor: the chain still verifies, and entries of
-- dropped months are not expected any more.
--
-- A row inserted with a creation time before this transaction began is history arriving (a
-- pg_dump restore's COPY, which fires triggers, or an operator's back-fill), not an event:
-- its INSERT is not audited again (the restore brings the original entries with it).
--
-- Entries hold ids, roles and the changed fields of non-personal columns (role, status,
-- stage, assignee, deleted_at); names, emails and phones stay in the tables they belong to.

CREATE SEQUENCE core.audit_log_id_seq;

CREATE TABLE core.audit_log (
    tenant_id uuid NOT NULL,
    id bigint NOT NULL DEFAULT nextval('core.audit_log_id_seq'),
    occurred_at timestamptz NOT NULL DEFAULT now(),
    xid xid8 NOT NULL DEFAULT pg_current_xact_id(),
    actor_id uuid,
    actor_role text NOT NULL,
    db_role text NOT NULL DEFAULT session_user,
    action text NOT NULL,
    object_type text NOT NULL,
    object_id text,
    changes jsonb NOT NULL DEFAULT '{}',
    request_id text,
    client_ip text
) PARTITION BY RANGE (occurred_at);
ALTER SEQUENCE core.audit_log_id_seq OWNED BY core.audit_log.id;
COMMENT ON TABLE core.audit_log IS 'Append-only audit trail per tenant (PRD F11.3): actor, action, object, changed fields, request id, client address. Written only by pg_crm; immutable; sealed into a hash chain per tenant (core.audit_seals); partitioned by month.';

-- Until the upkeep job has created a month, its entries wait here. Created with the
-- extension (and dumped with its rows); the monthly partitions are not members of the
-- extension, so a plain pg_dump carries them as ordinary tables.
--
-- Keys and indexes are each partition's own, not the parent's (crm_private.audit_index_partition
-- makes them): a parent index created with the extension would also be created by a
-- restore's ATTACH PARTITION, before the dump's own copy of it, and the restore would stop.
-- No foreign key to core.tenants either: the log outlives what it records (a deleted
-- workspace keeps its tombstone and the entries of its deletion).
CREATE TABLE core.audit_log_default PARTITION OF core.audit_log DEFAULT;

CREATE FUNCTION crm_private.audit_index_partition(part regclass) RETURNS void
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    v_name text := (SELECT c.relname FROM pg_class c WHERE c.oid = part);
BEGIN
    EXECUTE format('ALTER TABLE %s ADD CONSTRAINT %I PRIMARY KEY (tenant_id, id)', part, v_name || '_pkey');
    -- The sealer's one read: entries of transactions it has not passed yet.
    EXECUTE format('CREATE INDEX %I ON %s (xid)', v_name || '_xid_idx', part);
    EXECUTE format('CREATE INDEX %I ON %s (tenant_id, object_type, object_id)', v_name || '_object_idx', part);
    EXECUTE format('CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON %s FOR EACH STATEMENT EXECUTE FUNCTION crm_private.audit_log_immutable()', part);
END
$$;
COMMENT ON FUNCTION crm_private.audit_index_partition(regclass) IS 'The audit log partition''s key (tenant_id, id), its indexes (xid for the sealer; tenant, object type and id) and its TRUNCATE guard.';

CREATE TABLE core.audit_sealed (
    tenant_id uuid NOT NULL,
    entry_id bigint NOT NULL,
    seal_seq bigint NOT NULL,
    occurred_at timestamptz NOT NULL,
    digest bytea NOT NULL,
    CONSTRAINT audit_sealed_pkey PRIMARY KEY (tenant_id, entry_id),
    CONSTRAINT audit_sealed_tenant_fkey FOREIGN KEY (tenant_id) REFERENCES core.tenants (id)
);
CREATE INDEX audit_sealed_seal_idx ON core.audit_sealed (tenant_id, seal_seq);
COMMENT ON TABLE core.audit_sealed IS 'The digest of every sealed audit entry, as the sealer computed it, and the seal that holds it.';

CREATE TABLE core.audit_seals (
    tenant_id uuid NOT NULL,
    seq bigint NOT NULL,
    sealed_at timestamptz NOT NULL DEFAULT now(),
    entries integer NOT NULL,
    first_entry bigint NOT NULL,
    last_entry bigint NOT NULL,
    oldest_entry_at timestamptz NOT NULL,
    entries_digest bytea NOT NULL,
    prev_hash bytea NOT NULL,
    hash bytea NOT NULL,
    CONSTRAINT audit_seals_pkey PRIMARY KEY (tenant_id, seq),
    CONSTRAINT audit_seals_tenant_fkey FOREIGN KEY (tenant_id) REFERENCES core.tenants (id)
);
COMMENT ON TABLE core.audit_seals IS 'The hash chain over each tenant''s audit entries: one seal per tenant per sealer run, hash = sha256(previous hash, header, digest of its entries'' digests).';

-- The sealer's and the retention job's state, one row, written by them only (empty until
-- the first run, so a restore's rows are the only ones). system_identifier: a restore into
-- another cluster (whose transaction ids mean something else) makes the sealer start over
-- from the first entry instead of trusting horizon.
CREATE TABLE crm_private.audit_state (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    system_identifier bigint NOT NULL,
    horizon xid8 NOT NULL,
    dropped_before timestamptz NOT NULL DEFAULT '-infinity',
    upkept_at timestamptz
);
COMMENT ON TABLE crm_private.audit_state IS 'The audit sealer''s horizon (every transaction below it has ended and its entries are sealed) and the retention job''s boundary (months before dropped_before are gone).';

ALTER TABLE core.audit_log ENABLE ROW LEVEL SECURITY;
ALTER TABLE core.audit_log FORCE ROW LEVEL SECURITY;
ALTER TABLE core.audit_sealed ENABLE ROW LEVEL SECURITY;
ALTER TABLE core.audit_sealed FORCE ROW LEVEL SECURITY;
ALTER TABLE core.audit_seals ENABLE ROW LEVEL SECURITY;
ALTER TABLE core.audit_seals FORCE ROW LEVEL SECURITY;
ALTER TABLE crm_private.audit_state ENABLE ROW LEVEL SECURITY;
ALTER TABLE crm_private.audit_state FORCE ROW LEVEL SECURITY;
-- Admins (audit.read) read their tenant's entries; nobody writes them through a grant.
CREATE POLICY audit_log_select ON core.audit_log AS PERMISSIVE FOR SELECT TO authenticated
    USING (tenant_id = crm_private.tenant_id() AND crm_private.has_permission('audit.read'));
ALTER TABLE core.audit_log OWNER TO crm_owner;
ALTER TABLE core.audit_log_default OWNER TO crm_owner;
ALTER TABLE core.audit_sealed OWNER TO crm_owner;
ALTER TABLE core.audit_seals OWNER TO crm_owner;
ALTER TABLE crm_private.audit_state OWNER TO crm_owner;
SELECT pg_catalog.pg_extension_config_dump('core.audit_log_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('core.audit_log_default', '');
SELECT pg_catalog.pg_extension_config_dump('core.audit_sealed', '');
SELECT pg_catalog.pg_extension_config_dump('core.audit_seals', '');
SELECT pg_catalog.pg_extension_config_dump('crm_private.audit_state', '');

CREATE FUNCTION crm_private.audit_log_immutable() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    IF TG_OP = 'DELETE' AND pg_catalog.current_setting('pg_crm.audit_maintenance', true) = 'on' THEN
        RETURN CASE WHEN TG_LEVEL = 'ROW' THEN OLD END;
    END IF;
    RAISE EXCEPTION 'the audit log is append-only: % is refused', TG_OP
        USING ERRCODE = 'insufficient_privilege',
              HINT = 'entries are removed only by pg_crm''s retention job, a whole month at a time';
END
$$;
COMMENT ON FUNCTION crm_private.audit_log_immutable() IS 'Trigger: refuses UPDATE, DELETE and TRUNCATE on the audit log, its seals and digests, even for their owner (pg_crm''s own upkeep excepted).';

-- Statement triggers refuse even a statement that sees no row (the owner, under forced
-- row-level security, sees none); the row trigger, cloned to every partition, refuses
-- changes made through a partition itself.
CREATE TRIGGER audit_log_immutable BEFORE UPDATE OR DELETE ON core.audit_log
    FOR EACH ROW EXECUTE FUNCTION crm_private.audit_log_immutable();
CREATE TRIGGER audit_log_immutable_statement BEFORE UPDATE OR DELETE OR TRUNCATE ON core.audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION crm_private.audit_log_immutable();
SELECT crm_private.audit_index_partition('core.audit_log_default');
CREATE TRIGGER audit_sealed_immutable BEFORE UPDATE OR DELETE OR TRUNCATE ON core.audit_sealed
    FOR EACH STATEMENT EXECUTE FUNCTION crm_private.audit_log_immutable();
CREATE TRIGGER audit_seals_immutable BEFORE UPDATE OR DELETE OR TRUNCATE ON core.audit_seals
    FOR EACH STATEMENT EXECUTE FUNCTION crm_private.audit_log_immutable();

--------------------------------------------------------------------------------------------
-- Writing
--------------------------------------------------------------------------------------------

-- The one writer. The actor is the request's user and role (set by begin_request); else
-- `actor` when pg_crm names one (an auth endpoint, where the user has no tenant context
-- yet), with role 'user'; else 'operator' (a DBA or a job; db_role says who). The request
-- id and client address come from the edge (pg_crm.request_id, pg_crm.client_ip, set per
-- transaction) unless given.
CREATE FUNCTION crm_private.audit(tenant uuid, action text, object_type text, object_id text,
                                  changes jsonb DEFAULT '{}', actor uuid DEFAULT NULL, client_ip text DEFAULT NULL,
                                  actor_role text DEFAULT NULL)
    RETURNS void
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    v_user uuid := crm_private.user_id();
BEGIN
    INSERT INTO core.audit_log (tenant_id, actor_id, actor_role, action, object_type, object_id, changes, request_id, client_ip)
    VALUES (tenant,
            coalesce(v_user, actor),
            coalesce(audit.actor_role,
                     CASE WHEN v_user IS NOT NULL THEN coalesce(crm_private.tenant_role(), 'user')
                          WHEN actor IS NOT NULL THEN 'user' ELSE 'operator' END),
            audit.action, audit.object_type, audit.object_id, coalesce(audit.changes, '{}'),
            nullif(current_setting('pg_crm.request_id', true), ''),
            coalesce(audit.client_ip, nullif(current_setting('pg_crm.client_ip', true), '')));
END
$$;
COMMENT ON FUNCTION crm_private.audit(uuid, text, text, text, jsonb, uuid, text, text) IS 'Appends one audit entry (pg_crm''s triggers and functions only; nobody is granted it).';

-- Sign-ins, failed sign-ins, logouts and password resets: recorded in the workspace the
-- user's tokens are for (their first membership), by the user themselves (by_user) or by
-- whoever tried (a failed sign-in, a reset request: role 'anonymous'), with the client's
-- address from the auth request.
CREATE FUNCTION crm_private.audit_auth(user_id uuid, action text, req jsonb, changes jsonb DEFAULT '{}', by_user boolean DEFAULT true)
    RETURNS void
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    v_tenant uuid := (SELECT m.tenant_id FROM crm_private.auth_membership(audit_auth.user_id) m);
BEGIN
    IF v_tenant IS NOT NULL THEN
        PERFORM crm_private.audit(v_tenant, audit_auth.action, 'user', audit_auth.user_id::text, audit_auth.changes,
            CASE WHEN by_user THEN audit_auth.user_id END, host(crm_private.auth_ip(req)),
            CASE WHEN NOT by_user THEN 'anonymous' END);
    END IF;
END
$$;
COMMENT ON FUNCTION crm_private.audit_auth(uuid, text, jsonb, jsonb, boolean) IS 'Audits an auth event of a user in the workspace their tokens are for.';

-- The fields that differ between two versions of a row: {"before": {...}, "after": {...}},
-- or NULL when none of `fields` changed.
CREATE FUNCTION crm_private.audit_diff(old jsonb, new jsonb, fields text[]) RETURNS jsonb
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$
SELECT CASE WHEN count(*) > 0 THEN
            pg_catalog.jsonb_build_object('before', pg_catalog.jsonb_object_agg(f, old -> f),
                                          'after', pg_catalog.jsonb_object_agg(f, new -> f)) END
  FROM pg_catalog.unnest(fields) f
 WHERE (old -> f) IS DISTINCT FROM (new -> f)
$$;
COMMENT ON FUNCTION crm_private.audit_diff(jsonb, jsonb, text[]) IS 'The changed fields among `fields`, before and after, or NULL.';

CREATE FUNCTION crm_private.audit_membership() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    v_diff jsonb;
BEGIN
    IF TG_OP = 'INSERT' THEN
        IF NEW.created_at < now() THEN
            RETURN NULL;  -- history arriving (a restore), not an event
        END IF;
        PERFORM crm_private.audit(NEW.tenant_id, 'member.added', 'member', NEW.user_id::text,
            jsonb_build_object('after', jsonb_build_object('role', NEW.role, 'status', NEW.status)));
    ELSIF TG_OP = 'DELETE' THEN
        PERFORM crm_private.audit(OLD.tenant_id, 'member.removed', 'member', OLD.user_id::text,
            jsonb_build_object('before', jsonb_build_object('role', OLD.role, 'status', OLD.status)));
    ELSE
        v_diff := crm_private.audit_diff(to_jsonb(OLD), to_jsonb(NEW), ARRAY['role', 'status']);
        IF v_diff IS NOT NULL THEN
            PERFORM crm_private.audit(NEW.tenant_id,
                CASE WHEN OLD.status IS DISTINCT FROM NEW.status AND OLD.role IS NOT DISTINCT FROM NEW.role THEN
                          CASE NEW.status WHEN 'active' THEN 'member.reactivated' ELSE 'member.deactivated' END
                     WHEN OLD.status IS NOT DISTINCT FROM NEW.status THEN 'member.role_changed'
                     ELSE 'member.changed' END,
                'member', NEW.user_id::text, v_diff);
        END IF;
    END IF;
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION crm_private.audit_membership() IS 'Trigger: audits members added or removed, role changes, deactivation and reactivation.';
CREATE TRIGGER memberships_audit AFTER INSERT OR DELETE OR UPDATE OF role, status ON core.memberships
    FOR EACH ROW EXECUTE FUNCTION crm_private.audit_membership();

CREATE FUNCTION crm_private.audit_invitation() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        IF NEW.created_at < now() THEN
            RETURN NULL;
        END IF;
        PERFORM crm_private.audit(NEW.tenant_id, 'invitation.sent', 'invitation', NEW.id::text,
            jsonb_build_object('after', jsonb_build_object('role', NEW.role, 'user_id', NEW.user_id, 'expires_at', NEW.expires_at)));
    ELSIF OLD.status IS DISTINCT FROM NEW.status THEN
        PERFORM crm_private.audit(NEW.tenant_id,
            CASE NEW.status WHEN 'accepted' THEN 'invitation.accepted' WHEN 'revoked' THEN 'invitation.revoked'
                            ELSE 'invitation.changed' END,
            'invitation', NEW.id::text,
            jsonb_build_object('before', jsonb_build_object('status', OLD.status), 'after', jsonb_build_object('status', NEW.status)),
            NEW.user_id);
    ELSIF OLD.sent_at IS DISTINCT FROM NEW.sent_at THEN
        PERFORM crm_private.audit(NEW.tenant_id, 'invitation.resent', 'invitation', NEW.id::text,
            jsonb_build_object('after', jsonb_build_object('expires_at', NEW.expires_at)));
    END IF;
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION crm_private.audit_invitation() IS 'Trigger: audits invitations sent, resent, accepted and revoked.';
CREATE TRIGGER invitations_audit AFTER INSERT OR UPDATE OF status, sent_at ON core.invitations
    FOR EACH ROW EXECUTE FUNCTION crm_private.audit_invitation();

CREATE FUNCTION crm_private.audit_tenant() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    v_diff jsonb;
BEGIN
    IF TG_OP = 'INSERT' THEN
        IF NEW.created_at < now() THEN
            RETURN NULL;
        END IF;
        PERFORM crm_private.audit(NEW.id, 'tenant.created', 'tenant', NEW.id::text,
            jsonb_build_object('after', jsonb_build_object('name', NEW.name, 'slug', NEW.slug, 'status', NEW.status)));
        RETURN NULL;
    END IF;
    IF OLD.status IS DISTINCT FROM NEW.status THEN
        PERFORM crm_private.audit(NEW.id,
            CASE WHEN NEW.status = 'pending_deletion' THEN 'tenant.deletion_requested'
                 WHEN OLD.status = 'pending_deletion' AND NEW.status = 'active' THEN 'tenant.deletion_cancelled'
                 WHEN NEW.status = 'deleted' THEN 'tenant.deletion_executed'
                 WHEN NEW.status = 'suspended' THEN 'tenant.suspended'
                 WHEN NEW.status = 'active' THEN 'tenant.reactivated'
                 ELSE 'tenant.' || NEW.status END,
            'tenant', NEW.id::text,
            jsonb_build_object('before', jsonb_build_object('status', OLD.status), 'after',
                jsonb_strip_nulls(jsonb_build_object('status', NEW.status, 'deletion_due_at', NEW.deletion_due_at, 'retention_policy',
                    CASE WHEN NEW.status IN ('pending_deletion', 'deleted') THEN NEW.retention_policy END))));
    END IF;
    IF NEW.status = 'deleted' THEN
        RETURN NULL;  -- the tombstone's blanked name and slug are not an edit
    END IF;
    v_diff := crm_private.audit_diff(to_jsonb(OLD), to_jsonb(NEW), ARRAY['name', 'slug', 'logo_url', 'industry', 'timezone']);
    IF v_diff IS NOT NULL THEN
        PERFORM crm_private.audit(NEW.id, 'tenant.updated', 'tenant', NEW.id::text, v_diff);
    END IF;
    v_diff := crm_private.audit_diff(to_jsonb(OLD), to_jsonb(NEW),
        ARRAY['retention_policy', 'access_log', 'audit_retention_months', 'deletion_grace_days']);
    IF v_diff IS NOT NULL THEN
        PERFORM crm_private.audit(NEW.id, 'tenant.settings_changed', 'tenant', NEW.id::text, v_diff);
    END IF;
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION crm_private.audit_tenant() IS 'Trigger: audits workspaces created, their metadata changed, suspended and reactivated.';
CREATE TRIGGER tenants_audit AFTER INSERT OR UPDATE ON core.tenants
    FOR EACH ROW EXECUTE FUNCTION crm_private.audit_tenant();

-- Deletions, restores and merges of organizations, contacts and deals (soft: deleted_at; a
-- merge sets merged_into with it), and an operator's hard deletes.
CREATE FUNCTION crm_private.audit_record() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    v_type text := TG_ARGV[0];
    v_merged uuid;
BEGIN
    IF TG_OP = 'DELETE' THEN
        PERFORM crm_private.audit(OLD.tenant_id, v_type || '.purged', v_type, OLD.id::text, '{}');
        RETURN NULL;
    END IF;
    IF v_type = 'contact' THEN
        v_merged := (to_jsonb(NEW) ->> 'merged_into')::uuid;
    END IF;
    IF NEW.deleted_at IS NULL THEN
        PERFORM crm_private.audit(NEW.tenant_id, v_type || '.restored', v_type, NEW.id::text,
            jsonb_build_object('before', jsonb_build_object('deleted_at', OLD.deleted_at), 'after', jsonb_build_object('deleted_at', NULL)));
    ELSIF v_merged IS NOT NULL THEN
        PERFORM crm_private.audit(NEW.tenant_id, v_type || '.merged', v_type, NEW.id::text,
            jsonb_build_object('after', jsonb_build_object('merged_into', v_merged, 'deleted_at', NEW.deleted_at)));
    ELSE
        PERFORM crm_private.audit(NEW.tenant_id, v_type || '.deleted', v_type, NEW.id::text,
            jsonb_build_object('before', jsonb_build_object('deleted_at', NULL), 'after', jsonb_build_object('deleted_at', NEW.deleted_at)));
    END IF;
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION crm_private.audit_record() IS 'Trigger: audits deletions, restores and merges of organizations, contacts and deals, and hard deletes.';
CREATE TRIGGER organizations_audit AFTER UPDATE OF deleted_at ON crm.organizations
    FOR EACH ROW WHEN (OLD.deleted_at IS DISTINCT FROM NEW.deleted_at) EXECUTE FUNCTION crm_private.audit_record('organization');
CREATE TRIGGER organizations_audit_purge AFTER DELETE ON crm.organizations
    FOR EACH ROW EXECUTE FUNCTION crm_private.audit_record('organization');
CREATE TRIGGER contacts_audit AFTER UPDATE OF deleted_at ON crm.contacts
    FOR EACH ROW WHEN (OLD.deleted_at IS DISTINCT FROM NEW.deleted_at) EXECUTE FUNCTION crm_private.audit_record('contact');
CREATE TRIGGER contacts_audit_purge AFTER DELETE ON crm.contacts
    FOR EACH ROW EXECUTE FUNCTION crm_private.audit_record('contact');
CREATE TRIGGER deals_audit AFTER UPDATE OF deleted_at ON crm.deals
    FOR EACH ROW WHEN (OLD.deleted_at IS DISTINCT FROM NEW.deleted_at) EXECUTE FUNCTION crm_private.audit_record('deal');
CREATE TRIGGER deals_audit_purge AFTER DELETE ON crm.deals
    FOR EACH ROW EXECUTE FUNCTION crm_private.audit_record('deal');

-- Reassignments and stage changes: their history tables get one row per change; so does
-- the audit log.
CREATE FUNCTION crm_private.audit_assignment() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    IF NEW.created_at < now() THEN
        RETURN NULL;
    END IF;
    PERFORM crm_private.audit(NEW.tenant_id,
        CASE WHEN NEW.deal_id IS NOT NULL THEN 'deal.reassigned' ELSE 'contact.reassigned' END,
        CASE WHEN NEW.deal_id IS NOT NULL THEN 'deal' ELSE 'contact' END,
        coalesce(NEW.deal_id, NEW.contact_id)::text,
        jsonb_build_object('before', jsonb_build_object('assigned_to', NEW.from_user),
                           'after', jsonb_build_object('assigned_to', NEW.to_user)));
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION crm_private.audit_assignment() IS 'Trigger: audits each reassignment of a contact or deal.';
CREATE TRIGGER assignment_changes_audit AFTER INSERT ON crm.assignment_changes
    FOR EACH ROW EXECUTE FUNCTION crm_private.audit_assignment();

CREATE FUNCTION crm_private.audit_stage_change() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    IF NEW.created_at < now() THEN
        RETURN NULL;
    END IF;
    PERFORM crm_private.audit(NEW.tenant_id, 'deal.stage_changed', 'deal', NEW.deal_id::text,
        jsonb_build_object('before', jsonb_build_object('stage', NEW.from_stage),
                           'after', jsonb_build_object('stage', NEW.to_stage, 'probability', NEW.probability)));
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION crm_private.audit_stage_change() IS 'Trigger: audits each stage change of a deal (not its first stage, set when it is created).';
CREATE TRIGGER deal_stage_changes_audit AFTER INSERT ON crm.deal_stage_changes
    FOR EACH ROW WHEN (NEW.from_stage IS NOT NULL) EXECUTE FUNCTION crm_private.audit_stage_change();

CREATE FUNCTION crm_private.audit_custom_field() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    v_fields text[] := ARRAY['entity', 'key', 'label', 'type', 'required', 'options'];
    v_diff jsonb;
BEGIN
    IF TG_OP = 'INSERT' THEN
        IF NEW.created_at < now() THEN
            RETURN NULL;
        END IF;
        PERFORM crm_private.audit(NEW.tenant_id, 'custom_field.created', 'custom_field', NEW.id::text,
            jsonb_build_object('after', (SELECT jsonb_object_agg(f, to_jsonb(NEW) -> f) FROM unnest(v_fields) f)));
    ELSIF TG_OP = 'DELETE' THEN
        PERFORM crm_private.audit(OLD.tenant_id, 'custom_field.deleted', 'custom_field', OLD.id::text,
            jsonb_build_object('before', (SELECT jsonb_object_agg(f, to_jsonb(OLD) -> f) FROM unnest(v_fields) f)));
    ELSE
        v_diff := crm_private.audit_diff(to_jsonb(OLD), to_jsonb(NEW), v_fields);
        IF v_diff IS NOT NULL THEN
            PERFORM crm_private.audit(NEW.tenant_id, 'custom_field.updated', 'custom_field', NEW.id::text, v_diff);
        END IF;
    END IF;
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION crm_private.audit_custom_field() IS 'Trigger: audits custom field definitions created, changed and deleted.';
CREATE TRIGGER custom_fields_audit AFTER INSERT OR UPDATE OR DELETE ON core.custom_fields
    FOR EACH ROW EXECUTE FUNCTION crm_private.audit_custom_field();

--------------------------------------------------------------------------------------------
-- Sealing and verifying
--------------------------------------------------------------------------------------------

-- An entry's digest: every column but the sealer's bookkeeping, in a text form that does
-- not depend on the session (epoch seconds, not a formatted time).
CREATE FUNCTION crm_private.audit_entry_digest(e core.audit_log) RETURNS bytea
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $$
SELECT pg_catalog.sha256(pg_catalog.convert_to(pg_catalog.jsonb_build_array(
    e.tenant_id, e.id, extract(epoch FROM e.occurred_at)::text, e.xid::text, e.actor_id,
    e.actor_role, e.db_role, e.action, e.object_type, e.object_id, e.changes, e.request_id, e.client_ip)::text, 'UTF8'))
$$;
COMMENT ON FUNCTION crm_private.audit_entry_digest(core.audit_log) IS 'sha256 of an audit entry''s content, as the sealer records it.';

CREATE FUNCTION crm_private.audit_seal_hash(s core.audit_seals) RETURNS bytea
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $$
SELECT pg_catalog.sha256(s.prev_hash || pg_catalog.convert_to(pg_catalog.concat_ws(':',
    s.tenant_id, s.seq, s.entries, s.first_entry, s.last_entry, extract(epoch FROM s.oldest_entry_at)), 'UTF8')
    || s.entries_digest)
$$;
COMMENT ON FUNCTION crm_private.audit_seal_hash(core.audit_seals) IS 'A seal''s hash: sha256 of the previous seal''s hash, its header and the digest of its entries'' digests.';

-- Seals every committed entry not sealed yet. Safe to run twice and concurrently (one runs,
-- the other returns 0). Candidates are entries of transactions at or above the horizon (the
-- oldest transaction still running when it last ran), read through audit_log_xid_idx; any
-- entry below it that is not sealed was not written through pg_crm when it claims to have
-- been, and verification calls it forged.
CREATE FUNCTION crm_private.seal_audit_log(only_tenant uuid DEFAULT NULL) RETURNS integer
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    v_state crm_private.audit_state;
    v_sysid bigint := (SELECT system_identifier FROM pg_control_system());
    v_xmin xid8 := pg_snapshot_xmin(pg_current_snapshot());
    v_floor xid8;
    v_sealed integer;
BEGIN
    IF NOT pg_try_advisory_xact_lock(pg_catalog.hashtext('pg_crm.seal_audit_log')) THEN
        RETURN 0;
    END IF;
    SELECT * INTO v_state FROM crm_private.audit_state;
    -- First run, or restored into another cluster: every entry is a candidate once. One
    -- tenant's (a purged workspace's, resealed): all of its unsealed entries.
    v_floor := CASE WHEN v_state.system_identifier = v_sysid AND only_tenant IS NULL THEN v_state.horizon ELSE '0'::xid8 END;
    WITH candidates AS MATERIALIZED (
        SELECT e.tenant_id, e.id, e.occurred_at, crm_private.audit_entry_digest(e) AS digest
          FROM core.audit_log e
         WHERE e.xid >= v_floor AND (only_tenant IS NULL OR e.tenant_id = only_tenant)
           AND NOT EXISTS (SELECT 1 FROM core.audit_sealed s WHERE s.tenant_id = e.tenant_id AND s.entry_id = e.id)
    ), groups AS (
        SELECT c.tenant_id, count(*)::integer AS entries, min(c.id) AS first_entry, max(c.id) AS last_entry,
               min(c.occurred_at) AS oldest_entry_at,
               sha256(string_agg(int8send(c.id) || c.digest, ''::bytea ORDER BY c.id)) AS entries_digest,
               (SELECT s FROM core.audit_seals s WHERE s.tenant_id = c.tenant_id ORDER BY s.seq DESC LIMIT 1) AS prev
          FROM candidates c GROUP BY c.tenant_id
    ), seals AS (
        SELECT ROW(g.tenant_id, coalesce((g.prev).seq, 0) + 1, now(), g.entries, g.first_entry, g.last_entry,
                   g.oldest_entry_at, g.entries_digest, coalesce((g.prev).hash, '\x'::bytea), NULL)::core.audit_seals AS s
          FROM groups g
    ), sealed AS (
        INSERT INTO core.audit_seals
        SELECT (x.s).tenant_id, (x.s).seq, (x.s).sealed_at, (x.s).entries, (x.s).first_entry, (x.s).last_entry,
               (x.s).oldest_entry_at, (x.s).entries_digest, (x.s).prev_hash, crm_private.audit_seal_hash(x.s)
          FROM seals x ORDER BY (x.s).tenant_id
        RETURNING tenant_id, seq
    ), recorded AS (
        INSERT INTO core.audit_sealed (tenant_id, entry_id, seal_seq, occurred_at, digest)
        SELECT c.tenant_id, c.id, k.seq, c.occurred_at, c.digest FROM candidates c JOIN sealed k USING (tenant_id)
        RETURNING 1
    )
    SELECT count(*) INTO v_sealed FROM recorded;
    IF only_tenant IS NOT NULL THEN
        RETURN v_sealed;
    END IF;
    INSERT INTO crm_private.audit_state AS s (singleton, system_identifier, horizon)
    VALUES (true, v_sysid, v_xmin)
    ON CONFLICT (singleton) DO UPDATE SET system_identifier = excluded.system_identifier, horizon = excluded.horizon;
    RETURN v_sealed;
END
$$;
COMMENT ON FUNCTION crm_private.seal_audit_log(uuid) IS 'Operator/job: seals every committed audit entry not sealed yet into its tenant''s hash chain (or, given a tenant, every unsealed entry of that tenant); returns how many. Run every second by pg_crm''s background worker; safe to run twice.';

-- Verifies one tenant's chain: the seals link up, each seal's entries are its own, and each
-- entry still matches its sealed digest. Problems are listed in entry order (at most 100),
-- the first one named apart.
CREATE FUNCTION crm_private.verify_audit_chain(tenant uuid) RETURNS jsonb
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    v_state crm_private.audit_state;
    v_horizon xid8;
    v_dropped timestamptz;
    v_prev bytea := '\x'::bytea;
    s core.audit_seals;
    v_problems jsonb := '[]';
    v_seals integer := 0;
    v_checked bigint;
    v_unsealed bigint;
BEGIN
    SELECT * INTO v_state FROM crm_private.audit_state;
    v_horizon := CASE WHEN v_state.system_identifier = (SELECT system_identifier FROM pg_control_system())
                      THEN v_state.horizon ELSE '0'::xid8 END;
    v_dropped := coalesce(v_state.dropped_before, '-infinity');
    FOR s IN SELECT * FROM core.audit_seals x WHERE x.tenant_id = verify_audit_chain.tenant ORDER BY x.seq LOOP
        v_seals := v_seals + 1;
        IF s.seq <> v_seals OR s.prev_hash <> v_prev OR s.hash <> crm_private.audit_seal_hash(s) THEN
            v_problems := v_problems || jsonb_build_object('seal', s.seq, 'entry_id', s.first_entry, 'problem', 'seal_altered');
        ELSIF s.oldest_entry_at >= v_dropped AND s.entries_digest IS DISTINCT FROM (
                SELECT sha256(string_agg(int8send(d.entry_id) || d.digest, ''::bytea ORDER BY d.entry_id))
                  FROM core.audit_sealed d WHERE d.tenant_id = s.tenant_id AND d.seal_seq = s.seq) THEN
            v_problems := v_problems || jsonb_build_object('seal', s.seq, 'entry_id', s.first_entry, 'problem', 'seal_entries_altered');
        END IF;
        v_prev := s.hash;
    END LOOP;
    WITH sealed AS (
        SELECT d.entry_id, d.digest FROM core.audit_sealed d
         WHERE d.tenant_id = verify_audit_chain.tenant AND d.occurred_at >= v_dropped
    ), entries AS (
        SELECT e.id, e.xid, crm_private.audit_entry_digest(e) AS digest FROM core.audit_log e
         WHERE e.tenant_id = verify_audit_chain.tenant
    ), joined AS (
        SELECT coalesce(d.entry_id, e.id) AS id,
               CASE WHEN e.id IS NULL THEN 'deleted'
                    WHEN d.entry_id IS NULL AND e.xid < v_horizon THEN 'forged'
                    WHEN d.entry_id IS NULL THEN 'unsealed'
                    WHEN d.digest <> e.digest THEN 'altered' END AS problem
          FROM sealed d FULL JOIN entries e ON e.id = d.entry_id
    )
    SELECT count(*) FILTER (WHERE problem IS NULL),
           count(*) FILTER (WHERE problem = 'unsealed'),
           v_problems || coalesce((SELECT jsonb_agg(jsonb_build_object('entry_id', j.id, 'problem', j.problem) ORDER BY j.id)
                                     FROM (SELECT * FROM joined WHERE problem NOT IN ('unsealed') ORDER BY id LIMIT 100) j), '[]')
      INTO v_checked, v_unsealed, v_problems
      FROM joined;
    SELECT coalesce(jsonb_agg(p ORDER BY (p ->> 'entry_id')::bigint), '[]') INTO v_problems FROM jsonb_array_elements(v_problems) p;
    RETURN jsonb_build_object(
        'valid', jsonb_array_length(v_problems) = 0,
        'seals', v_seals,
        'entries_verified', v_checked,
        'entries_not_sealed_yet', v_unsealed,
        'first_broken', v_problems -> 0,
        'problems', v_problems);
END
$$;
COMMENT ON FUNCTION crm_private.verify_audit_chain(uuid) IS 'Operator: verifies a tenant''s audit chain; {valid, seals, entries_verified, entries_not_sealed_yet, first_broken, problems[{entry_id, problem: altered|deleted|forged|seal_altered|seal_entries_altered}]}.';

-- The newest seal hash of a tenant, to copy somewhere the database's superusers cannot
-- write (an anchor outside).
CREATE FUNCTION crm_private.audit_chain_head(tenant uuid) RETURNS jsonb
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
SELECT jsonb_build_object('tenant_id', s.tenant_id, 'seq', s.seq, 'hash', encode(s.hash, 'hex'), 'sealed_at', s.sealed_at)
  FROM core.audit_seals s WHERE s.tenant_id = audit_chain_head.tenant ORDER BY s.seq DESC LIMIT 1
$$;
COMMENT ON FUNCTION crm_private.audit_chain_head(uuid) IS 'Operator: the newest seal of a tenant''s audit chain (seq, hash), to keep outside the database as an anchor.';

--------------------------------------------------------------------------------------------
-- Partitions and retention
--------------------------------------------------------------------------------------------

CREATE FUNCTION crm_private.audit_month_partition(month date) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT 'audit_log_y' || pg_catalog.to_char(month, 'YYYY') || 'm' || pg_catalog.to_char(month, 'MM') $$;
COMMENT ON FUNCTION crm_private.audit_month_partition(date) IS 'The name of the audit log''s partition for a month (UTC).';

-- Creates the partitions of this month and the next two, and of every month whose entries
-- wait in the default partition (moving them in). Safe to run twice.
CREATE FUNCTION crm_private.audit_ensure_partitions(at timestamptz DEFAULT now()) RETURNS integer
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    v_this date := date_trunc('month', at AT TIME ZONE 'UTC')::date;
    v_month date;
    v_name text;
    v_lo timestamptz;
    v_hi timestamptz;
    v_made integer := 0;
    v_moving core.audit_log[];
    v_dropped timestamptz := coalesce((SELECT dropped_before FROM crm_private.audit_state), '-infinity');
BEGIN
    PERFORM pg_advisory_xact_lock(pg_catalog.hashtext('pg_crm.audit_partitions'));
    FOR v_month IN
        SELECT m FROM (SELECT DISTINCT date_trunc('month', d.occurred_at AT TIME ZONE 'UTC')::date AS m FROM core.audit_log_default d
                       UNION SELECT (v_this + make_interval(months => i))::date FROM generate_series(0, 2) i) months
         ORDER BY m
    LOOP
        v_name := crm_private.audit_month_partition(v_month);
        v_lo := v_month::timestamp AT TIME ZONE 'UTC';
        v_hi := (v_month + interval '1 month')::timestamp AT TIME ZONE 'UTC';
        CONTINUE WHEN to_regclass(format('core.%I', v_name)) IS NOT NULL OR v_hi <= v_dropped;
        -- Entries of that month waiting in the default partition move into it.
        PERFORM set_config('pg_crm.audit_maintenance', 'on', true);
        WITH moved AS (DELETE FROM core.audit_log_default d WHERE d.occurred_at >= v_lo AND d.occurred_at < v_hi RETURNING d.*)
        SELECT array_agg(moved) INTO v_moving FROM moved;
        PERFORM set_config('pg_crm.audit_maintenance', 'off', true);
        EXECUTE format('CREATE TABLE core.%I PARTITION OF core.audit_log FOR VALUES FROM (%L) TO (%L)', v_name, v_lo, v_hi);
        EXECUTE format('ALTER TABLE core.%I OWNER TO crm_owner', v_name);
        PERFORM crm_private.audit_index_partition(format('core.%I', v_name)::regclass);
        INSERT INTO core.audit_log SELECT * FROM unnest(v_moving);
        v_made := v_made + 1;
    END LOOP;
    RETURN v_made;
END
$$;
COMMENT ON FUNCTION crm_private.audit_ensure_partitions(timestamptz) IS 'Job: creates the audit log''s monthly partitions (this month and the next two, and any month waiting in the default partition); returns how many. Safe to run twice.';

-- Drops every month older than every tenant's retention (at least 13 months, or the longest
-- a tenant asked for), after sealing, so nothing unsealed is lost. `at` is the clock (a
-- test passes a later one). Returns the months dropped.
CREATE FUNCTION crm_private.audit_apply_retention(at timestamptz DEFAULT now()) RETURNS integer
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    v_keep integer := greatest(13, coalesce((SELECT max(t.audit_retention_months) FROM core.tenants t), 13));
    v_boundary timestamptz := (date_trunc('month', at AT TIME ZONE 'UTC') - make_interval(months => v_keep)) AT TIME ZONE 'UTC';
    p record;
    v_dropped integer := 0;
BEGIN
    PERFORM pg_advisory_xact_lock(pg_catalog.hashtext('pg_crm.audit_partitions'));
    PERFORM crm_private.seal_audit_log();
    PERFORM set_config('pg_crm.audit_maintenance', 'on', true);
    FOR p IN
        SELECT c.oid::regclass AS part, to_date(substr(c.relname, 12), 'YYYY"m"MM') AS month
          FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
         WHERE i.inhparent = 'core.audit_log'::regclass AND c.relname ~ '^audit_log_y[0-9]{4}m[0-9]{2}$'
         ORDER BY 2
    LOOP
        CONTINUE WHEN (p.month + interval '1 month')::timestamp AT TIME ZONE 'UTC' > v_boundary;
        EXECUTE format('ALTER TABLE core.audit_log DETACH PARTITION %s', p.part);
        EXECUTE format('DROP TABLE %s', p.part);
        v_dropped := v_dropped + 1;
    END LOOP;
    DELETE FROM core.audit_log_default d WHERE d.occurred_at < v_boundary;
    -- The digests of dropped entries go too; the seals stay, and are the chain's anchor.
    DELETE FROM core.audit_sealed d WHERE d.occurred_at < v_boundary;
    PERFORM set_config('pg_crm.audit_maintenance', 'off', true);
    UPDATE crm_private.audit_state SET dropped_before = greatest(dropped_before, v_boundary);
    RETURN v_dropped;
END
$$;
COMMENT ON FUNCTION crm_private.audit_apply_retention(timestamptz) IS 'Job: drops the audit log''s months older than every tenant''s retention (13 months by default); the seals stay, so the rest still verifies. `at` is the clock. Safe to run twice.';

-- How long a tenant keeps its audit entries (F11.4): 13 months unless it asks for more.
ALTER TABLE core.tenants ADD COLUMN audit_retention_months integer NOT NULL DEFAULT 13
    CONSTRAINT tenants_audit_retention_months_check CHECK (audit_retention_months BETWEEN 12 AND 120);
COMMENT ON COLUMN core.tenants.audit_retention_months IS 'Months the workspace''s audit entries are kept (12 to 120; default 13). Whole months are dropped once older than every workspace''s retention.';

-- Every periodic job, in one call: pg_crm's background worker runs it every second, an
-- operator may run it any time (each part is safe to run twice).
CREATE FUNCTION crm_private.run_jobs(at timestamptz DEFAULT now()) RETURNS jsonb
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    v_sealed integer := crm_private.seal_audit_log();
    v_upkept timestamptz := (SELECT upkept_at FROM crm_private.audit_state);
    v_partitions integer := 0;
    v_dropped integer := 0;
BEGIN
    -- Partition upkeep and retention hourly (and whenever the clock is not where it was).
    IF v_upkept IS NULL OR v_upkept <= at - interval '1 hour' OR v_upkept > at THEN
        v_partitions := crm_private.audit_ensure_partitions(at);
        v_dropped := crm_private.audit_apply_retention(at);
        PERFORM crm_private.events_apply_retention(at);
        UPDATE crm_private.audit_state SET upkept_at = at;
    END IF;
    RETURN jsonb_build_object('audit_entries_sealed', v_sealed, 'audit_partitions_created', v_partitions,
                              'audit_months_dropped', v_dropped, 'workspaces_deleted', crm_private.run_due_deletions(at));
END
$$;
COMMENT ON FUNCTION crm_private.run_jobs(timestamptz) IS 'Job: every periodic task of pg_crm (audit sealing and due workspace deletions; partition upkeep and retention hourly). Run every second by pg_crm''s background worker; safe to run any time, and twice. `at` is the clock.';

--------------------------------------------------------------------------------------------
-- Reading (F11.5, journey 4.6)
--------------------------------------------------------------------------------------------

CREATE FUNCTION api.list_audit_events(actor uuid DEFAULT NULL, action text DEFAULT NULL, object_type text DEFAULT NULL,
                                      object_id text DEFAULT NULL, since timestamptz DEFAULT NULL, until timestamptz DEFAULT NULL,
                                      page_size integer DEFAULT 25, cursor text DEFAULT NULL) RETURNS jsonb
    LANGUAGE plpgsql STABLE SECURITY INVOKER
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    v_n integer := crm_private.page_size(list_audit_events.page_size);
    v_after record := crm_private.read_cursor(list_audit_events.cursor, 'audit_events', 'newest');
    v_before bigint := v_after.value::bigint;
    v_rows jsonb;
    v_next text;
BEGIN
    PERFORM crm_private.require_permission('audit.read');
    SELECT coalesce(jsonb_agg(x.j ORDER BY x.id DESC) FILTER (WHERE x.rn <= v_n), '[]'::jsonb),
           CASE WHEN count(*) > v_n THEN
                crm_private.make_cursor('audit_events', 'newest', (min(x.id) FILTER (WHERE x.rn <= v_n))::text, crm_private.tenant_id()) END
      INTO v_rows, v_next
      FROM (SELECT row_number() OVER (ORDER BY e.id DESC) AS rn, e.id,
                   jsonb_build_object('id', e.id, 'occurred_at', e.occurred_at, 'actor_id', e.actor_id,
                                      'actor_role', e.actor_role, 'action', e.action, 'object_type', e.object_type,
                                      'object_id', e.object_id, 'changes', e.changes, 'request_id', e.request_id,
                                      'client_ip', e.client_ip) AS j
              FROM core.audit_log e
             WHERE e.tenant_id = crm_private.tenant_id()
               AND (v_before IS NULL OR e.id < v_before)
               AND (list_audit_events.actor IS NULL OR e.actor_id = list_audit_events.actor)
               AND (list_audit_events.action IS NULL OR e.action = list_audit_events.action)
               AND (list_audit_events.object_type IS NULL OR e.object_type = list_audit_events.object_type)
               AND (list_audit_events.object_id IS NULL OR e.object_id = list_audit_events.object_id)
               AND (list_audit_events.since IS NULL OR e.occurred_at >= list_audit_events.since)
               AND (list_audit_events.until IS NULL OR e.occurred_at < list_audit_events.until)
             ORDER BY e.id DESC
             LIMIT v_n + 1) x;
    RETURN jsonb_build_object('data', v_rows, 'next_cursor', v_next);
END
$$;
COMMENT ON FUNCTION api.list_audit_events(uuid, text, text, text, timestamptz, timestamptz, integer, text) IS
'The workspace''s audit trail, newest first: {data: [{id, occurred_at, actor_id, actor_role, action, object_type, object_id, changes: {before, after}, request_id, client_ip}], next_cursor}. Filters: actor (user id), action (e.g. member.role_changed, deal.stage_changed), object_type and object_id, since (inclusive) and until (exclusive). page_size 1-100 (default 25). Admins (audit.read); others 42501.';

-- The admin's verification runs as pg_crm (the seals are nobody's to read), for the
-- request's own tenant only.
CREATE FUNCTION crm_private.verify_current_audit_log() RETURNS jsonb
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    PERFORM crm_private.require_permission('audit.read');
    RETURN crm_private.verify_audit_chain(crm_private.tenant_id());
END
$$;
COMMENT ON FUNCTION crm_private.verify_current_audit_log() IS 'crm_private.verify_audit_chain for the current request''s tenant, for holders of audit.read.';

CREATE FUNCTION api.verify_audit_log() RETURNS jsonb
    LANGUAGE plpgsql STABLE SECURITY INVOKER
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    RETURN crm_private.verify_current_audit_log();
END
$$;
COMMENT ON FUNCTION api.verify_audit_log() IS
'Verifies the workspace''s audit chain: {valid, seals, entries_verified, entries_not_sealed_yet, first_broken, problems: [{entry_id, problem}]}, where problem is altered (changed since it was sealed), deleted, forged (never sealed though older than the sealer''s horizon), seal_altered or seal_entries_altered. Entries are sealed about a second after they commit. Admins (audit.read); others 42501.';

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

INSERT INTO core.permissions (key, description, builtin) VALUES
    ('workspace.delete', 'Ask for the workspace''s deletion, or cancel it', true);
INSERT INTO core.role_permissions (role, permission, builtin) VALUES ('admin', 'workspace.delete', true);

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

-- Two settings an operator may set now (reauthentication_expiry was missing from the list).
ALTER TABLE crm_private.auth_settings DROP CONSTRAINT auth_settings_key_check;
ALTER TABLE crm_private.auth_settings ADD CONSTRAINT auth_settings_key_check CHECK (key IN (
        'site_url', 'uri_allow_list', 'autoconfirm', 'disable_signup', 'password_min_length',
        'session_inactivity_timeout', 'session_timebox', 'refresh_token_reuse_interval',
        'otp_expiry', 'invite_expiry', 'login_failures_per_email', 'login_failures_per_ip',
        'login_window', 'signups_per_ip', 'signups_per_email', 'recovers_per_ip',
        'recovers_per_email', 'verifies_per_ip', 'verify_failures_per_email', 'send_window',
        'reauthentication_expiry', 'security_burst_per_minute'));

-- The auth functions that now audit sign-ins, failed sign-ins, logouts and password resets,
-- and the settings' defaults.
CREATE OR REPLACE FUNCTION crm_private.auth_config() RETURNS jsonb
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    RETURN jsonb_build_object(
        'site_url', 'http://localhost:3000',
        'uri_allow_list', '[]'::jsonb,
        'autoconfirm', false,
        'disable_signup', false,
        'password_min_length', 8,
        'session_inactivity_timeout', crm_private.session_inactivity_seconds(),
        'session_timebox', 0,
        'refresh_token_reuse_interval', 10,
        'otp_expiry', 86400,
        'invite_expiry', 604800,
        'login_failures_per_email', 10,
        'login_failures_per_ip', 50,
        'login_window', 300,
        'signups_per_ip', 30,
        'signups_per_email', 5,
        'recovers_per_ip', 30,
        'recovers_per_email', 5,
        'verifies_per_ip', 60,
        'verify_failures_per_email', 5,
        'reauthentication_expiry', 300,
        'security_burst_per_minute', 20,
        'send_window', 3600)
        || coalesce((SELECT jsonb_object_agg(s.key, s.value) FROM crm_private.auth_settings s), '{}'::jsonb);
END
$$;

CREATE OR REPLACE FUNCTION crm_private.auth_refusal(u auth.users) RETURNS jsonb
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    v_member record;
BEGIN
    IF u.deleted_at IS NOT NULL THEN
        RETURN crm_private.auth_error(400, 'invalid_credentials', 'Invalid login credentials');
    END IF;
    IF u.banned_until IS NOT NULL AND u.banned_until > now() THEN
        RETURN crm_private.auth_error(400, 'user_banned', 'User is banned');
    END IF;
    SELECT * INTO v_member FROM crm_private.auth_membership(u.id);
    IF v_member.tenant_id IS NOT NULL THEN
        -- As the gate decides (pg_crm's domain::lifecycle): during a pending deletion only
        -- the workspace's active admins sign in (to cancel it).
        IF v_member.tenant_status = 'pending_deletion' AND (v_member.role <> 'admin' OR v_member.member_status <> 'active') THEN
            RETURN crm_private.auth_error(400, 'user_banned', 'This workspace is scheduled for deletion');
        ELSIF v_member.tenant_status = 'deleted' THEN
            RETURN crm_private.auth_error(400, 'user_banned', 'This workspace has been deleted');
        ELSIF v_member.tenant_status NOT IN ('active', 'pending_deletion') THEN
            RETURN crm_private.auth_error(400, 'user_banned', 'This workspace is suspended');
        END IF;
        IF v_member.member_status <> 'active' THEN
            RETURN crm_private.auth_error(400, 'user_banned', 'Your membership of this workspace is deactivated');
        END IF;
    END IF;
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION crm_private.auth_issue_session(user_id uuid, req jsonb, method text) RETURNS jsonb
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    cfg jsonb := crm_private.auth_config();
    v_session uuid := gen_random_uuid();
    v_token text;
    u auth.users;
    v_timebox integer := coalesce((cfg ->> 'session_timebox')::integer, 0);
BEGIN
    INSERT INTO auth.sessions (id, user_id, created_at, updated_at, aal, not_after, refreshed_at, user_agent, ip)
    VALUES (v_session, user_id, now(), now(), 'aal1',
            CASE WHEN v_timebox > 0 THEN now() + make_interval(secs => v_timebox) END,
            now() AT TIME ZONE 'UTC', left(req ->> 'user_agent', 512), crm_private.auth_ip(req));
    v_token := crm_private.auth_new_refresh_token(user_id, v_session, NULL);
    UPDATE auth.users x SET last_sign_in_at = now(), updated_at = now()
     WHERE x.id = auth_issue_session.user_id RETURNING * INTO u;
    UPDATE auth.identities i SET last_sign_in_at = now() WHERE i.user_id = auth_issue_session.user_id;
    PERFORM crm_private.audit_auth(auth_issue_session.user_id, 'auth.signed_in', req,
        jsonb_build_object('after', jsonb_build_object('session_id', v_session, 'method', method)));
    RETURN crm_private.auth_session_reply(u, v_session, v_token, method);
END
$$;

CREATE OR REPLACE FUNCTION crm_private.auth_token_password(req jsonb) RETURNS jsonb
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    cfg jsonb := crm_private.auth_config();
    b jsonb := coalesce(req -> 'body', '{}'::jsonb);
    v_email text;
    v_password text;
    v_wait integer;
    v_ok boolean;
    v_refusal jsonb;
    v_window integer := (cfg ->> 'login_window')::integer;
    u auth.users;
BEGIN
    IF crm_private.auth_bad_type(b, ARRAY['email', 'password'], 'string') IS NOT NULL THEN
        RETURN crm_private.auth_error(400, 'validation_failed', 'Could not read the request body: email and password must be strings');
    END IF;
    v_password := crm_private.auth_text(b, 'password');
    IF coalesce(crm_private.auth_text(b, 'email'), '') = '' OR v_password IS NULL THEN
        RETURN crm_private.auth_error(400, 'validation_failed', 'Email and password are required');
    END IF;
    v_email := coalesce(crm_private.normalize_email(b ->> 'email'), lower(btrim(b ->> 'email')));
    IF char_length(v_email) > 255 THEN
        RETURN crm_private.auth_error(400, 'invalid_credentials', 'Invalid login credentials');
    END IF;
    v_wait := greatest(
        crm_private.auth_throttle('login:email:' || crm_private.auth_digest(v_email), (cfg ->> 'login_failures_per_email')::integer, v_window, false),
        crm_private.auth_throttle('login:ip:' || crm_private.auth_ip_bucket(req), (cfg ->> 'login_failures_per_ip')::integer, v_window, false));
    IF v_wait > 0 THEN
        RETURN crm_private.auth_error(429, 'over_request_rate_limit', 'Request rate limit reached', jsonb_build_object('retry_after', v_wait));
    END IF;
    SELECT * INTO u FROM auth.users x WHERE x.email = v_email AND NOT x.is_sso_user AND x.deleted_at IS NULL;
    IF FOUND AND u.encrypted_password IS NOT NULL AND u.encrypted_password <> '' THEN
        v_ok := crm_private.password_matches(v_password, u.encrypted_password);
    ELSE
        -- As long as a wrong password: the reply time does not tell whether the account exists.
        PERFORM crm_private.password_hash(left(v_password, 72));
        v_ok := false;
    END IF;
    IF NOT v_ok THEN
        PERFORM crm_private.auth_throttle('login:email:' || crm_private.auth_digest(v_email), (cfg ->> 'login_failures_per_email')::integer, v_window, true);
        PERFORM crm_private.auth_throttle('login:ip:' || crm_private.auth_ip_bucket(req), (cfg ->> 'login_failures_per_ip')::integer, v_window, true);
        IF u.id IS NOT NULL THEN
            PERFORM crm_private.audit_auth(u.id, 'auth.sign_in_failed', req, '{}', false);
        END IF;
        RETURN crm_private.auth_error(400, 'invalid_credentials', 'Invalid login credentials');
    END IF;
    IF u.email_confirmed_at IS NULL THEN
        RETURN crm_private.auth_error(400, 'email_not_confirmed', 'Email not confirmed');
    END IF;
    v_refusal := crm_private.auth_refusal(u);
    IF v_refusal IS NOT NULL THEN
        RETURN v_refusal;
    END IF;
    RETURN crm_private.auth_issue_session(u.id, req, 'password');
END
$$;

CREATE OR REPLACE FUNCTION crm_private.auth_logout(req jsonb) RETURNS jsonb
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    v_scope text := coalesce(nullif(crm_private.auth_text(req -> 'query', 'scope'), ''), 'global');
    v_user uuid;
    v_session uuid;
BEGIN
    IF v_scope NOT IN ('global', 'local', 'others') THEN
        RETURN crm_private.auth_error(400, 'validation_failed', 'Unsupported logout scope: use global, local or others');
    END IF;
    BEGIN
        v_user := (req #>> '{user,id}')::uuid;
        v_session := (req #>> '{user,session_id}')::uuid;
    EXCEPTION WHEN invalid_text_representation THEN
        RETURN crm_private.auth_error(403, 'session_not_found', 'Session from session_id claim in JWT does not exist');
    END;
    IF v_session IS NULL OR NOT EXISTS (SELECT 1 FROM auth.sessions s WHERE s.id = v_session AND s.user_id = v_user) THEN
        RETURN crm_private.auth_error(403, 'session_not_found', 'Session from session_id claim in JWT does not exist');
    END IF;
    IF v_scope = 'local' THEN
        DELETE FROM auth.sessions s WHERE s.id = v_session;
    ELSIF v_scope = 'others' THEN
        PERFORM crm_private.auth_end_sessions(v_user, v_session);
    ELSE
        PERFORM crm_private.auth_end_sessions(v_user);
    END IF;
    PERFORM crm_private.audit_auth(v_user, 'auth.signed_out', req,
        jsonb_build_object('after', jsonb_build_object('session_id', v_session, 'scope', v_scope)));
    RETURN jsonb_build_object('status', 204);
END
$$;

CREATE OR REPLACE FUNCTION crm_private.auth_user_update(req jsonb) RETURNS jsonb
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    cfg jsonb := crm_private.auth_config();
    b jsonb := coalesce(req -> 'body', '{}'::jsonb);
    cur record := crm_private.auth_current_user(req);
    u auth.users;
    v_refusal jsonb;
    v_password text;
    v_email text;
    v_otp text[];
BEGIN
    IF cur.refusal IS NOT NULL THEN
        RETURN cur.refusal;
    END IF;
    u := cur.u;
    IF crm_private.auth_bad_type(b, ARRAY['email', 'password', 'nonce'], 'string') IS NOT NULL
       OR crm_private.auth_bad_type(b, ARRAY['data'], 'object') IS NOT NULL THEN
        RETURN crm_private.auth_error(400, 'validation_failed', 'Could not read the request body: email and password must be strings and data an object');
    END IF;
    v_password := crm_private.auth_text(b, 'password');
    IF b ? 'email' AND crm_private.auth_text(b, 'email') IS NOT NULL THEN
        v_email := crm_private.normalize_email(b ->> 'email');
        IF v_email IS NULL THEN
            RETURN crm_private.auth_error(400, 'validation_failed', 'Unable to validate email address: invalid format');
        END IF;
        IF v_email = u.email THEN
            v_email := NULL;
        ELSIF EXISTS (SELECT 1 FROM auth.users x WHERE x.email = v_email AND x.id <> u.id AND NOT x.is_sso_user) THEN
            RETURN crm_private.auth_error(422, 'email_exists', 'A user with this email address has already been registered');
        END IF;
    END IF;
    IF v_password IS NOT NULL THEN
        v_refusal := crm_private.auth_password_refusal(v_password, cfg);
        IF v_refusal IS NOT NULL THEN
            RETURN v_refusal;
        END IF;
        IF crm_private.password_matches(v_password, u.encrypted_password) THEN
            RETURN crm_private.auth_error(422, 'same_password', 'New password should be different from the old password.');
        END IF;
    END IF;

    IF jsonb_typeof(b -> 'data') = 'object' THEN
        UPDATE auth.users x
           SET raw_user_meta_data = jsonb_strip_nulls(coalesce(x.raw_user_meta_data, '{}'::jsonb) || (b -> 'data')),
               updated_at = now()
         WHERE x.id = u.id;
    END IF;
    IF v_password IS NOT NULL THEN
        UPDATE auth.users x
           SET encrypted_password = crm_private.password_hash(v_password), recovery_token = '',
               updated_at = now()
         WHERE x.id = u.id;
        DELETE FROM auth.one_time_tokens t WHERE t.user_id = u.id AND t.token_type = 'recovery_token';
        -- A new password ends every other session (a reset locks out whoever knew the old one).
        PERFORM crm_private.auth_end_sessions(u.id, (req #>> '{user,session_id}')::uuid);
        PERFORM crm_private.audit_auth(u.id, 'auth.password_changed', req);
    END IF;
    IF v_email IS NOT NULL THEN
        v_otp := crm_private.auth_new_otp(v_email);
        UPDATE auth.users x
           SET email_change = v_email, email_change_token_new = crm_private.auth_code_digest(u.id::text, v_otp[1]),
               email_change_sent_at = now(), email_change_confirm_status = 0, updated_at = now()
         WHERE x.id = u.id;
        INSERT INTO auth.one_time_tokens (id, user_id, token_type, token_hash, relates_to, created_at, updated_at)
        VALUES (gen_random_uuid(), u.id, 'email_change_token_new', crm_private.auth_digest(v_otp[2]), v_email,
                now() AT TIME ZONE 'UTC', now() AT TIME ZONE 'UTC')
        ON CONFLICT (user_id, token_type) DO UPDATE
            SET token_hash = EXCLUDED.token_hash, relates_to = EXCLUDED.relates_to,
                created_at = EXCLUDED.created_at, updated_at = EXCLUDED.updated_at;
        PERFORM crm_private.auth_queue_email((SELECT m.tenant_id FROM crm_private.auth_membership(u.id) m),
                                             'email_change', v_email, v_otp,
                                             crm_private.auth_text(req -> 'query', 'redirect_to'));
    END IF;
    SELECT * INTO u FROM auth.users x WHERE x.id = u.id;
    RETURN jsonb_build_object('body', crm_private.auth_user_json(u));
END
$$;

CREATE OR REPLACE FUNCTION crm_private.auth_recover(req jsonb) RETURNS jsonb
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    cfg jsonb := crm_private.auth_config();
    b jsonb := coalesce(req -> 'body', '{}'::jsonb);
    v_email text;
    v_wait integer;
    u auth.users;
BEGIN
    IF crm_private.auth_bad_type(b, ARRAY['email'], 'string') IS NOT NULL
       OR coalesce(crm_private.auth_text(b, 'email'), '') = '' THEN
        RETURN crm_private.auth_error(400, 'validation_failed', 'Password recovery requires an email');
    END IF;
    v_email := crm_private.normalize_email(b ->> 'email');
    IF v_email IS NULL THEN
        RETURN crm_private.auth_error(400, 'validation_failed', 'Unable to validate email address: invalid format');
    END IF;
    v_wait := greatest(
        crm_private.auth_throttle('recover:ip:' || crm_private.auth_ip_bucket(req), (cfg ->> 'recovers_per_ip')::integer, (cfg ->> 'send_window')::integer, true),
        crm_private.auth_throttle('recover:email:' || crm_private.auth_digest(v_email), (cfg ->> 'recovers_per_email')::integer, (cfg ->> 'send_window')::integer, true));
    IF v_wait > 0 THEN
        RETURN crm_private.auth_error(429, 'over_email_send_rate_limit', 'Email rate limit exceeded', jsonb_build_object('retry_after', v_wait));
    END IF;
    SELECT * INTO u FROM auth.users x WHERE x.email = v_email AND NOT x.is_sso_user AND x.deleted_at IS NULL;
    IF FOUND THEN
        PERFORM crm_private.auth_send_link(u, 'recovery', crm_private.auth_text(req -> 'query', 'redirect_to'));
        PERFORM crm_private.audit_auth(u.id, 'auth.password_reset_requested', req, '{}', false);
    END IF;
    RETURN jsonb_build_object('body', '{}'::jsonb);
END
$$;

-- The CRM functions that note cross-tenant probes where they answer "not found", and log reads.
CREATE OR REPLACE FUNCTION crm_private.require_organization(id uuid, field text) RETURNS void
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

CREATE OR REPLACE FUNCTION crm_private.require_contact(id uuid, field text) RETURNS void
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

CREATE OR REPLACE FUNCTION crm_private.require_deal(id uuid, field text) RETURNS void
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

CREATE OR REPLACE FUNCTION api.get_organization(id uuid) RETURNS jsonb
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

CREATE OR REPLACE FUNCTION api.update_organization(id uuid, changes jsonb) RETURNS jsonb
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

CREATE OR REPLACE FUNCTION crm_private.set_organization_deleted(id uuid, deleted boolean) RETURNS jsonb
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

CREATE OR REPLACE FUNCTION api.get_contact(id uuid) RETURNS jsonb
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

CREATE OR REPLACE FUNCTION api.search_contacts(q text, page_size integer DEFAULT 25, cursor text DEFAULT NULL) RETURNS jsonb
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

CREATE OR REPLACE FUNCTION api.update_contact(id uuid, changes jsonb) RETURNS jsonb
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

CREATE OR REPLACE FUNCTION api.assign_contact(id uuid, assigned_to uuid) RETURNS jsonb
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

CREATE OR REPLACE FUNCTION crm_private.set_contact_deleted(id uuid, deleted boolean) RETURNS jsonb
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

CREATE OR REPLACE FUNCTION api.find_duplicate_contacts(id uuid DEFAULT NULL, first_name text DEFAULT NULL, last_name text DEFAULT NULL,
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

CREATE OR REPLACE FUNCTION api.merge_contacts(keep_id uuid, merge_id uuid) RETURNS jsonb
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

CREATE OR REPLACE FUNCTION api.get_deal(id uuid) RETURNS jsonb
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

CREATE OR REPLACE FUNCTION api.update_deal(id uuid, changes jsonb) RETURNS jsonb
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

CREATE OR REPLACE FUNCTION api.move_deal(id uuid, stage text, reason text DEFAULT NULL, probability integer DEFAULT NULL) RETURNS jsonb
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

CREATE OR REPLACE FUNCTION api.reopen_deal(id uuid, stage text DEFAULT NULL, probability integer DEFAULT NULL) RETURNS jsonb
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

CREATE OR REPLACE FUNCTION api.assign_deal(id uuid, assigned_to uuid) RETURNS jsonb
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

CREATE OR REPLACE FUNCTION crm_private.set_deal_deleted(id uuid, deleted boolean) RETURNS jsonb
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

CREATE OR REPLACE FUNCTION api.deal_stage_history(id uuid, page_size integer DEFAULT 25, cursor text DEFAULT NULL) RETURNS jsonb
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

CREATE OR REPLACE FUNCTION api.list_activities(contact_id uuid DEFAULT NULL, deal_id uuid DEFAULT NULL, archived boolean DEFAULT false,
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

-- The replaced function that uses pg_trgm's operators gets pg_trgm's schema on its
-- search_path again, as crm.sql does on a fresh install.
DO $trgm$
BEGIN
    EXECUTE pg_catalog.format('ALTER FUNCTION api.find_duplicate_contacts(uuid, text, text, text, text, uuid) SET search_path = pg_catalog, %I, pg_temp',
        (SELECT n.nspname FROM pg_catalog.pg_extension e JOIN pg_catalog.pg_namespace n ON n.oid = e.extnamespace
          WHERE e.extname = 'pg_trgm'));
END
$trgm$;

-- Grants, as grants.sql writes them on a fresh install.
REVOKE ALL ON ALL TABLES IN SCHEMA core, crm FROM PUBLIC;
REVOKE ALL ON FUNCTION
    crm_private.audit_index_partition(regclass),
    crm_private.audit_log_immutable(),
    crm_private.audit(uuid, text, text, text, jsonb, uuid, text, text),
    crm_private.audit_auth(uuid, text, jsonb, jsonb, boolean),
    crm_private.audit_diff(jsonb, jsonb, text[]),
    crm_private.audit_membership(),
    crm_private.audit_invitation(),
    crm_private.audit_tenant(),
    crm_private.audit_record(),
    crm_private.audit_assignment(),
    crm_private.audit_stage_change(),
    crm_private.audit_custom_field(),
    crm_private.audit_entry_digest(core.audit_log),
    crm_private.audit_seal_hash(core.audit_seals),
    crm_private.seal_audit_log(uuid),
    crm_private.verify_audit_chain(uuid),
    crm_private.audit_chain_head(uuid),
    crm_private.audit_month_partition(date),
    crm_private.audit_ensure_partitions(timestamptz),
    crm_private.audit_apply_retention(timestamptz),
    crm_private.run_jobs(timestamptz),
    crm_private.verify_current_audit_log(),
    api.list_audit_events(uuid, text, text, text, timestamptz, timestamptz, integer, text),
    api.verify_audit_log(),
    crm_private.log_access(text, text, uuid, jsonb),
    crm_private.record_security_event(text, jsonb, uuid, uuid),
    crm_private.event_queue_status(),
    crm_private.flush_events(),
    crm_private.security_burst_threshold(),
    crm_private.store_events(jsonb),
    crm_private.note_missing(text, uuid),
    crm_private.not_found(text, text, uuid),
    crm_private.events_apply_retention(timestamptz),
    api.list_security_events(text, uuid, timestamptz, timestamptz, integer, text),
    api.list_access_events(uuid, text, uuid, timestamptz, timestamptz, integer, text),
    crm_private.archive_directory(),
    crm_private.pending_deletion_tenant(),
    crm_private.settings_json(core.tenants),
    crm_private.workspace_settings(),
    crm_private.schedule_tenant_deletion(uuid, timestamptz, uuid),
    crm_private.request_current_deletion(),
    crm_private.cancel_tenant_deletion(uuid),
    crm_private.cancel_pending_deletion(),
    crm_private.tenant_tables(),
    crm_private.archive_tenant(uuid),
    crm_private.purge_tenant_batch(uuid, integer),
    crm_private.run_due_deletions(timestamptz, integer),
    crm_private.delete_tenant_now(uuid),
    api.get_workspace_settings(),
    api.update_workspace_settings(jsonb),
    api.request_workspace_deletion(text),
    api.cancel_workspace_deletion()
FROM PUBLIC;
GRANT EXECUTE ON FUNCTION
    crm_private.verify_current_audit_log(),
    crm_private.log_access(text, text, uuid, jsonb),
    crm_private.note_missing(text, uuid),
    crm_private.not_found(text, text, uuid),
    api.list_audit_events(uuid, text, text, text, timestamptz, timestamptz, integer, text),
    api.verify_audit_log(),
    api.list_security_events(text, uuid, timestamptz, timestamptz, integer, text),
    api.list_access_events(uuid, text, uuid, timestamptz, timestamptz, integer, text),
    crm_private.pending_deletion_tenant(),
    crm_private.settings_json(core.tenants),
    crm_private.workspace_settings(),
    crm_private.cancel_pending_deletion(),
    crm_private.request_current_deletion(),
    api.get_workspace_settings(),
    api.update_workspace_settings(jsonb),
    api.request_workspace_deletion(text),
    api.cancel_workspace_deletion()
TO authenticated;
GRANT SELECT ON core.audit_log, core.security_events, core.access_events TO authenticated;
GRANT UPDATE (retention_policy, access_log, audit_retention_months, deletion_grace_days) ON core.tenants TO authenticated;

--------------------------------------------------------------------------------------------
-- Data in and out (sql/data.sql): erasure may empty custom field values and activity texts.
--------------------------------------------------------------------------------------------
-- The permissions schema.sql now has.
INSERT INTO core.permissions (key, description, builtin) VALUES
    ('data.import', 'Import contacts and organizations from CSV', true),
    ('data.erase', 'Erase a person''s personal data (GDPR)', true);
INSERT INTO core.role_permissions (role, permission, builtin) VALUES
    ('admin', 'data.import', true), ('admin', 'data.erase', true);

CREATE OR REPLACE FUNCTION crm_private.check_custom_fields() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    v_definitions jsonb;
BEGIN
    -- Erasure (api.erase_contact) empties the values whatever the definitions require.
    IF crm_private.user_id() IS NULL OR pg_catalog.current_setting('pg_crm.erasing', true) = 'on' THEN
        RETURN NEW;
    END IF;
    IF TG_OP = 'UPDATE' AND NEW.custom_fields IS NOT DISTINCT FROM OLD.custom_fields THEN
        RETURN NEW;
    END IF;
    SELECT coalesce(jsonb_agg(jsonb_build_object('key', f.key, 'label', f.label, 'type', f.type,
                                                 'required', f.required, 'options', f.options)), '[]'::jsonb)
      INTO v_definitions
      FROM core.custom_fields f WHERE f.tenant_id = NEW.tenant_id AND f.entity = TG_ARGV[0];
    NEW.custom_fields := crm_private.custom_fields_check(v_definitions,
        CASE WHEN TG_OP = 'UPDATE' THEN OLD.custom_fields END, coalesce(NEW.custom_fields, '{}'::jsonb));
    RETURN NEW;
END
$$;

CREATE OR REPLACE FUNCTION crm_private.activity_immutable() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    -- Erasure (api.erase_contact, under pg_crm.erasing, which only a superuser sets) may
    -- change the text.
    IF (NEW.tenant_id, NEW.id, NEW.type,
        CASE WHEN pg_catalog.current_setting('pg_crm.erasing', true) = 'on' THEN OLD.description ELSE NEW.description END,
        NEW.occurred_at, NEW.actor_id, NEW.deal_id, NEW.created_at, NEW.created_by)
       IS DISTINCT FROM (OLD.tenant_id, OLD.id, OLD.type, OLD.description, OLD.occurred_at, OLD.actor_id, OLD.deal_id, OLD.created_at, OLD.created_by)
       OR (NEW.contact_id <> OLD.contact_id AND NOT EXISTS (
               SELECT 1 FROM crm.contacts c WHERE c.tenant_id = OLD.tenant_id AND c.id = OLD.contact_id AND c.merged_into = NEW.contact_id)) THEN
        RAISE EXCEPTION 'activities cannot be changed once logged (archive it instead)' USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN NEW;
END
$$;

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

REVOKE ALL ON FUNCTION
    crm_private.export_columns(regclass, text[]),
    crm_private.export_entities(),
    crm_private.export_begin(text, text),
    crm_private.person_contacts(uuid, uuid),
    crm_private.contact_export(uuid),
    api.export_contact(uuid),
    crm_private.erased(),
    crm_private.scrub(text, text[]),
    crm_private.contact_erase(uuid, text),
    api.erase_contact(uuid, text)
FROM PUBLIC;
GRANT EXECUTE ON FUNCTION
    crm_private.export_begin(text, text),
    crm_private.contact_export(uuid),
    api.export_contact(uuid),
    crm_private.contact_erase(uuid, text),
    api.erase_contact(uuid, text)
TO authenticated;

-- CSV import (issue 10): pg_crm's Rust functions (crm.rs), then sql/import.sql.
-- pg_crm::crm::import_row
-- requires:
--   schema
CREATE  FUNCTION "import_row"(
	"kind" TEXT, /* & str */
	"targets" jsonb, /* JsonB */
	"definitions" jsonb, /* JsonB */
	"cells" TEXT[] /* Vec < Option < String > > */
) RETURNS jsonb /* JsonB */
IMMUTABLE STRICT PARALLEL SAFE 
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'import_row_wrapper';

-- pg_crm::crm::import_targets
-- requires:
--   schema
CREATE  FUNCTION "import_targets"(
	"kind" TEXT, /* & str */
	"header" TEXT[], /* Vec < Option < String > > */
	"mapping" jsonb /* Option < JsonB > */
) RETURNS jsonb /* JsonB */
IMMUTABLE PARALLEL SAFE 
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'import_targets_wrapper';

-- pg_crm::crm::import_targets_checked
-- requires:
--   schema
CREATE  FUNCTION "import_targets_checked"(
	"kind" TEXT, /* & str */
	"header" TEXT[], /* Vec < Option < String > > */
	"mapping" jsonb /* Option < JsonB > */
) RETURNS jsonb /* JsonB */
IMMUTABLE PARALLEL SAFE 
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'import_targets_checked_wrapper';

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

REVOKE ALL ON FUNCTION
    crm_private.import_row(text, jsonb, jsonb, text[]),
    crm_private.import_targets(text, text[], jsonb),
    crm_private.import_targets_checked(text, text[], jsonb),
    crm_private.import_begin(text, text[], jsonb),
    crm_private.import_note_probes(text, uuid[]),
    crm_private.import_audit(text),
    crm_private.import_run(text, text[], jsonb, jsonb)
FROM PUBLIC;
GRANT EXECUTE ON FUNCTION
    crm_private.import_targets(text, text[], jsonb),
    crm_private.import_targets_checked(text, text[], jsonb),
    crm_private.import_row(text, jsonb, jsonb, text[]),
    crm_private.import_begin(text, text[], jsonb),
    crm_private.import_run(text, text[], jsonb, jsonb),
    crm_private.import_note_probes(text, uuid[]),
    crm_private.import_audit(text)
TO authenticated;
GRANT INSERT (id, deleted_at) ON crm.organizations, crm.contacts TO authenticated;
