#!/usr/bin/env bash
# How a proxy's pace sets what a request costs the other core: per proxied request, the CPU
# time of CPU 0 (the proxy) and of CPU 1 (wrk and the backend), how often the backend and wrk
# gave up CPU 1 for want of work, and how often CPU 0 woke one of them.
#
#   bash bench/turns.sh          (ROUNDS=2 ROUND_SECS=6 CONNS=64 by default; needs root for perf)
#
# Pinned as in bench/run.sh: nginx's plain proxy, HAProxy verifying the JWT and the gate
# (`workers = 1`, JWT route) on CPU 0; the small-JSON backend and wrk on CPU 1. For each proxy
# in turn, wrk runs ROUND_SECS at saturation while `perf record` takes the scheduler's
# `sched_switch` and `sched_wakeup` events of both cores for 2 s in the middle, and
# `/proc/stat` gives each core's busy time over the whole run. A proxy that keeps up with the
# two processes on CPU 1 keeps them in long turns (many requests each time they run); a slower
# one lets them run dry, and each turn then costs a wake-up across cores. README, "The runs of
# 2026-12-07 12:46 and 13:27 UTC", reads these figures.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
ROUNDS=${ROUNDS:-2}
ROUND_SECS=${ROUND_SECS:-6}
CONNS=${CONNS:-64}
need wrk nginx:nginx-light haproxy perf:linux-perf

log "building the release binary"
cargo build --release --quiet
BIN=$(pwd)/target/release/idoctor-gate

bench_dir turns
UPSTREAM_PORT=$(free_port)
NGINX_PROXY_PORT=$(free_port)
GATE_PORT=$(free_port)
HAPROXY_PORT=$(free_port)
# nginx's proxy also listens for transfers, which are not measured here: to the backend.
XFER_PORT=$UPSTREAM_PORT
NGINX_XFER_PORT=$(free_port)
mkdir -p "$DIR/data"
render bench/backend.nginx.conf >"$DIR/backend.conf"
render bench/proxy.nginx.conf >"$DIR/proxy.conf"
render bench/haproxy.cfg >"$DIR/haproxy.cfg"
render bench/gate.toml "$DIR/data" "sqlite://$DIR/data/gate.db" >"$DIR/gate.toml"
taskset -c 1 nginx -c "$DIR/backend.conf" -e "$DIR/backend-error.log" 2>/dev/null & PIDS+=($!)
taskset -c 0 nginx -c "$DIR/proxy.conf" -e "$DIR/proxy-error.log" 2>/dev/null & PIDS+=($!)
taskset -c 0 haproxy -f "$DIR/haproxy.cfg" -db >"$DIR/haproxy.log" 2>&1 & PIDS+=($!)
RUST_LOG=warn taskset -c 0 "$BIN" serve --config "$DIR/gate.toml" >"$DIR/gate.log" 2>&1 & PIDS+=($!)
wait_http "http://127.0.0.1:$GATE_PORT/healthz"
bench_login "http://127.0.0.1:$GATE_PORT"

busy() { awk '$1=="cpu0"{a=$2+$3+$4+$7+$8} $1=="cpu1"{b=$2+$3+$4+$7+$8} END{print a, b}' /proc/stat; }
HZ=$(getconf CLK_TCK)

# One proxy at saturation: prints its line.
turns() { # name url
  local name=$1 url=$2 before after n
  before=$(busy)
  taskset -c 1 wrk -t1 -c"$CONNS" -d"${ROUND_SECS}s" -H "Authorization: Bearer $TOKEN" "$url" >"$DIR/wrk.out" 2>&1 &
  local wrk=$!
  sleep $(((ROUND_SECS - 2) / 2))
  perf record -q -a -e sched:sched_switch,sched:sched_wakeup -o "$DIR/sched.data" -- sleep 2 >/dev/null 2>&1
  wait "$wrk"
  after=$(busy)
  n=$(awk '/requests in/{print $1}' "$DIR/wrk.out")
  perf script -i "$DIR/sched.data" 2>/dev/null | python3 -c "
import re, sys
name, n, secs, hz = '$name', int('$n'), $ROUND_SECS, $HZ
b0, b1 = map(int, '$before'.split()); a0, a1 = map(int, '$after'.split())
blocks = {'nginx': 0, 'wrk': 0}; wakes = 0; preempt = 0; events = 0
sampled = n * 2 / secs  # requests in the 2 s the trace covers
for line in sys.stdin:
    cpu = re.search(r'\[(\d+)\]', line)
    if not cpu:
        continue
    if 'sched_switch' in line and cpu.group(1) == '001':
        prev = re.search(r'prev_comm=(\S+)', line).group(1)
        state = re.search(r'prev_state=(\S+)', line).group(1)
        if state.startswith('S') and prev in blocks:
            blocks[prev] += 1
        if state == 'R' and prev in blocks:
            preempt += 1
    elif 'sched_wakeup' in line and cpu.group(1) == '000':
        comm = re.search(r'comm=(\S+)', line).group(1)
        if comm in ('nginx', 'wrk'):
            wakes += 1
us = lambda ticks: ticks * 1e6 / hz / n
print(f'{name:<24} {n / secs:8.0f}/s  CPU 0 {us(a0 - b0):5.1f} us  CPU 1 {us(a1 - b1):5.1f} us a request;'
      f' CPU 1 given up for want of work, a request: backend {blocks[\"nginx\"] / sampled:.3f}, wrk {blocks[\"wrk\"] / sampled:.3f};'
      f' preempted {preempt / sampled:.3f}; woken from CPU 0 {wakes / sampled:.3f}')
"
}

for round in $(seq "$ROUNDS"); do
  log "round $round"
  turns "nginx plain proxy" "http://127.0.0.1:$NGINX_PROXY_PORT/json"
  turns "HAProxy verifying JWT" "http://127.0.0.1:$HAPROXY_PORT/json"
  turns "gate, JWT route" "http://127.0.0.1:$GATE_PORT/user/json"
done
