#!/usr/bin/env bash
# The README's two commands, from a fresh machine:
#   bash infra/dev.sh demo   install, start the local stack, run the metering job end to end
#   bash infra/dev.sh test   install, then lint, type-check and run the whole test suite
# Installs into .venv (re-installed when pyproject.toml changes); jars and broker
# data live in $METERFLOW_HOME (default ~/.cache/meterflow), outside the repo.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${METERFLOW_VENV:-$ROOT/.venv}

need() {
  command -v "$1" >/dev/null 2>&1 || { echo "meterflow: '$1' is required ($2)" >&2; exit 1; }
}

setup() {
  need python3 "Python 3.11"
  need java "OpenJDK 17 runs Kafka and the schema registry"
  need mvn "Maven fetches the Kafka and registry jars from Maven Central"
  [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
  local stamp="$VENV/.installed-$(sha256sum "$ROOT/pyproject.toml" | cut -c1-16)"
  if [ ! -f "$stamp" ]; then
    echo "meterflow: installing Python packages into $VENV"
    "$VENV/bin/pip" install -q --upgrade pip
    "$VENV/bin/pip" install -q -e "$ROOT[dev]"
    touch "$stamp"
  fi
}

debian_install() {
  local sudo=""
  [ "$(id -u)" = 0 ] || sudo=sudo
  $sudo apt-get update -qq
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

cmd=${1:-}
shift || true
case "$cmd" in
  demo)
    setup
    cd "$ROOT"
    exec "$VENV/bin/meterflow" demo "$@"
    ;;
  test)
    setup
    if ! command -v promtool >/dev/null 2>&1; then
      echo "meterflow: installing Debian's prometheus package for promtool (rule and config tests)"
      debian_install prometheus
    fi
    if [ ! -x /usr/bin/chromium ]; then
      echo "meterflow: installing Debian's chromium (the usage page test drives it headless)"
      debian_install chromium
    fi
    cd "$ROOT"
    "$VENV/bin/ruff" check .
    "$VENV/bin/mypy"
    exec "$VENV/bin/pytest" "$@"
    ;;
  *)
    echo "usage: bash infra/dev.sh demo|test [args]" >&2
    exit 2
    ;;
esac
