#!/usr/bin/env bash
# Retention benchmark: a table of TICKS ticks older than BOURSE_TICK_RETENTION_DAYS (with their
# minute bars) is emptied by serve's retention job while the feed keeps ingesting RATE ticks/s.
# Reports rows deleted/s and the ingest lag p99 during the deletion beside a run without it.
# Usage: bench/retention.sh [TICKS] [RATE]   (defaults 2000000 ticks, 2000 ticks/s)
# Needs: a release build (made if BOURSE_BIN is unset), mosquitto, sqlite3, PostgreSQL on 127.0.0.1.
source "$(dirname "$0")/lib.sh"
TICKS="${1:-2000000}"
RATE="${2:-2000}"
STOCKS=10
build
need sqlite3

start_broker

# p99 of the ingest lag between two /metrics snapshots (bucket bound, ms).
p99() { # before after
  python3 - "$1" "$2" <<'PY'
import re, sys
def buckets(path):
    return {m.group(1): float(m.group(2)) for m in
            (re.match(r'bourse_ingest_lag_seconds_bucket\{le="([^"]+)"\} (\S+)', l) for l in open(path)) if m}
b, a = buckets(sys.argv[1]), buckets(sys.argv[2])
total = a.get("+Inf", 0) - b.get("+Inf", 0)
for le in sorted(a, key=lambda s: float("inf") if s == "+Inf" else float(s)):
    if total > 0 and a[le] - b.get(le, 0) >= 0.99 * total:
        print("<= %s ms" % ("inf" if le == "+Inf" else "%g" % (float(le) * 1000))); break
else:
    print("n/a")
PY
}

# Old ticks: STOCKS stocks, one tick a second each, all 60 days old, and their minute bars.
load_pg() {
  psql "$1" -q <<SQL
INSERT INTO stocks SELECT gen_random_uuid(), 'R' || i, 1, 1, now(), now() FROM generate_series(1, $STOCKS) i;
INSERT INTO ticks SELECT s.stock_id, date_trunc('day', now()) - interval '60 days' + g * interval '1 second', 1, 1, now()
  FROM stocks s, generate_series(1, $TICKS / $STOCKS) g;
INSERT INTO bars SELECT s.name, date_trunc('minute', t.ts, 'UTC'), 1, 1, 1, 1, count(*), min(t.ts), max(t.ts)
  FROM ticks t JOIN stocks s USING (stock_id) GROUP BY 1, 2;
VACUUM ANALYZE;
SQL
}

load_sqlite() {
  sqlite3 "$1" <<SQL
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < $STOCKS)
INSERT INTO stocks SELECT lower(hex(randomblob(4)) || '-' || hex(randomblob(2)) || '-4' || substr(hex(randomblob(2)), 2)
  || '-a' || substr(hex(randomblob(2)), 2) || '-' || hex(randomblob(6))), 'R' || i, '1', 1, 0, 0 FROM n;
WITH RECURSIVE g(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM g WHERE i < $TICKS / $STOCKS)
INSERT INTO ticks SELECT s.stock_id, ((CAST(strftime('%s', 'now') AS INTEGER) / 86400 - 60) * 86400 + g.i) * 1000000,
  '1', 1, 0 FROM stocks s, g;
INSERT INTO bars SELECT s.name, t.ts - t.ts % 60000000, '1', '1', '1', '1', count(*), min(t.ts), max(t.ts)
  FROM ticks t JOIN stocks s USING (stock_id) GROUP BY 1, 2;
SQL
}

rows=()
for engine in sqlite postgres; do
  for retention in 0 30; do
    if [ "$engine" = sqlite ]; then db="sqlite://$work/retention-$retention.db"; else new_pg_db; db="$PG_URL"; fi
    BOURSE_DATABASE_URL="$db" BOURSE_LOG=warn "$BIN" migrate
    if [ "$engine" = sqlite ]; then load_sqlite "${db#sqlite://}"; else load_pg "$db"; fi
    port="$(free_port)"
    base="http://127.0.0.1:$port"
    log="$work/serve-$engine-$retention.log"
    # The streamer publishes first, so the deletion starts under load: serve subscribes to a
    # session that is already receiving.
    "$BIN" streamer --mqtt-url "$MQTT" --mqtt-topic ret-$engine-$retention --addr 127.0.0.1:0 \
      --stocks 100 --rate "$RATE" --count $((RATE * 600)) >"$work/pub.log" 2>&1 &
    pub=$!
    pids+=("$pub")
    start=$(date +%s.%N)
    BOURSE_HTTP_ADDR="127.0.0.1:$port" BOURSE_DATABASE_URL="$db" BOURSE_MQTT_URL="$MQTT" \
      BOURSE_MQTT_TOPIC=ret-$engine-$retention BOURSE_MQTT_CLIENT_ID=ret-$engine-$retention-$$ BOURSE_DEMO=false \
      BOURSE_LOG=warn,bourse_feed::retention=info BOURSE_TICK_RETENTION_DAYS=$retention \
      "$BIN" serve >"$log" 2>&1 &
    serve=$!
    pids+=("$serve")
    wait_http "$base/readyz"
    curl -s "$base/metrics" >"$work/before"
    ingested_before=$(metric "$base" bourse_ticks_ingested_total)
    if [ "$retention" = 0 ]; then
      sleep 20; elapsed=20; deleted=0
    else
      until grep -q "retention: old rows deleted" "$log"; do
        sleep 0.2
        kill -0 "$serve" || { cat "$log"; exit 1; }
      done
      elapsed=$(python3 -c "print(round($(date +%s.%N) - $start, 1))")
      deleted=$(grep -o 'ticks=[0-9]*' "$log" | head -1 | tr -dc 0-9)
    fi
    curl -s "$base/metrics" >"$work/after"
    ingested=$(( $(metric "$base" bourse_ticks_ingested_total) - ingested_before ))
    rate=$(python3 -c "print(round($ingested / $elapsed))")
    speed=$(python3 -c "print(round($deleted / $elapsed) if $deleted else '-')")
    rows+=("$(printf '| %-10s | %9s | %9s | %8s s | %10s | %8s/s | %-11s |' "$engine" "$retention" "$deleted" "$elapsed" "$speed" "$rate" "$(p99 "$work/before" "$work/after")")")
    kill "$serve" "$pub" 2>/dev/null || true
    wait "$serve" "$pub" 2>/dev/null || true
  done
done

echo
echo "$TICKS old ticks ($STOCKS stocks), feed at $RATE ticks/s:"
echo "| engine     | retention | deleted   | elapsed    | deleted/s  | ingested   | lag p99     |"
echo "|---|---|---|---|---|---|---|"
printf '%s\n' "${rows[@]}"
