# Sourced by scripts/bench.sh for PROFILE=s3: a real S3-compatible server
# (moto_server, PyPI moto[server]) behind scripts/s3proxy.py, which speaks
# TLS (pgBackRest talks to S3 over HTTPS only) and logs every request, so the
# benchmark can count requests by kind for each tool.
#
# Defines: s3_start, s3_stop, s3_bytes PREFIX [EXCLUDE], s3_mark, s3_requests
# PREFIX EXCLUDE (since the last s3_mark), and S3_PORT, S3_CA, S3_BUCKET.

S3_BUCKET=bench
S3_KEY=pgstrata-bench
S3_SECRET=pgstrata-bench-secret

s3_free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

s3_wait() {  # port
  local i
  for ((i = 0; i < 300; i++)); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  die "nothing listens on 127.0.0.1:$1"
}

s3_start() {  # dir
  local dir=$1
  command -v moto_server >/dev/null || python3 -m pip install -q 'moto[server]==5.2.1' ||
    die "moto_server is missing (pip install 'moto[server]')"
  S3_MOTO_PORT=$(s3_free_port)
  S3_PORT=$(s3_free_port)
  S3_CA=$dir/s3-ca.pem
  # A private CA and a server certificate it signs (rustls refuses a CA
  # certificate used as the server's own).
  {
    openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=pgstrata bench CA" \
      -keyout "$dir/s3-ca-key.pem" -out "$S3_CA" &&
    openssl req -newkey rsa:2048 -nodes -subj /CN=localhost \
      -keyout "$dir/s3-key.pem" -out "$dir/s3.csr" &&
    printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n' >"$dir/s3.ext" &&
    openssl x509 -req -in "$dir/s3.csr" -CA "$S3_CA" -CAkey "$dir/s3-ca-key.pem" \
      -CAcreateserial -days 2 -extfile "$dir/s3.ext" -out "$dir/s3-cert.pem"
  } >/dev/null 2>&1 || die "openssl could not make the test certificates"
  chmod 644 "$S3_CA"
  moto_server -H 127.0.0.1 -p "$S3_MOTO_PORT" >"$LOGS/moto.log" 2>&1 &
  S3_MOTO_PID=$!
  s3_wait "$S3_MOTO_PORT"
  S3_LOG=$LOGS/s3-requests.log
  : >"$S3_LOG"
  python3 "$REPO_ROOT/scripts/s3proxy.py" --listen "$S3_PORT" \
    --upstream "http://127.0.0.1:$S3_MOTO_PORT" --log "$S3_LOG" \
    --cert "$dir/s3-cert.pem" --key "$dir/s3-key.pem" 2>"$LOGS/s3proxy.log" &
  S3_PROXY_PID=$!
  s3_wait "$S3_PORT"
  export AWS_ACCESS_KEY_ID=$S3_KEY AWS_SECRET_ACCESS_KEY=$S3_SECRET AWS_REGION=us-east-1
  python3 -c "import boto3; boto3.client('s3', endpoint_url='http://127.0.0.1:$S3_MOTO_PORT', region_name='us-east-1').create_bucket(Bucket='$S3_BUCKET')" ||
    die "cannot create the benchmark bucket"
  S3_MARK=0
}

s3_stop() {
  [[ -z ${S3_PROXY_PID:-} ]] || kill "$S3_PROXY_PID" 2>/dev/null || true
  [[ -z ${S3_MOTO_PID:-} ]] || kill "$S3_MOTO_PID" 2>/dev/null || true
}

# Bytes stored under PREFIX/, leaving out PREFIX/EXCLUDE/ (the WAL archive).
s3_bytes() {  # prefix [exclude]
  python3 - "$S3_MOTO_PORT" "$S3_BUCKET" "$1" "${2:-}" <<'EOF'
import boto3, sys
port, bucket, prefix, exclude = sys.argv[1:5]
c = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}", region_name="us-east-1")
total = 0
for page in c.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix + "/"):
    for o in page.get("Contents", []):
        if exclude and o["Key"].startswith(f"{prefix}/{exclude}/"):
            continue
        total += o["Size"]
print(total)
EOF
}

s3_mark() { S3_MARK=$(wc -l <"$S3_LOG"); }

# Requests about PREFIX (WAL under PREFIX/EXCLUDE left out) since s3_mark:
# "PUT GET LIST HEAD DELETE".
s3_requests() {  # prefix exclude
  tail -n +"$((S3_MARK + 1))" "$S3_LOG" | python3 -c '
import sys, urllib.parse
prefix, exclude = sys.argv[1], sys.argv[2]
n = {"PUT": 0, "GET": 0, "LIST": 0, "HEAD": 0, "DELETE": 0}
for line in sys.stdin:
    parts = line.split(" ", 3)
    if len(parts) < 4:
        continue
    kind, target = parts[0], urllib.parse.unquote(parts[3])
    if f"{prefix}/" not in target or f"{prefix}/{exclude}/" in target:
        continue
    n[kind] = n.get(kind, 0) + 1
print(n["PUT"], n["GET"], n["LIST"], n["HEAD"], n["DELETE"])' "$1" "$2"
}
