-- One AIMD token-bucket limiter key: acquire, report and snapshot in one round trip each.
-- The rules are those of queue_ratelimit/policy/aimd.py (read its docstring); keep both equal.
--
-- KEYS[1] state hash: epoch, cool, seq (calls paid), and per limit <name>.r (rate), .t (tokens),
--         .s (ts), and the published quota (policy/quota.py): .q (left, "" = none), .qu (until),
--         .qc (pace)
-- KEYS[2] lease zset: lease id -> expiry time (only touched with a concurrency limit)
-- KEYS[3] the integration's breaker hash: state, failures, until (absent = closed, no failures)
--         (policy/breaker.py has its rules)
--
-- ARGV[1] op: "acquire" | "success" | "backoff" | "failure" | "release" | "snapshot" | "breaker"
-- ARGV[2] now in seconds, or "" to use the Redis server's TIME (the default; tests pin it)
-- ARGV[3] idle ttl in seconds (the keys expire this long after their last debt and cooldown)
-- ARGV[4] n, the number of limits
-- ARGV[5] seq of the decision a report is about, or ""; then 10 values per limit:
--         name, start rate, burst, min rate, max rate, increase, decrease,
--         cost (acquire) or adjustment (reports), published remaining or "", its reset_after
-- ARGV[6 + 10n ...] op arguments:
--   acquire:  max_wait, reserve (0/1), reservation epoch or "", reservation slot,
--             max_concurrent or "", lease id, lease ttl, breaker open seconds
--   success:  lease id or ""
--   backoff:  lease id or "", epoch or "", retry_after or "", cooldown multiplier, max backoff
--   failure:  lease id or "", breaker threshold, breaker open seconds
--   release:  lease id
--   breaker:  "open" or "closed", open seconds (an operator's override)
--
-- Returns (numbers as strings, to keep their precision):
--   acquire:  {granted (0/1), wait, reason, epoch, reservation slot or "", now, lease or "", seq}
--   success/backoff/failure: {epoch, decreased (0/1), old rate, new rate, cooldown left,
--             breaker state, breaker changed (0/1)}
--   release, breaker:  {done (0/1)}
--   snapshot: {exists (0/1), now, breaker state, failures, breaker wait, epoch, cooldown left,
--             live leases, then name, rate, tokens per limit}

local function num(x) return string.format('%.17g', x) end

local op = ARGV[1]
local now = tonumber(ARGV[2])
if now == nil then
  local t = redis.call('TIME')
  now = tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local idle_ttl = tonumber(ARGV[3])
local n = tonumber(ARGV[4])
local seen_seq = tonumber(ARGV[5])
local limits = {}
for i = 0, n - 1 do
  local b = 6 + 10 * i
  limits[i + 1] = {
    name = ARGV[b], rate = tonumber(ARGV[b + 1]), burst = tonumber(ARGV[b + 2]),
    min = tonumber(ARGV[b + 3]), max = tonumber(ARGV[b + 4]), inc = tonumber(ARGV[b + 5]),
    dec = tonumber(ARGV[b + 6]), cost = tonumber(ARGV[b + 7]),
    qrem = tonumber(ARGV[b + 8]), qreset = tonumber(ARGV[b + 9]),
  }
end
local a = 6 + 10 * n

if op == 'release' then
  return {tostring(redis.call('ZREM', KEYS[2], ARGV[a]))}
end

local b = redis.call('HMGET', KEYS[3], 'state', 'failures', 'until')
local bstate, bfail, buntil = b[1] or 'closed', tonumber(b[2]) or 0, tonumber(b[3]) or 0
local bbefore = bstate

local function save_breaker()
  if bstate == 'closed' and bfail == 0 then
    if b[1] then redis.call('DEL', KEYS[3]) end
    return
  end
  redis.call('HSET', KEYS[3], 'state', bstate, 'failures', bfail, 'until', num(buntil))
  redis.call('PEXPIRE', KEYS[3], math.ceil((math.max(0, buntil - now) + idle_ttl) * 1000))
end

if op == 'breaker' then
  bstate, bfail, buntil = ARGV[a], 0, 0
  if bstate == 'open' then buntil = now + tonumber(ARGV[a + 1]) end
  save_breaker()
  return {'1'}
end

-- quota helpers (policy/quota.py)
local function refill_rate(lim)
  if lim.q ~= nil and lim.s < lim.qu then return math.min(lim.r, lim.qc) end
  return lim.r
end
local function quota_active(lim) return lim.q ~= nil and now < lim.qu end

-- load the state and bring every bucket to `now` (clamp rate, refill, expire its quota)
local fields = {'epoch', 'cool', 'seq'}
local F = {'.r', '.t', '.s', '.q', '.qu', '.qc'}
for _, lim in ipairs(limits) do
  for _, f in ipairs(F) do fields[#fields + 1] = lim.name .. f end
end
local raw = redis.call('HMGET', KEYS[1], unpack(fields))
local exists = raw[1] ~= false
local epoch = tonumber(raw[1]) or math.floor(now * 1000000)
local cool = tonumber(raw[2]) or 0
local seq = tonumber(raw[3]) or 0
for i, lim in ipairs(limits) do
  local o = 3 + 6 * (i - 1)
  lim.r = math.min(math.max(tonumber(raw[o + 1]) or lim.rate, lim.min), lim.max)
  lim.t = tonumber(raw[o + 2]) or lim.burst
  lim.s = tonumber(raw[o + 3]) or now
  lim.q, lim.qu, lim.qc = tonumber(raw[o + 4]), tonumber(raw[o + 5]) or 0, tonumber(raw[o + 6]) or 0
  if now > lim.s then
    lim.t = math.min(lim.burst, lim.t + (now - lim.s) * refill_rate(lim))
    lim.s = now
  end
  if lim.q ~= nil and now >= lim.qu then lim.q, lim.qu, lim.qc = nil, 0, 0 end
end

if op == 'snapshot' then
  local bwait = 0
  if bstate ~= 'closed' then bwait = math.max(0, buntil - now) end
  local out = {'0', num(now), bstate, tostring(bfail), num(bwait)}
  if not exists then return out end
  out[1] = '1'
  out[#out + 1] = string.format('%d', epoch)
  out[#out + 1] = num(math.max(0, cool - now))
  out[#out + 1] = tostring(redis.call('ZCOUNT', KEYS[2], '(' .. num(now), '+inf'))
  for _, lim in ipairs(limits) do
    out[#out + 1] = lim.name
    out[#out + 1] = num(lim.r)
    out[#out + 1] = num(lim.t)
  end
  return out
end

local function save()
  local busy = math.max(0, cool - now)
  local args = {'epoch', string.format('%d', epoch), 'cool', num(cool), 'seq', tostring(seq)}
  for _, lim in ipairs(limits) do
    busy = math.max(busy, math.max(0, lim.s - now) + math.max(0, -lim.t) / lim.r)
    local q = ''
    if lim.q ~= nil then q = num(lim.q) end
    local values = {num(lim.r), num(lim.t), num(lim.s), q, num(lim.qu), num(lim.qc)}
    for k, f in ipairs(F) do
      args[#args + 1] = lim.name .. f
      args[#args + 1] = values[k]
    end
  end
  redis.call('HSET', KEYS[1], unpack(args))
  redis.call('PEXPIRE', KEYS[1], math.ceil((busy + idle_ttl) * 1000))
end

local function pay()
  seq = seq + 1
  for _, lim in ipairs(limits) do
    lim.t = lim.t - lim.cost
    if quota_active(lim) then lim.q = lim.q - lim.cost end
  end
end

if op == 'acquire' then
  local max_wait = tonumber(ARGV[a])
  local reserve = ARGV[a + 1] == '1'
  local res_epoch = tonumber(ARGV[a + 2])
  local max_conc = tonumber(ARGV[a + 4])
  local lease_id = ARGV[a + 5]
  local lease_ttl = tonumber(ARGV[a + 6])
  local redeeming = res_epoch ~= nil and res_epoch == epoch
  local ep = string.format('%d', epoch)
  local kept = ''
  if redeeming then kept = ARGV[a + 3] end
  local probe = false
  if bstate ~= 'closed' then
    if now < buntil then
      save()
      return {'0', num(buntil - now), 'breaker_open', ep, kept, num(now), '', tostring(seq)}
    end
    probe = true
  end
  local slot
  if redeeming then
    slot = math.max(tonumber(ARGV[a + 3]), cool, now)
  else
    slot = math.max(now, cool)
    for _, lim in ipairs(limits) do
      if lim.cost > 0 then
        local pace = refill_rate(lim)
        if lim.cost > lim.t and pace <= 0 then
          slot = math.max(slot, lim.qu)
        elseif lim.cost > lim.t then
          slot = math.max(slot, math.max(lim.s, now) + (lim.cost - lim.t) / pace)
        end
        if quota_active(lim) and lim.q < lim.cost then slot = math.max(slot, lim.qu) end
      end
    end
  end
  local wait = slot - now
  if max_conc ~= nil and wait <= max_wait then
    redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', num(now))
    if redis.call('ZCARD', KEYS[2]) >= max_conc then
      local first = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
      local busy = math.min(tonumber(first[2]) - now, 1 / limits[1].r)
      save()
      return {'0', num(busy), 'concurrency', ep, kept, num(now), '', tostring(seq)}
    end
  end
  if wait <= max_wait then
    if not redeeming then pay() end
    local lease = ''
    if max_conc ~= nil then
      redis.call('ZADD', KEYS[2], num(now + lease_ttl), lease_id)
      redis.call('PEXPIRE', KEYS[2], math.ceil((lease_ttl + idle_ttl) * 1000))
      lease = lease_id
    end
    save()
    local reason = 'ok'
    if redeeming then reason = 'redeemed' end
    if probe then
      bstate, buntil, reason = 'half_open', now + tonumber(ARGV[a + 7]), 'probe'
      save_breaker()
    end
    return {'1', num(wait), reason, ep, '', num(now), lease, tostring(seq)}
  end
  local reason = 'rate'
  if cool > now then reason = 'cooldown' end
  if redeeming then
    save()
    return {'0', num(wait), reason, ep, num(slot), num(now), '', tostring(seq)}
  end
  if reserve then
    pay()
    save()
    return {'0', num(wait), reason, ep, num(slot), num(now), '', tostring(seq)}
  end
  save()
  return {'0', num(wait), reason, ep, '', num(now), '', tostring(seq)}
end

-- success / backoff / failure: each gives back the lease first, then applies the feedback
if ARGV[a] ~= '' then redis.call('ZREM', KEYS[2], ARGV[a]) end
for i, lim in ipairs(limits) do
  if lim.cost ~= 0 then
    lim.t = math.min(lim.burst, lim.t - lim.cost)
    if quota_active(lim) then lim.q = lim.q - lim.cost end
  end
  if lim.qrem ~= nil and lim.qreset ~= nil and lim.qreset > 0 then
    local left = lim.qrem
    if i == 1 and seen_seq ~= nil then left = left - math.max(0, seq - seen_seq) end
    left = math.max(0, left)
    lim.q, lim.qu, lim.qc = left, now + lim.qreset, left / lim.qreset
    lim.t = math.min(lim.t, left)
  end
end
local old = limits[1].r
local decreased = 0
if op == 'success' then
  if now >= cool then
    for _, lim in ipairs(limits) do lim.r = math.min(lim.max, lim.r + lim.inc) end
  end
  if bstate ~= 'open' then bstate, bfail, buntil = 'closed', 0, 0 end
elseif op == 'failure' then
  if bstate ~= 'open' then
    bfail = bfail + 1
    if bstate == 'half_open' or bfail >= tonumber(ARGV[a + 1]) then
      bstate, buntil = 'open', now + tonumber(ARGV[a + 2])
    end
  end
elseif op == 'backoff' then
  local seen = tonumber(ARGV[a + 1])
  local retry_after = tonumber(ARGV[a + 2])
  local mult = tonumber(ARGV[a + 3])
  local max_backoff = tonumber(ARGV[a + 4])
  local new_event
  if seen ~= nil then new_event = seen == epoch else new_event = now >= cool end
  if retry_after ~= nil then retry_after = math.min(math.max(retry_after, 0), max_backoff) end
  if new_event then
    decreased = 1
    for _, lim in ipairs(limits) do lim.r = math.max(lim.min, lim.r * lim.dec) end
    epoch = math.max(epoch + 1, math.floor(now * 1000000))
    local pause = retry_after
    if pause == nil then pause = math.min(mult / limits[1].r, max_backoff) end
    cool = math.max(cool, now + pause)
    for _, lim in ipairs(limits) do lim.t = 0; lim.s = cool end
  elseif retry_after ~= nil and now + retry_after > cool then
    cool = now + retry_after
    for _, lim in ipairs(limits) do lim.s = math.max(lim.s, cool) end
  end
else
  return redis.error_reply('unknown op ' .. tostring(op))
end
save()
save_breaker()
local changed = '0'
if bstate ~= bbefore then changed = '1' end
return {string.format('%d', epoch), tostring(decreased), num(old), num(limits[1].r),
        num(math.max(0, cool - now)), bstate, changed}
