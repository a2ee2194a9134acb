#!/usr/bin/env bash
# NFR-S9 over a whole test run: the PostgreSQL server logs of every integration-test cluster
# (collected by tests/src/lib.rs into AURA_TEST_LOGS when each cluster stops) must hold none
# of the test data's personal data. Every email the tests use is under a reserved top-level
# domain (.test, .example) and every phone number is a 555 number, so a pattern finds them
# all without a list. Prints each hit (file and line) and fails if there is one.
#
#   scripts/no-pii-in-logs.sh DIR
set -euo pipefail
dir=${1:?usage: no-pii-in-logs.sh DIR}
shopt -s nullglob
logs=("$dir"/*.log)
[ "${#logs[@]}" -gt 0 ] || { echo "no-pii-in-logs: no logs in $dir" >&2; exit 1; }
email='[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*\.(test|example)\b'
phone='\b(\+?1[ .-]?)?\(?555\)?[ .-]?[0-9]{3}[ .-]?[0-9]{4}\b'
if grep -HniE "$email|$phone" "${logs[@]}"; then
    echo "no-pii-in-logs: the lines above, from the servers of this test run, hold emails or phone numbers of the test data" >&2
    exit 1
fi
echo "no-pii-in-logs: ${#logs[@]} server logs of this run, $(cat "${logs[@]}" | wc -l) lines: no test email or phone number"
