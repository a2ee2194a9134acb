#!/usr/bin/env bash
# `make test`: every check, each against PostgreSQL clusters it starts itself (temp dirs,
# free ports). Never touches .data/ or the system's PostgreSQL installation.
set -euo pipefail
source "$(dirname "$0")/common.sh"
cd "$ROOT"

"$ROOT/scripts/prereqs.sh"

# Keep a copy of everything printed, to total the test counts at the end.
mkdir -p "$AURA_WORK"
log=$AURA_WORK/test.log
exec > >(tee "$log") 2>&1

# pg_crm's #[pg_test]s get their own tree (their build adds a `tests` schema); the
# regression suite and the integration tests share the other.
trees=$(pg_trees_dir)
[ "$trees" = "$AURA_WORK" ] || say "PostgreSQL trees in $trees (${AURA_PG_USER:-postgres} cannot reach $AURA_WORK)"
pg_tree "$trees/pg15-pgtest" >/dev/null
PGC=$("$ROOT/scripts/pgcluster" tree "$trees/pg15")

say "cargo fmt --check"
cargo fmt --all -- --check

say "cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings

say "unit tests and #[pg_test]s (pg_crm)"
pgdata=$(mktemp -d "${TMPDIR:-/tmp}/aura-pgtest.XXXXXX")
trap 'rm -rf "$pgdata"' EXIT
if [ "$(id -u)" -eq 0 ]; then
    # initdb refuses root: pgrx runs PostgreSQL as this user (through sudo).
    export CARGO_PGRX_TEST_RUNAS=${AURA_PG_USER:-postgres}
    chown "$CARGO_PGRX_TEST_RUNAS" "$pgdata"
fi
CARGO_PGRX_TEST_PGDATA=$pgdata cargo test -p pg_crm

say "regression suite (pgrx-tests/)"
(cd pg_crm && cargo pgrx install --pg-config "$PGC" >/dev/null)
pgrx-tests/run.sh "$PGC"

say "install guard, upgrades from released versions, dump and restore"
pgrx-tests/lifecycle.sh "$PGC"

say "edge unit tests and integration tests (tests/)"
# Every test cluster's server log is kept here for the personal-data check after the suite.
export AURA_TEST_LOGS=$(mktemp -d "${TMPDIR:-/tmp}/aura-test-logs.XXXXXX")
trap 'rm -rf "$pgdata" "$AURA_TEST_LOGS"' EXIT
AURA_TEST_PG_CONFIG=$PGC cargo test -p edge -p aura-tests

say "the HTTP integration suite again, the edge connected through PgBouncer (transaction mode)"
# Not here: tests of the direct connection itself (TLS, outage, cancel of abandoned requests:
# PgBouncer 1.18 drops tokio-postgres's cancel requests, see README), and crm_plans (no edge).
AURA_TEST_VIA_PGBOUNCER=1 AURA_TEST_PG_CONFIG=$PGC cargo test -p aura-tests \
    --test isolation --test http_errors --test auth --test revocation --test supabase_js \
    --test pooling --test fairness --test pipelining --test edges --test import

say "no personal data in the server logs of the whole run (NFR-S9)"
scripts/no-pii-in-logs.sh "$AURA_TEST_LOGS"

say "make bench in its tiny mode (every scenario runs; no figure is judged)"
AURA_TEST_PG_CONFIG=$PGC scripts/bench.sh --tiny

say "the restore drill in its tiny mode (write, back up, write, restore to a time, check)"
AURA_TEST_PG_CONFIG=$PGC scripts/restore-drill.sh --tiny

say "Dockerfile.postgres build steps"
scripts/docker-build-steps.sh --check

say "all tests passed"
# One closing line for every runner above: cargo's "test result" lines and pg_regress's.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     /All [0-9]+ tests passed/ { for (i = 1; i <= NF; i++) if ($i ~ /^[0-9]+$/) { p += $i; break } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
