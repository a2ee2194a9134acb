# Sourced by the scripts behind `make run` and `make test`: paths shared by both.
# shellcheck shell=bash
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
AURA_WORK=$CARGO_TARGET_DIR/aura
# pgrx's own configuration (which pg_config builds against) stays inside the project.
export PGRX_HOME=${PGRX_HOME:-$AURA_WORK/pgrx-home}
unset RUST_BACKTRACE RUST_LIB_BACKTRACE

say() { printf '\033[1m==> %s\033[0m\n' "$*"; }

# Where the test and benchmark PostgreSQL trees go. As root, clusters run as AURA_PG_USER
# (initdb refuses root), which must be able to reach the tree's binaries: under a private
# directory (a checkout in /root, or in a `mktemp -d`) it cannot, so the trees go to a
# directory of their own in the temp dir, named after this checkout. Prints the directory.
pg_trees_dir() {
    local dir=$AURA_WORK
    mkdir -p "$dir"
    if [ "$(id -u)" -eq 0 ] && ! runuser -u "${AURA_PG_USER:-postgres}" -- test -x "$dir" 2>/dev/null; then
        dir=${TMPDIR:-/tmp}/aura-pg-$(printf %s "$ROOT" | sha1sum | cut -c1-12)
        mkdir -p "$dir"
        chmod 755 "$dir"
    fi
    echo "$dir"
}

# A private copy of the system PostgreSQL tree under DIR, pgrx configured against it.
# Prints its pg_config.
pg_tree() {
    local pgc
    pgc=$("$ROOT/scripts/pgcluster" tree "$1")
    if ! grep -qs "pg15 = \"$pgc\"" "$PGRX_HOME/config.toml"; then
        mkdir -p "$PGRX_HOME"
        printf '[configs]\npg15 = "%s"\n' "$pgc" >"$PGRX_HOME/config.toml"
    fi
    echo "$pgc"
}
