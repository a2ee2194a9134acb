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
