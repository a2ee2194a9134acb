#!/usr/bin/env bash
# The edge logs in as `authenticator`: give it the password from AUTHENTICATOR_PASSWORD.
set -euo pipefail
if [ -n "${AUTHENTICATOR_PASSWORD:-}" ]; then
    psql -v ON_ERROR_STOP=1 -v pw="$AUTHENTICATOR_PASSWORD" --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
        <<<"ALTER ROLE authenticator PASSWORD :'pw'"
else
    echo "AUTHENTICATOR_PASSWORD not set: authenticator cannot log in with a password" >&2
fi
