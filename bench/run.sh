#!/usr/bin/env bash
# The gate held against nginx and the bare backend, on loopback, in one run.
#
#   bash bench/run.sh            (DURATION=10 CONNS=64 BIG_MB=1024 IDLE=10000 by default)
#
# Installs what it needs (wrk, nginx-light; PostgreSQL server binaries if missing), builds
# the release binary, and measures side by side:
#   - the bare backend (nginx returning a small JSON body, standing in for iDoctor);
#   - nginx as a plain reverse proxy in front of it (no auth): the reference;
#   - HAProxy verifying the same HS256 access token (bench/haproxy.cfg): the same-job peer;
#   - the gate on a public, a JWT, an API-key and a metered route (SQLite and PostgreSQL),
#     and ROUNDS alternating rounds of nginx / HAProxy / JWT / API key for the ratios of
#     throughput and p99 at saturation taken within a round, and METERED_ROUNDS more rounds
#     of each metered route;
#   - latency at half the gate's load: alone, beside an idle-priority spinner on its core (the
#     control) and beside logins (argon2), and HAProxy's at the same rate;
#   - the gate's defaults unpinned: workers = 1, workers = 2 and workers = 2 without the
#     connection hand-over, beside HAProxy with 2 threads, in alternating rounds, with each
#     worker's share of connections and requests (from /metrics);
#   - a streamed upload and download of BIG_MB, direct, through nginx and through the gate,
#     against a backend and by a client that cost little (bench/helpers.py), with each proxy's
#     CPU time and the gate's peak RSS;
#   - IDLE idle keep-alive connections held by a freshly started gate, and its RSS.
# Every proxy under test runs on CPU 0 with one thread (nginx: one worker; HAProxy: one
# thread; the gate: one worker thread); the backend and the load generator share CPU 1,
# except in the workers section, where nothing is pinned. Prints one table and writes it to
# bench/results/latest.md.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
source bench/lib.sh

DURATION=${DURATION:-10}
CONNS=${CONNS:-64}
BIG_MB=${BIG_MB:-1024}
IDLE=${IDLE:-10000}
OUT=${OUT:-bench/results/latest.md}
# Extra PostgreSQL server options, e.g. PG_OPTS="-c synchronous_commit=off" to see what fsync costs.
PG_OPTS=${PG_OPTS:-}

# --- what a fresh machine lacks ----------------------------------------------------------------
need wrk nginx:nginx-light haproxy postgres

log "building the release binary"
cargo build --release --quiet
BIN=$ROOT/target/release/idoctor-gate

# Each side of IDLE connections needs a descriptor per connection.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

bench_dir bench

UPSTREAM_PORT=$(free_port)
NGINX_PROXY_PORT=$(free_port)
GATE_PORT=$(free_port)
PG_PORT=$(free_port)
XFER_PORT=$(free_port)
NGINX_XFER_PORT=$(free_port)
HAPROXY_PORT=$(free_port)
HAPROXY2_PORT=$(free_port)
log "preparing a ${BIG_MB} MiB file"
head -c "${BIG_MB}M" /dev/zero >"$DIR/big.bin"

render bench/backend.nginx.conf >"$DIR/backend.conf"
render bench/proxy.nginx.conf >"$DIR/proxy.conf"
taskset -c 1 nginx -c "$DIR/backend.conf" -e "$DIR/backend-error.log" & PIDS+=($!)
taskset -c 0 nginx -c "$DIR/proxy.conf" -e "$DIR/proxy-error.log" & PIDS+=($!)
NGINX_PROXY_PID=$!
render bench/haproxy.cfg >"$DIR/haproxy.cfg"
taskset -c 0 haproxy -f "$DIR/haproxy.cfg" -db & PIDS+=($!)
HAPROXY_PID=$!
# The same with two threads, unpinned, for the workers section.
sed -e 's/nbthread 1/nbthread 2/' -e "s|127.0.0.1:$HAPROXY_PORT|127.0.0.1:$HAPROXY2_PORT|" "$DIR/haproxy.cfg" >"$DIR/haproxy2.cfg"
haproxy -f "$DIR/haproxy2.cfg" -db & PIDS+=($!)
taskset -c 1 python3 bench/helpers.py transfer-backend "$XFER_PORT" "$DIR/big.bin" & PIDS+=($!)
wait_http "http://127.0.0.1:$UPSTREAM_PORT/json"
wait_http "http://127.0.0.1:$NGINX_PROXY_PORT/json"
wait_http "http://127.0.0.1:$HAPROXY_PORT/json"
wait_http "http://127.0.0.1:$HAPROXY2_PORT/json"
wait_http "http://127.0.0.1:$XFER_PORT/sink" -X POST -d x

# --- the gate ----------------------------------------------------------------------------------
GATE_PID=""
start_gate() { # name database_url [upstream_port]
  local data="$DIR/gate-$1"
  mkdir -p "$data"
  GATE_UPSTREAM_PORT=${3:-$UPSTREAM_PORT} render bench/gate.toml "$data" "$2" >"$data/gate.toml"
  RUST_LOG=warn taskset -c 0 "$BIN" serve --config "$data/gate.toml" \
    >"$data/gate.log" 2>&1 &
  GATE_PID=$!
  PIDS+=("$GATE_PID")
  wait_http "http://127.0.0.1:$GATE_PORT/healthz"
}
stop_gate() { kill "$GATE_PID"; wait "$GATE_PID" 2>/dev/null || true; }
rss_kb() { awk -v k="$2" '$1==k":" {print $2}' "/proc/$1/status"; }

GATE="http://127.0.0.1:$GATE_PORT"
sign_in() { bench_login "$GATE"; KEY=$(new_key "$GATE" "$TOKEN" bench); }

ROWS=()
row() { ROWS+=("$1|$2"); printf '%-44s %s\n' "$1" "$2" >&2; }
wrk_run() { # label url [wrk args...]
  local label=$1 url=$2; shift 2
  taskset -c 1 wrk -t1 -c"$CONNS" -d"${DURATION}s" --latency "$@" "$url" >"$DIR/wrk.out" 2>&1
  row "$label" "$(python3 bench/helpers.py parse-wrk "$DIR/wrk.out")"
}
# Every connection pauses 1 ms on average after each answer (bench/paced.lua, at random
# between 0 and 2 ms), so a connection makes 1 / (1 ms + latency) requests a second; into
# $DIR/wrk.out.
paced_wrk() { # conns seconds url [wrk args...]
  local conns=$1 secs=$2 url=$3; shift 3
  PACE_MS=1 taskset -c 1 wrk -t1 -c"$conns" -d"${secs}s" --latency -s bench/paced.lua "$@" "$url" >"$DIR/wrk.out" 2>&1
}
# About `rate` requests/s: a 2 s trial measures what a paced connection makes, and the row
# runs with as many connections as the rate asked needs.
paced_run() { # label rate url [wrk args...]
  local label=$1 rate=$2 url=$3; shift 3
  local conns=$(( (rate + 749) / 750 )) got
  paced_wrk "$conns" 2 "$url" "$@"
  got=$(python3 bench/helpers.py parse-wrk "$DIR/wrk.out" | cut -d' ' -f1)
  conns=$(python3 -c "import math; print(max(1, math.ceil($conns * $rate / max(1, $got))))")
  PACED_CONNS=$conns
  paced_wrk "$conns" "$DURATION" "$url" "$@"
  row "$label" "$(python3 bench/helpers.py parse-wrk "$DIR/wrk.out")"
}

# A transfer's MiB/s, by a client that costs little on the core it shares with the backend
# (the body goes out with sendfile(2), comes in 1 MiB reads).
transfer() { # up|down port
  if [[ "$1" == up ]]; then
    taskset -c 1 python3 bench/helpers.py upload "$2" "$DIR/big.bin" /sink
  else
    taskset -c 1 python3 bench/helpers.py download "$2" /big
  fi
}
# Seconds of CPU a process used since an earlier cpu_of.
cpu_since() { python3 -c "print(f'{($(cpu_of "$1") - $2) / $(getconf CLK_TCK):.2f}')"; }
# Busy and total jiffies of one CPU, to say which core limits a transfer.
cpu_ticks() { awk -v c="cpu$1" '$1 == c { print $2+$3+$4+$7+$8, $2+$3+$4+$5+$6+$7+$8 }' /proc/stat; }
busy_since() { # cpu "busy total" -> percent busy since then
  read -r b0 t0 <<<"$2"; read -r b1 t1 <<<"$(cpu_ticks "$1")"
  python3 -c "print(round(100 * ($b1 - $b0) / max(1, $t1 - $t0)))"
}

log "transfers of ${BIG_MB} MiB: direct, through nginx, through the gate"
start_gate xfer "sqlite://$DIR/gate-xfer/gate.db" "$XFER_PORT"
NGINX_WORKER=$(pgrep -P "$NGINX_PROXY_PID" | head -1)
UP_DIRECT=$(transfer up "$XFER_PORT")
T=$(cpu_of "$NGINX_WORKER"); UP_NGINX=$(transfer up "$NGINX_XFER_PORT"); UP_NGINX_CPU=$(cpu_since "$NGINX_WORKER" "$T")
C0=$(cpu_ticks 0); C1=$(cpu_ticks 1); T=$(cpu_of "$GATE_PID")
UP_GATE=$(transfer up "$GATE_PORT")
UP_GATE_CPU=$(cpu_since "$GATE_PID" "$T")
UP_BUSY="CPU 0 (gate) $(busy_since 0 "$C0") %, CPU 1 (backend and client) $(busy_since 1 "$C1") %"
DOWN_DIRECT=$(transfer down "$XFER_PORT")
T=$(cpu_of "$NGINX_WORKER"); DOWN_NGINX=$(transfer down "$NGINX_XFER_PORT"); DOWN_NGINX_CPU=$(cpu_since "$NGINX_WORKER" "$T")
C0=$(cpu_ticks 0); C1=$(cpu_ticks 1); T=$(cpu_of "$GATE_PID")
DOWN_GATE=$(transfer down "$GATE_PORT")
DOWN_GATE_CPU=$(cpu_since "$GATE_PID" "$T")
DOWN_BUSY="CPU 0 (gate) $(busy_since 0 "$C0") %, CPU 1 (backend and client) $(busy_since 1 "$C1") %"
# A transfer takes under a second and the VM's speed moves between transfers: XFER_ROUNDS
# more rounds of direct and then the gate, each ratio taken within its round, and the medians.
XFER_ROUNDS=${XFER_ROUNDS:-5}
R_UP=() R_DOWN=()
ratio_of() { python3 -c "print(f'{$2 / $1:.2f}')"; }
for _ in $(seq 1 "$XFER_ROUNDS"); do
  R_UP+=("$(ratio_of "$(transfer up "$XFER_PORT")" "$(transfer up "$GATE_PORT")")")
  R_DOWN+=("$(ratio_of "$(transfer down "$XFER_PORT")" "$(transfer down "$GATE_PORT")")")
done
XFER_LINE=$(python3 -c "
import statistics as s
u = [float(x) for x in '${R_UP[*]}'.split()]; d = [float(x) for x in '${R_DOWN[*]}'.split()]
print(f'over {len(u)} more rounds (direct, then the gate), gate / direct: upload {u}, median {s.median(u):.2f}x; download {d}, median {s.median(d):.2f}x')")
log "transfer rounds: $XFER_LINE"
# A DICOM upload form through a route whose fields the gate checks as the body streams
# (tenancy::multipart), against the same form sent direct, FORM_ROUNDS alternating rounds.
sign_in
FORM_ROUNDS=${FORM_ROUNDS:-3}
R_FORM=()
form_up() { taskset -c 1 python3 bench/helpers.py upload-form "$1" "$DIR/big.bin" "$2" "$TOKEN"; }
for _ in $(seq 1 "$FORM_ROUNDS"); do
  R_FORM+=("$(ratio_of "$(form_up "$XFER_PORT" /sink)" "$(form_up "$GATE_PORT" /upload_form)")")
done
FORM_LINE=$(python3 -c "
import statistics as s
f = [float(x) for x in '${R_FORM[*]}'.split()]
print(f'a multipart/form-data upload of ${BIG_MB} MiB checked as it streams, over {len(f)} rounds (direct, then the gate), gate / direct: {f}, median {s.median(f):.2f}x')")
log "form rounds: $FORM_LINE"
# curl as the client, for comparison with earlier runs: it copies every byte through itself
# on the core it shares with the backend, which then limits the figures.
curl_up() { python3 -c "print(f'{$BIG_MB / $(taskset -c 1 curl -s -o /dev/null -w '%{time_total}' -T "$DIR/big.bin" -X POST "$1"):.0f}')"; }
CURL_UP_DIRECT=$(curl_up "http://127.0.0.1:$XFER_PORT/sink")
CURL_UP_NGINX=$(curl_up "http://127.0.0.1:$NGINX_XFER_PORT/sink")
CURL_UP_GATE=$(curl_up "$GATE/sink")
PEAK_KB=$(rss_kb "$GATE_PID" VmHWM)
log "upload MiB/s direct $UP_DIRECT nginx $UP_NGINX gate $UP_GATE; download direct $DOWN_DIRECT nginx $DOWN_NGINX gate $DOWN_GATE; peak RSS ${PEAK_KB} KiB"
stop_gate

log "SQLite gate: idle connections, throughput"
start_gate sqlite "sqlite://$DIR/gate-sqlite/gate.db"
sign_in

RSS_BEFORE=$(rss_kb "$GATE_PID" VmRSS)
mkfifo "$DIR/idle.in"
python3 bench/helpers.py idle "$IDLE" "$GATE_PORT" <"$DIR/idle.in" >"$DIR/idle.out" &
IDLE_PID=$!
exec 7>"$DIR/idle.in"
for _ in $(seq 1 600); do grep -q '^open' "$DIR/idle.out" 2>/dev/null && break; sleep 0.1; done
# An idle connection gives back its buffers after 250 ms of quiet; the last ones opened need that.
sleep 1
IDLE_LINE=$(cat "$DIR/idle.out")
RSS_IDLE=$(rss_kb "$GATE_PID" VmRSS)
exec 7>&-
wait "$IDLE_PID" || true
log "idle: $IDLE_LINE; RSS ${RSS_BEFORE} -> ${RSS_IDLE} KiB"

wrk_run "backend direct (nginx)" "http://127.0.0.1:$UPSTREAM_PORT/json"
wrk_run "nginx plain reverse proxy" "http://127.0.0.1:$NGINX_PROXY_PORT/json"
HAPROXY_URL="http://127.0.0.1:$HAPROXY_PORT/json"
wrk_run "HAProxy verifying the JWT" "$HAPROXY_URL" -H "Authorization: Bearer $TOKEN"
wrk_run "gate, public route" "$GATE/public"
wrk_run "gate, JWT route" "$GATE/user/json" -H "Authorization: Bearer $TOKEN"
wrk_run "gate, API-key route" "$GATE/user/json" -H "X-API-Key: $KEY"
wrk_run "gate, metered route (SQLite)" "$GATE/process/p/20250101" -H "Authorization: Bearer $TOKEN" -s bench/post.lua

# Rows run one after the other, and this VM's speed drifts between them by up to 10 %: ROUNDS
# more rounds of nginx, HAProxy, the JWT route and the API-key route in turn (the order
# reversed every other round), each ratio taken within its round, and their medians. Six:
# within one run of three, one proxy's rounds ranged 29k-43k req/s and the medians of two
# runs twenty minutes apart differed by 10-20 %; an even count runs each order equally often.
ROUNDS=${ROUNDS:-6}
R_N=() R_H=() R_J=() R_K=()
rps_of() { taskset -c 1 wrk -t1 -c"$CONNS" -d"$ROUND_SECS"s "$@" >"$DIR/wrk.out" 2>&1; python3 bench/helpers.py parse-wrk "$DIR/wrk.out" | cut -d' ' -f1; }
# CPU 0's busy ticks (the proxy under test) and CPU 1's idle ticks (load generator and
# backend), from /proc/stat.
cpu_ticks() { awk '$1 == "cpu0" {b = $2 + $3 + $4 + $7 + $8} $1 == "cpu1" {i = $5 + $6} END {print b, i}' /proc/stat; }
# "rps p99 busy0 idle1" of one round: its throughput and p99, and the ticks CPU 0 was busy
# and CPU 1 idle meanwhile. When CPU 1 has no idle left, wrk and the backend set the rate, not
# the proxy; CPU 0's time per request still says what the proxy costs.
rps_p99() {
  local b0 i0 b1 i1
  read -r b0 i0 < <(cpu_ticks)
  taskset -c 1 wrk -t1 -c"$CONNS" -d"$ROUND_SECS"s --latency "$@" >"$DIR/wrk.out" 2>&1
  read -r b1 i1 < <(cpu_ticks)
  echo "$(python3 bench/helpers.py parse-wrk "$DIR/wrk.out" | cut -d' ' -f1,3) $((b1 - b0)) $((i1 - i0))"
}
HZ=$(getconf CLK_TCK)
ROUND_SECS=${ROUND_SECS:-5}
saturate() { # which -> "rps p99"
  case $1 in
    N) rps_p99 "http://127.0.0.1:$NGINX_PROXY_PORT/json" ;;
    H) rps_p99 "$HAPROXY_URL" -H "Authorization: Bearer $TOKEN" ;;
    J) rps_p99 "$GATE/user/json" -H "Authorization: Bearer $TOKEN" ;;
    K) rps_p99 "$GATE/user/json" -H "X-API-Key: $KEY" ;;
  esac
}
for i in $(seq 1 "$ROUNDS"); do
  if ((i % 2)); then order="N H J K"; else order="K J H N"; fi
  for w in $order; do printf -v "NOW_$w" '%s' "$(saturate "$w")"; done
  R_N+=("$NOW_N") R_H+=("$NOW_H") R_J+=("$NOW_J") R_K+=("$NOW_K")
done
ROUND_LINE=$(python3 -c "
import statistics as s
def pairs(v): return [tuple(float(x) for x in p.split()) for p in v.split('|')]
n, h, j, k = (pairs(v) for v in ('$(IFS='|'; echo "${R_N[*]}")', '$(IFS='|'; echo "${R_H[*]}")', '$(IFS='|'; echo "${R_J[*]}")', '$(IFS='|'; echo "${R_K[*]}")'))
r = lambda a, b, f: [round(f(x, y), 2) for x, y in zip(a, b)]
tput = lambda x, y: x[0] / y[0]
tail = lambda x, y: x[1] / y[1]
jn, kn, jh, kh, pj = r(j, n, tput), r(k, n, tput), r(j, h, tput), r(k, h, tput), r(j, h, tail)
print(f'over {len(j)} alternating rounds of {$ROUND_SECS} s (nginx, HAProxy, JWT, API key; reversed every other round): '
      f'requests/s nginx {[x[0] for x in n]}, HAProxy {[x[0] for x in h]}, JWT {[x[0] for x in j]}, API key {[x[0] for x in k]}; '
      f'gate / nginx: JWT {jn} median {s.median(jn):.2f}x, API key {kn} median {s.median(kn):.2f}x; '
      f'gate / HAProxy: JWT {jh} median {s.median(jh):.2f}x, API key {kh} median {s.median(kh):.2f}x; '
      f'p99 at saturation (ms) HAProxy {[x[1] for x in h]}, JWT {[x[1] for x in j]}, gate / HAProxy {pj} median {s.median(pj):.2f}x', end='')
# CPU 0's time per request (us) and CPU 1's idle share (%) of each round.
cost = lambda v: [round(x[2] * 1e6 / $HZ / (x[0] * $ROUND_SECS), 1) for x in v]
idle = lambda v: [round(100 * x[3] / ($HZ * $ROUND_SECS), 1) for x in v]
cj, ch, cn, ck = cost(j), cost(h), cost(n), cost(k)
per = [round(a / b, 2) for a, b in zip(cj, ch)]
print(f'; CPU 0 (the proxy) per request, us: nginx {cn}, HAProxy {ch}, JWT {cj}, API key {ck}; JWT / HAProxy {per} median {s.median(per):.2f}x, '
      f'JWT / nginx median {s.median([a / b for a, b in zip(cj, cn)]):.2f}x; '
      f'CPU 1 (wrk and the backend) idle, %: during HAProxy {idle(h)}, during JWT {idle(j)}, during nginx {idle(n)}', end='')")
log "rounds: $ROUND_LINE"
# The same comparison paired within the same seconds: HAProxy and the gate's JWT route loaded
# at once (each on CPU 0 with its own wrk of CONNS / 2 connections on CPU 1), so whatever
# phase the VM is in holds for both. Each gets about half of CPU 0; the ratio of requests says
# how much more one serves for the same CPU, and each process's own CPU time per request what
# a request costs it. Not a throughput target (the two share a core), but it does not move
# with the phases that move the rounds above by up to 1.3x.
TOGETHER_ROUNDS=${TOGETHER_ROUNDS:-4}
proc_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
T_REQ=() T_CPU=()
for _ in $(seq 1 "$TOGETHER_ROUNDS"); do
  th=$(proc_ticks "$HAPROXY_PID"); tg=$(proc_ticks "$GATE_PID")
  taskset -c 1 wrk -t1 -c"$((CONNS / 2))" -d"$ROUND_SECS"s -H "Authorization: Bearer $TOKEN" "$HAPROXY_URL" >"$DIR/wrk-h.out" 2>&1 &
  WRK_H=$!
  taskset -c 1 wrk -t1 -c"$((CONNS / 2))" -d"$ROUND_SECS"s -H "Authorization: Bearer $TOKEN" "$GATE/user/json" >"$DIR/wrk-g.out" 2>&1
  wait "$WRK_H"
  th=$(( $(proc_ticks "$HAPROXY_PID") - th )); tg=$(( $(proc_ticks "$GATE_PID") - tg ))
  rh=$(python3 bench/helpers.py parse-wrk "$DIR/wrk-h.out" | cut -d' ' -f1)
  rg=$(python3 bench/helpers.py parse-wrk "$DIR/wrk-g.out" | cut -d' ' -f1)
  T_REQ+=("$(python3 -c "print(round($rg / $rh, 3))")")
  T_CPU+=("$(python3 -c "print(round(($tg / $rg) / ($th / $rh), 3))")")
done
TOGETHER_LINE=$(python3 -c "
import statistics as s
r = [$(IFS=,; echo "${T_REQ[*]}")]; c = [$(IFS=,; echo "${T_CPU[*]}")]
print(f'HAProxy and the gate\'s JWT route loaded at once on CPU 0, {len(r)} rounds of $ROUND_SECS s: requests gate / HAProxy {r} median {s.median(r):.2f}x; '
      f'each process\'s CPU time per request, gate / HAProxy {c} median {s.median(c):.2f}x')")
log "together: $TOGETHER_LINE"
# The metered route's row is one stretch of DURATION s; METERED_ROUNDS more rounds of
# ROUND_SECS each (a new patient per request, as in the row), and their median. The row runs
# first on a fresh database and measured 0.5-0.9x the rounds after it in the run of 02:55.
METERED_ROUNDS=${METERED_ROUNDS:-5}
metered_rounds() { # label -> "label: requests/s per round [...], median N"
  local got=()
  for _ in $(seq 1 "$METERED_ROUNDS"); do
    got+=("$(rps_of "$GATE/process/p/20250101" -H "Authorization: Bearer $TOKEN" -s bench/post.lua)")
  done
  python3 -c "
import statistics as s
r = [round(float(x)) for x in '${got[*]}'.split()]
print(f'$1: requests/s over {len(r)} rounds of {$ROUND_SECS} s {r}, median {s.median(r):.0f}')"
}
METERED_SQLITE_LINE=$(metered_rounds "metered route (SQLite)")
log "$METERED_SQLITE_LINE"
# Tenant isolation on a frequent poll: ISO_ROUNDS alternating rounds of /task_status/{id} of a
# task the caller owns (ownership checked against the cached owner, the id namespaced, the
# reply's names un-namespaced) and of the same poll on a route without isolation
# (/plain_status/{id}, which the backend answers alike), each ratio within its round.
curl -sf -X POST "$GATE/process/p/20250101" -H "Authorization: Bearer $TOKEN" >/dev/null
ISO_ROUNDS=${ISO_ROUNDS:-8}
RATIO_ISO=()
for i in $(seq 1 "$ISO_ROUNDS"); do
  if ((i % 2)); then
    J=$(rps_of "$GATE/plain_status/main_p_20250101" -H "Authorization: Bearer $TOKEN")
    O=$(rps_of "$GATE/task_status/main_p_20250101" -H "Authorization: Bearer $TOKEN")
  else
    O=$(rps_of "$GATE/task_status/main_p_20250101" -H "Authorization: Bearer $TOKEN")
    J=$(rps_of "$GATE/plain_status/main_p_20250101" -H "Authorization: Bearer $TOKEN")
  fi
  RATIO_ISO+=("$(python3 -c "print(f'{$O / $J:.3f}')")")
done
ISO_LINE=$(python3 -c "
import statistics as s
r = [float(x) for x in '${RATIO_ISO[*]}'.split()]
print(f'the isolated poll /task_status/{{id}} / the same poll without isolation, over {len(r)} alternating rounds of {$ROUND_SECS} s: {r}, median {s.median(r):.3f}x')")
log "isolation: $ISO_LINE"

field_of() { # label-prefix field-number: a figure of an earlier row
  local r
  for r in "${ROWS[@]}"; do
    if [[ "$r" == "$1"* ]]; then echo "${r#*|}" | cut -d' ' -f"$2"; return 0; fi
  done
  echo 0
}
JWT_RPS=$(field_of "gate, JWT route|" 1)
HALF=$(( JWT_RPS / 2 ))
paced_run "backend direct at ${HALF}/s" "$HALF" "http://127.0.0.1:$UPSTREAM_PORT/json"
DIRECT_CONNS=$PACED_CONNS
# The reference hop: on this VM a request that crosses to the proxy's core and back waits for
# that core to wake whenever it idles, and nginx's own p99 at this rate shows what that costs.
paced_run "nginx plain reverse proxy at ${HALF}/s" "$HALF" "http://127.0.0.1:$NGINX_PROXY_PORT/json"
NGINX_CONNS=$PACED_CONNS
paced_run "HAProxy JWT at ${HALF}/s" "$HALF" "$HAPROXY_URL" -H "Authorization: Bearer $TOKEN"
HAPROXY_CONNS=$PACED_CONNS
paced_run "gate JWT at ${HALF}/s" "$HALF" "$GATE/user/json" -H "Authorization: Bearer $TOKEN"
# How often the machine pauses on its own under this load: one request a millisecond straight
# to the backend, beside the same load on the gate (not a row). On this VM both vCPUs stop
# together for 5-15 ms about once a second while they are busy (perf sees no sample on either
# core then; idle, the probe sees no pause): the tail of the half-load rows is mostly the queue
# such a pause leaves, which a proxy clears faster the more headroom it has.
taskset -c 1 python3 bench/helpers.py stalls "$UPSTREAM_PORT" /json "$DURATION" >"$DIR/stalls.out" &
STALLS_PID=$!
paced_wrk "$PACED_CONNS" "$DURATION" "$GATE/user/json" -H "Authorization: Bearer $TOKEN"
wait "$STALLS_PID" || true
STALLS=$(cat "$DIR/stalls.out")
log "stalls: $STALLS"
# Logins beside the proxied load. What runs beside the load is started a second before the
# measured window and outlasts it: a Python client started inside the window costs the load
# generator's core its start-up (tens of ms), which alone moved p99 by a quarter in a trial
# with a client that only fetched /healthz. A spinner at idle priority on the gate's core is
# the control: on this VM a core that never idles wakes its threads sooner, which lowers p99
# by itself, and that should not be credited to (or hide a cost of) the logins.
beside_logins() { taskset -c 1 python3 bench/helpers.py logins "$GATE_PORT" bench bench-password 2 "$(($1 + 2))"; }
beside_spinner() { chrt -i 0 taskset -c 0 timeout "$(($1 + 2))" sh -c 'while :; do :; done' || true; }
paced_beside() { # what seconds label: one paced row at PACED_CONNS with `beside_$what` running
  local what=$1 secs=$2 label=$3 pid
  "beside_$what" "$secs" >"$DIR/beside.out" 2>&1 &
  pid=$!
  sleep 1
  paced_wrk "$PACED_CONNS" "$secs" "$GATE/user/json" -H "Authorization: Bearer $TOKEN"
  wait "$pid" || true
  [[ -z "$label" ]] || row "$label" "$(python3 bench/helpers.py parse-wrk "$DIR/wrk.out")"
}
paced_beside spinner "$DURATION" "gate JWT at ${HALF}/s, idle spinner beside"
paced_beside logins "$DURATION" "gate JWT at ${HALF}/s, logins beside"
LOGINS=$(cat "$DIR/beside.out")
# The p99 of one row moves by a quarter or more from one row to the next on this VM:
# HALF_ROUNDS more rounds of the bare backend, nginx, the gate alone, beside the spinner and
# beside logins in turn, ROUND_SECS each; every comparison is taken within its round (the
# machine drifts between rounds), and the medians of those are the figures to compare.
HALF_ROUNDS=${HALF_ROUNDS:-8}
P99_DIRECT=() P99_NGINX=() P99_HAPROXY=() P99_PLAIN=() P99_SPIN=() P99_LOGINS=()
p99_now() { python3 bench/helpers.py parse-wrk "$DIR/wrk.out" | cut -d' ' -f3; }
paced_p99() { # conns url [wrk args...]: the p99 of one paced round
  local conns=$1 url=$2; shift 2
  paced_wrk "$conns" "$ROUND_SECS" "$url" "$@"
  p99_now
}
for _ in $(seq 1 "$HALF_ROUNDS"); do
  P99_DIRECT+=("$(paced_p99 "$DIRECT_CONNS" "http://127.0.0.1:$UPSTREAM_PORT/json")")
  P99_NGINX+=("$(paced_p99 "$NGINX_CONNS" "http://127.0.0.1:$NGINX_PROXY_PORT/json")")
  P99_HAPROXY+=("$(paced_p99 "$HAPROXY_CONNS" "$HAPROXY_URL" -H "Authorization: Bearer $TOKEN")")
  P99_PLAIN+=("$(paced_p99 "$PACED_CONNS" "$GATE/user/json" -H "Authorization: Bearer $TOKEN")")
  paced_beside spinner "$ROUND_SECS" ""
  P99_SPIN+=("$(p99_now)")
  paced_beside logins "$ROUND_SECS" ""
  P99_LOGINS+=("$(p99_now)")
done
HALF_LINE=$(python3 -c "
import statistics as s
d, n, a = ([float(x) for x in v.split()] for v in ('${P99_DIRECT[*]}', '${P99_NGINX[*]}', '${P99_PLAIN[*]}'))
added = lambda xs, ys: s.median([y - x for x, y in zip(xs, ys)])
print(f'over {len(a)} rounds of {$ROUND_SECS} s, p99 of the bare backend {d}, of nginx {n}, of the gate {a} (medians {s.median(d):.3f} / {s.median(n):.3f} / {s.median(a):.3f} ms); median within a round of what a proxy adds to the bare backend: nginx {added(d, n):.2f} ms, gate {added(d, a):.2f} ms')")
log "half load: $HALF_LINE"
HAPROXY_HALF_LINE=$(python3 -c "
import statistics as s
h, a = ([float(x) for x in v.split()] for v in ('${P99_HAPROXY[*]}', '${P99_PLAIN[*]}'))
r = [round(y / x, 2) for x, y in zip(h, a)]
print(f'p99 at half load over the same {len(a)} rounds: HAProxy {h}, gate {a}; gate / HAProxy within a round {r}, median {s.median(r):.2f}x')")
log "half load vs HAProxy: $HAPROXY_HALF_LINE"
LOGIN_PAIRS=$(python3 -c "
import statistics as s
a, c, b = ([float(x) for x in v.split()] for v in ('${P99_PLAIN[*]}', '${P99_SPIN[*]}', '${P99_LOGINS[*]}'))
pct = lambda xs, ys: f'{100 * (s.median([y / x for x, y in zip(xs, ys)]) - 1):+.0f} %'
print(f'in the same rounds, the gate\'s p99 alone {a}, beside the idle spinner {c}, beside logins {b} (medians {s.median(a):.3f} / {s.median(c):.3f} / {s.median(b):.3f} ms); median of the ratios within a round: logins vs alone {pct(a, b)}, logins vs spinner {pct(c, b)}, spinner vs alone {pct(a, c)}')")
log "logins: $LOGIN_PAIRS"
stop_gate

# The gate's defaults, nothing pinned (the way it is deployed): one worker, two workers with
# the connection hand-over (server::balance), two without it, and HAProxy with two threads,
# in WORKER_ROUNDS alternating rounds with wrk -c$WORKER_CONNS. Each gate has a database of
# its own (and so its own account), and reports how its workers shared connections and
# requests in /metrics.
log "workers: 1, 2, 2 without hand-over, HAProxy with 2 threads"
WORKER_CONNS=${WORKER_CONNS:-32}
WORKER_ROUNDS=${WORKER_ROUNDS:-4}
declare -A WPORT WTOKEN
start_worker_gate() { # name workers balance
  local name=$1 port data
  port=$(free_port)
  data="$DIR/gate-$name"
  mkdir -p "$data"
  GATE_PORT=$port render bench/gate.toml "$data" "sqlite://$data/gate.db" >"$data/gate.toml"
  sed -i -e "s/^workers = 1/workers = $2\nbalance = $3/" "$data/gate.toml"
  RUST_LOG=warn "$BIN" serve --config "$data/gate.toml" >"$data/gate.log" 2>&1 & PIDS+=($!)
  wait_http "http://127.0.0.1:$port/healthz"
  curl -sf -X POST "http://127.0.0.1:$port/auth/register" -H 'content-type: application/json' \
    -d '{"email":"bench@example.com","username":"bench","password":"bench-password"}' >/dev/null
  WPORT[$name]=$port
  WTOKEN[$name]=$(curl -sf -X POST "http://127.0.0.1:$port/auth/login" -H 'content-type: application/json' \
    -d '{"username_or_email":"bench","password":"bench-password"}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')
}
start_worker_gate w1 1 true
start_worker_gate w2 2 true
start_worker_gate w2off 2 false
unpinned() { # name -> "rps p99"
  local url token
  if [[ $1 == haproxy ]]; then url="http://127.0.0.1:$HAPROXY2_PORT/json"; token=$TOKEN
  else url="http://127.0.0.1:${WPORT[$1]}/user/json"; token=${WTOKEN[$1]}; fi
  wrk -t1 -c"$WORKER_CONNS" -d"$ROUND_SECS"s --latency -H "Authorization: Bearer $token" "$url" >"$DIR/wrk.out" 2>&1
  python3 bench/helpers.py parse-wrk "$DIR/wrk.out" | cut -d' ' -f1,3
}
W_ALL=()
for i in $(seq 1 "$WORKER_ROUNDS"); do
  if ((i % 2)); then order="haproxy w1 w2 w2off"; else order="w2off w2 w1 haproxy"; fi
  declare -A NOW=()
  for w in $order; do NOW[$w]=$(unpinned "$w"); done
  W_ALL+=("${NOW[haproxy]},${NOW[w1]},${NOW[w2]},${NOW[w2off]}")
done
shares() { # name -> "connections [..] requests [..]" per worker
  curl -s "http://127.0.0.1:${WPORT[$1]}/metrics" | python3 -c "
import re, sys
t = sys.stdin.read()
def per(name):
    got = {int(w): int(float(v)) for w, v in re.findall(name + r'\{worker=\"(\d+)\"\} (\S+)', t)}
    return [got[k] for k in sorted(got)]
print(f'connections {per(\"gate_worker_connections_total\")}, requests {per(\"gate_worker_requests_total\")}')"
}
WORKERS_LINE=$(python3 -c "
import statistics as s
rounds = [[tuple(float(x) for x in p.split()) for p in r.split(',')] for r in '$(IFS='|'; echo "${W_ALL[*]}")'.split('|')]
h, w1, w2, off = (list(c) for c in zip(*rounds))
med = lambda xs, i: s.median(x[i] for x in xs)
ratio = lambda a, b, i: [round(x[i] / y[i], 2) for x, y in zip(a, b)]
print(f'over {len(w1)} alternating rounds of {$ROUND_SECS} s, requests/s (median) HAProxy 2 threads {med(h, 0):.0f}, workers=1 {med(w1, 0):.0f}, workers=2 {med(w2, 0):.0f}, workers=2 without hand-over {med(off, 0):.0f}; '
      f'p99 ms (median) {med(h, 1):.2f} / {med(w1, 1):.2f} / {med(w2, 1):.2f} / {med(off, 1):.2f}; '
      f'within a round: workers=2 / workers=1 {ratio(w2, w1, 0)}, workers=2 / without hand-over {ratio(w2, off, 0)} (p99 {ratio(w2, off, 1)}), workers=2 / HAProxy {ratio(w2, h, 0)} (p99 {ratio(w2, h, 1)})')")
WORKERS_LINE="$WORKERS_LINE; per worker with the hand-over: $(shares w2); without: $(shares w2off)"
log "workers: $WORKERS_LINE"

log "PostgreSQL gate"
start_pg "$PG_PORT" "$PG_OPTS"
start_gate pg "postgres://postgres@127.0.0.1:$PG_PORT/postgres"
sign_in
wrk_run "gate, JWT route (PostgreSQL)" "$GATE/user/json" -H "Authorization: Bearer $TOKEN"
wrk_run "gate, metered route (PostgreSQL)" "$GATE/process/p/20250101" -H "Authorization: Bearer $TOKEN" -s bench/post.lua
METERED_PG_LINE=$(metered_rounds "metered route (PostgreSQL)")
log "$METERED_PG_LINE"
stop_gate

# --- the table ---------------------------------------------------------------------------------
NGINX_RPS=$(field_of "nginx plain reverse proxy|" 1)
DIRECT_P99_HALF=$(field_of "backend direct at " 3)
NGINX_P99_HALF=$(field_of "nginx plain reverse proxy at " 3)
GATE_P99_HALF=$(field_of "gate JWT at ${HALF}/s|" 3)
LOGINS_P99_HALF=$(field_of "gate JWT at ${HALF}/s, logins beside|" 3)
SPIN_P99_HALF=$(field_of "gate JWT at ${HALF}/s, idle spinner beside|" 3)
CPU=$(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)
{
  echo "Measured $(date -u +%Y-%m-%dT%H:%MZ) on $(nproc) cores ($CPU), loopback; ${DURATION}s per row, wrk -c$CONNS (wrk paced to about half the JWT route's rate for the half-load rows)."
  echo "Proxies under test on CPU 0 with one thread; backend and load generator on CPU 1."
  echo
  echo "| row | requests/s | p50 ms | p99 ms | errors | vs nginx proxy |"
  echo "|---|---:|---:|---:|---:|---:|"
  for r in "${ROWS[@]}"; do
    label=${r%%|*}
    read -r rps p50 p99 errs <<<"${r#*|}"
    ratio=$(python3 -c "print(f'{$rps / $NGINX_RPS:.2f}x')")
    echo "| $label | $rps | $p50 | $p99 | $errs | $ratio |"
  done
  echo
  ratio() { python3 -c "print(f'{$1 / $2:.2f}x')"; }
  echo "| transfer of ${BIG_MB} MiB | direct MiB/s | gate MiB/s | gate / direct | gate CPU s | nginx proxy MiB/s | nginx / direct | nginx CPU s |"
  echo "|---|---:|---:|---:|---:|---:|---:|---:|"
  echo "| upload (streamed POST) | $UP_DIRECT | $UP_GATE | $(ratio "$UP_GATE" "$UP_DIRECT") | $UP_GATE_CPU | $UP_NGINX | $(ratio "$UP_NGINX" "$UP_DIRECT") | $UP_NGINX_CPU |"
  echo "| download | $DOWN_DIRECT | $DOWN_GATE | $(ratio "$DOWN_GATE" "$DOWN_DIRECT") | $DOWN_GATE_CPU | $DOWN_NGINX | $(ratio "$DOWN_NGINX" "$DOWN_DIRECT") | $DOWN_NGINX_CPU |"
  echo
  echo "- transfers against bench/helpers.py transfer-backend (downloads sent with sendfile(2), uploads read whole), by bench/helpers.py upload/download (sendfile(2) out, 1 MiB reads in); direct runs client and backend on CPU 1, through a proxy the proxy has CPU 0 besides"
  echo "- with curl as the upload client (it copies every byte through itself on CPU 1): direct $CURL_UP_DIRECT MiB/s, gate $CURL_UP_GATE MiB/s ($(ratio "$CURL_UP_GATE" "$CURL_UP_DIRECT")), nginx $CURL_UP_NGINX MiB/s ($(ratio "$CURL_UP_NGINX" "$CURL_UP_DIRECT"))"
  echo "- busy during the upload through the gate: $UP_BUSY; during the download: $DOWN_BUSY"
  echo "- transfers $XFER_LINE"
  echo "- gate peak RSS over the transfers: $((PEAK_KB / 1024)) MiB"
  echo "- $IDLE idle keep-alive connections ($IDLE_LINE), on a freshly started gate: RSS $((RSS_BEFORE / 1024)) MiB -> $((RSS_IDLE / 1024)) MiB"
  echo "- throughput $ROUND_LINE"
  echo "- $TOGETHER_LINE"
  echo "- $HAPROXY_HALF_LINE"
  echo "- workers (nothing pinned, wrk -c$WORKER_CONNS): $WORKERS_LINE"
  echo "- tenant isolation: $ISO_LINE"
  echo "- exact metering, beside the rows above: $METERED_SQLITE_LINE; $METERED_PG_LINE"
  echo "- uploads: $FORM_LINE"
  echo "- the machine's own pauses, seen by one request a millisecond straight to the backend beside the half load on the gate: $STALLS"
  echo "- p99 at half load: backend direct ${DIRECT_P99_HALF} ms, nginx proxy ${NGINX_P99_HALF} ms, gate ${GATE_P99_HALF} ms; the gate adds $(python3 -c "print(f'{$GATE_P99_HALF - $DIRECT_P99_HALF:.2f}')") ms to the bare backend's p99 (nginx's proxy hop adds $(python3 -c "print(f'{$NGINX_P99_HALF - $DIRECT_P99_HALF:.2f}')") ms); $HALF_LINE"
  echo "- logins during the \"logins beside\" row: $LOGINS (two clients signing in over and over, each login an argon2 hash); the gate's p99 alone ${GATE_P99_HALF} ms, beside an idle-priority spinner on its core ${SPIN_P99_HALF} ms, beside logins ${LOGINS_P99_HALF} ms; $LOGIN_PAIRS"
} >"$DIR/table.md"
mkdir -p "$(dirname "$OUT")"
cp "$DIR/table.md" "$OUT"
cat "$OUT"
