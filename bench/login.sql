-- A password grant (POST /auth/v1/token?grant_type=password) as the edge runs it: as
-- crm_auth, one call to crm_private.auth_token_password(req). Dominated by the password
-- hash check; every login also writes a session and its refresh token. :req comes from
-- pgbench -D.
BEGIN;
SET LOCAL ROLE crm_auth;
SET LOCAL statement_timeout = 15000;
SELECT crm_private.auth_token_password(:req::jsonb);
COMMIT;
