#!/usr/bin/env bash
# Check (and, where possible, install) what building and running Aura needs on Debian 12:
# PostgreSQL 15 with its server headers, clang for pgrx's bindings, pg_regress, python3,
# sudo (pgrx's test runner uses it to run PostgreSQL as another user when we are root),
# and cargo-pgrx 0.18.1. Nothing is downloaded from outside the package registries.
set -euo pipefail

PGRX_VERSION=0.18.1
PG_CONFIG=${PG_SYSTEM_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}
DEB_PACKAGES="postgresql-15 postgresql-server-dev-15 libclang-dev clang python3 sudo"

missing=()
[ -x "$PG_CONFIG" ] || missing+=(postgresql-15)
[ -f "$("$PG_CONFIG" --includedir-server 2>/dev/null)/postgres.h" ] 2>/dev/null || missing+=(postgresql-server-dev-15)
command -v clang >/dev/null || missing+=(clang)
ls /usr/lib/llvm-*/lib/libclang*.so* >/dev/null 2>&1 || missing+=(libclang-dev)
command -v python3 >/dev/null || missing+=(python3)
if [ "$(id -u)" -eq 0 ]; then command -v sudo >/dev/null || missing+=(sudo); fi

if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
        echo "prereqs: installing Debian packages: ${missing[*]}"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq $DEB_PACKAGES >/dev/null
    else
        echo "prereqs: missing Debian packages: ${missing[*]}" >&2
        echo "prereqs: install them with: sudo apt-get install $DEB_PACKAGES" >&2
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
