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
ROUNDS=${ROUNDS:-2}
ROUND_SECS=${ROUND_SECS:-6}
CONNS=${CONNS:-64}
log() { printf '== %s\n' "$*" >&2; }

missing=()
command -v wrk >/dev/null || missing+=(wrk)
command -v nginx >/dev/null || missing+=(nginx-light)
command -v haproxy >/dev/null || missing+=(haproxy)
command -v perf >/dev/null || missing+=(linux-perf)
if ((${#missing[@]})); then
  log "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${missing[@]}" >/dev/null
fi

log "building the release binary"
cargo build --release --quiet
BIN=$(pwd)/target/release/idoctor-gate

DIR=$(mktemp -d /tmp/gate-turns.XXXXXX)
chmod 755 "$DIR"
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$DIR"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
UPSTREAM_PORT=$(free_port)
NGINX_PROXY_PORT=$(free_port)
GATE_PORT=$(free_port)
HAPROXY_PORT=$(free_port)
export GATE_JWT_SECRET=bench-secret-bench-secret-bench-secret-0123
export GATE_API_KEY_PEPPER=bench-pepper-bench-pepper-bench-pepper-0123
render() { # file
  sed -e "s|@DIR@|$DIR|g" -e "s|@UPSTREAM_PORT@|$UPSTREAM_PORT|g" -e "s|@NGINX_PROXY_PORT@|$NGINX_PROXY_PORT|g" \
      -e "s|@XFER_PORT@|$UPSTREAM_PORT|g" -e "s|@NGINX_XFER_PORT@|$(free_port)|g" \
      -e "s|@GATE_PORT@|$GATE_PORT|g" -e "s|@DATA@|$DIR/data|g" -e "s|@DATABASE_URL@|sqlite://$DIR/data/gate.db|g" \
      -e "s|@GATE_UPSTREAM_PORT@|$UPSTREAM_PORT|g" -e "s|@HAPROXY_PORT@|$HAPROXY_PORT|g" \
      -e "s|@JWT_SECRET@|$GATE_JWT_SECRET|g" "$1"
}
mkdir -p "$DIR/data"
render bench/backend.nginx.conf >"$DIR/backend.conf"
render bench/proxy.nginx.conf >"$DIR/proxy.conf"
render bench/haproxy.cfg >"$DIR/haproxy.cfg"
render bench/gate.toml >"$DIR/gate.toml"
taskset -c 1 nginx -c "$DIR/backend.conf" -e "$DIR/backend-error.log" 2>/dev/null & PIDS+=($!)
taskset -c 0 nginx -c "$DIR/proxy.conf" -e "$DIR/proxy-error.log" 2>/dev/null & PIDS+=($!)
taskset -c 0 haproxy -f "$DIR/haproxy.cfg" -db >"$DIR/haproxy.log" 2>&1 & PIDS+=($!)
RUST_LOG=warn taskset -c 0 "$BIN" serve --config "$DIR/gate.toml" >"$DIR/gate.log" 2>&1 & PIDS+=($!)
for _ in $(seq 1 300); do curl -s -o /dev/null "http://127.0.0.1:$GATE_PORT/healthz" && break; sleep 0.1; done
curl -sf -X POST "http://127.0.0.1:$GATE_PORT/auth/register" -H 'content-type: application/json' \
  -d '{"email":"bench@example.com","username":"bench","password":"bench-password"}' >/dev/null
TOKEN=$(curl -sf -X POST "http://127.0.0.1:$GATE_PORT/auth/login" -H 'content-type: application/json' \
  -d '{"username_or_email":"bench","password":"bench-password"}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')

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
