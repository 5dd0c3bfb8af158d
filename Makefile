# Two commands a new user needs: `make demo` and `make test`. Each sets itself up first.
# Needs only Python 3.11, pip and make: uv (from PyPI) installs the locked environment.
PYTHON ?= python3.11
TOOLS  := .tools
UV     := $(TOOLS)/bin/uv
VENV   := .venv
export UV_PROJECT_ENVIRONMENT := $(VENV)
export GX_ANALYTICS_ENABLED := false
export DAGSTER_HOME ?= $(CURDIR)/var/dagster

.PHONY: setup demo test lint ui clean

$(UV):
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install --quiet uv==0.13.8

# --compile-bytecode: every import is then read from .pyc, even where the environment says
# not to write bytecode (PYTHONDONTWRITEBYTECODE); compiling on import cost 8-15 s a run.
$(VENV)/.synced: $(UV) pyproject.toml uv.lock Makefile
	$(UV) sync --frozen --compile-bytecode --python $(PYTHON)
	touch $@

setup: $(VENV)/.synced $(DAGSTER_HOME)/dagster.yaml

$(DAGSTER_HOME)/dagster.yaml: config/dagster.yaml
	mkdir -p $(DAGSTER_HOME)
	cp config/dagster.yaml $@

demo: setup
	$(VENV)/bin/dpf-eval demo

test: setup
	$(VENV)/bin/pytest

lint: setup
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

# The Dagster UI on localhost only, showing the demo study.
ui: setup
	DPF_DROP=var/demo/drop DPF_OUT=var/demo/out $(VENV)/bin/dagster dev -m pipelines.definitions -h 127.0.0.1 -p 3000

clean:
	rm -rf var $(VENV) $(TOOLS)
