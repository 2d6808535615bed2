#!/usr/bin/env bash
# System tools the tests need, installed with apt when missing (idempotent: a no-op when present).
# Run by .ci/run and `make test`. One line per tool:
#   ensure <command> <Debian package>     installs the package unless the command exists
#   ensure_package <Debian package>       for packages without a command (fonts, data)
set -euo pipefail

_apt_updated=""

_install() {
  local package=$1 why=$2
  if [ "$(id -u)" -ne 0 ]; then
    echo "install-tools: $why is missing; install the Debian package $package (needs root)" >&2
    return 1
  fi
  echo "install-tools: installing $package ($why)"
  if [ -z "$_apt_updated" ]; then
    apt-get update -qq
    _apt_updated=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$package" >/dev/null
}

ensure() {
  command -v "$1" >/dev/null 2>&1 || _install "$2" "command $1"
}

ensure_package() {
  dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed" \
    || _install "$1" "package $1"
}

# Headless Chromium for the browser tests of the ops console and /docs (driven by Playwright).
ensure chromium chromium
# A CJK font, so the console's screenshots show 中文 rather than empty boxes.
ensure_package fonts-wqy-microhei
# promtool, for `make ops-check` (the Prometheus alert rules and their unit tests).
ensure promtool prometheus
