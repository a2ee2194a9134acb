-- The CRM's tables (PRD F6–F10): organizations, contacts, deals and their pipeline stages,
-- activities, the history of stage changes and reassignments, and (in core) the custom field
-- definitions. Every table has the tenant-table shape of ARCHITECTURE.md: tenant_id leading
-- every key and index, composite foreign keys (a row can never point into another tenant),
-- forced row-level security with one permissive policy per command, the stamp trigger.
-- Grants are in grants.sql; the `api` functions in crm.sql. The rules that are more than a
-- constraint (stage transitions, field and custom field checks, duplicate scoring) are Rust
-- (pg_crm's domain::pipeline, domain::fields, domain::duplicates), called from the triggers
-- and functions here.

CREATE SCHEMA crm;
COMMENT ON SCHEMA crm IS 'Aura CRM records: organizations, contacts, deals, activities. Tenant-scoped, row-level secured; reached through the api functions.';

--------------------------------------------------------------------------------------------
-- Policy helpers (inlinable LANGUAGE sql, no SET clause, no table read). F9: a sales rep
-- sees and edits the contacts and deals assigned to them; records.read_all (managers and
-- admins) sees the whole tenant. Activities and stage changes follow their record through
-- the owner columns the triggers below keep up to date.
--------------------------------------------------------------------------------------------
-- A rep's rule for contacts and deals is written as a range of assignees, [me, me] for a rep
-- and the whole uuid range with records.read_all, not as `read_all OR assigned_to = me`: a
-- range on assigned_to is an index condition (its bounds are computed once per scan) on every
-- index that carries assigned_to, where the OR would be a filter evaluated on every row.
-- assigned_to is NOT NULL, so the two say the same; without a request context both bounds
-- are NULL and nothing is visible.
CREATE FUNCTION crm_private.first_visible_assignee() RETURNS uuid
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $$ SELECT CASE WHEN crm_private.has_permission('records.read_all') THEN '00000000-0000-0000-0000-000000000000'::pg_catalog.uuid
                      ELSE crm_private.user_id() END $$;
COMMENT ON FUNCTION crm_private.first_visible_assignee() IS 'The lowest assigned_to the current request may see: its own user, or the lowest uuid with records.read_all.';
CREATE FUNCTION crm_private.last_visible_assignee() RETURNS uuid
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $$ SELECT CASE WHEN crm_private.has_permission('records.read_all') THEN 'ffffffff-ffff-ffff-ffff-ffffffffffff'::pg_catalog.uuid
                      ELSE crm_private.user_id() END $$;
COMMENT ON FUNCTION crm_private.last_visible_assignee() IS 'The highest assigned_to the current request may see: its own user, or the highest uuid with records.read_all.';

CREATE FUNCTION crm_private.sees_either(first_user uuid, second_user uuid) RETURNS boolean
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $$ SELECT crm_private.has_permission('records.read_all') OR first_user = crm_private.user_id() OR second_user = crm_private.user_id() $$;
COMMENT ON FUNCTION crm_private.sees_either(uuid, uuid) IS 'Whether the current request may see a row that belongs to either user (an activity of a contact and a deal, a reassignment from one to another).';

--------------------------------------------------------------------------------------------
-- Custom field definitions (F6.6, F7.6, F8.9): per tenant and entity, managed by admins
-- (fields.manage). Values live in each record's custom_fields jsonb and are checked against
-- these rows on every write (crm_private.check_custom_fields).
--------------------------------------------------------------------------------------------
CREATE TABLE core.custom_fields (
    tenant_id uuid NOT NULL DEFAULT crm_private.tenant_id(),
    id uuid NOT NULL DEFAULT gen_random_uuid(),
    entity text NOT NULL CHECK (entity IN ('organization', 'contact', 'deal')),
    key text NOT NULL CHECK (key ~ '^[a-z][a-z0-9_]{0,39}$'),
    label text NOT NULL CHECK (pg_catalog.char_length(pg_catalog.btrim(label)) BETWEEN 1 AND 100),
    type text NOT NULL CHECK (type IN ('text', 'number', 'date', 'boolean', 'select', 'url')),
    required boolean NOT NULL DEFAULT false,
    options jsonb NOT NULL DEFAULT '[]' CHECK (pg_catalog.jsonb_typeof(options) = 'array'),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    created_by uuid,
    updated_by uuid,
    CONSTRAINT custom_fields_pkey PRIMARY KEY (tenant_id, id),
    CONSTRAINT custom_fields_key UNIQUE (tenant_id, entity, key),
    CONSTRAINT custom_fields_tenant_fkey FOREIGN KEY (tenant_id) REFERENCES core.tenants (id)
);
COMMENT ON TABLE core.custom_fields IS 'Custom field definitions per tenant and entity (organization, contact, deal): key, label, type, required, options.';
CREATE TRIGGER custom_fields_stamp BEFORE INSERT OR UPDATE ON core.custom_fields
    FOR EACH ROW EXECUTE FUNCTION crm_private.stamp_row();

--------------------------------------------------------------------------------------------
-- Pipeline stages (F8.7, F8.9): rows per tenant, seeded with the standard pipeline when a
-- tenant is created, so custom stages need no schema change.
--------------------------------------------------------------------------------------------
CREATE TABLE crm.pipeline_stages (
    tenant_id uuid NOT NULL,
    key text NOT NULL CHECK (key ~ '^[a-z][a-z0-9_]{0,39}$'),
    label text NOT NULL CHECK (pg_catalog.char_length(pg_catalog.btrim(label)) BETWEEN 1 AND 100),
    position integer NOT NULL CHECK (position BETWEEN 0 AND 1000),
    default_probability smallint NOT NULL CHECK (default_probability BETWEEN 0 AND 100),
    kind text NOT NULL CHECK (kind IN ('open', 'won', 'lost')),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    created_by uuid,
    updated_by uuid,
    CONSTRAINT pipeline_stages_pkey PRIMARY KEY (tenant_id, key),
    CONSTRAINT pipeline_stages_tenant_fkey FOREIGN KEY (tenant_id) REFERENCES core.tenants (id),
    CONSTRAINT pipeline_stages_closed_probability CHECK ((kind <> 'won' OR default_probability = 100) AND (kind <> 'lost' OR default_probability = 0))
);
COMMENT ON TABLE crm.pipeline_stages IS 'A tenant''s deal pipeline: stage key, label, order, default probability, and whether the stage is open, won or lost.';
CREATE TRIGGER pipeline_stages_stamp BEFORE INSERT OR UPDATE ON crm.pipeline_stages
    FOR EACH ROW EXECUTE FUNCTION crm_private.stamp_row();

-- The standard pipeline for a new tenant (the keys and defaults of pg_crm's domain::pipeline).
-- Called where tenants are made (crm_private.create_tenant, the signup endpoint), not by a
-- trigger: a restore brings each tenant's stages back from the dump.
CREATE FUNCTION crm_private.seed_pipeline(tenant uuid) RETURNS void
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    INSERT INTO crm.pipeline_stages (tenant_id, key, label, position, default_probability, kind)
    SELECT seed_pipeline.tenant, s.key, s.label, s.position, s.probability, s.kind
      FROM crm_private.default_stages() s
    ON CONFLICT DO NOTHING;
END
$$;
COMMENT ON FUNCTION crm_private.seed_pipeline(uuid) IS 'Gives a new tenant the standard pipeline (Prospect, Qualified, Proposal, Negotiation, Won, Lost).';

--------------------------------------------------------------------------------------------
-- Organizations (F6). Every member sees every organization of the tenant.
--------------------------------------------------------------------------------------------
CREATE TABLE crm.organizations (
    tenant_id uuid NOT NULL DEFAULT crm_private.tenant_id(),
    id uuid NOT NULL DEFAULT gen_random_uuid(),
    name text NOT NULL CHECK (pg_catalog.char_length(pg_catalog.btrim(name)) BETWEEN 1 AND 200),
    industry text CHECK (pg_catalog.char_length(industry) BETWEEN 1 AND 100),
    size text CHECK (size IN ('1-10', '11-50', '51-200', '201-500', '501-1000', '1001-5000', '5001+')),
    location text CHECK (pg_catalog.char_length(location) BETWEEN 1 AND 200),
    website text CHECK (website ~* '^https?://[^\s[:cntrl:]"''`<>\\]+$' AND pg_catalog.char_length(website) <= 2048),
    parent_id uuid,
    custom_fields jsonb NOT NULL DEFAULT '{}' CHECK (pg_catalog.jsonb_typeof(custom_fields) = 'object'),
    deleted_at timestamptz,
    deleted_by uuid,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    created_by uuid,
    updated_by uuid,
    -- The host of the website without www., for duplicate detection.
    website_domain text GENERATED ALWAYS AS (pg_catalog.lower(pg_catalog.substring(website, '^[hH][tT][tT][pP][sS]?://(?:[wW][wW][wW]\.)?([^/:?#]+)'))) STORED,
    CONSTRAINT organizations_pkey PRIMARY KEY (tenant_id, id),
    CONSTRAINT organizations_tenant_fkey FOREIGN KEY (tenant_id) REFERENCES core.tenants (id),
    CONSTRAINT organizations_parent_fkey FOREIGN KEY (tenant_id, parent_id) REFERENCES crm.organizations (tenant_id, id),
    CONSTRAINT organizations_not_own_parent CHECK (parent_id <> id)
);
CREATE INDEX organizations_parent_idx ON crm.organizations (tenant_id, parent_id);
CREATE INDEX organizations_name_idx ON crm.organizations (tenant_id, pg_catalog.lower(name), id);
CREATE INDEX organizations_created_idx ON crm.organizations (tenant_id, created_at, id);
CREATE INDEX organizations_domain_idx ON crm.organizations (tenant_id, website_domain);
CREATE INDEX organizations_name_trgm_idx ON crm.organizations USING gin (tenant_id, pg_catalog.lower(name) gin_trgm_ops);
COMMENT ON TABLE crm.organizations IS 'Companies (PRD F6): name, industry, size, location, website, parent organization, custom fields; soft-deleted with deleted_at.';

-- The digits of a phone number without a trailing extension: "+1 (555) 010-0200 x12" is
-- 15550100200 (pg_crm's domain::duplicates::phone_digits reads numbers the same way).
CREATE FUNCTION crm_private.phone_digits(phone text) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT nullif(pg_catalog.regexp_replace(pg_catalog.regexp_replace(phone, '\s*(x|ext\.?)\s*[0-9]+\s*$', '', 'i'), '[^0-9]', '', 'g'), '') $$;
COMMENT ON FUNCTION crm_private.phone_digits(text) IS 'A phone number''s digits without its extension, or NULL.';

--------------------------------------------------------------------------------------------
-- Contacts (F7). Email unique per tenant, case-insensitive, among live contacts (F7.7).
--------------------------------------------------------------------------------------------
CREATE TABLE crm.contacts (
    tenant_id uuid NOT NULL DEFAULT crm_private.tenant_id(),
    id uuid NOT NULL DEFAULT gen_random_uuid(),
    first_name text NOT NULL CHECK (pg_catalog.char_length(pg_catalog.btrim(first_name)) BETWEEN 1 AND 100),
    last_name text CHECK (pg_catalog.char_length(last_name) BETWEEN 1 AND 100),
    email text CHECK (pg_catalog.char_length(email) <= 254 AND email ~ '^[^@\s]+@[^@\s]+\.[^@\s]+$'),
    phone text CHECK (pg_catalog.char_length(phone) <= 40 AND phone ~ '[0-9]'),
    title text CHECK (pg_catalog.char_length(title) BETWEEN 1 AND 200),
    organization_id uuid,
    assigned_to uuid NOT NULL,
    custom_fields jsonb NOT NULL DEFAULT '{}' CHECK (pg_catalog.jsonb_typeof(custom_fields) = 'object'),
    merged_into uuid,
    deleted_at timestamptz,
    deleted_by uuid,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    created_by uuid,
    updated_by uuid,
    phone_digits text GENERATED ALWAYS AS (crm_private.phone_digits(phone)) STORED,
    -- The sort key of the name list: last name, then first name.
    sort_name text GENERATED ALWAYS AS (pg_catalog.lower(coalesce(last_name || ' ', '') || first_name)) STORED,
    -- What search_contacts matches with trigrams: the name, the email and the phone digits.
    search_text text GENERATED ALWAYS AS (pg_catalog.lower(first_name || coalesce(' ' || last_name, '') || coalesce(' ' || email, '')
        || coalesce(' ' || crm_private.phone_digits(phone), ''))) STORED,
    CONSTRAINT contacts_pkey PRIMARY KEY (tenant_id, id),
    CONSTRAINT contacts_tenant_fkey FOREIGN KEY (tenant_id) REFERENCES core.tenants (id),
    CONSTRAINT contacts_organization_fkey FOREIGN KEY (tenant_id, organization_id) REFERENCES crm.organizations (tenant_id, id),
    CONSTRAINT contacts_assigned_to_fkey FOREIGN KEY (tenant_id, assigned_to) REFERENCES core.memberships (tenant_id, user_id),
    CONSTRAINT contacts_merged_into_fkey FOREIGN KEY (tenant_id, merged_into) REFERENCES crm.contacts (tenant_id, id)
);
CREATE UNIQUE INDEX contacts_email_key ON crm.contacts (tenant_id, pg_catalog.lower(email)) WHERE deleted_at IS NULL;
CREATE INDEX contacts_organization_idx ON crm.contacts (tenant_id, organization_id, assigned_to);
CREATE INDEX contacts_assigned_idx ON crm.contacts (tenant_id, assigned_to, created_at, id);
CREATE INDEX contacts_merged_into_idx ON crm.contacts (tenant_id, merged_into);
CREATE INDEX contacts_created_idx ON crm.contacts (tenant_id, created_at, id, assigned_to);
CREATE INDEX contacts_name_idx ON crm.contacts (tenant_id, sort_name, id, assigned_to);
CREATE INDEX contacts_phone_idx ON crm.contacts (tenant_id, pg_catalog.right(phone_digits, 10));
-- Duplicate candidates: a similar name under the same email domain (crm_private.contact_duplicates).
CREATE INDEX contacts_email_domain_idx ON crm.contacts (tenant_id, pg_catalog.split_part(pg_catalog.lower(email), '@', 2));
CREATE INDEX contacts_search_trgm_idx ON crm.contacts USING gin (tenant_id, search_text gin_trgm_ops);
COMMENT ON TABLE crm.contacts IS 'People (PRD F7): name, email (unique per tenant among live contacts), phone, title, organization, assigned_to, custom fields; soft-deleted with deleted_at; merged_into names the contact a merged one went into.';

--------------------------------------------------------------------------------------------
-- Deals (F8).
--------------------------------------------------------------------------------------------
CREATE TABLE crm.deals (
    tenant_id uuid NOT NULL DEFAULT crm_private.tenant_id(),
    id uuid NOT NULL DEFAULT gen_random_uuid(),
    name text NOT NULL CHECK (pg_catalog.char_length(pg_catalog.btrim(name)) BETWEEN 1 AND 200),
    amount numeric(17, 2) NOT NULL DEFAULT 0 CHECK (amount >= 0 AND amount < 1e15),
    currency text NOT NULL DEFAULT 'USD' CHECK (crm_private.currency_known(currency)),
    stage text NOT NULL,
    probability smallint NOT NULL CHECK (probability BETWEEN 0 AND 100),
    expected_close_date date,
    closed_at timestamptz,
    lost_reason text CHECK (pg_catalog.char_length(lost_reason) BETWEEN 1 AND 500),
    contact_id uuid,
    organization_id uuid,
    assigned_to uuid NOT NULL,
    notes text CHECK (pg_catalog.char_length(notes) <= 10000),
    custom_fields jsonb NOT NULL DEFAULT '{}' CHECK (pg_catalog.jsonb_typeof(custom_fields) = 'object'),
    deleted_at timestamptz,
    deleted_by uuid,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    created_by uuid,
    updated_by uuid,
    CONSTRAINT deals_pkey PRIMARY KEY (tenant_id, id),
    CONSTRAINT deals_tenant_fkey FOREIGN KEY (tenant_id) REFERENCES core.tenants (id),
    CONSTRAINT deals_stage_fkey FOREIGN KEY (tenant_id, stage) REFERENCES crm.pipeline_stages (tenant_id, key),
    CONSTRAINT deals_contact_fkey FOREIGN KEY (tenant_id, contact_id) REFERENCES crm.contacts (tenant_id, id),
    CONSTRAINT deals_organization_fkey FOREIGN KEY (tenant_id, organization_id) REFERENCES crm.organizations (tenant_id, id),
    CONSTRAINT deals_assigned_to_fkey FOREIGN KEY (tenant_id, assigned_to) REFERENCES core.memberships (tenant_id, user_id)
);
CREATE INDEX deals_stage_idx ON crm.deals (tenant_id, stage, created_at, id, assigned_to);
CREATE INDEX deals_assigned_idx ON crm.deals (tenant_id, assigned_to, created_at, id);
CREATE INDEX deals_contact_idx ON crm.deals (tenant_id, contact_id, assigned_to);
CREATE INDEX deals_organization_idx ON crm.deals (tenant_id, organization_id, created_at, id, assigned_to);
CREATE INDEX deals_created_idx ON crm.deals (tenant_id, created_at, id, assigned_to);
CREATE INDEX deals_close_idx ON crm.deals (tenant_id, (coalesce(expected_close_date, 'infinity'::date)), id, assigned_to);
CREATE INDEX deals_amount_idx ON crm.deals (tenant_id, amount, id, assigned_to);
COMMENT ON TABLE crm.deals IS 'Opportunities (PRD F8): name, amount and currency, stage and probability (rules in pg_crm''s domain::pipeline), expected close date, contact, organization, assigned_to, notes, custom fields; soft-deleted with deleted_at.';

--------------------------------------------------------------------------------------------
-- Stage changes (F8.8) and reassignments (F9.5): written by triggers, never by callers.
--------------------------------------------------------------------------------------------
CREATE TABLE crm.deal_stage_changes (
    tenant_id uuid NOT NULL,
    id uuid NOT NULL DEFAULT gen_random_uuid(),
    deal_id uuid NOT NULL,
    from_stage text,
    to_stage text NOT NULL,
    probability smallint NOT NULL,
    reason text,
    changed_by uuid,
    changed_at timestamptz NOT NULL DEFAULT now(),
    -- The deal's assignee, kept up to date, so the history follows the deal's visibility.
    deal_owner uuid NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    created_by uuid,
    updated_by uuid,
    CONSTRAINT deal_stage_changes_pkey PRIMARY KEY (tenant_id, id),
    CONSTRAINT deal_stage_changes_deal_fkey FOREIGN KEY (tenant_id, deal_id) REFERENCES crm.deals (tenant_id, id)
);
CREATE INDEX deal_stage_changes_deal_idx ON crm.deal_stage_changes (tenant_id, deal_id, changed_at, id, deal_owner);
COMMENT ON TABLE crm.deal_stage_changes IS 'Every stage change of a deal (PRD F8.8): from, to, probability, reason, who and when.';

CREATE TABLE crm.assignment_changes (
    tenant_id uuid NOT NULL,
    id uuid NOT NULL DEFAULT gen_random_uuid(),
    contact_id uuid,
    deal_id uuid,
    from_user uuid,
    to_user uuid NOT NULL,
    changed_by uuid,
    changed_at timestamptz NOT NULL DEFAULT now(),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    created_by uuid,
    updated_by uuid,
    CONSTRAINT assignment_changes_pkey PRIMARY KEY (tenant_id, id),
    CONSTRAINT assignment_changes_contact_fkey FOREIGN KEY (tenant_id, contact_id) REFERENCES crm.contacts (tenant_id, id),
    CONSTRAINT assignment_changes_deal_fkey FOREIGN KEY (tenant_id, deal_id) REFERENCES crm.deals (tenant_id, id),
    CONSTRAINT assignment_changes_one_record CHECK ((contact_id IS NULL) <> (deal_id IS NULL))
);
CREATE INDEX assignment_changes_contact_idx ON crm.assignment_changes (tenant_id, contact_id);
CREATE INDEX assignment_changes_deal_idx ON crm.assignment_changes (tenant_id, deal_id);
COMMENT ON TABLE crm.assignment_changes IS 'Every reassignment of a contact or deal (PRD F9.5): from, to, who and when.';

--------------------------------------------------------------------------------------------
-- Activities (F10): immutable once written. No UPDATE grant or policy; the trigger below is
-- the second wall. Archiving (soft delete) goes through crm_private.archive_activity.
--------------------------------------------------------------------------------------------
CREATE TABLE crm.activities (
    tenant_id uuid NOT NULL DEFAULT crm_private.tenant_id(),
    id uuid NOT NULL DEFAULT gen_random_uuid(),
    type text NOT NULL CHECK (type IN ('call', 'email', 'meeting', 'note')),
    description text NOT NULL CHECK (pg_catalog.char_length(pg_catalog.btrim(description)) BETWEEN 1 AND 10000),
    occurred_at timestamptz NOT NULL DEFAULT now(),
    actor_id uuid NOT NULL DEFAULT crm_private.user_id(),
    contact_id uuid NOT NULL,
    deal_id uuid,
    -- The assignees of the contact and the deal, kept up to date by triggers: an activity is
    -- visible to whoever sees either record.
    contact_owner uuid,
    deal_owner uuid,
    archived_at timestamptz,
    archived_by uuid,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    created_by uuid,
    updated_by uuid,
    CONSTRAINT activities_pkey PRIMARY KEY (tenant_id, id),
    CONSTRAINT activities_tenant_fkey FOREIGN KEY (tenant_id) REFERENCES core.tenants (id),
    CONSTRAINT activities_contact_fkey FOREIGN KEY (tenant_id, contact_id) REFERENCES crm.contacts (tenant_id, id),
    CONSTRAINT activities_deal_fkey FOREIGN KEY (tenant_id, deal_id) REFERENCES crm.deals (tenant_id, id),
    CONSTRAINT activities_actor_fkey FOREIGN KEY (tenant_id, actor_id) REFERENCES core.memberships (tenant_id, user_id)
);
CREATE INDEX activities_contact_idx ON crm.activities (tenant_id, contact_id, occurred_at, id);
CREATE INDEX activities_deal_idx ON crm.activities (tenant_id, deal_id, occurred_at, id);
CREATE INDEX activities_actor_idx ON crm.activities (tenant_id, actor_id);
CREATE INDEX activities_occurred_idx ON crm.activities (tenant_id, occurred_at, id);
COMMENT ON TABLE crm.activities IS 'Calls, emails, meetings and notes (PRD F10) about a contact and optionally a deal; immutable once written, archived with archived_at.';

--------------------------------------------------------------------------------------------
-- Triggers
--------------------------------------------------------------------------------------------
CREATE TRIGGER organizations_stamp BEFORE INSERT OR UPDATE ON crm.organizations FOR EACH ROW EXECUTE FUNCTION crm_private.stamp_row();
CREATE TRIGGER contacts_stamp BEFORE INSERT OR UPDATE ON crm.contacts FOR EACH ROW EXECUTE FUNCTION crm_private.stamp_row();
CREATE TRIGGER deals_stamp BEFORE INSERT OR UPDATE ON crm.deals FOR EACH ROW EXECUTE FUNCTION crm_private.stamp_row();
CREATE TRIGGER deal_stage_changes_stamp BEFORE INSERT OR UPDATE ON crm.deal_stage_changes FOR EACH ROW EXECUTE FUNCTION crm_private.stamp_row();
CREATE TRIGGER assignment_changes_stamp BEFORE INSERT OR UPDATE ON crm.assignment_changes FOR EACH ROW EXECUTE FUNCTION crm_private.stamp_row();
CREATE TRIGGER activities_stamp BEFORE INSERT OR UPDATE ON crm.activities FOR EACH ROW EXECUTE FUNCTION crm_private.stamp_row();

-- deleted_by (and archived_by) are the database's, like the stamps.
CREATE FUNCTION crm_private.stamp_deletion() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    IF NEW.deleted_at IS NULL THEN
        NEW.deleted_by := NULL;
    ELSIF OLD.deleted_at IS NULL THEN
        NEW.deleted_at := now();
        NEW.deleted_by := coalesce(crm_private.user_id(), NEW.deleted_by);
    ELSE
        NEW.deleted_at := OLD.deleted_at;
        NEW.deleted_by := OLD.deleted_by;
    END IF;
    RETURN NEW;
END
$$;
COMMENT ON FUNCTION crm_private.stamp_deletion() IS 'Trigger: a soft delete records when and by whom; a restore clears both.';
CREATE TRIGGER organizations_deletion BEFORE UPDATE OF deleted_at ON crm.organizations FOR EACH ROW EXECUTE FUNCTION crm_private.stamp_deletion();
CREATE TRIGGER contacts_deletion BEFORE UPDATE OF deleted_at ON crm.contacts FOR EACH ROW EXECUTE FUNCTION crm_private.stamp_deletion();
CREATE TRIGGER deals_deletion BEFORE UPDATE OF deleted_at ON crm.deals FOR EACH ROW EXECUTE FUNCTION crm_private.stamp_deletion();

-- No cycles among organizations: the new parent may not be the organization or one of its
-- descendants.
CREATE FUNCTION crm_private.organization_no_cycle() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    IF NEW.parent_id IS NULL OR (TG_OP = 'UPDATE' AND NEW.parent_id IS NOT DISTINCT FROM OLD.parent_id) THEN
        RETURN NEW;
    END IF;
    IF EXISTS (
        WITH RECURSIVE up(id, depth) AS (
            SELECT o.parent_id, 1 FROM crm.organizations o WHERE o.tenant_id = NEW.tenant_id AND o.id = NEW.parent_id
            UNION ALL
            SELECT o.parent_id, up.depth + 1 FROM up JOIN crm.organizations o ON o.tenant_id = NEW.tenant_id AND o.id = up.id
             WHERE up.depth < 1000)
        SELECT 1 FROM up WHERE up.id = NEW.id) OR NEW.parent_id = NEW.id THEN
        RAISE EXCEPTION 'invalid parent_id: an organization cannot be its own parent or the parent of one of its ancestors'
            USING ERRCODE = 'invalid_parameter_value', DETAIL = 'field: parent_id';
    END IF;
    RETURN NEW;
END
$$;
COMMENT ON FUNCTION crm_private.organization_no_cycle() IS 'Trigger: refuses a parent organization that would make a cycle.';
CREATE TRIGGER organizations_no_cycle BEFORE INSERT OR UPDATE OF parent_id ON crm.organizations
    FOR EACH ROW EXECUTE FUNCTION crm_private.organization_no_cycle();

-- What a member creates is theirs unless they name someone (F9); only deals.assign
-- (managers, admins) reassigns (F8.6). Row-level security decides the rest.
CREATE FUNCTION crm_private.default_assignee() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    NEW.assigned_to := coalesce(NEW.assigned_to, crm_private.user_id());
    RETURN NEW;
END
$$;
CREATE TRIGGER contacts_default_assignee BEFORE INSERT ON crm.contacts FOR EACH ROW EXECUTE FUNCTION crm_private.default_assignee();
CREATE TRIGGER deals_default_assignee BEFORE INSERT ON crm.deals FOR EACH ROW EXECUTE FUNCTION crm_private.default_assignee();

CREATE FUNCTION crm_private.guard_assignment() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    IF NEW.assigned_to IS DISTINCT FROM OLD.assigned_to AND crm_private.user_id() IS NOT NULL
       AND NOT crm_private.has_permission('deals.assign') THEN
        RAISE EXCEPTION 'only managers and admins reassign records' USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN NEW;
END
$$;
COMMENT ON FUNCTION crm_private.guard_assignment() IS 'Trigger: assigned_to changes only with deals.assign (PRD F8.6).';
CREATE TRIGGER contacts_guard_assignment BEFORE UPDATE OF assigned_to ON crm.contacts FOR EACH ROW EXECUTE FUNCTION crm_private.guard_assignment();
CREATE TRIGGER deals_guard_assignment BEFORE UPDATE OF assigned_to ON crm.deals FOR EACH ROW EXECUTE FUNCTION crm_private.guard_assignment();

-- A reassignment is recorded, and the rows that follow the record's visibility follow it.
CREATE FUNCTION crm_private.record_assignment() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    IF NEW.assigned_to IS NOT DISTINCT FROM OLD.assigned_to THEN
        RETURN NULL;
    END IF;
    IF TG_TABLE_NAME = 'contacts' THEN
        INSERT INTO crm.assignment_changes (tenant_id, contact_id, from_user, to_user, changed_by)
        VALUES (NEW.tenant_id, NEW.id, OLD.assigned_to, NEW.assigned_to, crm_private.user_id());
        UPDATE crm.activities a SET contact_owner = NEW.assigned_to
         WHERE a.tenant_id = NEW.tenant_id AND a.contact_id = NEW.id;
    ELSE
        INSERT INTO crm.assignment_changes (tenant_id, deal_id, from_user, to_user, changed_by)
        VALUES (NEW.tenant_id, NEW.id, OLD.assigned_to, NEW.assigned_to, crm_private.user_id());
        UPDATE crm.activities a SET deal_owner = NEW.assigned_to
         WHERE a.tenant_id = NEW.tenant_id AND a.deal_id = NEW.id;
        UPDATE crm.deal_stage_changes h SET deal_owner = NEW.assigned_to
         WHERE h.tenant_id = NEW.tenant_id AND h.deal_id = NEW.id;
    END IF;
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION crm_private.record_assignment() IS 'Trigger: records a reassignment (PRD F9.5) and moves the visibility of the record''s activities and history with it.';
CREATE TRIGGER contacts_record_assignment AFTER UPDATE OF assigned_to ON crm.contacts FOR EACH ROW EXECUTE FUNCTION crm_private.record_assignment();
CREATE TRIGGER deals_record_assignment AFTER UPDATE OF assigned_to ON crm.deals FOR EACH ROW EXECUTE FUNCTION crm_private.record_assignment();

-- Stage rules (F8.7): what a move does is decided by crm_private.stage_transition (Rust,
-- domain::pipeline), whatever path the write takes. A probability in the new row counts as
-- given (NULL takes the stage's default); a closed deal changes stage only when the write
-- also clears closed_at, which is what reopen_deal does.
CREATE FUNCTION crm_private.deal_stage_rules() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    v_to crm.pipeline_stages;
    v_from crm.pipeline_stages;
    v_given integer;
    v_out jsonb;
BEGIN
    IF TG_OP = 'INSERT' THEN
        IF NEW.stage IS NULL THEN
            SELECT * INTO v_to FROM crm.pipeline_stages s
             WHERE s.tenant_id = NEW.tenant_id AND s.kind = 'open' ORDER BY s.position, s.key LIMIT 1;
        ELSE
            SELECT * INTO v_to FROM crm.pipeline_stages s WHERE s.tenant_id = NEW.tenant_id AND s.key = NEW.stage;
        END IF;
        IF v_to.key IS NULL THEN
            RAISE EXCEPTION 'invalid stage: no such stage in this workspace' USING ERRCODE = 'invalid_parameter_value',
                DETAIL = 'field: stage', HINT = 'list_pipeline_stages() names them';
        END IF;
        NEW.stage := v_to.key;
        v_out := crm_private.stage_transition(NULL, NULL, v_to.key, v_to.kind, v_to.default_probability,
                                              NEW.probability, NEW.lost_reason, false);
    ELSE
        IF NEW.stage = OLD.stage THEN
            IF (NEW.closed_at, NEW.lost_reason) IS DISTINCT FROM (OLD.closed_at, OLD.lost_reason) THEN
                RAISE EXCEPTION 'invalid stage: closed_at and lost_reason change only with the stage'
                    USING ERRCODE = 'invalid_parameter_value', DETAIL = 'field: stage';
            END IF;
            IF NEW.probability IS DISTINCT FROM OLD.probability THEN
                IF OLD.closed_at IS NOT NULL THEN
                    RAISE EXCEPTION 'invalid probability: a won or lost deal keeps its probability (reopen it first)'
                        USING ERRCODE = 'invalid_parameter_value', DETAIL = 'field: probability';
                END IF;
                IF NEW.probability IS NULL THEN
                    NEW.probability := OLD.probability;
                END IF;
            END IF;
            RETURN NEW;
        END IF;
        SELECT * INTO v_from FROM crm.pipeline_stages s WHERE s.tenant_id = OLD.tenant_id AND s.key = OLD.stage;
        SELECT * INTO v_to FROM crm.pipeline_stages s WHERE s.tenant_id = NEW.tenant_id AND s.key = NEW.stage;
        IF v_to.key IS NULL THEN
            RAISE EXCEPTION 'invalid stage: no such stage in this workspace' USING ERRCODE = 'invalid_parameter_value',
                DETAIL = 'field: stage', HINT = 'list_pipeline_stages() names them';
        END IF;
        v_given := NEW.probability;
        IF v_to.kind <> 'open' AND NEW.probability = OLD.probability THEN
            v_given := NULL;
        END IF;
        v_out := crm_private.stage_transition(v_from.key, v_from.kind, v_to.key, v_to.kind, v_to.default_probability, v_given,
                                              CASE WHEN NEW.lost_reason IS DISTINCT FROM OLD.lost_reason THEN NEW.lost_reason END,
                                              OLD.closed_at IS NOT NULL AND NEW.closed_at IS NULL);
    END IF;
    NEW.probability := (v_out ->> 'probability')::smallint;
    NEW.lost_reason := v_out ->> 'lost_reason';
    IF (v_out ->> 'closes')::boolean THEN
        -- A restore or an operator (no request) keeps the close time it supplies.
        NEW.closed_at := CASE WHEN crm_private.user_id() IS NULL THEN coalesce(NEW.closed_at, now()) ELSE now() END;
    ELSE
        NEW.closed_at := NULL;
    END IF;
    RETURN NEW;
END
$$;
COMMENT ON FUNCTION crm_private.deal_stage_rules() IS 'Trigger: applies the stage rules (crm_private.stage_transition) to every new deal and every stage or probability change.';
CREATE TRIGGER deals_stage_rules BEFORE INSERT OR UPDATE OF stage, probability, closed_at, lost_reason ON crm.deals
    FOR EACH ROW EXECUTE FUNCTION crm_private.deal_stage_rules();

CREATE FUNCTION crm_private.record_stage_change() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    -- A restore (no request) brings the history with it.
    IF TG_OP = 'INSERT' AND crm_private.user_id() IS NULL THEN
        RETURN NULL;
    END IF;
    IF TG_OP = 'UPDATE' AND NEW.stage = OLD.stage THEN
        RETURN NULL;
    END IF;
    -- clock_timestamp(): several moves in one transaction keep their order.
    INSERT INTO crm.deal_stage_changes (tenant_id, deal_id, from_stage, to_stage, probability, reason, changed_by, changed_at, deal_owner)
    VALUES (NEW.tenant_id, NEW.id, CASE WHEN TG_OP = 'UPDATE' THEN OLD.stage END, NEW.stage, NEW.probability,
            NEW.lost_reason, crm_private.user_id(), clock_timestamp(), NEW.assigned_to);
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION crm_private.record_stage_change() IS 'Trigger: records every stage change of a deal with who, when, from and to (PRD F8.8).';
CREATE TRIGGER deals_record_stage_change AFTER INSERT OR UPDATE OF stage ON crm.deals
    FOR EACH ROW EXECUTE FUNCTION crm_private.record_stage_change();

-- Custom field values are checked against the tenant's definitions on every write
-- (crm_private.custom_fields_check, Rust: domain::fields). Without a request context an
-- operator or a restore is writing, and the definitions may not be back yet.
CREATE FUNCTION crm_private.check_custom_fields() RETURNS trigger
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
COMMENT ON FUNCTION crm_private.check_custom_fields() IS 'Trigger: checks a record''s custom_fields against the tenant''s definitions for its entity (unknown keys and wrong types refused, naming the field).';
CREATE TRIGGER organizations_custom_fields BEFORE INSERT OR UPDATE OF custom_fields ON crm.organizations
    FOR EACH ROW EXECUTE FUNCTION crm_private.check_custom_fields('organization');
CREATE TRIGGER contacts_custom_fields BEFORE INSERT OR UPDATE OF custom_fields ON crm.contacts
    FOR EACH ROW EXECUTE FUNCTION crm_private.check_custom_fields('contact');
CREATE TRIGGER deals_custom_fields BEFORE INSERT OR UPDATE OF custom_fields ON crm.deals
    FOR EACH ROW EXECUTE FUNCTION crm_private.check_custom_fields('deal');

-- An activity's owner columns come from its contact and deal, whoever writes it.
CREATE FUNCTION crm_private.activity_owners() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    NEW.contact_owner := (SELECT c.assigned_to FROM crm.contacts c WHERE c.tenant_id = NEW.tenant_id AND c.id = NEW.contact_id);
    NEW.deal_owner := (SELECT d.assigned_to FROM crm.deals d WHERE d.tenant_id = NEW.tenant_id AND d.id = NEW.deal_id);
    IF crm_private.user_id() IS NOT NULL THEN
        NEW.archived_at := NULL;
        NEW.archived_by := NULL;
    END IF;
    RETURN NEW;
END
$$;
COMMENT ON FUNCTION crm_private.activity_owners() IS 'Trigger: an activity is visible to whoever sees its contact or its deal.';
CREATE TRIGGER activities_owners BEFORE INSERT ON crm.activities FOR EACH ROW EXECUTE FUNCTION crm_private.activity_owners();

-- The second wall (the first: no UPDATE grant or policy): what an activity says never
-- changes. Archiving, the owner columns, and a merge moving it to the contact its own was
-- merged into are the only changes.
CREATE FUNCTION crm_private.activity_immutable() RETURNS trigger
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
COMMENT ON FUNCTION crm_private.activity_immutable() IS 'Trigger: an activity''s content never changes; only archiving, its owner columns and a contact merge touch it.';
CREATE TRIGGER activities_immutable BEFORE UPDATE ON crm.activities FOR EACH ROW EXECUTE FUNCTION crm_private.activity_immutable();

--------------------------------------------------------------------------------------------
-- Row-level security: one permissive policy per command, TO authenticated, tenant match
-- first, then the role rule. Commands without a policy are refused (and not granted).
--------------------------------------------------------------------------------------------
ALTER TABLE core.custom_fields ENABLE ROW LEVEL SECURITY;
ALTER TABLE core.custom_fields FORCE ROW LEVEL SECURITY;
CREATE POLICY custom_fields_select ON core.custom_fields AS PERMISSIVE FOR SELECT TO authenticated
    USING (tenant_id = crm_private.tenant_id());
CREATE POLICY custom_fields_insert ON core.custom_fields AS PERMISSIVE FOR INSERT TO authenticated
    WITH CHECK (tenant_id = crm_private.tenant_id() AND crm_private.has_permission('fields.manage'));
CREATE POLICY custom_fields_update ON core.custom_fields AS PERMISSIVE FOR UPDATE TO authenticated
    USING (tenant_id = crm_private.tenant_id() AND crm_private.has_permission('fields.manage'))
    WITH CHECK (tenant_id = crm_private.tenant_id() AND crm_private.has_permission('fields.manage'));
CREATE POLICY custom_fields_delete ON core.custom_fields AS PERMISSIVE FOR DELETE TO authenticated
    USING (tenant_id = crm_private.tenant_id() AND crm_private.has_permission('fields.manage'));

ALTER TABLE crm.pipeline_stages ENABLE ROW LEVEL SECURITY;
ALTER TABLE crm.pipeline_stages FORCE ROW LEVEL SECURITY;
CREATE POLICY pipeline_stages_select ON crm.pipeline_stages AS PERMISSIVE FOR SELECT TO authenticated
    USING (tenant_id = crm_private.tenant_id());

ALTER TABLE crm.organizations ENABLE ROW LEVEL SECURITY;
ALTER TABLE crm.organizations FORCE ROW LEVEL SECURITY;
CREATE POLICY organizations_select ON crm.organizations AS PERMISSIVE FOR SELECT TO authenticated
    USING (tenant_id = crm_private.tenant_id());
CREATE POLICY organizations_insert ON crm.organizations AS PERMISSIVE FOR INSERT TO authenticated
    WITH CHECK (tenant_id = crm_private.tenant_id());
CREATE POLICY organizations_update ON crm.organizations AS PERMISSIVE FOR UPDATE TO authenticated
    USING (tenant_id = crm_private.tenant_id()) WITH CHECK (tenant_id = crm_private.tenant_id());

ALTER TABLE crm.contacts ENABLE ROW LEVEL SECURITY;
ALTER TABLE crm.contacts FORCE ROW LEVEL SECURITY;
CREATE POLICY contacts_select ON crm.contacts AS PERMISSIVE FOR SELECT TO authenticated
    USING (tenant_id = crm_private.tenant_id() AND assigned_to BETWEEN crm_private.first_visible_assignee() AND crm_private.last_visible_assignee());
CREATE POLICY contacts_insert ON crm.contacts AS PERMISSIVE FOR INSERT TO authenticated
    WITH CHECK (tenant_id = crm_private.tenant_id() AND assigned_to BETWEEN crm_private.first_visible_assignee() AND crm_private.last_visible_assignee());
CREATE POLICY contacts_update ON crm.contacts AS PERMISSIVE FOR UPDATE TO authenticated
    USING (tenant_id = crm_private.tenant_id() AND assigned_to BETWEEN crm_private.first_visible_assignee() AND crm_private.last_visible_assignee())
    WITH CHECK (tenant_id = crm_private.tenant_id() AND assigned_to BETWEEN crm_private.first_visible_assignee() AND crm_private.last_visible_assignee());

ALTER TABLE crm.deals ENABLE ROW LEVEL SECURITY;
ALTER TABLE crm.deals FORCE ROW LEVEL SECURITY;
CREATE POLICY deals_select ON crm.deals AS PERMISSIVE FOR SELECT TO authenticated
    USING (tenant_id = crm_private.tenant_id() AND assigned_to BETWEEN crm_private.first_visible_assignee() AND crm_private.last_visible_assignee());
CREATE POLICY deals_insert ON crm.deals AS PERMISSIVE FOR INSERT TO authenticated
    WITH CHECK (tenant_id = crm_private.tenant_id() AND assigned_to BETWEEN crm_private.first_visible_assignee() AND crm_private.last_visible_assignee());
CREATE POLICY deals_update ON crm.deals AS PERMISSIVE FOR UPDATE TO authenticated
    USING (tenant_id = crm_private.tenant_id() AND assigned_to BETWEEN crm_private.first_visible_assignee() AND crm_private.last_visible_assignee())
    WITH CHECK (tenant_id = crm_private.tenant_id() AND assigned_to BETWEEN crm_private.first_visible_assignee() AND crm_private.last_visible_assignee());

ALTER TABLE crm.deal_stage_changes ENABLE ROW LEVEL SECURITY;
ALTER TABLE crm.deal_stage_changes FORCE ROW LEVEL SECURITY;
CREATE POLICY deal_stage_changes_select ON crm.deal_stage_changes AS PERMISSIVE FOR SELECT TO authenticated
    USING (tenant_id = crm_private.tenant_id() AND deal_owner BETWEEN crm_private.first_visible_assignee() AND crm_private.last_visible_assignee());

ALTER TABLE crm.assignment_changes ENABLE ROW LEVEL SECURITY;
ALTER TABLE crm.assignment_changes FORCE ROW LEVEL SECURITY;
CREATE POLICY assignment_changes_select ON crm.assignment_changes AS PERMISSIVE FOR SELECT TO authenticated
    USING (tenant_id = crm_private.tenant_id() AND crm_private.sees_either(from_user, to_user));

ALTER TABLE crm.activities ENABLE ROW LEVEL SECURITY;
ALTER TABLE crm.activities FORCE ROW LEVEL SECURITY;
CREATE POLICY activities_select ON crm.activities AS PERMISSIVE FOR SELECT TO authenticated
    USING (tenant_id = crm_private.tenant_id() AND crm_private.sees_either(contact_owner, deal_owner));
CREATE POLICY activities_insert ON crm.activities AS PERMISSIVE FOR INSERT TO authenticated
    WITH CHECK (tenant_id = crm_private.tenant_id() AND crm_private.sees_either(contact_owner, deal_owner)
                AND actor_id = crm_private.user_id());

ALTER TABLE core.custom_fields OWNER TO crm_owner;
ALTER TABLE crm.pipeline_stages OWNER TO crm_owner;
ALTER TABLE crm.organizations OWNER TO crm_owner;
ALTER TABLE crm.contacts OWNER TO crm_owner;
ALTER TABLE crm.deals OWNER TO crm_owner;
ALTER TABLE crm.deal_stage_changes OWNER TO crm_owner;
ALTER TABLE crm.assignment_changes OWNER TO crm_owner;
ALTER TABLE crm.activities OWNER TO crm_owner;

SELECT pg_catalog.pg_extension_config_dump('core.custom_fields', '');
SELECT pg_catalog.pg_extension_config_dump('crm.pipeline_stages', '');
SELECT pg_catalog.pg_extension_config_dump('crm.organizations', '');
SELECT pg_catalog.pg_extension_config_dump('crm.contacts', '');
SELECT pg_catalog.pg_extension_config_dump('crm.deals', '');
SELECT pg_catalog.pg_extension_config_dump('crm.deal_stage_changes', '');
SELECT pg_catalog.pg_extension_config_dump('crm.assignment_changes', '');
SELECT pg_catalog.pg_extension_config_dump('crm.activities', '');
