#!/usr/bin/env bash
# Quota benchmark (issue 6): what the quota layer costs per request. Anonymous GET /stocks (served
# from the in-memory read cache, so the layer's share of each request is as large as it gets) with
# wrk at 64 connections, PostgreSQL, embedded feed, request log off:
#   off     both limits 0: no layer at all
#   memory  counters in this process (per caller, a day's counts per second)
#   redis   counters in Redis: batched script calls on one list of per-second counts per
#           caller (the checks that arrive while a call is in flight go together in the next)
# for two kinds of traffic:
#   one     all wrk connections come from 127.0.0.1: one caller, one hot key (a NAT or a proxy)
#   many    each request names one of 65,536 client addresses in X-Forwarded-For
#           (bench/many-callers.lua; the server trusts that header): few requests per caller in
#           flight, so a batch holds many callers, each for about one request
# Each kind's cost is against its own off run (the wrk script of "many" costs wrk CPU too).
# Limits are set far above what the run can reach, so nothing is refused (non-2xx must be 0),
# unless QUOTA_BENCH_LIMIT sets them (e.g. 100, the default anonymous limit: then one caller is
# refused after its 100th request, by its replica without asking Redis, and non-2xx counts those).
# Besides throughput it prints the CPU time per request of the API process and of Redis, and
# the script calls Redis counted per request: on this 2-core machine wrk, the API and Redis
# share the cores, so Redis's own work shows up as lost requests/s, where in production it runs
# on a machine of its own.
# The modes take turns, ROUNDS times (off, memory, redis, off, ...), and each row
# shows the median run of its mode: on a shared machine one run can be off by 10% either way,
# and alternating spreads slow spells over all modes alike.
# Usage: bench/quota.sh [SECONDS] [ROUNDS]   (QUOTA_BENCH_CALLERS="one" or "many": one kind only)
# Needs: a release build (made if BOURSE_BIN is unset), wrk, PostgreSQL and Redis on 127.0.0.1.
source "$(dirname "$0")/lib.sh"
SECS="${1:-10}"
ROUNDS="${2:-3}"
REDIS="${BOURSE_BENCH_REDIS:-redis://127.0.0.1:6379}"
LIMIT="${QUOTA_BENCH_LIMIT:-1000000000}"
build
need wrk
need_redis "$REDIS"

new_pg_db
export BOURSE_DATABASE_URL="$PG_URL" BOURSE_LOG=warn BOURSE_DEMO=false BOURSE_REQUEST_LOG=
"$BIN" migrate >/dev/null
prefix="bourse:quota:bench-$$:"
redis_pid="$(redis-cli -u "$REDIS" info server | tr -d '\r' | awk -F: '$1 == "process_id" {print $2}')"
drop_keys() { redis-cli -u "$REDIS" --scan --pattern "${prefix}*" | xargs -r -n 1000 redis-cli -u "$REDIS" del >/dev/null; }
script_calls() { # EVALSHA + EVAL calls Redis has served so far
  redis-cli -u "$REDIS" info commandstats | tr -d '\r' |
    awk -F'[=,]' '/^cmdstat_eval(sha)?:/ { n += $2 } END { print n + 0 }'
}

run() { # callers(one|many) mode limit [redis_url] -> "rps p50 p99 non2xx api_us redis_us calls_per_req"
  local port pid rps non2xx requests api0 api1 redis0 redis1 redis_us calls0 calls1 per_req
  local out="$work/wrk-$1-$2.txt" script=()
  [ "$1" = one ] || script=(-s "$(dirname "$0")/many-callers.lua")
  port="$(free_port)"
  BOURSE_HTTP_ADDR="127.0.0.1:$port" BOURSE_QUOTA_ANON_PER_DAY="$3" BOURSE_QUOTA_USER_PER_DAY="$3" \
    BOURSE_REDIS_URL="${4:-}" BOURSE_QUOTA_REDIS_PREFIX="$prefix" \
    BOURSE_TRUSTED_PROXY_HEADER="$([ "$1" = one ] || echo X-Forwarded-For)" \
    "$BIN" serve >"$work/serve-$1-$2.log" 2>&1 &
  pid=$!
  pids+=("$pid")
  wait_http "http://127.0.0.1:$port/readyz"
  curl -sf "http://127.0.0.1:$port/stocks" >/dev/null
  api0="$(cpu_ticks "$pid")"
  redis0="$(cpu_ticks "$redis_pid")"
  calls0="$(script_calls)"
  wrk -t2 -c64 -d"${SECS}s" --latency "${script[@]}" "http://127.0.0.1:$port/stocks" >"$out"
  api1="$(cpu_ticks "$pid")"
  redis1="$(cpu_ticks "$redis_pid")"
  calls1="$(script_calls)"
  kill "$pid"
  wait "$pid" 2>/dev/null || true
  rps="$(awk '/Requests\/sec/ {print $2}' "$out")"
  non2xx="$(awk '/Non-2xx/ {print $NF}' "$out")"
  requests="$(awk '/requests in/ {print $1}' "$out")"
  redis_us="-"
  per_req="-"
  if [ -n "${4:-}" ]; then
    redis_us="$(cpu_us_per_request $((redis1 - redis0)) "$requests" 1)"
    per_req="$(awk -v c=$((calls1 - calls0)) -v n="$requests" 'BEGIN { printf "%.3f", c / n }')"
  fi
  echo "$rps $(awk '$1 == "50%" {print $2}' "$out") $(awk '$1 == "99%" {print $2}' "$out")" \
    "${non2xx:-0} $(cpu_us_per_request $((api1 - api0)) "$requests" 1) $redis_us $per_req"
}

median_run() { # file of run lines -> the line with the median requests/s
  sort -g -k1,1 "$1" | awk '{ line[NR] = $0 } END { print line[int((NR + 1) / 2)] }'
}

echo
echo "Anonymous GET /stocks, wrk 64 connections, ${SECS}s a run, $ROUNDS runs a mode taken in"
echo "turns, limits $LIMIT a day;"
echo "each row is its mode's median run; cost = requests/s lost against the off row"
echo
echo "| callers | quota   | requests/s | p50      | p99      | non-2xx | cost    | API CPU µs/req | Redis CPU µs/req | Redis calls/req | all runs, requests/s |"
echo "|---------|---------|------------|----------|----------|---------|---------|----------------|------------------|-----------------|----------------------|"
for callers in ${QUOTA_BENCH_CALLERS:-one many}; do
  for round in $(seq "$ROUNDS"); do
    run "$callers" off 0 >>"$work/$callers-off"
    run "$callers" memory "$LIMIT" >>"$work/$callers-memory"
    run "$callers" redis "$LIMIT" "$REDIS" >>"$work/$callers-redis"
    drop_keys
  done
  off_rps=""
  for mode in off memory redis; do
    read -r rps p50 p99 non2xx api_us redis_us per_req < <(median_run "$work/$callers-$mode")
    if [ "$mode" = off ]; then
      off_rps="$rps"
      cost="—"
    else
      cost="$(awk -v off="$off_rps" -v x="$rps" 'BEGIN { printf "%.1f%%", (off - x) / off * 100 }')"
    fi
    all="$(awk '{ printf "%s%.0f", (NR > 1 ? " " : ""), $1 }' "$work/$callers-$mode")"
    printf '| %-7s | %-7s | %10s | %8s | %8s | %7s | %7s | %14s | %16s | %15s | %20s |\n' "$callers" \
      "$mode" "$rps" "$p50" "$p99" "$non2xx" "$cost" "$api_us" "$redis_us" "$per_req" "$all"
  done
done
