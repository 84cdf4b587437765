#!/usr/bin/env bash
# pgstrata demo: make a scratch cluster, back it up (full, then incremental
# after some changes), restore it into a second directory, start it, and
# prove that the restored data matches the source exactly.
#
#   scripts/demo.sh            # uses target/release/pgstrata (builds it if missing)
#   KEEP=1 scripts/demo.sh     # keep the scratch directory for a look around
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
say() { printf '\n== %s\n' "$*"; }

# --- PostgreSQL server binaries
find_bindir() {
  if [ -n "${PG_BINDIR:-}" ] && [ -x "$PG_BINDIR/initdb" ]; then echo "$PG_BINDIR"; return; fi
  if command -v pg_config >/dev/null && [ -x "$(pg_config --bindir)/initdb" ]; then pg_config --bindir; return; fi
  ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1
}
bindir=$(find_bindir || true)
if [ -z "$bindir" ] || [ ! -x "$bindir/initdb" ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    say "installing PostgreSQL server binaries (apt-get install postgresql)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
    bindir=$(find_bindir)
  else
    echo "PostgreSQL server binaries (initdb, pg_ctl) are missing." >&2
    echo "Install them (Debian/Ubuntu: sudo apt-get install postgresql) or set PG_BINDIR." >&2
    exit 1
  fi
fi

# --- pgstrata
bin=${PGSTRATA:-$here/target/release/pgstrata}
if [ ! -x "$bin" ]; then
  say "building pgstrata (cargo build --release)"
  (cd "$here" && cargo build --release --quiet)
fi

# --- run server commands as postgres when we are root (PostgreSQL refuses root)
if [ "$(id -u)" = 0 ]; then as_pg() { runuser -u postgres -- "$@"; }; else as_pg() { "$@"; }; fi

work=$(mktemp -d /tmp/pgstrata-demo.XXXXXX)
chmod 755 "$work"
src=$work/src; dst=$work/restored; repo=$work/repo
mkdir -p "$repo"
[ "$(id -u)" = 0 ] && chown -R postgres:postgres "$work"
cleanup() {
  as_pg "$bindir/pg_ctl" -D "$dst" -m immediate stop >/dev/null 2>&1 || true
  as_pg "$bindir/pg_ctl" -D "$src" -m immediate stop >/dev/null 2>&1 || true
  if [ "${KEEP:-0}" = 1 ]; then echo "kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT

psql_src() { as_pg "$bindir/psql" -X -q -h "$work" -p 5432 -U postgres -d postgres -Atc "$1"; }
psql_dst() { as_pg "$bindir/psql" -X -q -h "$work" -p 5433 -U postgres -d postgres -Atc "$1"; }
fingerprint() {  # ordered hash of every table we care about
  local q="SELECT string_agg(t || '=' || h, ' ' ORDER BY t) FROM (
     SELECT 'accounts' t, md5(string_agg(x::text, '|' ORDER BY aid)) h FROM pgbench_accounts x
     UNION ALL SELECT 'history', md5(string_agg(x::text, '|' ORDER BY x::text)) FROM pgbench_history x
     UNION ALL SELECT 'notes', md5(string_agg(x::text, '|' ORDER BY id)) FROM notes x) s"
  "$1" "$q"
}

say "creating a scratch cluster in $src (checksums on, WAL archived by pgstrata)"
"$bin" --repo "$repo" init
as_pg "$bindir/initdb" -k -A trust -U postgres -D "$src" >/dev/null
cat >> "$src/postgresql.conf" <<CONF
listen_addresses = ''
unix_socket_directories = '$work'
port = 5432
wal_level = replica
archive_mode = on
archive_command = '$bin --repo $repo archive-push %p'
CONF
as_pg "$bindir/pg_ctl" -D "$src" -l "$work/src.log" -w start >/dev/null
as_pg "$bindir/pgbench" -h "$work" -U postgres -i -s 10 -q postgres 2>/dev/null
psql_src "CREATE TABLE notes (id serial PRIMARY KEY, body text);
          INSERT INTO notes (body) SELECT repeat(md5(g::text), 40) FROM generate_series(1, 5000) g;"

conn="host=$work port=5432 user=postgres dbname=postgres"
say "full backup"
"$bin" --repo "$repo" backup --pgdata "$src" --dbname "$conn" --type full --start-fast

say "changing data (pgbench for 3000 transactions, new notes)"
as_pg "$bindir/pgbench" -h "$work" -U postgres -n -t 3000 postgres >/dev/null 2>&1
psql_src "INSERT INTO notes (body) SELECT 'after the full ' || g FROM generate_series(1, 1000) g; DELETE FROM notes WHERE id % 10 = 0;"

say "incremental backup"
"$bin" --repo "$repo" backup --pgdata "$src" --dbname "$conn" --type incr --start-fast
want=$(fingerprint psql_src)

say "repository"
"$bin" --repo "$repo" info

say "restoring the latest backup into $dst"
"$bin" --repo "$repo" restore --pgdata "$dst" --target immediate --target-action promote
[ "$(id -u)" = 0 ] && chown postgres:postgres "$dst"
printf "port = 5433\narchive_mode = off\n" >> "$dst/postgresql.conf"
as_pg "$bindir/pg_ctl" -D "$dst" -l "$work/dst.log" -w start >/dev/null
for _ in $(seq 1 100); do
  [ "$(psql_dst 'SELECT pg_is_in_recovery()' 2>/dev/null)" = f ] && break
  sleep 0.2
done
got=$(fingerprint psql_dst)

say "comparing"
echo "source:   $want"
echo "restored: $got"
if [ "$want" = "$got" ]; then
  echo "OK: the restored cluster holds exactly the data of the source at the backup"
else
  echo "MISMATCH: the restored data differs" >&2
  exit 1
fi
