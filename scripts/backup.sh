#!/usr/bin/env bash
# Backups of the local cluster of `make run` with pgBackRest (Debian's `pgbackrest`): WAL
# archived continuously, a full backup every night, kept 30 days, restorable to any moment
# in between (NFR-R2, NFR-R3).
#
#   backup.sh configure          write the pgBackRest configuration and the cluster's archive
#                                settings (before the cluster starts; make run does this)
#   backup.sh init               after the cluster started: create the stanza (once) and take
#                                a first full backup if there is none (make run does this)
#   backup.sh now [full|diff|incr]
#                                take a backup now (`make backup`; full by default). Starts
#                                the cluster for it if it is not running, and stops it again
#   backup.sh schedule           every night at AURA_BACKUP_AT take a full backup (make run
#                                runs this beside the edge); a night missed while nothing ran
#                                is caught up at the next start
#   backup.sh info               the repository's backups and archived WAL
#   backup.sh restore TARGET [--force] [--into DIR --port PORT]
#                                `make restore`: TARGET is a time ("2026-11-24 12:00:00+00")
#                                or `latest` (every archived change). Restores the cluster in
#                                place: the current data directory is kept beside it as
#                                .data/pg.before-restore-<time>; refuses while the cluster
#                                runs unless --force (which stops it). Then takes a new full
#                                backup (the restored cluster continues on a new timeline).
#                                With --into DIR: restores into the empty or new DIR instead
#                                and starts it on PORT without archiving, leaving the source
#                                alone (the restore drill does this)
#
# Configuration (environment): AURA_BACKUP_DIR (the repository, .data/backups),
# AURA_BACKUP_RETENTION_DAYS (30), AURA_BACKUP_AT (the nightly time, UTC, 02:00),
# AURA_BACKUP_ARCHIVE_TIMEOUT (seconds after which a partly filled WAL segment is archived
# anyway: at most this much is lost with the disk, 60), AURA_BACKUP=off (no archiving and no
# backups). Other clusters (the restore drill's) set AURA_BACKUP_PGDATA, AURA_BACKUP_PORT,
# AURA_BACKUP_CONFIG and AURA_PG_CONFIG. With DATABASE_URL (an external database) backups
# are that database's operator's: see the README.
#
# As root, pgBackRest runs as the cluster's owner (AURA_PG_USER, postgres), as PostgreSQL
# does; its repository and configuration are that user's.
set -euo pipefail
source "$(dirname "$0")/common.sh"
cd "$ROOT"

DATA=$ROOT/.data
PGDATA_DIR=${AURA_BACKUP_PGDATA:-$DATA/pg}
PORT=${AURA_BACKUP_PORT:-${AURA_PG_PORT:-54329}}
REPO=${AURA_BACKUP_DIR:-$DATA/backups}
CONF=${AURA_BACKUP_CONFIG:-$DATA/pgbackrest/pgbackrest.conf}
RETENTION=${AURA_BACKUP_RETENTION_DAYS:-30}
AT=${AURA_BACKUP_AT:-02:00}
ARCHIVE_TIMEOUT=${AURA_BACKUP_ARCHIVE_TIMEOUT:-60}
STANZA=aura
OWNER=${AURA_PG_USER:-postgres}

die() { echo "backup: $*" >&2; exit 1; }

as_owner() {
    if [ "$(id -u)" -eq 0 ]; then
        (cd / && runuser -u "$OWNER" -- "$@")
    else
        "$@"
    fi
}

pgbr() { as_owner pgbackrest --config="$CONF" --stanza="$STANZA" "$@"; }

pgc() {
    if [ -n "${AURA_PG_CONFIG:-}" ]; then echo "$AURA_PG_CONFIG"; else pg_tree "$DATA/pg15"; fi
}

running() {
    [ -f "$PGDATA_DIR/postmaster.pid" ] && "$(dirname "$(pgc)")/pg_isready" -q -U postgres -h "$PGDATA_DIR/run" -p "$PORT"
}

psql_local() {
    "$(dirname "$(pgc)")/psql" -X -q -v ON_ERROR_STOP=1 -h "${PSQL_HOST:-$PGDATA_DIR/run}" -p "${PSQL_PORT:-$PORT}" -U postgres "$@"
}

preflight() {
    [ -z "${DATABASE_URL:-}" ] || die "DATABASE_URL is set: back up that database with its own tools (README: Backups)"
    [ "${AURA_BACKUP:-on}" != off ] || die "backups are off (AURA_BACKUP=off)"
    command -v pgbackrest >/dev/null || die "pgbackrest is missing (Debian: apt-get install pgbackrest; make run installs it)"
}

cmd_configure() {
    [ -f "$PGDATA_DIR/PG_VERSION" ] || die "no cluster in $PGDATA_DIR"
    local settings=$PGDATA_DIR/aura-backup.conf
    if [ "${AURA_BACKUP:-on}" = off ]; then
        printf '# Written by scripts/backup.sh: backups are off (AURA_BACKUP=off).\narchive_mode = off\n' >"$settings"
    else
        command -v pgbackrest >/dev/null || die "pgbackrest is missing (Debian: apt-get install pgbackrest)"
        mkdir -p "$REPO" "$(dirname "$CONF")/log" "$(dirname "$CONF")/lock"
        cat >"$CONF" <<CONF
# Written by scripts/backup.sh (every start of make run): edit the environment, not this.
[global]
repo1-path=$REPO
repo1-retention-full-type=time
repo1-retention-full=$RETENTION
log-path=$(dirname "$CONF")/log
lock-path=$(dirname "$CONF")/lock
log-level-console=warn
log-level-file=info
start-fast=y
compress-type=lz4
process-max=2
# The socket lives in the data directory; it is not data.
exclude=run/

[$STANZA]
pg1-path=$PGDATA_DIR
pg1-port=$PORT
pg1-socket-path=$PGDATA_DIR/run
pg1-user=postgres
CONF
        cat >"$settings" <<CONF
# Written by scripts/backup.sh: continuous WAL archiving to pgBackRest ($REPO).
archive_mode = on
archive_command = 'pgbackrest --config=$CONF --stanza=$STANZA archive-push %p'
archive_timeout = ${ARCHIVE_TIMEOUT}s
CONF
        # Not recursive: what pgBackRest writes there is its user's already.
        if [ "$(id -u)" -eq 0 ]; then
            chown "$OWNER:" "$REPO" "$(dirname "$CONF")" "$(dirname "$CONF")/log" "$(dirname "$CONF")/lock" "$CONF"
        fi
    fi
    grep -qs "^include_if_exists = 'aura-backup.conf'" "$PGDATA_DIR/postgresql.conf" \
        || echo "include_if_exists = 'aura-backup.conf'" >>"$PGDATA_DIR/postgresql.conf"
    if [ "$(id -u)" -eq 0 ]; then chown "$OWNER:" "$settings"; fi
}

has_backup() {
    pgbr info --output=json 2>/dev/null | python3 -c '
import json, sys
info = json.load(sys.stdin)
sys.exit(0 if info and info[0].get("backup") else 1)'
}

# Seconds since the newest backup (a large number when there is none).
backup_age() {
    pgbr info --output=json 2>/dev/null | python3 -c '
import json, sys, time
info = json.load(sys.stdin)
stops = [b["timestamp"]["stop"] for s in info for b in s.get("backup", [])]
print(int(time.time() - max(stops)) if stops else 10**9)' 2>/dev/null || echo 1000000000
}

cmd_init() {
    preflight
    running || die "the cluster is not running (make run starts it)"
    if [ "$(psql_local -d postgres -Atc 'SHOW archive_mode')" != on ]; then
        echo "backup: this cluster was started without WAL archiving; backups begin at its next restart" >&2
        return 0
    fi
    pgbr stanza-create >/dev/null
    if ! has_backup; then
        say "first full backup (pgBackRest, $REPO)"
        pgbr --type=full backup
    fi
}

take() {
    local type=$1 started
    started=$(date +%s.%N)
    pgbr --type="$type" backup
    python3 -c "import sys; print(f'backup: {sys.argv[1]} backup took {float(sys.argv[3]) - float(sys.argv[2]):.1f} s')" \
        "$type" "$started" "$(date +%s.%N)"
}

cmd_now() {
    preflight
    local type=${1:-full} started_here=
    case "$type" in full | diff | incr) ;; *) die "backup type must be full, diff or incr" ;; esac
    [ -f "$PGDATA_DIR/PG_VERSION" ] || die "no local cluster in $PGDATA_DIR yet: make run creates it"
    if ! running; then
        cmd_configure
        AURA_PG_WORKER_DATABASES=${AURA_PG_WORKER_DATABASES-aura} "$ROOT/scripts/pgcluster" start "$(pgc)" "$PGDATA_DIR" "$PORT" "$DATA/postgres.log"
        started_here=1
        trap '"$ROOT/scripts/pgcluster" stop "$(pgc)" "$PGDATA_DIR"' EXIT
    fi
    pgbr stanza-create >/dev/null
    take "$type"
    pgbr info
    if [ -n "$started_here" ]; then
        "$ROOT/scripts/pgcluster" stop "$(pgc)" "$PGDATA_DIR"
        trap - EXIT
    fi
}

cmd_schedule() {
    preflight
    # A night missed (nothing ran at AT) is caught up now.
    if [ "$(backup_age)" -gt 90000 ]; then
        take full || echo "backup: the catch-up backup failed (see $(dirname "$CONF")/log)" >&2
    fi
    while true; do
        local now next
        now=$(date -u +%s)
        next=$(date -u -d "today $AT" +%s)
        [ "$next" -gt "$now" ] || next=$(date -u -d "tomorrow $AT" +%s)
        sleep $((next - now))
        take full || echo "backup: the nightly backup failed (see $(dirname "$CONF")/log)" >&2
    done
}

cmd_info() {
    preflight
    pgbr info
}

# Waits until a started cluster has finished its recovery (and promoted).
await_promotion() {
    local host=$1 port=$2 i
    for i in $(seq 600); do
        if [ "$(PSQL_HOST=$host PSQL_PORT=$port psql_local -d postgres -Atc 'SELECT pg_is_in_recovery()' 2>/dev/null)" = f ]; then
            return 0
        fi
        sleep 0.5
    done
    die "the restored cluster did not finish its recovery in 5 minutes (log: $3)"
}

cmd_restore() {
    preflight
    local target=${1:-} force= into= into_port=
    [ -n "$target" ] || die 'restore needs a target: a time such as "2026-11-24 12:00:00+00", or latest'
    shift
    while [ $# -gt 0 ]; do
        case "$1" in
            --force) force=1 ;;
            --into) into=$2; shift ;;
            --port) into_port=$2; shift ;;
            *) die "unknown restore option $1" ;;
        esac
        shift
    done
    local recovery=(--target-action=promote)
    if [ "$target" = latest ]; then
        recovery=(--type=default)
    else
        python3 -c 'import sys, datetime; datetime.datetime.fromisoformat(sys.argv[1].replace(" ", "T"))' "$target" 2>/dev/null \
            || die "restore target must be a time with its zone, such as \"2026-11-24 12:00:00+00\", or latest"
        recovery+=(--type=time "--target=$target")
    fi
    has_backup || die "the repository $REPO holds no backup yet (make backup takes one)"
    local dest=$PGDATA_DIR
    if [ -n "$into" ]; then
        [ -n "$into_port" ] || die "--into needs --port"
        [ ! -e "$into" ] || [ -z "$(ls -A "$into")" ] || die "$into is not empty"
        dest=$into
    else
        if running; then
            [ -n "$force" ] || die "the local cluster is running (make run?): stop it first, or restore with FORCE=1 to stop it"
            say "stopping the running cluster"
            "$ROOT/scripts/pgcluster" stop "$(pgc)" "$PGDATA_DIR"
        fi
        if [ -e "$PGDATA_DIR" ]; then
            local aside
            aside=$PGDATA_DIR.before-restore-$(date -u +%Y%m%dT%H%M%SZ)
            mv "$PGDATA_DIR" "$aside"
            say "the current data directory is kept as ${aside#"$ROOT"/} (delete it once the restore is right)"
        fi
    fi
    mkdir -p "$dest"
    chmod 700 "$dest"
    if [ "$(id -u)" -eq 0 ]; then chown "$OWNER:" "$dest"; fi
    say "restoring to $target"
    local started
    started=$(date +%s.%N)
    pgbr --pg1-path="$dest" "${recovery[@]}" restore
    mkdir -p "$dest/run"
    if [ "$(id -u)" -eq 0 ]; then chown "$OWNER:" "$dest/run"; fi
    if [ -n "$into" ]; then
        # Not archiving into the source's repository: this copy is for looking, not for
        # taking over.
        echo "archive_mode = off" >>"$dest/postgresql.auto.conf"
        AURA_PG_WORKER_DATABASES= "$ROOT/scripts/pgcluster" start "$(pgc)" "$dest" "$into_port" "$dest.log"
        await_promotion "$dest/run" "$into_port" "$dest.log"
    else
        cmd_configure
        AURA_PG_WORKER_DATABASES=${AURA_PG_WORKER_DATABASES-aura} "$ROOT/scripts/pgcluster" start "$(pgc)" "$PGDATA_DIR" "$PORT" "$DATA/postgres.log"
        await_promotion "$PGDATA_DIR/run" "$PORT" "$DATA/postgres.log"
    fi
    python3 -c "import sys; print(f'backup: restore took {float(sys.argv[2]) - float(sys.argv[1]):.1f} s (files and WAL replay)')" \
        "$started" "$(date +%s.%N)"
    if [ -z "$into" ]; then
        say "a new full backup (the restored cluster goes on on a new timeline)"
        take full
        "$ROOT/scripts/pgcluster" stop "$(pgc)" "$PGDATA_DIR"
        say "restored; make run starts it"
    fi
}

case "${1:-}" in
    configure) cmd_configure ;;
    init) cmd_init ;;
    now) shift; cmd_now "$@" ;;
    schedule) cmd_schedule ;;
    info) cmd_info ;;
    restore) shift; cmd_restore "$@" ;;
    *) sed -n '2,36p' "$0" >&2; exit 2 ;;
esac
