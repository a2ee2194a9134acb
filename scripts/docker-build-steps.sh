#!/usr/bin/env bash
# The build steps of Dockerfile.postgres, runnable without Docker.
#
#   docker-build-steps.sh package OUTDIR   (in the image) release-build pg_crm for the
#                                          system PostgreSQL 15 and lay its files out under
#                                          OUTDIR as they go into the image (/usr/lib/..., /usr/share/...)
#   docker-build-steps.sh --check          (make test) the same packaging with a debug
#                                          build, installed into a scratch copy of the
#                                          PostgreSQL tree, then the image's first start:
#                                          initdb, the docker/initdb scripts in order, and a
#                                          check that pg_crm is there and answers
set -euo pipefail
source "$(dirname "$0")/common.sh"
SYSTEM_PG_CONFIG=${PG_SYSTEM_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}

package() {
    local out=$1 profile=$2
    "$ROOT/scripts/prereqs.sh"
    mkdir -p "$PGRX_HOME"
    [ -f "$PGRX_HOME/config.toml" ] || printf '[configs]\npg15 = "%s"\n' "$SYSTEM_PG_CONFIG" >"$PGRX_HOME/config.toml"
    local args=(--pg-config "$SYSTEM_PG_CONFIG" --out-dir "$out")
    [ "$profile" = debug ] && args+=(--profile dev)
    (cd "$ROOT/pg_crm" && cargo pgrx package "${args[@]}" >/dev/null 2>&1) \
        || (cd "$ROOT/pg_crm" && cargo pgrx package "${args[@]}")
    for f in "$out$("$SYSTEM_PG_CONFIG" --pkglibdir)/pg_crm.so" \
             "$out$("$SYSTEM_PG_CONFIG" --sharedir)/extension/pg_crm.control"; do
        [ -f "$f" ] || { echo "docker-build-steps: $f missing from the package" >&2; exit 1; }
    done
}

check() {
    work=$(mktemp -d "${TMPDIR:-/tmp}/aura-docker.XXXXXX")
    chmod 755 "$work"
    trap '"$ROOT/scripts/pgcluster" stop "${pgc:-/bin/false}" "$work/data"; rm -rf "$work"' EXIT
    package "$work/pkg" debug
    # The image: the PostgreSQL tree plus the packaged files on top.
    pgc=$("$ROOT/scripts/pgcluster" tree "$work/image")
    cp -a "$work/pkg/." "$work/image/"
    "$ROOT/scripts/pgcluster" init "$pgc" "$work/data"
    local port
    port=$("$ROOT/scripts/pgcluster" free-port)
    "$ROOT/scripts/pgcluster" start "$pgc" "$work/data" "$port"
    local psql=("$(dirname "$pgc")/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$port" -U postgres -d postgres)
    # docker-entrypoint-initdb.d, in the order the Dockerfile lays it out.
    "${psql[@]}" -f "$ROOT/sql/supabase_compat.sql"
    for f in "$ROOT"/docker/initdb/*; do
        case "$f" in
            *.sql) "${psql[@]}" -f "$f" ;;
            *.sh) POSTGRES_USER=postgres POSTGRES_DB=postgres AUTHENTICATOR_PASSWORD=check \
                  PGHOST=127.0.0.1 PGPORT=$port PATH="$(dirname "$pgc"):$PATH" bash "$f" ;;
        esac
    done
    local got api_functions
    # Every api function the install scripts create (all of sql/ except the upgrade scripts).
    api_functions=$(find "$ROOT/sql" -name '*.sql' ! -name 'pg_crm--*' -exec cat {} + | grep -c '^CREATE FUNCTION api\.')
    got=$("${psql[@]}" -At -c "SELECT extversion FROM pg_extension WHERE extname = 'pg_crm'" \
          -c "SELECT count(*) FROM pg_proc WHERE pronamespace = 'api'::regnamespace" \
          -c "SELECT rolpassword IS NOT NULL FROM pg_authid WHERE rolname = 'authenticator'" \
          -c "SHOW shared_preload_libraries")
    [ "$(echo "$got" | tr '\n' ' ')" = "$(cargo pkgid -p pg_crm | sed 's/.*[#@]//') $api_functions t pg_crm " ] || {
        echo "docker-build-steps: the image's first start did not give a working pg_crm: $got" >&2; exit 1; }
    echo "docker-build-steps: packaged pg_crm installs and starts as the image would"
}

case "${1:-}" in
    package) package "${2:?OUTDIR}" release ;;
    --check) check ;;
    *) sed -n '2,12p' "$0" >&2; exit 2 ;;
esac
