#!/usr/bin/env bash
# The tools the ops checks and tests need beside Python, from Debian packages, installed
# only when missing (idempotent, quiet). Used by `make test` (ops-check) and `.ci/run`.
# One line per tool: ensure <command> <debian package>.
set -euo pipefail

updated=""

ensure() {
  local command=$1 package=$2
  command -v "$command" >/dev/null 2>&1 && return 0
  if [ "$(id -u)" -ne 0 ]; then
    echo "ops/install-tools.sh: $command is missing; install the Debian package $package (as root)" >&2
    return 1
  fi
  echo "ops/install-tools.sh: installing $package (for $command)" >&2
  local log
  log=$(mktemp)
  if { [ -n "$updated" ] || apt-get update -qq; } >"$log" 2>&1 &&
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$package" >>"$log" 2>&1; then
    updated=1
    rm -f "$log"
  else
    cat "$log" >&2
    rm -f "$log"
    return 1
  fi
  command -v "$command" >/dev/null 2>&1 || { echo "ops/install-tools.sh: $package gave no $command" >&2; return 1; }
}

ensure promtool prometheus
