-- The edge's per-request transaction with nothing in it: BEGIN, the role switch and the
-- statement timeout the edge sets (AURA_STATEMENT_TIMEOUT, 15 s by default), COMMIT.
-- The floor every other variant is compared with.
BEGIN;
SET LOCAL ROLE authenticated;
SET LOCAL statement_timeout = 15000;
COMMIT;
