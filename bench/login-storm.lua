-- Wrong Basic passwords, as many attackers send them: every other request names an existing
-- user (storm-0 .. storm-2), the rest unknown ones; every password differs.
local b64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
local function base64(s)
  return ((s:gsub(".", function(x)
    local r, byte = "", x:byte()
    for i = 8, 1, -1 do r = r .. (byte % 2 ^ i - byte % 2 ^ (i - 1) > 0 and "1" or "0") end
    return r
  end) .. "0000"):gsub("%d%d%d?%d?%d?%d?", function(x)
    if #x < 6 then return "" end
    local c = 0
    for i = 1, 6 do c = c + (x:sub(i, i) == "1" and 2 ^ (6 - i) or 0) end
    return b64:sub(c + 1, c + 1)
  end) .. ({ "", "==", "=" })[#s % 3 + 1])
end
local n = 0
request = function()
  n = n + 1
  local user = (n % 2 == 0) and ("storm-" .. (n % 3)) or ("nobody-" .. n)
  return wrk.format("GET", "/history", { Authorization = "Basic " .. base64(user .. ":guess-" .. n) })
end
