#!/usr/bin/env bash
# A/B of two builds of the gate on the hot routes, for a change that must not cost throughput.
#
#   BASE=<git revision> bash bench/ab.sh      (ROUNDS=6 ROUND_SECS=5 CONNS=64 by default)
#   ROUTE=metered BASE=... bash bench/ab.sh   (the metered POST /process on SQLite instead)
#   ROUTE=metered-pg                          (the same on PostgreSQL: a cluster of its own, a
#                                              database for each side)
#   ROUTE=key / ROUTE=poll                    (the API-key route / the isolated task poll)
#   BIN_A=... BIN_B=...                       (compare two binaries already built)
#   TOGETHER=1                                (both gates loaded at the same time instead)
#
# Builds the release binary of BASE in a worktree of its own (A) and of the working tree (B),
# starts both on SQLite in front of the same small-JSON backend (bench/backend.nginx.conf), and
# runs ROUNDS rounds of the JWT route, A then B, then B then A in the next round, so neither
# side always runs second. Each ratio B / A is taken within its round (this VM drifts by up
# to 10 % between rows) and the medians are printed: of requests/s, and of the CPU 0 time each
# request cost (the steadier of the two when wrk and the backend on CPU 1 run out first).
# Like bench/run.sh, each gate runs on CPU 0 with one worker thread and wrk and the backend
# share CPU 1.
#
# TOGETHER=1 loads both gates at the same time instead, each with its own wrk of CONNS / 2
# connections: the two share CPU 0 (the scheduler gives each about half) and whatever phase the
# VM is in, so the ratios of requests served and of each gate's own CPU time per request
# (/proc/<pid>/stat) are paired within the same seconds. When this VM's speed swings by 20-40 %
# between rounds of a few seconds, alternating rounds cannot resolve a few per cent; this can.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
source bench/lib.sh
BASE=${BASE:?set BASE to the git revision to compare the working tree with}
ROUNDS=${ROUNDS:-6}
ROUND_SECS=${ROUND_SECS:-5}
CONNS=${CONNS:-64}
ROUTE=${ROUTE:-jwt}
case "$ROUTE" in
  jwt) TARGET=/user/json; WRK_ARGS=(); LABEL="JWT route" ;;
  metered) TARGET=/process/p/20250101; WRK_ARGS=(-s bench/post.lua); LABEL="metered route (SQLite)" ;;
  metered-pg) TARGET=/process/p/20250101; WRK_ARGS=(-s bench/post.lua); LABEL="metered route (PostgreSQL)" ;;
  key) TARGET=/user/json; WRK_ARGS=(); LABEL="API-key route" ;;
  poll) TARGET=/task_status/main_p_20250101; WRK_ARGS=(); LABEL="isolated task poll" ;;
  *) echo "ROUTE is jwt, metered, metered-pg, key or poll" >&2; exit 2 ;;
esac
if [[ "$ROUTE" == metered-pg ]]; then need wrk nginx:nginx-light postgres; else need wrk nginx:nginx-light; fi

WT=$(mktemp -d /tmp/gate-ab-base.XXXXXX)
more_cleanup() {
  git worktree remove --force "$WT" >/dev/null 2>&1 || true
  rm -rf "$WT"
}
bench_dir ab

# BIN_A / BIN_B: binaries already built (of BASE and of the working tree) instead of building.
if [[ -z "${BIN_A:-}" ]]; then
  log "building A ($BASE)"
  git worktree add --detach "$WT" "$BASE" >/dev/null 2>&1
  # The base's build shares the working tree's target folder for dependencies' sake, under a
  # profile directory of its own so the two binaries do not overwrite each other.
  (cd "$WT" && CARGO_TARGET_DIR="$ROOT/target/ab-base" cargo build --release --quiet)
  BIN_A=$ROOT/target/ab-base/release/idoctor-gate
fi
if [[ -z "${BIN_B:-}" ]]; then
  log "building B (the working tree)"
  cargo build --release --quiet
  BIN_B=$ROOT/target/release/idoctor-gate
fi

UPSTREAM_PORT=$(free_port)

render bench/backend.nginx.conf >"$DIR/backend.conf"
taskset -c 1 nginx -c "$DIR/backend.conf" -e "$DIR/backend-error.log" & PIDS+=($!)
wait_http "http://127.0.0.1:$UPSTREAM_PORT/json"

if [[ "$ROUTE" == metered-pg ]]; then
  PG_PORT=$(free_port)
  start_pg "$PG_PORT"
  for db in a b; do runuser -u postgres -- "$(pg_bin psql)" -q -h "$DIR/pg" -p "$PG_PORT" -c "create database $db" postgres; done
fi
database_of() { # name data-dir
  if [[ "$ROUTE" == metered-pg ]]; then echo "postgres://postgres@127.0.0.1:$PG_PORT/${1,,}"; else echo "sqlite://$2/gate.db"; fi
}
start() { # name binary -> PORT_<name>, PID_<name> and the credential header CRED_<name>
  local name=$1 bin=$2 port data
  port=$(free_port)
  data="$DIR/gate-$name"
  mkdir -p "$data"
  GATE_PORT=$port render bench/gate.toml "$data" "$(database_of "$name" "$data")" >"$data/gate.toml"
  RUST_LOG=warn taskset -c 0 "$bin" serve --config "$data/gate.toml" >"$data/gate.log" 2>&1 & PIDS+=($!)
  printf -v "PID_$name" '%s' "$!"
  wait_http "http://127.0.0.1:$port/healthz"
  bench_login "http://127.0.0.1:$port"
  printf -v "PORT_$name" '%s' "$port"
  case "$ROUTE" in
    key) printf -v "CRED_$name" 'X-API-Key: %s' "$(new_key "http://127.0.0.1:$port" "$TOKEN" ab)" ;;
    *) printf -v "CRED_$name" 'Authorization: Bearer %s' "$TOKEN" ;;
  esac
  # The polled task is the caller's.
  [[ "$ROUTE" != poll ]] || curl -sf -X POST "http://127.0.0.1:$port/process/p/20250101" -H "authorization: Bearer $TOKEN" >/dev/null
}
start A "$BIN_A"
start B "$BIN_B"

busy0() { awk '$1 == "cpu0" {print $2 + $3 + $4 + $7 + $8}' /proc/stat; }
HZ=$(getconf CLK_TCK)
rps() { # port credential-header -> "requests/s us-of-CPU-0-per-request"
  local b0 b1 r
  b0=$(busy0)
  taskset -c 1 wrk -t1 -c"$CONNS" -d"${ROUND_SECS}s" "${WRK_ARGS[@]}" -H "$2" "http://127.0.0.1:$1$TARGET" >"$DIR/wrk.out" 2>&1
  b1=$(busy0)
  r=$(python3 bench/helpers.py parse-wrk "$DIR/wrk.out" | cut -d' ' -f1)
  # CPU 0 holds only the gates (the one not measured idles): its busy time is the gate's cost,
  # which moves less between rounds than requests/s when CPU 1 (wrk, backend) runs out first.
  echo "$r $(python3 -c "print(f'{($b1 - $b0) * 1e6 / $HZ / ($r * $ROUND_SECS):.2f}')")"
}
# One warm-up round each, not counted.
rps "$PORT_A" "$CRED_A" >/dev/null; rps "$PORT_B" "$CRED_B" >/dev/null

if [[ "${TOGETHER:-0}" == 1 ]]; then
  RATIOS=() COSTS=()
  for i in $(seq 1 "$ROUNDS"); do
    ca=$(cpu_of "$PID_A"); cb=$(cpu_of "$PID_B")
    taskset -c 1 wrk -t1 -c"$((CONNS / 2))" -d"${ROUND_SECS}s" "${WRK_ARGS[@]}" -H "$CRED_A" \
      "http://127.0.0.1:$PORT_A$TARGET" >"$DIR/wrk-a.out" 2>&1 &
    WRK_A=$!
    taskset -c 1 wrk -t1 -c"$((CONNS / 2))" -d"${ROUND_SECS}s" "${WRK_ARGS[@]}" -H "$CRED_B" \
      "http://127.0.0.1:$PORT_B$TARGET" >"$DIR/wrk-b.out" 2>&1
    wait "$WRK_A"
    ca=$(( $(cpu_of "$PID_A") - ca )); cb=$(( $(cpu_of "$PID_B") - cb ))
    a=$(python3 bench/helpers.py parse-wrk "$DIR/wrk-a.out" | cut -d' ' -f1)
    b=$(python3 bench/helpers.py parse-wrk "$DIR/wrk-b.out" | cut -d' ' -f1)
    RATIOS+=("$(python3 -c "print(f'{$b / $a:.3f}')")")
    COSTS+=("$(python3 -c "print(f'{($cb / $b) / ($ca / $a):.3f}')")")
    log "round $i (both at once): A $a/s on $ca ticks, B $b/s on $cb ticks, B/A ${RATIOS[-1]}, the gate's CPU per request B/A ${COSTS[-1]}"
  done
  python3 -c "
import statistics as s
r = [float(x) for x in '${RATIOS[*]}'.split()]; c = [float(x) for x in '${COSTS[*]}'.split()]
print(f'$LABEL, A = $BASE, B = working tree, both loaded at once, {len(r)} rounds of ${ROUND_SECS} s:')
print(f'  requests B/A per round {r}, median {s.median(r):.3f}')
print(f'  the gate process CPU time per request B/A per round {c}, median {s.median(c):.3f}')"
  exit 0
fi
RATIOS=() COSTS=() AS=() BS=()
for i in $(seq 1 "$ROUNDS"); do
  if ((i % 2)); then read -r a ca < <(rps "$PORT_A" "$CRED_A"); read -r b cb < <(rps "$PORT_B" "$CRED_B")
  else read -r b cb < <(rps "$PORT_B" "$CRED_B"); read -r a ca < <(rps "$PORT_A" "$CRED_A"); fi
  AS+=("$a") BS+=("$b")
  RATIOS+=("$(python3 -c "print(f'{$b / $a:.3f}')")")
  COSTS+=("$(python3 -c "print(f'{$cb / $ca:.3f}')")")
  log "round $i: A $a/s ($ca us of CPU 0 a request), B $b/s ($cb us), B/A ${RATIOS[-1]}, CPU per request B/A ${COSTS[-1]}"
done
python3 -c "
import statistics as s
a = [float(x) for x in '${AS[*]}'.split()]; b = [float(x) for x in '${BS[*]}'.split()]
r = [float(x) for x in '${RATIOS[*]}'.split()]; c = [float(x) for x in '${COSTS[*]}'.split()]
print(f'$LABEL, A = $BASE, B = working tree, {len(r)} alternating rounds of ${ROUND_SECS} s:')
print(f'  A median {s.median(a):.0f}/s, B median {s.median(b):.0f}/s, B/A per round {r}, median {s.median(r):.3f}')
print(f'  CPU 0 time per request B/A per round {c}, median {s.median(c):.3f}')"
