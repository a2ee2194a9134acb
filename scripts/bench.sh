#!/usr/bin/env bash
# `make bench`: the API through the edge beside pgbench running the identical transactions
# (bench/loadgen, `aura-bench`), on the data of `make seed`.
#
#   scripts/bench.sh           release build, the local database of `make run` (.data/), which
#                              `make seed` filled; a second database `aura_few` with 10 tenants
#                              is made once for the small-tenant comparison. Prints the table
#                              and writes bench/results/<date>-<commit>.json.
#   scripts/bench.sh --tiny    what `make test` runs: a throwaway cluster from the test tree
#                              (AURA_TEST_PG_CONFIG, pg_crm installed there), a few hundred rows,
#                              one second per variant; checks that every scenario runs.
#
# Environment: BENCH_SECONDS (10), BENCH_WARMUP (2), BENCH_CLIENTS (16), SEED_SMALL_CONTACTS
# (300, as `make seed` used).
set -euo pipefail
source "$(dirname "$0")/common.sh"
cd "$ROOT"

TINY=
[ "${1:-}" = --tiny ] && TINY=1
[ -n "$TINY" ] || "$ROOT/scripts/prereqs.sh"

tmp=$(mktemp -d "${TMPDIR:-/tmp}/aura-bench.XXXXXX")
chmod 755 "$tmp"
pids=()
cluster=
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    for pid in ${pids[@]+"${pids[@]}"}; do kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null; done
    if [ -n "${bouncer_dir:-}" ]; then "$ROOT/scripts/pgcluster" bouncer-stop "$bouncer_dir" || true; fi
    if [ -n "$cluster" ]; then "$ROOT/scripts/pgcluster" stop "$pgc" "$cluster" >/dev/null || true; fi
    if [ "$rc" -ne 0 ]; then
        for f in "$tmp"/*.log; do [ -s "$f" ] && { echo "--- last lines of $(basename "$f")" >&2; tail -n 15 "$f" >&2; }; done
    fi
    rm -rf "$tmp"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

small=${SEED_SMALL_CONTACTS:-300}
if [ -n "$TINY" ]; then
    pgc=${AURA_TEST_PG_CONFIG:?"bench --tiny needs AURA_TEST_PG_CONFIG (a pg_config whose tree has pg_crm)"}
    profile=debug
    export BENCH_SECONDS=${BENCH_SECONDS:-0.5} BENCH_WARMUP=${BENCH_WARMUP:-0.1} BENCH_CLIENTS=${BENCH_CLIENTS:-4} \
        BENCH_PGBENCH_TRANSACTIONS=${BENCH_PGBENCH_TRANSACTIONS:-25}
    small=30
    cluster=$tmp/data
    "$ROOT/scripts/pgcluster" init "$pgc" "$cluster" >/dev/null
    echo "shared_preload_libraries = 'pg_crm'" >>"$cluster/postgresql.conf"
    port=$("$ROOT/scripts/pgcluster" free-port)
    AURA_PG_WORKER_DATABASES=aura,aura_few "$ROOT/scripts/pgcluster" start "$pgc" "$cluster" "$port" "$tmp/postgres.log"
    sock=$cluster/run
    jwt_secret=tiny-bench-secret-of-at-least-32-bytes
    edge_db_url="postgresql://authenticator@127.0.0.1:$port/aura?sslmode=disable"
    userlist=
    few_db_url="postgresql://authenticator@127.0.0.1:$port/aura_few?sslmode=disable"
    psql_bin=$(dirname "$pgc")/psql
    "$psql_bin" -X -q -v ON_ERROR_STOP=1 -h "$sock" -p "$port" -U postgres -d postgres -c "CREATE DATABASE aura"
    "$psql_bin" -X -q -v ON_ERROR_STOP=1 -h "$sock" -p "$port" -U postgres -d aura \
        -f sql/supabase_compat.sql -c "CREATE EXTENSION pg_crm CASCADE" -c "ALTER ROLE authenticator LOGIN"
    seed_many=(-v tenants=12 -v big_contacts=600 -v big_orgs=100 -v big_deals=300 -v big_activities=1200)
else
    if [ "${AURA_PROFILE:-release}" != release ]; then
        echo "bench: refusing to measure a $AURA_PROFILE build; make bench needs the release build (unset AURA_PROFILE)" >&2
        exit 1
    fi
    if [ -n "${DATABASE_URL:-}" ]; then
        echo "bench: make bench measures the local cluster of make run (.data/); unset DATABASE_URL" >&2
        exit 1
    fi
    profile=release
    DATA=$ROOT/.data
    port=${AURA_PG_PORT:-54329}
    sock=$DATA/pg/run
    pgc=$(pg_tree "$DATA/pg15")
    if ! { [ -f "$DATA/pg/postmaster.pid" ] && "$(dirname "$pgc")/pg_isready" -q -h "$sock" -p "$port"; }; then
        cluster=$DATA/pg # started here: stopped on exit
    fi
    AURA_PROFILE=release "$ROOT/scripts/run.sh" --prepare
    # shellcheck disable=SC1091
    set -a; source "$DATA/keys.env"; set +a
    jwt_secret=$AURA_JWT_SECRET
    edge_db_url=$AURA_AUTHENTICATOR_URL
    # shellcheck disable=SC1091
    source "$DATA/secrets.env"
    umask 077
    printf '"authenticator" "%s"\n' "$AUTHENTICATOR_PASSWORD" >"$tmp/userlist.txt"
    umask 022
    userlist=$tmp/userlist.txt
    few_db_url=${AURA_AUTHENTICATOR_URL%/aura*}/aura_few
    psql_bin=$(dirname "$pgc")/psql
    seeded=$("$psql_bin" -X -At -h "$sock" -p "$port" -U postgres -d aura -c "SELECT count(*) FROM core.tenants WHERE slug = 'seed-big'")
    [ "$seeded" = 1 ] || { echo "bench: the database has no seed-big tenant: run make seed first" >&2; exit 1; }
    seed_many=()
fi
psql_su=("$psql_bin" -X -q -v ON_ERROR_STOP=1 -h "$sock" -p "$port" -U postgres)

if [ -n "$TINY" ]; then
    say "bench (tiny): seeding"
    "${psql_su[@]}" -d aura "${seed_many[@]}" -v small_contacts="$small" -f bench/seed.sql >"$tmp/seed.log" 2>&1
fi
# The comparison database: 10 tenants (3 in tiny mode) of the same sizes as the others.
if [ "$("${psql_su[@]}" -At -d postgres -c "SELECT count(*) FROM pg_database WHERE datname = 'aura_few'")" = 0 ]; then
    say "bench: making database aura_few (the small tenants among few tenants)"
    "${psql_su[@]}" -d postgres -c "CREATE DATABASE aura_few"
    "${psql_su[@]}" -d aura_few -f sql/supabase_compat.sql -c "CREATE EXTENSION pg_crm CASCADE"
    few=$([ -n "$TINY" ] && echo 3 || echo 10)
    "${psql_su[@]}" -d aura_few -v tenants="$few" -v big_contacts="$small" -v big_orgs=$((small / 5)) \
        -v big_deals=$((small / 2)) -v big_activities="$small" -v small_contacts="$small" \
        -f bench/seed.sql >"$tmp/seed_few.log" 2>&1
fi
"${psql_su[@]}" -d aura_few -c "ALTER EXTENSION pg_crm UPDATE" >/dev/null

say "building the edge and aura-bench ($profile)"
profile_flag=(); [ "$profile" = release ] && profile_flag=(--release)
cargo build -q "${profile_flag[@]}" -p edge --bin aura-edge -p aura-bench --bin aura-bench
bin=$CARGO_TARGET_DIR/$profile

clients=${BENCH_CLIENTS:-16}
# Not in a $(...) subshell: the edge's pid must reach `pids`, which cleanup stops.
start_edge() { # NAME DATABASE_URL [RATE_LIMIT] -> sets edge_url
    local name=$1 url=$2 limit=${3:-1000000} listen
    listen=127.0.0.1:$("$ROOT/scripts/pgcluster" free-port)
    AURA_LISTEN=$listen AURA_AUTHENTICATOR_URL=$url AURA_JWT_SECRET=$jwt_secret \
        AURA_DB_POOL_SIZE=$clients AURA_TENANT_POOL_SHARE=1 AURA_MAIL_DIR=$tmp/mail-$name \
        AURA_RATE_LIMIT=$limit \
        RUST_LOG=warn "$bin/aura-edge" >"$tmp/edge-$name.log" 2>&1 &
    pids+=($!)
    for _ in $(seq 200); do
        curl -fsS "http://$listen/ready" >/dev/null 2>&1 && { edge_url="http://$listen"; return 0; }
        sleep 0.1
    done
    echo "bench: the $name edge did not become ready" >&2
    return 1
}
# The edges: on the seeded database (its rate limiter on, with a limit the load never reaches),
# on the few-tenants database, through PgBouncer, and with the limiter off.
start_edge many "$edge_db_url"
edge_many=$edge_url
start_edge few "$few_db_url"
edge_few=$edge_url
bouncer_port=$("$ROOT/scripts/pgcluster" free-port)
bouncer_dir=$tmp/bouncer
"$ROOT/scripts/pgcluster" bouncer "$bouncer_dir" "$port" "$bouncer_port" ${userlist:+"$userlist"}
start_edge bouncer "postgresql://authenticator@127.0.0.1:$bouncer_port/aura?sslmode=disable"
edge_bouncer=$edge_url
start_edge unlimited "$edge_db_url" 0
edge_unlimited=$edge_url

commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
git diff --quiet HEAD 2>/dev/null || commit="$commit+changes"
date=$(date -u +%Y-%m-%dT%H:%M:%SZ)
json=$tmp/result.json
if [ -z "$TINY" ]; then
    mkdir -p bench/results
    json=bench/results/$(date -u +%Y%m%dT%H%M%SZ)-${commit%+changes}.json
fi
export BENCH_EDGE_URL=$edge_many BENCH_FEW_EDGE_URL=$edge_few \
    BENCH_BOUNCER_EDGE_URL=$edge_bouncer BENCH_UNLIMITED_EDGE_URL=$edge_unlimited \
    BENCH_ADMIN_URL="host=$sock port=$port user=postgres dbname=aura" \
    BENCH_FEW_ADMIN_URL="host=$sock port=$port user=postgres dbname=aura_few" \
    BENCH_PG_HOST=$sock BENCH_PG_PORT=$port BENCH_DB=aura \
    BENCH_PGBENCH=$(dirname "$pgc")/pgbench BENCH_JWT_SECRET=$jwt_secret BENCH_CLIENTS=$clients \
    BENCH_COMMIT=$commit BENCH_DATE=$date BENCH_JSON=$json
if [ -n "$TINY" ]; then
    export BENCH_MANY_LABEL="12 tenants" BENCH_FEW_LABEL="3 tenants"
else
    export BENCH_MANY_LABEL="$("${psql_su[@]}" -At -d aura -c "SELECT to_char(count(*), 'FM9,999,999') FROM core.tenants") tenants" \
        BENCH_FEW_LABEL="$("${psql_su[@]}" -At -d aura_few -c "SELECT count(*) FROM core.tenants") tenants"
fi
say "bench: edges at $edge_many (aura), $edge_few (aura_few), $edge_bouncer (aura through PgBouncer) and $edge_unlimited (no rate limiter)"
"$bin/aura-bench"
