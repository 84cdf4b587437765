#!/usr/bin/env bash
# The `many-files` profile of scripts/bench.sh: peak memory and wall time of every
# command on clusters of many small files, pgstrata side by side with pgBackRest,
# to show memory flat in the number of files.
#
#   SIZES="2000 33000"  table counts, one cluster each (6 files a table after VACUUM:
#                       2,000 tables are ~12,000 files, 33,000 are ~200,000)
#   CHANGED=1           percent of the tables updated between the full and the incr
#   PGBR=1              pgBackRest columns (file-level, bundle+block; 0: skip)
#   WORKDIR=...         scratch directory (default: a new mktemp dir under /var/tmp)
#   PGSTRATA=...        binary (default target/release/pgstrata)
#   PG_BIN=/usr/lib/postgresql/15/bin
#   KEEP=1              keep each cluster's data directory (stopped) in WORKDIR/<size>/data
#
# Per size: create the tables, VACUUM, CHECKPOINT; full; update CHANGED% of the
# tables; incr; info; verify; restore (into a new directory); full #2; expire
# of the first full (pgstrata: --set; pgBackRest: expire --set, which takes its
# incr too: pgBackRest's incrs depend on it). Each step is timed with
# /usr/bin/time (wall seconds / peak RSS MiB).
# Each tool restores into a directory of its own, all removed at the end: on an
# ext4 without a journal (this machine's), creating files soon after tens of
# thousands were deleted makes the kernel skip their inodes one by one
# (`recently_deleted`, for a minute or more), which once made one restore of
# 61,000 files take 12 s and the next 47 s; a restore after `rm -rf` of the
# previous tool's would pay that, the first would not.
# Output: a markdown table on stdout and WORKDIR/many-files.md.
set -euo pipefail

SIZES=${SIZES:-2000 33000}
CHANGED=${CHANGED:-1}
PGBR=${PGBR:-1}
PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
PGSTRATA=${PGSTRATA:-$REPO_ROOT/target/release/pgstrata}
[[ -x $PGSTRATA ]] || (cd "$REPO_ROOT" && cargo build --release)
WORKDIR=${WORKDIR:-$(mktemp -d /var/tmp/pgstrata-bench-files.XXXXXX)}
mkdir -p "$WORKDIR"
AS_PG=()
[[ $EUID -ne 0 ]] || AS_PG=(runuser -u postgres --)
[[ $EUID -ne 0 ]] || chown postgres "$WORKDIR"
chmod 755 "$WORKDIR"
PGS=$WORKDIR/pgstrata
cp "$PGSTRATA" "$PGS"; chmod 755 "$PGS"
SOCK=$WORKDIR
log() { printf '[many-files %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
pg() { "${AS_PG[@]}" "$@"; }
sql() { pg "$PG_BIN/psql" -h "$SOCK" -U postgres -At -v ON_ERROR_STOP=1 -c "$1" postgres; }
# shellcheck source=tables.sh
source "$REPO_ROOT/scripts/bench/tables.sh"
PGDATA=
stop_all() { [[ -z $PGDATA ]] || pg "$PG_BIN/pg_ctl" -D "$PGDATA" -m immediate -w stop >/dev/null 2>&1 || true; }
trap stop_all EXIT
timed() {  # name cmd... -> "wall_s/rss_mib" on stdout
  mkdir -p "$WORKDIR/logs"
  /usr/bin/time -f '%e %M' -o "$WORKDIR/logs/$1.time" "${@:2}" >"$WORKDIR/logs/$1.log" 2>&1 ||
    { cat "$WORKDIR/logs/$1.log" >&2; log "$1 failed"; exit 1; }
  awk '{ printf "%s s / %.0f MiB\n", $1, $2 / 1024 }' "$WORKDIR/logs/$1.time"
}

rows=""
for n in $SIZES; do
  D=$WORKDIR/$n
  PGDATA=$D/data
  pg mkdir -p "$D"
  pg "$PG_BIN/initdb" -D "$PGDATA" -k -U postgres -A trust --locale=C >/dev/null
  REPO=$D/repo
  PGSC=("${AS_PG[@]}" "$PGS" --repo "$REPO")
  cat >>"$PGDATA/postgresql.conf" <<EOF
listen_addresses = ''
unix_socket_directories = '$SOCK'
wal_level = replica
archive_mode = on
archive_command = '$PGS --repo $REPO archive-push %p'
max_wal_size = 4GB
EOF
  pg mkdir -p "$REPO"
  "${PGSC[@]}" init >/dev/null
  pg "$PG_BIN/pg_ctl" -D "$PGDATA" -l "$D/server.log" -w start >/dev/null
  log "$n tables: creating"
  make_tables "$n"
  files=$(find "$PGDATA" -type f | wc -l)
  log "$n tables: $files files"
  conn="host=$SOCK user=postgres dbname=postgres"
  change() { change_tables "$n" $((n * CHANGED / 100)); }
  full=$(timed "$n.pgs.full" "${PGSC[@]}" backup --pgdata "$PGDATA" --dbname "$conn" --type full --start-fast)
  change
  incr=$(timed "$n.pgs.incr" "${PGSC[@]}" backup --pgdata "$PGDATA" --dbname "$conn" --type incr --start-fast)
  info=$(timed "$n.pgs.info" "${PGSC[@]}" info)
  verify=$(timed "$n.pgs.verify" "${PGSC[@]}" verify)
  restore=$(timed "$n.pgs.restore" "${PGSC[@]}" restore --pgdata "$D/restore-pgs")
  full2=$(timed "$n.pgs.full2" "${PGSC[@]}" backup --pgdata "$PGDATA" --dbname "$conn" --type full --start-fast)
  first=$("${PGSC[@]}" info --output json | python3 -c "import json,sys; print(json.load(sys.stdin)['clusters'][0]['backups'][0]['id'])")
  expire=$(timed "$n.pgs.expire" "${PGSC[@]}" expire --set "$first")
  rows+="| $files files | pgstrata | $full | $incr | $full2 | $restore | $verify | $expire | $info |"$'\n'
  if ((PGBR > 0)); then
    for mode in file block; do
      conf=$D/pgbr-$mode.conf
      extra=""
      [[ $mode == block ]] && extra=$'repo1-bundle=y\nrepo1-block=y\nbeta=y'
      pg tee "$conf" >/dev/null <<EOF
[global]
repo1-path=$D/pgbr-$mode
compress-type=zst
compress-level=3
process-max=2
start-fast=y
archive-check=n
lock-path=$D/pgbr-lock
log-path=$D/pgbr-log
log-level-console=warn
$extra
[bench]
pg1-path=$PGDATA
pg1-socket-path=$SOCK
pg1-user=postgres
EOF
      pg mkdir -p "$D/pgbr-log"
      B=("${AS_PG[@]}" pgbackrest --config="$conf" --stanza=bench)
      "${B[@]}" stanza-create >/dev/null
      bfull=$(timed "$n.$mode.full" "${B[@]}" --type=full backup)
      change
      bincr=$(timed "$n.$mode.incr" "${B[@]}" --type=incr backup)
      binfo=$(timed "$n.$mode.info" "${B[@]}" info)
      bverify=$(timed "$n.$mode.verify" "${B[@]}" verify)
      brestore=$(timed "$n.$mode.restore" "${B[@]}" restore --pg1-path="$D/restore-$mode")
      bfull2=$(timed "$n.$mode.full2" "${B[@]}" --type=full backup)
      bfirst=$("${B[@]}" info --output=json | python3 -c "import json,sys; print(json.load(sys.stdin)[0]['backup'][0]['label'])")
      bexpire=$(timed "$n.$mode.expire" "${B[@]}" expire --set="$bfirst")
      rows+="| | pgBackRest $mode | $bfull | $bincr | $bfull2 | $brestore | $bverify | $bexpire | $binfo |"$'\n'
    done
  fi
  stop_all
  PGDATA=
  pg rm -rf "$D/pgbr-file" "$D/pgbr-block" "$D/restore-pgs" "$D/restore-file" "$D/restore-block"
  [[ ${KEEP:-0} == 1 ]] || pg rm -rf "$D/data"
done

{
  echo "| cluster | tool | full | incr ($CHANGED% of tables) | full #2 | restore | verify | expire of full #1 | info |"
  echo "|---|---|---|---|---|---|---|---|---|"
  printf '%s' "$rows"
  echo
  echo "cells: wall s / peak RSS MiB"
} | tee "$WORKDIR/many-files.md"
