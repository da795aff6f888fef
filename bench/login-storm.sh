#!/usr/bin/env bash
# Password storm (issue 16): 300 connections sending wrong Basic passwords (half for existing
# users) for SECONDS, with the throttle off (the hashing bound alone) and with its defaults (one
# address: most guesses answered 429 before any hash). Prints the answers, the server's peak RSS
# (VmHWM), hashes computed, and /_healthcheck latency measured meanwhile by curl.
# Usage: bench/login-storm.sh [SECONDS]
source "$(dirname "$0")/lib.sh"
need wrk
SECS="${1:-10}"
build

run() { # label [VAR=value...]: a fresh server and database per case
  local label="$1"
  shift
  new_pg_db
  BOURSE_DATABASE_URL="$PG_URL" BOURSE_LOG=warn "$BIN" migrate >/dev/null 2>&1
  for i in 0 1 2; do
    BOURSE_DATABASE_URL="$PG_URL" BOURSE_LOG=warn "$BIN" user create --username "storm-$i" --password right >/dev/null 2>&1
  done
  local port
  port="$(free_port)"
  env "$@" BOURSE_DATABASE_URL="$PG_URL" BOURSE_LOG=error BOURSE_DEMO=false \
    BOURSE_HTTP_ADDR="127.0.0.1:$port" "$BIN" serve >"$work/serve.log" 2>&1 &
  local api=$!
  pids+=("$api")
  wait_http "http://127.0.0.1:$port/readyz"
  local base="http://127.0.0.1:$port"
  local idle
  idle="$(awk '/VmRSS/ { printf "%.0f", $2 / 1024 }' "/proc/$api/status")"
  (
    end=$((SECONDS + SECS))
    while [ "$SECONDS" -lt "$end" ]; do
      curl -s -o /dev/null -w '%{time_total}\n' "$base/_healthcheck"
      sleep 0.05
    done
  ) >"$work/health.txt" &
  local poller=$!
  wrk -t2 -c300 -d"${SECS}s" -s "$(dirname "$0")/login-storm.lua" "$base" >"$work/wrk.txt"
  wait "$poller"
  local statuses
  statuses="$(curl -s "$base/metrics" | grep '^bourse_http_requests_total{.*route="/history"' |
    sed -E 's/.*status="([0-9]+)".* ([0-9.]+)$/\1×\2/' | tr '\n' ' ')"
  printf '| %-22s | %8s | %5s MB | %5s MB | %7s | %-28s | %6s | %6s | %6s |\n' "$label" \
    "$(awk '/Requests\/sec/ {print $2}' "$work/wrk.txt")" "$idle" "$(rss_mb "$api")" \
    "$(metric "$base" bourse_password_hashes_total)" "$statuses" \
    "$(sort -n "$work/health.txt" | awk '{ a[NR] = $1 * 1000 } END { printf "%.1f", a[int(NR / 2) + 1] }')" \
    "$(sort -n "$work/health.txt" | awk '{ a[NR] = $1 * 1000 } END { i = int(NR * 0.99) + 1; if (i > NR) i = NR; printf "%.1f", a[i] }')" \
    "$(sort -n "$work/health.txt" | awk '{ m = $1 * 1000 } END { printf "%.1f", m }')"
  kill "$api"
  wait "$api" 2>/dev/null || true
}

echo
echo "Wrong Basic passwords, wrk 300 connections, ${SECS}s; /_healthcheck polled every 50 ms meanwhile"
echo
echo "| case                   | answers/s | idle RSS | peak RSS | hashes  | answers (status×count)       | health p50 ms | p99 ms | max ms |"
echo "|------------------------|-----------|----------|----------|---------|------------------------------|---------------|--------|--------|"
run "throttle off" BOURSE_LOGIN_FAILURES_PER_ACCOUNT_ADDRESS=0 BOURSE_LOGIN_FAILURES_PER_ADDRESS=0
run "throttle defaults"
