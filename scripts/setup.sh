#!/usr/bin/env bash
# Set up Veil on a fresh Debian/Ubuntu machine: system packages, a virtualenv, the package.
# Idempotent: re-running only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

# chromium: the browser tests drive Debian's build (never `playwright install`).
APT_PACKAGES=(bubblewrap swtpm swtpm-tools tpm2-tools libtss2-dev libsodium23 libseccomp2 pkg-config chromium)

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing system packages: ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv with $($PYTHON --version)"
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
echo "setup: installing veil and its dependencies into .venv"
.venv/bin/python -m pip install -q -e ".[dev,tpm,bench,postgres,lab,labdev]"

# The Veil JupyterLab sidebar ships prebuilt (src/veil/lab/labextensions, committed) so that
# nobody needs Node to use it; it is rebuilt here only when its sources changed (or the
# bundle is missing), with Node from apt, the npm registry and jupyter-builder.
EXT=lab
OUT=src/veil/lab/labextensions/veil-lab
sources_digest() {
  (cd "$EXT" && find package.json package-lock.json tsconfig.json src style -type f | LC_ALL=C sort \
    | xargs sha256sum | sha256sum | cut -d' ' -f1)
}
if [ "$(cat "$OUT/sources.sha256" 2>/dev/null)" != "$(sources_digest)" ]; then
  echo "setup: building the Veil JupyterLab extension (its sources changed)"
  if ! command -v npm >/dev/null; then
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq nodejs npm >/dev/null
  fi
  (cd "$EXT" && npm ci --no-audit --no-fund --loglevel=error && npx tsc \
     && PATH="$PWD/node_modules/.bin:$PATH" ../.venv/bin/jupyter-builder build .)
  sources_digest > "$OUT/sources.sha256"
fi
# The MPC engine of `veil psi measure` (SecretFlow SPU, Cheetah 2PC) needs numpy < 2 and
# jax <= 0.4.34, so it lives in its own environment; Veil starts it as a subprocess.
if [ ! -x .venv-mpc/bin/python ]; then
  echo "setup: creating .venv-mpc (SPU for veil psi measure)"
  "$PYTHON" -m venv .venv-mpc
fi
if ! .venv-mpc/bin/python -c "import spu" 2>/dev/null; then
  echo "setup: installing spu into .venv-mpc"
  .venv-mpc/bin/python -m pip install -q --upgrade pip
  .venv-mpc/bin/python -m pip install -q "spu==0.9.5" "numpy>=1.24,<2" "jax>=0.4.30,<=0.4.34"
fi
echo "setup: done. Try: .venv/bin/veil demo"
