# Two commands a new user needs: `make demo` and `make test`. Each sets itself up first.
# Needs only Python 3.11, pip and make: uv (from PyPI) installs the locked environment.
PYTHON ?= python3.11
TOOLS  := .tools
UV     := $(TOOLS)/bin/uv
VENV   := .venv
export UV_PROJECT_ENVIRONMENT := $(VENV)
export GX_ANALYTICS_ENABLED := false

# The study `make ui` shows: the demo's unless DPF_CONFIG, DPF_DROP and DPF_OUT name another.
DPF_CONFIG ?= config/pilot.yaml
DPF_DROP   ?= var/demo/drop
DPF_OUT    ?= var/demo/out
# Each study keeps its own Dagster instance beside its outputs (OUT/dagster, as `dpf-eval run`
# does), so one study's runs and FORCE|DATE partitions never mix with another's. A DAGSTER_HOME
# set by the operator (a shared PostgreSQL installation) is used as it is.
STUDY_HOME := $(abspath $(DPF_OUT))/dagster
UI_HOME    := $(or $(DAGSTER_HOME),$(STUDY_HOME))

.PHONY: setup demo test lint ui clean

$(UV):
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install --quiet uv==0.13.8

# --compile-bytecode: every import is then read from .pyc, even where the environment says
# not to write bytecode (PYTHONDONTWRITEBYTECODE); compiling on import cost 8-15 s a run.
$(VENV)/.synced: $(UV) pyproject.toml uv.lock Makefile
	$(UV) sync --frozen --compile-bytecode --python $(PYTHON)
	touch $@

setup: $(VENV)/.synced

# The study's own instance follows config/dagster.yaml (owner-only, like the outputs).
$(STUDY_HOME)/dagster.yaml: config/dagster.yaml
	umask 077 && mkdir -p "$(@D)" && cp config/dagster.yaml "$@"

demo: setup
	$(VENV)/bin/dpf-eval demo

test: setup
	$(VENV)/bin/pytest

lint: setup
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

# The Dagster UI (webserver and daemon) on localhost only, showing the study of DPF_CONFIG,
# DPF_DROP and DPF_OUT (the demo's by default, so `make demo` and `make ui` share one instance).
# `dg dev` loads the code location named in pyproject.toml ([tool.dg]).
ui: setup $(if $(DAGSTER_HOME),,$(STUDY_HOME)/dagster.yaml)
	DAGSTER_HOME="$(UI_HOME)" DPF_CONFIG="$(abspath $(DPF_CONFIG))" \
	DPF_DROP="$(abspath $(DPF_DROP))" DPF_OUT="$(abspath $(DPF_OUT))" \
	$(VENV)/bin/dg dev -h 127.0.0.1 -p 3000

clean:
	rm -rf var $(VENV) $(TOOLS)
