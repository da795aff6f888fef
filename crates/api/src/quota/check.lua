-- Counts requests in the callers' logs (see redis.rs): one list per caller, its buckets oldest
-- first. KEYS: the callers' lists. ARGV: for each key `limit, window (ms), bucket (ms),
-- requests`. Returns `{now (ms)}` followed, for each key, by `{used before, admitted, the oldest
-- bucket's expiry (ms, -1 when the log is empty), release of the refused (ms, -1 when none were
-- refused or the log is empty)}`: BucketLog::attempt's rule for `requests` requests at one
-- instant.
--
-- An entry is `bucket:count:running total`; the newest also carries `:oldest bucket:running
-- total before it:key expiry`.
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local out = {now}
local function newest(tb, tc, ts, hb, base, exp)
  return string.format('%d:%d:%d:%d:%d:%d', tb, tc, ts, hb, base, exp)
end
-- Any entry's bucket, count and running total.
local function parse(entry)
  local b, c, s = string.match(entry, '^(%-?%d+):(%d+):(%d+)')
  return tonumber(b), tonumber(c), tonumber(s)
end
for i, key in ipairs(KEYS) do
  local limit = tonumber(ARGV[4 * i - 3])
  local window = tonumber(ARGV[4 * i - 2])
  local step = tonumber(ARGV[4 * i - 1])
  local n = tonumber(ARGV[4 * i])
  local slack = math.max(step, math.floor(window / 24))
  local bucket = math.floor(now / step)
  -- newest entry: tb tc ts (bucket, count, running total), hb (oldest bucket), base (running
  -- total before it), exp (the key's expiry)
  local tb, tc, ts, hb, base, exp
  local tail = redis.pcall('LINDEX', key, -1)
  if type(tail) == 'table' then
    -- Not a list (a sorted set left by an earlier version): start over.
    redis.call('DEL', key)
    tail = false
  end
  if tail then
    tb, tc, ts, hb, base, exp = string.match(tail, '^(%-?%d+):(%d+):(%d+):(%-?%d+):(%d+):(%d+)$')
  end
  if not hb then
    -- A list of another format: start over.
    if tail then redis.call('DEL', key) end
    tail = false
  else
    tb, tc, ts = tonumber(tb), tonumber(tc), tonumber(ts)
    hb, base, exp = tonumber(hb), tonumber(base), tonumber(exp)
  end
  local changed = false
  while tail and (hb + 1) * step + window <= now do
    redis.call('LPOP', key)
    changed = true
    local head = redis.call('LINDEX', key, 0)
    if head then
      local b, c, s = parse(head)
      hb, base = b, s - c
    else
      tail = false
    end
  end
  local before = 0
  if tail then before = ts - base end
  local admitted = math.max(0, math.min(n, limit - before))
  if admitted > 0 and tail and tb >= bucket then
    tc, ts = tc + admitted, ts + admitted
    redis.call('LSET', key, -1, newest(tb, tc, ts, hb, base, exp))
  elseif admitted > 0 then
    local fresh = not tail
    if fresh then hb, base, ts = bucket, 0, 0 end
    tb, tc, ts = bucket, admitted, ts + admitted
    local due = (bucket + 1) * step + window
    local extend = fresh or due > exp
    if extend then exp = due + slack end
    redis.call('RPUSH', key, newest(tb, tc, ts, hb, base, exp))
    if extend then redis.call('PEXPIREAT', key, exp) end
    tail = true
  elseif changed and tail then
    redis.call('LSET', key, -1, newest(tb, tc, ts, hb, base, exp))
  end
  local oldest = -1
  if tail then oldest = (hb + 1) * step + window end
  local release = -1
  if admitted < n and tail then
    -- The bucket whose expiry brings the count below the limit: the oldest, unless the limit
    -- was lowered; then the list is read a slice at a time from its oldest entry.
    local excess = before + admitted - limit
    if excess <= 0 then release = oldest end
    local from = 0
    while release < 0 do
      local slice = redis.call('LRANGE', key, from, from + 63)
      if #slice == 0 then break end
      for _, entry in ipairs(slice) do
        local b, _, s = parse(entry)
        if s - base > excess then
          release = (b + 1) * step + window
          break
        end
      end
      from = from + 64
    end
  end
  out[#out + 1] = before
  out[#out + 1] = admitted
  out[#out + 1] = oldest
  out[#out + 1] = release
end
return out
