-- wrk script for bench/quota.sh: every request comes from one of 65,536 client addresses, named
-- in X-Forwarded-For (the server trusts that header in this case), so each caller has few
-- requests in flight and there is little of one caller's traffic to put together.
local threads = 0
function setup(thread)
  thread:set("id", threads)
  threads = threads + 1
end
local state = 0
function init(args)
  -- Each wrk thread starts its walk elsewhere (threads share no Lua state).
  state = (id or 0) * 32768
end
function request()
  -- One step of a full-period LCG over 0..65535: spread, cheap, no repeat within a cycle.
  state = (state * 25173 + 13849) % 65536
  wrk.headers["X-Forwarded-For"] = "10.9." .. math.floor(state / 256) .. "." .. (state % 256)
  return wrk.format()
end
