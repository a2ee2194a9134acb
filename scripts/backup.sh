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
#                                is caught up at the next start, a failed backup is retried
#                                hourly
#   backup.sh info               the repository's backups and archived WAL
#   backup.sh restore TARGET [--force] [--into DIR --port PORT]
#                                `make restore`: TARGET is a time with its zone
#                                ("2026-11-24 12:00:00+00") or `latest` (every archived
#                                change). Restores the cluster in place: the current data
#                                directory is kept beside it as .data/pg.before-restore-<time>
#                                (and put back if the restore fails); refuses while the
#                                cluster runs unless --force (which stops it). Then takes a
#                                new full backup (the restored cluster continues on a new
#                                timeline). With --into DIR: restores into the empty or new
#                                DIR instead and starts it on PORT without archiving, leaving
#                                the source alone (the restore drill does this)
#
# Configuration (environment): AURA_BACKUP_DIR (the repository, .data/backups),
# AURA_BACKUP_RETENTION_DAYS (30), AURA_BACKUP_AT (the nightly time, UTC, 02:00),
# AURA_BACKUP_ARCHIVE_TIMEOUT (seconds after which a partly filled WAL segment is archived
# anyway, 60), AURA_RESTORE_TIMEOUT (seconds a restore's WAL replay may take, 3600),
# AURA_BACKUP=off (no archiving and no backups). Other clusters (the restore drill's) set
# AURA_BACKUP_PGDATA, AURA_BACKUP_PORT, AURA_BACKUP_CONFIG and AURA_PG_CONFIG. With
# DATABASE_URL (an external database) backups are that database's operator's (README).
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
RESTORE_TIMEOUT=${AURA_RESTORE_TIMEOUT:-3600}
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

# The postmaster of a data directory, if it is alive (whatever port it listens on).
postmaster_pid() {
    local dir=${1:-$PGDATA_DIR} pid
    [ -f "$dir/postmaster.pid" ] || return 1
    pid=$(head -n 1 "$dir/postmaster.pid")
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && echo "$pid"
}

running() { postmaster_pid >/dev/null; }

# The port the running cluster listens on (postmaster.pid's fourth line), else PORT.
live_port() {
    local port=
    if running; then port=$(sed -n 4p "$PGDATA_DIR/postmaster.pid"); fi
    echo "${port:-$PORT}"
}

psql_local() {
    "$(dirname "$(pgc)")/psql" -X -q -v ON_ERROR_STOP=1 -h "${PSQL_HOST:-$PGDATA_DIR/run}" -p "${PSQL_PORT:-$(live_port)}" -U postgres "$@"
}

preflight() {
    [ -z "${DATABASE_URL:-}" ] || die "DATABASE_URL is set: back up that database with its own tools (README: Backups)"
    [ "${AURA_BACKUP:-on}" != off ] || die "backups are off (AURA_BACKUP=off)"
    command -v pgbackrest >/dev/null || die "pgbackrest is missing (Debian: apt-get install pgbackrest; make run installs it)"
}

# A path PostgreSQL's configuration can hold in single quotes.
plain_path() {
    case "$1" in *"'"* | *'"'* | *'\'*) die "$2 ($1) must not contain quotes or backslashes" ;; esac
}

cmd_configure() {
    [ -f "$PGDATA_DIR/PG_VERSION" ] || die "no cluster in $PGDATA_DIR"
    local settings=$PGDATA_DIR/aura-backup.conf
    if [ "${AURA_BACKUP:-on}" = off ]; then
        printf '# Written by scripts/backup.sh: backups are off (AURA_BACKUP=off).\narchive_mode = off\n' >"$settings"
    else
        command -v pgbackrest >/dev/null || die "pgbackrest is missing (Debian: apt-get install pgbackrest)"
        plain_path "$CONF" AURA_BACKUP_CONFIG
        plain_path "$REPO" AURA_BACKUP_DIR
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
archive_command = 'pgbackrest "--config=$CONF" --stanza=$STANZA archive-push "%p"'
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

stanza_create() {
    local out
    if ! out=$(pgbr --pg1-port="$(live_port)" stanza-create 2>&1); then
        echo "$out" >&2
        die "the repository $REPO does not take this cluster (above). If the cluster is new because its data directory was lost, bring the backed-up one back: make restore TARGET=latest. To back up this new cluster instead, move $REPO aside first."
    fi
}

cmd_init() {
    preflight
    running || die "the cluster is not running (make run starts it)"
    local mode
    mode=$(psql_local -d postgres -Atc 'SHOW archive_mode') || die "cannot ask the cluster whether it archives WAL"
    if [ "$mode" != on ]; then
        echo "backup: this cluster was started without WAL archiving; backups begin at its next restart" >&2
        return 0
    fi
    stanza_create
    if ! has_backup; then
        say "first full backup (pgBackRest, $REPO)"
        take full
    fi
}

take() {
    local type=$1 started
    started=$(date +%s.%N)
    pgbr --pg1-port="$(live_port)" --type="$type" backup || return 1
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
    stanza_create
    take "$type" || die "the $type backup failed (pgBackRest's log: $(dirname "$CONF")/log)"
    pgbr info
    if [ -n "$started_here" ]; then
        "$ROOT/scripts/pgcluster" stop "$(pgc)" "$PGDATA_DIR"
        trap - EXIT
    fi
}

cmd_schedule() {
    preflight
    date -u -d "today $AT" +%s >/dev/null 2>&1 || die "AURA_BACKUP_AT must be a time of day such as 02:00 (UTC), not $AT"
    local child=
    trap '[ -n "$child" ] && kill "$child" 2>/dev/null; exit 0' TERM INT
    # Sleeps in the background, so a stop signal ends the wait at once.
    pause() { sleep "$1" & child=$!; wait "$child" || true; child=; }
    # A night missed (nothing ran at AT) is caught up now.
    local next_try=
    if [ "$(backup_age)" -gt 90000 ]; then next_try=now; fi
    while true; do
        if [ -z "$next_try" ]; then
            local now next
            now=$(date -u +%s)
            next=$(date -u -d "today $AT" +%s)
            [ "$next" -gt "$now" ] || next=$(date -u -d "tomorrow $AT" +%s)
            pause $((next - now))
        fi
        if take full; then
            next_try=
        else
            echo "backup: $(date -u +%FT%TZ): the full backup failed (pgBackRest's log: $(dirname "$CONF")/log); retrying in an hour" >&2
            pause 3600
            next_try=now
        fi
    done
}

cmd_info() {
    preflight
    pgbr info
}

# Waits until a started cluster has finished its recovery (and promoted); fails at once if
# its postmaster dies.
await_promotion() {
    local dir=$1 port=$2 log=$3 deadline
    deadline=$(($(date +%s) + RESTORE_TIMEOUT))
    while [ "$(date +%s)" -lt "$deadline" ]; do
        if [ "$(PSQL_HOST=$dir/run PSQL_PORT=$port psql_local -d postgres -Atc 'SELECT pg_is_in_recovery()' 2>/dev/null)" = f ]; then
            return 0
        fi
        postmaster_pid "$dir" >/dev/null || { tail -n 20 "$log" >&2; die "the restored cluster stopped during its recovery (log above: $log)"; }
        sleep 0.5
    done
    die "the restored cluster did not finish its recovery in ${RESTORE_TIMEOUT} s (AURA_RESTORE_TIMEOUT; log: $log)"
}

# A time with its zone, as UTC in the one form pgBackRest and PostgreSQL both read.
canonical_time() {
    python3 - "$1" <<'PY' || die "restore target must be a time with its zone, such as \"2026-11-24 12:00:00+00\", or latest (not $1)"
import datetime, sys
t = datetime.datetime.fromisoformat(sys.argv[1].strip().replace(" ", "T", 1).replace("Z", "+00:00"))
assert t.tzinfo is not None
print(t.astimezone(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f+00"))
PY
}

cmd_restore() {
    preflight
    local target=${1:-} force= into= into_port=
    [ -n "$target" ] || die 'restore needs a target: a time such as "2026-11-24 12:00:00+00", or latest'
    shift
    while [ $# -gt 0 ]; do
        case "$1" in
            --force) force=1 ;;
            --into) [ $# -ge 2 ] || die "--into needs a directory"; into=$2; shift ;;
            --port) [ $# -ge 2 ] || die "--port needs a port"; into_port=$2; shift ;;
            *) die "unknown restore option $1" ;;
        esac
        shift
    done
    local recovery=(--target-action=promote)
    if [ "$target" = latest ]; then
        recovery=(--type=default)
    else
        target=$(canonical_time "$target")
        recovery+=(--type=time "--target=$target")
    fi
    has_backup || die "the repository $REPO holds no backup yet (make backup takes one)"
    if [ -n "$into" ]; then
        [ -n "$into_port" ] || die "--into needs --port"
        case "$into" in /*) ;; *) into=$ROOT/$into ;; esac
        [ ! -e "$into" ] || [ -z "$(ls -A "$into")" ] || die "$into is not empty"
        restore_into "$into" "$into_port" "$target" "${recovery[@]}"
    else
        restore_in_place "$force" "$target" "${recovery[@]}"
    fi
}

# pgBackRest's restore of TARGET into the empty or new DIR; prints how long it took.
restore_files() {
    local dest=$1
    shift
    mkdir -p "$dest"
    chmod 700 "$dest"
    if [ "$(id -u)" -eq 0 ]; then chown "$OWNER:" "$dest"; fi
    pgbr --pg1-path="$dest" "$@" restore
}

restore_into() {
    local dest=$1 port=$2 target=$3 started
    shift 3
    say "restoring to $target into $dest"
    started=$(date +%s.%N)
    # Not archiving into the source's repository: this copy is for looking, not for
    # taking over.
    restore_files "$dest" --archive-mode=off "$@"
    AURA_PG_START_TIMEOUT=$RESTORE_TIMEOUT AURA_PG_WORKER_DATABASES= \
        "$ROOT/scripts/pgcluster" start "$(pgc)" "$dest" "$port" "$dest.log"
    await_promotion "$dest" "$port" "$dest.log"
    python3 -c "import sys; print(f'backup: restore took {float(sys.argv[2]) - float(sys.argv[1]):.1f} s (files and WAL replay)')" \
        "$started" "$(date +%s.%N)"
}

restore_in_place() {
    local force=$1 target=$2 aside= started
    shift 2
    if running; then
        [ -n "$force" ] || die "the local cluster is running (make run?): stop it first, or restore with FORCE=1 to stop it"
        # What was written since the last archived WAL segment goes to the repository first.
        pgbr --pg1-port="$(live_port)" check >/dev/null \
            || echo "backup: warning: could not archive the newest WAL before stopping (pgbackrest check failed)" >&2
        say "stopping the running cluster"
        "$ROOT/scripts/pgcluster" stop "$(pgc)" "$PGDATA_DIR"
        ! running || die "the cluster did not stop"
    elif [ -f "$PGDATA_DIR/PG_VERSION" ]; then
        # A stopped cluster's newest WAL (up to AURA_BACKUP_ARCHIVE_TIMEOUT of changes) may
        # not be archived yet: start it briefly to archive it. A cluster that does not start
        # (the data directory was damaged) is restored without it.
        cmd_configure
        if AURA_PG_WORKER_DATABASES= "$ROOT/scripts/pgcluster" start "$(pgc)" "$PGDATA_DIR" "$PORT" "$DATA/postgres.log" 2>/dev/null; then
            pgbr --pg1-port="$(live_port)" check >/dev/null \
                || echo "backup: warning: could not archive the cluster's newest WAL (pgbackrest check failed)" >&2
            "$ROOT/scripts/pgcluster" stop "$(pgc)" "$PGDATA_DIR"
        else
            echo "backup: warning: the current cluster does not start; changes after its last archived WAL cannot be restored" >&2
        fi
    fi
    if [ -e "$PGDATA_DIR" ]; then
        aside=$PGDATA_DIR.before-restore-$(date -u +%Y%m%dT%H%M%SZ)
        mv "$PGDATA_DIR" "$aside"
        # Started to look at, the kept directory must not archive into the repository.
        [ -f "$aside/aura-backup.conf" ] && echo "archive_mode = off" >>"$aside/aura-backup.conf"
    fi
    # Any failure from here puts the kept directory back.
    trap 'restore_failed "$aside"' EXIT
    say "restoring to $target"
    started=$(date +%s.%N)
    restore_files "$PGDATA_DIR" "$@"
    cmd_configure
    AURA_PG_START_TIMEOUT=$RESTORE_TIMEOUT AURA_PG_WORKER_DATABASES=${AURA_PG_WORKER_DATABASES-aura} \
        "$ROOT/scripts/pgcluster" start "$(pgc)" "$PGDATA_DIR" "$PORT" "$DATA/postgres.log"
    await_promotion "$PGDATA_DIR" "$PORT" "$DATA/postgres.log"
    python3 -c "import sys; print(f'backup: restore took {float(sys.argv[2]) - float(sys.argv[1]):.1f} s (files and WAL replay)')" \
        "$started" "$(date +%s.%N)"
    trap - EXIT
    [ -z "$aside" ] || say "the data directory before the restore is kept as ${aside#"$ROOT"/} (delete it once the restore is right)"
    say "a new full backup (the restored cluster goes on on a new timeline)"
    take full || echo "backup: warning: the full backup after the restore failed: make backup" >&2
    "$ROOT/scripts/pgcluster" stop "$(pgc)" "$PGDATA_DIR"
    say "restored; make run starts it"
}

# The restore failed: stop what it started, keep its remains for a look, put the data
# directory that was there before back.
restore_failed() {
    local aside=$1 failed
    trap - EXIT
    "$ROOT/scripts/pgcluster" stop "$(pgc)" "$PGDATA_DIR" >/dev/null 2>&1 || true
    if [ -n "$aside" ] && [ -e "$aside" ]; then
        if [ -e "$PGDATA_DIR" ]; then
            failed=$PGDATA_DIR.failed-restore-$(date -u +%Y%m%dT%H%M%SZ)
            mv "$PGDATA_DIR" "$failed"
            echo "backup: what the failed restore left is in ${failed#"$ROOT"/}" >&2
        fi
        mv "$aside" "$PGDATA_DIR"
        sed -i '/^archive_mode = off$/d' "$PGDATA_DIR/aura-backup.conf" 2>/dev/null || true
        echo "backup: the restore failed; the data directory is back as it was" >&2
    fi
    exit 1
}

case "${1:-}" in
    configure) cmd_configure ;;
    init) cmd_init ;;
    now) shift; cmd_now "$@" ;;
    schedule) cmd_schedule ;;
    info) cmd_info ;;
    restore) shift; cmd_restore "$@" ;;
    *) sed -n '2,38p' "$0" >&2; exit 2 ;;
esac
