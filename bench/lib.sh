# Shared helpers for the bench scripts (sourced).
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/bourse-target}"
BIN="${BOURSE_BIN:-$CARGO_TARGET_DIR/release/bourse}"
export BOURSE_JWT_SECRET="${BOURSE_JWT_SECRET:-bench-only-secret-0123456789}"
PG_ADMIN="${BOURSE_BENCH_PG:-postgres://postgres@127.0.0.1:5432}"
# The benchmarks measure endpoints, not quotas (bench/quota.sh measures those): quotas and the
# request log are off unless a script turns them on.
export BOURSE_QUOTA_ANON_PER_DAY="${BOURSE_QUOTA_ANON_PER_DAY:-0}"
export BOURSE_QUOTA_USER_PER_DAY="${BOURSE_QUOTA_USER_PER_DAY:-0}"
export BOURSE_REQUEST_LOG="${BOURSE_REQUEST_LOG-}"
work="$(mktemp -d /tmp/bourse-bench.XXXXXX)"
pids=()
pg_dbs=()

cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  for db in "${pg_dbs[@]}"; do
    psql "$PG_ADMIN/postgres" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true
  done
  rm -rf "$work"
}
trap cleanup EXIT

build() {
  if [ -z "${BOURSE_BIN:-}" ]; then
    echo "building release binary..." >&2
    (cd "$repo" && cargo build --release --locked --bin bourse >&2)
  fi
}

need() { # command [Debian package]: stops with how to install it when the command is missing
  command -v "$1" >/dev/null || { echo "$1 missing: apt-get install -y ${2:-$1}" >&2; exit 1; }
}

need_redis() { # url: stops when Redis does not answer there
  redis-cli -u "$1" ping >/dev/null || { echo "Redis at $1 does not answer" >&2; exit 1; }
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

wait_http() { # url [seconds]
  local deadline=$((SECONDS + ${2:-30}))
  until curl -sf -o /dev/null "$1"; do
    [ "$SECONDS" -lt "$deadline" ] || { echo "timeout waiting for $1" >&2; return 1; }
    sleep 0.1
  done
}

new_pg_db() { # creates a fresh database, dropped on exit; its URL is left in $PG_URL
  # (not printed: a command substitution would run in a subshell and lose the cleanup entry)
  local name="bourse_bench_$RANDOM$RANDOM"
  psql "$PG_ADMIN/postgres" -qc "CREATE DATABASE $name" >/dev/null
  pg_dbs+=("$name")
  PG_URL="$PG_ADMIN/$name"
}

metric() { # base_url name -> sum of all series of a counter
  curl -s "$1/metrics" | awk -v n="$2" '$1 == n || index($1, n "{") == 1 { s += $NF } END { printf "%d\n", s }'
}

rss_mb() { # pid -> peak resident set in MB
  awk '/VmHWM/ { printf "%.0f\n", $2 / 1024 }' "/proc/$1/status"
}

cpu_ticks() { # pid... -> user + system CPU ticks used so far by these processes together
  local total=0 p t
  for p in "$@"; do
    t="$(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || echo 0)"
    total=$((total + t))
  done
  echo "$total"
}

cpu_us_per_request() { # ticks requests [decimals] -> CPU microseconds per request
  awk -v t="$1" -v n="$2" -v d="${3:-0}" -v hz="$(getconf CLK_TCK)" \
    'BEGIN { if (n > 0) printf "%." d "f", t * 1e6 / hz / n; else print "-" }'
}

start_broker() { # the benchmarks' own Mosquitto (bench/mosquitto.conf); its URL is left in $MQTT
  mosquitto -c "$repo/bench/mosquitto.conf" >"$work/mosquitto.log" 2>&1 &
  pids+=($!)
  sleep 0.5
  MQTT=mqtt://127.0.0.1:18830
}
