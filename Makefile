# The two commands the README starts with are `make run` and `make test`; both set up first.
SHELL := /bin/bash
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: run test setup setup-test lint typecheck doctor bench clean protocol

run: setup
	$(BIN)/avatar up

test: setup-test
	scripts/test.sh

setup:
	scripts/setup.sh

setup-test:
	scripts/setup.sh --with-test-tools

lint:
	$(BIN)/ruff check backend services tests
	$(BIN)/ruff format --check backend services tests conftest.py

typecheck:
	$(BIN)/mypy backend/src services/common/src services/asr/src services/tts/src services/prosody/src

doctor:
	$(BIN)/avatar doctor

bench: setup
	$(BIN)/avatar bench all

# The web app's protocol types from the backend's models (docs/protocol.md).
protocol:
	$(BIN)/avatar protocol schema -o frontend/src/protocol/protocol.schema.json
	cd frontend && npm run --silent gen:protocol

clean:
	rm -rf var/ models/cache/ frontend/dist/
