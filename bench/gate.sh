#!/usr/bin/env bash
# bench/gate.sh PG_CONFIG [SECONDS]
#
# pgbench of the edge's per-request transaction on a throwaway cluster: starts PostgreSQL
# (scripts/pgcluster) from the tree of PG_CONFIG, where pg_crm must already be installed,
# seeds one tenant, its admin with a live session, and a user with a password, runs each
# variant (bench/*.sql, see bench/README.md) for SECONDS (default 10) as `authenticator`,
# like the edge, and prints tps side by side. The cluster and its directory are removed on
# exit. Works as root (the cluster then runs as AURA_PG_USER, default postgres) and as a
# normal user.
#
# Environment: TMPDIR (where the cluster goes, default /tmp), AURA_PG_FSYNC (default on),
# AURA_PG_USER (as root).
set -euo pipefail

usage() { sed -n '2,13p' "$0" >&2; exit 2; }
die() { echo "bench: $*" >&2; exit 1; }

[ $# -ge 1 ] && [ $# -le 2 ] || usage
PG_CONFIG=$1
SECONDS_PER_RUN=${2:-10}
[[ $SECONDS_PER_RUN =~ ^[1-9][0-9]*$ ]] || die "SECONDS must be a positive integer, not '$SECONDS_PER_RUN'"
[ -x "$PG_CONFIG" ] || die "no pg_config at $PG_CONFIG"

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
pgcluster=$(dirname "$here")/scripts/pgcluster
[ -x "$pgcluster" ] || die "no $pgcluster"
bindir=$("$PG_CONFIG" --bindir)
psql_bin=$bindir/psql
pgbench_bin=$bindir/pgbench
[ -x "$psql_bin" ] && [ -x "$pgbench_bin" ] || die "no psql or pgbench in $bindir"
[ -f "$("$PG_CONFIG" --sharedir)/extension/pg_crm.control" ] \
    || die "pg_crm is not installed in the tree of $PG_CONFIG"

# Only what this script says decides where clients connect.
unset PGHOST PGHOSTADDR PGPORT PGUSER PGDATABASE PGOPTIONS PGSERVICE PGSERVICEFILE PGPASSFILE PGPASSWORD
export PGCONNECT_TIMEOUT=10 LC_ALL=C
# pg_crm must be preloaded: pgcluster passes this on the command line.
export AURA_PG_PRELOAD=pg_crm

tmp=$(mktemp -d "${TMPDIR:-/tmp}/aura-bench.XXXXXX")
chmod 755 "$tmp" # as root, the cluster's owner must reach the data directory inside
data=$tmp/data
log=$tmp/server.log
started=

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    if [ "$rc" -ne 0 ] && [ "$rc" -ne 130 ] && [ "$rc" -ne 143 ] && [ -s "$log" ]; then
        echo "bench: failed; the server log's last lines:" >&2
        tail -n 20 "$log" >&2 || true
    fi
    if [ -n "$started" ]; then "$pgcluster" stop "$PG_CONFIG" "$data" || true; fi
    rm -rf "$tmp" || true
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

"$pgcluster" init "$PG_CONFIG" "$data"

start() {
    local tries=0
    while :; do
        port=$("$pgcluster" free-port)
        started=1
        if "$pgcluster" start "$PG_CONFIG" "$data" "$port" "$log" 2>"$tmp/start.err"; then
            return 0
        fi
        tries=$((tries + 1))
        # Another process may have taken the free port in between: try another, twice.
        [ "$tries" -lt 3 ] || { cat "$tmp/start.err" >&2; die "could not start PostgreSQL"; }
    done
}

# psql as USER on DB: unaligned, tuples only, stops at the first error.
sql() {
    local user=$1 db=$2
    shift 2
    "$psql_bin" -X -q -A -t -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$port" -U "$user" -d "$db" "$@"
}

start
sql postgres postgres -c "ALTER SYSTEM SET shared_preload_libraries = 'pg_crm'" >/dev/null
if [ "$(sql postgres postgres -c 'SHOW shared_preload_libraries')" != pg_crm ]; then
    "$pgcluster" stop "$PG_CONFIG" "$data"
    start
fi
[ "$(sql postgres postgres -c 'SHOW shared_preload_libraries')" = pg_crm ] \
    || die "pg_crm is not preloaded after a restart"

sql postgres postgres -c 'CREATE DATABASE aura' >/dev/null
sql postgres aura >/dev/null <<'SQL'
CREATE EXTENSION pg_crm CASCADE;
ALTER ROLE authenticator LOGIN;
INSERT INTO crm_private.auth_settings (key, value)
VALUES ('autoconfirm', 'true'), ('login_failures_per_email', '0'), ('login_failures_per_ip', '0')
ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value;
SQL

# The tenant, its admin and a live session: the claims the edge would hand to the gate.
IFS='|' read -r tenant claims < <(sql postgres aura <<'SQL'
WITH t AS (SELECT crm_private.create_tenant('Bench', 'bench', 'admin@bench.test') AS r),
     s AS (SELECT r, crm_private.create_session((r ->> 'admin_user_id')::uuid) AS session FROM t)
SELECT r ->> 'tenant_id',
       jsonb_build_object(
           'sub', r ->> 'admin_user_id', 'role', 'authenticated', 'aud', 'authenticated',
           'session_id', session, 'app_metadata', jsonb_build_object('tenant_id', r ->> 'tenant_id'))
FROM s;
SQL
)
[ -n "$tenant" ] && [ -n "$claims" ] || die "seeding the tenant returned nothing"

# A user with a password, signed up as the auth service does it.
req='{"body":{"email":"login@bench.test","password":"bench-password-1"},"ip":"10.0.0.1"}'
signup=$(sql postgres aura -v req="$req" <<'SQL'
SET ROLE crm_auth;
SELECT crm_private.auth_signup(:'req'::jsonb);
RESET ROLE;
SQL
)
case $signup in *'"error"'*) die "signup failed: $signup" ;; esac

sql postgres aura -c 'VACUUM ANALYZE' -c 'CHECKPOINT' >/dev/null

# Each variant once, through psql as authenticator, before timing anything: the gate must
# let the admin in to its own workspace, and the login must return a session.
check=$(sql authenticator aura -v claims="$claims" -v tenant="$tenant" <<'SQL'
BEGIN;
SET LOCAL ROLE authenticated;
SET LOCAL statement_timeout = 15000;
SELECT crm_private.begin_request(:'claims'::jsonb, :'tenant'::uuid);
SELECT api.get_workspace() ->> 'id';
COMMIT;
SQL
)
[ "$(echo "$check" | grep -v '^$' | tail -n 1)" = "$tenant" ] \
    || die "the gate did not let the admin in to its workspace: $check"
login=$(sql authenticator aura -v req="$req" <<'SQL'
BEGIN;
SET LOCAL ROLE crm_auth;
SET LOCAL statement_timeout = 15000;
SELECT crm_private.auth_token_password(:'req'::jsonb) ? 'session';
COMMIT;
SQL
)
[ "$(echo "$login" | grep -v '^$' | tail -n 1)" = t ] || {
    sql authenticator aura -v req="$req" -c "SET ROLE crm_auth" \
        -c "SELECT crm_private.auth_token_password('$req'::jsonb)" >&2 || true
    die "the password grant did not return a session"
}

host=$(hostname 2>/dev/null || echo unknown)
version=$(sql postgres aura -c 'SHOW server_version')
ext=$(sql postgres aura -c "SELECT extversion FROM pg_extension WHERE extname = 'pg_crm'")
fsync=$(sql postgres aura -c 'SHOW fsync')
echo "bench: PostgreSQL $version, pg_crm $ext, fsync $fsync, on 127.0.0.1:$port (cluster in $data, as $(id -un))"
echo "bench: host $host, $(nproc 2>/dev/null || echo '?') CPUs, load $(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo '?'); ${SECONDS_PER_RUN}s per variant"
echo "bench: tree $PG_CONFIG"

names=()
clients=()
tps=()

# run NAME CLIENTS -D... : one pgbench run of bench/NAME.sql; its tps into the table.
run() {
    local name=$1 c=$2
    shift 2
    local out=$tmp/$name.out
    echo "bench: $name, $c clients, ${SECONDS_PER_RUN}s ..."
    if ! "$pgbench_bin" -n -M extended -c "$c" -j 2 -T "$SECONDS_PER_RUN" -f "$here/$name.sql" \
        -h 127.0.0.1 -p "$port" -U authenticator "$@" aura >"$out" 2>&1; then
        cat "$out" >&2
        die "pgbench failed for $name"
    fi
    local failed t
    failed=$(sed -n 's/^number of failed transactions: \([0-9]*\).*/\1/p' "$out")
    if [ -n "$failed" ] && [ "$failed" != 0 ]; then
        cat "$out" >&2
        die "$name: $failed failed transactions"
    fi
    t=$(sed -n 's/^tps = \([0-9.]*\) (without initial connection time)$/\1/p' "$out")
    [ -n "$t" ] || { cat "$out" >&2; die "$name: no tps in pgbench's output"; }
    names+=("$name")
    clients+=("$c")
    tps+=("$t")
}

run bare 16
run gate 16 -D "claims=$claims" -D "tenant=$tenant"
run gate_read 16 -D "claims=$claims" -D "tenant=$tenant"
run login 8 -D "req=$req"

echo
printf '%-10s %8s %12s %8s\n' variant clients tps 'vs bare'
for i in "${!names[@]}"; do
    printf '%-10s %8s %12.1f %8s\n' "${names[$i]}" "${clients[$i]}" "${tps[$i]}" \
        "$(awk -v a="${tps[$i]}" -v b="${tps[0]}" 'BEGIN { printf "%.3f", (b > 0 ? a / b : 0) }')"
done
