#!/usr/bin/env bash
# End-to-end benchmark: pgstrata side by side with pgBackRest on one throwaway cluster.
#
# usage: scripts/bench.sh [NAME=VALUE ...]        (settings as arguments or environment)
#   PROFILE=default     default: the steps below. archive: WAL burst archiving and replay
#                       (scripts/bench/archive.sh; SEGMENTS=100). s3: the steps below with
#                       every repository in a local S3-compatible server (moto_server behind
#                       scripts/s3proxy.py, over TLS); adds request counts per step
#                       (PUT/GET/LIST/HEAD/DELETE, WAL archiving left out). month: a month
#                       of hourly backups of ~60,000 files, catalog and copies per backup,
#                       info/verify/expire with 720 backups (scripts/bench/month.sh).
#                       many-files: every command's memory and time on clusters of
#                       ~12,000 and ~200,000 files (SIZES=tables; scripts/bench/many-files.sh)
#                       s3-catalog: the catalog object each backup publishes to object
#                       storage (a delta or a full) against the whole catalog, hourly-like
#                       incrs of ~61,000 files (TABLES, BACKUPS; scripts/bench/s3-catalog.sh)
#                       big: the steps below on ~20 GB (ROWS=44000000 SCALE=440, 22x the
#                       default), to compare per-GB times and peak memory with the default
#                       profile's; one run of full #1 (restore keeps its RESTORE_PAIRS rounds),
#                       no page-level ground truth (two 20 GB snapshots), the data load not
#                       archived (no backup needs it)
#                       incr-wal: incrs that find the changed blocks from the archived WAL
#                       against pgstrata's file scan and pgBackRest's block incremental, on
#                       pgbench -i -s 300 (~4.9 GB) with 1% and 10% of pgbench_accounts'
#                       pages changed: wall, bytes read from storage, bytes stored
#                       (SCALE=300, CHANGES="1 10"; root; scripts/bench/incr-wal.sh)
#   ROWS=2000000        rows of scripts/bench/dataset.sql (events; docs gets ROWS/4)
#   SCALE=20            pgbench scale (pgbench -i -s SCALE)
#   TXNS=10000          workload transactions per client (2 clients): the "hour of change"
#   FULL_RUNS=3         full #1 is timed this many times, the median reported (one run on
#                       this shared machine can be 20% off): the extra runs come first,
#                       each tool backing up into a scratch repository of its own
#   WORKDIR=            scratch directory (default: a new mktemp dir under /var/tmp);
#                       the cluster owner (postgres) must be able to traverse it
#   PGSTRATA=           pgstrata binary (default target/release/pgstrata; built with
#                       `cargo build --release` if missing: the figures are for the
#                       binary operators install; to profile, build with
#                       `cargo build --profile profiling` and point PGSTRATA at
#                       target/profiling/pgstrata)
#   SKIP_PGSTRATA=1     leave pgstrata out (pgBackRest columns and ground truth only)
#   PGS_BASELINE=       a second pgstrata binary (e.g. one built from the previous main): adds
#                       a column, pgstrata_base, with its own repository, WAL archive and
#                       backups, its restores interleaved with the others', to compare a
#                       change with its baseline in one run
#   RESTORE_PAIRS=5     restore rounds (at least 5); see "restore" below
#   ENCRYPTED=1         add a column: pgstrata on an encrypted repository (init --encrypt,
#                       passphrase from a 0600 file), to compare with the plain one (0: skip)
#   VERIFY=1            start every restored cluster and compare row counts (0: skip)
#   KEEP=1              keep everything in WORKDIR (default: remove the cluster, repositories
#                       and copies on exit; results.tsv, results.md and logs/ are kept)
#   PG_BIN=/usr/lib/postgresql/15/bin
# Run it niced on a shared machine:  nice -n 10 scripts/bench.sh
#
# Steps (each timed with /usr/bin/time: wall seconds and peak RSS; "stored" is what the
# step added to the repository's backup area, measured with du -sb before and after,
# WAL archive excluded; the whole-repository delta is in results.tsv too):
#   full #1   pgstrata, pgBackRest file-level, pgBackRest bundle+block; floor: tar | zstd -3 -T2
#             (every backup is started at .85 s past a second: pgBackRest waits for
#             the start second to pass, which then costs it the same 0.15 s each time;
#             pgstrata does not wait)
#   change    pgbench workload.sql (2 clients), CHECKPOINT; ground truth: pagediff.py OLD NEW
#   incr      each tool
#   full #2   each tool, no change since the incr
#   restore   latest backup into an empty directory, in RESTORE_PAIRS interleaved rounds: each
#             round runs every tool once in a fixed order (pgstrata, pgBackRest file-level,
#             pgstrata_base, pgBackRest bundle+block, pgstrata encrypted, the floors), each
#             run after rm -rf of the previous target, sync and echo 3 >
#             /proc/sys/vm/drop_caches (when writable; the output says when not), so that
#             every restore reads cold and a slow spell of the machine hits neighbours alike.
#             Reported: each tool's median and min-max, and pgstrata's median over
#             pgBackRest file-level's (and over pgstrata_base's). Floor: cp -a PGDATA/base
#             (which, unlike a restore, does not make what it wrote durable), and
#             cp -a PGDATA/base && sync -f (which does, as a restore's syncfs).
#             The copies of round 1 are the ones started and checked (VERIFY).
# Output: one markdown table on stdout (also WORKDIR/results.md) and WORKDIR/results.tsv.
set -euo pipefail

usage() { sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'; }

for arg in "$@"; do
  case $arg in
    -h|--help) usage; exit 0 ;;
    PROFILE=*|CHANGES=*|FULL_RUNS=*|RESTORE_PAIRS=*|PGS_BASELINE=*|SEGMENTS=*|SIZES=*|TABLES=*|BACKUPS=*|CHANGED=*|KEEP_BACKUPS=*|PGBR=*|ROWS=*|SCALE=*|TXNS=*|WORKDIR=*|PGSTRATA=*|SKIP_PGSTRATA=*|ENCRYPTED=*|VERIFY=*|KEEP=*|PG_BIN=*)
      export "${arg?}" ;;
    *) echo "bench.sh: unknown argument '$arg' (see --help)" >&2; exit 2 ;;
  esac
done

S3=0 BIG=0
case ${PROFILE:-default} in
  default) ;;
  archive) exec "$(dirname "${BASH_SOURCE[0]}")/bench/archive.sh" ;;
  month) exec "$(dirname "${BASH_SOURCE[0]}")/bench/month.sh" ;;
  many-files) exec "$(dirname "${BASH_SOURCE[0]}")/bench/many-files.sh" ;;
  s3-catalog) exec "$(dirname "${BASH_SOURCE[0]}")/bench/s3-catalog.sh" ;;
  incr-wal) exec "$(dirname "${BASH_SOURCE[0]}")/bench/incr-wal.sh" ;;
  s3) S3=1; ENCRYPTED=${ENCRYPTED:-0} ;;
  big) BIG=1; ROWS=${ROWS:-44000000}; SCALE=${SCALE:-440}; FULL_RUNS=${FULL_RUNS:-1}
       ENCRYPTED=${ENCRYPTED:-0} ;;
  *) echo "bench.sh: unknown PROFILE '$PROFILE' (default, archive, s3, s3-catalog, month, many-files, big, incr-wal)" >&2; exit 2 ;;
esac

ROWS=${ROWS:-2000000}
SCALE=${SCALE:-20}
TXNS=${TXNS:-10000}
FULL_RUNS=${FULL_RUNS:-3}
RESTORE_PAIRS=${RESTORE_PAIRS:-5}
PGS_BASELINE=${PGS_BASELINE:-}
CLIENTS=2
SKIP_PGSTRATA=${SKIP_PGSTRATA:-0}
ENCRYPTED=${ENCRYPTED:-1}
[[ $SKIP_PGSTRATA == 1 ]] && ENCRYPTED=0
VERIFY=${VERIFY:-1}
KEEP=${KEEP:-0}
PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
PGSTRATA_WAL_SUBDIR=${PGSTRATA_WAL_SUBDIR:-wal}   # where pgstrata keeps archived WAL in its repo
REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PGSTRATA=${PGSTRATA:-$REPO_ROOT/target/release/pgstrata}
SRC_BENCH=$REPO_ROOT/scripts/bench

for v in ROWS SCALE TXNS FULL_RUNS RESTORE_PAIRS; do
  [[ ${!v} =~ ^[1-9][0-9]*$ ]] || { echo "bench.sh: $v must be a positive integer" >&2; exit 2; }
done
# Fewer rounds give no median and spread worth reading.
((RESTORE_PAIRS >= 5)) || { echo "bench.sh: RESTORE_PAIRS must be at least 5" >&2; exit 2; }
if [[ -n $PGS_BASELINE ]]; then
  [[ -f $PGS_BASELINE && -x $PGS_BASELINE ]] ||
    { echo "bench.sh: PGS_BASELINE $PGS_BASELINE is not an executable file" >&2; exit 2; }
  PGS_BASELINE=$(cd "$(dirname "$PGS_BASELINE")" && pwd)/$(basename "$PGS_BASELINE")
fi

log() { printf '[bench %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { printf 'bench.sh: %s\n' "$*" >&2; exit 1; }

# ---------------------------------------------------------------- prerequisites
# PostgreSQL refuses to run as root: as root, every server-side command runs as postgres.
if [[ $EUID -eq 0 ]]; then
  PGOS=postgres
  id "$PGOS" >/dev/null 2>&1 || die "user postgres does not exist"
  AS_PG=(runuser -u "$PGOS" --)
else
  PGOS=$(id -un)
  AS_PG=()
fi

need_pkgs=()
command -v pgbackrest >/dev/null || need_pkgs+=(pgbackrest)
command -v zstd >/dev/null || need_pkgs+=(zstd)
[[ -x /usr/bin/time ]] || need_pkgs+=(time)
command -v python3 >/dev/null || need_pkgs+=(python3)
if ((${#need_pkgs[@]})); then
  [[ $EUID -eq 0 ]] || die "missing packages: ${need_pkgs[*]} (install them, or run as root)"
  log "installing ${need_pkgs[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_pkgs[@]}" >/dev/null
fi
[[ -x $PG_BIN/initdb ]] || die "no PostgreSQL server binaries in $PG_BIN (set PG_BIN)"
for f in dataset.sql workload.sql pagediff.py; do
  [[ -r $SRC_BENCH/$f ]] || die "missing $SRC_BENCH/$f"
done

if [[ $SKIP_PGSTRATA != 1 && ! -x $PGSTRATA ]]; then
  log "no pgstrata binary at $PGSTRATA: building it"
  (cd "$REPO_ROOT" && cargo build --release)
  PGSTRATA=$REPO_ROOT/target/release/pgstrata
  [[ -x $PGSTRATA ]] || die "cargo build did not produce $PGSTRATA"
fi

# ---------------------------------------------------------------- work directory
if [[ -z ${WORKDIR:-} ]]; then
  WORKDIR=$(mktemp -d /var/tmp/pgstrata-bench.XXXXXX)
else
  mkdir -p "$WORKDIR"
  [[ -z $(ls -A "$WORKDIR") ]] || die "WORKDIR $WORKDIR is not empty"
fi
WORKDIR=$(cd "$WORKDIR" && pwd)
[[ $WORKDIR != *[[:space:]\'\"\\]* ]] || die "WORKDIR must not contain spaces or quotes: $WORKDIR"
[[ $EUID -ne 0 ]] || chown "$PGOS:" "$WORKDIR"
chmod 0750 "$WORKDIR"
"${AS_PG[@]}" test -x "$WORKDIR" -a -w "$WORKDIR" ||
  die "$PGOS cannot use $WORKDIR (every parent directory must be traversable by $PGOS)"
cd "$WORKDIR"   # postgres-run commands inherit the cwd: it must be one they can enter

PGDATA=$WORKDIR/pgdata
LOGS=$WORKDIR/logs
BENCH=$WORKDIR/bench             # private copy of the generator, readable by postgres
PGBR_CONF=$WORKDIR/pgbackrest.conf
PGBR_BASE1=$WORKDIR/pgbr-file    # repo1: file-level
PGBR_BASE2=$WORKDIR/pgbr-block   # repo2: bundle + block incremental
PGS_BASE=$WORKDIR/pgstrata-repo
PGS_ENC_BASE=$WORKDIR/pgstrata-enc-repo
PGS_PASS=$WORKDIR/pgstrata-enc.pass
PGS=$WORKDIR/bin/pgstrata
PGSB_BASE=$WORKDIR/pgstrata-base-repo   # pgstrata_base (PGS_BASELINE): its repository
PGSB=$WORKDIR/bin/pgstrata-base
# pgstrata's settings (repository, S3) live in config files, so that the extra
# full #1 runs can point every command, archive_command too, at scratch repositories.
PGS_CONF=$WORKDIR/pgstrata.toml
PGS_ENC_CONF=$WORKDIR/pgstrata-enc.toml
PGSB_CONF=$WORKDIR/pgstrata-base.toml
PGS_ARGS=(--config "$PGS_CONF")
PGSB_ARGS=(--config "$PGSB_CONF")
SUFFIX=                          # "" for the repositories of record, "-runK" for scratch ones
RESULTS=$WORKDIR/results.tsv
SOCK=$WORKDIR/s                  # private socket dir: no TCP, no port clash
VSOCK=$WORKDIR/v                 # socket dir for verifying restored clusters
PORT=5432
# A Unix socket path must stay under ~100 bytes (sun_path).
if (( ${#WORKDIR} + 20 > 100 )); then
  SOCK=$(mktemp -d /tmp/pgsb.XXXXXX); VSOCK=$SOCK/v
  [[ $EUID -ne 0 ]] || chown "$PGOS:" "$SOCK"
fi
EXTRA_DIRS=()
[[ $SOCK == "$WORKDIR"/* ]] || EXTRA_DIRS+=("$SOCK")

"${AS_PG[@]}" mkdir -p "$LOGS" "$BENCH" "$SOCK" "$VSOCK" \
  "$WORKDIR/pgbr-lock" "$WORKDIR/pgbr-spool" "$LOGS/pgbackrest"
for ((k = 2; k <= FULL_RUNS; k++)); do
  EXTRA_DIRS+=("$PGBR_BASE1-run$k" "$PGBR_BASE2-run$k" "$PGS_BASE-run$k" "$PGS_ENC_BASE-run$k" "$WORKDIR/pgs-cache-run$k"
               "$PGSB_BASE-run$k" "$WORKDIR/pgs-base-cache-run$k")
done
cp "$SRC_BENCH"/{dataset.sql,workload.sql,pagediff.py} "$BENCH"/
chmod a+r "$BENCH"/*
# Private copies: postgres's archive_command must be able to execute them, and a rebuild
# during the run must not swap binaries under the benchmark.
"${AS_PG[@]}" mkdir -p "$WORKDIR/bin"
[[ $SKIP_PGSTRATA == 1 ]] || install -m 0755 "$PGSTRATA" "$PGS"
[[ -z $PGS_BASELINE ]] || install -m 0755 "$PGS_BASELINE" "$PGSB"

export PGHOST=$SOCK PGPORT=$PORT PGUSER=postgres PGDATABASE=postgres
unset PGSERVICE PGSERVICEFILE PGOPTIONS PGPASSWORD 2>/dev/null || true

# ---------------------------------------------------------------- cleanup
CLUSTERS_UP=()
cleanup() {
  local rc=$? d
  trap - EXIT INT TERM
  for d in "${CLUSTERS_UP[@]}"; do
    [[ -f $d/postmaster.pid ]] || continue
    "${AS_PG[@]}" "$PG_BIN/pg_ctl" -D "$d" -m fast -w -t 60 stop >/dev/null 2>&1 ||
      "${AS_PG[@]}" "$PG_BIN/pg_ctl" -D "$d" -m immediate -w stop >/dev/null 2>&1 || true
  done
  [[ $S3 != 1 ]] || s3_stop
  if [[ $KEEP == 1 ]]; then
    log "kept $WORKDIR (KEEP=1)"
  else
    rm -rf "$PGDATA" "$PGBR_BASE1" "$PGBR_BASE2" "$PGS_BASE" "$PGS_ENC_BASE" "$PGSB_BASE" "$WORKDIR"/snap-* \
      "$WORKDIR"/restore-* "${WORKDIR:?}/bin" "$WORKDIR/pgbr-lock" "$WORKDIR/pgbr-spool" \
      "$SOCK" "$VSOCK" "${EXTRA_DIRS[@]}"
    log "removed the cluster, repositories and copies; results and logs are in $WORKDIR"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------- helpers
PSQL=("${AS_PG[@]}" psql -X -q -v ON_ERROR_STOP=1)
sql() { "${PSQL[@]}" -At -c "$1"; }

median() { printf '%s\n' "$@" | sort -n | awk '{ a[NR] = $1 } END { print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }

bytes_of() { if [[ -e $1 ]]; then du -sb "$1" | cut -f1; else echo 0; fi; }

# WAL archiving runs in the background; let it drain so that it neither overlaps the
# next timed step nor hides a broken archive_command.
wait_archive() {
  local i
  for ((i = 0; i < 1200; i++)); do
    if ! compgen -G "$PGDATA/pg_wal/archive_status/*.ready" >/dev/null; then return 0; fi
    sleep 0.5
  done
  sql "SELECT * FROM pg_stat_archiver" >&2 || true
  tail -20 "$LOGS/postgres.log" >&2
  die "WAL archiving did not catch up in 10 minutes (see $LOGS/postgres.log)"
}

# measure STEP TOOL CMD...: run CMD timed; sets WALL (s) and RSS (KiB).
measure() {
  local step=$1 tool=$2; shift 2
  local out=$LOGS/$step.$tool.log tf=$LOGS/$step.$tool.time
  sync
  log "$step: $tool"
  if ! /usr/bin/time -f '%e %M' -o "$tf" "$@" >"$out" 2>&1; then
    echo "---- $step / $tool failed; last lines of $out:" >&2
    tail -25 "$out" >&2
    die "$step / $tool failed"
  fi
  read -r WALL RSS < <(tail -n 1 "$tf")
}

printf 'step\ttool\twall_s\tpeak_rss_kib\tstored_bytes\trepo_delta_bytes\treported_bytes\tnote\n' >"$RESULTS"
declare -A CELL_WALL CELL_RSS CELL_STORED
record() {  # step tool wall rss stored repo_delta reported note
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$@" >>"$RESULTS"
  CELL_WALL[$1/$2]=$3; CELL_RSS[$1/$2]=$4; CELL_STORED[$1/$2]=$5
}

# Size of a repository's backup area (WAL archive excluded) and of the whole repository.
backup_bytes() {
  if [[ $S3 == 1 ]]; then
    case $1 in
      pgstrata|pgstrata_base) s3_bytes "$(s3_prefix "$1")" wal ;;
      pgbr_file|pgbr_block) s3_bytes "$(s3_prefix "$1")/backup" ;;
    esac
    return
  fi
  case $1 in
    pgstrata) echo $(( $(bytes_of "$PGS_REPO") - $(bytes_of "$PGS_REPO/$PGSTRATA_WAL_SUBDIR") )) ;;
    pgstrata_enc) echo $(( $(bytes_of "$PGS_ENC_REPO") - $(bytes_of "$PGS_ENC_REPO/$PGSTRATA_WAL_SUBDIR") )) ;;
    pgstrata_base) echo $(( $(bytes_of "$PGSB_REPO") - $(bytes_of "$PGSB_REPO/$PGSTRATA_WAL_SUBDIR") )) ;;
    pgbr_file) bytes_of "$PGBR_REPO1/backup" ;;
    pgbr_block) bytes_of "$PGBR_REPO2/backup" ;;
  esac
}
repo_bytes() {
  if [[ $S3 == 1 ]]; then
    case $1 in
      pgstrata|pgstrata_base|pgbr_file|pgbr_block) s3_bytes "$(s3_prefix "$1")" ;;
    esac
    return
  fi
  case $1 in
    pgstrata) bytes_of "$PGS_REPO" ;;
    pgstrata_enc) bytes_of "$PGS_ENC_REPO" ;;
    pgstrata_base) bytes_of "$PGSB_REPO" ;;
    pgbr_file) bytes_of "$PGBR_REPO1" ;;
    pgbr_block) bytes_of "$PGBR_REPO2" ;;
  esac
}

# pgstrata's own figure for the newest backup (info --output json: stored_bytes).
pgstrata_reported() {  # binary repo-args...
  local bin=$1; shift
  "${AS_PG[@]}" "$bin" "$@" info --output json 2>/dev/null | python3 -c '
import json, sys
try:
    d = json.load(sys.stdin)
    b = [b for c in d["clusters"] for b in c["backups"]]
    b.sort(key=lambda x: (x.get("stop_time") or "", x.get("id") or ""))
    print(b[-1]["stored_bytes"])
except Exception:
    print("-")' || echo -
}

TOOLS=(pgbr_file pgbr_block)
[[ $ENCRYPTED != 1 ]] || TOOLS=(pgstrata_enc "${TOOLS[@]}")
[[ -z $PGS_BASELINE ]] || TOOLS=(pgstrata_base "${TOOLS[@]}")
[[ $SKIP_PGSTRATA == 1 ]] || TOOLS=(pgstrata "${TOOLS[@]}")
ENC_ARGS=(--config "$PGS_ENC_CONF")

backup_cmd() {  # tool type -> sets CMD
  case $1 in
    pgstrata) CMD=("${AS_PG[@]}" "$PGS" "${PGS_ARGS[@]}" backup --pgdata "$PGDATA" --type "$2"
                   --start-fast --workers 2 --compress-level 3) ;;
    pgstrata_enc) CMD=("${AS_PG[@]}" "$PGS" "${ENC_ARGS[@]}" backup --pgdata "$PGDATA" --type "$2"
                   --start-fast --workers 2 --compress-level 3) ;;
    pgstrata_base) CMD=("${AS_PG[@]}" "$PGSB" "${PGSB_ARGS[@]}" backup --pgdata "$PGDATA" --type "$2"
                   --start-fast --workers 2 --compress-level 3) ;;
    pgbr_file) CMD=("${AS_PG[@]}" pgbackrest --config="$PGBR_CONF" --stanza=bench --repo=1 --type="$2" backup) ;;
    pgbr_block) CMD=("${AS_PG[@]}" pgbackrest --config="$PGBR_CONF" --stanza=bench --repo=2 --type="$2" backup) ;;
  esac
}

# Where each tool keeps its repository and its WAL archive in the bucket.
s3_prefix() {
  case $1 in
    pgstrata) echo "pgstrata$SUFFIX" ;; pgstrata_base) echo "pgstrata-base$SUFFIX" ;;
    pgbr_file) echo "pgbr-file$SUFFIX" ;; pgbr_block) echo "pgbr-block$SUFFIX" ;;
  esac
}
s3_wal() { case $1 in pgstrata*) echo wal ;; *) echo archive ;; esac; }
declare -A REQ

run_backups() {  # step type
  local step=$1 type=$2 tool b0 r0 b1 r1 rep
  for tool in "${TOOLS[@]}"; do
    wait_archive
    backup_cmd "$tool" "$type"
    b0=$(backup_bytes "$tool"); r0=$(repo_bytes "$tool")
    # pgBackRest lets a backup read only once the clock has left the second it
    # started in (so that a later write changes a timestamp the next backup
    # sees): started at a random moment that costs 0 to 1 s. Every backup
    # starts at .85 s past a second, so that cost is the same in every run
    # (pgstrata, which does not wait, is started the same way).
    sleep "$(date +%N | awk '{ d = 0.85 - $1 / 1e9; if (d < 0) d += 1; printf "%.3f", d }')"
    [[ $S3 != 1 ]] || s3_mark
    measure "$step" "$tool" "${CMD[@]}"
    [[ $S3 != 1 ]] || REQ[$step/$tool]=$(s3_requests "$(s3_prefix "$tool")" "$(s3_wal "$tool")")
    wait_archive
    b1=$(backup_bytes "$tool"); r1=$(repo_bytes "$tool")
    rep=-
    case $tool in
      pgstrata) rep=$(pgstrata_reported "$PGS" "${PGS_ARGS[@]}") ;;
      pgstrata_enc) rep=$(pgstrata_reported "$PGS" "${ENC_ARGS[@]}") ;;
      pgstrata_base) rep=$(pgstrata_reported "$PGSB" "${PGSB_ARGS[@]}") ;;
    esac
    record "$step" "$tool" "$WALL" "$RSS" $((b1 - b0)) $((r1 - r0)) "$rep" "--type $type"
  done
}

# ---------------------------------------------------------------- cluster
if [[ $S3 == 1 ]]; then
  # shellcheck source=bench/s3lib.sh
  source "$SRC_BENCH/s3lib.sh"
  s3_start "$WORKDIR"
  log "S3: moto_server behind a TLS proxy on 127.0.0.1:$S3_PORT, bucket $S3_BUCKET"
fi
log "workdir $WORKDIR; ROWS=$ROWS SCALE=$SCALE TXNS=$TXNS x $CLIENTS clients; tools: ${TOOLS[*]}"
"${AS_PG[@]}" "$PG_BIN/initdb" -D "$PGDATA" -k -U postgres -A trust -E UTF8 --locale=C \
  >"$LOGS/initdb.log" 2>&1 || { cat "$LOGS/initdb.log" >&2; die "initdb failed"; }

# Every repository gets each segment at the same moment (the pushes run in
# parallel), so that no column's backups wait longer for their WAL: each
# backup waits for its stop segment to be archived into its own repository.
PUSHES=("pgbackrest --config=$PGBR_CONF --stanza=bench archive-push %p")
[[ $SKIP_PGSTRATA == 1 ]] || PUSHES+=("$PGS ${PGS_ARGS[*]} archive-push %p")
[[ $ENCRYPTED != 1 ]] || PUSHES+=("$PGS ${ENC_ARGS[*]} archive-push %p")
[[ -z $PGS_BASELINE ]] || PUSHES+=("$PGSB ${PGSB_ARGS[*]} archive-push %p")
# All but the last push in the background; the command fails when any of them does.
ARCHIVE_CMD=${PUSHES[-1]}
if ((${#PUSHES[@]} > 1)); then
  ARCHIVE_CMD="{ " waits=
  for ((i = 0; i < ${#PUSHES[@]} - 1; i++)); do
    ARCHIVE_CMD+="${PUSHES[i]} & p$i=\$!; "
    waits+=" && wait \$p$i"
  done
  ARCHIVE_CMD+="${PUSHES[-1]}$waits; }"
fi
cat >>"$PGDATA/postgresql.conf" <<EOF

# ---- pgstrata benchmark
listen_addresses = ''
unix_socket_directories = '$SOCK'
port = $PORT
wal_level = replica
archive_mode = on
archive_command = '$ARCHIVE_CMD'
shared_buffers = 256MB
max_wal_size = 1GB
log_checkpoints = on
EOF

# Two pgBackRest repositories in one stanza: repo1 stores whole files, repo2 bundles files
# and stores block-incremental maps (repo-block is a beta feature in 2.45: beta=y).
# archive-push pushes every segment to both repositories.
PGBR_S3=
if [[ $S3 == 1 ]]; then
  for r in 1 2; do
    PGBR_S3+="repo$r-type=s3
repo$r-s3-bucket=$S3_BUCKET
repo$r-s3-endpoint=localhost
repo$r-storage-port=$S3_PORT
repo$r-s3-region=us-east-1
repo$r-s3-key=$S3_KEY
repo$r-s3-key-secret=$S3_SECRET
repo$r-s3-uri-style=path
repo$r-storage-ca-file=$S3_CA
"
  done
fi
if [[ $ENCRYPTED == 1 ]]; then
  head -c 24 /dev/urandom | base64 >"$PGS_PASS"
  chmod 600 "$PGS_PASS"
  [[ -z ${AS_PG[*]} ]] || chown "$PGOS" "$PGS_PASS"
fi

pgs_s3_conf() {  # file prefix cache-dir: a pgstrata config for a repository in the bucket
  "${AS_PG[@]}" mkdir -p "$3"
  "${AS_PG[@]}" tee "$1" >/dev/null <<EOF
repo = "s3://$S3_BUCKET/$2"
s3-endpoint = "https://127.0.0.1:$S3_PORT"
s3-ca-file = "$S3_CA"
s3-uri-style = "path"
cache-dir = "$3"
EOF
}

# use_repos SUFFIX [init]: point every tool, archive_command included (it reads the
# same config files), at the repositories named with SUFFIX; with init, create them.
use_repos() {
  SUFFIX=$1
  PGS_REPO=$PGS_BASE$SUFFIX PGS_ENC_REPO=$PGS_ENC_BASE$SUFFIX PGSB_REPO=$PGSB_BASE$SUFFIX
  PGBR_REPO1=$PGBR_BASE1$SUFFIX PGBR_REPO2=$PGBR_BASE2$SUFFIX
  if [[ $S3 == 1 ]]; then
    PGBR_REPO1=/pgbr-file$SUFFIX PGBR_REPO2=/pgbr-block$SUFFIX
    pgs_s3_conf "$PGS_CONF" "pgstrata$SUFFIX" "$WORKDIR/pgs-cache$SUFFIX"
    [[ -z $PGS_BASELINE ]] || pgs_s3_conf "$PGSB_CONF" "pgstrata-base$SUFFIX" "$WORKDIR/pgs-base-cache$SUFFIX"
  else
    "${AS_PG[@]}" mkdir -p "$PGBR_REPO1" "$PGBR_REPO2"
    printf 'repo = "%s"\n' "$PGS_REPO" | "${AS_PG[@]}" tee "$PGS_CONF" >/dev/null
    [[ -z $PGS_BASELINE ]] ||
      printf 'repo = "%s"\n' "$PGSB_REPO" | "${AS_PG[@]}" tee "$PGSB_CONF" >/dev/null
  fi
  printf 'repo = "%s"\npassphrase-file = "%s"\n' "$PGS_ENC_REPO" "$PGS_PASS" |
    "${AS_PG[@]}" tee "$PGS_ENC_CONF" >/dev/null
  "${AS_PG[@]}" tee "$PGBR_CONF" >/dev/null <<EOF
[global]
${PGBR_S3}repo1-path=$PGBR_REPO1
repo1-retention-full=99
repo2-path=$PGBR_REPO2
repo2-retention-full=99
repo2-bundle=y
repo2-block=y
beta=y
compress-type=zst
compress-level=3
process-max=2
start-fast=y
archive-check=y
log-level-console=warn
log-level-file=info
log-path=$LOGS/pgbackrest
lock-path=$WORKDIR/pgbr-lock
spool-path=$WORKDIR/pgbr-spool

[bench]
pg1-path=$PGDATA
pg1-socket-path=$SOCK
pg1-port=$PORT
pg1-user=postgres
EOF
  [[ ${2:-} == init ]] || return 0
  if [[ $SKIP_PGSTRATA != 1 ]]; then
    "${AS_PG[@]}" "$PGS" "${PGS_ARGS[@]}" init >"$LOGS/pgstrata-init$SUFFIX.log" 2>&1 ||
      { cat "$LOGS/pgstrata-init$SUFFIX.log" >&2; die "pgstrata init failed"; }
  fi
  if [[ -n $PGS_BASELINE ]]; then
    "${AS_PG[@]}" "$PGSB" "${PGSB_ARGS[@]}" init >"$LOGS/pgstrata-base-init$SUFFIX.log" 2>&1 ||
      { cat "$LOGS/pgstrata-base-init$SUFFIX.log" >&2; die "pgstrata init (PGS_BASELINE) failed"; }
  fi
  if [[ $ENCRYPTED == 1 ]]; then
    "${AS_PG[@]}" "$PGS" "${ENC_ARGS[@]}" init --encrypt >"$LOGS/pgstrata-enc-init$SUFFIX.log" 2>&1 ||
      { cat "$LOGS/pgstrata-enc-init$SUFFIX.log" >&2; die "pgstrata init --encrypt failed"; }
  fi
}
stanza_create() {
  "${AS_PG[@]}" pgbackrest --config="$PGBR_CONF" --stanza=bench stanza-create >"$LOGS/stanza-create$SUFFIX.log" 2>&1 ||
    { cat "$LOGS/stanza-create$SUFFIX.log" >&2; die "pgbackrest stanza-create failed"; }
}
use_repos "" init

CLUSTERS_UP+=("$PGDATA")
"${AS_PG[@]}" "$PG_BIN/pg_ctl" -D "$PGDATA" -l "$LOGS/postgres.log" -w -t 120 start >/dev/null ||
  { tail -20 "$LOGS/postgres.log" >&2; die "the cluster did not start"; }

stanza_create
"${AS_PG[@]}" pgbackrest --config="$PGBR_CONF" --stanza=bench check >"$LOGS/check.log" 2>&1 ||
  { cat "$LOGS/check.log" >&2; die "pgbackrest check failed (archive_command?)"; }

# ---------------------------------------------------------------- data set
# big: the load's ~20 GB of WAL would fill the disk three times over (one archive per
# repository), and no backup needs WAL from before its start.
if ((BIG == 1)); then sql "ALTER SYSTEM SET archive_command = 'true'"; sql "SELECT pg_reload_conf()" >/dev/null; fi
measure load dataset "${PSQL[@]}" -v rows="$ROWS" -f "$BENCH/dataset.sql"
record load dataset.sql "$WALL" "$RSS" - - - "rows=$ROWS"
measure load pgbench_init "${AS_PG[@]}" pgbench -i -q -s "$SCALE"
record load pgbench-init "$WALL" "$RSS" - - - "scale=$SCALE"
sql CHECKPOINT
wait_archive
if ((BIG == 1)); then
  sql "ALTER SYSTEM RESET archive_command"
  sql "SELECT pg_reload_conf()" >/dev/null
  sleep 1
  sql "SELECT pg_switch_wal()" >/dev/null
  wait_archive
fi
BASE_BYTES=$(bytes_of "$PGDATA/base")
DATA_BYTES=$(( $(bytes_of "$PGDATA") - $(bytes_of "$PGDATA/pg_wal") ))
log "data set: base/ $BASE_BYTES bytes, data directory without pg_wal $DATA_BYTES bytes"

# ---------------------------------------------------------------- full #1
# The extra runs first, each into scratch repositories (WAL archived meanwhile goes
# there too: the repositories of record miss only segments older than their first backup).
for ((k = 2; k <= FULL_RUNS; k++)); do
  use_repos "-run$k" init
  stanza_create
  run_backups "full1-run$k" full
done
use_repos ""
run_backups full1 full
# Floor: read and compress the data directory (pg_wal contents left out, as the
# backups leave them out). tar may warn that live files changed: ignored.
for ((k = 1; k <= FULL_RUNS; k++)); do
  step=full1; ((k == 1)) || step=full1-run$k
  measure "$step" floor bash -c "tar -cf - -C '$PGDATA' --exclude='./pg_wal/*' . 2>/dev/null | zstd -3 -T2 -q | wc -c > '$LOGS/floor.tarzst.bytes'"
  record "$step" floor "$WALL" "$RSS" "$(cat "$LOGS/floor.tarzst.bytes")" - - "tar | zstd -3 -T2"
done
# The full #1 cells: median wall time, highest peak RSS, bytes of the run of record.
for tool in "${TOOLS[@]}" floor; do
  walls=("${CELL_WALL[full1/$tool]}") rss=${CELL_RSS[full1/$tool]}
  for ((k = 2; k <= FULL_RUNS; k++)); do
    walls+=("${CELL_WALL[full1-run$k/$tool]}")
    ((CELL_RSS[full1-run$k/$tool] > rss)) && rss=${CELL_RSS[full1-run$k/$tool]}
  done
  CELL_WALL[full1/$tool]=$(median "${walls[@]}")
  CELL_RSS[full1/$tool]=$rss
  printf 'full1-median\t%s\t%s\t%s\t-\t-\t-\tmedian of %s: %s\n' "$tool" "${CELL_WALL[full1/$tool]}" "$rss" \
    "$FULL_RUNS" "${walls[*]}" >>"$RESULTS"
done

# ---------------------------------------------------------------- one hour of change
sql CHECKPOINT
wait_archive
declare -A T
((BIG == 1)) || measure change snap_old cp -a "$PGDATA" "$WORKDIR/snap-old"
measure change pgbench "${AS_PG[@]}" pgbench -n -f "$BENCH/workload.sql" -t "$TXNS" -c "$CLIENTS" -j "$CLIENTS" -D scale="$SCALE"
TPS=$(sed -n 's/^tps = \([0-9]*\).*/\1/p' "$LOGS/change.pgbench.log" | tail -n 1)
record change pgbench "$WALL" "$RSS" - - - "tps=${TPS:-?} txns=$((TXNS * CLIENTS))"
sql CHECKPOINT
wait_archive
if ((BIG == 0)); then
  measure change snap_new cp -a "$PGDATA" "$WORKDIR/snap-new"
  measure change pagediff python3 "$BENCH/pagediff.py" --top 20 "$WORKDIR/snap-old" "$WORKDIR/snap-new"
  TRUTH_LINE=$(tail -n 1 "$LOGS/change.pagediff.log")
  for kv in $TRUTH_LINE; do T[${kv%%=*}]=${kv#*=}; done
  [[ -n ${T[changed_zstd3_bytes]:-} ]] || die "pagediff printed nothing usable: $TRUTH_LINE"
  record change pagediff "$WALL" "$RSS" "${T[changed_zstd3_bytes]}" - - "$TRUTH_LINE"
  [[ $KEEP == 1 ]] || rm -rf "$WORKDIR/snap-old" "$WORKDIR/snap-new"
fi

# Row counts the restored clusters must reproduce (nothing changes the data after this).
CHECK_SQL="SELECT (SELECT count(*) FROM events) || ' ' || (SELECT count(*) FROM docs) || ' ' || (SELECT sum(abalance) FROM pgbench_accounts) || ' ' || (SELECT count(*) FROM pgbench_accounts)"
EXPECT=$(sql "$CHECK_SQL")

# ---------------------------------------------------------------- incr, full #2
run_backups incr incr
run_backups full2 full

# ---------------------------------------------------------------- restore
# Interleaved rounds, each tool once per round in a fixed order that alternates pgstrata
# and pgBackRest: the machine's slow spells then fall on neighbouring runs of different
# tools alike, not on one tool's runs. Every run starts from the same state: no other
# restore on disk, nothing dirty to write back, nothing of the repository in the page cache.
RESTORE_ORDER=()
for t in pgstrata pgbr_file pgstrata_base pgbr_block pgstrata_enc floor floor_sync; do
  if [[ $t == floor* || " ${TOOLS[*]} " == *" $t "* ]]; then RESTORE_ORDER+=("$t"); fi
done
if [[ -w /proc/sys/vm/drop_caches ]] && { sync; echo 3 >/proc/sys/vm/drop_caches; } 2>/dev/null; then
  DROP_CACHES=1 CACHES="page cache dropped before each run"
else
  DROP_CACHES=0 CACHES="page cache NOT dropped (/proc/sys/vm/drop_caches is not writable here)"
  log "restore: $CACHES: runs after the first of a tool may read its repository from memory"
fi
restore_cmd() {  # tool dir -> sets CMD
  case $1 in
    pgstrata) CMD=("${AS_PG[@]}" "$PGS" "${PGS_ARGS[@]}" restore --pgdata "$2" --workers 2) ;;
    pgstrata_base) CMD=("${AS_PG[@]}" "$PGSB" "${PGSB_ARGS[@]}" restore --pgdata "$2" --workers 2) ;;
    pgstrata_enc) CMD=("${AS_PG[@]}" "$PGS" "${ENC_ARGS[@]}" restore --pgdata "$2" --workers 2) ;;
    pgbr_file) CMD=("${AS_PG[@]}" pgbackrest --config="$PGBR_CONF" --stanza=bench --repo=1 --pg1-path="$2" restore) ;;
    pgbr_block) CMD=("${AS_PG[@]}" pgbackrest --config="$PGBR_CONF" --stanza=bench --repo=2 --pg1-path="$2" restore) ;;
    floor) CMD=(cp -a "$PGDATA/base" "$2/") ;;
    # The same copy made durable, as a restore's is (syncfs of the file system).
    floor_sync) CMD=(sh -c 'cp -a "$1" "$2/" && sync -f "$2"' sh "$PGDATA/base" "$2") ;;
  esac
}
declare -A R_WALLS R_RSS R_BYTES
PREV_TARGET=
restore_run() {  # round tool
  local round=$1 tool=$2 dir=$WORKDIR/restore-$2
  # One restored copy on disk at a time (a big profile's would not fit side by side);
  # KEEP=1 keeps each tool's last one.
  rm -rf "$dir"
  [[ $KEEP == 1 || -z $PREV_TARGET ]] || rm -rf "$PREV_TARGET"
  PREV_TARGET=$dir
  "${AS_PG[@]}" mkdir -m 0700 "$dir"
  sync
  ((DROP_CACHES == 0)) || echo 3 >/proc/sys/vm/drop_caches
  restore_cmd "$tool" "$dir"
  [[ $S3 != 1 || $tool == floor* ]] || s3_mark
  measure "restore-run$round" "$tool" "${CMD[@]}"
  [[ $S3 != 1 || $tool == floor* ]] ||
    REQ[restore/$tool]=$(s3_requests "$(s3_prefix "$tool")" "$(s3_wal "$tool")")
  record "restore-run$round" "$tool" "$WALL" "$RSS" - - - "round $round of $RESTORE_PAIRS"
  R_WALLS[$tool]+=" $WALL"
  if ((RSS > ${R_RSS[$tool]:-0})); then R_RSS[$tool]=$RSS; fi
  if ((round == 1)); then
    R_BYTES[$tool]=$(bytes_of "$dir")
    [[ $tool == floor* ]] || verify_restored "$tool"
  fi
}
# Start a restored cluster (recovery from its own archive), compare the row counts.
declare -A VERIFIED
verify_restored() {  # tool
  local tool=$1 dir=$WORKDIR/restore-$1 got=
  [[ $VERIFY == 1 ]] || return 0
  log "verify: starting the cluster restored by $tool"
  CLUSTERS_UP+=("$dir")
  if "${AS_PG[@]}" "$PG_BIN/pg_ctl" -D "$dir" -l "$LOGS/verify.$tool.postgres.log" -w -t 600 \
       -o "-c unix_socket_directories=$VSOCK -c port=$PORT -c archive_mode=off" start >/dev/null; then
    for _ in {1..600}; do   # wait until recovery has ended and the cluster is promoted
      [[ $(PGHOST=$VSOCK sql "SELECT pg_is_in_recovery()" 2>/dev/null) == f ]] && break
      sleep 0.5
    done
    got=$(PGHOST=$VSOCK sql "$CHECK_SQL" 2>>"$LOGS/verify.$tool.log") || true
    "${AS_PG[@]}" "$PG_BIN/pg_ctl" -D "$dir" -m fast -w stop >/dev/null || true
  fi
  if [[ $got == "$EXPECT" ]]; then VERIFIED[$tool]=ok; else VERIFIED[$tool]="FAILED (got '$got', want '$EXPECT')"; fi
  printf 'verify\t%s\t-\t-\t-\t-\t-\t%s\n' "$tool" "${VERIFIED[$tool]}" >>"$RESULTS"
}
log "restore: $RESTORE_PAIRS rounds of ${RESTORE_ORDER[*]}; $CACHES"
for ((round = 1; round <= RESTORE_PAIRS; round++)); do
  for tool in "${RESTORE_ORDER[@]}"; do restore_run "$round" "$tool"; done
done
[[ $KEEP == 1 ]] || rm -rf "$PREV_TARGET"
# Each tool's cell: the median wall, the spread of the runs, the highest peak RSS.
declare -A CELL_SPREAD
for tool in "${RESTORE_ORDER[@]}"; do
  read -ra walls <<<"${R_WALLS[$tool]}"
  CELL_SPREAD[restore/$tool]=$(printf '%s\n' "${walls[@]}" | sort -n | sed -n '1p;$p' | paste -sd' ')
  case $tool in
    floor) what="cp -a PGDATA/base" ;;
    floor_sync) what="cp -a PGDATA/base && sync -f" ;;
    *) what="${R_BYTES[$tool]} bytes restored" ;;
  esac
  record restore "$tool" "$(median "${walls[@]}")" "${R_RSS[$tool]}" - - - \
    "$what; median of $RESTORE_PAIRS interleaved runs (min max: ${CELL_SPREAD[restore/$tool]}): ${walls[*]}; $CACHES"
done
ratio() {  # step/tool step/tool -> median over median, or -
  awk -v a="${CELL_WALL[$1]:-}" -v b="${CELL_WALL[$2]:-}" \
    'BEGIN { if (a == "" || b == "" || b + 0 == 0) print "-"; else printf "%.2f", a / b }'
}
RATIO_PGBR=$(ratio restore/pgstrata restore/pgbr_file)
RATIO_BASE=$(ratio restore/pgstrata restore/pgstrata_base)
printf 'restore-ratio\tpgstrata/pgbr_file\t%s\t-\t-\t-\t-\tmedian over median\n' "$RATIO_PGBR" >>"$RESULTS"
[[ -z $PGS_BASELINE ]] ||
  printf 'restore-ratio\tpgstrata/pgstrata_base\t%s\t-\t-\t-\t-\tmedian over median\n' "$RATIO_BASE" >>"$RESULTS"

# ---------------------------------------------------------------- report
mb() { [[ $1 == - || -z $1 ]] && { echo -; return; }; awk -v b="$1" 'BEGIN { printf "%.1f", b / 1e6 }'; }
cell() {  # step/tool -> "wall s [(min-max)] / peak MiB / stored MB"
  local k=$1
  [[ -n ${CELL_WALL[$k]:-} ]] || { echo -; return; }
  awk -v w="${CELL_WALL[$k]}" -v r="${CELL_RSS[$k]}" -v s="${CELL_STORED[$k]}" \
      -v sp="${CELL_SPREAD[$k]:-}" 'BEGIN {
    st = (s == "-") ? "-" : sprintf("%.1f MB", s / 1e6)
    range = ""
    if (split(sp, m, " ") == 2) range = sprintf(" (%.1f-%.1f)", m[1], m[2])
    printf "%.1f s%s / %.0f MiB / %s", w, range, r / 1024, st }'
}
declare -A HEAD=([pgstrata]=pgstrata [pgstrata_base]="pgstrata baseline" [pgstrata_enc]="pgstrata encrypted" [pgbr_file]="pgBackRest file-level" [pgbr_block]="pgBackRest bundle + block incr")
declare -A STEPNAME=([full1]="full #1" [incr]="incr (after the change)" [full2]="full #2 (no change since incr)" [restore]="restore latest")
{
  echo
  echo "pgstrata benchmark $(date -u +%Y-%m-%dT%H:%M:%SZ): ROWS=$ROWS SCALE=$SCALE TXNS=$TXNS x $CLIENTS clients;" \
       "base/ $(mb "$BASE_BYTES") MB, data directory without pg_wal $(mb "$DATA_BYTES") MB;" \
       "pgBackRest $(pgbackrest version | awk '{print $2}'), zstd -3, 2 processes"
  echo
  printf '| step |'; for t in "${TOOLS[@]}"; do printf ' %s |' "${HEAD[$t]}"; done; echo ' floor |'
  printf '|---|'; for _ in "${TOOLS[@]}"; do printf -- '---|'; done; echo '---|'
  for step in full1 incr full2 restore; do
    printf '| %s |' "${STEPNAME[$step]}"
    for t in "${TOOLS[@]}"; do printf ' %s |' "$(cell "$step/$t")"; done
    case $step in
      full1) printf ' tar \\| zstd -3 -T2: %s |\n' "$(cell full1/floor)" ;;
      incr) printf ' changed pages, zstd-3: %s MB |\n' "$(mb "${T[changed_zstd3_bytes]:-}")" ;;
      full2) printf ' ~0 |\n' ;;
      restore) printf ' cp -a base: %s; with sync -f: %s |\n' "$(cell restore/floor | sed 's| / - *$||')" \
                 "$(cell restore/floor_sync | sed 's| / - *$||')" ;;
    esac
  done
  echo
  echo "cells: wall s / peak RSS MiB / stored MB (what the step added to the repository's backup area; WAL archive excluded)"
  echo "full #1: median wall of $FULL_RUNS run(s) and their highest peak RSS (runs in results.tsv, full1-median)"
  echo "restore: median (min-max) wall of $RESTORE_PAIRS interleaved rounds and their highest peak RSS" \
       "(runs in results.tsv, restore-runN); $CACHES"
  echo "restore, pgstrata's median over pgBackRest file-level's: $RATIO_PGBR"
  [[ -z $PGS_BASELINE ]] || echo "restore, pgstrata's median over pgstrata baseline's ($PGS_BASELINE): $RATIO_BASE"
  if ((BIG == 0)); then
    echo "ground truth (pagediff.py): ${T[changed_pages]} of $(( T[total_bytes] / 8192 )) pages changed" \
         "(${T[changed_pct]}%): $(mb "${T[changed_bytes]}") MB of $(mb "${T[total_bytes]}") MB, zstd-3 $(mb "${T[changed_zstd3_bytes]}") MB"
  fi
  echo "workload: $((TXNS * CLIENTS)) transactions at ${TPS:-?} tps"
  if [[ $S3 == 1 ]]; then
    echo
    echo "S3 requests per step (PUT / GET / LIST / HEAD / DELETE; WAL archiving left out; restore: its last run):"
    echo
    printf '| step |'; for t in "${TOOLS[@]}"; do printf ' %s |' "${HEAD[$t]}"; done; echo
    printf '|---|'; for _ in "${TOOLS[@]}"; do printf -- '---|'; done; echo
    for step in full1 incr full2 restore; do
      printf '| %s |' "${STEPNAME[$step]}"
      for t in "${TOOLS[@]}"; do printf ' %s |' "$(tr ' ' / <<<"${REQ[$step/$t]:--}")"; done
      echo
    done
    for t in "${TOOLS[@]}"; do
      for step in full1 incr full2 restore; do
        printf 'requests\t%s\t-\t-\t-\t-\t-\t%s %s\n' "$t" "$step" "${REQ[$step/$t]:--}" >>"$RESULTS"
      done
    done
  fi
  if [[ $VERIFY == 1 ]]; then
    printf 'restore check (start restored cluster, compare row counts):'
    for t in "${TOOLS[@]}"; do printf ' %s %s;' "$t" "${VERIFIED[$t]}"; done; echo
  fi
  echo "raw numbers: $RESULTS"
} | tee "$WORKDIR/results.md"

if [[ $VERIFY == 1 ]]; then
  for t in "${TOOLS[@]}"; do [[ ${VERIFIED[$t]} == ok ]] || die "restore check failed for $t"; done
fi
