-- crm.deal_totals, kept by the deals' statement triggers, always equals the sums of the live
-- deals it stands for, whatever writes them (the api, a bulk statement, an operator), and
-- api.pipeline_summary answers from it what the deals themselves add up to.
BEGIN;
SELECT tests.crm_seed();
-- Rows of the totals that differ from the live deals' own sums (expected: none), and rows
-- at zero deals that still hold an amount.
CREATE FUNCTION pg_temp.drift() RETURNS text LANGUAGE sql AS $$
    WITH kept AS (
        SELECT tenant_id, assigned_to, stage, currency, open, deals, amount, weighted FROM crm.deal_totals WHERE deals <> 0),
    actual AS (
        SELECT tenant_id, assigned_to, stage, currency, closed_at IS NULL AS open, count(*) AS deals, sum(amount) AS amount,
               sum(amount * probability / 100.0) AS weighted
          FROM crm.deals WHERE deleted_at IS NULL GROUP BY 1, 2, 3, 4, 5)
    SELECT format('%s kept rows wrong, %s missing, %s zero rows with sums',
                  (SELECT count(*) FROM (SELECT * FROM kept EXCEPT SELECT * FROM actual) x),
                  (SELECT count(*) FROM (SELECT * FROM actual EXCEPT SELECT * FROM kept) x),
                  (SELECT count(*) FROM crm.deal_totals WHERE deals = 0 AND (amount <> 0 OR weighted <> 0)))
$$;
-- The summary a member gets, and the one computed from the deals they see.
CREATE FUNCTION pg_temp.summary_matches(email text) RETURNS boolean LANGUAGE plpgsql AS $$
DECLARE
    got jsonb;
    want jsonb;
BEGIN
    PERFORM tests.login(email, 'acme');
    got := api.pipeline_summary();
    want := jsonb_build_object(
        'by_stage', (SELECT jsonb_agg(jsonb_build_object('stage', s.key, 'totals', coalesce((
                        SELECT jsonb_agg(jsonb_build_object('currency', g.currency, 'count', g.n, 'total', g.total, 'weighted_total', g.w)
                                         ORDER BY g.currency)
                          FROM (SELECT d.currency, count(*) AS n, sum(d.amount) AS total, round(sum(d.amount * d.probability / 100.0), 2) AS w
                                  FROM crm.deals d WHERE d.deleted_at IS NULL AND d.stage = s.key GROUP BY d.currency) g), '[]'))
                                      ORDER BY s.position, s.key) FROM crm.pipeline_stages s),
        'by_owner', (SELECT coalesce(jsonb_agg(o.j ORDER BY o.assigned_to), '[]') FROM (
                        SELECT d.assigned_to, jsonb_build_object('assigned_to', d.assigned_to, 'totals',
                                   jsonb_agg(jsonb_build_object('currency', d.currency, 'count', d.n, 'total', d.total, 'weighted_total', d.w)
                                             ORDER BY d.currency)) AS j
                          FROM (SELECT assigned_to, currency, count(*) AS n, sum(amount) AS total, round(sum(amount * probability / 100.0), 2) AS w
                                  FROM crm.deals WHERE deleted_at IS NULL AND closed_at IS NULL GROUP BY 1, 2) d
                         GROUP BY d.assigned_to) o));
    RESET ROLE;
    RETURN (SELECT jsonb_agg(jsonb_build_object('stage', x ->> 'stage', 'totals', x -> 'totals') ORDER BY n)
              FROM jsonb_array_elements(got -> 'by_stage') WITH ORDINALITY a(x, n)) = want -> 'by_stage'
       AND (SELECT coalesce(jsonb_agg(jsonb_build_object('assigned_to', x -> 'assigned_to', 'totals', x -> 'totals')
                                      ORDER BY x ->> 'assigned_to'), '[]')
              FROM jsonb_array_elements(got -> 'by_owner') x) = want -> 'by_owner';
END
$$;
SELECT pg_temp.drift() AS after_seed;

-- Through the api: create, change amounts and currencies, move, win, lose, reopen, assign,
-- delete and restore.
SELECT tests.login('mo@acme.test', 'acme');
SELECT count(*) AS created FROM (
    SELECT api.create_deal('Deal ' || i, 1000 * i, CASE WHEN i % 3 = 0 THEN 'EUR' ELSE 'USD' END,
                           assigned_to => CASE WHEN i % 2 = 0 THEN tests.user_id('rita@acme.test') ELSE tests.user_id('mo@acme.test') END)
      FROM generate_series(1, 12) i) x;
SELECT count(*) AS changed FROM (
    SELECT api.update_deal(id, '{"amount": 777.77}') FROM crm.deals WHERE name IN ('Deal 1', 'Deal 2')
    UNION ALL SELECT api.update_deal(id, '{"currency": "GBP"}') FROM crm.deals WHERE name = 'Deal 3'
    UNION ALL SELECT api.move_deal(id, 'proposal') FROM crm.deals WHERE name IN ('Deal 4', 'Deal 5')
    UNION ALL SELECT api.move_deal(id, 'won') FROM crm.deals WHERE name = 'Deal 6'
    UNION ALL SELECT api.move_deal(id, 'lost', 'budget') FROM crm.deals WHERE name = 'Deal 7'
    UNION ALL SELECT api.assign_deal(id, tests.user_id('rita@acme.test')) FROM crm.deals WHERE name = 'Deal 9'
    UNION ALL SELECT api.delete_deal(id) FROM crm.deals WHERE name IN ('Deal 10', 'Deal 11')) x;
SELECT api.reopen_deal(id, 'qualified') ->> 'stage' AS reopened FROM crm.deals WHERE name = 'Deal 7';
SELECT api.restore_deal(id) ->> 'name' AS restored FROM crm.deals WHERE name = 'Deal 11';
RESET ROLE;
SELECT pg_temp.drift() AS after_api_calls;
SELECT pg_temp.summary_matches('ann@acme.test') AS admin_summary, pg_temp.summary_matches('mo@acme.test') AS manager_summary,
       pg_temp.summary_matches('rita@acme.test') AS rep_summary;

-- Statements over many rows at once, as an operator: one statement moves deals in both
-- directions and changes amounts, another deletes some for good.
UPDATE crm.deals SET stage = CASE stage WHEN 'prospect' THEN 'proposal' ELSE 'prospect' END, amount = amount + 1
 WHERE tenant_id = tests.tenant_id('acme') AND closed_at IS NULL;
INSERT INTO crm.deals (tenant_id, name, amount, currency, stage, assigned_to)
SELECT tests.tenant_id('acme'), 'Bulk ' || i, i, 'USD', 'negotiation', tests.user_id('rita@acme.test') FROM generate_series(1, 50) i;
DELETE FROM crm.activities WHERE deal_id IN (SELECT id FROM crm.deals WHERE name LIKE 'Deal%');
DELETE FROM crm.deal_stage_changes WHERE deal_id IN (SELECT id FROM crm.deals WHERE name IN ('Deal 1', 'Deal 12'));
DELETE FROM crm.assignment_changes WHERE deal_id IN (SELECT id FROM crm.deals WHERE name IN ('Deal 1', 'Deal 12'));
DELETE FROM crm.deals WHERE name IN ('Deal 1', 'Deal 12');
SELECT pg_temp.drift() AS after_bulk_statements;
SELECT pg_temp.summary_matches('mo@acme.test') AS manager_summary, pg_temp.summary_matches('rita@acme.test') AS rep_summary;

-- Who reads the totals: members of the tenant, each what their deals policy shows; nobody
-- writes them.
SELECT tests.login('rita@acme.test', 'acme');
SELECT bool_and(assigned_to = tests.user_id('rita@acme.test')) AS rep_reads_own_rows_only, count(*) > 0 AS rep_reads_some
  FROM crm.deal_totals;
SELECT tests.try($$UPDATE crm.deal_totals SET deals = deals + 1$$) AS rep_update;
SELECT tests.try($$INSERT INTO crm.deal_totals (tenant_id, assigned_to, stage, currency, open, deals, amount, weighted)
                   SELECT tenant_id, assigned_to, 'won', 'JPY', false, 1, 1, 1 FROM crm.deal_totals LIMIT 1$$) AS rep_insert;
SELECT tests.try($$DELETE FROM crm.deal_totals$$) AS rep_delete;
RESET ROLE;
SELECT tests.login('gil@globex.test', 'globex');
SELECT count(*) AS other_tenant_reads FROM crm.deal_totals;
SELECT api.pipeline_summary() -> 'by_owner' AS other_tenant_by_owner;
RESET ROLE;
SET LOCAL ROLE anon;
SELECT tests.try($$SELECT count(*) FROM crm.deal_totals$$) AS anon_reads;
RESET ROLE;
ROLLBACK;
