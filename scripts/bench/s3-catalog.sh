#!/usr/bin/env bash
# The `s3-catalog` profile of scripts/bench.sh: what each backup publishes of
# the catalog to object storage, against what publishing the whole catalog
# would cost, on a cluster of many small tables.
#
#   TABLES=10000        tables (6 files each after VACUUM: ~61,000 files)
#   BACKUPS=12          incrs after the full
#   CHANGED=1           percent of the tables updated before each incr
#   WORKDIR=...         scratch directory (default: a new mktemp dir under /var/tmp)
#   PGSTRATA=...        binary (default target/release/pgstrata)
#   PG_BIN=/usr/lib/postgresql/15/bin
#
# The repository is in moto_server (scripts/bench/s3lib.sh). After each
# backup: the new catalog object (a full snapshot or a delta) and its size,
# and the size the whole catalog would have had as a zstd snapshot (the
# working copy through VACUUM INTO and zstd -3, as pgstrata published it
# before deltas). Last, `info` on a host with an empty cache, which fetches
# the full and the deltas since; `verify`; and a restore of the newest incr on
# a host with an empty cache (the source server stopped first); last, `expire`
# of the full from the writer's host. Each with its peak RSS. Output: a
# markdown table on stdout and WORKDIR/s3-catalog.md.
set -euo pipefail

TABLES=${TABLES:-10000}
BACKUPS=${BACKUPS:-12}
CHANGED=${CHANGED:-1}
PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
PGSTRATA=${PGSTRATA:-$REPO_ROOT/target/release/pgstrata}
[[ -x $PGSTRATA ]] || (cd "$REPO_ROOT" && cargo build --release)
WORKDIR=${WORKDIR:-$(mktemp -d /var/tmp/pgstrata-bench-catalog.XXXXXX)}
LOGS=$WORKDIR/logs
mkdir -p "$WORKDIR" "$LOGS"
AS_PG=()
[[ $EUID -ne 0 ]] || AS_PG=(runuser -u postgres --)
[[ $EUID -ne 0 ]] || chown postgres "$WORKDIR" "$LOGS"
chmod 755 "$WORKDIR"
PGS_BIN=$WORKDIR/pgstrata
cp "$PGSTRATA" "$PGS_BIN"; chmod 755 "$PGS_BIN"
log() { printf '[s3-catalog %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "$*"; exit 1; }
command -v zstd >/dev/null || die "zstd (the CLI) is missing: apt-get install zstd"
command -v sqlite3 >/dev/null || die "sqlite3 (the CLI) is missing: apt-get install sqlite3"
# shellcheck source=s3lib.sh
source "$REPO_ROOT/scripts/bench/s3lib.sh"
PGDATA=
stop_all() {
  [[ -z $PGDATA ]] || "${AS_PG[@]}" "$PG_BIN/pg_ctl" -D "$PGDATA" -m immediate -w stop >/dev/null 2>&1 || true
  s3_stop
}
trap stop_all EXIT
s3_start "$WORKDIR"
ENDPOINT=http://127.0.0.1:$S3_MOTO_PORT
URL=s3://$S3_BUCKET/catalog-bench
CACHE=$WORKDIR/cache
ENV=(env "AWS_ACCESS_KEY_ID=$S3_KEY" "AWS_SECRET_ACCESS_KEY=$S3_SECRET" AWS_REGION=us-east-1)
PGS="$PGS_BIN --repo $URL --s3-endpoint $ENDPOINT --cache-dir $CACHE"
pgs() { "${AS_PG[@]}" "${ENV[@]}" $PGS "$@"; }
sql() { "${AS_PG[@]}" "$PG_BIN/psql" -h "$WORKDIR" -U postgres -At -v ON_ERROR_STOP=1 -c "$1" postgres; }
# shellcheck source=tables.sh
source "$REPO_ROOT/scripts/bench/tables.sh"

PGDATA=$WORKDIR/data
pgs init >/dev/null
"${AS_PG[@]}" "$PG_BIN/initdb" -D "$PGDATA" -k -U postgres -A trust --locale=C >/dev/null
cat >>"$PGDATA/postgresql.conf" <<EOF
listen_addresses = ''
unix_socket_directories = '$WORKDIR'
wal_level = replica
archive_mode = on
archive_command = '${ENV[*]} $PGS archive-push %p'
max_wal_size = 4GB
EOF
"${AS_PG[@]}" "$PG_BIN/pg_ctl" -D "$PGDATA" -l "$LOGS/server.log" -w start >/dev/null
log "$TABLES tables: creating"
make_tables "$TABLES"
files=$(find "$PGDATA" -type f | wc -l)
log "$TABLES tables: $files files"
conn="host=$WORKDIR user=postgres dbname=postgres"

# The newest catalog object: "generation kind bytes".
newest() {
  python3 - "$S3_MOTO_PORT" "$S3_BUCKET" catalog-bench/catalog/ <<'EOF'
import boto3, subprocess, sys
port, bucket, prefix = sys.argv[1:4]
c = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}", region_name="us-east-1")
objs = c.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])
o = max(objs, key=lambda o: o["Key"])
body = c.get_object(Bucket=bucket, Key=o["Key"])["Body"].read()
head = subprocess.run(["zstd", "-dc"], input=body, capture_output=True).stdout[:8]
kind = "delta" if head == b"PGSTRCD1" else "full" if head.startswith(b"SQLite f") else "?"
print(int(o["Key"].rsplit("/", 1)[1].split(".")[0]), kind, o["Size"])
EOF
}
# What the whole working copy would publish: VACUUM INTO, then zstd -3.
whole() {
  local db
  db=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['file'])" "$CACHE"/*/state.json)
  rm -f "$WORKDIR/whole.db"
  # As the server's user: SQLite makes -wal and -shm files as whoever opens.
  "${AS_PG[@]}" sqlite3 "$(dirname "$(ls "$CACHE"/*/state.json)")/$db" "VACUUM INTO '$WORKDIR/whole.db'"
  zstd -3 -q -c "$WORKDIR/whole.db" | wc -c
}
mb() { awk -v b="$1" 'BEGIN { printf "%.2f", b / 1e6 }'; }

rows="| backup | wall / peak RSS | catalog object | kind | bytes | whole catalog as a snapshot | share |"$'\n'
rows+="|---|---|---|---|---|---|---|"$'\n'
sum_new=0 sum_old=0
for ((i = 0; i <= BACKUPS; i++)); do
  type=incr; [[ $i -gt 0 ]] || type=full
  if [[ $i -gt 0 ]]; then
    change_tables "$TABLES" $((TABLES * CHANGED / 100))
  fi
  /usr/bin/time -f '%e s / %M' -o "$LOGS/backup-$i.time" "${AS_PG[@]}" "${ENV[@]}" $PGS backup \
    --pgdata "$PGDATA" --dbname "$conn" --type $type --start-fast >"$LOGS/backup-$i.log" 2>&1 ||
    { cat "$LOGS/backup-$i.log" >&2; die "backup $i failed"; }
  read -r gen kind bytes < <(newest)
  old=$(whole)
  sum_new=$((sum_new + bytes)) sum_old=$((sum_old + old))
  read -r wall_s _ _ rss_k <"$LOGS/backup-$i.time"
  rows+="| $type $i | $wall_s s / $((rss_k / 1024)) MiB | $gen | $kind | $(mb "$bytes") MB | $(mb "$old") MB | $(awk -v a="$bytes" -v b="$old" 'BEGIN { printf "%.1f%%", 100 * a / b }') |"$'\n'
  log "$type $i: generation $gen, $kind, $bytes bytes (whole: $old)"
done
rows+="| all | | | | $(mb $sum_new) MB | $(mb $sum_old) MB | $(awk -v a=$sum_new -v b=$sum_old 'BEGIN { printf "%.1f%%", 100 * a / b }') |"$'\n'
fresh=$WORKDIR/fresh-cache
/usr/bin/time -f '%e s, peak RSS %M KiB' -o "$LOGS/fresh-info.time" "${ENV[@]}" $PGS_BIN --repo "$URL" \
  --s3-endpoint "$ENDPOINT" --cache-dir "$fresh" info >"$LOGS/fresh-info.log" 2>&1 ||
  { cat "$LOGS/fresh-info.log" >&2; die "info on a new host failed"; }
/usr/bin/time -f '%e s, peak RSS %M KiB' -o "$LOGS/verify.time" "${AS_PG[@]}" "${ENV[@]}" $PGS verify \
  >"$LOGS/verify.log" 2>&1 || { cat "$LOGS/verify.log" >&2; die "verify failed"; }
# The newest incr restored by a host with no cache at all, as after losing the server.
"${AS_PG[@]}" "$PG_BIN/pg_ctl" -D "$PGDATA" -m fast -w stop >/dev/null
# Through the counting TLS proxy, as a remote store is reached.
s3_mark
/usr/bin/time -f '%e s, peak RSS %M KiB' -o "$LOGS/restore.time" "${ENV[@]}" $PGS_BIN --repo "$URL" \
  --s3-endpoint "https://127.0.0.1:$S3_PORT" --s3-ca-file "$S3_CA" \
  --cache-dir "$WORKDIR/restore-cache" restore --pgdata "$WORKDIR/restored" \
  >"$LOGS/restore.log" 2>&1 || { cat "$LOGS/restore.log" >&2; die "restore on a new host failed"; }
read -r _ gets _ _ _ < <(s3_requests catalog-bench wal)
restored=$(find "$WORKDIR/restored" -type f | wc -l)
# Expire of the full (the incrs stay restorable on their own), from the
# writer's host: the catalog rewritten and published, unreferenced packs deleted.
first=$(pgs info --output json | python3 -c "import json,sys; print(json.load(sys.stdin)['clusters'][0]['backups'][0]['id'])")
/usr/bin/time -f '%e s, peak RSS %M KiB' -o "$LOGS/expire.time" "${AS_PG[@]}" "${ENV[@]}" $PGS expire \
  --set "$first" >"$LOGS/expire.log" 2>&1 || { cat "$LOGS/expire.log" >&2; die "expire failed"; }
read -r gen kind bytes < <(newest)
out="$files files, $CHANGED% of $TABLES tables changed before each incr"$'\n\n'"$rows"$'\n'
out+="info on a host with an empty cache (full + deltas fetched and applied): $(cat "$LOGS/fresh-info.time")"$'\n'
out+="verify (the writer's host): $(cat "$LOGS/verify.time")"$'\n'
out+="restore of incr $BACKUPS on a host with an empty cache ($restored files): $(cat "$LOGS/restore.time"), $gets GETs"$'\n'
out+="expire of the full (the writer's host): $(cat "$LOGS/expire.time"); catalog object $gen, $kind, $(mb "$bytes") MB"$'\n'
printf '%s' "$out" | tee "$WORKDIR/s3-catalog.md"
