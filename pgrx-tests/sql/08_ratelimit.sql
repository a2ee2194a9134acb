-- Rate limits shared by the edges: crm_private.rate_limit_sync (the edges, as crm_auth) and
-- crm_private.set_rate_limit (operators).

-- Two edges report their counts for one minute; each gets the other's back, per subject, and
-- the per-tenant limits. A late, lower report never lowers a count.
BEGIN;
SELECT tests.seed();
SELECT crm_private.set_rate_limit(tests.tenant_id('acme'), 250);
SET LOCAL ROLE crm_auth;
SELECT crm_private.rate_limit_sync('00000000-0000-0000-0000-00000000000a', 29000000,
       ARRAY['user:ann', 'user:mo'], ARRAY[5, 2]) -> 'others' AS edge_a_sees_first;
SELECT crm_private.rate_limit_sync('00000000-0000-0000-0000-00000000000b', 29000000,
       ARRAY['user:ann'], ARRAY[3]) -> 'others' AS edge_b_sees;
SELECT crm_private.rate_limit_sync('00000000-0000-0000-0000-00000000000a', 29000000,
       ARRAY['user:ann'], ARRAY[1]) -> 'others' AS edge_a_sees_then;
SELECT (crm_private.rate_limit_sync('00000000-0000-0000-0000-00000000000b', 29000000, '{}', '{}')
       -> 'limits' ->> tests.tenant_id('acme')::text)::integer AS acme_limit,
       (crm_private.rate_limit_sync('00000000-0000-0000-0000-00000000000b', 29000000, '{}', '{}')
       -> 'limits') ? tests.tenant_id('globex')::text AS globex_has_its_own;
-- Two minutes later: the rows of minutes before the previous one are removed.
SELECT crm_private.rate_limit_sync('00000000-0000-0000-0000-00000000000b', 29000002,
       ARRAY['user:ann'], ARRAY[1]) -> 'others' AS next_window_starts_empty;
RESET ROLE;
SELECT window_start, subject, hits FROM crm_private.rate_usage ORDER BY 1, 2, 3;
ROLLBACK;

-- Bad reports are refused; only crm_auth may report; operators' limits are checked.
BEGIN;
SELECT tests.seed();
SET LOCAL ROLE crm_auth;
SELECT tests.try($$SELECT crm_private.rate_limit_sync('00000000-0000-0000-0000-00000000000a', 1, ARRAY['a', 'b'], ARRAY[1])$$) AS counts_do_not_match;
SELECT tests.try($$SELECT crm_private.rate_limit_sync(NULL, 1, '{}', '{}')$$) AS no_edge;
RESET ROLE;
SET LOCAL ROLE authenticated;
SELECT tests.try($$SELECT crm_private.rate_limit_sync('00000000-0000-0000-0000-00000000000a', 1, '{}', '{}')$$) AS as_authenticated;
SELECT tests.try($$SELECT crm_private.set_rate_limit(tests.tenant_id('acme'), 1000)$$) AS set_as_authenticated;
SELECT tests.try($$SELECT count(*) FROM crm_private.rate_usage$$) AS read_counts_as_authenticated;
RESET ROLE;
SET LOCAL ROLE anon;
SELECT tests.try($$SELECT crm_private.rate_limit_sync('00000000-0000-0000-0000-00000000000a', 1, '{}', '{}')$$) AS as_anon;
RESET ROLE;
SELECT tests.try($$SELECT crm_private.set_rate_limit(tests.tenant_id('acme'), 0)$$) AS zero;
SELECT tests.try($$SELECT crm_private.set_rate_limit(gen_random_uuid(), 10)$$) AS unknown_tenant;
SELECT crm_private.set_rate_limit(tests.tenant_id('acme'), 10);
SELECT crm_private.set_rate_limit(tests.tenant_id('acme'), 20);
SELECT requests_per_minute AS updated FROM crm_private.rate_limits;
SELECT crm_private.set_rate_limit(tests.tenant_id('acme'), NULL);
SELECT count(*) AS back_to_default FROM crm_private.rate_limits;
ROLLBACK;
