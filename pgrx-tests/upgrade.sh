#!/usr/bin/env bash
# Upgrades give what a fresh install gives. For every released version V kept in
# pgrx-tests/upgrade/ (its install script as it was released, frozen), in a throwaway
# cluster: install V, put rows in, `ALTER EXTENSION pg_crm UPDATE` to the current version
# with the upgrade scripts in sql/, and compare the whole schema with a fresh install of the
# current version (pg_dump --binary-upgrade lists the extension's member objects too). The
# rows must survive, and a plain pg_dump must carry them.
#
#   pgrx-tests/upgrade.sh PG_CONFIG     (pg_crm must be installed in that tree)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
pgc=${1:?usage: upgrade.sh PG_CONFIG}
bin=$(dirname "$pgc")
extdir=$("$pgc" --sharedir)/extension
current=$(sed -n "s/^default_version = '\(.*\)'/\1/p" "$extdir/pg_crm.control")
[ -n "$current" ] || { echo "upgrade.sh: no default_version in $extdir/pg_crm.control" >&2; exit 1; }

work=$(mktemp -d "${TMPDIR:-/tmp}/aura-upgrade.XXXXXX")
chmod 755 "$work"
port=$("$root/scripts/pgcluster" free-port)
cleanup() { "$root/scripts/pgcluster" stop "$pgc" "$work/data"; rm -rf "$work"; }
trap cleanup EXIT
"$root/scripts/pgcluster" init "$pgc" "$work/data"
"$root/scripts/pgcluster" start "$pgc" "$work/data" "$port"
psql() { "$bin/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$port" -U postgres "$@"; }
# The schema as pg_dump sees it, without what binary-upgrade mode pins per database (OIDs,
# transaction ids) and the dump's random \restrict key.
# The tables registered for pg_dump are named here, as their OIDs differ.
schema_of() {
    "$bin/pg_dump" -h 127.0.0.1 -p "$port" -U postgres --schema-only --binary-upgrade "$1" \
        | sed -E -e "s/relfrozenxid = '[0-9]+', relminmxid = '[0-9]+'/relfrozenxid = X, relminmxid = X/" \
                 -e "s/^WHERE oid = '[0-9]+';/WHERE oid = X;/" \
                 -e "s/(binary_upgrade_create_empty_extension\(.*)'\{[0-9,]*\}'/\1'{...}'/" \
        | grep -v -e 'binary_upgrade_set_next_' -e 'binary_upgrade_set_pg_class_oids' \
                  -e '^-- Dumped ' -e '^\\restrict ' -e '^\\unrestrict '
    psql -d "$1" -At -c "SELECT 'extconfig: ' || extconfig::regclass[]::text FROM pg_extension WHERE extname = 'pg_crm'"
}

psql -d postgres -c "CREATE DATABASE fresh"
psql -d fresh -c "CREATE EXTENSION pg_crm"
schema_of fresh >"$work/fresh.sql"

status=0
for frozen in "$here"/upgrade/pg_crm--*.sql; do
    old=$(basename "$frozen" .sql); old=${old#pg_crm--}
    [ "$old" != "$current" ] || continue
    cp "$frozen" "$extdir/"
    # A secondary control file restores what that version's pg_crm.control said.
    [ -f "${frozen%.sql}.control" ] && cp "${frozen%.sql}.control" "$extdir/"
    db="from_${old//./_}"
    psql -d postgres -c "CREATE DATABASE $db"
    psql -d "$db" -c "CREATE EXTENSION pg_crm VERSION '$old'"
    # Rows written by the old version, one of them with a logo URL 0.1.0 accepted and
    # 0.2.0 refuses (the upgrade clears it).
    psql -d "$db" >/dev/null <<'SQL'
SELECT crm_private.create_tenant('Acme', 'acme', 'ann@acme.test', 'Ann');
SELECT crm_private.add_member(id, 'rita@acme.test', 'rep') FROM core.tenants WHERE slug = 'acme';
UPDATE core.tenants SET logo_url = 'https://x.test/"><script>' WHERE slug = 'acme';
SQL
    psql -d "$db" -c "ALTER EXTENSION pg_crm UPDATE"
    got=$(psql -d "$db" -At -c "SELECT extversion FROM pg_extension WHERE extname = 'pg_crm'")
    if [ "$got" != "$current" ]; then
        echo "upgrade.sh: $old was updated to $got, not $current (is an upgrade script missing from sql/?)" >&2
        status=1; continue
    fi
    schema_of "$db" >"$work/$db.sql"
    if ! diff -u "$work/fresh.sql" "$work/$db.sql" >"$work/$db.diff"; then
        echo "upgrade.sh: $old upgraded to $current differs from a fresh $current install:" >&2
        cat "$work/$db.diff" >&2
        status=1; continue
    fi
    rows=$(psql -d "$db" -At -c "SELECT count(*) || ' ' || count(logo_url) FROM core.tenants" \
                              -c "SELECT count(*) FROM core.memberships" | tr '\n' ' ')
    if [ "$rows" != "1 0 2 " ]; then
        echo "upgrade.sh: rows after upgrading from $old: tenants, logos, members = $rows (want 1 0 2)" >&2
        status=1; continue
    fi
    if ! "$bin/pg_dump" -h 127.0.0.1 -p "$port" -U postgres --data-only "$db" | grep -q '^COPY core.memberships'; then
        echo "upgrade.sh: pg_dump of the upgraded database carries no rows of core.memberships" >&2
        status=1; continue
    fi
    echo "upgrade.sh: $old -> $current equals a fresh install; rows kept and dumped"
done
exit "$status"
