#!/usr/bin/env bash
# Check (and, where possible, install) what building and running Aura needs on Debian 12:
# PostgreSQL 15 with its server headers, clang for pgrx's bindings, pg_regress, python3,
# PgBouncer (the integration suite also runs through it), pgBackRest (backups, the restore
# drill), curl,
# sudo (pgrx's test runner uses it to run PostgreSQL as another user when we are root),
# cargo-pgrx 0.18.1, and Node.js 20+ with npm for the supabase-js tests (tests/js, whose
# packages `npm ci` installs from the npm registry). Nothing is downloaded from outside the
# package registries.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
PGRX_VERSION=0.18.1
NODE_MAJOR=20
PG_CONFIG=${PG_SYSTEM_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}
DEB_PACKAGES="postgresql-15 postgresql-server-dev-15 libclang-dev clang python3 sudo pgbouncer pgbackrest curl"

missing=()
[ -x "$PG_CONFIG" ] || missing+=(postgresql-15)
[ -f "$("$PG_CONFIG" --includedir-server 2>/dev/null)/postgres.h" ] 2>/dev/null || missing+=(postgresql-server-dev-15)
command -v clang >/dev/null || missing+=(clang)
ls /usr/lib/llvm-*/lib/libclang*.so* >/dev/null 2>&1 || missing+=(libclang-dev)
command -v python3 >/dev/null || missing+=(python3)
{ command -v pgbouncer >/dev/null || [ -x /usr/sbin/pgbouncer ]; } || missing+=(pgbouncer)
command -v curl >/dev/null || missing+=(curl)
command -v pgbackrest >/dev/null || missing+=(pgbackrest)
if [ "$(id -u)" -eq 0 ]; then command -v sudo >/dev/null || missing+=(sudo); fi
# Only when missing: a Node.js from elsewhere (NodeSource, nvm) brings its own npm, which
# Debian's npm package would conflict with.
node_packages=()
command -v node >/dev/null || node_packages+=(nodejs)
command -v npm >/dev/null || node_packages+=(npm)
missing+=(${node_packages[@]+"${node_packages[@]}"})

if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
        echo "prereqs: installing Debian packages: ${missing[*]}"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq $DEB_PACKAGES ${node_packages[@]+"${node_packages[@]}"} >/dev/null
    else
        echo "prereqs: missing Debian packages: ${missing[*]}" >&2
        echo "prereqs: install them with: sudo apt-get install $DEB_PACKAGES ${node_packages[*]-}" >&2
        exit 1
    fi
fi

command -v cargo >/dev/null || {
    echo "prereqs: cargo not found: install Rust (rustup) and make sure ~/.cargo/bin is on PATH" >&2
    exit 1
}
if ! cargo pgrx --version 2>/dev/null | grep -q " $PGRX_VERSION"; then
    echo "prereqs: installing cargo-pgrx $PGRX_VERSION (takes a few minutes, once)"
    cargo install cargo-pgrx --version "$PGRX_VERSION" --locked
fi

# The supabase-js tests: Node.js 20 or newer (Debian 12's own nodejs is 18: install 20+ from
# NodeSource or with nvm), and tests/js's packages, installed again when the lock file changes.
node_major=$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)
if [ "$node_major" -lt "$NODE_MAJOR" ]; then
    echo "prereqs: warning: Node.js $(node --version 2>/dev/null || echo '(unknown)') is older than $NODE_MAJOR;" \
         "the supabase-js tests (tests/js) need Node.js $NODE_MAJOR+ (from NodeSource or nvm)" >&2
fi
js=$ROOT/tests/js
if [ -f "$js/package-lock.json" ] && [ "$js/package-lock.json" -nt "$js/node_modules/.package-lock.json" ]; then
    echo "prereqs: installing the supabase-js test packages (npm ci in tests/js)"
    npm ci --prefix "$js" --no-audit --no-fund --silent || {
        echo "prereqs: npm ci in tests/js failed; run it without --silent to see why:" \
             "npm ci --prefix tests/js --no-audit --no-fund" >&2
        exit 1
    }
fi
