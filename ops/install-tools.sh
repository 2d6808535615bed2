#!/usr/bin/env bash
# Tools the tests need from the system, installed with apt when missing (idempotent).
# Run by .ci/run and `make test`; each line: ensure <command> <Debian package>.
set -euo pipefail

ensure() {
  local command=$1 package=$2
  if command -v "$command" >/dev/null 2>&1; then
    return 0
  fi
  if [ "$(id -u)" -ne 0 ]; then
    echo "install-tools: $command is missing; install the Debian package $package (needs root)" >&2
    return 1
  fi
  echo "install-tools: installing $package (for $command)"
  if [ -z "${_apt_updated:-}" ]; then
    apt-get update -qq
    _apt_updated=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$package" >/dev/null
}

# Headless Chromium for the browser tests of the ops console and /docs (driven by Playwright).
ensure chromium chromium
