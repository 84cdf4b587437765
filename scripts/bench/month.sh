#!/usr/bin/env bash
# The `month` profile of scripts/bench.sh: a month of hourly backups of a cluster
# of many files, to show what the catalog and the manifest copies cost per backup,
# and how long `info`, `verify` and `expire` take with a month of backups.
#
#   TABLES=10000   tables (id int primary key, v text): 6 files each after VACUUM (heap,
#                  its free space and visibility maps, primary key, TOAST table and its
#                  index), so 10,000 tables are ~61,000 files
#   BACKUPS=720    backups: one full, then incrs (an hour's change between each)
#   CHANGED=300    tables updated between backups (heap, index and visibility map: 2 to
#                  3 files each, so 300 tables change 1 to 1.5% of 61,000 files)
#   KEEP_BACKUPS=168  the expire step keeps the newest this many (a week of hours)
#   PGBR=3         pgBackRest (file-level, bundle+block) takes a full and this many incrs
#                  of the same cluster, for its manifest size per backup (0: skip)
#   WORKDIR=...    scratch directory (default: a new mktemp dir under /var/tmp)
#   PGSTRATA=...   binary (default target/release/pgstrata)
#   SNAPSHOT=0     1: copy the repository to WORKDIR/repo.snapshot after the last backup,
#                  before info/verify/expire, to time those steps again on the same state
#   PG_BIN=/usr/lib/postgresql/15/bin
#
# Every backup is real (backup mode, WAL archived by archive_command, catalog and
# packs in a local repository); what is sped up is the hour: the change is made
# at once and the next backup starts right after it. The expire step keeps the
# newest KEEP_BACKUPS backups: `expire --retain-days` with the days that reach
# back to the first of them by the clock (the backups are seconds apart, not hours).
# Output: a markdown table on stdout and WORKDIR/month.md; per-backup figures in
# WORKDIR/month.tsv.
set -euo pipefail

TABLES=${TABLES:-10000}
BACKUPS=${BACKUPS:-720}
CHANGED=${CHANGED:-300}
KEEP_BACKUPS=${KEEP_BACKUPS:-168}
PGBR=${PGBR:-3}
((KEEP_BACKUPS >= 1 && KEEP_BACKUPS <= BACKUPS)) ||
  { echo "month.sh: KEEP_BACKUPS=$KEEP_BACKUPS must be from 1 to BACKUPS=$BACKUPS" >&2; exit 2; }
PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
PGSTRATA=${PGSTRATA:-$REPO_ROOT/target/release/pgstrata}
[[ -x $PGSTRATA ]] || (cd "$REPO_ROOT" && cargo build --release)
WORKDIR=${WORKDIR:-$(mktemp -d /var/tmp/pgstrata-bench-month.XXXXXX)}
mkdir -p "$WORKDIR"
AS_PG=()
[[ $EUID -ne 0 ]] || AS_PG=(runuser -u postgres --)
[[ $EUID -ne 0 ]] || chown postgres "$WORKDIR"
chmod 755 "$WORKDIR"
PGS=$WORKDIR/pgstrata
cp "$PGSTRATA" "$PGS"; chmod 755 "$PGS"
PGDATA=$WORKDIR/data
SOCK=$WORKDIR
REPO=$WORKDIR/repo
log() { printf '[month %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
pg() { "${AS_PG[@]}" "$@"; }
sql() { pg "$PG_BIN/psql" -h "$SOCK" -U postgres -At -v ON_ERROR_STOP=1 -c "$1" postgres; }
# shellcheck source=tables.sh
source "$REPO_ROOT/scripts/bench/tables.sh"
PGSCMD=("${AS_PG[@]}" "$PGS" --repo "$REPO")
pgs() { "${PGSCMD[@]}" "$@"; }
stop_all() { pg "$PG_BIN/pg_ctl" -D "$PGDATA" -m immediate -w stop >/dev/null 2>&1 || true; }
trap stop_all EXIT
timed() {  # name cmd... -> "wall_s rss_mib" on stdout; output in WORKDIR/logs/name.log
  mkdir -p "$WORKDIR/logs"
  /usr/bin/time -f '%e %M' -o "$WORKDIR/logs/$1.time" "${@:2}" >"$WORKDIR/logs/$1.log" 2>&1 ||
    { cat "$WORKDIR/logs/$1.log" >&2; log "$1 failed"; exit 1; }
  awk '{ printf "%s %.0f\n", $1, $2 / 1024 }' "$WORKDIR/logs/$1.time"
}
bytes() { du -sb "$1" | cut -f1; }
mib() { awk -v b="$1" 'BEGIN { printf "%.1f", b / 1048576 }'; }

log "workdir $WORKDIR; TABLES=$TABLES BACKUPS=$BACKUPS CHANGED=$CHANGED"
pg "$PG_BIN/initdb" -D "$PGDATA" -k -U postgres -A trust --locale=C >/dev/null
pg mkdir -p "$REPO"
cat >>"$PGDATA/postgresql.conf" <<EOF
listen_addresses = ''
unix_socket_directories = '$SOCK'
wal_level = replica
archive_mode = on
archive_command = '$PGS --repo $REPO archive-push %p'
max_wal_size = 4GB
fsync = on
EOF
pgs init >/dev/null
pg "$PG_BIN/pg_ctl" -D "$PGDATA" -l "$WORKDIR/server.log" -w start >/dev/null

log "creating $TABLES tables"
make_tables "$TABLES"
FILES=$(find "$PGDATA" -type f | wc -l)
log "$FILES files in the cluster"

change() { change_tables "$TABLES" "$CHANGED"; }

TSV=$WORKDIR/month.tsv
printf 'n\ttype\twall_s\trss_mib\tcatalog_bytes\tcopies_bytes\n' >"$TSV"
catalog_bytes() { stat -c %s "$REPO/catalog.db"; }
copies_bytes() { bytes "$REPO/manifests"; }
for ((n = 1; n <= BACKUPS; n++)); do
  if ((n == 1)); then type=full; else type=incr; change; fi
  read -r wall rss < <(timed "backup.$n" "${PGSCMD[@]}" backup --pgdata "$PGDATA" --dbname "host=$SOCK user=postgres dbname=postgres" --type "$type" --start-fast)
  printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$n" "$type" "$wall" "$rss" "$(catalog_bytes)" "$(copies_bytes)" >>"$TSV"
  if ((n % 24 == 0 || n == 1)); then
    log "backup $n: $wall s, catalog $(mib "$(catalog_bytes)") MiB, copies $(mib "$(copies_bytes)") MiB"
  fi
done

# The footprint of the full and the mean footprint an incr added.
read -r full_cat full_copy < <(awk -F'\t' 'NR == 2 { print $5, $6 }' "$TSV")
read -r last_cat last_copy < <(awk -F'\t' 'END { print $5, $6 }' "$TSV")
full_fp=$((full_cat + full_copy))
incr_fp=$(( (last_cat + last_copy - full_fp) / (BACKUPS - 1) ))
read -r incr_wall incr_rss < <(awk -F'\t' 'NR > 2 { w += $3; if ($4 > r) r = $4; n++ } END { printf "%.2f %d\n", w / n, r }' "$TSV")

if [[ ${SNAPSHOT:-0} == 1 ]]; then
  log "copying the repository to $WORKDIR/repo.snapshot"
  rm -rf "$WORKDIR/repo.snapshot"; cp -a "$REPO" "$WORKDIR/repo.snapshot"
fi
read -r info_wall info_rss < <(timed info "${PGSCMD[@]}" info)
read -r verify_wall verify_rss < <(timed verify "${PGSCMD[@]}" verify)
keep=$KEEP_BACKUPS
days=$(pgs info --output json | python3 -c "
import json, sys, datetime
b = [x for c in json.load(sys.stdin)['clusters'] for x in c['backups']]
stop = datetime.datetime.fromisoformat(b[len(b) - $keep]['stop_time'].replace('Z', '+00:00'))
now = datetime.datetime.now(datetime.timezone.utc)
print((now - stop).total_seconds() / 86400 - 0.5 / 86400)")
read -r expire_wall expire_rss < <(timed expire "${PGSCMD[@]}" expire --retain-days "$days")
after_cat=$(catalog_bytes); after_copy=$(copies_bytes)
read -r verify2_wall verify2_rss < <(timed verify-after "${PGSCMD[@]}" verify)

pgbr_rows=""
if ((PGBR > 0)); then
  log "pgBackRest: a full and $PGBR incrs, file-level and bundle+block"
  for mode in file block; do
    conf=$WORKDIR/pgbr-$mode.conf
    extra=""
    [[ $mode == block ]] && extra=$'repo1-bundle=y\nrepo1-block=y\nbeta=y'
    pg tee "$conf" >/dev/null <<EOF
[global]
repo1-path=$WORKDIR/pgbr-$mode
compress-type=zst
compress-level=3
process-max=2
start-fast=y
archive-check=n
lock-path=$WORKDIR/pgbr-lock-$mode
log-path=$WORKDIR/pgbr-log
log-level-console=warn
$extra
[bench]
pg1-path=$PGDATA
pg1-socket-path=$SOCK
pg1-user=postgres
EOF
    pg mkdir -p "$WORKDIR/pgbr-log"
    pg pgbackrest --config="$conf" --stanza=bench stanza-create >/dev/null
    for ((i = 0; i <= PGBR; i++)); do
      t=incr; ((i == 0)) && t=full
      ((i == 0)) || change
      read -r w r < <(timed "pgbr-$mode.$i" "${AS_PG[@]}" pgbackrest --config="$conf" --stanza=bench --type=$t backup)
      sz=$(ls -t "$WORKDIR"/pgbr-$mode/backup/bench/*/backup.manifest | head -1 | xargs stat -c %s)
      pgbr_rows+="| pgBackRest $mode $t | $w s / $r MiB | manifest $(mib "$sz") MiB (+ a copy of the same size) |"$'\n'
    done
  done
fi

{
  echo "| month of backups: $FILES files, $BACKUPS backups ($CHANGED tables changed each hour) | figure |"
  echo "|---|---|"
  echo "| full: catalog + manifest copy | $(mib "$full_cat") MiB + $(mib "$full_copy") MiB |"
  echo "| incr: mean catalog + copies added | $(mib "$incr_fp") MiB ($(awk -v a="$incr_fp" -v b="$full_fp" 'BEGIN { printf "%.1f%%", 100 * a / b }') of the full's) |"
  echo "| incr: mean wall / peak RSS | $incr_wall s / $incr_rss MiB |"
  echo "| after $BACKUPS backups: catalog + copies | $(mib "$last_cat") MiB + $(mib "$last_copy") MiB |"
  echo "| info with $BACKUPS backups | $info_wall s / $info_rss MiB |"
  echo "| verify with $BACKUPS backups | $verify_wall s / $verify_rss MiB |"
  echo "| expire to the newest $keep | $expire_wall s / $expire_rss MiB |"
  echo "| after expire: catalog + copies | $(mib "$after_cat") MiB + $(mib "$after_copy") MiB |"
  echo "| verify after expire | $verify2_wall s / $verify2_rss MiB |"
  printf '%s' "$pgbr_rows"
} | tee "$WORKDIR/month.md"
