#!/usr/bin/env bash
# The figures behind the edge's hardening (see tests/src/bin/hardening_figures.rs): tenant
# B's latency while tenant A floods, and the edge's memory around 8,000 slow connections.
# Release builds, a throwaway cluster, the edge binary in its own process. Prints markdown.
set -euo pipefail
source "$(dirname "$0")/common.sh"
cd "$ROOT"
"$ROOT/scripts/prereqs.sh"
pgc=$(pg_tree "$(pg_trees_dir)/pg15-release")
say "building (release)"
(cd pg_crm && cargo pgrx install --release --pg-config "$pgc" >/dev/null)
cargo build --release -p edge --bin aura-edge -p aura-tests --bin hardening_figures
# 8,000 client sockets in this process, up to AURA_HTTP_MAX_CONNECTIONS in the edge.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
say "measuring"
AURA_TEST_PG_CONFIG=$pgc AURA_EDGE_BIN=$CARGO_TARGET_DIR/release/aura-edge \
    "$CARGO_TARGET_DIR/release/hardening_figures"
