# The profile service. `make run` starts a demo; `make test` is what CI runs.
CARGO ?= cargo
BIN := target/release/profile-api

.PHONY: run build test lint fmt fmt-check bench clean

## run: build (release) and start the service in demo mode on 127.0.0.1:8080
run:
	$(CARGO) build --release -p profile-api
	$(BIN) serve --demo

## build: release build of the binary
build:
	$(CARGO) build --release -p profile-api

## test: every test of the workspace (unit, contract, adapter, end-to-end)
test:
	$(CARGO) test --workspace

## lint: formatting and clippy with warnings denied
lint: fmt-check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

fmt-check:
	$(CARGO) fmt --all -- --check

## bench: load benchmarks into BENCHMARKS.md (release build, loopback only)
bench:
	bash bench/run.sh

clean:
	$(CARGO) clean
	rm -rf data bench-out
