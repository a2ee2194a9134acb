-- bare.sql plus the gate, crm_private.begin_request(claims, tenant), as the edge calls it
-- (edge/src/db.rs BEGIN_REQUEST_SQL): checks the user, session and membership and sets
-- the tenant context. :claims and :tenant come from pgbench -D and are sent as parameters
-- (run with -M extended).
BEGIN;
SET LOCAL ROLE authenticated;
SET LOCAL statement_timeout = 15000;
SELECT crm_private.begin_request(:claims::jsonb, :tenant::uuid);
COMMIT;
