#!/usr/bin/env bash
# `make run`: the whole system on this machine. Builds and installs pg_crm into a private
# copy of PostgreSQL 15 under .data/, starts a local cluster there (or uses DATABASE_URL),
# applies the Supabase-compat bootstrap and CREATE EXTENSION pg_crm, sets the auth settings
# for development (autoconfirm, site_url), then runs the edge in the foreground. Re-running
# keeps the data; Ctrl-C stops both.
#
# `scripts/run.sh --prepare` (used by `make seed` and `make bench`) does everything but the
# edge: it leaves the local cluster running, and uses a running one as it is (a `make run`
# in another terminal keeps its cluster). Prints nothing on success but the build steps.
set -euo pipefail
PREPARE=
[ "${1:-}" = --prepare ] && PREPARE=1
source "$(dirname "$0")/common.sh"
cd "$ROOT"

DATA=$ROOT/.data
PROFILE=${AURA_PROFILE:-release}
PG_PORT=${AURA_PG_PORT:-54329}
export AURA_LISTEN=${AURA_LISTEN:-127.0.0.1:3000}
DB=aura

"$ROOT/scripts/prereqs.sh"
mkdir -p "$DATA"
chmod 755 "$DATA"
pgc=$(pg_tree "$DATA/pg15")

say "building pg_crm and the edge ($PROFILE)"
profile_flag=(); [ "$PROFILE" = release ] && profile_flag=(--release)
(cd pg_crm && cargo pgrx install "${profile_flag[@]}" --pg-config "$pgc" >/dev/null)
cargo build "${profile_flag[@]}" -p edge --bin aura-edge
edge_bin=$CARGO_TARGET_DIR/$([ "$PROFILE" = release ] && echo release || echo debug)/aura-edge

# Secrets, generated once and kept with the data.
secret() { python3 -c 'import secrets; print(secrets.token_urlsafe(36))'; }
if [ ! -f "$DATA/secrets.env" ]; then
    umask 077
    { echo "JWT_SECRET=$(secret)"; echo "AUTHENTICATOR_PASSWORD=$(secret)"; echo "POSTGRES_PASSWORD=$(secret)"; } >"$DATA/secrets.env"
    umask 022
fi
# shellcheck disable=SC1091
source "$DATA/secrets.env"
# The API keys clients send (supabase-js's `supabaseKey`), as Supabase's local setup makes
# them: HS256 JWTs signed with JWT_SECRET, valid 10 years, with role anon or service_role.
# Generated once too; a secrets.env from before they existed gets them appended.
api_key() {
    JWT_SECRET=$JWT_SECRET python3 - "$1" <<'PY'
import base64, hashlib, hmac, json, os, sys, time
b64 = lambda data: base64.urlsafe_b64encode(data).rstrip(b"=").decode()
now = int(time.time())
claims = {"iss": "aura", "role": sys.argv[1], "aud": "authenticated", "iat": now, "exp": now + 10 * 365 * 86400}
head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}, separators=(",", ":")).encode())
body = b64(json.dumps(claims, separators=(",", ":")).encode())
sig = hmac.new(os.environ["JWT_SECRET"].encode(), f"{head}.{body}".encode(), hashlib.sha256).digest()
print(f"{head}.{body}.{b64(sig)}")
PY
}
grep -q '^ANON_KEY=' "$DATA/secrets.env" || echo "ANON_KEY=$(api_key anon)" >>"$DATA/secrets.env"
grep -q '^SERVICE_ROLE_KEY=' "$DATA/secrets.env" || echo "SERVICE_ROLE_KEY=$(api_key service_role)" >>"$DATA/secrets.env"
# shellcheck disable=SC1091
source "$DATA/secrets.env"
# Emails (signup confirmation, invitations, password recovery) go to files unless SMTP is set.
export AURA_MAIL_DIR=${AURA_MAIL_DIR:-$DATA/mail}

started_cluster=
if [ -n "${DATABASE_URL:-}" ]; then
    say "using DATABASE_URL (pg_crm must be installed on that server: see README)"
    admin_url=$DATABASE_URL
    edge_url=$(python3 - "$DATABASE_URL" "$AUTHENTICATOR_PASSWORD" <<'PY'
import sys, urllib.parse as u
p = u.urlsplit(sys.argv[1])
host = p.hostname or "localhost"
netloc = "authenticator:%s@%s%s" % (u.quote(sys.argv[2], safe=""), host, ":%d" % p.port if p.port else "")
print(u.urlunsplit((p.scheme, netloc, p.path, p.query, "")))
PY
)
else
    if [ ! -f "$DATA/pg/PG_VERSION" ]; then
        say "creating the local cluster in .data/pg"
        "$ROOT/scripts/pgcluster" init "$pgc" "$DATA/pg"
        # Passwords over TCP; the socket (inside .data/pg/run) stays for the owner.
        printf 'local all all trust\nhost all all 127.0.0.1/32 scram-sha-256\nhost all all ::1/128 scram-sha-256\n' >"$DATA/pg/pg_hba.conf"
        [ "$(id -u)" -eq 0 ] && chown "${AURA_PG_USER:-postgres}" "$DATA/pg/pg_hba.conf"
        fresh=1
    fi
    # Continuous WAL archiving and nightly backups (pgBackRest, .data/backups): the settings
    # are written before every start (scripts/backup.sh; AURA_BACKUP=off turns them off).
    "$ROOT/scripts/backup.sh" configure
    # pg_crm is preloaded: a cluster still running from before (a make run that did not get
    # to stop it) holds the previous build in memory. Restart it, so this build is what runs.
    if [ -n "$PREPARE" ] && [ -f "$DATA/pg/postmaster.pid" ] \
        && "$(dirname "$pgc")/pg_isready" -q -U postgres -h "$DATA/pg/run" -p "$PG_PORT"; then
        say "using the local cluster that is running already"
    else
        if [ -f "$DATA/pg/postmaster.pid" ]; then
            say "restarting the local cluster to load this build of pg_crm"
            "$ROOT/scripts/pgcluster" stop "$pgc" "$DATA/pg"
        fi
        AURA_PG_WORKER_DATABASES=${AURA_PG_WORKER_DATABASES-$DB} "$ROOT/scripts/pgcluster" start "$pgc" "$DATA/pg" "$PG_PORT" "$DATA/postgres.log"
        started_cluster=1
    fi
    psql_local=("$(dirname "$pgc")/psql" -X -q -v ON_ERROR_STOP=1 -h "$DATA/pg/run" -p "$PG_PORT" -U postgres)
    if [ -n "${fresh:-}" ]; then
        "${psql_local[@]}" -d postgres -v pw="$POSTGRES_PASSWORD" <<<"ALTER ROLE postgres PASSWORD :'pw'"
        "${psql_local[@]}" -d postgres -c "CREATE DATABASE $DB"
    fi
    admin_url="postgresql://postgres:$POSTGRES_PASSWORD@127.0.0.1:$PG_PORT/$DB"
    edge_url="postgresql://authenticator:$AUTHENTICATOR_PASSWORD@127.0.0.1:$PG_PORT/$DB"
fi

stop_all() {
    trap - INT TERM EXIT
    # The terminal (or the pipe we print to) may be gone already: a failed message must not
    # end this before PostgreSQL is stopped.
    trap '' PIPE
    set +e
    [ -n "${edge_pid:-}" ] && kill "$edge_pid" 2>/dev/null && wait "$edge_pid" 2>/dev/null
    if [ -n "${backup_pid:-}" ]; then
        pkill -P "$backup_pid" 2>/dev/null
        kill "$backup_pid" 2>/dev/null && wait "$backup_pid" 2>/dev/null
    fi
    if [ -n "$started_cluster" ]; then
        say "stopping PostgreSQL"
        "$ROOT/scripts/pgcluster" stop "$pgc" "$DATA/pg"
    fi
}
trap stop_all INT TERM EXIT

say "installing pg_crm into the database"
psql_admin=(psql -X -q -v ON_ERROR_STOP=1 "$admin_url")
"${psql_admin[@]}" -f sql/supabase_compat.sql
# pg_crm needs pg_trgm and btree_gin (search); an upgrade from before 0.4.0 finds them missing.
"${psql_admin[@]}" -c "CREATE EXTENSION IF NOT EXISTS pg_trgm" -c "CREATE EXTENSION IF NOT EXISTS btree_gin" \
    -c "CREATE EXTENSION IF NOT EXISTS pg_crm" -c "ALTER EXTENSION pg_crm UPDATE"
"${psql_admin[@]}" -v pw="$AUTHENTICATOR_PASSWORD" <<<"ALTER ROLE authenticator LOGIN PASSWORD :'pw'"
# Auth settings for this development system: sign-ups need no email confirmation (unless an
# operator set autoconfirm otherwise), and links in emails point at this edge.
"${psql_admin[@]}" -v site_url="http://$AURA_LISTEN" <<'SQL'
INSERT INTO crm_private.auth_settings (key, value) VALUES ('autoconfirm', 'true')
    ON CONFLICT (key) DO NOTHING;
INSERT INTO crm_private.auth_settings (key, value) VALUES ('site_url', to_jsonb(:'site_url'::text))
    ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, updated_at = now()
    WHERE crm_private.auth_settings.value IS DISTINCT FROM EXCLUDED.value;
SQL

if [ -z "${DATABASE_URL:-}" ] && [ "${AURA_BACKUP:-on}" != off ]; then
    # The repository's stanza, and a first full backup if there is none (seconds on a new
    # cluster): from here on every change can be restored to (make restore).
    "$ROOT/scripts/backup.sh" init
fi

umask 077
cat >"$DATA/keys.env" <<ENV
# Written by make run. Source it: set -a; . .data/keys.env; set +a
AURA_URL=http://$AURA_LISTEN
AURA_ANON_KEY=$ANON_KEY
AURA_SERVICE_ROLE_KEY=$SERVICE_ROLE_KEY
AURA_JWT_SECRET=$JWT_SECRET
AURA_DATABASE_URL=$admin_url
AURA_AUTHENTICATOR_URL=$edge_url
AURA_MAIL_DIR=$AURA_MAIL_DIR
ENV
umask 022
if [ -n "$PREPARE" ]; then
    trap - INT TERM EXIT
    exit 0
fi
if [ -n "${AURA_SMTP_URL:-}" ]; then
    mail_note="sent over SMTP (AURA_SMTP_URL)"
else
    mail_dir=${AURA_MAIL_DIR#"$ROOT"/}
    mail_note="emails (signup, invite, recovery) are written to $mail_dir/ as .eml files; set AURA_SMTP_URL to send them"
fi

if [ -z "${DATABASE_URL:-}" ] && [ "${AURA_BACKUP:-on}" != off ]; then
    "$ROOT/scripts/backup.sh" schedule >>"$DATA/backup.log" 2>&1 &
    backup_pid=$!
    backup_note="WAL archived continuously, a full backup nightly at ${AURA_BACKUP_AT:-02:00} UTC (.data/backups, ${AURA_BACKUP_RETENTION_DAYS:-30} days; make backup, make restore)"
else
    backup_note="off (AURA_BACKUP=off or DATABASE_URL)"
fi

export AURA_JWT_SECRET=$JWT_SECRET AURA_AUTHENTICATOR_URL=$edge_url
"$edge_bin" &
edge_pid=$!
for _ in $(seq 50); do
    curl -fsS "http://$AURA_LISTEN/health" >/dev/null 2>&1 && break
    kill -0 "$edge_pid" 2>/dev/null || { echo "the edge did not start" >&2; exit 1; }
    sleep 0.2
done
cat <<MSG

  Aura is running.
    API URL           http://$AURA_LISTEN      OpenAPI: http://$AURA_LISTEN/rest/v1/   auth: /auth/v1
    anon key          $ANON_KEY
    service role key  $SERVICE_ROLE_KEY
                      (full access to /auth/v1/admin: keep it off clients)
    mail              $mail_note
    database (DBA)    psql "$admin_url"
    backups           $backup_note
    keys              .data/keys.env (AURA_URL, AURA_ANON_KEY, AURA_SERVICE_ROLE_KEY, AURA_DATABASE_URL, ...)
  Ctrl-C stops both.

MSG
wait "$edge_pid"
