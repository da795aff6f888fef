#!/usr/bin/env bash
# Order benchmark (issue 4), on PostgreSQL, release build:
#  1. intake: POST /orders under wrk at 32 connections (relay off, so only acceptance is measured:
#     order + outbox row + event committed before each 201);
#  2. placement: one `bourse relay` places the orders of step 1 through `bourse exchange` over
#     HTTP (0.5 s per placement, 10% failures, as the simulated exchange's default); placed orders/s.
# Usage: bench/orders.sh [SECONDS]   (intake duration, default 15)
#        bench/orders.sh [SECONDS] sqlite   (intake only, on a SQLite file, with
#        BOURSE_SQLITE_SYNCHRONOUS=normal and then full: the cost of durable commits)
# Needs: a release build (made if BOURSE_BIN is unset), wrk, PostgreSQL on 127.0.0.1.
source "$(dirname "$0")/lib.sh"
SECS="${1:-15}"
ENGINE="${2:-postgres}"
CONNS=32
build
need wrk
export BOURSE_JWT_SECRET=bench-secret-0123456789 BOURSE_LOG=warn BOURSE_DEMO=false BOURSE_REQUEST_LOG=
auth="Basic $(printf bench:benchpw | base64)"

start_serve() { # starts `serve` (relay off) on $BOURSE_DATABASE_URL; sets $api and $serve
  "$BIN" migrate >/dev/null
  "$BIN" user create --username bench --password benchpw >/dev/null
  local port
  port="$(free_port)"
  api="http://127.0.0.1:$port"
  BOURSE_HTTP_ADDR="127.0.0.1:$port" BOURSE_RELAY=off BOURSE_EXCHANGE_URL="http://127.0.0.1:$ex_port" \
    "$BIN" serve >>"$work/serve.log" 2>&1 &
  serve=$!
  pids+=("$serve")
  wait_http "$api/readyz"
}

# 1. Intake: sets $rps $p50 $p99 $non2xx $errors $created $intake_rss.
intake() {
cat >"$work/post.lua" <<LUA
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "$auth"
local n = 0
request = function()
  n = n + 1
  local body = string.format(
    '{"type": "limit", "side": "buy", "instrument": "US0378331005", "quantity": %d, "limit_price": 150.25}',
    n % 1000 + 1)
  return wrk.format(nil, "/orders", nil, body)
end
LUA
# Warm-up: the first Basic check is argon2 (slow by design); later ones hit the credential cache.
curl -sf -o /dev/null -X POST -H "Authorization: $auth" -H 'Content-Type: application/json' \
  -d '{"type": "market", "side": "sell", "instrument": "US0378331005", "quantity": 1}' "$api/orders"
wrk -t2 -c"$CONNS" -d"${SECS}s" --latency -s "$work/post.lua" "$api" >"$work/wrk.txt"
rps=$(awk '/Requests\/sec/ {printf "%.0f", $2}' "$work/wrk.txt")
p50=$(awk '$1 == "50%" {print $2}' "$work/wrk.txt")
p99=$(awk '$1 == "99%" {print $2}' "$work/wrk.txt")
non2xx=$(awk '/Non-2xx/ {print $NF}' "$work/wrk.txt")
errors=$(awk '/Socket errors/ {print $0}' "$work/wrk.txt")
created=$(metric "$api" bourse_orders_total)
intake_rss=$(rss_mb "$serve")
}

intake_row() { # label
  printf '| %s | %s | %s | %s | %s | %s | %s MB |\n' \
    "$1" "$CONNS" "$rps" "$p50" "$p99" "${non2xx:-0}" "$intake_rss"
  [ -n "$errors" ] && echo "($errors)"
  echo "(bourse_orders_total{status=\"created\"} after the run: $created)"
}
intake_header() {
  echo "| intake: POST /orders | connections | accepted/s | p50 | p99 | non-2xx | serve peak RSS |"
  echo "|---|---|---|---|---|---|---|"
}

ex_port="$(free_port)"
if [ "$ENGINE" = sqlite ]; then
  echo
  echo "Order intake on SQLite ($(nproc) cores shared by wrk and serve; $work is $(df --output=fstype "$work" | tail -1))"
  echo
  intake_header
  for sync in normal full; do
    export BOURSE_DATABASE_URL="sqlite://$work/orders-$sync.db" BOURSE_SQLITE_SYNCHRONOUS="$sync"
    start_serve
    intake
    kill "$serve"
    wait "$serve" 2>/dev/null || true
    intake_row "${SECS}s, Basic auth, synchronous=$sync"
  done
  exit 0
fi

new_pg_db
db="$PG_URL"
export BOURSE_DATABASE_URL="$db"
BOURSE_HTTP_ADDR="127.0.0.1:$ex_port" BOURSE_EXCHANGE_LATENCY_MS=500 BOURSE_EXCHANGE_FAILURE_RATE=0.1 \
  "$BIN" exchange >"$work/exchange.log" 2>&1 &
pids+=($!)
start_serve
wait_http "http://127.0.0.1:$ex_port/readyz"
intake

# 2. Placement: one relay drains what step 1 accepted.
total=$(psql "$db" -Atc "SELECT count(*) FROM outbox")
relay_port="$(free_port)"
relay="http://127.0.0.1:$relay_port"
start=$(date +%s.%N)
BOURSE_HTTP_ADDR="127.0.0.1:$relay_port" BOURSE_EXCHANGE_URL="http://127.0.0.1:$ex_port" \
  "$BIN" relay >"$work/relay.log" 2>&1 &
relay_pid=$!
pids+=("$relay_pid")
wait_http "$relay/readyz"
placed_metric() { curl -s "$relay/metrics" | awk '$1 == "bourse_orders_total{status=\"placed\"}" {printf "%d\n", $2}'; }
# Steady rate: placed orders between 2 s and 12 s after the relay started.
sleep 2
p_a=$(placed_metric); t_a=$(date +%s.%N)
sleep 10
p_b=$(placed_metric); t_b=$(date +%s.%N)
steady=$(python3 -c "print(round(($p_b - $p_a) / ($t_b - $t_a)))")
deadline=$((SECONDS + 300))
until [ "$(psql "$db" -Atc "SELECT count(*) FROM outbox")" = 0 ]; do
  [ "$SECONDS" -lt "$deadline" ] || { echo "relay did not drain the outbox in 300 s" >&2; break; }
  sleep 0.2
done
end=$(date +%s.%N)
drain=$(python3 -c "print(round($end - $start, 1))")
overall=$(python3 -c "print(round($total / ($end - $start)))")
read -r placed failed < <(psql "$db" -Atc \
  "SELECT count(*) FILTER (WHERE status = 'placed'), count(*) FILTER (WHERE status = 'failed') FROM orders" | tr '|' ' ')
ledger=$(curl -s "http://127.0.0.1:$ex_port/placements" | python3 -c '
import json, sys
p = json.load(sys.stdin)
ids = [x["order_id"] for x in p]
print(len(p), len(ids) - len(set(ids)), sum(1 for x in p if x["submissions"] > 1))')
read -r at_exchange twice resubmitted <<<"$ledger"
attempts_err=$(curl -s "$relay/metrics" | awk '$1 == "bourse_placement_attempts_total{outcome=\"error\"}" {printf "%d", $2}')
relay_rss=$(rss_mb "$relay_pid")

echo
echo "Orders on PostgreSQL ($(nproc) cores shared by wrk, serve, relay, exchange and PostgreSQL)"
echo
intake_header
intake_row "${SECS}s, Basic auth, relay off"
echo
echo "| placement: 1 relay, exchange 0.5 s, 10% failures | orders | placed/s (2-12 s) | placed/s overall | drain time | placed | failed | at exchange | placed twice | relay peak RSS |"
echo "|---|---|---|---|---|---|---|---|---|---|"
printf '| relay concurrency 1024, HTTP exchange | %s | %s | %s | %s s | %s | %s | %s | %s | %s MB |\n' \
  "$total" "$steady" "$overall" "$drain" "$placed" "$failed" "$at_exchange" "$twice" "$relay_rss"
echo "(failed attempts retried: $attempts_err; orders submitted again and answered as duplicates: $resubmitted)"
