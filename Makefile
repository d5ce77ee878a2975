# Two commands on a fresh machine:
#   make run    install what is needed and serve the bridge on http://127.0.0.1:8000
#               (SQLite registry + offline engine unless .env or the environment say otherwise)
#   make test   install what is needed and run the test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The tests' own Node project: the openai Node SDK and the Node 22 binary it runs on.
NODE_TESTS := tests/node
# npm writes this file at the end of every install; its age tells whether the lock changed since.
NODE_INSTALLED := $(NODE_TESTS)/node_modules/.package-lock.json

.PHONY: run test install install-test install-node-sdk clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

install: $(BIN)/python
	$(BIN)/pip install --quiet -e .

install-test: $(BIN)/python install-node-sdk
	$(BIN)/pip install --quiet -e '.[test]'

install-node-sdk: $(NODE_INSTALLED)

# Without npm the Node SDK tests are skipped (and .ci/run refuses to run); with it, a failed
# install fails the target.
$(NODE_INSTALLED): $(NODE_TESTS)/package.json $(NODE_TESTS)/package-lock.json
	@if command -v npm >/dev/null 2>&1; then \
		npm ci --prefix $(NODE_TESTS) --loglevel=error >/dev/null && touch $@; \
	else \
		echo "npm not found: tests/test_node_sdk.py will be skipped" >&2; \
	fi

run: install
	$(BIN)/gunicorn -c gunicorn.conf.py wsgi:app

test: install-test
	$(BIN)/pytest $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) instance $(NODE_TESTS)/node_modules
