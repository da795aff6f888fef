#!/usr/bin/env bash
# Quote benchmark (issue 3): GET /stock through serve -> RabbitMQ RPC -> quote-service, with a warm
# cache and with the cache off (every request goes to the local fake stooq; concurrent requests
# for one symbol still share an upstream call). PostgreSQL history, wrk at 64 connections.
# Usage: bench/quotes.sh [SECONDS]
source "$(dirname "$0")/lib.sh"
SECS="${1:-10}"
build
(cd "$repo" && cargo build --release --locked -p bourse-quotes --features fake --example fake-upstream >&2)
FAKE="$CARGO_TARGET_DIR/release/examples/fake-upstream"
AMQP="amqp://guest:guest@127.0.0.1:5672/%2f"
queue="bourse.quotes.bench.$$"
new_pg_db
db="$PG_URL"
export BOURSE_DATABASE_URL="$db" BOURSE_JWT_SECRET=bench-secret-0123456789 BOURSE_LOG=warn BOURSE_DEMO=false \
  BOURSE_AMQP_URL="$AMQP" BOURSE_QUOTE_QUEUE="$queue" BOURSE_REQUEST_LOG=

fake_port="$(free_port)"
"$FAKE" "127.0.0.1:$fake_port" >"$work/fake.log" 2>&1 &
pids+=($!)
"$BIN" migrate >/dev/null
"$BIN" user create --username bench --password benchpw >/dev/null
api_port="$(free_port)"
BOURSE_HTTP_ADDR="127.0.0.1:$api_port" "$BIN" serve >"$work/serve.log" 2>&1 &
api=$!
pids+=("$api")
rabbit="$(pgrep -o -f beam.smp || true)"
[ -n "$rabbit" ] || { echo "RabbitMQ (beam.smp) is not running" >&2; exit 1; }
wait_http "http://127.0.0.1:$api_port/readyz"
auth="Authorization: Basic $(printf bench:benchpw | base64)"

run() { # cache_secs label
  local qs_port
  qs_port="$(free_port)"
  BOURSE_HTTP_ADDR="127.0.0.1:$qs_port" BOURSE_STOOQ_URL="http://127.0.0.1:$fake_port" BOURSE_QUOTE_CACHE_SECS="$1" \
    "$BIN" quote-service >"$work/qs-$1.log" 2>&1 &
  local qs=$!
  pids+=("$qs")
  wait_http "http://127.0.0.1:$qs_port/readyz"
  curl -sf -H "$auth" "http://127.0.0.1:$api_port/stock?q=aapl.us" >/dev/null
  cat >"$work/symbols.lua" <<'LUA'
local symbols = {"aapl.us", "msft.us", "t.us"}
local i = 0
request = function()
  i = i + 1
  return wrk.format("GET", "/stock?q=" .. symbols[(i % 3) + 1])
end
LUA
  # CPU of each part, to see where a request's cost goes (PostgreSQL: all its processes).
  local parts=("$api" "$qs" "$rabbit" "$(pgrep -d ' ' -x postgres)") before=() after=() i requests
  for i in "${!parts[@]}"; do before[i]="$(cpu_ticks ${parts[i]})"; done
  wrk -t2 -c64 -d"${SECS}s" --latency -H "$auth" -s "$work/symbols.lua" "http://127.0.0.1:$api_port" >"$work/wrk-$1.txt"
  for i in "${!parts[@]}"; do after[i]="$(cpu_ticks ${parts[i]})"; done
  requests="$(awk '/requests in/ {print $1}' "$work/wrk-$1.txt")"
  local non2xx
  non2xx=$(awk '/Non-2xx/ {print $NF}' "$work/wrk-$1.txt")
  printf '| %-34s | %10s | %8s | %8s | %6s |' "$2" \
    "$(awk '/Requests\/sec/ {print $2}' "$work/wrk-$1.txt")" \
    "$(awk '$1 == "50%" {print $2}' "$work/wrk-$1.txt")" \
    "$(awk '$1 == "99%" {print $2}' "$work/wrk-$1.txt")" "${non2xx:-0}"
  for i in "${!parts[@]}"; do printf ' %5s |' "$(cpu_us_per_request $((after[i] - before[i])) "$requests")"; done
  echo
  kill "$qs"; wait "$qs" 2>/dev/null || true
}

echo
echo "GET /stock (Basic auth, history row in PostgreSQL per request) via RabbitMQ RPC, wrk 64 connections, ${SECS}s"
echo
echo "CPU µs per request: serve, quote-service, RabbitMQ, PostgreSQL"
echo
echo "| case                               | requests/s | p50      | p99      | non-2xx | serve | qsvc  | amqp  | pg    |"
echo "|------------------------------------|------------|----------|----------|---------|-------|-------|-------|-------|"
run 60 "warm cache (3 symbols)"
run 0 "cold: cache off, fake stooq upstream"
