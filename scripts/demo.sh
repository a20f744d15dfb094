#!/usr/bin/env bash
# `npm run demo`: the quick start's main job on a fresh clone. Installs what is missing, brings up
# the three-node local cluster (cluster-configs/local-3.yaml), and shows it working.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; }
ssi() { bin/ssi "$@"; }

if [[ ! -f node_modules/.package-lock.json || package-lock.json -nt node_modules/.package-lock.json ]]; then
  npm install --no-audit --no-fund  # not `npm ci`: see scripts/test.sh
fi
scripts/provision.sh >/dev/null
npm run --silent build

CONFIG=cluster-configs/local-3.yaml
step "ssi cluster up $CONFIG"
ssi cluster up "$CONFIG"
step "ssi nodes"
for _ in $(seq 1 50); do
  [[ $(ssi nodes --json | node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>console.log(JSON.parse(s).filter(n=>n.state==="alive").length))') == 3 ]] && break
  sleep 0.1
done
ssi nodes
step "ssi status"
ssi status
step "ssi run -- sh -c 'echo hello from \$(hostname), pid \$\$'"
ssi run -- sh -c 'echo hello from $(hostname), pid $$'
step "ssi run --detach --memory 256M -- sh -c 'for i in \$(seq 1 600); do echo tick \$i; sleep 1; done'"
VPID=$(ssi run --detach --memory 256M -- sh -c 'for i in $(seq 1 600); do echo tick $i; sleep 1; done')
echo "$VPID"
sleep 2
step "ssi ps"
ssi ps
NODE=$(ssi inspect --json "$VPID" | node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>console.log(JSON.parse(s).node))')
TARGET=$([[ $NODE == n2 ]] && echo n3 || echo n2)
step "ssi migrate $VPID $TARGET"
ssi migrate "$VPID" "$TARGET"
sleep 1
step "ssi ps --state running"
ssi ps --state running
step "ssi logs $VPID   # the output from before and after the move, same vpid"
ssi logs "$VPID"
printf '\nThe cluster keeps running. Stop it with: bin/ssi cluster down %s\n' "$CONFIG"
