#!/usr/bin/env bash
# Builds the per-job supervisor dist/ssi-shim from shim/*.c with gcc -O2 -Wall -Werror.
# Does nothing when dist/ssi-shim is newer than every source file (pass --force to rebuild).
set -Eeuo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
out=$repo/dist/ssi-shim
sources=("$repo"/shim/*.c)
headers=("$repo"/shim/*.h)

if [[ ${1:-} != --force && -x $out ]]; then
  stale=0
  for f in "${sources[@]}" "${headers[@]}" "${BASH_SOURCE[0]}"; do
    [[ $f -nt $out ]] && stale=1
  done
  [[ $stale -eq 0 ]] && exit 0
fi

command -v "${CC:-gcc}" >/dev/null || { echo "build-shim: ${CC:-gcc} not found (apt-get install gcc libc6-dev, or scripts/provision.sh)" >&2; exit 1; }
mkdir -p "$repo/dist"
tmp=$(mktemp "$repo/dist/.ssi-shim.XXXXXX")
trap 'rm -f "$tmp"' EXIT
"${CC:-gcc}" -O2 -Wall -Wextra -Werror -std=gnu11 -D_FORTIFY_SOURCE=2 -o "$tmp" "${sources[@]}"
chmod 755 "$tmp"
mv -f "$tmp" "$out"
trap - EXIT
echo "build-shim: built $out"
