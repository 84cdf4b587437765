#!/usr/bin/env bash
# The `incr-wal` profile of scripts/bench.sh: an incremental backup that finds the
# changed blocks from the archived WAL, against pgstrata's file scan and
# pgBackRest's block incremental, on a cluster of several GB where a small
# share of one big table's pages changed.
#
#   SCALE=300        pgbench scale (pgbench -i -s SCALE: ~4.9 GB under base/)
#   CHANGES="1 10"   percent of pgbench_accounts' pages changed before each incr
#   WORKDIR=...      scratch directory (default: a new mktemp dir under /var/tmp)
#   PGSTRATA=...     binary (default target/release/pgstrata)
#   KEEP=1           keep the cluster and repositories (default: remove them on
#                    exit; incr-wal.md, incr-wal.tsv and logs/ are kept)
#   PG_BIN=/usr/lib/postgresql/15/bin
#
# Needs root: the page cache is dropped (echo 3 > /proc/sys/vm/drop_caches)
# before every timed step. The cluster (checksums, autovacuum off, loaded with
# its WAL not archived: no backup needs it) archives every segment to three
# repositories at once: pgstrata "auto", pgstrata "off" (one repository per
# change-tracking mode, so that each incr's prior is a backup of the same mode)
# and a pgBackRest stanza with repo1-bundle=y repo1-block=y.
# 1. sanity: a cold sequential read of the data directory (pg_wal left out):
#    what reading everything costs on this disk, and a check that the I/O
#    accounting below sees about the data size;
# 2. full: each tool;
# 3. for each CHANGES percent P: one row updated (abalance + 1) in P% of
#    pgbench_accounts' pages, chosen evenly over the table, CHECKPOINT, then an
#    incr of each tool: pgstrata --change-tracking auto (must say
#    archived-wal), pgstrata --change-tracking off (reads every file whose
#    size or mtime changed), pgBackRest --type=incr (block incremental).
#    Ground truth for what changed, independent of WAL: the relation pages
#    whose page LSN is at or past the prior pgstrata backup's start (each
#    update also writes an index leaf page and the page of the new row
#    version, so these are about twice the pages chosen).
# Every timed step starts with cold caches (sync, drop_caches) and runs under
# a wrapper shell that reads its own /proc/PID/io after the step: the kernel
# adds a reaped child's I/O (and its reaped children's) to the parent, so
# read_bytes is what the whole process tree read from storage (binaries
# included: see the "binaries" line). "stored" is what the step added to the
# repository, WAL archive excluded (du -sb before and after).
# Output: a markdown table on stdout and WORKDIR/incr-wal.md; WORKDIR/incr-wal.tsv.
set -euo pipefail

SCALE=${SCALE:-300}
CHANGES=${CHANGES:-1 10}
KEEP=${KEEP:-0}
PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
PGSTRATA=${PGSTRATA:-$REPO_ROOT/target/release/pgstrata}
log() { printf '[incr-wal %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { printf 'incr-wal.sh: %s\n' "$*" >&2; exit 1; }
[[ $SCALE =~ ^[1-9][0-9]*$ ]] || die "SCALE must be a positive integer"
for p in $CHANGES; do [[ $p =~ ^[1-9][0-9]?$ ]] || die "CHANGES holds percents 1-99, not '$p'"; done
[[ $EUID -eq 0 ]] || die "run as root: every timed step drops the page cache"
[[ -w /proc/sys/vm/drop_caches ]] || die "/proc/sys/vm/drop_caches is not writable"
command -v pgbackrest >/dev/null || die "pgbackrest is missing (apt-get install pgbackrest)"
[[ -x /usr/bin/time ]] || die "/usr/bin/time is missing (apt-get install time)"
[[ -x $PGSTRATA ]] || (cd "$REPO_ROOT" && cargo build --release)

WORKDIR=${WORKDIR:-$(mktemp -d /var/tmp/pgstrata-bench-incr-wal.XXXXXX)}
mkdir -p "$WORKDIR"
WORKDIR=$(cd "$WORKDIR" && pwd)
LOGS=$WORKDIR/logs
PGDATA=$WORKDIR/data
SOCK=$WORKDIR
PGS=$WORKDIR/bin/pgstrata
REPO_AUTO=$WORKDIR/pgs-auto REPO_OFF=$WORKDIR/pgs-off PGBR_REPO=$WORKDIR/pgbr
PGBR_CONF=$WORKDIR/pgbackrest.conf
RESULTS=$WORKDIR/incr-wal.tsv
AS_PG=(runuser -u postgres --)
mkdir -p "$LOGS" "$WORKDIR/bin"
install -m 0755 "$PGSTRATA" "$PGS"   # a rebuild during the run must not swap the binary
chown postgres "$WORKDIR" "$LOGS"
chmod 0755 "$WORKDIR"
export PGHOST=$SOCK PGPORT=5432 PGUSER=postgres PGDATABASE=postgres
pg() { "${AS_PG[@]}" "$@"; }
sql() { pg "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -At -c "$1"; }
bytes_of() { if [[ -e $1 ]]; then du -sb "$1" | cut -f1; else echo 0; fi; }
mb() { awk -v b="$1" 'BEGIN { printf "%.1f", b / 1e6 }'; }

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  [[ ! -f $PGDATA/postmaster.pid ]] || pg "$PG_BIN/pg_ctl" -D "$PGDATA" -m fast -w -t 60 stop >/dev/null 2>&1 ||
    pg "$PG_BIN/pg_ctl" -D "$PGDATA" -m immediate -w stop >/dev/null 2>&1 || true
  if [[ $KEEP == 1 ]]; then
    log "kept $WORKDIR (KEEP=1)"
  else
    rm -rf "$PGDATA" "$REPO_AUTO" "$REPO_OFF" "$PGBR_REPO" "$WORKDIR/bin" "$WORKDIR"/pgbr-{lock,spool}
    log "removed the cluster and repositories; results and logs are in $WORKDIR"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

wait_archive() {  # until no segment waits to be archived
  local i
  for ((i = 0; i < 2400; i++)); do
    compgen -G "$PGDATA/pg_wal/archive_status/*.ready" >/dev/null || return 0
    sleep 0.5
  done
  die "WAL archiving did not catch up in 20 minutes (see $LOGS/postgres.log)"
}

# run_io NAME CMD...: with cold caches, run CMD under a wrapper shell that reads
# its own /proc/PID/io once CMD has been reaped; sets WALL (s), RSS (KiB), READ (bytes).
run_io() {
  local name=$1; shift
  local out=$LOGS/$name.log tf=$LOGS/$name.time
  sync
  echo 3 >/proc/sys/vm/drop_caches
  # pgBackRest lets a backup read only once the clock has left the second it
  # started in: every step starts at .85 s past a second, so that this costs
  # each run the same 0.15 s.
  sleep "$(date +%N | awk '{ d = 0.85 - $1 / 1e9; if (d < 0) d += 1; printf "%.3f", d }')"
  log "$name"
  # shellcheck disable=SC2016
  if ! bash -c '/usr/bin/time -f "%e %M" -o "$1" "${@:3}" >"$2" 2>&1; rc=$?
                cat /proc/$$/io >"$1.io"; exit $rc' _ "$tf" "$out" "$@"; then
    tail -25 "$out" >&2
    die "$name failed (log: $out)"
  fi
  read -r WALL RSS < <(tail -n 1 "$tf")
  READ=$(awk '$1 == "read_bytes:" { print $2 }' "$tf.io")
}

pgs_backup() {  # repo mode type -> CMD
  CMD=("${AS_PG[@]}" "$PGS" --repo "$1" --log-level info backup --pgdata "$PGDATA" --type "$3"
       --change-tracking "$2" --start-fast --workers 2 --compress-level 3)
}
backup_cmd() {  # tool type -> CMD
  case $1 in
    pgs_auto) pgs_backup "$REPO_AUTO" auto "$2" ;;
    pgs_off) pgs_backup "$REPO_OFF" off "$2" ;;
    pgbr) CMD=("${AS_PG[@]}" pgbackrest --config="$PGBR_CONF" --stanza=bench --type="$2" backup) ;;
  esac
}
stored_bytes() {  # tool: the repository's bytes, WAL archive excluded
  case $1 in
    pgs_auto) echo $(( $(bytes_of "$REPO_AUTO") - $(bytes_of "$REPO_AUTO/wal") )) ;;
    pgs_off) echo $(( $(bytes_of "$REPO_OFF") - $(bytes_of "$REPO_OFF/wal") )) ;;
    pgbr) bytes_of "$PGBR_REPO/backup" ;;
  esac
}
TOOLS=(pgs_auto pgs_off pgbr)
declare -A WALL_OF READ_OF STORED_OF RSS_OF NOTE_OF
printf 'step\ttool\twall_s\tread_bytes\tstored_bytes\tpeak_rss_kib\tnote\n' >"$RESULTS"
record() {  # step tool wall read stored rss note
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$@" >>"$RESULTS"
  WALL_OF[$1/$2]=$3 READ_OF[$1/$2]=$4 STORED_OF[$1/$2]=$5 RSS_OF[$1/$2]=$6 NOTE_OF[$1/$2]=$7
}

# pgstrata's info log of one backup: how it found the changes, the WAL it read.
pgs_note() {  # log -> "source=... wal_read=... named=... rels=... dir_read=..."
  awk '
    /changes found by:/ { sub(/.*changes found by: /, ""); src = $0; gsub(/ /, "_", src) }
    /WAL from .* read in/ { for (i = 1; i <= NF; i++) if ($i == "in") t = $(i + 1); from = $0; sub(/.*WAL from /, "", from); split(from, f, " "); a = f[1]; b = f[3] }
    /WAL since .* names/ { for (i = 1; i <= NF; i++) { if ($i == "names") n = $(i + 1); if ($i == "of") r = $(i + 1) } }
    /copied .* bytes read/ { s = $0; sub(/.*\(/, "", s); split(s, w, " "); dr = w[1] }
    END { printf "source=%s wal_time=%s wal_from=%s wal_to=%s named=%s rels=%s dir_read=%s\n",
                 src == "" ? "-" : src, t == "" ? "-" : t, a == "" ? "-" : a, b == "" ? "-" : b,
                 n == "" ? "-" : n, r == "" ? "-" : r, dr == "" ? "-" : dr }' "$1"
}

run_backups() {  # step type
  local step=$1 type=$2 tool b0 b1 note
  for tool in "${TOOLS[@]}"; do
    wait_archive
    backup_cmd "$tool" "$type"
    b0=$(stored_bytes "$tool")
    run_io "$step.$tool" "${CMD[@]}"
    wait_archive
    b1=$(stored_bytes "$tool")
    note=-
    [[ $tool == pgbr ]] || note=$(pgs_note "$LOGS/$step.$tool.log")
    record "$step" "$tool" "$WALL" "$READ" $((b1 - b0)) "$RSS" "$note"
    if [[ $tool == pgs_auto ]]; then
      WAL_AT_PRIOR=$(bytes_of "$REPO_AUTO/wal")
      PRIOR_START=$(sed -n 's/.*backup mode started at \([0-9A-F]*\/[0-9A-F]*\).*/\1/p' "$LOGS/$step.$tool.log")
    fi
  done
}

# Data directory without pg_wal: relation files (main forks; other forks) and the rest.
sizes() {  # -> "main other_forks nonrel"
  find "$PGDATA" -path "$PGDATA/pg_wal" -prune -o -type f -printf '%s %P\n' | awk '
    { rel = ($2 ~ /^(base\/[0-9]+|global|pg_tblspc\/.*)\/[0-9]+(_(fsm|vm|init))?(\.[0-9]+)?$/) }
    rel && $2 ~ /_(fsm|vm|init)(\.[0-9]+)?$/ { fork += $1; next }
    rel { main += $1; next }
    { other += $1 }
    END { printf "%.0f %.0f %.0f\n", main, fork, other }'
}

# Ground truth, independent of WAL: the relation main-fork pages whose page LSN
# is at or past LSN (with data checksums, a hint-bit write is WAL-logged too).
changed_pages() {  # LSN -> "changed total"
  python3 - "$PGDATA" "$1" <<'PY'
import os, re, sys
root, lsn = sys.argv[1], sys.argv[2]
hi, lo = lsn.split("/")
since = (int(hi, 16) << 32) | int(lo, 16)
changed = total = 0
dirs = ["global"] + ["base/" + d for d in os.listdir(os.path.join(root, "base"))]
for d in dirs:
    for f in os.listdir(os.path.join(root, d)):
        if not re.fullmatch(r"[0-9]+(\.[0-9]+)?", f):
            continue
        with open(os.path.join(root, d, f), "rb") as fh:
            while buf := fh.read(1 << 20):
                for o in range(0, len(buf) - 8191, 8192):
                    total += 1
                    page_lsn = (int.from_bytes(buf[o:o + 4], "little") << 32) | int.from_bytes(buf[o + 4:o + 8], "little")
                    changed += page_lsn >= since
print(changed, total)
PY
}

# ---------------------------------------------------------------- cluster
log "workdir $WORKDIR; SCALE=$SCALE CHANGES=$CHANGES"
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)   # the machine may be shared: say how busy it was
pg "$PG_BIN/initdb" -D "$PGDATA" -k -U postgres -A trust -E UTF8 --locale=C >"$LOGS/initdb.log" 2>&1 ||
  { cat "$LOGS/initdb.log" >&2; die "initdb failed"; }
cat >>"$PGDATA/postgresql.conf" <<EOF
listen_addresses = ''
unix_socket_directories = '$SOCK'
wal_level = replica
archive_mode = on
archive_command = 'true'
shared_buffers = 256MB
max_wal_size = 4GB
autovacuum = off
log_checkpoints = on
EOF
pg tee "$PGBR_CONF" >/dev/null <<EOF
[global]
repo1-path=$PGBR_REPO
repo1-retention-full=99
repo1-bundle=y
repo1-block=y
beta=y
compress-type=zst
compress-level=3
process-max=2
start-fast=y
archive-check=y
log-level-console=warn
log-level-file=info
log-path=$LOGS
lock-path=$WORKDIR/pgbr-lock
spool-path=$WORKDIR/pgbr-spool

[bench]
pg1-path=$PGDATA
pg1-socket-path=$SOCK
pg1-user=postgres
EOF
pg "$PGS" --repo "$REPO_AUTO" init >/dev/null
pg "$PGS" --repo "$REPO_OFF" init >/dev/null
pg "$PG_BIN/pg_ctl" -D "$PGDATA" -l "$LOGS/postgres.log" -w -t 120 start >/dev/null ||
  { tail -20 "$LOGS/postgres.log" >&2; die "the cluster did not start"; }

log "pgbench -i -s $SCALE (WAL not archived)"
pg pgbench -i -q -s "$SCALE" >"$LOGS/pgbench-init.log" 2>&1 ||
  { tail -20 "$LOGS/pgbench-init.log" >&2; die "pgbench -i failed"; }
sql CHECKPOINT
# Every repository gets each segment at the same moment (the pushes run in parallel).
ARCHIVE_CMD="{ $PGS --repo $REPO_AUTO archive-push %p & a=\$!; $PGS --repo $REPO_OFF archive-push %p & o=\$!;"
ARCHIVE_CMD+=" pgbackrest --config=$PGBR_CONF --stanza=bench archive-push %p && wait \$a && wait \$o; }"
sql "ALTER SYSTEM SET archive_command = '$ARCHIVE_CMD'"
sql "SELECT pg_reload_conf()" >/dev/null
sleep 1
pg pgbackrest --config="$PGBR_CONF" --stanza=bench stanza-create >"$LOGS/stanza-create.log" 2>&1 ||
  { cat "$LOGS/stanza-create.log" >&2; die "pgbackrest stanza-create failed"; }
pg pgbackrest --config="$PGBR_CONF" --stanza=bench check >"$LOGS/check.log" 2>&1 ||
  { cat "$LOGS/check.log" >&2; die "pgbackrest check failed (archive_command?)"; }
wait_archive
read -r MAIN_BYTES FORK_BYTES NONREL_BYTES < <(sizes)
BASE_BYTES=$(bytes_of "$PGDATA/base")
DATA_BYTES=$((MAIN_BYTES + FORK_BYTES + NONREL_BYTES))
log "base/ $BASE_BYTES bytes; without pg_wal: main forks $MAIN_BYTES, other forks $FORK_BYTES, non-relation files $NONREL_BYTES"

# ---------------------------------------------------------------- sanity, binaries
run_io seqread sh -c "find '$PGDATA' -path '$PGDATA/pg_wal' -prune -o -type f -print0 | xargs -0 cat >/dev/null"
record seqread floor "$WALL" "$READ" - "$RSS" "cold sequential read of $DATA_BYTES bytes (pg_wal left out)"
run_io binaries.pgstrata "${AS_PG[@]}" "$PGS" --version
record binaries pgstrata "$WALL" "$READ" - "$RSS" "pgstrata --version, cold"
run_io binaries.pgbr "${AS_PG[@]}" pgbackrest version
record binaries pgbr "$WALL" "$READ" - "$RSS" "pgbackrest version, cold"

# ---------------------------------------------------------------- full, then incrs
run_backups full full
declare -A PAGES ROWS_UPDATED WAL_ARCHIVED TRUTH
lp=2   # a line pointer no earlier round has updated, so that every chosen page gets its row
for pct in $CHANGES; do
  n=$(sql "SELECT pg_relation_size('pgbench_accounts') / 8192")
  k=$(( (n * pct + 99) / 100 ))
  log "change $pct%: one row in each of $k of $n pages of pgbench_accounts"
  ROWS_UPDATED[$pct]=$(sql "WITH u AS (UPDATE pgbench_accounts SET abalance = abalance + 1
      WHERE ctid = ANY (ARRAY(SELECT format('(%s,%s)', i * $n / $k, $lp)::tid
                              FROM generate_series(0::bigint, $k - 1) i)) RETURNING 1)
    SELECT count(*) FROM u")
  PAGES[$pct]=$k
  lp=$((lp + 1))
  sql CHECKPOINT
  sql "SELECT pg_switch_wal()" >/dev/null
  wait_archive
  WAL_ARCHIVED[$pct]=$(( $(bytes_of "$REPO_AUTO/wal") - WAL_AT_PRIOR ))
  log "change $pct%: counting the pages written since $PRIOR_START"
  TRUTH[$pct]=$(changed_pages "$PRIOR_START")
  run_backups "incr$pct" incr
  src=$(sed -n 's/.*source=\([^ ]*\).*/\1/p' <<<"${NOTE_OF[incr$pct/pgs_auto]}")
  [[ $src == archived-wal ]] || log "WARNING: incr $pct% with --change-tracking auto: changes found by $src"
done

# ---------------------------------------------------------------- report
kv() { sed -n "s/.*\\b$2=\\([^ ]*\\).*/\\1/p" <<<"${NOTE_OF[$1]}"; }
lsn_bytes() {  # X/Y X/Y -> bytes between
  python3 -c 'import sys
def v(s): h, l = s.split("/"); return (int(h, 16) << 32) | int(l, 16)
print(v(sys.argv[2]) - v(sys.argv[1]))' "$1" "$2" 2>/dev/null || echo -
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b + 0 == 0 || a == "-") print "-"; else printf "%.3f", a / b }'; }
declare -A HEAD=([pgs_auto]="pgstrata --change-tracking auto" [pgs_off]="pgstrata --change-tracking off" [pgbr]="pgBackRest block incr")
{
  echo
  echo "incr-wal profile $(date -u +%Y-%m-%dT%H:%M:%SZ): pgbench -i -s $SCALE; base/ $(mb "$BASE_BYTES") MB;" \
       "data directory without pg_wal $(mb "$DATA_BYTES") MB (main forks $(mb "$MAIN_BYTES"), other forks" \
       "$(mb "$FORK_BYTES"), non-relation files $(mb "$NONREL_BYTES")); pgBackRest $(pgbackrest version | awk '{print $2}')," \
       "zstd -3, 2 workers/processes; every step with cold caches; load average at the start $LOAD_START"
  echo
  echo "| step | tool | wall s | read MB | stored MB | peak RSS MiB | wall / pgBackRest | read / pgBackRest |"
  echo "|---|---|---|---|---|---|---|---|"
  for step in full $(for p in $CHANGES; do printf 'incr%s ' "$p"; done); do
    for t in "${TOOLS[@]}"; do
      printf '| %s | %s | %s | %s | %s | %s | %s | %s |\n' "$step" "${HEAD[$t]}" "${WALL_OF[$step/$t]}" \
        "$(mb "${READ_OF[$step/$t]}")" "$(mb "${STORED_OF[$step/$t]}")" $((RSS_OF[$step/$t] / 1024)) \
        "$(ratio "${WALL_OF[$step/$t]}" "${WALL_OF[$step/pgbr]}")" "$(ratio "${READ_OF[$step/$t]}" "${READ_OF[$step/pgbr]}")"
    done
  done
  echo
  echo "floor: cold sequential read of the data directory (pg_wal left out): ${WALL_OF[seqread/floor]} s," \
       "read $(mb "${READ_OF[seqread/floor]}") MB of $(mb "$DATA_BYTES") MB"
  echo "binaries (cold, counted in every read above): pgstrata --version $(mb "${READ_OF[binaries/pgstrata]}") MB," \
       "pgbackrest version $(mb "${READ_OF[binaries/pgbr]}") MB"
  for pct in $CHANGES; do
    a=incr$pct/pgs_auto
    changed=$((PAGES[$pct] * 8192))
    named=$(kv "$a" named)
    named_bytes=-; [[ $named == - ]] || named_bytes=$((named * 8192))
    wal_span=$(lsn_bytes "$(kv "$a" wal_from)" "$(kv "$a" wal_to)")
    dir_read=$(kv "$a" dir_read)
    target_read=$((2 * changed + NONREL_BYTES))
    echo
    echo "change $pct%: ${ROWS_UPDATED[$pct]} rows updated in ${PAGES[$pct]} pages of pgbench_accounts" \
         "($(mb "$changed") MB of pages); WAL names $named blocks ($(mb "$named_bytes") MB) of $(kv "$a" rels) relations;" \
         "relation pages with a page LSN at or past the prior start: ${TRUTH[$pct]% *} of ${TRUTH[$pct]#* }" \
         "($(mb $((${TRUTH[$pct]% *} * 8192))) MB)"
    echo "  pgstrata auto: changes found by $(kv "$a" source); WAL $(kv "$a" wal_from) to $(kv "$a" wal_to)" \
         "($(mb "$wal_span") MB of WAL, $(mb "${WAL_ARCHIVED[$pct]}") MB compressed in the repository) read in $(kv "$a" wal_time);" \
         "data directory bytes read (pgstrata's count) $(mb "$dir_read") MB; off: $(mb "$(kv "incr$pct/pgs_off" dir_read)") MB"
    rest=-
    [[ $dir_read == - ]] ||
      rest=$((READ_OF[$a] - READ_OF[binaries/pgstrata] - dir_read - WAL_ARCHIVED[$pct]))
    truth_bytes=$((${TRUTH[$pct]% *} * 8192))
    echo "  read <= 2 x pages written (page LSN) + non-relation files = $(mb $((2 * truth_bytes + NONREL_BYTES))) MB:" \
         "data directory $(mb "$dir_read") MB = $(ratio "$dir_read" "$truth_bytes") x the pages written"
    echo "  target read <= 2 x updated pages + non-relation files = $(mb "$target_read") MB:" \
         "pgstrata's data-directory count $(mb "$dir_read") MB, whole process tree $(mb "${READ_OF[$a]}") MB" \
         "(the rest, without binaries, data directory and archived WAL: $(mb "$rest") MB)"
    echo "  target wall <= 0.1 x pgBackRest: $(ratio "${WALL_OF[$a]}" "${WALL_OF[incr$pct/pgbr]}")"
  done
  echo "raw numbers: $RESULTS"
} | tee "$WORKDIR/incr-wal.md"
