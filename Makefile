# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
# GPU users pick their torch / DALI builds, e.g.
#   make test TORCH_SPEC="torch==2.11.0 --index-url https://download.pytorch.org/whl/cu130"
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
DALI_SPEC ?= nvidia-dali-cuda130==2.4.0
PIP_SPEC ?= pip==26.3
BIN := $(VENV)/bin
# Machines of this project keep a CPU torch wheel on disk; use it when it is there.
PIP_FIND := $(if $(wildcard /opt/wheels),--find-links /opt/wheels,)
SPECS := $(TORCH_SPEC) | $(DALI_SPEC) | $(PIP_SPEC) | $(shell cat requirements.txt | sha256sum | cut -c1-16)
STAMP := $(VENV)/.fdperf-installed
CMAKE_BUILD := build/cmake
DEMO_ARGS ?=

.PHONY: venv build cbuild ctest lint format pytest test demo bench clean

# Reinstall only when a pin changed: the stamp holds the specs it was made with.
venv:
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@if [ "$$(cat $(STAMP) 2>/dev/null)" != "$(SPECS)" ]; then \
	  set -e; \
	  $(BIN)/python -m pip install -q --disable-pip-version-check "$(PIP_SPEC)"; \
	  $(BIN)/python -m pip install -q $(PIP_FIND) $(TORCH_SPEC); \
	  $(BIN)/python -m pip install -q $(PIP_FIND) $(DALI_SPEC) -r requirements.txt; \
	  echo "$(SPECS)" > $(STAMP); \
	else echo "venv up to date ($(VENV))"; fi

# fdperf as an editable package with fdperf._C built in place. Nothing runs when no source, build
# file or pin changed (the stamp); otherwise objects kept in build/ext let ninja recompile only
# what changed.
CSRC := $(shell find csrc -name '*.cpp' -o -name '*.h' -o -name '*.cu')
BUILT := build/.fdperf-built
build: venv
	@if ! ls fdperf/_C*.so >/dev/null 2>&1; then rm -f $(BUILT); fi
	@$(MAKE) --no-print-directory $(BUILT)

$(BUILT): $(CSRC) setup.py pyproject.toml $(STAMP)
	$(BIN)/python -m pip install -q --disable-pip-version-check --no-build-isolation --no-deps -e .
	@mkdir -p build && touch $@

# The same csrc/ built against libtorch into a C++ test program run by CTest.
cbuild: venv
	cmake -S . -B $(CMAKE_BUILD) -G Ninja -DCMAKE_BUILD_TYPE=Release \
	  -DCMAKE_PREFIX_PATH="$$($(BIN)/python -c 'import torch.utils; print(torch.utils.cmake_prefix_path)')" >/dev/null
	cmake --build $(CMAKE_BUILD)

ctest: cbuild
	ctest --test-dir $(CMAKE_BUILD) --output-on-failure

# Style: ruff (lint + format) for Python, clang-format for csrc/ (both pinned in requirements.txt).
lint: venv
	$(BIN)/ruff check fdperf tests benchmarks setup.py
	$(BIN)/ruff format --check fdperf tests benchmarks setup.py
	$(BIN)/clang-format --dry-run -Werror $$(find csrc -name '*.cpp' -o -name '*.h' -o -name '*.cu' | sort)

format: venv
	$(BIN)/ruff check --fix fdperf tests benchmarks setup.py
	$(BIN)/ruff format fdperf tests benchmarks setup.py
	$(BIN)/clang-format -i $$(find csrc -name '*.cpp' -o -name '*.h' -o -name '*.cu' | sort)

pytest: build
	$(BIN)/python -m pytest tests -q

test: lint ctest pytest

demo: build
	$(BIN)/python -m fdperf.demo $(DEMO_ARGS)

bench: build
	$(BIN)/python -m pytest benchmarks --benchmark-only -q

clean:
	rm -rf build $(VENV) fdperf/_C*.so fdperf/_build_info.py *.egg-info
