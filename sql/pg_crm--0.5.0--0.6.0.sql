-- pg_crm 0.5.0 -> 0.6.0 (issue 8): the pipeline summary reads sums kept by triggers
-- (crm.deal_totals) instead of adding up every deal; search_contacts looks up exact
-- substrings first and similar words only when few records contain the text, an email
-- exactly and a phone number by its last ten digits; a new contact's name is compared only
-- with the contacts of its organization or email domain (the only ones a similar name makes
-- duplicates); lists build their next_cursor once, not for every row. Re-authentication
-- (issue 9): POST /auth/v1/reauthenticate, and api.deactivate_member takes its code.
-- Released scripts are frozen: a change after 0.6.0 goes into a new script.

-- The pipeline summary's sums (PRD journey 2; issue 8), kept as deals change.
--
-- api.pipeline_summary used to add up every live deal of the tenant on each call: at
-- 100,000 deals about 100 ms of one core, so 16 managers looking at their dashboards took a
-- second each. crm.deal_totals holds one row per tenant, assignee, stage, currency and
-- open/closed with the count and the sums; the summary adds up the few hundred rows the
-- caller sees. Its policy is the deals' own (tenant, then the assignee rule), so a rep's
-- summary is still their own pipeline.
--
-- Statement triggers with transition tables keep it: one upsert per statement, whatever the
-- number of rows (a bulk insert or the seed pays once). Writes on different assignees,
-- stages or currencies touch different rows and never wait for each other; the deltas of
-- one statement are applied in key order, so two moves in opposite directions cannot
-- deadlock. Rows that fall to zero deals stay (the summary skips them); there are at most
-- assignees x stages x currencies x 2 of them per tenant.
--
-- pg_dump carries none of its rows (its dump filter is false): restoring crm.deals fires
-- these triggers, which rebuild it.

CREATE TABLE crm.deal_totals (
    tenant_id uuid NOT NULL,
    assigned_to uuid NOT NULL,
    stage text NOT NULL,
    currency text NOT NULL,
    open boolean NOT NULL,
    deals bigint NOT NULL,
    amount numeric NOT NULL,
    weighted numeric NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    created_by uuid,
    updated_by uuid,
    CONSTRAINT deal_totals_pkey PRIMARY KEY (tenant_id, assigned_to, stage, currency, open),
    CONSTRAINT deal_totals_tenant_fkey FOREIGN KEY (tenant_id) REFERENCES core.tenants (id) ON DELETE CASCADE
);
COMMENT ON TABLE crm.deal_totals IS 'Live deals per tenant, assignee, stage, currency and open (closed_at IS NULL): count, sum of amounts and of amount x probability / 100. Kept by triggers on crm.deals; read by api.pipeline_summary.';
CREATE TRIGGER deal_totals_stamp BEFORE INSERT OR UPDATE ON crm.deal_totals FOR EACH ROW EXECUTE FUNCTION crm_private.stamp_row();

ALTER TABLE crm.deal_totals ENABLE ROW LEVEL SECURITY;
ALTER TABLE crm.deal_totals FORCE ROW LEVEL SECURITY;
CREATE POLICY deal_totals_select ON crm.deal_totals AS PERMISSIVE FOR SELECT TO authenticated
    USING (tenant_id = crm_private.tenant_id() AND assigned_to BETWEEN crm_private.first_visible_assignee() AND crm_private.last_visible_assignee());
ALTER TABLE crm.deal_totals OWNER TO crm_owner;
SELECT pg_catalog.pg_extension_config_dump('crm.deal_totals', 'WHERE false');

-- One function for the three triggers (a trigger with transition tables has one event);
-- each branch reads only the transition tables its event has.
CREATE FUNCTION crm_private.count_deal_totals() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO crm.deal_totals AS t (tenant_id, assigned_to, stage, currency, open, deals, amount, weighted)
        SELECT n.tenant_id, n.assigned_to, n.stage, n.currency, n.closed_at IS NULL, count(*), sum(n.amount),
               sum(n.amount * n.probability / 100.0)
          FROM new_rows n WHERE n.deleted_at IS NULL
         GROUP BY 1, 2, 3, 4, 5 ORDER BY 1, 2, 3, 4, 5
        ON CONFLICT (tenant_id, assigned_to, stage, currency, open) DO UPDATE
            SET deals = t.deals + excluded.deals, amount = t.amount + excluded.amount, weighted = t.weighted + excluded.weighted;
    ELSIF TG_OP = 'UPDATE' THEN
        INSERT INTO crm.deal_totals AS t (tenant_id, assigned_to, stage, currency, open, deals, amount, weighted)
        SELECT d.tenant_id, d.assigned_to, d.stage, d.currency, d.open, sum(d.deals), sum(d.amount), sum(d.weighted)
          FROM (SELECT n.tenant_id, n.assigned_to, n.stage, n.currency, n.closed_at IS NULL AS open, 1 AS deals, n.amount,
                       n.amount * n.probability / 100.0 AS weighted
                  FROM new_rows n WHERE n.deleted_at IS NULL
                UNION ALL
                SELECT o.tenant_id, o.assigned_to, o.stage, o.currency, o.closed_at IS NULL, -1, -o.amount,
                       -(o.amount * o.probability / 100.0)
                  FROM old_rows o WHERE o.deleted_at IS NULL) d
         GROUP BY 1, 2, 3, 4, 5
        -- An update that moves nothing between rows and changes no sum writes nothing.
        HAVING sum(d.deals) <> 0 OR sum(d.amount) <> 0 OR sum(d.weighted) <> 0
         ORDER BY 1, 2, 3, 4, 5
        ON CONFLICT (tenant_id, assigned_to, stage, currency, open) DO UPDATE
            SET deals = t.deals + excluded.deals, amount = t.amount + excluded.amount, weighted = t.weighted + excluded.weighted;
    ELSE
        -- Deals are soft-deleted; a hard delete is a tenant's purge or an operator's.
        INSERT INTO crm.deal_totals AS t (tenant_id, assigned_to, stage, currency, open, deals, amount, weighted)
        SELECT o.tenant_id, o.assigned_to, o.stage, o.currency, o.closed_at IS NULL, -count(*), -sum(o.amount),
               -sum(o.amount * o.probability / 100.0)
          FROM old_rows o WHERE o.deleted_at IS NULL
         GROUP BY 1, 2, 3, 4, 5 ORDER BY 1, 2, 3, 4, 5
        ON CONFLICT (tenant_id, assigned_to, stage, currency, open) DO UPDATE
            SET deals = t.deals + excluded.deals, amount = t.amount + excluded.amount, weighted = t.weighted + excluded.weighted;
    END IF;
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION crm_private.count_deal_totals() IS 'Trigger: adds the live deals a statement inserted, changed or deleted to crm.deal_totals (per tenant, assignee, stage, currency and open).';
CREATE TRIGGER deals_count_inserted AFTER INSERT ON crm.deals REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION crm_private.count_deal_totals();
CREATE TRIGGER deals_count_updated AFTER UPDATE ON crm.deals REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION crm_private.count_deal_totals();
CREATE TRIGGER deals_count_deleted AFTER DELETE ON crm.deals REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION crm_private.count_deal_totals();

-- The deals there are now. The triggers above already hold the lock that keeps writers out
-- until this transaction ends, so no deal is counted twice or missed.
INSERT INTO crm.deal_totals (tenant_id, assigned_to, stage, currency, open, deals, amount, weighted)
SELECT d.tenant_id, d.assigned_to, d.stage, d.currency, d.closed_at IS NULL, count(*), sum(d.amount),
       sum(d.amount * d.probability / 100.0)
  FROM crm.deals d WHERE d.deleted_at IS NULL
 GROUP BY 1, 2, 3, 4, 5;

-- Duplicate candidates: a similar name under the same email domain (crm_private.contact_duplicates).
CREATE INDEX contacts_email_domain_idx ON crm.contacts (tenant_id, pg_catalog.split_part(pg_catalog.lower(email), '@', 2));

GRANT SELECT ON crm.deal_totals TO authenticated;
REVOKE ALL ON FUNCTION crm_private.count_deal_totals() FROM PUBLIC;

CREATE OR REPLACE FUNCTION api.list_organizations(parent_id uuid DEFAULT NULL, subtree_of uuid DEFAULT NULL, sort text DEFAULT 'name',
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

CREATE OR REPLACE FUNCTION api.list_contacts(organization_id uuid DEFAULT NULL, assigned_to uuid DEFAULT NULL, sort text DEFAULT 'newest',
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

CREATE OR REPLACE FUNCTION api.list_deals(stage text DEFAULT NULL, assigned_to uuid DEFAULT NULL, organization_id uuid DEFAULT NULL,
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
        PERFORM crm_private.not_found('deal', 'id');
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
        PERFORM crm_private.not_found('contact', 'contact_id');
    END IF;
    IF list_activities.deal_id IS NOT NULL AND NOT EXISTS (
           SELECT 1 FROM crm.deals d WHERE d.tenant_id = crm_private.tenant_id() AND d.id = list_activities.deal_id) THEN
        PERFORM crm_private.not_found('deal', 'deal_id');
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

CREATE OR REPLACE FUNCTION crm_private.contact_duplicates(first_name text, last_name text, email text, phone text,
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

-- Re-authentication for sensitive operations (NFR-S8, issue 9): POST /auth/v1/reauthenticate
-- emails a one-time code; api.deactivate_member takes it as nonce.
ALTER TABLE core.email_outbox DROP CONSTRAINT email_outbox_kind_check,
    ADD CONSTRAINT email_outbox_kind_check CHECK (kind IN ('signup', 'recovery', 'invite', 'magiclink', 'email_change', 'reauthentication'));
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
        'send_window', 3600)
        || coalesce((SELECT jsonb_object_agg(s.key, s.value) FROM crm_private.auth_settings s), '{}'::jsonb);
END
$$;
COMMENT ON FUNCTION crm_private.auth_config() IS 'Every auth setting: the defaults, overlaid with the rows of crm_private.auth_settings.';

CREATE FUNCTION crm_private.auth_reauthenticate(req jsonb) RETURNS jsonb
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    cfg jsonb := crm_private.auth_config();
    cur record := crm_private.auth_current_user(req);
    v_code text := crm_private.random_digits(6);
    v_wait integer;
BEGIN
    IF cur.refusal IS NOT NULL THEN
        RETURN cur.refusal;
    END IF;
    v_wait := crm_private.auth_throttle('reauthenticate:user:' || (cur.u).id, (cfg ->> 'recovers_per_email')::integer,
                                        (cfg ->> 'send_window')::integer, true);
    IF v_wait > 0 THEN
        RETURN crm_private.auth_error(429, 'over_email_send_rate_limit', 'Email rate limit exceeded', jsonb_build_object('retry_after', v_wait));
    END IF;
    UPDATE auth.users x
       SET reauthentication_token = crm_private.auth_code_digest('reauthentication:' || x.id, v_code),
           reauthentication_sent_at = now()
     WHERE x.id = (cur.u).id;
    INSERT INTO core.email_outbox (tenant_id, kind, recipient, subject, body)
    VALUES ((SELECT m.tenant_id FROM crm_private.auth_membership((cur.u).id) m), 'reauthentication', (cur.u).email,
            'Confirm it is you',
            'Enter this code in Aura to confirm a sensitive change (valid for '
            || greatest((cfg ->> 'reauthentication_expiry')::integer / 60, 1) || E' minutes, once).\n\nCode: ' || v_code
            || E'\n\nIf you did not ask for it, someone else may be using your account: change your password.\n');
    RETURN jsonb_build_object('body', '{}'::jsonb);
END
$$;
COMMENT ON FUNCTION crm_private.auth_reauthenticate(jsonb) IS 'POST /auth/v1/reauthenticate: emails the signed-in user a one-time code, the nonce sensitive operations require.';

-- Consumes the request user's reauthentication code, or refuses the operation (42501). Only
-- its digest is stored; it is cleared on use. A wrong code raises, which rolls back the
-- request, so guesses are bounded by the rate limit (AURA_RATE_LIMIT per user and minute:
-- 500 in the 5 minutes a code lives, against 1,000,000 codes).
CREATE FUNCTION crm_private.require_reauthentication(nonce text) RETURNS void
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    v_user uuid := crm_private.user_id();
BEGIN
    IF coalesce(btrim(nonce), '') = '' THEN
        RAISE EXCEPTION 'this operation needs a reauthentication nonce' USING ERRCODE = 'insufficient_privilege',
            DETAIL = 'field: nonce', HINT = 'POST /auth/v1/reauthenticate emails you a code; pass it as nonce';
    END IF;
    UPDATE auth.users x SET reauthentication_token = '', reauthentication_sent_at = NULL
     WHERE x.id = v_user
       AND x.reauthentication_token = crm_private.auth_code_digest('reauthentication:' || x.id, btrim(nonce))
       AND x.reauthentication_sent_at > now() - make_interval(secs => (crm_private.auth_config() ->> 'reauthentication_expiry')::integer);
    IF NOT FOUND THEN
        RAISE EXCEPTION 'the reauthentication nonce is wrong, used or expired' USING ERRCODE = 'insufficient_privilege',
            DETAIL = 'field: nonce', HINT = 'POST /auth/v1/reauthenticate emails you a new code';
    END IF;
END
$$;
COMMENT ON FUNCTION crm_private.require_reauthentication(text) IS 'Sensitive operations call this first: it consumes the request user''s fresh reauthentication code (POST /auth/v1/reauthenticate) or raises 42501.';

REVOKE ALL ON FUNCTION crm_private.auth_reauthenticate(jsonb), crm_private.require_reauthentication(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION crm_private.auth_reauthenticate(jsonb) TO crm_auth;
GRANT EXECUTE ON FUNCTION crm_private.require_reauthentication(text) TO authenticated;

DROP FUNCTION api.deactivate_member(uuid);
CREATE FUNCTION api.deactivate_member(user_id uuid, nonce text DEFAULT NULL) RETURNS jsonb
    LANGUAGE plpgsql VOLATILE SECURITY INVOKER
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    -- Who may, before the code is spent: a member without the right keeps their code.
    PERFORM crm_private.require_permission('users.manage');
    PERFORM crm_private.require_reauthentication(deactivate_member.nonce);
    RETURN crm_private.change_member(deactivate_member.user_id, NULL, 'deactivated');
END
$$;
COMMENT ON FUNCTION api.deactivate_member(uuid, text) IS
'Deactivate (remove) a member (PRD F3.4): their data stays, their sessions end and access ends on their next request; they cannot sign in. Sensitive (NFR-S8): nonce is the code POST /auth/v1/reauthenticate emails to the caller, fresh (5 minutes) and single use; without it, or with a wrong or used one, 42501 naming nonce. Admins only (42501). The last active admin cannot be deactivated (23514). P0002 if no such member. Returns the member.';

REVOKE ALL ON FUNCTION api.deactivate_member(uuid, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION api.deactivate_member(uuid, text) TO authenticated;

CREATE OR REPLACE FUNCTION api.pipeline_summary() RETURNS jsonb
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
CREATE OR REPLACE FUNCTION crm_private.contact_search(q text, pattern text, digits text, after_rank numeric, after_id uuid, n integer)
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

COMMENT ON FUNCTION api.search_contacts(text, integer, text) IS
'Search the contacts the caller sees by name, email, phone or company in one call (PRD F7.3), best match first: {data: [{...contact, rank}], next_cursor}. A fragment matches anywhere in a name, email or company (rank 0.95 at the start of a word, 0.9 inside one, 0.8x through the company); when fewer than 10 records contain it, similar words are found too (typos, rank up to 0.85). A complete email finds its contact (rank 1). Phone numbers are compared as digits, so +1 (555) 010-0200 finds 5550100200 (ten or more digits: the last ten must match). q: 2-200 characters. page_size 1-100 (default 25); pass next_cursor back with the same q.';

-- The replaced functions that use pg_trgm's operators get pg_trgm's schema on their
-- search_path again, as crm.sql does on a fresh install.
DO $trgm$
DECLARE
    v_schema text := (SELECT n.nspname FROM pg_catalog.pg_extension e JOIN pg_catalog.pg_namespace n ON n.oid = e.extnamespace
                       WHERE e.extname = 'pg_trgm');
    v_function regprocedure;
BEGIN
    FOREACH v_function IN ARRAY ARRAY[
        'crm_private.contact_search(text, text, text, numeric, uuid, integer)'::regprocedure,
        'crm_private.contact_duplicates(text, text, text, text, uuid, uuid)'::regprocedure]
    LOOP
        EXECUTE pg_catalog.format('ALTER FUNCTION %s SET search_path = pg_catalog, %I, pg_temp', v_function, v_schema);
    END LOOP;
END
$trgm$;
