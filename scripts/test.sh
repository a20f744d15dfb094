#!/usr/bin/env bash
# `npm test`: installs what a fresh clone needs, builds, lints, type-checks the tests, runs vitest
# (and, for a whole run, the unit and migration tests again on Node 22 and 24).
# Extra arguments go to vitest (e.g. `npm test -- test/unit`).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

step() { printf '\n== %s\n' "$*"; }

# npm writes node_modules/.package-lock.json on every install: older than the lock = stale.
if [[ ! -f node_modules/.package-lock.json || package-lock.json -nt node_modules/.package-lock.json ]]; then
  step "npm install (from the lock file)"
  # Not `npm ci`: npm 11 refuses vite's Windows-only optional dependency as "missing from the lock".
  npm install --no-audit --no-fund
fi

step "provision"
if [[ $(id -u) -eq 0 ]]; then
  scripts/provision.sh
  scripts/provision-docker.sh # the engine for test/containers
else
  sudo -n scripts/provision.sh
  sudo -n scripts/provision-docker.sh
fi

step "build"
npm run build

step "lint"
npx eslint .

step "typecheck tests"
npx tsc -p tsconfig.test.json

step "vitest"
npx vitest run "$@"

# A whole run (no vitest arguments) also covers the other Node majors ssi supports.
if [[ $# -eq 0 ]]; then
  step "other Node majors"
  scripts/test-node-majors.sh
fi
