# Fleet Monitor — one command to run the demo, one to run the tests.
#   make run    install the app and run it on the embedded demo database (http://127.0.0.1:8050)
#   make test   install everything the tests need (incl. Chromium) and run them
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: run test install install-test browser clean-data

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip uv

$(VENV)/.app-installed: requirements.txt | $(PY)
	$(PY) -m uv pip install -q -p $(PY) -r requirements.txt || $(PY) -m pip install -q -r requirements.txt
	touch $@

$(VENV)/.test-installed: requirements.txt requirements-dev.txt | $(PY)
	$(PY) -m uv pip install -q -p $(PY) -r requirements-dev.txt || $(PY) -m pip install -q -r requirements-dev.txt
	touch $@

install: $(VENV)/.app-installed

install-test: $(VENV)/.test-installed browser

# Debian's Chromium and its driver, for the browser tests (needs root or sudo).
browser:
	@if ! command -v chromedriver >/dev/null || ! command -v chromium >/dev/null; then \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq chromium chromium-driver; \
	fi

run: install
	$(PY) app.py

test: install-test
	$(PY) -m pytest $(PYTEST_ARGS)

# Forget the embedded demo database (it is rebuilt on the next start).
clean-data:
	rm -rf .pgdata
