#!/usr/bin/env bash
# Makes a fresh Debian 12 machine (as root) ready to build, test and run ssi.
# Idempotent and fast on a second run: everything is checked before anything is done.
#   - Debian packages the tests and the daemon need (installed only if missing);
#   - CRIU >= 4.2: the system one if it works, else a private bundle from Debian unstable under
#     /opt/ssi/criu run through its own loader by /opt/ssi/bin/criu (see docs/criu.md); no system
#     package is replaced;
#   - fs.pipe-max-size >= 4 MiB (CRIU post-copy lazy pages need it);
#   - the cgroup2 mount with favordynmods where the kernel has it: moving a process into a cgroup
#     then no longer waits for an RCU grace period (6-14 ms per job start measured here, ~0.5 ms
#     with it); best effort, a start is only slower without it;
#   - /opt/ssi/criu.path: absolute path of the criu to use.
set -Eeuo pipefail

readonly SSI_ROOT=/opt/ssi
readonly CRIU_PREFIX=$SSI_ROOT/criu
readonly CRIU_WRAPPER=$SSI_ROOT/bin/criu
readonly CRIU_PATH_FILE=$SSI_ROOT/criu.path
readonly CRIU_MIN_VERSION=4.2
readonly PIPE_MAX_SIZE=4194304
readonly DEB_PACKAGES=(tini iproute2 fuse3 util-linux gcc libc6-dev zstd procps iptables libnetfilter-queue-dev)

log() { printf '%-14s %s\n' "$1:" "$2"; }
die() { printf 'provision: %s\n' "$*" >&2; exit 1; }

trap 'printf "provision: failed at line %s: %s\n" "$LINENO" "$BASH_COMMAND" >&2' ERR
[[ $(id -u) -eq 0 ]] || die "must run as root"

# ---------------------------------------------------------------- Debian packages
apt_updated=0
apt_update_once() {
  if [[ $apt_updated -eq 0 ]]; then
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
    apt_updated=1
  fi
}

is_installed() {
  [[ $(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null || true) == installed ]]
}

provision_packages() {
  local missing=() p
  for p in "${DEB_PACKAGES[@]}"; do is_installed "$p" || missing+=("$p"); done
  if [[ ${#missing[@]} -eq 0 ]]; then
    log packages "present: ${DEB_PACKAGES[*]}"
    return
  fi
  apt_update_once
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  log packages "installed: ${missing[*]}"
}

# ---------------------------------------------------------------- CRIU
# criu_version BIN -> prints "X.Y[.Z]" or nothing
criu_version() {
  "$1" --version 2>/dev/null | sed -n 's/^Version: *\([0-9][0-9.]*\).*/\1/p' | head -n1
}

# criu_usable BIN -> 0 if BIN is CRIU >= 4.2 and `criu check` says "Looks good"
criu_usable() {
  local bin=$1 v
  [[ -x $bin ]] || return 1
  v=$(criu_version "$bin")
  [[ -n $v ]] || return 1
  dpkg --compare-versions "$v" ge "$CRIU_MIN_VERSION" || return 1
  "$bin" check 2>&1 | grep -q 'Looks good'
}

# apt with a private sources list and private state/cache: never touches the system's apt state.
readonly APT_DIR=$SSI_ROOT/apt
APT_OPTS=(
  -o "Dir::Etc::SourceList=$APT_DIR/sources.list"
  -o "Dir::Etc::SourceParts=/dev/null"
  -o "Dir::State::Lists=$APT_DIR/lists"
  -o "Dir::Cache=$APT_DIR/cache"
  -o "Dir::Cache::archives=$APT_DIR/cache/archives"
  -o "Debug::NoLocking=1"
  -o "APT::Sandbox::User=root"
)

private_apt_setup() {
  local suites=("$@") s
  mkdir -p "$APT_DIR/lists/partial" "$APT_DIR/cache/archives/partial"
  : >"$APT_DIR/sources.list"
  for s in "${suites[@]}"; do
    echo "deb http://deb.debian.org/debian $s main" >>"$APT_DIR/sources.list"
  done
  apt-get "${APT_OPTS[@]}" -qq update >/dev/null
}

# criu_closure [APT_EXTRA_OPTS...] -> real (downloadable) package names needed by criu, one a line.
# apt-cache's recursive depends also lists virtual packages (<foo>) and alternatives that have no
# candidate: keep only names that `pkgnames` (real packages only) knows and that have a candidate.
criu_closure() {
  local known
  known=$(apt-cache "${APT_OPTS[@]}" "$@" pkgnames | sort -u)
  apt-cache "${APT_OPTS[@]}" "$@" depends --recurse --no-recommends --no-suggests \
      --no-conflicts --no-breaks --no-replaces --no-enhances criu \
    | grep -E '^[a-z0-9][a-z0-9+.-]*$' | sort -u | comm -12 - <(printf '%s\n' "$known")
}

candidate_version() {
  apt-cache "${APT_OPTS[@]}" "${@:2}" policy "$1" | sed -n 's/^ *Candidate: *//p' | head -n1
}

# with_candidate [APT_EXTRA_OPTS...] < names -> the names that have a downloadable candidate
with_candidate() {
  local names
  mapfile -t names
  [[ ${#names[@]} -gt 0 ]] || return 0
  apt-cache "${APT_OPTS[@]}" "$@" policy "${names[@]}" \
    | awk '/^[^ ]/ { sub(/:$/, "", $1); pkg = $1 } /^  Candidate:/ && $2 != "(none)" { print pkg }'
}

# download_and_extract DEST [APT_EXTRA_OPTS...] -> prints the number of packages extracted
download_and_extract() {
  local dest=$1 debs pkgs deb
  shift
  debs=$(mktemp -d)
  # shellcheck disable=SC2064
  trap "rm -rf '$debs'" RETURN
  mapfile -t pkgs < <(criu_closure "$@" | with_candidate "$@")
  [[ ${#pkgs[@]} -gt 0 ]] || die "empty dependency closure for criu"
  (cd "$debs" && apt-get "${APT_OPTS[@]}" "$@" -qq download "${pkgs[@]}" >/dev/null) \
    || die "apt-get download failed for: ${pkgs[*]}"
  ls "$debs"/criu_*.deb >/dev/null 2>&1 || die "criu .deb was not downloaded"
  for deb in "$debs"/*.deb; do dpkg -x "$deb" "$dest"; done
  echo "${#pkgs[@]}"
}

write_criu_wrapper() {
  local prefix=$1 loader triplet
  loader=$(cd "$prefix" && find usr/lib lib lib64 usr/lib64 -maxdepth 2 -name 'ld-linux*.so*' \
    2>/dev/null | head -n1 || true)
  [[ -n $loader ]] || die "no ld-linux in $prefix"
  triplet=$(basename "$(dirname "$prefix/usr/lib/"*-linux-gnu*/libc.so.6)")
  mkdir -p "$(dirname "$CRIU_WRAPPER")"
  cat >"$CRIU_WRAPPER.tmp" <<EOF
#!/bin/sh
# CRIU from Debian unstable, run through its own glibc (provisioned by scripts/provision.sh).
P=$CRIU_PREFIX
exec "\$P/$loader" --library-path "\$P/usr/lib/$triplet:\$P/lib/$triplet" "\$P/usr/sbin/criu" "\$@"
EOF
  chmod 0755 "$CRIU_WRAPPER.tmp"
  mv -f "$CRIU_WRAPPER.tmp" "$CRIU_WRAPPER"
}

# build_criu_bundle SUITE... : extract into a fresh prefix, swap it in atomically.
build_criu_bundle() {
  local staging=$CRIU_PREFIX.new extra=() n v
  private_apt_setup "$@"
  [[ $# -gt 1 ]] && extra=(-o "APT::Default-Release=${*: -1}")
  v=$(candidate_version criu "${extra[@]}")
  if [[ -z $v || $v == "(none)" ]] || ! dpkg --compare-versions "$v" ge "$CRIU_MIN_VERSION"; then
    log criu "suites '$*' offer criu '${v:-none}' (< $CRIU_MIN_VERSION)"
    return 1
  fi
  rm -rf "$staging"
  mkdir -p "$staging"
  n=$(download_and_extract "$staging" "${extra[@]}")
  rm -rf "$CRIU_PREFIX.old"
  [[ -e $CRIU_PREFIX ]] && mv "$CRIU_PREFIX" "$CRIU_PREFIX.old"
  mv "$staging" "$CRIU_PREFIX"
  rm -rf "$CRIU_PREFIX.old"
  write_criu_wrapper "$CRIU_PREFIX"
  log criu "bundled criu $v from '$*' ($n packages, $(du -sm "$CRIU_PREFIX" | cut -f1) MiB) in $CRIU_PREFIX"
}

use_criu() {
  mkdir -p "$SSI_ROOT"
  printf '%s\n' "$1" >"$CRIU_PATH_FILE.tmp"
  mv -f "$CRIU_PATH_FILE.tmp" "$CRIU_PATH_FILE"
  log criu "$2 $1 (version $(criu_version "$1")), recorded in $CRIU_PATH_FILE"
}

provision_criu() {
  local system
  system=$(command -v criu 2>/dev/null || true)
  if [[ -n $system && $system != "$CRIU_WRAPPER" ]] && criu_usable "$system"; then
    use_criu "$system" "using system"
    return
  fi
  [[ -n $system ]] && log criu "system $system unusable (needs >= $CRIU_MIN_VERSION and a passing 'criu check')"
  if criu_usable "$CRIU_WRAPPER"; then
    use_criu "$CRIU_WRAPPER" "found bundled"
    return
  fi
  build_criu_bundle sid || build_criu_bundle sid experimental \
    || die "no CRIU >= $CRIU_MIN_VERSION available from Debian sid or experimental"
  criu_usable "$CRIU_WRAPPER" \
    || die "bundled criu fails 'criu check': $("$CRIU_WRAPPER" check 2>&1 | tail -n 5)"
  use_criu "$CRIU_WRAPPER" "installed bundled"
}

# ---------------------------------------------------------------- sysctl
provision_sysctl() {
  local cur
  cur=$(cat /proc/sys/fs/pipe-max-size)
  if [[ $cur -ge $PIPE_MAX_SIZE ]]; then
    log sysctl "fs.pipe-max-size = $cur"
  else
    echo "$PIPE_MAX_SIZE" >/proc/sys/fs/pipe-max-size
    log sysctl "fs.pipe-max-size set $cur -> $PIPE_MAX_SIZE"
  fi
}

# ---------------------------------------------------------------- cgroups
provision_cgroups() {
  local mnt opts
  if ! grep -qw favordynmods /sys/kernel/cgroup/features 2>/dev/null; then
    log cgroups "kernel has no favordynmods: job starts pay an RCU grace period"
    return
  fi
  mnt=$(awk '$3 == "cgroup2" { print $2; exit }' /proc/mounts)
  if [[ -z $mnt ]]; then
    log cgroups "no cgroup2 mount: cannot enable favordynmods"
    return
  fi
  opts=$(awk -v m="$mnt" '$2 == m && $3 == "cgroup2" { print $4; exit }' /proc/mounts)
  if [[ ,$opts, == *,favordynmods,* ]]; then
    log cgroups "$mnt has favordynmods"
  elif mount -o remount,favordynmods "$mnt" 2>/dev/null; then
    log cgroups "$mnt remounted with favordynmods"
  else
    log cgroups "could not remount $mnt with favordynmods: job starts pay an RCU grace period"
  fi
}

provision_packages
provision_criu
provision_sysctl
provision_cgroups
