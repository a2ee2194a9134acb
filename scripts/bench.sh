#!/usr/bin/env bash
# `make bench`: pg_crm built with --release into its own private PostgreSQL tree, then
# bench/gate.sh there (pgbench: the bare request transaction, the gate, a one-row read and
# password grants, side by side). BENCH_SECONDS per variant (default 10).
set -euo pipefail
source "$(dirname "$0")/common.sh"
cd "$ROOT"
"$ROOT/scripts/prereqs.sh"
pgc=$(pg_tree "$(pg_trees_dir)/pg15-bench")
say "installing pg_crm (release) into $(dirname "$(dirname "$pgc")")"
(cd pg_crm && cargo pgrx install --release --pg-config "$pgc" >/dev/null)
bench/gate.sh "$pgc" "${BENCH_SECONDS:-10}"
