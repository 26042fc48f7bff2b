#!/usr/bin/env bash
# Builds and installs the Citus extension for the local PostgreSQL, unless it is installed already.
#
# Debian ships no Citus package for PostgreSQL 15, so CI builds it from the source archive and
# patch kept in CITUS_SOURCE (default ../shared/vendor next to the repository). A real deployment
# uses Citus's own packages instead. The build happens in a folder outside the repository.
#
#   CITUS_SOURCE     folder holding citus-<version>.tar.gz and any citus-<version>-*.patch
#   CITUS_VERSION    default 13.2.2 (the last line that supports PostgreSQL 15)
#   CITUS_BUILD_DIR  default ${TMPDIR:-/tmp}/credits-citus-build
#   CITUS_DESTDIR    staging root for `make install` (tries the build without touching the system)
#   CITUS_FORCE_BUILD=1  builds and installs even when Citus is installed already
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
version=${CITUS_VERSION:-13.2.2}
source_dir=${CITUS_SOURCE:-$root/../shared/vendor}
build_dir=${CITUS_BUILD_DIR:-${TMPDIR:-/tmp}/credits-citus-build}
destdir=${CITUS_DESTDIR:-}
pg_major=${PG_MAJOR:-15}
build_deps=(postgresql-server-dev-$pg_major build-essential libcurl4-openssl-dev liblz4-dev libzstd-dev libkrb5-dev libssl-dev)

log() { echo "citus-install: $*" >&2; }
fail() {
  log "$*"
  exit 1
}

missing_packages() {
  local package
  for package in "${build_deps[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q 'install ok installed' || echo "$package"
  done
}

install_build_deps() {
  command -v dpkg-query >/dev/null || fail "no dpkg-query: install by hand: ${build_deps[*]}"
  local missing
  mapfile -t missing < <(missing_packages)
  [ "${#missing[@]}" -eq 0 ] && return
  local sudo=()
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || fail "missing build packages and not root: apt-get install ${missing[*]}"
    sudo=(sudo)
  fi
  log "installing build packages: ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y --no-install-recommends "${missing[@]}"
}

# The server-dev package brings the pg_config of the right major version; before it is installed
# /usr/bin/pg_config may be missing or belong to libpq-dev.
pg_config_path() {
  local candidate=/usr/lib/postgresql/$pg_major/bin/pg_config
  if [ -x "$candidate" ]; then echo "$candidate"; else command -v pg_config || true; fi
}

installed() {
  local pg_config=$1
  [ -n "$pg_config" ] || return 1
  [ -f "$destdir$("$pg_config" --pkglibdir)/citus.so" ] &&
    [ -f "$destdir$("$pg_config" --sharedir)/extension/citus.control" ]
}

pg_config=$(pg_config_path)
if [ "${CITUS_FORCE_BUILD:-}" != 1 ] && installed "$pg_config"; then
  log "Citus is installed already ($destdir$("$pg_config" --pkglibdir)/citus.so); nothing to do"
  exit 0
fi

archive=$source_dir/citus-$version.tar.gz
[ -f "$archive" ] || fail "no source archive $archive (set CITUS_SOURCE to the folder holding it)"

install_build_deps
pg_config=$(pg_config_path)
[ -n "$pg_config" ] || fail "no pg_config for PostgreSQL $pg_major after installing postgresql-server-dev-$pg_major"

started=$(date +%s)
rm -rf "$build_dir"
mkdir -p "$build_dir"
tar -xzf "$archive" -C "$build_dir"
src=$build_dir/citus-$version
[ -d "$src" ] || fail "the archive did not unpack into citus-$version/"
shopt -s nullglob
for patch_file in "$source_dir"/citus-"$version"-*.patch; do
  log "applying $(basename "$patch_file")"
  patch -d "$src" -p1 --forward --quiet <"$patch_file"
done
shopt -u nullglob

log "building Citus $version in $src (log: $build_dir/build.log)"
if ! (
  cd "$src" &&
    PG_CONFIG=$pg_config ./configure --quiet &&
    make -j"$(nproc)" &&
    make install ${destdir:+DESTDIR="$destdir"}
) >"$build_dir/build.log" 2>&1; then
  tail -n 40 "$build_dir/build.log" >&2
  fail "build failed; full log in $build_dir/build.log"
fi
installed "$pg_config" || fail "make install finished but citus.so is not in $destdir$("$pg_config" --pkglibdir)"
log "installed Citus $version into ${destdir:-/}$("$pg_config" --pkglibdir) in $(($(date +%s) - started)) s"
