#!/usr/bin/env bash
# Time-series benchmark (issue 5), printing tables:
#   1. `bourse import` of a generated CSV of ROWS 1-minute bars into SQLite and PostgreSQL
#      (fresh table, then the same file again: every row an update), rows/s;
#   2. Annual resample of those ROWS minute bars: the domain's `resample` in memory, the two
#      store paths (fetch + resample in Rust, or pushed down into PostgreSQL), and end to end over
#      HTTP with the response cache off (cold) and on (an answer is kept max(TTL, its load time));
#   3. wrk at 64 connections on the shared CSV in PostgreSQL: `AMZN?interval=1&frequency=Annual`
#      and raw AMZN (754 rows), keep-alive and `Connection: close`, with the response cache
#      (BOURSE_READ_CACHE_MS=50, the default) and without it (0).
# Usage: bench/timeseries.sh [SECONDS] [ROWS]   (defaults 10 s per wrk run, 1000000 rows)
# Needs: a release build (made if BOURSE_BIN is unset), wrk, PostgreSQL on 127.0.0.1.
source "$(dirname "$0")/lib.sh"
SECS="${1:-10}"
ROWS="${2:-1000000}"
build
(cd "$repo" && cargo build --release --locked -p bourse --example timeseries-bench >&2)
TSB="$CARGO_TARGET_DIR/release/examples/timeseries-bench"
need wrk
SHARED_CSV="$repo/crates/domain/tests/fixtures/stocks_ohlcv.csv"
load_before="$(cut -d' ' -f1-3 /proc/loadavg)"
export BOURSE_LOG=warn BOURSE_DEMO=false BOURSE_JWT_SECRET=bench-secret-0123456789 BOURSE_REQUEST_LOG= \
  BOURSE_FEED_RATE=0.2

csv="$work/minutes.csv"
echo "generating $ROWS minute bars..." >&2
"$TSB" gen-csv "$csv" "$ROWS"
sqlite_db="sqlite://$work/bench.db"
new_pg_db
pg_db="$PG_URL"

import_rate() { # database_url file -> rows/s of the import's summary line
  "$BIN" import --database-url "$1" "$2" | sed -nE 's/.*\(([0-9]+) rows\/s\)$/\1/p'
}

echo
echo "1. bourse import, $ROWS-row CSV ($(du -h "$csv" | cut -f1)), batches of 50000 rows, the default (goal >= 200000 rows/s)"
echo
echo "| database   | fresh table, rows/s | again (all rows exist), rows/s |"
echo "|------------|---------------------|--------------------------------|"
for db in "$sqlite_db" "$pg_db"; do
  fresh="$(import_rate "$db" "$csv")"
  again="$(import_rate "$db" "$csv")"
  case "$db" in sqlite*) name=SQLite ;; *) name=PostgreSQL ;; esac
  printf '| %-10s | %19s | %30s |\n' "$name" "$fresh" "$again"
done

start_serve() { # database_url cache_ms -> sets $base and $serve
  local port
  port="$(free_port)"
  BOURSE_HTTP_ADDR="127.0.0.1:$port" BOURSE_DATABASE_URL="$1" BOURSE_READ_CACHE_MS="$2" \
    "$BIN" serve >>"$work/serve.log" 2>&1 &
  serve=$!
  pids+=("$serve")
  base="http://127.0.0.1:$port"
  wait_http "$base/readyz"
}

stop_serve() { kill "$serve" 2>/dev/null || true; wait "$serve" 2>/dev/null || true; }

http_p50() { # url runs -> "p50 X ms (min Y ms)"
  local i times=()
  for ((i = 0; i < $2; i++)); do
    times+=("$(curl -s -o /dev/null -w '%{time_total}' "$1")")
  done
  printf '%s\n' "${times[@]}" | sort -n | awk '{ t[NR] = $1 * 1000 } END { printf "p50 %.1f ms, min %.1f ms", t[int((NR + 1) / 2)], t[1] }'
}

annual="/stocks/time-series/BENCH?frequency=Annual"
echo
echo "2. Annual resample of $ROWS minute bars (goal p50 < 100 ms)"
echo
echo "| what                                                     | timing |"
echo "|----------------------------------------------------------|--------|"
printf '| %-56s | %s |\n' "domain resample() in memory (21 runs)" \
  "$("$TSB" resample-memory "$ROWS" 21 | sed 's/.*: //')"
store_rows() { # label: reads the lines of `timeseries-bench resample-db`
  local line what
  while IFS= read -r line; do
    what="${line#*: }"
    printf '| %-56s | %s |\n' "$1: ${what%%: p50*}" "p50${line##*: p50}"
  done
}
"$TSB" resample-db "$sqlite_db" BENCH Annual 5 | store_rows "SQLite store"
"$TSB" resample-db "$pg_db" BENCH Annual 5 | store_rows "PostgreSQL store"
for db in "$sqlite_db" "$pg_db"; do
  case "$db" in sqlite*) name=SQLite ;; *) name=PostgreSQL ;; esac
  start_serve "$db" 0
  printf '| %-56s | %s |\n' "HTTP GET $name, cache off (cold, 5 runs)" "$(http_p50 "$base$annual" 5)"
  stop_serve
  start_serve "$db" 50
  curl -s -o /dev/null "$base$annual"
  printf '| %-56s | %s |\n' "HTTP GET $name, cache on (kept max(50 ms, load time), 21 runs)" "$(http_p50 "$base$annual" 21)"
  stop_serve
done

echo
echo "3. wrk -t2 -c64 -d${SECS}s, shared CSV (AMZN, TSLA daily) in PostgreSQL"
echo "   goals: Annual >= 10000 req/s with p99 < 20 ms; raw 754 rows >= 8000 req/s"
echo
new_pg_db
shared_db="$PG_URL"
"$BIN" import --database-url "$shared_db" "$SHARED_CSV" >/dev/null
echo "| request                        | connection | cache | requests/s | p50      | p99      | errors |"
echo "|--------------------------------|------------|-------|------------|----------|----------|--------|"
wrk_row() { # label path connection cache
  local out="$work/wrk.txt" extra=()
  [ "$3" = close ] && extra=(-H "Connection: close")
  wrk -t2 -c64 -d"${SECS}s" --latency "${extra[@]}" "$base$2" >"$out"
  local errors
  errors=$(awk '/Non-2xx/ { n += $NF } /Socket errors/ { gsub(/,/, ""); n += $4 + $6 + $8 + $10 } END { print n + 0 }' "$out")
  printf '| %-30s | %-10s | %-5s | %10s | %8s | %8s | %6s |\n' "$1" "$3" "$4" \
    "$(awk '/Requests\/sec/ { print $2 }' "$out")" \
    "$(awk '$1 == "50%" { print $2 }' "$out")" \
    "$(awk '$1 == "99%" { print $2 }' "$out")" "$errors"
}
for cache in 50 0; do
  start_serve "$shared_db" "$cache"
  label=$([ "$cache" = 0 ] && echo off || echo on)
  curl -s "$base/stocks/time-series/AMZN" | python3 -c 'import json,sys; n=len(json.load(sys.stdin)); assert n == 754, n'
  wrk_row "AMZN?interval=1&frequency=Annual" "/stocks/time-series/AMZN?interval=1&frequency=Annual" keep-alive "$label"
  wrk_row "AMZN?interval=1&frequency=Annual" "/stocks/time-series/AMZN?interval=1&frequency=Annual" close "$label"
  wrk_row "AMZN raw (754 rows)" "/stocks/time-series/AMZN" keep-alive "$label"
  wrk_row "AMZN raw (754 rows)" "/stocks/time-series/AMZN" close "$label"
  stop_serve
done
echo
echo "(machine: $(nproc) CPUs, shared by wrk, bourse and PostgreSQL; load average at start: $load_before)"
