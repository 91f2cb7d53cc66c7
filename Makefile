# The two commands of the README:
#   make run    installs (torch CPU build first), trains + evaluates the grid on the built-in
#               defaults, then judges it against prereg.toml
#   make test   installs, then runs the whole test suite (what .ci/run runs)
PYTHON ?= python3
PIP := $(PYTHON) -m pip
TORCH_VERSION ?= 2.13.0

.PHONY: setup run test

setup:
	@$(PYTHON) -c "import torch, sys; sys.exit(0 if torch.__version__.split('+')[0] else 1)" 2>/dev/null \
		|| $(PIP) install "torch==$(TORCH_VERSION)"
	$(PIP) install -q -e '.[test]'

run: setup
	$(PYTHON) -m runners.grid --seeds 5 --fixtures 3
	$(PYTHON) -m validation.verdict

# pytest exits 5 when it collects no test: that must fail, and it does, since make stops on
# any non-zero exit code.
test: setup
	$(PYTHON) -m pytest
