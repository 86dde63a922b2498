# The set-up that bench/run.sh, bench/ab.sh and bench/turns.sh share. Sourced by each after it
# has changed to the repository's root; defines functions and the benchmark's secrets, runs
# nothing else.

log() { printf '== %s\n' "$*" >&2; }

# Installs, from Debian, what is missing of the commands named: `need wrk nginx:nginx-light`
# (a command, or command:package when the package is named otherwise). `postgres` stands for
# PostgreSQL's server binaries, which Debian keeps off the PATH.
need() {
  local missing=() want cmd
  for want in "$@"; do
    cmd=${want%%:*}
    if [[ "$cmd" == postgres ]]; then
      command -v initdb >/dev/null || compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null \
        || missing+=(postgresql)
    else
      command -v "$cmd" >/dev/null || missing+=("${want#*:}")
    fi
  done
  if ((${#missing[@]})); then
    log "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
}

# The path of one of PostgreSQL's server binaries (initdb, pg_ctl, psql).
pg_bin() {
  if command -v "$1" >/dev/null; then command -v "$1"; else ls /usr/lib/postgresql/*/bin/"$1" | sort | tail -1; fi
}

# A throwaway PostgreSQL cluster under $DIR/pg, listening on 127.0.0.1:port, its data folder
# in PGDATA (which the cleanup stops); extra server options after the port.
start_pg() { # port [server options]
  PGDATA="$DIR/pg/data"
  mkdir -p "$DIR/pg" && chown postgres: "$DIR/pg"
  runuser -u postgres -- "$(pg_bin initdb)" -D "$PGDATA" -A trust -U postgres -N --no-instructions >/dev/null
  runuser -u postgres -- "$(pg_bin pg_ctl)" -D "$PGDATA" -l "$DIR/pg/log" -w \
    -o "-p $1 -k $DIR/pg -c listen_addresses=127.0.0.1 -c max_connections=200 ${2:-}" start >/dev/null
}

# A work folder, $DIR (readable by nginx's workers and the postgres user), and the trap that
# at exit stops what the script started: the processes it added to $PIDS and the cluster at
# $PGDATA, then calls `more_cleanup` if the script defines one, then removes the folder.
bench_dir() { # name
  DIR=$(mktemp -d "/tmp/gate-$1.XXXXXX")
  chmod 755 "$DIR"
  PIDS=()
  PGDATA=""
  trap cleanup EXIT
}
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  if [[ -n "$PGDATA" ]]; then
    runuser -u postgres -- "$(pg_bin pg_ctl)" -D "$PGDATA" -m immediate stop >/dev/null 2>&1 || true
  fi
  wait 2>/dev/null || true
  if declare -F more_cleanup >/dev/null; then more_cleanup; fi
  rm -rf "$DIR"
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

wait_http() { # url [curl args...]
  for _ in $(seq 1 300); do
    curl -s -o /dev/null "$@" && return 0
    sleep 0.1
  done
  log "nothing answers at $1"
  return 1
}

# The benchmark's own secrets: of its throwaway gates and of HAProxy's check of the same token.
export GATE_JWT_SECRET=bench-secret-bench-secret-bench-secret-0123
export GATE_API_KEY_PEPPER=bench-pepper-bench-pepper-bench-pepper-0123

# A template of bench/ filled in: `render file [data-dir] [database-url]`. Each @PORT@ mark
# takes the variable of its name (empty when the script has none); @GATE_UPSTREAM_PORT@, where
# the gate forwards to, is UPSTREAM_PORT unless set.
render() {
  sed -e "s|@DIR@|$DIR|g" -e "s|@UPSTREAM_PORT@|${UPSTREAM_PORT:-}|g" \
      -e "s|@NGINX_PROXY_PORT@|${NGINX_PROXY_PORT:-}|g" -e "s|@XFER_PORT@|${XFER_PORT:-}|g" \
      -e "s|@NGINX_XFER_PORT@|${NGINX_XFER_PORT:-}|g" -e "s|@GATE_PORT@|${GATE_PORT:-}|g" \
      -e "s|@DATA@|${2:-}|g" -e "s|@DATABASE_URL@|${3:-}|g" \
      -e "s|@GATE_UPSTREAM_PORT@|${GATE_UPSTREAM_PORT:-${UPSTREAM_PORT:-}}|g" \
      -e "s|@HAPROXY_PORT@|${HAPROXY_PORT:-}|g" -e "s|@JWT_SECRET@|$GATE_JWT_SECRET|g" "$1"
}

# Registers the benchmark's user on the gate at base-url (a second time is refused, and
# ignored) and signs in: TOKEN. An access token lives 30 minutes, and a gate that answers 401
# serves far more requests a second than one that forwards, so sign in at every start.
bench_login() { # base-url
  curl -sf -X POST "$1/auth/register" -H 'content-type: application/json' \
    -d '{"email":"bench@example.com","username":"bench","password":"bench-password"}' >/dev/null || true
  TOKEN=$(curl -sf -X POST "$1/auth/login" -H 'content-type: application/json' \
    -d '{"username_or_email":"bench","password":"bench-password"}' |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')
}

# Prints a new API key of the user whose access token is given.
new_key() { # base-url token name
  curl -sf -X POST "$1/api-keys/" -H "authorization: Bearer $2" -H 'content-type: application/json' \
    -d "{\"name\":\"$3\"}" | python3 -c 'import json,sys; print(json.load(sys.stdin)["key"])'
}

# CPU time (user + system, clock ticks) a process has used so far.
cpu_of() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
