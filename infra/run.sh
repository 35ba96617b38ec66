#!/usr/bin/env bash
# One entry point for the README's commands on a fresh machine:
#   bash infra/run.sh demo        set everything up, run the end-to-end demo
#   bash infra/run.sh test        set everything up, run every test tier
#   bash infra/run.sh <metering args…>   any other `metering` subcommand
# Set-up is idempotent and quick when nothing changed: a virtualenv in .venv with the project
# installed (editable, with dev extras); Kafka/Flink jars are fetched by the stack on first start.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

PYTHON="${PYTHON:-python3}"
VENV="$ROOT/.venv"

need() { command -v "$1" >/dev/null 2>&1 || { echo "run.sh: '$1' is required: $2" >&2; exit 2; }; }
need "$PYTHON" "install Python 3.11+"
need java "install Java 17+ (Debian: apt-get install openjdk-17-jre-headless)"
need mvn "install Maven 3 (Debian: apt-get install maven); it fetches the pinned Kafka and connector jars"
"$PYTHON" - <<'PY' || { echo "run.sh: Python 3.11+ is required (found $("$PYTHON" --version 2>&1))" >&2; exit 2; }
import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)
PY

stamp="$VENV/.installed-$(sha256sum pyproject.toml | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  log="$ROOT/.metering/logs/install.log"
  mkdir -p "$(dirname "$log")"
  echo "run.sh: installing the project into $VENV (first run takes a few minutes; log: $log) …" >&2
  # pip and the build backend talk a lot (an editable install's notices among it): the log keeps
  # it, the terminal gets it only when the install fails.
  if ! { [ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"; } >"$log" 2>&1 \
    || ! "$VENV/bin/python" -m pip install --upgrade pip >>"$log" 2>&1 \
    || ! "$VENV/bin/python" -m pip install -e ".[dev]" >>"$log" 2>&1; then
    echo "run.sh: installing failed; the end of $log:" >&2
    tail -n 40 "$log" >&2
    exit 1
  fi
  rm -f "$VENV"/.installed-*
  touch "$stamp"
fi

cmd="${1:-demo}"
case "$cmd" in
  test)
    shift
    # Every tier: unit, flink (MiniCluster), integration (real broker, cluster, chDB), e2e.
    exec "$VENV/bin/pytest" -m "unit or flink or integration or e2e" "$@"
    ;;
  *)
    exec "$VENV/bin/metering" "$@"
    ;;
esac
