-- One AIMD token-bucket limiter key: every decision in one round trip.
-- The rules are those of queue_ratelimit/policy/ (aimd.py, quota.py, breaker.py: read their
-- docstrings); tests/unit/test_lua_matches_policy.py checks that both give the same answers.
--
-- KEYS[1] state: a msgpack array {epoch, cooldown_until, seq, then per limit
--         name, rate, tokens, ts, quota_left, quota_until, quota_rate (quota_until 0 =
--         none), then "~ext" and per limit, in the same order, its credit (units refilled
--         so far: a reservation's clock) and peak (the rate at the last decrease; 0 =
--         none)}. These trail the 7-field groups, so a script of the 7-field layout (no
--         credits) still reads this state, and this one reads its state (credits and peaks
--         then start at 0; reservations keep their promised slots). An 8-field layout with
--         the credit inside each group existed only between commits, never in a release:
--         its buckets start afresh. Then "~srv", the delivery count: window start,
--         successes in it, successes in the window before (aimd.delivered). Then "~tat"
--         and the arrival schedule's next slot (policy/pacing.py; absent: 0).
-- KEYS[2] lease zset: lease id -> expiry time (touched only with a concurrency limit)
-- KEYS[3] the integration's breaker hash: state, failures, until (absent = closed, 0 failures)
-- KEYS[4] the integration's fleet-wide event counts (hash): backoffs, requeues, ...
--
-- ARGV[1] op: acquire | success | backoff | failure | release | snapshot | breaker | count
-- ARGV[2] now in seconds, or "" for the Redis server's TIME (the default; tests pin it)
-- ARGV[3] the plan, JSON: [idle_ttl, cooldown_multiplier, max_backoff, max_concurrent (0 =
--         none), lease_ttl, breaker_threshold, breaker_open_seconds,
--         [[name, rate, burst, min_rate, max_rate, increase, decrease], ...]]
-- ARGV[4] op arguments, one string of space-separated words ("-" = none; n = number of limits):
--   acquire:  max_wait, reserve (0/1), reservation epoch, reservation slot, lease id,
--             cooldown_wait ("-" = max_wait), max_sleepers ("-" = none),
--             then n costs, then n reservation dues (credit marks; "-" = none)
--   success, backoff, failure: lease id, seq, epoch, retry_after,
--             then per limit: adjustment, published remaining, its reset_after
--   release:  lease id              breaker: "open" or "closed", open seconds
--   count:    the event to count (requeues, budget_exhausted, ...)
--
-- Returns: times, rates and tokens as integers in millionths (seconds -> microseconds);
-- the hot paths answer one string of space-separated words (cheaper to build and to read):
--   acquire:  "granted (0/1) wait reason epoch reservation-slot (0 = none) now lease seq
--             recheck ("-" = wait), then with a reservation its n dues"
--   success, backoff, failure: "epoch decreased (0/1) old-rate new-rate cooldown-left
--             breaker-state breaker-changed (0/1)"
--   release, breaker, count: {done (0/1)}
--   snapshot: {exists (0/1), now, breaker state, failures, breaker wait, epoch, cooldown left,
--             live leases, then name, rate, tokens per limit}

local SLACK = 0.000001  -- a wait this small counts as none (float noise, microsecond replies)
local function micro(x) return math.floor(x * 1000000 + 0.5) end
local STRIDE = 7  -- state fields per limit, before the credits
local DELIVERY_WINDOW = 1.0  -- aimd.DELIVERY_WINDOW
local PROBE_FLOOR, GENTLE = 0.95, 0.5  -- aimd.PROBE_FLOOR, aimd.GENTLE
local PACING_TOLERANCE = 0.05  -- pacing.TOLERANCE

local function opt(w) if w then return tonumber(w) end return nil end

local op = ARGV[1]
local A = {}
for w in string.gmatch(ARGV[4] or '', '%S+') do
  if w == '-' then A[#A + 1] = false else A[#A + 1] = w end
end
local now = tonumber(ARGV[2])
if now == nil then
  local t = redis.call('TIME')
  now = tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local plan = cjson.decode(ARGV[3])
local idle_ttl, mult, max_backoff = plan[1], plan[2], plan[3]
local max_conc, lease_ttl, b_threshold, b_open = plan[4], plan[5], plan[6], plan[7]
local limits = {}
for i, p in ipairs(plan[8]) do
  limits[i] = {name = p[1], rate = p[2], burst = p[3], min = p[4], max = p[5], inc = p[6],
               dec = p[7]}
end
local n = #limits

if op == 'release' then
  return {redis.call('ZREM', KEYS[2], A[1])}
end

local function count(event)
  redis.call('HINCRBY', KEYS[4], event, 1)
  redis.call('PEXPIRE', KEYS[4], math.ceil(math.max(idle_ttl, 86400) * 1000))
end

if op == 'count' then
  count(A[1])
  return {1}
end

-- the breaker (policy/breaker.py)
local b = redis.call('HMGET', KEYS[3], 'state', 'failures', 'until')
local bstate, bfail, buntil = b[1] or 'closed', tonumber(b[2]) or 0, tonumber(b[3]) or 0
local bbefore = bstate

local function save_breaker()
  if bstate == 'closed' and bfail == 0 then
    if b[1] then redis.call('DEL', KEYS[3]) end
    return
  end
  redis.call('HSET', KEYS[3], 'state', bstate, 'failures', bfail, 'until',
             string.format('%.17g', buntil))
  redis.call('PEXPIRE', KEYS[3], math.ceil((math.max(0, buntil - now) + idle_ttl) * 1000))
end

if op == 'breaker' then
  bstate, bfail, buntil = A[1], 0, 0
  if bstate == 'open' then buntil = now + tonumber(A[2]) end
  save_breaker()
  return {1}
end

-- quota helpers (policy/quota.py)
local function refill_rate(lim)
  if lim.q ~= nil and lim.s < lim.qu then return math.min(lim.r, lim.qc) end
  return lim.r
end
local function quota_active(lim) return lim.q ~= nil and now < lim.qu end

-- load the key and bring every bucket to `now`: clamp the rate, refill, expire the quota
local blob = redis.call('GET', KEYS[1])
local exists = blob ~= false
local saved = {}
local epoch, cool, seq = math.floor(now * 1000000), 0, 0
local sfrom, served, sbefore = 0, 0, 0
local tat = 0
if exists then
  local st = cmsgpack.unpack(blob)
  epoch, cool, seq = st[1], st[2], st[3]
  local j = 4
  while j <= #st and st[j] ~= '~ext' do
    saved[st[j]] = j
    j = j + STRIDE
  end
  local ext = j  -- st[ext + 2g - 1], st[ext + 2g]: credit and peak of the g-th group
  local srv = ext + 2 * (ext - 4) / STRIDE + 1
  if st[srv] == '~srv' then
    sfrom, served, sbefore = st[srv + 1], st[srv + 2], st[srv + 3]
    if st[srv + 4] == '~tat' then tat = st[srv + 5] end
  end
  for _, lim in ipairs(limits) do
    local k = saved[lim.name]
    if k then
      lim.r, lim.t, lim.s = st[k + 1], st[k + 2], st[k + 3]
      if st[k + 5] ~= 0 then lim.q, lim.qu, lim.qc = st[k + 4], st[k + 5], st[k + 6] end
      local g = (k - 4) / STRIDE + 1
      lim.c = tonumber(st[ext + 2 * g - 1]) or 0
      lim.p = tonumber(st[ext + 2 * g]) or 0
    end
  end
end
for _, lim in ipairs(limits) do
  if lim.r == nil then lim.r, lim.t, lim.s, lim.c, lim.p = lim.rate, lim.burst, now, 0, 0 end
  if lim.qu == nil then lim.qu, lim.qc = 0, 0 end
  lim.r = math.min(math.max(lim.r, lim.min), lim.max)
  if now > lim.s then
    local before = lim.t
    lim.t = math.min(lim.burst, lim.t + (now - lim.s) * refill_rate(lim))
    lim.c = lim.c + math.max(0, lim.t - before)
    lim.s = now
  end
  if lim.q ~= nil and now >= lim.qu then lim.q, lim.qu, lim.qc = nil, 0, 0 end
end

if op == 'snapshot' then
  local bwait = 0
  if bstate ~= 'closed' then bwait = math.max(0, buntil - now) end
  local out = {0, micro(now), bstate, bfail, micro(bwait)}
  if not exists then return out end
  out[1] = 1
  out[6] = epoch
  out[7] = micro(math.max(0, cool - now))
  out[8] = redis.call('ZCOUNT', KEYS[2], '(' .. string.format('%.17g', now), '+inf')
  for _, lim in ipairs(limits) do
    out[#out + 1] = lim.name
    out[#out + 1] = micro(lim.r)
    out[#out + 1] = micro(lim.t)
  end
  return out
end

local function save()
  local busy = math.max(0, cool - now, tat - now)
  local st = {epoch, cool, seq}
  for _, lim in ipairs(limits) do
    busy = math.max(busy, math.max(0, lim.s - now) + math.max(0, -lim.t) / lim.r)
    st[#st + 1] = lim.name
    st[#st + 1] = lim.r
    st[#st + 1] = lim.t
    st[#st + 1] = lim.s
    st[#st + 1] = lim.q or 0
    st[#st + 1] = lim.qu
    st[#st + 1] = lim.qc
  end
  st[#st + 1] = '~ext'
  for _, lim in ipairs(limits) do
    st[#st + 1] = lim.c
    st[#st + 1] = lim.p
  end
  st[#st + 1] = '~srv'
  st[#st + 1] = sfrom
  st[#st + 1] = served
  st[#st + 1] = sbefore
  st[#st + 1] = '~tat'
  st[#st + 1] = tat
  redis.call('SET', KEYS[1], cmsgpack.pack(st), 'PX', math.ceil((busy + idle_ttl) * 1000))
end

local function answer(granted, wait, reason, slot, lease, recheck, dues)
  local out = string.format('%d %d %s %d %d %d %s %d', granted, micro(wait), reason, epoch,
                            slot, micro(now), lease, seq)
  -- %d: a number's own text may be exponent notation (1e+14) once credits grow large
  if recheck == nil then out = out .. ' -' else out = out .. string.format(' %d', micro(recheck)) end
  if slot ~= 0 and dues then
    for _, d in ipairs(dues) do out = out .. string.format(' %d', micro(d)) end
  end
  return out
end

-- a reservation's slot at the current rates, never later than promised (aimd._pulled)
local function pulled(kept_slot, dues)
  if #dues ~= n then return kept_slot end
  local slot = now
  for i, lim in ipairs(limits) do
    local left = dues[i] - lim.c
    if left > 0 then
      if lim.q ~= nil then return kept_slot end
      slot = math.max(slot, math.max(lim.s, now) + left / lim.r)
    end
  end
  return math.min(kept_slot, slot)
end

-- seconds to refill `units` from `rate` when each unit raises it by `inc` (aimd.climb_time)
local function climb_time(units, rate, inc, max_rate)
  if inc <= 0 or rate >= max_rate then return units / rate end
  local cap_units = (max_rate - rate) / inc
  if units <= cap_units then return math.log(1 + units * inc / rate) / inc end
  return math.log(max_rate / rate) / inc + (units - cap_units) / max_rate
end

-- when a reservation's holder should come back (aimd._recheck)
local function recheck_of(dues, wait)
  if #dues ~= n then return wait end
  local start = math.max(now, cool)
  local back = start - now
  for i, lim in ipairs(limits) do
    local left = dues[i] - lim.c
    if left > 0 then
      if lim.q ~= nil then return wait end
      local inc = 0
      if i == 1 then inc = lim.inc end
      back = math.max(back, math.max(lim.s, start) - now + climb_time(left, lim.r, inc, lim.max))
    end
  end
  return math.min(wait, back)
end

if op == 'acquire' then
  local max_wait = tonumber(A[1]) + SLACK
  local reserve = A[2] == '1'
  local res_epoch = opt(A[3])
  local lease_id = A[5]
  local cooldown_wait, sleepers = opt(A[6]), opt(A[7])
  for i, lim in ipairs(limits) do lim.cost = tonumber(A[7 + i]) end
  local dues = {}
  for i = 1, n do
    local d = opt(A[7 + n + i])
    if d == nil then dues = {}; break end
    dues[i] = d
  end
  local redeeming = res_epoch ~= nil and res_epoch == epoch
  local kept = 0
  if redeeming then kept = micro(tonumber(A[4])) end
  local probe = false
  if bstate ~= 'closed' then
    if now < buntil then
      save()
      return answer(0, buntil - now, 'breaker_open', kept, '-', nil, dues)
    end
    probe = true
  end
  local slot
  local late = false
  if redeeming then
    local due_at = pulled(tonumber(A[4]), dues)
    slot, late = math.max(due_at, cool, now), due_at < now - PACING_TOLERANCE
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
  -- aimd.fits_wait: the wait for a place in line, capped to max_sleepers places, and a
  -- cooldown up to cooldown_wait before it
  local in_line = max_wait
  local pace = refill_rate(limits[1])
  if sleepers ~= nil and pace > 0 then in_line = math.min(in_line, sleepers / pace + SLACK) end
  local cw = max_wait
  if cooldown_wait ~= nil then cw = cooldown_wait + SLACK end
  local fits = wait <= in_line
  if not fits and now < cool and cool <= now + cw then fits = slot - cool <= in_line end
  -- pacing: the arrival schedule may add a sleep, within max_wait
  local requests = limits[1].cost
  if fits and late and requests > 0 and pace > 0 then
    local paced = math.max(slot, tat - math.max(0, limits[1].burst - requests) / pace
                                     - PACING_TOLERANCE)
    fits = paced - now <= math.max(max_wait, wait + SLACK)
    if fits then slot = paced; wait = paced - now end
  end
  if max_conc > 0 and fits then
    redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', string.format('%.17g', now))
    if redis.call('ZCARD', KEYS[2]) >= max_conc then
      local first = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
      local busy = math.min(tonumber(first[2]) - now, 1 / limits[1].r)
      save()
      return answer(0, busy, 'concurrency', kept, '-', nil, dues)
    end
  end
  local function pay()
    seq = seq + 1
    for _, lim in ipairs(limits) do
      lim.t = lim.t - lim.cost
      if quota_active(lim) then lim.q = lim.q - lim.cost end
    end
  end
  if fits then
    if not redeeming then pay() end
    if requests > 0 and pace > 0 then tat = math.max(tat, slot) + requests / pace end
    local lease = '-'
    if max_conc > 0 then
      redis.call('ZADD', KEYS[2], string.format('%.17g', now + lease_ttl), lease_id)
      redis.call('PEXPIRE', KEYS[2], math.ceil((lease_ttl + idle_ttl) * 1000))
      lease = lease_id
    end
    save()
    local reason = 'ok'
    if redeeming then reason = 'redeemed' end
    if probe then
      bstate, buntil, reason = 'half_open', now + b_open, 'probe'
      save_breaker()
    end
    return answer(1, wait, reason, 0, lease)
  end
  local reason = 'rate'
  if cool > now then reason = 'cooldown' end
  if not (reserve or redeeming) then
    save()
    return answer(0, wait, reason, 0, '-')
  end
  if not redeeming then
    pay()
    dues = {}
    for i, lim in ipairs(limits) do dues[i] = lim.c - lim.t end
  end
  save()
  return answer(0, wait, reason, micro(slot), '-', recheck_of(dues, wait), dues)
end

-- success / backoff / failure: give the lease back, apply the response's feedback
if A[1] then redis.call('ZREM', KEYS[2], A[1]) end
local seen_seq, seen_epoch, retry_after = opt(A[2]), opt(A[3]), opt(A[4])
for i, lim in ipairs(limits) do
  local f = 5 + 3 * (i - 1)
  local delta = tonumber(A[f])
  local qrem, qreset = opt(A[f + 1]), opt(A[f + 2])
  if delta ~= 0 then
    lim.t = math.min(lim.burst, lim.t - delta)
    if quota_active(lim) then lim.q = lim.q - delta end
  end
  if qrem ~= nil and qreset ~= nil and qreset > 0 then
    if i == 1 and seen_seq ~= nil then qrem = qrem - math.max(0, seq - seen_seq) - 1 end
    qrem = math.max(0, qrem)
    lim.q, lim.qu, lim.qc = qrem, now + qreset, qrem / qreset
    lim.t = math.min(lim.t, qrem)
  end
end

-- the delivery windows (aimd._roll_delivery, aimd.delivered)
local function roll_delivery()
  if now < sfrom + DELIVERY_WINDOW then return end
  if now < sfrom + 2 * DELIVERY_WINDOW then
    sbefore, sfrom = served, sfrom + DELIVERY_WINDOW
  else
    sbefore, sfrom = 0, now
  end
  served = 0
end

local old = limits[1].r
local decreased = 0
if op == 'success' then
  roll_delivery()
  served = served + 1
  if now >= cool then
    for _, lim in ipairs(limits) do
      local step = lim.inc  -- near the last ceiling, about inc / 2 per second (aimd.GENTLE)
      if lim.r >= PROBE_FLOOR * lim.p and lim.r < lim.p then
        step = GENTLE * lim.inc / lim.r
      end
      lim.r = math.min(lim.max, lim.r + step)
    end
  end
  if bstate ~= 'open' then bstate, bfail, buntil = 'closed', 0, 0 end
elseif op == 'failure' then
  if bstate ~= 'open' then
    bfail = bfail + 1
    if bstate == 'half_open' or bfail >= b_threshold then bstate, buntil = 'open', now + b_open end
  end
elseif op == 'backoff' then
  count('backoffs')
  local new_event
  if seen_epoch ~= nil then new_event = seen_epoch == epoch else new_event = now >= cool end
  if retry_after ~= nil then retry_after = math.min(math.max(retry_after, 0), max_backoff) end
  if new_event then
    decreased = 1
    roll_delivery()
    local left = math.max(0, 1 - (now - sfrom) / DELIVERY_WINDOW)
    local rate_served = (served + sbefore * left) / DELIVERY_WINDOW
    for i, lim in ipairs(limits) do
      local target = lim.r * lim.dec
      lim.p = lim.r
      if i == 1 and rate_served > 0 then
        lim.p = math.min(lim.r, rate_served)
        target = math.min(lim.r, math.max(target, PROBE_FLOOR * rate_served))
      end
      lim.r = math.max(lim.min, target)
    end
    epoch = math.max(epoch + 1, math.floor(now * 1000000))
    local pause = retry_after
    if pause == nil then pause = math.min(mult / limits[1].r, max_backoff) end
    cool = math.max(cool, now + pause)
    for _, lim in ipairs(limits) do lim.t = 0; lim.s = cool end
    tat = 0
  elseif retry_after ~= nil and now + retry_after > cool then
    cool = now + retry_after
    for _, lim in ipairs(limits) do lim.s = math.max(lim.s, cool) end
  end
else
  return redis.error_reply('unknown op ' .. tostring(op))
end
save()
save_breaker()
local changed = 0
if bstate ~= bbefore then changed = 1 end
return string.format('%d %d %d %d %d %s %d', epoch, decreased, micro(old), micro(limits[1].r),
                     micro(math.max(0, cool - now)), bstate, changed)
