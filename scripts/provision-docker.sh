#!/usr/bin/env bash
# Makes a Docker engine available for the container-host test suite (test/containers), as root on
# Debian 12. Idempotent and quick when the engine already answers.
#   - installs Debian's docker.io (dockerd 20.10 + containerd + runc) if dockerd is missing;
#   - starts dockerd in the background (log: /var/log/ssi-dockerd.log) if nothing answers on
#     /var/run/docker.sock; there is no systemd here, so no service manager is involved.
# The engine runs with --iptables=false --ip-forward=false: test containers live on an *internal*
# user-defined network and talk only to each other, so they need no NAT, and the host keeps its
# FORWARD policy (Docker's iptables mode sets it to DROP, which would block the bridged traffic of
# the network-namespace clusters) and does not start routing between interfaces.
set -Eeuo pipefail

readonly SOCK=/var/run/docker.sock
readonly LOG=/var/log/ssi-dockerd.log
readonly DOCKERD_FLAGS=(--iptables=false --ip-forward=false --ip-masq=false --host "unix://$SOCK")

log() { printf '%-14s %s\n' "$1:" "$2"; }
die() { printf 'provision-docker: %s\n' "$*" >&2; exit 1; }
trap 'printf "provision-docker: failed at line %s: %s\n" "$LINENO" "$BASH_COMMAND" >&2' ERR
[[ $(id -u) -eq 0 ]] || die "must run as root"

# The engine's API answers on the socket (no docker client needed for the check).
engine_up() {
  [[ -S $SOCK ]] && curl -fsS --max-time 2 --unix-socket "$SOCK" http://localhost/_ping >/dev/null 2>&1
}

install_engine() {
  if command -v dockerd >/dev/null 2>&1; then return; fi
  DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
  # policy-rc.d 101: the package must not start the engine itself (with its default iptables mode).
  local own_policy=0
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    own_policy=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends docker.io curl >/dev/null \
    || { [[ $own_policy -eq 1 ]] && rm -f /usr/sbin/policy-rc.d; die "apt-get install docker.io failed"; }
  if [[ $own_policy -eq 1 ]]; then rm -f /usr/sbin/policy-rc.d; fi
  log docker "installed docker.io $(dpkg-query -W -f='${Version}' docker.io)"
}

# A dockerd killed without clean-up (e.g. when the machine's processes were ended) leaves its pid
# file, and a new dockerd refuses to start while that pid names any live process.
remove_stale_pidfile() {
  local pidfile=/var/run/docker.pid pid
  [[ -f $pidfile ]] || return 0
  pid=$(cat "$pidfile" 2>/dev/null || true)
  if [[ -n $pid && $(cat "/proc/$pid/comm" 2>/dev/null || true) == dockerd ]]; then
    die "dockerd (pid $pid) runs but does not answer on $SOCK"
  fi
  rm -f "$pidfile"
}

start_engine() {
  if engine_up; then
    log docker "engine answers on $SOCK"
    return
  fi
  command -v curl >/dev/null 2>&1 || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq curl >/dev/null
  remove_stale_pidfile
  # setsid + nohup: the engine outlives this script and the test run that started it.
  setsid nohup dockerd "${DOCKERD_FLAGS[@]}" >>"$LOG" 2>&1 </dev/null &
  local pid=$! i
  for i in $(seq 1 150); do
    engine_up && { log docker "started dockerd (pid $pid, log $LOG)"; return; }
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.2
  done
  die "dockerd did not answer on $SOCK; last log lines: $(tail -n 20 "$LOG")"
}

install_engine
start_engine
