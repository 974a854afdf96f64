# The profile service. `make run` starts a demo; `make test` is what CI runs.
CARGO ?= cargo
BIN := target/release/profile-api

.PHONY: redis-server-bin run build test lint openapi-lint fmt fmt-check fuzz bench soak clean deps test-deps

# The system packages: libpq for building, the PostgreSQL server for the tests
# (installed when missing and running as root; otherwise named in the error).
deps:
	@bash .ci/system-deps libpq-dev

test-deps:
	@bash .ci/system-deps libpq-dev postgresql

## run: build (release) and start the service in demo mode on 127.0.0.1:8080
run: deps
	$(CARGO) build --release -p profile-api
	$(BIN) serve --demo

## build: release build of the binary
build: deps
	$(CARGO) build --release -p profile-api

## test: every test of the workspace (unit, contract, adapter, end-to-end)
test: test-deps
	$(CARGO) test --workspace

# The shared-cache tests start throwaway servers from redis-server (installed when
# missing and running as root; otherwise named in the error).
test: redis-server-bin
redis-server-bin:
	@bash .ci/system-deps redis-server

## lint: formatting, clippy with warnings denied, and openapi.yaml under Spectral's
## OpenAPI ruleset (pinned @stoplight/spectral-cli, installed with npm under target/)
lint: deps fmt-check openapi-lint
	$(CARGO) clippy --workspace --all-targets -- -D warnings

openapi-lint:
	bash .ci/spectral

fmt:
	$(CARGO) fmt --all

fmt-check:
	$(CARGO) fmt --all -- --check

## fuzz: schemathesis (pinned, in a venv under target/) checks every operation of
## openapi.yaml against the real server (debug build, as `make test` leaves it)
fuzz:
	bash .ci/schemathesis

## bench: load benchmarks into BENCHMARKS.md (release build, loopback only; SQLite, then a
## throwaway PostgreSQL and redis-server from the system packages, installed when missing)
bench: deps
	@bash .ci/system-deps postgresql redis-server
	python3 bench/run.py

## soak: SOAK_SECONDS (default 300) of mixed load on a release build; fails on any error
## or RSS growth over 20 % after the first minute (loopback only; not part of CI)
soak:
	bash bench/soak.sh

clean:
	$(CARGO) clean
	rm -rf data bench-out
