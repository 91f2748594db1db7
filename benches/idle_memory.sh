#!/usr/bin/env bash
# Memory per idle client connection: hitless vs nginx as reverse proxies, same upstream.
#
#   bash benches/idle_memory.sh                 # 10,000 HTTP/1.1 and 1,000 h2c connections
#   H1=2000 H2C=500 bash benches/idle_memory.sh
#
# For each proxy (one worker each) and protocol: a fresh process, 20 warm-up connections, then
# N client connections (benches/idle_clients.py) that each complete one request (keep-alive;
# h2c: one stream) and stay idle. Reports resident memory (VmRSS; nginx: master + worker)
# before and while the N are held, per connection, and hitless's RSS once they closed.
set -euo pipefail
H1=${H1:-10000}
H2C=${H2C:-1000}
cd "$(dirname "$0")/.."
ulimit -n 30000 2>/dev/null || ulimit -n "$(ulimit -Hn)"
if [ "$(ulimit -n)" -lt $((H1 + 500)) ]; then
  echo "ulimit -n is $(ulimit -n): lowering H1 to fit" >&2
  H1=$(( $(ulimit -n) - 500 ))
fi
command -v nginx >/dev/null 2>&1 || {
  apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light >/dev/null; }
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
cargo build --release --quiet
BIN=${BIN:-target/release/hitless}

dir=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$dir"; }
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
UP=$(port)
cat > "$dir/upstream.conf" <<CONF
worker_processes 1; daemon off; pid $dir/up.pid; error_log $dir/up.err;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000;
  server { listen 127.0.0.1:$UP; location / { return 200 "hello world\n"; } } }
CONF
taskset -c 1 "$NGINX" -c "$dir/upstream.conf" -e "$dir/up.err" & pids+=($!)

rss() { # pids... -> total VmRSS in KiB
  local total=0 p
  for p in "$@"; do total=$(( total + $(awk '/VmRSS/{print $2}' "/proc/$p/status") )); done
  echo "$total"
}

# measure name proto n pids... : prints "name proto n before held per_conn_kib"
measure() {
  local name=$1 proto=$2 n=$3 port=$4; shift 4
  python3 benches/idle_clients.py "$port" 20 "$proto" < /dev/null > /dev/null
  sleep 0.5
  local before held
  before=$(rss "$@")
  rm -f "$dir/hold" "$dir/out"; mkfifo "$dir/hold"
  python3 benches/idle_clients.py "$port" "$n" "$proto" < "$dir/hold" > "$dir/out" &
  local client=$!
  exec 3>"$dir/hold"
  for _ in $(seq 1200); do grep -q held "$dir/out" 2>/dev/null && break; sleep 0.1; done
  grep -q "held $n" "$dir/out" || { echo "$name $proto: not all $n connections were answered" >&2; }
  sleep 1
  held=$(rss "$@")
  exec 3>&-
  wait "$client" || true
  python3 -c "print('$name', '$proto', $n, $before, $held, round(($held-$before)/$n, 2))"
}

results=$dir/results
for proto in h1 h2c; do
  n=$H1; [ "$proto" = h2c ] && n=$H2C
  # nginx, fresh
  NG=$(port)
  listen="listen 127.0.0.1:$NG;"; [ "$proto" = h2c ] && listen="listen 127.0.0.1:$NG http2;"
  cat > "$dir/proxy.conf" <<CONF
worker_processes 1; daemon off; pid $dir/px.pid; error_log $dir/px.err;
worker_rlimit_nofile 30000;
events { worker_connections 25000; }
http { access_log off; keepalive_requests 1000000; keepalive_timeout 600s;
  upstream app { server 127.0.0.1:$UP; keepalive 64; }
  server { $listen
    location / { proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection ""; } } }
CONF
  taskset -c 0 "$NGINX" -c "$dir/proxy.conf" -e "$dir/px.err" & master=$!; pids+=($master)
  sleep 0.5
  worker=$(pgrep -P "$master" | head -1)
  measure nginx "$proto" "$n" "$NG" "$master" "$worker" >> "$results"
  kill "$master"; wait "$master" 2>/dev/null || true
  # hitless, fresh
  HL=$(port); HLA=$(port)
  cat > "$dir/hitless.yaml" <<CONF
listeners: [{bind: "127.0.0.1:$HL"}]
admin: {bind: "127.0.0.1:$HLA"}
access_log: false
timeouts: {idle: 600s}
runtime: {worker_threads: 1}
backends:
  app: {endpoints: ["127.0.0.1:$UP"]}
routes:
  - backend: app
CONF
  taskset -c 0 "$BIN" run --config "$dir/hitless.yaml" 2>"$dir/hitless.err" & h=$!; pids+=($h)
  sleep 0.5
  measure hitless "$proto" "$n" "$HL" "$h" >> "$results"
  sleep 1
  echo "hitless $proto after the $n closed: $(rss "$h") KiB" >> "$dir/after"
  kill "$h"; wait "$h" 2>/dev/null || true
done

echo "idle client connections, 1 worker each, VmRSS (KiB)"
printf '%-8s %-5s %7s %9s %9s %10s\n' proxy proto conns before held KiB/conn
while read -r name proto n before held per; do
  printf '%-8s %-5s %7s %9s %9s %10s\n' "$name" "$proto" "$n" "$before" "$held" "$per"
done < "$results"
python3 - "$results" <<'PY'
import sys
rows = {(r[0], r[1]): float(r[5]) for r in (l.split() for l in open(sys.argv[1]))}
for proto in ('h1', 'h2c'):
    if ('nginx', proto) in rows and rows[('nginx', proto)] > 0:
        print(f"ratio hitless/nginx {proto}: {rows[('hitless', proto)] / rows[('nginx', proto)]:.1f}x per connection")
PY
cat "$dir/after"
