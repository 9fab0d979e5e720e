-- wrk request generator for bench/run (closed-loop throughput).
--
--   wrk -t1 -c32 -d5s -s bench/wrk/send.lua http://127.0.0.1:18083 -- WORKLOAD OFFSET
--
-- WORKLOAD: allowed  POST Messages.json to a distinct valid US number per
--                    request (same scheme as benches/common/mod.rs: 256,000
--                    prefix:8 values in turn, 8 requests per client IP)
--           shadowed POST Messages.json to the +99899394 block (UZ: geo)
--           blocked  POST Messages.json to the 1,000 numbers +16462001000..999
--                    (US, valid), which the harness puts under an admin
--                    block on prefix:8=+16462001 (action: the default, shadow)
--           blocked_reject  the same into +16462002000..999, under a block
--                    with action reject (no shadow fake to remember)
--           get      GET of one Message (not a send: streamed through)
-- OFFSET: first request number, so that runs never reuse a number. Use one
-- wrk thread (-t1): a second thread would start at the same OFFSET.

local areas = {201, 202, 203, 205, 206, 207, 208, 209, 210, 212, 213, 214, 215, 216,
               217, 218, 219, 224, 225, 228, 229, 231, 234, 239, 240, 248, 251, 252,
               253, 254, 256, 260}
local K = #areas
local P = K * 800 * 10
local floor = math.floor
local fmt = string.format

local account = "AC0123456789abcdef0123456789abcdef"
local send_path = "/2010-04-01/Accounts/" .. account .. "/Messages.json"
local get_path = "/2010-04-01/Accounts/" .. account .. "/Messages/SM0123456789abcdef0123456789abcdef.json"
-- Basic base64("AC0123456789abcdef0123456789abcdef:benchtoken")
local auth = "Basic QUMwMTIzNDU2Nzg5YWJjZGVmMDEyMzQ1Njc4OWFiY2RlZjpiZW5jaHRva2Vu"

local workload = "allowed"
local n = 0
local get_request

function init(args)
  workload = args[1] or "allowed"
  n = tonumber(args[2] or "0")
  if workload ~= "allowed" and workload ~= "shadowed" and workload ~= "get"
     and workload ~= "blocked" and workload ~= "blocked_reject" then
    error("unknown workload " .. workload)
  end
  get_request = wrk.format("GET", get_path,
    {["Authorization"] = auth, ["Accept"] = "application/json"})
end

function request()
  if workload == "get" then
    return get_request
  end
  local i = n
  n = n + 1
  local to
  if workload == "allowed" then
    local p = i % P
    local rest = floor(p / K)
    to = fmt("%d%d%d%03d", areas[p % K + 1], 200 + rest % 800, floor(rest / 800),
             floor(i / P) % 1000)
    to = "1" .. to
  elseif workload == "blocked" then
    to = fmt("16462001%03d", i % 1000)
  elseif workload == "blocked_reject" then
    to = fmt("16462002%03d", i % 1000)
  else
    to = fmt("99899394%04d", i % 10000)
  end
  local u = floor(i / 8) % 16777216
  local ip = fmt("10.%d.%d.%d", floor(u / 65536), floor(u / 256) % 256, u % 256)
  local body = "To=%2B" .. to .. "&From=%2B15017122661&Body=Your+code+is+123456"
  return wrk.format("POST", send_path, {
    ["Authorization"] = auth,
    ["Content-Type"] = "application/x-www-form-urlencoded",
    ["X-SMSGuard-Client-IP"] = ip,
  }, body)
end
