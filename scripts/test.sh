#!/usr/bin/env bash
# The whole test suite: quality gates, Python tests (real models and real servers, started once
# per run by the fixtures in tests/support/), the web app's unit tests and its browser test.
# Run through `make test`, which does the set-up first.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
BIN="${AVATAR_VENV:-$ROOT/.venv}/bin"
export PATH="$BIN:$PATH"
status=0
section() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }

section "ruff"
ruff check backend services tests conftest.py || status=1
ruff format --check backend services tests conftest.py || status=1

section "mypy --strict"
mypy backend/src services/common/src services/asr/src services/tts/src services/prosody/src || status=1
mypy backend/tests services/common/tests services/asr/tests services/tts/tests services/prosody/tests tests conftest.py || status=1

if [[ -f frontend/package.json ]]; then
  section "web app unit tests (vitest)"
  (cd frontend && npm test --silent) || status=1
fi

section "pytest"
mkdir -p test-artifacts
pytest "$@" || status=1

exit $status
