# The two set-up commands of the README (what they install: docs/install.md):
#   make run    installs into ./.venv (torch CPU build first), trains + evaluates the grid on the
#               built-in defaults, then judges it against prereg.toml
#   make test   installs the same way, checks the layers and lint, then runs the whole test suite
#               (what .ci/run runs)
#
# Everything goes into a virtual environment of the project's own (./.venv), so a system Python
# marked externally managed (PEP 668, Debian/Ubuntu) is never touched. Variables:
#   PYTHON=python3.12          the interpreter that makes the venv (3.11 or newer)
#   VENV=/path/to/venv         another venv (made if missing); VENV= (empty) installs into PYTHON itself
#   TORCH_INDEX_URL=...        where the CPU build of torch comes from (default: PyTorch's CPU
#                              wheel index, asked for torch alone); TORCH_INDEX_URL= (empty) uses
#                              pip's own configuration only
#   EXTRAS=hf                  package extras for `make run` (none by default: the core install
#                              stays light); `make test` installs test,hf,ray (the tests exercise
#                              transformers, PEFT and Ray objects for real)
PYTHON ?= python3
VENV ?= .venv
TORCH_VERSION ?= 2.13.0
TORCH_INDEX_URL ?= https://download.pytorch.org/whl/cpu
EXTRAS ?=

ifeq ($(strip $(VENV)),)
PY := $(PYTHON)
else
PY := $(VENV)/bin/python
endif

.PHONY: setup run test lint

$(if $(strip $(VENV)),$(VENV)/bin/python):
	$(PYTHON) -m venv $(VENV) || { echo "error: \`$(PYTHON) -m venv\` failed: install the venv module (Debian/Ubuntu: apt-get install python3-venv) or pass PYTHON=/path/to/python3.11+"; exit 2; }

# torch first, and alone (--no-deps): a plain `torch` requirement on a machine without torch pulls
# several GB of CUDA packages from PyPI. PyTorch's CPU index serves `2.13.0+cpu`, which `==2.13.0`
# matches; torch's own small dependencies then come from PyPI with the package's in the next line.
TORCH_FROM := $(if $(strip $(TORCH_INDEX_URL)),--index-url $(TORCH_INDEX_URL))
setup: $(if $(strip $(VENV)),$(VENV)/bin/python)
	@$(PY) -c "import torch" 2>/dev/null && echo "torch already installed: $$($(PY) -c 'import torch; print(torch.__version__)') (kept)" \
		|| { echo "$(PY) -m pip install --no-deps --retries 1 torch==$(TORCH_VERSION) $(TORCH_FROM)"; \
		     $(PY) -m pip install -q --no-deps --retries 1 "torch==$(TORCH_VERSION)" $(TORCH_FROM); }
	$(PY) -m pip install -q -e '.$(if $(strip $(EXTRAS)),[$(EXTRAS)])'

run: setup
	$(PY) -m runners.grid --seeds 5 --fixtures 3
	$(PY) -m validation.verdict

lint: EXTRAS = test
lint: setup
	$(PY) -c "from importlinter.cli import lint_imports_command; lint_imports_command()" --no-cache
	$(PY) -m tests.support.import_cycles
	$(PY) -m tests.support.module_sizes
	$(PY) -m ruff check .

# pytest exits 5 when it collects no test: that must fail, and it does, since make stops on
# any non-zero exit code.
test: EXTRAS = test,hf,ray
test: setup lint
	$(PY) -m pytest
