# Scale Lab: `make run` to use it, `make test` to check it, `make lint` to tidy it.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.requirements.stamp
PORT ?= 8000
# Labs each worker process hosts; LAB_PROCESSES (unset: one per core) says how many processes.
LAB_SLOTS ?= 4
# honcho gives every process its own PORT, so the web port travels under another name.
export SCALELAB_PORT := $(PORT)
export LAB_SLOTS
# With REDIS_URL set, use that server and start only the web and worker processes.
PROCESSES := $(if $(REDIS_URL),web worker,)

.PHONY: run test lint setup

run: setup
	$(PY) manage.py migrate --noinput -v 0
	$(PY) manage.py lessons load
	@echo ""
	@echo "  Scale Lab: http://127.0.0.1:$(PORT)/   (Ctrl-C stops everything)"
	@echo ""
	exec $(VENV)/bin/honcho start -f Procfile $(PROCESSES)

test: setup
	$(PY) -m pytest

lint: setup
	$(VENV)/bin/ruff check .

setup: $(STAMP)

$(PY):
	$(PYTHON) -m venv $(VENV)

# Reinstall only when a requirements file changed since the last install.
$(STAMP): requirements.txt requirements-dev.txt | $(PY)
	$(PY) -m pip install --disable-pip-version-check -q -r requirements-dev.txt
	touch $@
