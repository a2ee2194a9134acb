# Aura CRM. `make run` starts everything locally; `make test` runs every test.
.PHONY: run test seed bench backup restore restore-drill build install prereqs clean-data

run:          ## build, start PostgreSQL (.data/) with pg_crm and the edge on 127.0.0.1:3000
	scripts/run.sh

test:         ## fmt, clippy, unit tests, #[pg_test]s, regression suite, integration tests
	scripts/test.sh

seed:         ## the benchmark data set in the local database (1,000 tenants, one with 200k contacts)
	scripts/seed.sh

bench:        ## the API through the edge beside pgbench (release; after make seed; BENCH_SECONDS per variant)
	scripts/bench.sh

backup:       ## a backup of the local cluster now (pgBackRest, .data/backups; TYPE=full|diff|incr, full by default)
	scripts/backup.sh now $${TYPE:-full}

restore:      ## restore the local cluster to TARGET="2026-11-24 12:00:00+00" or TARGET=latest (FORCE=1 stops a running one)
	scripts/backup.sh restore "$${TARGET:?set TARGET to a time such as 2026-11-24 12:00:00+00, or latest}" $$( [ "$${FORCE:-0}" = 1 ] && echo --force )

restore-drill: ## back up, write, restore to a time into a fresh cluster and check it (after make seed: the full-size figures)
	scripts/restore-drill.sh

build:        ## compile the workspace
	scripts/prereqs.sh && cargo build --workspace

install:      ## install pg_crm into the system PostgreSQL 15 (for DATABASE_URL setups)
	scripts/prereqs.sh && cd pg_crm && cargo pgrx install --release --pg-config $${PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config} $$( [ "$$(id -u)" -eq 0 ] || echo --sudo )

prereqs:      ## check or install what the build needs
	scripts/prereqs.sh

clean-data:   ## delete the local cluster, its backups, keys and mail under .data/ (asks first)
	@read -p "Delete .data/ (local database, its backups in .data/backups, keys and mail)? [y/N] " a && [ "$$a" = y ] && rm -rf .data
