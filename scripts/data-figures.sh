#!/usr/bin/env bash
# The figures of data in and out (issue 10) on the data set of `make seed`: the workspace
# export of `seed-big` (200,000 contacts and 1.1 million other rows) as NDJSON and as a zip
# of CSV files, with its throughput, its time to first byte and the edge's memory (idle,
# and its peak during the download); and the import of 100,000 contacts into a new
# workspace (dry run and real run). Release build of the edge, the local cluster of
# `make run`. Prints markdown.
#
# The import's workspace ("import-figures") is deleted again; the export leaves its audit
# entries in seed-big, as every export does.
set -euo pipefail
source "$(dirname "$0")/common.sh"
cd "$ROOT"

[ -z "${DATABASE_URL:-}" ] || { echo "data-figures: it measures the local cluster of make run; unset DATABASE_URL" >&2; exit 1; }
DATA=$ROOT/.data
port=${AURA_PG_PORT:-54329}
sock=$DATA/pg/run
rows=${IMPORT_ROWS:-100000}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/aura-figures.XXXXXX")
chmod 755 "$tmp"
edge_pid=
cluster=
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    [ -n "$edge_pid" ] && kill "$edge_pid" 2>/dev/null && wait "$edge_pid" 2>/dev/null
    if [ -n "$cluster" ]; then "$ROOT/scripts/pgcluster" stop "$pgc" "$cluster" >/dev/null || true; fi
    [ "$rc" -eq 0 ] || { [ -s "$tmp/edge.log" ] && tail -n 20 "$tmp/edge.log" >&2; }
    rm -rf "$tmp"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

pgc=$(pg_tree "$DATA/pg15")
if ! { [ -f "$DATA/pg/postmaster.pid" ] && "$(dirname "$pgc")/pg_isready" -q -U postgres -h "$sock" -p "$port"; }; then
    cluster=$DATA/pg # started here: stopped on exit
fi
AURA_PROFILE=release "$ROOT/scripts/run.sh" --prepare
# shellcheck disable=SC1091
set -a; source "$DATA/keys.env"; set +a
psql_su=("$(dirname "$pgc")/psql" -X -q -v ON_ERROR_STOP=1 -h "$sock" -p "$port" -U postgres -d aura)
admin_email=$("${psql_su[@]}" -At -c "
    SELECT u.email FROM core.memberships m JOIN core.tenants t ON t.id = m.tenant_id JOIN auth.users u ON u.id = m.user_id
     WHERE t.slug = 'seed-big' AND m.role = 'admin' AND m.status = 'active' ORDER BY u.email LIMIT 1")
[ -n "$admin_email" ] || { echo "data-figures: no seed-big workspace: run make seed first" >&2; exit 1; }

cargo build -q --release -p edge --bin aura-edge
listen=127.0.0.1:$("$ROOT/scripts/pgcluster" free-port)
AURA_LISTEN=$listen AURA_MAIL_DIR=$tmp/mail AURA_RATE_LIMIT=0 AURA_LOG=warn \
    "$CARGO_TARGET_DIR/release/aura-edge" >"$tmp/edge.log" 2>&1 &
edge_pid=$!
url=http://$listen
for _ in $(seq 100); do curl -fsS "$url/ready" >/dev/null 2>&1 && break; sleep 0.1; done

kib() { awk -v k="$1" '$1 == k":" { print $2 }' "/proc/$edge_pid/status"; }
nonce() { # TOKEN EMAIL: a fresh reauthentication code, from the email the edge wrote
    local before
    before=$(ls "$tmp/mail" 2>/dev/null | wc -l)
    curl -fsS -X POST -H "Authorization: Bearer $1" -H "apikey: $AURA_ANON_KEY" "$url/auth/v1/reauthenticate" >/dev/null
    for _ in $(seq 100); do
        [ "$(ls "$tmp/mail" 2>/dev/null | wc -l)" -gt "$before" ] && break
        sleep 0.1
    done
    grep -h -o 'Code: [0-9]*' "$(ls -t "$tmp"/mail/*.eml | head -n 1)" | head -n 1 | cut -d' ' -f2
}

token=$(AURA_DATABASE_URL="host=$sock port=$port user=postgres dbname=aura" "$ROOT/scripts/dev-token" "$admin_email" seed-big)
idle=$(kib VmRSS)
table="| measurement | figure |\n|---|---:|\n"
for format in json csv; do
    code=$(nonce "$token" "$admin_email")
    # The peak resident set since now (VmHWM), reset for this download.
    echo 5 >"/proc/$edge_pid/clear_refs" 2>/dev/null || true
    out=$(curl -sS -o "$tmp/export.$format" -w '%{http_code} %{size_download} %{time_starttransfer} %{time_total}' \
        -H "Authorization: Bearer $token" "$url/rest/v1/export?format=$format&nonce=$code")
    read -r status size first total <<<"$out"
    [ "$status" = 200 ] || { echo "data-figures: export ($format) answered $status" >&2; exit 1; }
    peak=$(kib VmHWM)
    if [ "$format" = json ]; then
        n=$(tail -n 1 "$tmp/export.json" | python3 -c 'import json, sys; print(sum(json.load(sys.stdin)["data"]["rows"].values()))')
        contacts=$(grep -c '^{"entity":"contacts"' "$tmp/export.json")
    else
        n=$(python3 -c 'import json, sys, zipfile; print(sum(json.loads(zipfile.ZipFile(sys.argv[1]).read("manifest.json"))["rows"].values()))' "$tmp/export.csv")
    fi
    rate=$(python3 -c "import sys; print(f'{int(sys.argv[1]) / float(sys.argv[2]):,.0f}')" "$n" "$total")
    mb=$(python3 -c "import sys; print(f'{int(sys.argv[1]) / 1e6:,.0f}')" "$size")
    table+="| export $format of seed-big: rows ($contacts contacts) | $n |\n"
    table+="| export $format: size | $mb MB |\n"
    table+="| export $format: first byte | $(python3 -c "print(f'{float(\"$first\") * 1000:.0f}')") ms |\n"
    table+="| export $format: total | $(python3 -c "print(f'{float(\"$total\"):.1f}')") s ($rate rows/s) |\n"
    table+="| export $format: edge memory, idle → peak | $((idle / 1024)) MB → $((peak / 1024)) MB |\n"
    rm -f "$tmp/export.$format"
done

# The import: a new workspace, 100,000 contacts in a CSV file.
"${psql_su[@]}" -o /dev/null <<'SQL'
SELECT crm_private.delete_tenant_now(id) FROM core.tenants WHERE slug = 'import-figures' AND status <> 'deleted';
SELECT crm_private.create_tenant('Import figures', 'import-figures', 'importer@import-figures.test');
SQL
python3 - "$rows" >"$tmp/contacts.csv" <<'PY'
import sys
n = int(sys.argv[1])
out = sys.stdout
out.write("first_name,last_name,email,phone,title\r\n")
for i in range(n):
    out.write(f"First{i},Last{i % 5000},person{i}@import-figures.test,+1 555 {i:07d},Buyer\r\n")
PY
itoken=$(AURA_DATABASE_URL="host=$sock port=$port user=postgres dbname=aura" "$ROOT/scripts/dev-token" importer@import-figures.test import-figures)
size=$(stat -c %s "$tmp/contacts.csv")
for query in "?dry_run=true" ""; do
    echo 5 >"/proc/$edge_pid/clear_refs" 2>/dev/null || true
    out=$(curl -sS -o "$tmp/report.json" -w '%{http_code} %{time_total}' -X POST -H "Authorization: Bearer $itoken" \
        -H 'Content-Type: text/csv' --data-binary @"$tmp/contacts.csv" "$url/rest/v1/import/contacts$query")
    read -r status total <<<"$out"
    [ "$status" = 200 ] || { echo "data-figures: import$query answered $status: $(head -c 500 "$tmp/report.json")" >&2; exit 1; }
    created=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["created"])' "$tmp/report.json")
    what=$([ -n "$query" ] && echo "import (dry run)" || echo "import")
    table+="| $what of $(printf "%'d" "$rows") contacts ($((size / 1000000)) MB), $(printf "%'d" "$created") to create | $(python3 -c "print(f'{float(\"$total\"):.1f}')") s |\n"
    table+="| $what: edge memory peak | $(( $(kib VmHWM) / 1024 )) MB |\n"
done
stored=$("${psql_su[@]}" -At -c "SELECT count(*) FROM crm.contacts c JOIN core.tenants t ON t.id = c.tenant_id WHERE t.slug = 'import-figures'")
[ "$stored" = "$rows" ] || { echo "data-figures: $stored contacts stored, $rows expected" >&2; exit 1; }
"${psql_su[@]}" -o /dev/null -c "SELECT crm_private.delete_tenant_now(id) FROM core.tenants WHERE slug = 'import-figures'"

commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
echo
echo "Data in and out on the make seed data set (commit $commit, $(date -u +%Y-%m-%dT%H:%M:%SZ), $(nproc) cores):"
echo
printf '%b' "$table"
