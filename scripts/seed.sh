#!/usr/bin/env bash
# `make seed`: the benchmark data set in the local database of `make run` (.data/, or
# DATABASE_URL): 1,000 tenants of skewed sizes, one of them ("seed-big") with 200,000
# contacts, 40,000 organizations, 100,000 deals and 400,000 activities, generated set-based
# by bench/seed.sql. Deterministic and idempotent (tenants that exist are skipped). Prints
# what it made and tokens for an admin, a manager and a rep of the big tenant and of a small
# one (scripts/dev-token). Starts the local cluster if it is not running, and stops it again.
#
# Sizes: SEED_TENANTS (1000), SEED_BIG_CONTACTS (200000), SEED_BIG_ORGS (40000),
# SEED_BIG_DEALS (100000), SEED_BIG_ACTIVITIES (400000), SEED_SMALL_CONTACTS (300).
set -euo pipefail
source "$(dirname "$0")/common.sh"
cd "$ROOT"

DATA=$ROOT/.data
PG_PORT=${AURA_PG_PORT:-54329}
was_running=
if [ -z "${DATABASE_URL:-}" ] && [ -f "$DATA/pg/postmaster.pid" ] \
    && pg_isready -q -h "$DATA/pg/run" -p "$PG_PORT" 2>/dev/null; then
    was_running=1
fi
"$ROOT/scripts/run.sh" --prepare
# shellcheck disable=SC1091
set -a; source "$DATA/keys.env"; set +a
stop_cluster() {
    if [ -z "${DATABASE_URL:-}" ] && [ -z "$was_running" ]; then
        say "stopping the local cluster"
        "$ROOT/scripts/pgcluster" stop "$(pg_tree "$DATA/pg15")" "$DATA/pg"
    fi
}
trap stop_cluster EXIT

say "seeding (bench/seed.sql): ${SEED_TENANTS:-1000} tenants; this takes a few minutes"
started=$(date +%s)
log=$(mktemp "${TMPDIR:-/tmp}/aura-seed.XXXXXX")
psql -X -q -v ON_ERROR_STOP=1 "$AURA_DATABASE_URL" \
    -v tenants="${SEED_TENANTS:-1000}" -v big_contacts="${SEED_BIG_CONTACTS:-200000}" \
    -v big_orgs="${SEED_BIG_ORGS:-40000}" -v big_deals="${SEED_BIG_DEALS:-100000}" \
    -v big_activities="${SEED_BIG_ACTIVITIES:-400000}" -v small_contacts="${SEED_SMALL_CONTACTS:-300}" \
    -f bench/seed.sql >"$log" 2>&1 || { cat "$log" >&2; rm -f "$log"; echo "seed: bench/seed.sql failed" >&2; exit 1; }
sed -n 's/^psql:[^ ]* NOTICE:  \(tenants\|records\)/  \1/p' "$log"
rm -f "$log"
say "seeded in $(( $(date +%s) - started )) s"

psql -X -q "$AURA_DATABASE_URL" <<'SQL'
\pset footer off
SELECT CASE WHEN t.slug = 'seed-big' THEN 'seed-big' ELSE 'the others' END AS tenants, count(*) AS n,
       sum(m.members) AS members, sum(c.n) AS contacts, sum(o.n) AS organizations, sum(d.n) AS deals, sum(a.n) AS activities
  FROM core.tenants t
  CROSS JOIN LATERAL (SELECT count(*) AS members FROM core.memberships x WHERE x.tenant_id = t.id) m
  CROSS JOIN LATERAL (SELECT count(*) AS n FROM crm.contacts x WHERE x.tenant_id = t.id) c
  CROSS JOIN LATERAL (SELECT count(*) AS n FROM crm.organizations x WHERE x.tenant_id = t.id) o
  CROSS JOIN LATERAL (SELECT count(*) AS n FROM crm.deals x WHERE x.tenant_id = t.id) d
  CROSS JOIN LATERAL (SELECT count(*) AS n FROM crm.activities x WHERE x.tenant_id = t.id) a
 WHERE t.slug LIKE 'seed-%'
 GROUP BY t.slug = 'seed-big', 1 ORDER BY 1;
SQL

echo
echo "Tokens (1 hour; sessions end on logout like any other), for make run at $AURA_URL:"
for slug in seed-big seed-0002; do
    for who in admin manager1 rep1; do
        printf '  %-9s %-22s %s\n' "$slug" "$who@$slug.example" "$("$ROOT/scripts/dev-token" "$who@$slug.example" "$slug")"
    done
done
