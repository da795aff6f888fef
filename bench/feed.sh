#!/usr/bin/env bash
# Feed benchmark (issue 2): MQTT publish -> committed ticks/s and lag, for SQLite and PostgreSQL,
# then GET /stocks/{id} under wrk at 64 connections, and the server's peak RSS.
# Usage: bench/feed.sh [TICKS] [RATE]   (defaults 200000 ticks for the burst, 20000/s paced)
# Needs: a release build (made if BOURSE_BIN is unset), mosquitto, wrk, PostgreSQL on 127.0.0.1.
source "$(dirname "$0")/lib.sh"
TICKS="${1:-200000}"
RATE="${2:-20000}"
PACED_SECS=10
build
need wrk

start_broker

# p-quantile (seconds) of a Prometheus histogram, from the difference of two /metrics snapshots.
quantile() { # before after name q
  python3 - "$@" <<'PY'
import re, sys
def buckets(path, name):
    out = {}
    for line in open(path):
        m = re.match(r'%s_bucket\{le="([^"]+)"\} (\S+)' % re.escape(name), line)
        if m:
            out[m.group(1)] = float(m.group(2))
    return out
before, after, name, q = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
b, a = buckets(before, name), buckets(after, name)
les = sorted(a, key=lambda s: float("inf") if s == "+Inf" else float(s))
total = a.get("+Inf", 0) - b.get("+Inf", 0)
if total <= 0:
    print("n/a"); sys.exit()
for le in les:
    if a[le] - b.get(le, 0) >= q * total:
        print("<= %s ms" % ("inf" if le == "+Inf" else "%g" % (float(le) * 1000))); break
PY
}

rows=()
for engine in sqlite postgres; do
  if [ "$engine" = sqlite ]; then db="sqlite://$work/bench.db"; else new_pg_db; db="$PG_URL"; fi
  port="$(free_port)"
  base="http://127.0.0.1:$port"
  BOURSE_HTTP_ADDR="127.0.0.1:$port" BOURSE_DATABASE_URL="$db" BOURSE_MQTT_URL="$MQTT" \
    BOURSE_MQTT_TOPIC=bench-$engine BOURSE_MQTT_CLIENT_ID=bench-$engine-$$ BOURSE_DEMO=false BOURSE_LOG=warn \
    "$BIN" serve >"$work/serve-$engine.log" 2>&1 &
  serve=$!
  pids+=("$serve")
  wait_http "$base/readyz"

  # 1. Burst: publish TICKS as fast as 4 connections can; time until all are committed.
  start=$(date +%s.%N)
  "$BIN" streamer --mqtt-url "$MQTT" --mqtt-topic bench-$engine --addr 127.0.0.1:0 \
    --stocks 100 --rate 10000000 --count "$TICKS" --connections 4 >"$work/pub-$engine.log" 2>&1 &
  pub=$!
  last=-1; stalled_since=$SECONDS
  until [ "$(( now = $(metric "$base" bourse_ticks_ingested_total) ))" -ge "$TICKS" ]; do
    sleep 0.02
    kill -0 "$serve" || { cat "$work/serve-$engine.log"; exit 1; }
    if [ "$now" != "$last" ]; then last=$now; stalled_since=$SECONDS; fi
    [ $((SECONDS - stalled_since)) -lt 15 ] || { echo "ingest stalled at $now of $TICKS ticks ($engine)" >&2; exit 1; }
  done
  end=$(date +%s.%N)
  wait "$pub" || true
  burst=$(python3 -c "print(round($TICKS / ($end - $start)))")
  published_rate=$(grep -o '([0-9]* ticks/s)' "$work/pub-$engine.log" | tr -dc 0-9)

  # 2. Paced: RATE ticks/s for PACED_SECS; p50/p99 from tick timestamp (set at publish) to commit.
  curl -s "$base/metrics" >"$work/before"
  before_count=$(metric "$base" bourse_ticks_ingested_total)
  "$BIN" streamer --mqtt-url "$MQTT" --mqtt-topic bench-$engine --addr 127.0.0.1:0 \
    --stocks 100 --rate "$RATE" --count $((RATE * PACED_SECS)) --connections 2 >"$work/paced-$engine.log" 2>&1
  sleep 1
  curl -s "$base/metrics" >"$work/after"
  paced_count=$(( $(metric "$base" bourse_ticks_ingested_total) - before_count ))
  p50=$(quantile "$work/before" "$work/after" bourse_ingest_lag_seconds 0.5)
  p99=$(quantile "$work/before" "$work/after" bourse_ingest_lag_seconds 0.99)
  rows+=("$(printf '| %-8s | %9s | %12s | %9s/%s | %-11s | %-11s |' "$engine" "$burst" "${published_rate:-?}" "$paced_count" "$((RATE * PACED_SECS))" "$p50" "$p99")")

  # 3. HTTP: GET /stocks/{id} at 64 connections (the API and wrk share the 2 cores).
  if [ "$engine" = postgres ]; then
    id=$(curl -s "$base/stocks" | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["stock_id"])')
    wrk -t2 -c64 -d10s --latency "$base/stocks/$id" >"$work/wrk.txt"
    rps=$(awk '/Requests\/sec/ {print $2}' "$work/wrk.txt")
    wp99=$(awk '$1 == "99%" {print $2}' "$work/wrk.txt")
    wp50=$(awk '$1 == "50%" {print $2}' "$work/wrk.txt")
    http_row="$(printf '| GET /stocks/{id} (PostgreSQL) | 64 | %s | %s | %s | %s MB |' "$rps" "$wp50" "$wp99" "$(rss_mb "$serve")")"
  fi
  rss_row+=("$engine peak RSS $(rss_mb "$serve") MB")
  kill "$serve"; wait "$serve" 2>/dev/null || true
done

echo
echo "Feed: $TICKS-tick burst (100 stocks, 4 publisher connections), then $RATE ticks/s for ${PACED_SECS}s"
echo
echo "| engine   | burst ticks/s committed | publish ticks/s | paced committed | lag p50 | lag p99 |"
echo "|----------|-----------|--------------|--------------|-------------|-------------|"
printf '%s\n' "${rows[@]}"
echo
echo "(lag: tick timestamp, set by the publisher, to commit; an API reader sees a commit at most"
echo " BOURSE_READ_CACHE_MS = 50 ms later. ${rss_row[*]})"
echo
echo "| HTTP | connections | requests/s | p50 | p99 | server peak RSS |"
echo "|---|---|---|---|---|---|"
echo "$http_row"
