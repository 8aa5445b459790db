# The two commands the README promises, and their parts.
#   make demo   set up and run the daemon on its built-in default (simulated bed)
#   make test   set up and run the whole test suite
.PHONY: demo test deps onnxruntime build lint

CARGO ?= cargo

deps:
	scripts/install-system-deps.sh

onnxruntime:
	scripts/fetch-onnxruntime.sh

build: onnxruntime
	$(CARGO) build --release --bin meit

test: deps onnxruntime
	$(CARGO) test --workspace --no-fail-fast

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

demo: deps build
	scripts/demo.sh
