# pgcoord developer commands. `make test` is what CI runs (.ci/run).
STATICCHECK_VERSION := v0.8.2
GO ?= go

.PHONY: test vet staticcheck unit demo demo-dashboard bench db-up db-down

test: vet staticcheck unit

vet:
	$(GO) vet ./...

staticcheck:
	$(GO) run honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION) ./...

unit:
	$(GO) test -race -count=1 -timeout 20m ./...

# Three instances acting out the cluster guide's four scenarios. Uses
# PGCOORD_DATABASE_URL when set, else a throwaway local PostgreSQL.
demo:
	@dsn="$$(.ci/ensure-postgres)" && PGCOORD_DATABASE_URL="$${PGCOORD_DATABASE_URL:-$$dsn}" $(GO) run ./cmd/pgcoord demo

# The same demo with the cluster dashboard open at http://127.0.0.1:8080/
# (it stays open after the demo until Ctrl-C).
demo-dashboard:
	@dsn="$$(.ci/ensure-postgres)" && PGCOORD_DATABASE_URL="$${PGCOORD_DATABASE_URL:-$$dsn}" $(GO) run ./cmd/pgcoord demo --dashboard 127.0.0.1:8080

# Side-by-side ratios against the raw primitives, then against Redis when a
# redis-server binary or REDIS_URL is available (see BENCHMARKS.md).
bench:
	@dsn="$$(.ci/ensure-postgres)" && PGCOORD_DATABASE_URL="$${PGCOORD_DATABASE_URL:-$$dsn}" $(GO) run ./cmd/pgcoord bench all
	@if [ -n "$$REDIS_URL" ] || command -v redis-server >/dev/null 2>&1; then \
		cd bench/redis && $(GO) run . ; \
	else echo "bench: no Redis (apt-get install -y redis-server, or set REDIS_URL): skipping the Redis comparison"; fi
	@cd bench/peers && PGCOORD_DATABASE_URL="$${PGCOORD_DATABASE_URL:-$$(../../.ci/ensure-postgres)}" $(GO) run .

# A PostgreSQL for local development, when a Docker engine answers.
db-up:
	@docker info >/dev/null 2>&1 || { echo "no Docker engine answers: install PostgreSQL with 'apt-get install -y postgresql' (pgcoord starts a throwaway server from its binaries) or set PGCOORD_DATABASE_URL"; exit 1; }
	docker compose up -d --wait postgres
	@echo "export PGCOORD_DATABASE_URL=postgres://pgcoord:pgcoord@127.0.0.1:5432/pgcoord?sslmode=disable"

db-down:
	docker compose down
