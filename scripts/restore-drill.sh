#!/usr/bin/env bash
# The restore drill (NFR-R3): proves that a backup brings the database back to a chosen
# moment. It writes, takes a full backup, writes more, notes the time, writes more, restores
# to that time into a fresh cluster beside the source, and checks there that exactly the
# rows committed before the time are present, that the workspace's audit chain verifies,
# and that the API answers (an edge started on the restored cluster). It prints how long
# the backup and the restore took.
#
#   scripts/restore-drill.sh --tiny   what `make test` runs: a throwaway cluster from the
#                                     test tree (AURA_TEST_PG_CONFIG), a few hundred rows
#   scripts/restore-drill.sh          `make restore-drill`: the local cluster of make run
#                                     (after make seed: the full data set), its pgBackRest
#                                     repository and configuration; writes into a workspace
#                                     of its own ("restore-drill"), which it deletes again.
#                                     The restored copy goes to a temporary directory.
#
# The restored copy never archives into the source's repository and is removed at the end.
set -euo pipefail
source "$(dirname "$0")/common.sh"
cd "$ROOT"

TINY=
[ "${1:-}" = --tiny ] && TINY=1
[ -n "$TINY" ] || "$ROOT/scripts/prereqs.sh"
command -v pgbackrest >/dev/null || { echo "restore-drill: pgbackrest is missing (apt-get install pgbackrest)" >&2; exit 1; }

if [ -n "$TINY" ]; then
    # The drill's own throwaway cluster, whatever the caller's environment points at.
    unset DATABASE_URL AURA_JWT_JWKS AURA_JWT_ISSUER AURA_JWT_AUD AURA_JWT_ALGORITHMS AURA_JWT_SIGNING_KEY
fi
tmp=$(mktemp -d "${TMPDIR:-/tmp}/aura-drill.XXXXXX")
chmod 755 "$tmp"
source_started=
edge_pid=
pgc=
source_data=
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    [ -n "$edge_pid" ] && kill "$edge_pid" 2>/dev/null && wait "$edge_pid" 2>/dev/null
    if [ -n "$pgc" ]; then "$ROOT/scripts/pgcluster" stop "$pgc" "$tmp/restored" >/dev/null 2>&1 || true; fi
    if [ -n "$source_started" ]; then "$ROOT/scripts/pgcluster" stop "$pgc" "$source_data" >/dev/null 2>&1 || true; fi
    if [ "$rc" -ne 0 ]; then
        for f in "$tmp"/*.log; do
            [ -s "$f" ] && { echo "--- last lines of $(basename "$f")" >&2; tail -n 20 "$f" >&2; }
        done
    fi
    rm -rf "$tmp"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

if [ -n "$TINY" ]; then
    pgc=${AURA_TEST_PG_CONFIG:?"restore-drill --tiny needs AURA_TEST_PG_CONFIG (a pg_config whose tree has pg_crm)"}
    source_data=$tmp/source
    port=$("$ROOT/scripts/pgcluster" free-port)
    export AURA_BACKUP_PGDATA=$source_data AURA_BACKUP_PORT=$port AURA_BACKUP_DIR=$tmp/repo \
        AURA_BACKUP_CONFIG=$tmp/pgbackrest/pgbackrest.conf AURA_PG_CONFIG=$pgc AURA_BACKUP=on
    "$ROOT/scripts/pgcluster" init "$pgc" "$source_data"
    "$ROOT/scripts/backup.sh" configure
    AURA_PG_WORKER_DATABASES=aura "$ROOT/scripts/pgcluster" start "$pgc" "$source_data" "$port" "$tmp/source.log"
    source_started=1
    psql_src=("$(dirname "$pgc")/psql" -X -q -v ON_ERROR_STOP=1 -h "$source_data/run" -p "$port" -U postgres)
    "${psql_src[@]}" -d postgres -c "CREATE DATABASE aura"
    PGOPTIONS="-c client_min_messages=warning" "${psql_src[@]}" -d aura -f sql/supabase_compat.sql -c "CREATE EXTENSION pg_crm CASCADE"
    rows=100
else
    if [ -n "${DATABASE_URL:-}" ]; then
        echo "restore-drill: it drills the local cluster of make run (.data/); unset DATABASE_URL" >&2
        exit 1
    fi
    DATA=$ROOT/.data
    source_data=$DATA/pg
    port=${AURA_PG_PORT:-54329}
    [ -f "$source_data/PG_VERSION" ] || { echo "restore-drill: no local cluster yet (make run, then make seed)" >&2; exit 1; }
    pgc=$(pg_tree "$DATA/pg15")
    export AURA_PG_CONFIG=$pgc
    psql_src=("$(dirname "$pgc")/psql" -X -q -v ON_ERROR_STOP=1 -h "$source_data/run" -p "$port" -U postgres)
    if ! { [ -f "$source_data/postmaster.pid" ] && "$(dirname "$pgc")/pg_isready" -q -U postgres -h "$source_data/run" -p "$port"; }; then
        "$ROOT/scripts/backup.sh" configure
        AURA_PG_WORKER_DATABASES=aura "$ROOT/scripts/pgcluster" start "$pgc" "$source_data" "$port" "$DATA/postgres.log"
        source_started=1
    fi
    archiving=$("${psql_src[@]}" -d postgres -Atc 'SHOW archive_mode') || { echo "restore-drill: cannot reach the local cluster" >&2; exit 1; }
    [ "$archiving" = on ] \
        || { echo "restore-drill: the local cluster runs without WAL archiving: restart it (make run) first" >&2; exit 1; }
    rows=1000
fi
psql_src+=(-d aura)
"$ROOT/scripts/backup.sh" init >/dev/null

# A workspace of the drill's own, and `rows` contacts in each phase (before the backup,
# after it and before the target time, after the target time).
"${psql_src[@]}" -o /dev/null <<'SQL'
SELECT crm_private.delete_tenant_now(id) FROM core.tenants WHERE slug = 'restore-drill' AND status <> 'deleted';
UPDATE core.tenants SET slug = 'restore-drill-' || id WHERE slug = 'restore-drill';
SELECT crm_private.create_tenant('Restore drill', 'restore-drill', 'drill-admin@restore-drill.test') IS NOT NULL;
SQL
write_phase() {
    "${psql_src[@]}" -v phase="$1" -v rows="$rows" <<'SQL'
INSERT INTO crm.contacts (tenant_id, first_name, last_name, email, assigned_to)
SELECT t.id, 'Drill', :'phase' || '-' || g, :'phase' || '-' || g || '@restore-drill.test', m.user_id
  FROM core.tenants t JOIN core.memberships m ON m.tenant_id = t.id AND m.role = 'admin',
       generate_series(1, :rows) g
 WHERE t.slug = 'restore-drill';
-- An audited change too, so the restored chain has entries on both sides of the backup.
UPDATE core.tenants SET industry = :'phase' WHERE slug = 'restore-drill';
SQL
}
write_phase before-backup

say "full backup"
started=$(date +%s.%N)
"$ROOT/scripts/backup.sh" now full >"$tmp/backup.log"
backup_secs=$(python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.1f}')" "$started" "$(date +%s.%N)")

write_phase after-backup
# The target: a moment after every row of the second phase committed, before the third.
sleep 1
target=$("${psql_src[@]}" -Atc "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') || '+00'")
sleep 1
write_phase after-target
# The WAL with the third phase goes to the repository too: the restore must stop short of it.
as_check() { if [ "$(id -u)" -eq 0 ]; then (cd / && runuser -u "${AURA_PG_USER:-postgres}" -- "$@"); else "$@"; fi; }
as_check pgbackrest --config="${AURA_BACKUP_CONFIG:-$ROOT/.data/pgbackrest/pgbackrest.conf}" --stanza=aura check

say "restoring to $target into a fresh cluster"
restored_port=$("$ROOT/scripts/pgcluster" free-port)
started=$(date +%s.%N)
"$ROOT/scripts/backup.sh" restore "$target" --into "$tmp/restored" --port "$restored_port" >"$tmp/restore.log"
restore_secs=$(python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.1f}')" "$started" "$(date +%s.%N)")
psql_restored=("$(dirname "$pgc")/psql" -X -q -v ON_ERROR_STOP=1 -h "$tmp/restored/run" -p "$restored_port" -U postgres -d aura)

# Exactly the rows committed before the target.
counts=$("${psql_restored[@]}" -Atc "
    SELECT string_agg(phase || '=' || n, ' ' ORDER BY phase) FROM (
        SELECT p.phase, (SELECT count(*) FROM crm.contacts c JOIN core.tenants t ON t.id = c.tenant_id
                          WHERE t.slug = 'restore-drill' AND c.last_name LIKE p.phase || '-%') AS n
          FROM unnest(ARRAY['after-backup', 'after-target', 'before-backup']) p(phase)) x")
want="after-backup=$rows after-target=0 before-backup=$rows"
[ "$counts" = "$want" ] || { echo "restore-drill: restored rows: $counts; expected $want" >&2; exit 1; }
industry=$("${psql_restored[@]}" -Atc "SELECT industry FROM core.tenants WHERE slug = 'restore-drill'")
[ "$industry" = after-backup ] || { echo "restore-drill: the workspace's last change before the target is missing ($industry)" >&2; exit 1; }

# The audit chain verifies (entries not sealed before the target are sealed now).
chain=$("${psql_restored[@]}" -Atc "
    SELECT crm_private.seal_audit_log() >= 0;
    SELECT crm_private.verify_audit_chain(id) ->> 'valid' FROM core.tenants WHERE slug = 'restore-drill'" | tail -n 1)
[ "$chain" = true ] || { echo "restore-drill: the restored audit chain does not verify" >&2; exit 1; }

# The API answers on the restored cluster, with the restored data.
"${psql_restored[@]}" -c "ALTER ROLE authenticator LOGIN" -c "ALTER ROLE authenticator PASSWORD NULL"
if [ -n "$TINY" ] || [ "${AURA_PROFILE:-release}" != release ]; then
    cargo build -q -p edge --bin aura-edge
    edge_bin=$CARGO_TARGET_DIR/debug/aura-edge
else
    cargo build -q --release -p edge --bin aura-edge
    edge_bin=$CARGO_TARGET_DIR/release/aura-edge
fi
edge_port=$("$ROOT/scripts/pgcluster" free-port)
jwt_secret=restore-drill-secret-of-at-least-32-bytes
env -u AURA_JWT_JWKS -u AURA_JWT_ISSUER -u AURA_JWT_AUD -u AURA_JWT_ALGORITHMS -u AURA_JWT_SIGNING_KEY \
    AURA_LISTEN=127.0.0.1:$edge_port AURA_JWT_SECRET=$jwt_secret AURA_RATE_LIMIT=0 \
    AURA_AUTHENTICATOR_URL="host='$tmp/restored/run' port=$restored_port user=authenticator dbname=aura sslmode=disable" \
    AURA_MAIL_DIR=$tmp/mail "$edge_bin" >"$tmp/edge.log" 2>&1 &
edge_pid=$!
ready=
for _ in $(seq 100); do curl -fsS "http://127.0.0.1:$edge_port/ready" >/dev/null 2>&1 && { ready=1; break; }; sleep 0.1; done
[ -n "$ready" ] || { echo "restore-drill: the edge on the restored cluster did not become ready" >&2; exit 1; }
token=$(AURA_JWT_SECRET=$jwt_secret AURA_DATABASE_URL="host='$tmp/restored/run' port=$restored_port user=postgres dbname=aura" \
    "$ROOT/scripts/dev-token" drill-admin@restore-drill.test restore-drill)
answer=$(curl -fsS -H "Authorization: Bearer $token" \
    "http://127.0.0.1:$edge_port/rest/v1/rpc/search_contacts?q=after-backup-1%40restore-drill.test")
python3 - "$answer" <<'PY'
import json, sys
reply = json.loads(sys.argv[1])
emails = [c["email"] for c in reply["data"]]
assert "after-backup-1@restore-drill.test" in emails, reply
PY

if [ -z "$TINY" ]; then
    "${psql_src[@]}" -c "SELECT crm_private.delete_tenant_now(id) FROM core.tenants WHERE slug = 'restore-drill'" >/dev/null
    size=$("${psql_src[@]}" -Atc "SELECT pg_size_pretty(pg_database_size('aura'))")
    echo "restore-drill: database aura, $size"
fi
echo "restore-drill: restored to $target: $counts; audit chain valid; the API answers"
echo "restore-drill: full backup took $backup_secs s, restore (files and WAL replay, to a running cluster) took $restore_secs s"
