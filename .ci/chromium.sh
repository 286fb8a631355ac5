#!/usr/bin/env bash
# Print the path of a Chromium for the dashboard's browser tests (for LOCALABORT_TEST_CHROMIUM), installing
# Debian's chromium if it is missing; print nothing if none can be had (those tests then say they were skipped).
# Playwright (a test dependency, from PyPI) drives it: no browser download.
set -euo pipefail
if ! command -v chromium >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    (apt-get update -qq && apt-get install -y -qq chromium >/dev/null) || echo "chromium.sh: could not install chromium" >&2
fi
if command -v chromium >/dev/null; then
    echo "chromium.sh: $(chromium --version 2>/dev/null | head -1)" >&2
    command -v chromium
fi
