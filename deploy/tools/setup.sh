# shellcheck shell=bash
# Sourced by deploy/check and deploy/render-k8s: makes the validation tools available, installing
# what is missing (quick no-op when everything is there).
#   bourse_tools_venv   Python venv with requirements.txt      -> sets TOOLS_BIN
#   bourse_tools_apt    promtool + a compose CLI from apt      -> sets PROMTOOL
# Honours BOURSE_TOOLS_DIR (default ~/.cache/bourse-tools).

BOURSE_TOOLS_DIR="${BOURSE_TOOLS_DIR:-$HOME/.cache/bourse-tools}"
_tools_here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

bourse_tools_venv() {
  local venv="$BOURSE_TOOLS_DIR/venv" req="$_tools_here/requirements.txt" stamp want
  stamp="$venv/.bourse-requirements"
  want="$(sha256sum "$req" | cut -d' ' -f1)"
  if [ ! -x "$venv/bin/python" ]; then
    echo "setup: creating $venv"
    mkdir -p "$BOURSE_TOOLS_DIR"
    python3 -m venv "$venv"
  fi
  if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    echo "setup: installing Python tools ($req)"
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$req"
    echo "$want" >"$stamp"
  fi
  TOOLS_BIN="$venv/bin"
  export TOOLS_BIN
}

_apt_install() {
  local sudo=""
  if [ "$(id -u)" != 0 ]; then
    if command -v sudo >/dev/null 2>&1; then sudo="sudo"; else
      echo "setup: need root (or sudo) to apt-get install $*" >&2
      return 1
    fi
  fi
  echo "setup: apt-get install $*"
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null 2>&1 || {
    $sudo apt-get update -qq >/dev/null
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
  }
}

bourse_tools_apt() {
  if ! command -v promtool >/dev/null 2>&1; then
    # Debian's prometheus package ships promtool.
    _apt_install prometheus
  fi
  PROMTOOL="$(command -v promtool)"
  export PROMTOOL
  if docker compose version >/dev/null 2>&1; then
    COMPOSE="docker compose"
  else
    command -v docker-compose >/dev/null 2>&1 || _apt_install docker-compose
    COMPOSE="docker-compose"
  fi
  export COMPOSE
}
