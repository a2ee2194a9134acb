#!/usr/bin/env bash
# The extension's lifecycle outside the request path: it installs only into a schema it can
# trust, upgrades give what a fresh install gives, and a dump gives back what was dumped.
#
# CREATE EXTENSION refuses a crm_private that existed before unless it is a superuser's,
# writable by nobody else and empty (an empty one left by DROP EXTENSION is fine).
#
# For every released version V kept in pgrx-tests/upgrade/V/ (its install script and control
# file as released, frozen), in a throwaway cluster: install V (with V's control file, in
# public and in another schema, as 0.1.0 could be), put rows in, `ALTER EXTENSION pg_crm
# UPDATE` with the current build and the upgrade scripts in sql/, and compare the whole schema
# with a fresh install of the current version (pg_dump --binary-upgrade lists the extension's
# member objects too). The rows must survive. Then a plain pg_dump of such a database is
# restored into a new one with psql -v ON_ERROR_STOP=1 and must give back every row, stamps
# included.
#
#   pgrx-tests/lifecycle.sh PG_CONFIG     (pg_crm must be installed in that tree;
#                                          KEEP_WORK=1 keeps dumps and diffs in /tmp/upgrade-work.keep)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
pgc=${1:?usage: lifecycle.sh PG_CONFIG}
bin=$(dirname "$pgc")
extdir=$("$pgc" --sharedir)/extension
current=$(sed -n "s/^default_version = '\(.*\)'/\1/p" "$extdir/pg_crm.control")
[ -n "$current" ] || { echo "lifecycle.sh: no default_version in $extdir/pg_crm.control" >&2; exit 1; }

work=$(mktemp -d "${TMPDIR:-/tmp}/aura-upgrade.XXXXXX")
chmod 755 "$work"
cp "$extdir/pg_crm.control" "$work/current.control"
installed_scripts=()
port=$("$root/scripts/pgcluster" free-port)
cleanup() {
    cp "$work/current.control" "$extdir/pg_crm.control"
    for f in "${installed_scripts[@]}"; do rm -f "$f"; done
    "$root/scripts/pgcluster" stop "$pgc" "$work/data"
    [ -n "${KEEP_WORK:-}" ] && cp -r "$work" /tmp/upgrade-work.keep; rm -rf "$work"
}
trap cleanup EXIT
"$root/scripts/pgcluster" init "$pgc" "$work/data"
"$root/scripts/pgcluster" start "$pgc" "$work/data" "$port"
psql() { "$bin/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$port" -U postgres "$@"; }
# The schema as pg_dump sees it, without what binary-upgrade mode pins per database (OIDs,
# transaction ids) and the dump's random \restrict key; the tables registered for pg_dump
# are named here, as their OIDs differ.
schema_of() {
    "$bin/pg_dump" -h 127.0.0.1 -p "$port" -U postgres --schema-only --binary-upgrade "$1" \
        | sed -E -e "s/relfrozenxid = '[0-9]+', relminmxid = '[0-9]+'/relfrozenxid = X, relminmxid = X/" \
                 -e "s/^WHERE oid = '[0-9]+';/WHERE oid = X;/" \
                 -e "s/(binary_upgrade_create_empty_extension\(.*)'\{[0-9,]*\}'/\1'{...}'/" \
                 -e "s/ARRAY\['pg_trgm','btree_gin'\]/ARRAY['btree_gin','pg_trgm']/" \
        | grep -v -e 'binary_upgrade_set_next_' -e 'binary_upgrade_set_pg_class_oids' \
                  -e '^-- Dumped ' -e '^\\restrict ' -e '^\\unrestrict '
    # (The required extensions come in pg_depend's order, which says nothing.)
    # The registered tables with their dump filters (their order is only the order of
    # registration, which differs between a fresh install and an upgrade).
    psql -d "$1" -At -c "SELECT 'extconfig: ' || string_agg(c.t::regclass::text || coalesce(' ' || nullif(c.f, ''), ''), ', ' ORDER BY c.t::regclass::text)
                           FROM pg_extension e, unnest(e.extconfig, e.extcondition) AS c(t, f) WHERE e.extname = 'pg_crm'"
}
# Every row of the extension's tables and of auth.users, in a stable order.
rows_of() {
    psql -d "$1" -At -c "SELECT t::text FROM core.tenants t ORDER BY id" \
        -c "SELECT m::text FROM core.memberships m ORDER BY tenant_id, id" \
        -c "SELECT u::text FROM auth.users u ORDER BY id" \
        -c "SELECT s::text FROM auth.sessions s ORDER BY id" \
        -c "SELECT r::text FROM core.roles r ORDER BY key" \
        -c "SELECT p::text FROM core.role_permissions p ORDER BY role, permission" \
        -c "SELECT o.id, o.kind, o.recipient FROM core.email_outbox o ORDER BY id" \
        -c "SELECT s::text FROM crm_private.auth_settings s ORDER BY key" \
        -c "SELECT f::text FROM core.custom_fields f ORDER BY tenant_id, id" \
        -c "SELECT s::text FROM crm.pipeline_stages s ORDER BY tenant_id, key" \
        -c "SELECT o::text FROM crm.organizations o ORDER BY tenant_id, id" \
        -c "SELECT c::text FROM crm.contacts c ORDER BY tenant_id, id" \
        -c "SELECT d::text FROM crm.deals d ORDER BY tenant_id, id" \
        -c "SELECT h::text FROM crm.deal_stage_changes h ORDER BY tenant_id, id" \
        -c "SELECT a::text FROM crm.assignment_changes a ORDER BY tenant_id, id" \
        -c "SELECT a::text FROM crm.activities a ORDER BY tenant_id, id" \
        -c "SELECT tenant_id, assigned_to, stage, currency, open, deals, amount, weighted FROM crm.deal_totals WHERE deals <> 0 ORDER BY 1, 2, 3, 4, 5" \
        -c "SELECT e::text FROM core.audit_log e ORDER BY tenant_id, id" \
        -c "SELECT s::text FROM core.audit_sealed s ORDER BY tenant_id, entry_id" \
        -c "SELECT s::text FROM core.audit_seals s ORDER BY tenant_id, seq" \
        -c "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'core.audit_log'::regclass ORDER BY 1"
}
# Every tenant's audit chain verifies (after sealing what was not sealed yet, when asked).
audit_verified() {
    psql -d "$1" -At -c "${2:+SELECT crm_private.run_jobs();}" \
        -c "SELECT count(*) FILTER (WHERE NOT (crm_private.verify_audit_chain(id) ->> 'valid')::boolean) || ' broken of ' || count(*) FROM core.tenants" \
        | tail -n 1
}
# What a member of Globex sees through the API: the deals list and a contact search.
api_view() {
    psql -d "$1" -At <<'SQL'
BEGIN;
CREATE TEMP TABLE request ON COMMIT DROP AS
SELECT jsonb_build_object('sub', s.user_id, 'role', 'authenticated', 'session_id', s.id) AS claims, m.tenant_id
  FROM auth.sessions s JOIN core.memberships m ON m.user_id = s.user_id
 WHERE s.user_id = (SELECT id FROM auth.users WHERE email = 'gil@globex.test') LIMIT 1;
GRANT SELECT ON request TO authenticated;
SET LOCAL ROLE authenticated;
SELECT 'gate passed' FROM request, crm_private.begin_request(request.claims, request.tenant_id);
SELECT d ->> 'name', d ->> 'stage', d ->> 'lost_reason' FROM jsonb_array_elements(api.list_deals() -> 'data') d;
SELECT c ->> 'email' FROM jsonb_array_elements(api.search_contacts('petr') -> 'data') c;
SELECT count(*) FROM jsonb_array_elements(api.deal_stage_history((api.list_deals() #>> '{data,0,id}')::uuid) -> 'data');
COMMIT;
SQL
}

# The install guard.
psql -d postgres -c "CREATE DATABASE guard"
psql -d guard >/dev/null <<'SQL'
CREATE ROLE aura_squatter NOLOGIN;
CREATE SCHEMA crm_private AUTHORIZATION aura_squatter;
SQL
guard_refusal() { "$bin/psql" -X -q -h 127.0.0.1 -p "$port" -U postgres -d guard -c "CREATE EXTENSION pg_crm CASCADE" 2>&1 | grep -o 'cannot be trusted: .*' || true; }
squatted=$(guard_refusal)
psql -d guard -c "ALTER SCHEMA crm_private OWNER TO postgres" -c "GRANT CREATE ON SCHEMA crm_private TO aura_squatter"
writable=$(guard_refusal)
psql -d guard -c "REVOKE CREATE ON SCHEMA crm_private FROM aura_squatter" \
    -c "CREATE FUNCTION crm_private.planted() RETURNS int LANGUAGE sql AS 'SELECT 1'"
occupied=$(guard_refusal)
psql -d guard -c "DROP FUNCTION crm_private.planted()" -c "CREATE EXTENSION pg_crm CASCADE" \
    -c "DROP EXTENSION pg_crm" -c "CREATE EXTENSION pg_crm CASCADE" -c "DROP ROLE aura_squatter"
if [[ "$squatted" != *"owned by aura_squatter"* || "$writable" != *"other than its owner"* || "$occupied" != *"holds objects"* ]]; then
    echo "lifecycle.sh: the install guard let an untrusted crm_private through:" >&2
    printf '  owned by another role: %s\n  writable by another role: %s\n  not empty: %s\n' \
        "${squatted:-accepted}" "${writable:-accepted}" "${occupied:-accepted}" >&2
    exit 1
fi
echo "lifecycle.sh: CREATE EXTENSION refuses a crm_private it cannot trust, and reinstalls into its own"

# Every database also has a schema `extensions` (Supabase's home for extensions), so that a
# version installed there compares with a fresh install.
psql -d postgres -c "CREATE DATABASE fresh"
psql -d fresh -c "CREATE SCHEMA extensions" -c "CREATE EXTENSION pg_crm CASCADE"
schema_of fresh >"$work/fresh.sql"

status=0
upgraded=
for dir in "$here"/upgrade/*/; do
    old=$(basename "$dir")
    [ "$old" != "$current" ] || continue
    cp "$dir/pg_crm--$old.sql" "$extdir/"
    installed_scripts+=("$extdir/pg_crm--$old.sql")
    # Versions before 0.2.0 could be created in any schema; from 0.2.0 the control file
    # names crm_private.
    schemas="public extensions"
    grep -q '^schema = ' "$dir/pg_crm.control" && schemas=crm_private
    for schema in $schemas; do
        db="from_${old//./_}_in_$schema"
        psql -d postgres -c "CREATE DATABASE $db"
        psql -d "$db" -c "CREATE SCHEMA IF NOT EXISTS extensions"
        # As released: that version's control file.
        cp "$dir/pg_crm.control" "$extdir/pg_crm.control"
        # CASCADE: from 0.4.0 the control file requires pg_trgm and btree_gin.
        if [ "$schema" = crm_private ]; then
            psql -d "$db" -c "CREATE EXTENSION pg_crm VERSION '$old' CASCADE"
        else
            psql -d "$db" -c "CREATE EXTENSION pg_crm VERSION '$old' SCHEMA $schema CASCADE"
        fi
        cp "$work/current.control" "$extdir/pg_crm.control"
        # Rows written by the old version, one of them with a logo URL 0.1.0 accepted and
        # 0.2.0 refuses (the upgrade clears it).
        psql -d "$db" >/dev/null <<'SQL'
SELECT crm_private.create_tenant('Acme', 'acme', 'ann@acme.test', 'Ann');
SELECT crm_private.add_member(id, 'rita@acme.test', 'rep') FROM core.tenants WHERE slug = 'acme';
SQL
        # Deals an old version wrote (from 0.4.0 on): the upgrade to 0.6.0 counts them into
        # crm.deal_totals.
        psql -d "$db" -At >/dev/null <<'SQL'
DO $$
BEGIN
    IF to_regclass('crm.deals') IS NOT NULL THEN
        INSERT INTO crm.deals (tenant_id, name, amount, currency, stage, assigned_to)
        SELECT m.tenant_id, 'Old deal ' || i, 100 * i, 'EUR', CASE WHEN i % 2 = 0 THEN 'qualified' ELSE 'proposal' END, m.user_id
          FROM core.memberships m, generate_series(1, 3) i;
    END IF;
END
$$;
SQL
        if [ "$old" = 0.1.0 ]; then
            psql -d "$db" -c "UPDATE core.tenants SET logo_url = 'https://x.test/\"><script>' WHERE slug = 'acme'" >/dev/null
        fi
        # From 0.4.0 pg_crm requires pg_trgm and btree_gin, which an update does not create.
        psql -d "$db" -c "CREATE EXTENSION IF NOT EXISTS pg_trgm" -c "CREATE EXTENSION IF NOT EXISTS btree_gin" \
            -c "ALTER EXTENSION pg_crm UPDATE"
        got=$(psql -d "$db" -At -c "SELECT extversion FROM pg_extension WHERE extname = 'pg_crm'")
        if [ "$got" != "$current" ]; then
            echo "lifecycle.sh: $old in $schema was updated to $got, not $current (is an upgrade script missing from sql/?)" >&2
            status=1; continue
        fi
        schema_of "$db" >"$work/$db.sql"
        if ! diff -u "$work/fresh.sql" "$work/$db.sql" >"$work/$db.diff"; then
            echo "lifecycle.sh: $old (in $schema) upgraded to $current differs from a fresh $current install:" >&2
            cat "$work/$db.diff" >&2
            status=1; continue
        fi
        drift=$(psql -d "$db" -At -c "SELECT count(*) FROM (
            (SELECT tenant_id, assigned_to, stage, currency, open, deals, amount, weighted FROM crm.deal_totals
             EXCEPT SELECT tenant_id, assigned_to, stage, currency, closed_at IS NULL, count(*), sum(amount), sum(amount * probability / 100.0)
                      FROM crm.deals WHERE deleted_at IS NULL GROUP BY 1, 2, 3, 4, 5)
            UNION ALL
            (SELECT tenant_id, assigned_to, stage, currency, closed_at IS NULL, count(*), sum(amount), sum(amount * probability / 100.0)
               FROM crm.deals WHERE deleted_at IS NULL GROUP BY 1, 2, 3, 4, 5
             EXCEPT SELECT tenant_id, assigned_to, stage, currency, open, deals, amount, weighted FROM crm.deal_totals)) x")
        if [ "$drift" != 0 ]; then
            echo "lifecycle.sh: after upgrading from $old in $schema, $drift rows of crm.deal_totals differ from the deals' sums" >&2
            status=1; continue
        fi
        rows=$(psql -d "$db" -At -c "SELECT count(*) || ' ' || count(logo_url) FROM core.tenants" \
                                  -c "SELECT count(*) FROM core.memberships" | tr '\n' ' ')
        if [ "$rows" != "1 0 2 " ]; then
            echo "lifecycle.sh: rows after upgrading from $old in $schema: tenants, logos, members = $rows (want 1 0 2)" >&2
            status=1; continue
        fi
        echo "lifecycle.sh: $old (in $schema) -> $current equals a fresh install; rows kept"
        upgraded=$db
    done
done

# A plain dump and restore, with psql stopping at the first error.
if [ -n "$upgraded" ]; then
    psql -d "$upgraded" >/dev/null <<'SQL'
SELECT crm_private.create_tenant('Globex', 'globex', 'gil@globex.test', 'Gil', 'Europe/Berlin');
SELECT crm_private.create_session(id) FROM auth.users WHERE email = 'gil@globex.test';
-- A custom role (rows, no schema change) and a setting: dumped, unlike the built-in rows.
INSERT INTO core.roles (key, label) VALUES ('viewer', 'Viewer');
INSERT INTO core.role_permissions (role, permission) VALUES ('viewer', 'workspace.read');
INSERT INTO crm_private.auth_settings (key, value) VALUES ('password_min_length', '10');
SELECT crm_private.auth_queue_email(NULL, 'recovery', 'gil@globex.test', ARRAY['123456', 'abc'], NULL);
-- CRM rows (written as an operator, without a request: the stamps are the columns' defaults).
INSERT INTO core.custom_fields (tenant_id, entity, key, label, type)
SELECT id, 'contact', 'linkedin', 'LinkedIn', 'url' FROM core.tenants WHERE slug = 'globex';
INSERT INTO crm.organizations (tenant_id, name, website)
SELECT id, 'Initech', 'https://www.initech.test/' FROM core.tenants WHERE slug = 'globex';
INSERT INTO crm.organizations (tenant_id, name, parent_id)
SELECT o.tenant_id, 'Initech Labs', o.id FROM crm.organizations o WHERE o.name = 'Initech';
INSERT INTO crm.contacts (tenant_id, first_name, last_name, email, organization_id, assigned_to, custom_fields)
SELECT o.tenant_id, 'Peter', 'Gibbons', 'peter@initech.test', o.id, u.id, '{"linkedin": "https://linkedin.test/p"}'
  FROM crm.organizations o, auth.users u WHERE o.name = 'Initech' AND u.email = 'gil@globex.test';
INSERT INTO crm.deals (tenant_id, name, amount, currency, stage, contact_id, assigned_to)
SELECT c.tenant_id, 'TPS reports', 1000, 'EUR', 'qualified', c.id, c.assigned_to FROM crm.contacts c;
UPDATE crm.deals SET stage = 'lost', probability = NULL, lost_reason = 'budget' WHERE name = 'TPS reports';
INSERT INTO crm.activities (tenant_id, type, description, actor_id, contact_id, deal_id)
SELECT d.tenant_id, 'call', 'Called about the reports', d.assigned_to, d.contact_id, d.id FROM crm.deals d WHERE d.name = 'TPS reports';
-- The audit log's monthly partitions and seals, then an entry not sealed yet.
SELECT crm_private.run_jobs();
UPDATE core.tenants SET industry = 'Paper' WHERE slug = 'globex';
SQL
    "$bin/pg_dump" -h 127.0.0.1 -p "$port" -U postgres "$upgraded" >"$work/dump.sql"
    psql -d postgres -c "CREATE DATABASE restored"
    if ! psql -d restored -f "$work/dump.sql" >"$work/restore.log" 2>&1; then
        echo "lifecycle.sh: restoring a plain pg_dump failed:" >&2
        tail -n 20 "$work/restore.log" >&2
        status=1
    elif ! diff -u <(rows_of "$upgraded") <(rows_of restored) >"$work/rows.diff"; then
        echo "lifecycle.sh: the restored database does not hold the rows that were dumped:" >&2
        cat "$work/rows.diff" >&2
        status=1
    elif [ "$(audit_verified restored)" != "0 broken of 2" ] || [ "$(audit_verified restored seal)" != "0 broken of 2" ]; then
        echo "lifecycle.sh: the restored audit chains: $(audit_verified restored) (want 0 broken of 2)" >&2
        status=1
    elif [ "$(api_view restored)" != "$(printf 'gate passed\nTPS reports|lost|budget\npeter@initech.test\n1')" ]; then
        echo "lifecycle.sh: the API on the restored database answers:" >&2
        api_view restored >&2
        status=1
    elif ! diff -u <(schema_of "$upgraded" | grep -v binary_upgrade) <(schema_of restored | grep -v binary_upgrade) >"$work/restored.diff"; then
        echo "lifecycle.sh: the restored database's schema, policies or grants differ:" >&2
        cat "$work/restored.diff" >&2
        status=1
    else
        echo "lifecycle.sh: a plain pg_dump restores every row ($(rows_of restored | wc -l), stamps included), policy and grant; the API answers on it"
    fi
fi
exit "$status"
