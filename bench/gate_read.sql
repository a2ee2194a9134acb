-- gate.sql plus the smallest real read behind the gate: the caller's workspace, through
-- row-level security.
BEGIN;
SET LOCAL ROLE authenticated;
SET LOCAL statement_timeout = 15000;
SELECT crm_private.begin_request(:claims::jsonb, :tenant::uuid);
SELECT api.get_workspace();
COMMIT;
