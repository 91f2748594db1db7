#!/usr/bin/env bash
# hitless vs nginx as a reverse proxy, side by side, one core each, same upstream and load.
#
#   bash benches/vs_nginx.sh            # 3 alternating rounds of 8 s each
#   ROUNDS=5 SECS=10 CONNS=50 bash benches/vs_nginx.sh
#   BASELINE=/path/to/older/hitless bash benches/vs_nginx.sh   # A/B: an older build too
#
# Layout on a 2-core machine: both proxies pinned to core 0 (one worker each: nginx
# `worker_processes 1`, hitless `runtime.worker_threads: 1`); the upstream (nginx `return 200`)
# and the load generator (wrk, 1 thread) on core 1. Access logs off on both. CPU per request is
# the proxy process's user+system time (from /proc/PID/stat) divided by requests served.
# Reports the median of the rounds for each figure, and hitless/nginx ratios.
set -euo pipefail
ROUNDS=${ROUNDS:-3}
SECS=${SECS:-8}
CONNS=${CONNS:-50}
cd "$(dirname "$0")/.."

need() { command -v "$1" >/dev/null 2>&1; }
if ! need nginx || ! need wrk; then
  echo "installing nginx-light and wrk (Debian packages)..." >&2
  apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light wrk >/dev/null
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
cargo build --release --quiet
BIN=target/release/hitless

dir=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$dir"; }
trap cleanup EXIT

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
UP=$(port); NGX=$(port); HL=$(port); HLA=$(port); HLB=$(port); HLBA=$(port)

cat > "$dir/upstream.conf" <<CONF
worker_processes 1; daemon off; pid $dir/up.pid; error_log $dir/up.err;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000;
  server { listen 127.0.0.1:$UP; location / { return 200 "hello world\n"; } } }
CONF
cat > "$dir/proxy.conf" <<CONF
worker_processes 1; daemon off; pid $dir/px.pid; error_log $dir/px.err;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000;
  upstream app { server 127.0.0.1:$UP; keepalive 64; }
  server { listen 127.0.0.1:$NGX;
    location / { proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection ""; } } }
CONF
cat > "$dir/hitless.yaml" <<CONF
listeners: [{bind: "127.0.0.1:$HL"}]
admin: {bind: "127.0.0.1:$HLA"}
access_log: false
runtime: {worker_threads: 1}
backends:
  app: {endpoints: ["127.0.0.1:$UP"]}
routes:
  - backend: app
CONF

taskset -c 1 "$NGINX" -c "$dir/upstream.conf" -e "$dir/up.err" & pids+=($!)
taskset -c 0 "$NGINX" -c "$dir/proxy.conf" -e "$dir/px.err" & pids+=($!)
taskset -c 0 "$BIN" run --config "$dir/hitless.yaml" 2>"$dir/hitless.err" & HPID=$!; pids+=($HPID)
if [ -n "${BASELINE:-}" ]; then
  sed -e "s/127.0.0.1:$HL\"/127.0.0.1:$HLB\"/" -e "s/127.0.0.1:$HLA\"/127.0.0.1:$HLBA\"/" "$dir/hitless.yaml" > "$dir/baseline.yaml"
  taskset -c 0 "$BASELINE" run --config "$dir/baseline.yaml" 2>"$dir/baseline.err" & BPID=$!; pids+=($BPID)
fi
sleep 1
# nginx's worker is the child of its master
NPID=$(pgrep -P "${pids[1]}" | head -1)

run() { # name port pid -> one line: rps p50_us p99_us user_us sys_us
  local u0 s0 u1 s1 out
  read -r u0 s0 < <(awk '{print $14, $15}' "/proc/$3/stat")
  out=$(taskset -c 1 wrk -t1 -c"$CONNS" -d"${SECS}s" --latency "http://127.0.0.1:$2/" 2>&1)
  read -r u1 s1 < <(awk '{print $14, $15}' "/proc/$3/stat")
  python3 - "$1" "$u0" "$s0" "$u1" "$s1" <<PY
import sys,re
out = '''$out'''
name,u0,s0,u1,s1 = sys.argv[1], *map(int, sys.argv[2:])
reqs = int(re.search(r'(\d+) requests in', out).group(1))
rps = float(re.search(r'Requests/sec:\s+([\d.]+)', out).group(1))
def us(label):
    m = re.search(r'\s%s\s+([\d.]+)(us|ms|s)' % label, out)
    v, unit = float(m.group(1)), m.group(2)
    return v * {'us': 1, 'ms': 1e3, 's': 1e6}[unit]
errs = re.search(r'Non-2xx or 3xx responses: (\d+)', out)
tick = 1e6 / 100  # USER_HZ
print(name, rps, us('50%'), us('99%'), (u1-u0)*tick/reqs, (s1-s0)*tick/reqs, errs.group(1) if errs else 0)
PY
}

# warm up
taskset -c 1 wrk -t1 -c"$CONNS" -d2s "http://127.0.0.1:$NGX/" >/dev/null
taskset -c 1 wrk -t1 -c"$CONNS" -d2s "http://127.0.0.1:$HL/" >/dev/null
[ -n "${BASELINE:-}" ] && taskset -c 1 wrk -t1 -c"$CONNS" -d2s "http://127.0.0.1:$HLB/" >/dev/null
results=$dir/results
for i in $(seq "$ROUNDS"); do
  run nginx "$NGX" "$NPID" >> "$results"
  run hitless "$HL" "$HPID" >> "$results"
  if [ -n "${BASELINE:-}" ]; then run baseline "$HLB" "$BPID" >> "$results"; fi
done
python3 - "$results" "$ROUNDS" "$SECS" "$CONNS" <<'PY'
import sys, statistics as st
rows = [l.split() for l in open(sys.argv[1])]
by = {}
for r in rows:
    by.setdefault(r[0], []).append([float(x) for x in r[1:]])
print(f"hitless vs nginx, reverse proxy, 1 core each, wrk 1 thread {sys.argv[4]} connections, "
      f"median of {sys.argv[2]} rounds x {sys.argv[3]} s")
print(f"{'proxy':<8} {'requests/s':>11} {'p50 us':>8} {'p99 us':>8} {'CPU us/req':>11} {'(user':>7} {'sys)':>6} {'non-2xx':>8}")
med = {}
for name in [n for n in ['nginx', 'hitless', 'baseline'] if n in by]:
    cols = list(zip(*by[name]))
    m = [st.median(c) for c in cols]
    med[name] = m
    print(f"{name:<8} {m[0]:>11.0f} {m[1]:>8.0f} {m[2]:>8.0f} {m[3]+m[4]:>11.2f} {m[3]:>7.2f} {m[4]:>6.2f} {int(sum(cols[5])):>8}")
n, h = med['nginx'], med['hitless']
print(f"ratio hitless/nginx: requests/s {h[0]/n[0]:.2f}x, p50 {h[1]/n[1]:.2f}x, p99 {h[2]/n[2]:.2f}x, "
      f"CPU per request {(h[3]+h[4])/(n[3]+n[4]):.2f}x")
if 'baseline' in med:
    b = med['baseline']
    print(f"ratio hitless/baseline: requests/s {h[0]/b[0]:.2f}x, CPU per request {(h[3]+h[4])/(b[3]+b[4]):.2f}x, "
          f"user {h[3]/b[3]:.2f}x")
PY
