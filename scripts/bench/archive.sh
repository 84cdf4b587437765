#!/usr/bin/env bash
# The `archive` profile of scripts/bench.sh: WAL archiving at burst rate, and
# replay through restore_command, pgstrata side by side with pgBackRest.
#
#   SEGMENTS=100   WAL segments in the burst
#   BURST=rows     how the burst writes: rows (an INSERT ... SELECT per segment,
#                  one WAL record per row) or copy (a COPY per segment, as a bulk
#                  load does: one multi-insert record per heap page)
#   STEPS="drain replay"   which of the two steps below to run
#   RECOVERY_OPTS=...      server options of the restored cluster, e.g.
#                  "-c shared_buffers=4GB" (default: none, initdb's 128 MB)
#   WORKDIR=...    scratch directory (default: a new mktemp dir under /var/tmp)
#   PGSTRATA=...   binary (default target/release/pgstrata)
#   PG_BIN=/usr/lib/postgresql/15/bin
#
# 1. archive: a backlog of SEGMENTS segments piles up in pg_wal (archive_command
#    fails), then archive_command is set to each tool and mode, and the time
#    until pg_wal/archive_status holds no .ready file is the drain time:
#    pgstrata sync, pgstrata --async, pgBackRest sync, pgBackRest archive-async.
# 2. replay: a backup, then SEGMENTS segments of changes archived; restore and
#    time from server start to the end of recovery, with restore_command
#    `archive-get` and `archive-get --prefetch 8`, and the floor: every
#    segment already in pg_wal (restore_command `false`), which is
#    PostgreSQL's own replay and end-of-recovery checkpoint, what no
#    restore_command can go below. Each also reports PostgreSQL's own
#    measure of the replay itself, the elapsed time of its "redo done" log
#    line: from the first record to the last, restore_command calls
#    included, without the start-up sync of the data directory and the
#    end-of-recovery checkpoint that follow or precede it in every mode.
# Output: a markdown table on stdout and WORKDIR/archive.md.
set -euo pipefail

SEGMENTS=${SEGMENTS:-100}
PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
PGSTRATA=${PGSTRATA:-$REPO_ROOT/target/release/pgstrata}
[[ -x $PGSTRATA ]] || (cd "$REPO_ROOT" && cargo build --release)
command -v pgbackrest >/dev/null ||
  { echo "archive.sh: pgbackrest is missing (apt-get install pgbackrest)" >&2; exit 1; }
WORKDIR=${WORKDIR:-$(mktemp -d /var/tmp/pgstrata-bench-archive.XXXXXX)}
mkdir -p "$WORKDIR"
AS_PG=()
[[ $EUID -ne 0 ]] || AS_PG=(runuser -u postgres --)
[[ $EUID -ne 0 ]] || chown postgres "$WORKDIR"
PGS=$WORKDIR/pgstrata
cp "$PGSTRATA" "$PGS"; chmod 755 "$PGS"
PGDATA=$WORKDIR/data
SOCK=$WORKDIR
log() { printf '[archive %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
pg() { "${AS_PG[@]}" "$@"; }
sql() { pg "$PG_BIN/psql" -h "$SOCK" -U postgres -At -c "$1" postgres; }
now() { date +%s.%N; }
stop_all() { pg "$PG_BIN/pg_ctl" -D "$PGDATA" -m immediate -w stop >/dev/null 2>&1 || true
             pg "$PG_BIN/pg_ctl" -D "$WORKDIR/restored" -m immediate -w stop >/dev/null 2>&1 || true; }
trap stop_all EXIT

PGBR_CONF=$WORKDIR/pgbackrest.conf
pg tee "$PGBR_CONF" >/dev/null <<EOF
[global]
repo1-path=$WORKDIR/pgbr-repo
compress-type=zst
compress-level=3
process-max=2
spool-path=$WORKDIR/pgbr-spool
lock-path=$WORKDIR/pgbr-lock
log-path=$WORKDIR/pgbr-log
log-level-console=warn
[bench]
pg1-path=$PGDATA
pg1-socket-path=$SOCK
pg1-user=postgres
EOF

set_archive() {  # archive_command
  sql "ALTER SYSTEM SET archive_command = '$1'" >/dev/null
  sql "SELECT pg_reload_conf()" >/dev/null
}

BURST=${BURST:-rows}
ROWS_SQL="SELECT g, md5(g::text) || md5((g+1)::text) FROM generate_series(1, %d) g"
case $BURST in
  # Rows per segment: 128 bytes of WAL a row inserted alone, 83 in a COPY.
  rows) burst_sql() { printf "INSERT INTO burst $ROWS_SQL" 120000; } ;;
  copy) burst_sql() { echo "COPY burst FROM '$WORKDIR/burst.copy'"; } ;;
  *) echo "archive.sh: BURST must be rows or copy, not '$BURST'" >&2; exit 2 ;;
esac

burst() {  # SEGMENTS segments of WAL, each ~16 MiB of inserts
  sql "CREATE TABLE IF NOT EXISTS burst (id bigint, pad text)" >/dev/null
  [[ $BURST != copy || -e $WORKDIR/burst.copy ]] ||
    sql "COPY ($(printf "$ROWS_SQL" 200000)) TO '$WORKDIR/burst.copy'" >/dev/null
  for ((i = 0; i < SEGMENTS; i++)); do
    sql "$(burst_sql); SELECT pg_switch_wal();" >/dev/null
  done
}

ready() { find "$PGDATA/pg_wal/archive_status" -name '*.ready' | wc -l; }

drain() {  # name archive_command -> seconds until nothing is ready
  local t0 t1
  t0=$(now)
  set_archive "$2"
  while (( $(ready) > 0 )); do sleep 0.1; done
  t1=$(now)
  awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }'
}

log "cluster"
rm -rf "$PGDATA"
pg "$PG_BIN/initdb" -D "$PGDATA" -U postgres -A trust --no-sync >/dev/null
cat >>"$PGDATA/postgresql.conf" <<EOF
listen_addresses = ''
unix_socket_directories = '$SOCK'
archive_mode = on
archive_command = 'false'
max_wal_size = 4GB
EOF
pg "$PG_BIN/pg_ctl" -D "$PGDATA" -l "$WORKDIR/pg.log" -w start >/dev/null
pg "$PGS" --repo "$WORKDIR/pgs-repo" init >/dev/null
pg pgbackrest --config="$PGBR_CONF" --stanza=bench stanza-create >/dev/null

STEPS=${STEPS:-drain replay}
step() { [[ " $STEPS " == *" $1 "* ]]; }
declare -A DRAIN REPLAY REDO
DRAIN_MODES=()
! step drain || DRAIN_MODES=(pgstrata pgstrata_async pgbr pgbr_async)
for mode in "${DRAIN_MODES[@]}"; do
  set_archive false
  log "$mode: backlog of $SEGMENTS segments"
  burst
  case $mode in
    pgstrata) cmd="$PGS --repo $WORKDIR/pgs-repo archive-push %p" ;;
    pgstrata_async) cmd="$PGS --repo $WORKDIR/pgs-repo archive-push --async --spool-dir $WORKDIR/pgs-spool --workers 2 %p" ;;
    pgbr) cmd="pgbackrest --config=$PGBR_CONF --stanza=bench archive-push %p" ;;
    pgbr_async) cmd="pgbackrest --config=$PGBR_CONF --stanza=bench --archive-async archive-push %p" ;;
  esac
  DRAIN[$mode]=$(drain "$mode" "$cmd")
  log "$mode: drained in ${DRAIN[$mode]} s"
done

REPLAY_MODES=()
if step replay; then
REPLAY_MODES=(plain prefetch floor)
log "replay: backup, then $SEGMENTS segments"
set_archive "$PGS --repo $WORKDIR/pgs-repo archive-push --async --spool-dir $WORKDIR/pgs-spool --workers 2 %p"
pg "$PGS" --repo "$WORKDIR/pgs-repo" backup --pgdata "$PGDATA" --dbname "host=$SOCK user=postgres" --start-fast --type full -q
burst
sql "SELECT pg_switch_wal()" >/dev/null
while (( $(ready) > 0 )); do sleep 0.2; done
fi
for mode in "${REPLAY_MODES[@]}"; do
  rm -rf "$WORKDIR/restored" "$WORKDIR/get-spool"
  extra=() opts="-c port=5499 -c archive_mode=off ${RECOVERY_OPTS:-}"
  [[ $mode != prefetch ]] || extra=(--prefetch 8 --spool-dir "$WORKDIR/get-spool")
  pg "$PGS" --repo "$WORKDIR/pgs-repo" restore --pgdata "$WORKDIR/restored" -q "${extra[@]}" \
    --target-action promote
  if [[ $mode == floor ]]; then
    # Every segment from the backup's start on, fetched into pg_wal beforehand.
    first=$(sed -n 's/^START WAL LOCATION: .* (file \([0-9A-F]*\))$/\1/p' "$WORKDIR/restored/backup_label")
    [[ -n $first ]] || { echo "archive.sh: no START WAL LOCATION in backup_label" >&2; exit 1; }
    for obj in "$WORKDIR"/pgs-repo/wal/main/*/*.zst; do
      name=$(basename "$obj" .zst)
      [[ $name =~ ^[0-9A-F]{24}$ && ! $name < $first ]] || continue
      pg "$PGS" --repo "$WORKDIR/pgs-repo" archive-get "$name" "$WORKDIR/restored/pg_wal/$name"
    done
    sync
    opts+=" -c restore_command=false"
  fi
  t0=$(now)
  rlog=$WORKDIR/restored-$mode.log
  rm -f "$rlog"
  pg "$PG_BIN/pg_ctl" -D "$WORKDIR/restored" -l "$rlog" -w -t 900 \
    -o "$opts" start >/dev/null
  until [[ $(pg "$PG_BIN/psql" -h "$SOCK" -p 5499 -U postgres -At -c "SELECT pg_is_in_recovery()" postgres 2>/dev/null) == f ]]; do sleep 0.1; done
  t1=$(now)
  REPLAY[$mode]=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')
  pg "$PG_BIN/pg_ctl" -D "$WORKDIR/restored" -m fast -w stop >/dev/null
  REDO[$mode]=$(sed -n 's/.*redo done at .* elapsed: \([0-9.]*\) s.*/\1/p' "$rlog" | tail -n 1)
  [[ -n ${REDO[$mode]} ]] || { echo "archive.sh: no \"redo done\" line in $rlog" >&2; exit 1; }
  log "replay $mode: ${REPLAY[$mode]} s (redo ${REDO[$mode]} s)"
done

{
  echo
  echo "archive profile $(date -u +%Y-%m-%dT%H:%M:%SZ): $SEGMENTS segments of 16 MiB written by $BURST, zstd -3, 2 workers/processes${RECOVERY_OPTS:+, recovery with $RECOVERY_OPTS}"
  if step drain; then
    echo
    echo "| step | pgstrata | pgstrata async | pgBackRest | pgBackRest archive-async |"
    echo "|---|---|---|---|---|"
    echo "| drain a backlog of $SEGMENTS segments | ${DRAIN[pgstrata]} s | ${DRAIN[pgstrata_async]} s | ${DRAIN[pgbr]} s | ${DRAIN[pgbr_async]} s |"
  fi
  if step replay; then
    echo
    echo "| step | archive-get | archive-get --prefetch 8 | floor: segments already in pg_wal |"
    echo "|---|---|---|---|"
    echo "| replay $SEGMENTS segments (server start to promoted) | ${REPLAY[plain]} s | ${REPLAY[prefetch]} s | ${REPLAY[floor]} s |"
    echo "| of which redo (PostgreSQL's \"redo done\" elapsed) | ${REDO[plain]} s | ${REDO[prefetch]} s | ${REDO[floor]} s |"
  fi
} | tee "$WORKDIR/archive.md"
