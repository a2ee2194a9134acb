#!/usr/bin/env bash
# The SQL regression suite: what a DBA sees calling pg_crm's functions, and the RLS matrix
# by role. Starts its own throwaway cluster (temp dir, free port) from the given pg_config,
# which must have pg_crm installed, and runs every sql/*.sql through pg_regress against
# expected/*.out.
#
#   pgrx-tests/run.sh PG_CONFIG            run, print a diff on failure
#   pgrx-tests/run.sh PG_CONFIG --accept   run and overwrite expected/ with the results
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
pgc=${1:?usage: run.sh PG_CONFIG [--accept]}
accept=${2:-}

work=$(mktemp -d "${TMPDIR:-/tmp}/aura-regress.XXXXXX")
chmod 755 "$work"
port=$("$root/scripts/pgcluster" free-port)
cleanup() { "$root/scripts/pgcluster" stop "$pgc" "$work/data"; rm -rf "$work"; }
trap cleanup EXIT

"$root/scripts/pgcluster" init "$pgc" "$work/data"
"$root/scripts/pgcluster" start "$pgc" "$work/data" "$port"
"$(dirname "$pgc")/createdb" -h 127.0.0.1 -p "$port" -U postgres aura_regress

mkdir -p "$work/out"
[ "$(id -u)" -eq 0 ] && chown "${AURA_PG_USER:-postgres}" "$work/out"
tests=$(cd "$here/sql" && ls -- *.sql | sed 's/\.sql$//' | sort)
pg_regress=$("$pgc" --pkglibdir)/pgxs/src/test/regress/pg_regress
status=0
# shellcheck disable=SC2086
"$pg_regress" --use-existing --bindir="$(dirname "$pgc")" --host=127.0.0.1 --port="$port" \
    --user=postgres --dbname=aura_regress --inputdir="$here" --outputdir="$work/out" $tests || status=$?
if [ -n "$accept" ]; then
    cp "$work/out/results/"*.out "$here/expected/"
    echo "expected/ updated from this run: review it with git diff"
    exit 0
fi
if [ "$status" -ne 0 ] && [ -f "$work/out/regression.diffs" ]; then
    cat "$work/out/regression.diffs"
fi
exit "$status"
