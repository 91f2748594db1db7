#!/usr/bin/env bash
# hitless vs nginx as a reverse proxy, side by side, one core each, same upstream and load.
#
#   bash benches/vs_nginx.sh            # 3 alternating rounds of 8 s each
#   ROUNDS=5 SECS=10 CONNS=50 bash benches/vs_nginx.sh
#   BASELINE=/path/to/older/hitless bash benches/vs_nginx.sh   # A/B: an older build too
#   PROTO=h2c bash benches/vs_nginx.sh  # HTTP/2 clients (h2c prior knowledge, h2load 10 conns x 10
#                                       # streams), HTTP/1.1 to the upstream
#   HAPROXY=1 bash benches/vs_nginx.sh  # HAProxy (nbthread 1) in the same rounds
#
# Layout on a 2-core machine: both proxies pinned to core 0 (one worker each: nginx
# `worker_processes 1`, hitless `runtime.worker_threads: 1`); the upstream (nginx `return 200`)
# and the load generator (wrk, 1 thread) on core 1. Access logs off on both. CPU per request is
# the proxy process's user+system time (from /proc/PID/stat) divided by requests served.
# Reports the median of the rounds for each figure, hitless/nginx ratios, and each proxy's peak
# resident memory over the run.
set -euo pipefail
ROUNDS=${ROUNDS:-3}
SECS=${SECS:-8}
CONNS=${CONNS:-50}
PROTO=${PROTO:-h1}
cd "$(dirname "$0")/.."

need() { command -v "$1" >/dev/null 2>&1; }
if ! need nginx || ! need wrk || ! need h2load || { [ -n "${HAPROXY:-}" ] && ! need haproxy; }; then
  echo "installing nginx-light, wrk, nghttp2-client (h2load) and haproxy (Debian packages)..." >&2
  apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light wrk nghttp2-client haproxy >/dev/null
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
cargo build --release --quiet
BIN=target/release/hitless

dir=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$dir"; }
trap cleanup EXIT

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
UP=$(port); NGX=$(port); NGX2=$(port); HAP=$(port); HAP2=$(port); HL=$(port); HLA=$(port); HLB=$(port); HLBA=$(port)

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
    location / { proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection ""; } }
  server { listen 127.0.0.1:$NGX2 http2;
    location / { proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection ""; } } }
CONF
cat > "$dir/haproxy.cfg" <<CONF
global
  nbthread 1
  maxconn 8192
defaults
  mode http
  timeout connect 1s
  timeout client 60s
  timeout server 60s
  http-reuse always
frontend h1
  bind 127.0.0.1:$HAP
  default_backend app
frontend h2c
  bind 127.0.0.1:$HAP2 proto h2
  default_backend app
backend app
  server up 127.0.0.1:$UP
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
if [ -n "${HAPROXY:-}" ]; then
  taskset -c 0 haproxy -db -f "$dir/haproxy.cfg" 2>"$dir/haproxy.err" & APID=$!; pids+=($APID)
fi
sleep 1
# nginx's worker is the child of its master
NPID=$(pgrep -P "${pids[1]}" | head -1)
if [ "$PROTO" = h2c ]; then NGX=$NGX2; HAP=$HAP2; fi

run() { # name port pid -> one line: rps p50_us p99_us user_us sys_us
  local u0 s0 u1 s1 out
  read -r u0 s0 < <(awk '{print $14, $15}' "/proc/$3/stat")
  out=$(load "$2" "$SECS")
  read -r u1 s1 < <(awk '{print $14, $15}' "/proc/$3/stat")
  python3 - "$1" "$u0" "$s0" "$u1" "$s1" "$PROTO" <<PY
import sys,re
out = '''$out'''
name,u0,s0,u1,s1 = sys.argv[1], *map(int, sys.argv[2:6])
def us(label):
    m = re.search(r'\s%s\s+([\d.]+)(us|ms|s)' % label, out)
    v, unit = float(m.group(1)), m.group(2)
    return v * {'us': 1, 'ms': 1e3, 's': 1e6}[unit]
if sys.argv[6] == 'h2c':
    # h2load prints no percentiles: the mean time per request stands in for both columns
    reqs = int(re.search(r'requests: \d+ total, \d+ started, (\d+) done', out).group(1))
    rps = float(re.search(r'finished in [\d.]+s, ([\d.]+) req/s', out).group(1))
    m = re.search(r'time for request:\s+\S+\s+\S+\s+([\d.]+)(us|ms|s)', out)
    mean = float(m.group(1)) * {'us': 1, 'ms': 1e3, 's': 1e6}[m.group(2)]
    p50 = p99 = mean
    ok = int(re.search(r'status codes: (\d+) 2xx', out).group(1))
    errs = max(0, reqs - ok)
else:
    reqs = int(re.search(r'(\d+) requests in', out).group(1))
    rps = float(re.search(r'Requests/sec:\s+([\d.]+)', out).group(1))
    p50, p99 = us('50%'), us('99%')
    e = re.search(r'Non-2xx or 3xx responses: (\d+)', out)
    errs = e.group(1) if e else 0
tick = 1e6 / 100  # USER_HZ
print(name, rps, p50, p99, (u1-u0)*tick/reqs, (s1-s0)*tick/reqs, errs)
PY
}

load() { # port seconds -> the load generator's report
  if [ "$PROTO" = h2c ]; then
    taskset -c 1 h2load -t1 -c10 -m10 -D "$2" "http://127.0.0.1:$1/" 2>&1
  else
    taskset -c 1 wrk -t1 -c"$CONNS" -d"$2s" --latency "http://127.0.0.1:$1/" 2>&1
  fi
}

# warm up
load "$NGX" 2 >/dev/null
load "$HL" 2 >/dev/null
if [ -n "${BASELINE:-}" ]; then load "$HLB" 2 >/dev/null; fi
if [ -n "${HAPROXY:-}" ]; then load "$HAP" 2 >/dev/null; fi
results=$dir/results
for i in $(seq "$ROUNDS"); do
  run nginx "$NGX" "$NPID" >> "$results"
  run hitless "$HL" "$HPID" >> "$results"
  if [ -n "${BASELINE:-}" ]; then run baseline "$HLB" "$BPID" >> "$results"; fi
  if [ -n "${HAPROXY:-}" ]; then run haproxy "$HAP" "$APID" >> "$results"; fi
done
# Peak resident memory over the whole run (VmHWM; nginx: master + worker).
hwm() { awk '/VmHWM/{print $2}' "/proc/$1/status"; }
{
  echo "nginx $(( $(hwm "${pids[1]}") + $(hwm "$NPID") ))"
  echo "hitless $(hwm "$HPID")"
  if [ -n "${BASELINE:-}" ]; then echo "baseline $(hwm "$BPID")"; fi
  if [ -n "${HAPROXY:-}" ]; then echo "haproxy $(hwm "$APID")"; fi
} > "$dir/peaks"
python3 - "$results" "$ROUNDS" "$SECS" "$CONNS" "$PROTO" "$dir/peaks" <<'PY'
import sys, statistics as st
rows = [l.split() for l in open(sys.argv[1])]
by = {}
for r in rows:
    by.setdefault(r[0], []).append([float(x) for x in r[1:]])
load = ("h2load 1 thread, h2c, 10 connections x 10 streams (p50/p99: mean)" if sys.argv[5] == 'h2c'
        else f"wrk 1 thread {sys.argv[4]} connections")
print(f"hitless vs nginx, reverse proxy, 1 core each, {load}, median of {sys.argv[2]} rounds x {sys.argv[3]} s")
print(f"{'proxy':<8} {'requests/s':>11} {'p50 us':>8} {'p99 us':>8} {'CPU us/req':>11} {'(user':>7} {'sys)':>6} {'non-2xx':>8}")
med = {}
for name in [n for n in ['nginx', 'hitless', 'baseline', 'haproxy'] if n in by]:
    cols = list(zip(*by[name]))
    m = [st.median(c) for c in cols]
    med[name] = m
    print(f"{name:<8} {m[0]:>11.0f} {m[1]:>8.0f} {m[2]:>8.0f} {m[3]+m[4]:>11.2f} {m[3]:>7.2f} {m[4]:>6.2f} {int(sum(cols[5])):>8}")
n, h = med['nginx'], med['hitless']
print(f"ratio hitless/nginx: requests/s {h[0]/n[0]:.2f}x, p50 {h[1]/n[1]:.2f}x, p99 {h[2]/n[2]:.2f}x, "
      f"CPU per request {(h[3]+h[4])/(n[3]+n[4]):.2f}x")
if 'haproxy' in med:
    a = med['haproxy']
    print(f"ratio haproxy/nginx: requests/s {a[0]/n[0]:.2f}x, CPU per request {(a[3]+a[4])/(n[3]+n[4]):.2f}x")
peaks = dict(l.split() for l in open(sys.argv[6]))
print("peak RSS (VmHWM) over the run: " + ", ".join(
    f"{k} {int(v)/1024:.1f} MiB" for k, v in peaks.items()))
if 'baseline' in med:
    b = med['baseline']
    print(f"ratio hitless/baseline: requests/s {h[0]/b[0]:.2f}x, CPU per request {(h[3]+h[4])/(b[3]+b[4]):.2f}x, "
          f"user {h[3]/b[3]:.2f}x")
PY
