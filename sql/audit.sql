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
