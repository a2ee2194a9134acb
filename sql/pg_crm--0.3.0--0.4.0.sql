-- pg_crm 0.3.0 -> 0.4.0: the CRM module (issue 7): schema crm (organizations, contacts,
-- deals and their pipeline stages, activities, stage and assignment history), custom field
-- definitions, the api functions, the fields.manage permission. pg_crm now requires pg_trgm
-- and btree_gin (trigram search): create them before ALTER EXTENSION pg_crm UPDATE.
-- Released scripts are frozen: a change after 0.4.0 goes into a new script.

INSERT INTO core.permissions (key, description, builtin)
VALUES ('fields.manage', 'Define and delete custom fields', true);
INSERT INTO core.role_permissions (role, permission, builtin) VALUES ('admin', 'fields.manage', true);

-- The rules in Rust (pg_crm::crm).
-- pg_crm/src/crm.rs:186
-- pg_crm::crm::contact_duplicate
-- requires:
--   schema
CREATE  FUNCTION "contact_duplicate"(
	"first_name" TEXT, /* Option < & str > */
	"last_name" TEXT, /* Option < & str > */
	"email" TEXT, /* Option < & str > */
	"phone" TEXT, /* Option < & str > */
	"organization_id" uuid, /* Option < pgrx :: Uuid > */
	"other_first_name" TEXT, /* Option < & str > */
	"other_last_name" TEXT, /* Option < & str > */
	"other_email" TEXT, /* Option < & str > */
	"other_phone" TEXT, /* Option < & str > */
	"other_organization_id" uuid /* Option < pgrx :: Uuid > */
) RETURNS jsonb /* Option < JsonB > */
IMMUTABLE PARALLEL SAFE 
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'contact_duplicate_wrapper';

-- pg_crm/src/crm.rs:12
-- pg_crm::crm::currency_known
-- requires:
--   schema
CREATE  FUNCTION "currency_known"(
	"code" TEXT /* & str */
) RETURNS bool /* bool */
IMMUTABLE STRICT PARALLEL SAFE 
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'currency_known_wrapper';

-- pg_crm/src/crm.rs:138
-- pg_crm::crm::custom_field_definition
-- requires:
--   schema
CREATE  FUNCTION "custom_field_definition"(
	"key" TEXT, /* Option < & str > */
	"label" TEXT, /* Option < & str > */
	"field_type" TEXT, /* Option < & str > */
	"required" bool, /* Option < bool > */
	"options" jsonb /* Option < JsonB > */
) RETURNS jsonb /* JsonB */
IMMUTABLE PARALLEL SAFE 
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'custom_field_definition_wrapper';

-- pg_crm/src/crm.rs:128
-- pg_crm::crm::custom_fields_check
-- requires:
--   schema
CREATE  FUNCTION "custom_fields_check"(
	"definitions" jsonb, /* JsonB */
	"old" jsonb, /* Option < JsonB > */
	"new" jsonb /* JsonB */
) RETURNS jsonb /* JsonB */
IMMUTABLE PARALLEL SAFE 
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'custom_fields_check_wrapper';

-- pg_crm/src/crm.rs:18
-- pg_crm::crm::default_stages
-- requires:
--   schema
CREATE  FUNCTION "default_stages"() RETURNS TABLE (
	"key" TEXT,  /* String */
	"label" TEXT,  /* String */
	"position" INT,  /* i32 */
	"probability" smallint,  /* i16 */
	"kind" TEXT  /* String */
)
IMMUTABLE STRICT PARALLEL SAFE 
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'default_stages_wrapper';

-- pg_crm/src/crm.rs:110
-- pg_crm::crm::fields_check
-- requires:
--   schema
CREATE  FUNCTION "fields_check"(
	"entity" TEXT, /* & str */
	"mode" TEXT, /* & str */
	"values" jsonb /* JsonB */
) RETURNS jsonb /* JsonB */
IMMUTABLE STRICT PARALLEL SAFE 
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'fields_check_wrapper';

-- pg_crm/src/crm.rs:221
-- pg_crm::crm::organization_duplicate
-- requires:
--   schema
CREATE  FUNCTION "organization_duplicate"(
	"name" TEXT, /* Option < & str > */
	"website_domain" TEXT, /* Option < & str > */
	"other_name" TEXT, /* Option < & str > */
	"other_website_domain" TEXT /* Option < & str > */
) RETURNS jsonb /* Option < JsonB > */
IMMUTABLE PARALLEL SAFE 
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'organization_duplicate_wrapper';

-- pg_crm/src/crm.rs:76
-- pg_crm::crm::stage_transition
-- requires:
--   schema
CREATE  FUNCTION "stage_transition"(
	"from_key" TEXT, /* Option < & str > */
	"from_kind" TEXT, /* Option < & str > */
	"to_key" TEXT, /* & str */
	"to_kind" TEXT, /* & str */
	"to_default_probability" INT, /* i32 */
	"probability" INT, /* Option < i32 > */
	"reason" TEXT, /* Option < & str > */
	"reopen" bool /* bool */
) RETURNS jsonb /* JsonB */
IMMUTABLE PARALLEL SAFE 
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'stage_transition_wrapper';

-- sql/crm_schema.sql
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
    IF crm_private.user_id() IS NULL THEN
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
    IF (NEW.tenant_id, NEW.id, NEW.type, NEW.description, NEW.occurred_at, NEW.actor_id, NEW.deal_id, NEW.created_at, NEW.created_by)
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

-- New tenants get the standard pipeline (sql/auth.sql).
CREATE OR REPLACE FUNCTION crm_private.auth_signup(req jsonb) RETURNS jsonb
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    cfg jsonb := crm_private.auth_config();
    b jsonb := coalesce(req -> 'body', '{}'::jsonb);
    v_data jsonb;
    v_email text;
    v_password text;
    v_refusal jsonb;
    v_wait integer;
    v_autoconfirm boolean := coalesce((cfg ->> 'autoconfirm')::boolean, false);
    v_company text;
    v_full_name text;
    v_name text;
    v_tenant uuid;
    v_id uuid := gen_random_uuid();
    u auth.users;
BEGIN
    IF coalesce((cfg ->> 'disable_signup')::boolean, false) THEN
        RETURN crm_private.auth_error(422, 'signup_disabled', 'Signups not allowed for this instance');
    END IF;
    IF crm_private.auth_bad_type(b, ARRAY['email', 'password'], 'string') IS NOT NULL
       OR crm_private.auth_bad_type(b, ARRAY['data'], 'object') IS NOT NULL THEN
        RETURN crm_private.auth_error(400, 'validation_failed', 'Could not read the request body: email and password must be strings and data an object');
    END IF;
    v_data := coalesce(nullif(b -> 'data', 'null'::jsonb), '{}'::jsonb);
    IF coalesce(crm_private.auth_text(b, 'email'), '') = '' THEN
        RETURN crm_private.auth_error(400, 'validation_failed', 'To signup, please provide your email');
    END IF;
    v_email := crm_private.normalize_email(b ->> 'email');
    IF v_email IS NULL THEN
        RETURN crm_private.auth_error(400, 'validation_failed', 'Unable to validate email address: invalid format');
    END IF;
    v_password := crm_private.auth_text(b, 'password');
    IF coalesce(v_password, '') = '' THEN
        RETURN crm_private.auth_error(422, 'validation_failed', 'Signup requires a valid password');
    END IF;
    v_refusal := crm_private.auth_password_refusal(v_password, cfg);
    IF v_refusal IS NOT NULL THEN
        RETURN v_refusal;
    END IF;
    v_company := nullif(btrim(crm_private.auth_text(v_data, 'company_name')), '');
    v_full_name := nullif(btrim(crm_private.auth_text(v_data, 'full_name')), '');
    IF char_length(v_company) > 200 OR char_length(v_full_name) > 200 THEN
        RETURN crm_private.auth_error(422, 'validation_failed', 'company_name and full_name may have at most 200 characters');
    END IF;

    v_wait := greatest(
        crm_private.auth_throttle('signup:ip:' || crm_private.auth_ip_bucket(req), (cfg ->> 'signups_per_ip')::integer, (cfg ->> 'send_window')::integer, true),
        crm_private.auth_throttle('signup:email:' || crm_private.auth_digest(v_email), (cfg ->> 'signups_per_email')::integer, (cfg ->> 'send_window')::integer, true));
    IF v_wait > 0 THEN
        RETURN crm_private.auth_error(429, 'over_request_rate_limit', 'Request rate limit reached', jsonb_build_object('retry_after', v_wait));
    END IF;

    SELECT * INTO u FROM auth.users x WHERE x.email = v_email AND NOT x.is_sso_user FOR UPDATE;
    IF FOUND AND coalesce(u.encrypted_password, '') = '' AND u.deleted_at IS NULL
       AND NOT EXISTS (SELECT 1 FROM core.memberships m WHERE m.user_id = u.id) THEN
        -- An account nobody has claimed (made for an invitation, or by an operator, without a
        -- password): this signup claims it, as it would a new one. Its pending invitations
        -- stay; accepting one later is refused, as for any member of a workspace.
        v_id := u.id;
        UPDATE auth.users x
           SET encrypted_password = crm_private.password_hash(v_password),
               email_confirmed_at = CASE WHEN v_autoconfirm THEN now() ELSE x.email_confirmed_at END,
               raw_user_meta_data = coalesce(x.raw_user_meta_data, '{}'::jsonb) || v_data, updated_at = now()
         WHERE x.id = v_id
        RETURNING * INTO u;
    ELSIF FOUND THEN
        IF v_autoconfirm THEN
            RETURN crm_private.auth_error(422, 'user_already_exists', 'User already registered');
        END IF;
        IF u.email_confirmed_at IS NULL AND u.deleted_at IS NULL THEN
            -- Not confirmed yet: the latest signup's password is the one the link confirms, so
            -- an earlier signup by someone else with this address gains nothing.
            UPDATE auth.users x SET encrypted_password = crm_private.password_hash(v_password), updated_at = now()
             WHERE x.id = u.id;
            PERFORM crm_private.auth_send_link(u, 'signup', crm_private.auth_text(req -> 'query', 'redirect_to'));
            SELECT * INTO u FROM auth.users x WHERE x.id = u.id;
            RETURN jsonb_build_object('body', crm_private.auth_user_json(u));
        END IF;
        -- As GoTrue does without auto-confirm: a reply shaped like a new user's, so the
        -- response does not tell whether the address has an account.
        RETURN jsonb_build_object('body', jsonb_build_object(
            'id', gen_random_uuid(), 'aud', 'authenticated', 'role', 'authenticated', 'email', v_email,
            'phone', '', 'confirmation_sent_at', now(),
            'app_metadata', jsonb_build_object('provider', 'email', 'providers', jsonb_build_array('email')),
            'user_metadata', '{}'::jsonb, 'identities', '[]'::jsonb, 'created_at', now(),
            'updated_at', now(), 'is_anonymous', false));
    END IF;

    IF u.id IS NULL THEN
        INSERT INTO auth.users (instance_id, id, aud, role, email, encrypted_password, email_confirmed_at,
                                raw_app_meta_data, raw_user_meta_data, created_at, updated_at, is_sso_user, is_anonymous)
        VALUES ('00000000-0000-0000-0000-000000000000', v_id, 'authenticated', 'authenticated', v_email,
                crm_private.password_hash(v_password), CASE WHEN v_autoconfirm THEN now() END,
                jsonb_build_object('provider', 'email', 'providers', jsonb_build_array('email')),
                v_data, now(), now(), false, false)
        RETURNING * INTO u;
        INSERT INTO auth.identities (provider_id, user_id, identity_data, provider, created_at, updated_at)
        VALUES (v_id::text, v_id,
                jsonb_build_object('sub', v_id::text, 'email', v_email, 'email_verified', v_autoconfirm, 'phone_verified', false),
                'email', now(), now());
    END IF;

    v_name := coalesce(v_company,
                       left(coalesce(v_full_name, split_part(v_email, '@', 1)), 188) || '''s workspace');
    INSERT INTO core.tenants (name, slug, created_by, updated_by)
    VALUES (v_name, crm_private.slugify(v_name) || '-' || substr(md5(gen_random_uuid()::text), 1, 8), v_id, v_id)
    RETURNING id INTO v_tenant;
    PERFORM crm_private.seed_pipeline(v_tenant);
    INSERT INTO core.memberships (tenant_id, user_id, role, display_name, created_by, updated_by)
    VALUES (v_tenant, v_id, 'admin', v_full_name, v_id, v_id);

    IF v_autoconfirm THEN
        RETURN crm_private.auth_issue_session(v_id, req, 'password');
    END IF;
    PERFORM crm_private.auth_send_link(u, 'signup', crm_private.auth_text(req -> 'query', 'redirect_to'));
    SELECT * INTO u FROM auth.users x WHERE x.id = v_id;
    RETURN jsonb_build_object('body', crm_private.auth_user_json(u));
END
$$;
COMMENT ON FUNCTION crm_private.auth_signup(jsonb) IS 'POST /auth/v1/signup: creates the user and a new workspace with them as its admin, in one transaction.';

-- sql/crm.sql
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
        PERFORM crm_private.not_found('organization', field);
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
        PERFORM crm_private.not_found('contact', field);
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
        PERFORM crm_private.not_found('deal', field);
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
                          (SELECT c3.* FROM crm.contacts c3
                            WHERE c3.tenant_id = v_tenant AND length(v_name) >= 3 AND v_name <% c3.search_text
                              AND c3.deleted_at IS NULL AND c3.assigned_to BETWEEN v_first AND v_last LIMIT 50)) k
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
        PERFORM crm_private.not_found('organization', 'id');
    END IF;
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
               CASE WHEN count(*) > v_n THEN max(x.k) FILTER (WHERE x.rn = v_n) END
          INTO v_rows, v_next
          FROM (SELECT row_number() OVER (ORDER BY lower(o.name), o.id) AS rn,
                       crm_private.organization_json(o) || jsonb_build_object('depth', t.depth) AS j,
                       crm_private.make_cursor('organizations', 'name', lower(o.name), o.id) AS k
                  FROM tree t JOIN crm.organizations o ON o.tenant_id = crm_private.tenant_id() AND o.id = t.id
                 WHERE (o.deleted_at IS NOT NULL) = v_deleted
                   AND (v_after.id IS NULL OR (lower(o.name), o.id) > (v_after.value, v_after.id))
                 ORDER BY lower(o.name), o.id LIMIT v_n + 1) x;
    ELSIF v_sort = 'name' THEN
        SELECT coalesce(jsonb_agg(x.j ORDER BY x.rn) FILTER (WHERE x.rn <= v_n), '[]'::jsonb),
               CASE WHEN count(*) > v_n THEN max(x.k) FILTER (WHERE x.rn = v_n) END
          INTO v_rows, v_next
          FROM (SELECT row_number() OVER (ORDER BY lower(o.name), o.id) AS rn, crm_private.organization_json(o) AS j,
                       crm_private.make_cursor('organizations', 'name', lower(o.name), o.id) AS k
                  FROM crm.organizations o
                 WHERE o.tenant_id = crm_private.tenant_id() AND (o.deleted_at IS NOT NULL) = v_deleted
                   AND (list_organizations.parent_id IS NULL OR o.parent_id = list_organizations.parent_id)
                   AND (v_after.id IS NULL OR (lower(o.name), o.id) > (v_after.value, v_after.id))
                 ORDER BY lower(o.name), o.id LIMIT v_n + 1) x;
    ELSE
        SELECT coalesce(jsonb_agg(x.j ORDER BY x.rn) FILTER (WHERE x.rn <= v_n), '[]'::jsonb),
               CASE WHEN count(*) > v_n THEN max(x.k) FILTER (WHERE x.rn = v_n) END
          INTO v_rows, v_next
          FROM (SELECT row_number() OVER (ORDER BY o.created_at DESC, o.id DESC) AS rn, crm_private.organization_json(o) AS j,
                       crm_private.make_cursor('organizations', 'newest', crm_private.time_key(o.created_at), o.id) AS k
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
        PERFORM crm_private.not_found('organization', 'id');
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
        PERFORM crm_private.not_found(CASE WHEN deleted THEN 'live organization' ELSE 'deleted organization' END, 'id');
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
        PERFORM crm_private.not_found('contact', 'id');
    END IF;
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
               CASE WHEN count(*) > v_n THEN max(x.k) FILTER (WHERE x.rn = v_n) END
          INTO v_rows, v_next
          FROM (SELECT row_number() OVER (ORDER BY c.created_at DESC, c.id DESC) AS rn, crm_private.contact_json(c) AS j,
                       crm_private.make_cursor('contacts', 'newest', crm_private.time_key(c.created_at), c.id) AS k
                  FROM crm.contacts c
                 WHERE c.tenant_id = crm_private.tenant_id() AND (c.deleted_at IS NOT NULL) = v_deleted
                   AND (list_contacts.organization_id IS NULL OR c.organization_id = list_contacts.organization_id)
                   AND (list_contacts.assigned_to IS NULL OR c.assigned_to = list_contacts.assigned_to)
                   AND (v_after.id IS NULL OR (c.created_at, c.id) < (v_after.value::timestamptz, v_after.id))
                 ORDER BY c.created_at DESC, c.id DESC LIMIT v_n + 1) x;
    ELSE
        SELECT coalesce(jsonb_agg(x.j ORDER BY x.rn) FILTER (WHERE x.rn <= v_n), '[]'::jsonb),
               CASE WHEN count(*) > v_n THEN max(x.k) FILTER (WHERE x.rn = v_n) END
          INTO v_rows, v_next
          FROM (SELECT row_number() OVER (ORDER BY c.sort_name, c.id) AS rn, crm_private.contact_json(c) AS j,
                       crm_private.make_cursor('contacts', 'name', c.sort_name, c.id) AS k
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
CREATE FUNCTION crm_private.contact_search(q text, pattern text, digits text, after_rank numeric, after_id uuid, n integer)
    RETURNS TABLE (id uuid, contact jsonb, rank numeric)
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    SET pg_trgm.word_similarity_threshold = 0.5
    SET enable_seqscan = off
    SET plan_cache_mode = force_custom_plan
    AS $$
DECLARE
    v_tenant uuid := crm_private.tenant_id();
    v_first uuid := crm_private.first_visible_assignee();
    v_last uuid := crm_private.last_visible_assignee();
BEGIN
    RETURN QUERY
    WITH orgs AS MATERIALIZED (
        SELECT o.id, greatest(word_similarity(q, lower(o.name)), CASE WHEN lower(o.name) LIKE pattern THEN 0.9 ELSE 0 END) AS s
          FROM crm.organizations o
         WHERE o.tenant_id = v_tenant AND o.deleted_at IS NULL AND (lower(o.name) LIKE pattern OR q <% lower(o.name))),
    -- A contact matches by its own text (ranked by it), or through its organization (ranked
    -- 0.8 x the organization's match): its best match counts.
    hits AS (
        SELECT c.id, greatest(word_similarity(q, c.search_text),
                              CASE WHEN lower(c.email) = q THEN 1.0 WHEN c.search_text LIKE pattern THEN 0.9 ELSE 0 END,
                              CASE WHEN c.search_text LIKE digits THEN 0.95 ELSE 0 END) AS s
          FROM crm.contacts c
         WHERE c.tenant_id = v_tenant AND c.deleted_at IS NULL AND c.assigned_to BETWEEN v_first AND v_last
           AND (c.search_text LIKE pattern OR q <% c.search_text OR c.search_text LIKE digits)
        UNION ALL
        SELECT c.id, 0.8 * orgs.s
          FROM orgs JOIN crm.contacts c ON c.tenant_id = v_tenant AND c.organization_id = orgs.id
         WHERE c.deleted_at IS NULL AND c.assigned_to BETWEEN v_first AND v_last),
    page AS (
        SELECT b.id, b.score
          FROM (SELECT h.id, round(max(h.s)::numeric, 3) AS score FROM hits h GROUP BY h.id) b
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
    RETURN jsonb_build_object('data', v_rows, 'next_cursor', v_next);
END
$$;
COMMENT ON FUNCTION api.search_contacts(text, integer, text) IS
'Search the contacts the caller sees by name, email, phone or company in one call (PRD F7.3), best match first: {data: [{...contact, rank}], next_cursor}. Fragments and typos are tolerated (trigram similarity); phone digits are compared without formatting, so +1 (555) 010-0200 finds 5550100200. q: 2-200 characters. page_size 1-100 (default 25); pass next_cursor back with the same q.';

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
        PERFORM crm_private.not_found('contact', 'id');
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
        PERFORM crm_private.not_found('contact', 'id');
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
        PERFORM crm_private.not_found(CASE WHEN deleted THEN 'live contact' ELSE 'deleted contact' END, 'id');
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
            PERFORM crm_private.not_found('contact', 'id');
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
        PERFORM crm_private.not_found('contact', 'keep_id');
    END IF;
    SELECT * INTO m FROM crm.contacts x WHERE x.tenant_id = crm_private.tenant_id() AND x.id = merge_id AND x.deleted_at IS NULL FOR UPDATE;
    IF NOT FOUND THEN
        PERFORM crm_private.not_found('contact', 'merge_id');
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
        PERFORM crm_private.not_found('deal', 'id');
    END IF;
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
               CASE WHEN count(*) > v_n THEN max(x.k) FILTER (WHERE x.rn = v_n) END
          INTO v_rows, v_next
          FROM (SELECT row_number() OVER (ORDER BY d.created_at DESC, d.id DESC) AS rn, crm_private.deal_json(d) AS j,
                       crm_private.make_cursor('deals', 'newest', crm_private.time_key(d.created_at), d.id) AS k
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
               CASE WHEN count(*) > v_n THEN max(x.k) FILTER (WHERE x.rn = v_n) END
          INTO v_rows, v_next
          FROM (SELECT row_number() OVER (ORDER BY coalesce(d.expected_close_date, 'infinity'::date), d.id) AS rn,
                       crm_private.deal_json(d) AS j,
                       crm_private.make_cursor('deals', 'close_date', to_char(coalesce(d.expected_close_date, 'infinity'::date), 'YYYY-MM-DD'), d.id) AS k
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
               CASE WHEN count(*) > v_n THEN max(x.k) FILTER (WHERE x.rn = v_n) END
          INTO v_rows, v_next
          FROM (SELECT row_number() OVER (ORDER BY d.amount DESC, d.id DESC) AS rn, crm_private.deal_json(d) AS j,
                       crm_private.make_cursor('deals', 'amount', d.amount::text, d.id) AS k
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
        PERFORM crm_private.not_found('deal', 'id');
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
        PERFORM crm_private.not_found('deal', 'id');
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
        PERFORM crm_private.not_found('deal', 'id');
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
        PERFORM crm_private.not_found('deal', 'id');
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
        PERFORM crm_private.not_found(CASE WHEN deleted THEN 'live deal' ELSE 'deleted deal' END, 'id');
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
        PERFORM crm_private.not_found('deal', 'id');
    END IF;
    v_after := crm_private.read_cursor(deal_stage_history.cursor, 'deal_stage_history:' || deal_stage_history.id, 'newest');
    SELECT coalesce(jsonb_agg(x.j ORDER BY x.rn) FILTER (WHERE x.rn <= v_n), '[]'::jsonb),
           CASE WHEN count(*) > v_n THEN max(x.k) FILTER (WHERE x.rn = v_n) END
      INTO v_rows, v_next
      FROM (SELECT row_number() OVER (ORDER BY h.changed_at DESC, h.id DESC) AS rn,
                   jsonb_build_object('id', h.id, 'from_stage', h.from_stage, 'to_stage', h.to_stage,
                                      'probability', h.probability, 'reason', h.reason, 'changed_by', h.changed_by,
                                      'changed_at', h.changed_at) AS j,
                   crm_private.make_cursor('deal_stage_history:' || deal_stage_history.id, 'newest', crm_private.time_key(h.changed_at), h.id) AS k
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
    RETURN jsonb_build_object(
        'by_stage', coalesce((
            SELECT jsonb_agg(jsonb_build_object('stage', s.key, 'label', s.label, 'kind', s.kind, 'position', s.position,
                                                'totals', coalesce(t.totals, '[]'::jsonb)) ORDER BY s.position, s.key)
              FROM crm.pipeline_stages s
              LEFT JOIN (SELECT g.stage, jsonb_agg(jsonb_build_object('currency', g.currency, 'count', g.n, 'total', g.total,
                                                                     'weighted_total', g.weighted) ORDER BY g.currency) AS totals
                           FROM (SELECT d.stage, d.currency, count(*) AS n, sum(d.amount) AS total,
                                        round(sum(d.amount * d.probability / 100.0), 2) AS weighted
                                   FROM crm.deals d WHERE d.tenant_id = crm_private.tenant_id() AND d.deleted_at IS NULL
                                  GROUP BY d.stage, d.currency) g
                          GROUP BY g.stage) t ON t.stage = s.key
             WHERE s.tenant_id = crm_private.tenant_id()), '[]'::jsonb),
        'by_owner', coalesce((
            SELECT jsonb_agg(jsonb_build_object('assigned_to', o.assigned_to, 'display_name', m.display_name,
                                                'totals', o.totals) ORDER BY m.display_name, o.assigned_to)
              FROM (SELECT g.assigned_to, jsonb_agg(jsonb_build_object('currency', g.currency, 'count', g.n, 'total', g.total,
                                                                      'weighted_total', g.weighted) ORDER BY g.currency) AS totals
                      FROM (SELECT d.assigned_to, d.currency, count(*) AS n, sum(d.amount) AS total,
                                   round(sum(d.amount * d.probability / 100.0), 2) AS weighted
                              FROM crm.deals d WHERE d.tenant_id = crm_private.tenant_id() AND d.deleted_at IS NULL
                               AND d.closed_at IS NULL
                             GROUP BY d.assigned_to, d.currency) g
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
        PERFORM crm_private.not_found('contact', 'contact_id');
    END IF;
    IF list_activities.deal_id IS NOT NULL AND NOT EXISTS (
           SELECT 1 FROM crm.deals d WHERE d.tenant_id = crm_private.tenant_id() AND d.id = list_activities.deal_id) THEN
        PERFORM crm_private.not_found('deal', 'deal_id');
    END IF;
    v_after := crm_private.read_cursor(list_activities.cursor, 'activities', 'newest');
    SELECT coalesce(jsonb_agg(x.j ORDER BY x.rn) FILTER (WHERE x.rn <= v_n), '[]'::jsonb),
           CASE WHEN count(*) > v_n THEN max(x.k) FILTER (WHERE x.rn = v_n) END
      INTO v_rows, v_next
      FROM (SELECT row_number() OVER (ORDER BY a.occurred_at DESC, a.id DESC) AS rn, crm_private.activity_json(a) AS j,
                   crm_private.make_cursor('activities', 'newest', crm_private.time_key(a.occurred_at), a.id) AS k
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

-- sql/grants.sql (every statement in it is idempotent)
-- Every privilege pg_crm grants, in one place. Nothing is granted by default: PUBLIC loses
-- everything first, then each role gets exactly what it needs, by name. The regression
-- suite (pgrx-tests/sql/grants.sql) proves the result from a low-privilege role.

REVOKE ALL ON SCHEMA core, crm, crm_private, api FROM PUBLIC;
REVOKE ALL ON ALL TABLES IN SCHEMA core, crm FROM PUBLIC;
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA core, crm_private, api FROM PUBLIC;
-- ...and functions later upgrade scripts add start without PUBLIC's EXECUTE too.
ALTER DEFAULT PRIVILEGES IN SCHEMA core, crm, crm_private, api REVOKE EXECUTE ON FUNCTIONS FROM PUBLIC;

-- crm_owner owns the tables; foreign-key checks run as the referenced table's owner.
GRANT USAGE ON SCHEMA core, crm TO crm_owner;

-- authenticated: the role every edge request runs as (SET LOCAL ROLE), after
-- crm_private.begin_request has set its tenant context.
GRANT USAGE ON SCHEMA api, core, crm, crm_private TO authenticated;

GRANT SELECT ON core.tenants TO authenticated;
GRANT SELECT ON core.roles, core.permissions, core.role_permissions TO authenticated;
GRANT UPDATE (role, status, display_name, avatar_url, department) ON core.memberships TO authenticated;
-- Every column but the token digests; no writes (the SECURITY DEFINER functions write).
GRANT SELECT (tenant_id, id, email, role, user_id, invited_by, status, expires_at, sent_at, accepted_at,
              created_at, updated_at, created_by, updated_by) ON core.invitations TO authenticated;
GRANT UPDATE (name, logo_url, industry, timezone) ON core.tenants TO authenticated;
GRANT SELECT ON core.memberships TO authenticated;

-- The CRM (crm_schema.sql): reads and writes as row-level security allows, on the columns a
-- caller may set (stamps, owner columns, history and activities' content are the
-- database's). No DELETE anywhere: records are soft-deleted; activities are never updated.
GRANT SELECT, DELETE ON core.custom_fields TO authenticated;
GRANT INSERT (tenant_id, entity, key, label, type, required, options) ON core.custom_fields TO authenticated;
GRANT UPDATE (label, required, options) ON core.custom_fields TO authenticated;
GRANT SELECT ON crm.pipeline_stages, crm.deal_stage_changes, crm.assignment_changes TO authenticated;
GRANT SELECT ON crm.organizations, crm.contacts, crm.deals, crm.activities TO authenticated;
GRANT INSERT (tenant_id, name, industry, size, location, website, parent_id, custom_fields) ON crm.organizations TO authenticated;
GRANT UPDATE (name, industry, size, location, website, parent_id, custom_fields, deleted_at) ON crm.organizations TO authenticated;
GRANT INSERT (tenant_id, first_name, last_name, email, phone, title, organization_id, assigned_to, custom_fields)
    ON crm.contacts TO authenticated;
GRANT UPDATE (first_name, last_name, email, phone, title, organization_id, assigned_to, custom_fields, merged_into, deleted_at)
    ON crm.contacts TO authenticated;
GRANT INSERT (tenant_id, name, amount, currency, stage, probability, expected_close_date, lost_reason, contact_id,
              organization_id, assigned_to, notes, custom_fields) ON crm.deals TO authenticated;
GRANT UPDATE (name, amount, currency, stage, probability, expected_close_date, closed_at, lost_reason, contact_id,
              organization_id, assigned_to, notes, custom_fields, deleted_at) ON crm.deals TO authenticated;
GRANT INSERT (tenant_id, type, description, occurred_at, actor_id, contact_id, deal_id) ON crm.activities TO authenticated;

GRANT EXECUTE ON FUNCTION
    crm_private.begin_request(jsonb, uuid),
    crm_private.tenant_id(),
    crm_private.user_id(),
    crm_private.tenant_role(),
    crm_private.workspace_json(core.tenants),
    crm_private.current_user_email(),
    crm_private.update_workspace(text, text, text, text),
    api.whoami(),
    api.get_workspace(),
    api.update_workspace(text, text, text, text),
    crm_private.has_permission(text),
    crm_private.require_permission(text),
    crm_private.page_size(integer),
    crm_private.encode_cursor(timestamptz, uuid),
    crm_private.decode_cursor(text),
    crm_private.normalize_email(text),
    crm_private.member_email(uuid),
    crm_private.member_json(core.memberships),
    crm_private.require_invite_right(text),
    crm_private.invitation_create(text, text),
    crm_private.invitation_change(uuid, boolean),
    crm_private.change_member(uuid, text, text),
    api.invite_user(text, text),
    api.list_invitations(integer, text),
    api.resend_invitation(uuid),
    api.revoke_invitation(uuid),
    api.list_members(integer, text),
    api.set_member_role(uuid, text),
    api.deactivate_member(uuid),
    api.reactivate_member(uuid),
    api.update_profile(text, text, text),
    api.my_permissions(),
    -- the CRM
    crm_private.first_visible_assignee(),
    crm_private.last_visible_assignee(),
    crm_private.sees_either(uuid, uuid),
    crm_private.currency_known(text),
    crm_private.phone_digits(text),
    crm_private.fields_check(text, text, jsonb),
    crm_private.custom_field_definition(text, text, text, boolean, jsonb),
    crm_private.contact_duplicate(text, text, text, text, uuid, text, text, text, text, uuid),
    crm_private.organization_duplicate(text, text, text, text),
    crm_private.make_cursor(text, text, text, uuid),
    crm_private.read_cursor(text, text, text),
    crm_private.time_key(timestamptz),
    crm_private.bad_sort(text[]),
    crm_private.not_found(text, text),
    crm_private.require_assignee(uuid),
    crm_private.organization_json(crm.organizations),
    crm_private.contact_json(crm.contacts),
    crm_private.deal_json(crm.deals),
    crm_private.activity_json(crm.activities),
    crm_private.custom_field_json(core.custom_fields),
    crm_private.require_organization(uuid, text),
    crm_private.require_contact(uuid, text),
    crm_private.require_deal(uuid, text),
    crm_private.require_stage(text),
    crm_private.require_entity(text),
    crm_private.contact_with_email(text, uuid),
    crm_private.require_unique_email(text, uuid),
    crm_private.contact_duplicates(text, text, text, text, uuid, uuid),
    crm_private.contact_search(text, text, text, numeric, uuid, integer),
    crm_private.organization_duplicates(text, text, uuid),
    crm_private.set_organization_deleted(uuid, boolean),
    crm_private.set_contact_deleted(uuid, boolean),
    crm_private.set_deal_deleted(uuid, boolean),
    crm_private.move_activities(uuid, uuid),
    crm_private.archive_activity(uuid),
    api.create_organization(text, text, text, text, text, uuid, jsonb),
    api.get_organization(uuid),
    api.list_organizations(uuid, uuid, text, boolean, integer, text),
    api.update_organization(uuid, jsonb),
    api.delete_organization(uuid),
    api.restore_organization(uuid),
    api.create_contact(text, text, text, text, text, uuid, uuid, jsonb),
    api.get_contact(uuid),
    api.list_contacts(uuid, uuid, text, boolean, integer, text),
    api.search_contacts(text, integer, text),
    api.update_contact(uuid, jsonb),
    api.assign_contact(uuid, uuid),
    api.delete_contact(uuid),
    api.restore_contact(uuid),
    api.find_duplicate_contacts(uuid, text, text, text, text, uuid),
    api.merge_contacts(uuid, uuid),
    api.create_deal(text, numeric, text, text, integer, date, uuid, uuid, uuid, text, jsonb),
    api.get_deal(uuid),
    api.list_deals(text, uuid, uuid, uuid, integer, integer, date, date, text, boolean, integer, text),
    api.update_deal(uuid, jsonb),
    api.move_deal(uuid, text, text, integer),
    api.reopen_deal(uuid, text, integer),
    api.assign_deal(uuid, uuid),
    api.delete_deal(uuid),
    api.restore_deal(uuid),
    api.deal_stage_history(uuid, integer, text),
    api.list_pipeline_stages(),
    api.pipeline_summary(),
    api.log_activity(text, text, timestamptz, uuid, uuid),
    api.list_activities(uuid, uuid, boolean, integer, text),
    api.archive_activity(uuid),
    api.define_custom_field(text, text, text, text, boolean, jsonb),
    api.list_custom_fields(text),
    api.delete_custom_field(text, text)
TO authenticated;

-- crm_auth: the role the edge's /auth/v1 endpoints run as (SET LOCAL ROLE crm_auth). It
-- reaches auth.* only through these SECURITY DEFINER functions, and nothing else.
GRANT USAGE ON SCHEMA crm_private TO crm_auth;
GRANT EXECUTE ON FUNCTION
    crm_private.auth_signup(jsonb),
    crm_private.auth_token_password(jsonb),
    crm_private.auth_token_refresh(jsonb),
    crm_private.auth_logout(jsonb),
    crm_private.auth_user_get(jsonb),
    crm_private.auth_user_update(jsonb),
    crm_private.auth_recover(jsonb),
    crm_private.auth_verify(jsonb),
    crm_private.auth_invite(jsonb),
    crm_private.auth_admin_list_users(jsonb),
    crm_private.auth_admin_get_user(jsonb),
    crm_private.auth_admin_create_user(jsonb),
    crm_private.auth_admin_update_user(jsonb),
    crm_private.auth_admin_delete_user(jsonb),
    crm_private.auth_settings_public(jsonb),
    crm_private.auth_redirect_target(jsonb),
    crm_private.outbox_claim(integer, integer),
    crm_private.outbox_sent(bigint),
    crm_private.outbox_failed(bigint, text)
TO crm_auth;

-- On Supabase, GoTrue calls the access token hook as supabase_auth_admin.
DO $hook$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'supabase_auth_admin') THEN
        GRANT USAGE ON SCHEMA core TO supabase_auth_admin;
        GRANT EXECUTE ON FUNCTION core.custom_access_token_hook(jsonb) TO supabase_auth_admin;
    END IF;
END
$hook$;

-- anon and service_role get nothing. The operator functions (crm_private.create_tenant,
-- add_member, set_tenant_status, set_member_status, suspend_tenant, reactivate_tenant,
-- create_session) and the auth helpers not listed above are for the DBA (a superuser) only.

-- The tenants that exist already get the standard pipeline.
INSERT INTO crm.pipeline_stages (tenant_id, key, label, position, default_probability, kind)
SELECT t.id, s.key, s.label, s.position, s.probability, s.kind
  FROM core.tenants t CROSS JOIN crm_private.default_stages() s
ON CONFLICT DO NOTHING;
