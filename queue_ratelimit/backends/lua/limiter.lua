-- One AIMD token-bucket limiter key: every decision in one round trip.
-- The rules are those of queue_ratelimit/policy/ (aimd.py, quota.py, breaker.py: read their
-- docstrings); tests/unit/test_lua_matches_policy.py checks that both give the same answers.
-- Arguments and state are packed binary (the struct library) and answers are arrays of
-- integers, so no text is formatted or parsed on the hot path; backends/redis.py packs them.
--
-- A decision touches the keys of one limiter key only, under its own hash tag (one Cluster
-- slot per tenant): the integration's breaker lives under the integration's tag, so the
-- caller passes the breaker's state in (its view, read at most a poll interval ago, or the
-- verdict of an ADMIT on the breaker key while it is not closed) and applies a report's
-- breaker outcome with OUTCOME on the breaker key. The usual acquire passes one key (the
-- state), so a slot migration redirects it (ASK) and never answers TRYAGAIN.
--
-- Limiter key ops (ACQUIRE .. COUNT):
-- KEYS[1] state (string): struct '<BB' layout (LAYOUT) and n (limits saved), then doubles,
--         the fields most acquires change first, so that they rewrite just those in place
--         (SETRANGE at offset 2): seq, the arrival schedule's next slot (pacing.py), the
--         key's expiry time, and the first limit's rate, tokens, ts and credit (units
--         refilled so far: a reservation's clock); then epoch, cooldown_until, the first
--         limit's quota_until (0 = no quota) and 's' name, the current delivery slice's
--         start, successes in it and in the three slices before (delivery.delivered) and the
--         ceiling (the most successes counted in a whole window, per second: the usual
--         success rewrites up to here), the first limit's quota_left, quota_rate and peak (the rate
--         at the last decrease; 0 = none); then the key's event counts (EVENTS doubles:
--         requeues, backoffs, budget_exhausted) and 's' the tenant's name when its key name
--         holds only a digest ('' otherwise); then per further limit its 's' name and 8
--         doubles: rate, tokens, ts, quota_left, quota_until, quota_rate, credit, peak. Limits
--         are matched by name, so adding or removing one keeps the others' state; then the
--         log of the successes of the last window, at most LOG ('<B' count, then the times,
--         oldest first; absent in a state written before it: none yet); then per sliding
--         window limit its 's' name, '<H' n and n doubles, the times its units leave the
--         window (policy/sliding.py). A state of another layout starts afresh. The key lives remember_for past its expiry time: an
--         expired state is not used but for what it learned (climb.revive: each peak and the
--         ceiling), by the first write after it, which starts the key afresh from them.
-- KEYS[2] lease zset: lease id -> expiry time (passed, and touched, only with a concurrency
--         limit, for release and snapshot, and for a report that gives a lease back)
--
-- Breaker ops (BREAKER, VIEW, ADMIT, UNPROBE, OUTCOME):
-- KEYS[1] the integration's breaker (string, absent = closed with 0 failures): '<Bdd'
--         state (CLOSED, OPEN, HALF_OPEN), failures, until
-- KEYS[2] (VIEW) the integration's description for the tools (a JSON text, ARGV[2])
-- KEYS[3] (VIEW, optional) the operators' overrides (hash: '' or '=' tenant -> JSON),
--         answered after the view (policy/overrides.py)
--
-- ARGV[1] little-endian binary: '<B' op (ACQUIRE .. SNAPSHOTS), 'd' now in seconds (NaN: the
--         Redis server's TIME, the default; tests pin it), '<Bd' the breaker as the caller
--         passes it to an acquire (state, until: not CLOSED and now < until refuses, not
--         CLOSED and due is the probe an ADMIT granted); the plan: '<B' n, 10 doubles
--         idle_ttl, remember_for, slow_start (0/1), cooldown_multiplier, max_backoff,
--         max_quota_wait, max_concurrent (0 = none), lease_ttl,
--         breaker_threshold, breaker_open_seconds, then per limit its 's' name and 7 doubles
--         rate, burst, min_rate, max_rate, increase, decrease, window (seconds of a fixed
--         window of burst units, aligned to multiples of it: quota.open_window; 0 = a bucket;
--         negative: a sliding window of that many seconds, policy/sliding.py);
--         then the op's numbers, doubles
--         to the end, NaN = none:
--   acquire:  max_wait, reserve (bit 1: reserve; bit 2: a grant answers its tokens left),
--             reservation epoch, reservation slot,
--             cooldown_wait (none = max_wait), max_sleepers (none = no cap),
--             then n costs, then n reservation dues (credit marks; none = use the slot)
--   success, backoff, failure: seq, epoch, retry_after,
--             then per limit: adjustment, published remaining, its reset_after
--   breaker:  open seconds
--   unprobe:  the breaker's state and until before the ADMIT, and the probe's until
--   outcome:  1 for a success, 0 for a failure
-- ARGV[2] (optional) the op's word: the lease id for acquire (with a concurrency limit),
--         the reports and release; "open" or "closed" for breaker; the event's number
--         (1 .. EVENTS) to count; the description for VIEW ('' = leave it)
-- ARGV[3] (optional, acquire) the event's number a refusal counts (the task gate's
--         requeues: it requeues every task refused a slot, and saves a round trip)
-- ARGV[4] (optional) the tenant's name, when its key name holds only its digest
-- ARGV[5] (optional) a chain's integration-wide level's limits ('<B' n, then as the plan's),
--         its key KEYS[3]; ARGV[6] (reports) the level a backoff lowers (1 the key's, 2 the
--         chain's, 3 both); ARGV[7] (acquire) fair share's tenant and weights (open_share)
-- ARGV[8] (optional, acquire) the overrides' version the caller's bounds come from; the
--         last key is then the overrides hash or, for a tenant in a shard's tag, the
--         shard's copy of its version (a hash too: field '#v'), and a later version there
--         answers {STALE}; ARGV[9] (with a copy) the copy's TTL: a copy missing or behind
--         is written with the caller's version (backends/redis_overrides.py tells why)
--
-- Returns arrays of integers; times, rates and tokens in millionths (seconds -> us):
--   acquire:  {reason (OK, REDEEMED and PROBE are grants; a grant with a concurrency limit
--             took the lease), wait, epoch, now, seq}, and for a grant asked for its tokens,
--             each limit's tokens left; with a reservation: its slot,
--             recheck (-1 = wait) and n dues (each element of an answer costs Redis about
--             as much as a line of the rules, so the usual answer is short)
--   success, backoff, failure: {epoch, decreased (0/1), old rate, new rate, cooldown left},
--             and for a backoff that moved a hold past max_backoff on, a 1 (announced once)
--   release, count: {done (0/1)}
--   snapshot: {exists (0/1), now, epoch, cooldown left, live leases, EVENTS counts, the
--             tenant's stored name, then name (a string), rate, tokens per limit}
--   snapshots: one snapshot's answer per key (KEYS: state keys, or with the op's number 2,
--             state and leases key pairs): the tools' read of many keys on one server
--   check:    {exists (0/1), epoch, cooldown left}: whether a grant still holds
--   breaker, view, admit, unprobe, outcome: {state, failures, until, now, changed (0/1;
--             ADMIT: 0 pass, 1 refused, 2 the probe is the caller's), and the state and
--             until before the op}; a VIEW given KEYS[3] then each override's field, value

local ACQUIRE, SUCCESS, BACKOFF, FAILURE, RELEASE, SNAPSHOT, COUNT = 1, 2, 3, 4, 5, 6, 7
local BREAKER, VIEW, ADMIT, UNPROBE, OUTCOME = 8, 9, 10, 11, 12
local SNAPSHOTS = 13  -- SNAPSHOT of many keys in one call (the tools; one server: any slots)
local CHECK = 14  -- whether a grant still holds: the key's epoch and cooldown left
local STALE = -1  -- an acquire's answer: the operators' overrides changed since its caller read them
local OK, REDEEMED, PROBE, RATE, COOLDOWN, CONCURRENCY, BREAKER_OPEN = 0, 1, 2, 3, 4, 5, 6
local EXHAUSTED = 7  -- refused: held past max_backoff by what the upstream stated
local CLOSED, OPEN, HALF_OPEN = 0, 1, 2  -- policy/breaker.py
local LAYOUT = 5  -- the state's first byte
local EVENTS = 3  -- counted per key: requeues, backoffs, budget_exhausted (redis.EVENTS)
local BACKOFFS = 2
local SLACK = 0.000001  -- a wait this small counts as none (float noise, microsecond replies)
local DELIVERY_WINDOW = 1.0  -- delivery.DELIVERY_WINDOW
local MIN_SPAN = DELIVERY_WINDOW / 2  -- delivery.MIN_SPAN
local PROBE_FLOOR, BAND = 0.97, 20.0  -- climb.PROBE_FLOOR, climb.BAND
local NOISE = 0.8  -- climb.NOISE
local SLICES = 3  -- delivery.SLICES: the window is counted in slices, the current one and 3 before
local LOG = 64  -- delivery.LOG: success times kept per key (the window's count is exact up to it)
local START_GROWTH, START_HEADROOM = 1.0, 2.0  -- climb.START_GROWTH, climb.START_HEADROOM
local PACING_TOLERANCE, PACING_SHARE = 0.05, 0.25  -- pacing.TOLERANCE, pacing.SHARE
local FAIR_GRACE = 1.0  -- fair.GRACE: a tenant counts as active this long after its last call
local FAIR_USAGE = 2.0  -- fair.USAGE: seconds over which what light tenants take is averaged
local REFRESH = 0.125  -- an expiry is set idle_ttl * REFRESH beyond what is needed, so most
                       -- writes keep the key's TTL (SETRANGE, SET KEEPTTL) instead of setting
                       -- one; it is set again when it falls short or lies over twice that
                       -- beyond (a debt forgiven or paid: the key is forgotten in time)

local blob = ARGV[1]
local op, now, bstate, buntil, n, idle_ttl, remember, slow, mult, max_backoff, max_quota, max_conc,
  lease_ttl, b_threshold, b_open, at = struct.unpack('<BdBdBdddddddddd', blob)
if op < ACQUIRE or op > CHECK then return redis.error_reply('unknown op ' .. op) end
-- the log of the last LOG success times (delivery.record), as saved at the state's end:
-- '<B' count, then the times, oldest first ('' = none yet); a success appends `at`, and the
-- log keeps those of the last window only (and at most LOG). Made for a success only (a
-- closure costs every call that makes it).
local log_add
if op == SUCCESS then
  log_add = function(log, at)
    local k, drop, pos = 0, 0, 2
    if #log > 0 then k = string.byte(log, 1) end
    while drop < k and struct.unpack('<d', log, pos) <= at - DELIVERY_WINDOW do
      drop, pos = drop + 1, pos + 8
    end
    if k + 1 - drop > LOG then drop = k + 1 - LOG end
    return string.char(k + 1 - drop) .. string.sub(log, 2 + 8 * drop, 1 + 8 * k)
      .. struct.pack('<d', at)
  end
end

if op == ACQUIRE and ARGV[8] and ARGV[8] ~= '' then  -- the overrides' version it was given:
  local held, given = KEYS[#KEYS], tonumber(ARGV[8])  -- (the last key: the hash or a copy)
  local version = tonumber(redis.call('HGET', held, '#v'))
  if ARGV[9] and (not version or version < given) then  -- a copy, none or behind: the caller's
    redis.call('HSET', held, '#v', ARGV[8])
    redis.call('EXPIRE', held, ARGV[9])
  elseif version and version > given then
    return {STALE}  -- changed since the caller read them: it reads them again
  end
end
if now ~= now then
  local t = redis.call('TIME')
  now = t[1] + t[2] / 1000000
end

if op >= BREAKER and op <= OUTCOME then  -- the integration's breaker (policy/breaker.py)
  for _ = 1, n do at = select(9, struct.unpack('<sddddddd', blob, at)) end  -- (the limits)
  local saved = redis.call('GET', KEYS[1])
  local state, failures, until_ = CLOSED, 0, 0
  if saved then state, failures, until_ = struct.unpack('<Bdd', saved) end
  local before, b_until, answer = state, until_, 0
  local word = ARGV[2] or ''
  local write = op ~= VIEW
  if op == VIEW then
    if word ~= '' then
      redis.call('SET', KEYS[2], word, 'PX', math.ceil(math.max(idle_ttl * 2, 86400) * 1000))
    end
  elseif op == BREAKER then  -- an operator's override
    local seconds = struct.unpack('<d', blob, at)
    if word == 'open' then
      state, failures, until_ = OPEN, 0, now + seconds
    else
      state, failures, until_ = CLOSED, 0, 0
    end
  elseif op == ADMIT then
    write = false
    if state ~= CLOSED then
      if now < until_ then
        answer = 1
      else  -- the probe's turn: hold every other call back while it runs
        state, until_, answer, write = HALF_OPEN, now + b_open, 2, true
      end
    end
  elseif op == UNPROBE then  -- the probe was not granted: the breaker as it was, if still so
    local old_state, old_until, probe_until = struct.unpack('<ddd', blob, at)
    write = state == HALF_OPEN and math.abs(until_ - probe_until) < 0.000002  -- (micro-rounded)
    if write then state, until_ = old_state, old_until end
  else  -- OUTCOME
    local success = struct.unpack('<d', blob, at)
    if state ~= OPEN then
      if success == 1 then
        state, failures, until_ = CLOSED, 0, 0
      else
        failures = failures + 1
        if state == HALF_OPEN or failures >= b_threshold then state, until_ = OPEN, now + b_open end
      end
    end
  end
  if write then  -- deleted when closed with no failures counted
    if state == CLOSED and failures == 0 then
      if saved then redis.call('DEL', KEYS[1]) end
    else
      redis.call('SET', KEYS[1], struct.pack('<Bdd', state, failures, until_), 'PX',
                 math.ceil((math.max(0, until_ - now) + idle_ttl) * 1000))
    end
  end
  if op ~= ADMIT and state ~= before then answer = 1 end
  local u, m, bu = until_ * 1000000 + 0.5, now * 1000000 + 0.5, b_until * 1000000 + 0.5
  local out = {state, failures, u - u % 1, m - m % 1, answer, before, bu - bu % 1}
  if op == VIEW and KEYS[3] then  -- the operators' overrides: field (tenant), value pairs
    local held = redis.call('HGETALL', KEYS[3])
    for i = 1, #held do out[7 + i] = held[i] end
  end
  return out
end

if op == COUNT then  -- one more of an event, in the key's state (none: nothing to count)
  local saved = redis.call('GET', KEYS[1])
  if not (saved and string.byte(saved, 1) == LAYOUT) then return {0} end
  local event = tonumber(ARGV[2])
  local pos = select(22, struct.unpack('<xBddddddddddsddddddddd', saved))
  local value = struct.unpack('<d', saved, pos + 8 * (event - 1))
  redis.call('SETRANGE', KEYS[1], pos - 1 + 8 * (event - 1), struct.pack('<d', value + 1))
  return {1}
end

if op == CHECK then  -- {1, epoch, cooldown left} of a live key, {0, 0, 0} of none
  local saved = redis.call('GET', KEYS[1])
  if not (saved and string.byte(saved, 1) == LAYOUT) then return {0, 0, 0} end
  local _, _, expires, _, _, _, _, epoch, cool = struct.unpack('<xxddddddddd', saved)
  if expires < now then return {0, 0, 0} end
  if KEYS[2] then  -- a chain's integration-wide key (its cooldown holds the call too)
    local up = redis.call('GET', KEYS[2])
    if up and string.byte(up, 1) == LAYOUT then
      local _, _, up_expires, _, _, _, _, _, up_cool = struct.unpack('<xxddddddddd', up)
      if up_expires >= now and up_cool > cool then cool = up_cool end
    end
  end
  local left = 0
  if cool > now then left = (cool - now) * 1000000 + 0.5 end
  return {1, epoch, left - left % 1}
end

-- The usual acquire and success report first, decided on locals alone (no tables, no
-- helpers made): one limit, a saved state with no quota, the breaker never tripped; for an
-- acquire no concurrency limit, no reservation held, no cooldown, and the call fits; for a
-- success no lease to give back, no adjustment and no quota published. Anything else falls
-- through to the general rules below, which give the same answer for these cases (the fast
-- path skips what they cannot need; tests/unit/test_lua_fast_path.py compares the two on
-- crafted states). It rewrites in place only the state's hot fields (SETRANGE: the TTL
-- stays), and uses no math.*: each C call costs about as much as ten lines of arithmetic.
local got  -- the saved state, shared with the general rules
local chained = ARGV[5] and ARGV[5] ~= ''  -- a chain: its integration-wide level's limits
if n == 1 and bstate == CLOSED and not chained
   and (op == ACQUIRE and max_conc == 0 or op == SUCCESS and not ARGV[2]) then
  -- the limit, then the op's numbers: acquire's max_wait, reserve, reservation epoch and
  -- slot, cooldown_wait, max_sleepers, cost; success's seq, epoch, retry_after, then the
  -- limit's adjustment, published remaining and reset_after
  -- (one `local` per unpack, with the format chosen by op: assigning a list of locals
  -- declared before costs a move per value; the values past an op's own are unused)
  local name, _, burst, lo, hi, inc, _, _, a1, a2, a3, a4, a5, a6, a7 =
    struct.unpack(op == ACQUIRE and '<sdddddddddddddd' or '<sddddddddddddd', blob, at)
  local usual = a3 ~= a3  -- acquire: no reservation held (NaN)
  if op == SUCCESS then usual = a4 == 0 and not (a5 == a5 and a6 == a6 and a6 > 0) end
  got = redis.call('GET', KEYS[1])
  local saved = got
  local layout, count = 0, 0
  if usual and saved then layout, count = string.byte(saved, 1, 2) end
  if layout == LAYOUT and count == 1 then
    local seq, tat, expires, r, t, ts, c, epoch, cool, qu, sname, sfrom, served, s1, s2, s3, top,
      _, _, pk, _, _, _, _, at_log = struct.unpack(
        op == ACQUIRE and '<xxdddddddddds' or '<xxddddddddddsdddddddddddds', saved)
    local log  -- (a success's: the state's tail, after the tenant's name)
    if sname == name and qu == 0 and lo > 0 and expires >= now then  -- (expired: revive)
      if r < lo then r = lo end
      if r > hi then r = hi end
      if now > ts then
        local before = t
        t = t + (now - ts) * r
        if t > burst then t = burst end
        if t > before then c = c + (t - before) end
        ts = now
      end
      local answer
      if op == SUCCESS then
        local width = DELIVERY_WINDOW / SLICES
        if now >= sfrom + width then  -- delivery.roll
          local steps = (now - sfrom) / width
          steps = steps - steps % 1
          if steps > SLICES then
            sfrom, served, s1, s2, s3 = now, 0, 0, 0, 0
          else
            for _ = 1, steps do
              local whole = (served + s1 + s2) / DELIVERY_WINDOW  -- the window it completes
              if whole > top then top = whole end
              served, s1, s2, s3 = 0, served, s1, s2
            end
            sfrom = sfrom + steps * width
          end
        end
        served = served + 1
        log = log_add(string.sub(saved, at_log), now)
        local old = r
        if now >= cool and slow == 1 and pk == 0 and inc > 0 then  -- the start phase
          local count = string.byte(log, 1)  -- (all within the window: just pruned)
          if count >= LOG or count < served + s1 + s2 then  -- (delivered_count)
            local left = 1 - (now - sfrom) / width
            if left < 0 then left = 0 end
            local estimate = served + s1 + s2 + s3 * left
            if estimate > count then count = estimate end
          end
          local span = now - epoch / 1000000  -- a young key counts over its age (delivered)
          if span < MIN_SPAN then span = MIN_SPAN end
          if span > DELIVERY_WINDOW then span = DELIVERY_WINDOW end
          local cap = START_HEADROOM * count / span
          local step = inc
          if step < START_GROWTH then step = START_GROWTH end
          local grown = r + step
          if grown > cap then grown = cap end
          if grown > r then r = grown end
          if r > hi then r = hi end
        elseif now >= cool then
          local step = inc  -- just below the last ceiling, as time allows (climb.probe_step)
          if pk > 0 and r >= PROBE_FLOOR * pk and r < pk then
            local part = (now - epoch / 1000000) / BAND
            if part > 1 then part = 1 end
            local lift = pk * (PROBE_FLOOR + (1 - PROBE_FLOOR) * part) - r
            if lift < 0 then lift = 0 end
            if lift < step then step = lift end
          end
          r = r + step
          if r > hi then r = hi end
        end
        local o, m, left = old * 1000000 + 0.5, r * 1000000 + 0.5, 0
        if cool > now then left = (cool - now) * 1000000 + 0.5 end
        answer = {epoch, 0, o - o % 1, m - m % 1, left - left % 1}
      elseif cool <= now then
        local max_wait, sleepers, cost = a1, a6, a7
        local slot = now
        if cost > 0 and cost > t then
          slot = ts
          if slot < now then slot = now end
          slot = slot + (cost - t) / r
        end
        local wait = slot - now
        local in_line = max_wait + SLACK
        if sleepers == sleepers then
          local places = sleepers / r + SLACK
          if places < in_line then in_line = places end
        end
        local fits = wait <= in_line
        local steady = fits and cost > 0  -- pacing, past the start phase (the acquire's unpack
        if steady and slow == 1 and inc > 0 then  -- stopped at the name: sfrom holds where it
          steady = struct.unpack('<d', saved, sfrom + 64) > 0  -- ends; the peak is 8 on)
        end
        if steady then  -- (pacing.earliest: later, within max_wait)
          local ahead = burst - cost
          if ahead < 0 then ahead = 0 end
          local tol = PACING_SHARE / r  -- (pacing.tolerance)
          if tol > PACING_TOLERANCE then tol = PACING_TOLERANCE end
          local due = tat - ahead / r - tol
          if due > slot then
            local held = now + (max_wait + SLACK)
            if due < held then held = due end
            if held > slot then slot, wait = held, held - now end
          end
        end
        if fits then
          seq, t = seq + 1, t - cost
          if cost > 0 then
            if tat < slot then tat = slot end
            tat = tat + cost / r
          end
          local w, m = wait * 1000000 + 0.5, now * 1000000 + 0.5
          answer = {OK, w - w % 1, epoch, m - m % 1, seq}
          if a2 >= 2 then  -- the tokens left, asked for (an inbound limiter's RateLimit)
            local k = t * 1000000 + 0.5
            answer[6] = k - k % 1
          end
        end
      end
      if answer then  -- the key lives idle_ttl past its cooldown, schedule and debt
        local busy = 0
        if cool - now > busy then busy = cool - now end
        if tat - now > busy then busy = tat - now end
        local debt = -t / r
        if debt > 0 then
          if ts > now then debt = debt + (ts - now) end
          if debt > busy then busy = debt end
        elseif ts - now > busy then
          busy = ts - now
        end
        local need = now + busy + idle_ttl  -- kept while within [need, need + 2 REFRESH]
        local keep = expires >= need and expires <= need + idle_ttl * 2 * REFRESH
        if not keep then expires = now + busy + idle_ttl * (1 + REFRESH) end
        local hot  -- what changed, from offset 2: an acquire's first 7 doubles, a success's
        if op == ACQUIRE then  -- up to its delivery counts (the name is written unchanged)
          hot = struct.pack('<ddddddd', seq, tat, expires, r, t, ts, c)
        else
          hot = struct.pack('<ddddddddddsdddddd', seq, tat, expires, r, t, ts, c, epoch, cool, qu,
                            sname, sfrom, served, s1, s2, s3, top)
        end
        if log then  -- a success's log too, in the same write (each costs as much as a rule)
          hot = hot .. string.sub(saved, 3 + #hot, at_log - 1) .. log
          if #log ~= #saved - at_log + 1 then  -- its length changed: the whole (SETRANGE
            redis.call('SET', KEYS[1], string.sub(saved, 1, 2) .. hot, 'KEEPTTL')  -- can not
            hot = nil  -- shorten a string, and lengthening one allocates it twice over)
          end
        end
        if hot then redis.call('SETRANGE', KEYS[1], '2', hot) end
        if not keep then
          redis.call('PEXPIRE', KEYS[1], math.ceil((expires - now + remember) * 1000))
        end
        return answer
      end
    end
  end
end

-- The general rules. Their helpers come first, made only when the fast path above did not
-- answer (every closure is created anew on each call), and are functions of their arguments
-- only (the hot ones also of the math functions just below): a closure over the script's
-- many locals costs more to create than most of these cost to run. Loops are numeric
-- (ipairs costs a function call per element). The fast path above uses no math.* at all:
-- each C call costs Redis about as much as ten lines of plain arithmetic.
local max, min, floor, ceil = math.max, math.min, math.floor, math.ceil
local function micro(x)
  local m = x * 1000000 + 0.5
  return m - m % 1  -- floor(m), without a C call
end

-- the rate a bucket refills at: its AIMD rate, capped by a published quota's pace (quota.py)
local function refill_rate(lim)
  if lim.q and lim.s < lim.qu then return min(lim.r, lim.qc) end
  return lim.r
end

-- how far a call may run ahead of the arrival schedule at `pace` (pacing.tolerance)
local function pacing_tolerance(pace)
  if pace > 0 then return min(PACING_TOLERANCE, PACING_SHARE / pace) end
  return PACING_TOLERANCE
end

local function quota_active(lim, now) return lim.q and now < lim.qu end

local function pay(limits, now)
  for i = 1, #limits do
    local lim = limits[i]
    if not lim.lv then  -- (a sliding window's units are taken at the slot, when granted)
      lim.t = lim.t - lim.cost
      if quota_active(lim, now) then lim.q = lim.q - lim.cost end
    end
  end
end

-- a reservation's slot at the current rates, never later than promised (admission._pulled)
local function pulled(kept_slot, dues, limits, now)
  if #dues < #limits then return kept_slot end
  local slot = now
  for i = 1, #limits do
    local lim = limits[i]
    local left = dues[i] - lim.c
    if left > 0 then
      if lim.q then return kept_slot end
      slot = math.max(slot, math.max(lim.s, now) + left / lim.r)
    end
  end
  return math.min(kept_slot, slot)
end

-- seconds to refill `units` from `rate` when each unit raises it by `inc` (climb.climb_time)
local function climb_time(units, rate, inc, max_rate)
  if inc <= 0 or rate >= max_rate then return units / rate end
  local cap_units = (max_rate - rate) / inc
  if units <= cap_units then return math.log(1 + units * inc / rate) / inc end
  return math.log(max_rate / rate) / inc + (units - cap_units) / max_rate
end

-- when a reservation's holder should come back (admission._recheck), the rate growing by `growth`
local function recheck_of(dues, wait, limits, now, cool, growth)
  if #dues < #limits then return wait end
  local start = math.max(now, cool)
  local back = start - now
  for i = 1, #limits do
    local lim = limits[i]
    local left = dues[i] - lim.c
    if left > 0 then
      if lim.q then return wait end
      local inc = 0
      if i == 1 then inc = growth end
      back = math.max(back, math.max(lim.s, start) - now + climb_time(left, lim.r, inc, lim.max))
    end
  end
  return math.min(wait, back)
end

-- the limit of `limits` named `name`, or nil (a saved limit the config no longer has)
local function find(limits, name)
  for i = 1, #limits do
    if limits[i].name == name then return limits[i] end
  end
end

-- a saved limit's state into its limit (none: it starts afresh); qu 0 = no quota
local function restore(lim, r, t, ts, c, q, qu, qc, pk)
  if not lim then return end
  lim.r, lim.t, lim.s, lim.c, lim.p = r, t, ts, c, pk
  if qu ~= 0 then lim.q, lim.qu, lim.qc = q, qu, qc end
end

-- doubles from `at` to the end of `blob`, NaN read as false (none)
local function numbers(blob, at)
  local count = (#blob - at + 1) / 8
  if count <= 0 then return {} end
  local A = {struct.unpack('<' .. string.rep('d', count), blob, at)}
  A[count + 1] = nil  -- struct.unpack's last value is the position after the data
  for i = 1, count do
    if A[i] ~= A[i] then A[i] = false end
  end
  return A
end

-- the delivery slices (delivery.roll): the current slice's start, successes in it and in
-- the three before, and the ceiling, raised by each whole window a slice completes
local function roll_delivery(now, from, served, s1, s2, s3, top)
  local width = DELIVERY_WINDOW / SLICES
  if now < from + width then return from, served, s1, s2, s3, top end
  local steps = floor((now - from) / width)
  if steps > SLICES then return now, 0, 0, 0, 0, top end
  for _ = 1, steps do
    top = max(top, (served + s1 + s2) / DELIVERY_WINDOW)
    served, s1, s2, s3 = 0, served, s1, s2
  end
  return from + steps * width, served, s1, s2, s3, top
end

-- each limit of a plan (`count` limits from `from` in `src`: the blob, or ARGV[5] for a
-- chain's integration-wide level) with the state of a fresh key; a saved state replaces it
-- (load); returns them and where the plan's limits end
local function fresh(src, from, count)
  local limits = {}
  for i = 1, count do
    local name, rate, burst, lo, hi, inc, dec, win
    name, rate, burst, lo, hi, inc, dec, win, from = struct.unpack('<sddddddd', src, from)
    limits[i] = {name = name, burst = burst, min = lo, max = hi, inc = inc, dec = dec, cost = 0,
                 win = win, r = rate, t = burst, s = now, q = false, qu = 0, qc = 0, c = 0, p = 0}
    if win < 0 then limits[i].lv = '' end  -- a sliding window: the times its units leave it
  end
  return limits, from
end

-- A sliding window (policy/sliding.py): `lim.lv` holds the times its units leave the window
-- (granted at t: t - win, win < 0), in order, 8 bytes each. How many leave by `at`
-- (bisect_right):
local function slide_gone(lv, at)
  local lo, hi = 0, #lv / 8
  while lo < hi do
    local mid = floor((lo + hi) / 2)
    if struct.unpack('<d', lv, 8 * mid + 1) <= at then lo = mid + 1 else hi = mid end
  end
  return lo
end

-- the earliest time from now on at which `cost` units fit the window (sliding.slot): no
-- earlier than the last grant, and once enough units left it
local function slide_slot(lim, cost)
  local lv = lim.lv
  local n = #lv / 8
  local start = now
  if n > 0 then start = max(now, struct.unpack('<d', lv, 8 * n - 7) + lim.win) end
  local first = slide_gone(lv, start)
  local over = n - first + min(cost, lim.burst) - lim.burst
  if over <= 0 then return start end
  return (struct.unpack('<d', lv, 8 * (first + over - 1) + 1))
end

-- units the window holds free at `at` (sliding.left)
local function slide_left(lim, at)
  return lim.burst - (#lim.lv / 8 - slide_gone(lim.lv, at))
end

-- the latest slot the call's sliding windows allow (admission._slid; now without any)
local function slid(limits)
  local slot = now
  for i = 1, #limits do
    local lim = limits[i]
    if lim.lv and lim.cost > 0 then slot = max(slot, slide_slot(lim, lim.cost)) end
  end
  return slot
end

-- a saved state (of this LAYOUT) into `limits`; returns the key's other fields: seq, tat,
-- expires, epoch, cooldown until, the delivery windows and ceiling, EVENTS counts, the
-- tenant's name, the success log
local function load(saved, limits)
  local groups, seq, tat, expires, r, t, ts, c, epoch, cool, qu, name, sfrom, served, s1, s2, s3,
    top, q, qc, pk, c1, c2, c3, tname, pos = struct.unpack('<xBddddddddddsdddddddddddds', saved)
  restore(find(limits, name), r, t, ts, c, q, qu, qc, pk)
  for _ = 2, groups do
    name, r, t, ts, q, qu, qc, c, pk, pos = struct.unpack('<sdddddddd', saved, pos)
    restore(find(limits, name), r, t, ts, c, q, qu, qc, pk)
  end
  local log = ''
  if pos <= #saved then  -- the success log, then each sliding window's units
    local k = string.byte(saved, pos)
    log, pos = string.sub(saved, pos, pos + 8 * k), pos + 1 + 8 * k
  end
  while pos < #saved do
    local units
    name, units, pos = struct.unpack('<sH', saved, pos)
    local lim = find(limits, name)
    if lim and lim.lv then lim.lv = string.sub(saved, pos, pos + 8 * units - 1) end
    pos = pos + 8 * units
  end
  return seq, tat, expires, epoch, cool, sfrom, served, s1, s2, s3, top, {c1, c2, c3}, tname, log
end

-- an expired key's learned rates into `limits`, fresh otherwise (climb.revive): each limit at
-- PROBE_FLOOR of its peak (kept as its peak), else the first at the ceiling when above its
-- start
local function revive(saved, limits, src, from)
  local learned = fresh(src, from, #limits)
  local top = select(11, load(saved, learned))
  for i = 1, #limits do
    local lim, was = limits[i], learned[i]
    local peak = was.p
    if peak > 0 then
      lim.r, lim.p = PROBE_FLOOR * peak, peak
    elseif i == 1 and top > lim.r then
      lim.r = top
    end
  end
  return top
end

-- every bucket brought to `now`: clamp the rate, refill, expire the quota (whether the
-- first limit's expired: the arrival schedule was laid at its pace)
local function bring(limits)
  local expired = false
  for i = 1, #limits do
    local lim = limits[i]
    lim.r = min(max(lim.r, lim.min), lim.max)
    if now > lim.s then
      local before = lim.t
      lim.t = min(lim.burst, lim.t + (now - lim.s) * refill_rate(lim))
      lim.c = lim.c + max(0, lim.t - before)
      lim.s = now
    end
    if lim.win > 0 and lim.q and now >= lim.qu then  -- the next window, less what it owes
      local owed = min(0, lim.q)  -- (calls paid ahead of it: granted to wait for it)
      lim.q, lim.qu, lim.qc = lim.burst + owed, (floor(now / lim.win) + 1) * lim.win, 0
      lim.t, lim.s = lim.burst + owed, now
    end
    if lim.q and now >= lim.qu then
      lim.q, lim.qu, lim.qc, expired = false, 0, 0, expired or i == 1
    end
    if lim.win > 0 and not lim.q then  -- a fixed window's turn (quota.open_window)
      lim.q, lim.qu, lim.qc = lim.burst, (floor(now / lim.win) + 1) * lim.win, 0
      lim.t, lim.s = lim.burst, now
    end
    if lim.lv then  -- the units that left the window (sliding.prune)
      local gone = slide_gone(lim.lv, now)
      if gone > 0 then lim.lv = string.sub(lim.lv, 8 * gone + 1) end
    end
  end
  return expired
end

-- a snapshot's answer for a key that exists (its leases counted on `leases_key`, if any)
local function snapshot_of(limits, epoch, cool, leases_key, counts, tname)
  local leases = 0
  if leases_key then
    leases = redis.call('ZCOUNT', leases_key, '(' .. string.format('%.17g', now), '+inf')
  end
  local out = {1, micro(now), epoch, micro(max(0, cool - now)), leases, counts[1], counts[2],
               counts[3], tname}
  for i = 1, #limits do
    local lim = limits[i]
    out[#out + 1] = lim.name
    out[#out + 1] = micro(lim.r)
    if lim.lv then out[#out + 1] = micro(slide_left(lim, now)) else out[#out + 1] = micro(lim.t) end
  end
  return out
end

-- a level of the decision: one limiter key's state (`saved`, under `key`), read into a table
-- and brought to `now`; an expired state keeps only what it learned (climb.revive)
local function blank_level(key, limits, top)  -- a level with no state saved (or expired)
  return {key = key, limits = limits, exists = false, seq = 0, tat = 0, expires = 0, epoch = 0,
          cool = 0, sfrom = 0, served = 0, s1 = 0, s2 = 0, s3 = 0, top = top,
          counts = {0, 0, 0}, tname = '', log = ''}
end

local function open_level(key, saved, src, from, count, level_slow)
  local L = blank_level(key, fresh(src, from, count), 0)
  if saved and string.byte(saved, 1) == LAYOUT then
    L.seq, L.tat, L.expires, L.epoch, L.cool, L.sfrom, L.served, L.s1, L.s2, L.s3, L.top,
      L.counts, L.tname, L.log = load(saved, L.limits)
    L.exists = L.expires >= now
    if not L.exists then  -- expired: what it learned is kept remember_for
      local limits = fresh(src, from, count)
      local top = 0
      if now < L.expires + remember then top = revive(saved, limits, src, from) end
      L = blank_level(key, limits, top)
    end
  end
  if not L.exists then L.epoch = floor(now * 1000000) end
  L.slow = level_slow  -- its start phase (the chain's level: its own setting)
  if bring(L.limits) and L.tat > now then L.tat = now end  -- (laid at the quota's pace)
  return L
end

-- the earliest time from `slot` on at which every bucket of `limits` holds its cost
local function bucket_slot(limits, slot)
  for i = 1, #limits do
    local lim = limits[i]
    if lim.cost > 0 and lim.lv then
      slot = max(slot, slide_slot(lim, lim.cost))
    elseif lim.cost > 0 then
      local pace = refill_rate(lim)
      if lim.cost > lim.t and pace <= 0 then  -- the quota's end; a window owed more than its
        local later = 0  -- end brings back: the window that pays (quota.window_slot)
        if lim.win > 0 then
          later = max(0, ceil((lim.cost - lim.t - lim.burst) / lim.burst - 0.000000001))
        end
        slot = max(slot, lim.qu + later * lim.win)
      elseif lim.cost > lim.t then
        slot = max(slot, max(lim.s, now) + (lim.cost - lim.t) / pace)
      end
      if quota_active(lim, now) and lim.q < lim.cost then slot = max(slot, lim.qu) end
    end
  end
  return slot
end

-- a spent published quota holds `limits` past max_backoff (a refusal is then `exhausted`)
local function quota_held(limits)
  for i = 1, #limits do
    local lim = limits[i]
    if lim.lv then  -- a sliding window the calls before it filled
      if lim.cost > 0 and slide_slot(lim, lim.cost) - now > max_backoff then return true end
    elseif quota_active(lim, now) and lim.q < lim.cost and lim.qu - now > max_backoff then
      return true
    end
  end
  return false
end

-- successes in the log after `since` (delivery.delivered): those from the first after it on
-- (the log is in time order), and whether the log is full with all of them within (it may
-- not reach back that far: the slices' estimate then)
local function log_count(log, since)
  local k, pos = 0, 2
  if #log > 0 then k = string.byte(log, 1) end
  for i = 1, k do
    if struct.unpack('<d', log, pos) > since then return k - i + 1, i == 1 and k >= LOG end
    pos = pos + 8
  end
  return 0, false
end

-- successes over the last window (delivery.delivered): the log's count while it reaches
-- back that far and holds at least the slices certainly within it, else the slices'
-- estimate (after roll_delivery)
local function delivered_count(L)
  local count, full = log_count(L.log, now - DELIVERY_WINDOW)
  local recent = L.served + L.s1 + L.s2  -- all within the window: a log holding fewer misses
  if not full and count >= recent then return count end  -- some (saved by an earlier build)
  local left = max(0, 1 - (now - L.sfrom) / (DELIVERY_WINDOW / SLICES))
  return max(count, recent + L.s3 * left)  -- (the log's: so many at least)
end

-- a success: count the delivery, then the start phase's climb or the additive increase
local function succeed(L)
  L.sfrom, L.served, L.s1, L.s2, L.s3, L.top =
    roll_delivery(now, L.sfrom, L.served, L.s1, L.s2, L.s3, L.top)
  L.served = L.served + 1
  L.log = log_add(L.log, now)
  local limits = L.limits
  local first = limits[1]
  if now >= L.cool and L.slow == 1 and first.p == 0 and first.inc > 0 then  -- the start phase
    local span = min(DELIVERY_WINDOW, max(MIN_SPAN, now - L.epoch / 1000000))  -- a young key
    local cap = START_HEADROOM * delivered_count(L) / span
    local was = first.r
    first.r = min(first.max, max(was, min(was + max(first.inc, START_GROWTH), cap)))
    for i = 2, #limits do  -- further limits grow by the same factor
      local lim = limits[i]
      if lim.inc > 0 then lim.r = min(lim.max, lim.r * first.r / was) end
    end
  elseif now >= L.cool then
    for i = 1, #limits do
      local lim = limits[i]
      local step = lim.inc  -- just below the last ceiling, as time allows (climb.probe_step)
      if lim.p > 0 and lim.r >= PROBE_FLOOR * lim.p and lim.r < lim.p then
        local part = min(1, (now - L.epoch / 1000000) / BAND)
        step = min(step, max(0, lim.p * (PROBE_FLOOR + (1 - PROBE_FLOOR) * part) - lim.r))
      end
      lim.r = min(lim.max, lim.r + step)
    end
  end
end

-- a backoff: decrease once per congestion event (`seen_epoch`, or none: no cooldown running),
-- and a cooldown (`retry_after`: stated, already clamped); returns 1 when it decreased
local function back_off(L, seen_epoch, retry_after)
  local limits = L.limits
  local new_event
  if seen_epoch then new_event = seen_epoch == L.epoch else new_event = now >= L.cool end
  if new_event then
    local overshot = L.slow == 1 and limits[1].p == 0 and limits[1].inc > 0  -- climb.starting
    L.sfrom, L.served, L.s1, L.s2, L.s3, L.top =
      roll_delivery(now, L.sfrom, L.served, L.s1, L.s2, L.s3, L.top)
    local rate_served = delivered_count(L) / DELIVERY_WINDOW
    if NOISE * L.top <= rate_served and rate_served < L.top then rate_served = L.top end
    for i = 1, #limits do
      local lim = limits[i]
      local target = lim.r * lim.dec
      lim.p = lim.r
      if i == 1 and rate_served > 0 then
        lim.p = min(lim.r, rate_served)
        target = min(lim.r, max(target, PROBE_FLOOR * rate_served))
        if overshot then target = PROBE_FLOOR * lim.p end
        L.top = min(L.top, lim.p)  -- served since: learned anew
      end
      lim.r = max(lim.min, target)
    end
    L.epoch = max(L.epoch + 1, floor(now * 1000000))
    local pause = retry_after
    if not pause then pause = min(mult / limits[1].r, max_backoff) end
    L.cool = max(L.cool, now + pause)
    for i = 1, #limits do  -- (a fixed window's allowance is not the upstream's to cut)
      if limits[i].win == 0 then limits[i].t = 0; limits[i].s = L.cool end
    end
    L.tat = 0
    return 1
  elseif retry_after and now + retry_after > L.cool then
    L.cool = now + retry_after
    for i = 1, #limits do limits[i].s = max(limits[i].s, L.cool) end
  end
  return 0
end

-- write a level back: it lives idle_ttl past its last cooldown and debt, past `expires`,
-- which moves only when that falls beyond it (most writes keep the TTL as it is)
local function save_level(L)
  local limits = L.limits
  local busy = max(0, L.cool - now, L.tat - now)
  local slides = {}  -- each sliding window's units, saved after the success log
  for i = 1, #limits do
    local lim = limits[i]
    busy = max(busy, max(0, lim.s - now) + max(0, -lim.t) / lim.r)
    if lim.q and lim.qc == 0 then busy = max(busy, lim.qu - now) end  -- a window runs: kept
    if lim.lv and #lim.lv > 0 then  -- until its last unit leaves it
      busy = max(busy, struct.unpack('<d', lim.lv, #lim.lv - 7) - now)
      slides[#slides + 1] = struct.pack('<sH', lim.name, #lim.lv / 8) .. lim.lv
    end
  end
  local need = now + busy + idle_ttl  -- (a debt forgiven or paid moves it back)
  local keep = L.exists and L.expires >= need and L.expires <= need + idle_ttl * 2 * REFRESH
  if not keep then L.expires = now + busy + idle_ttl * (1 + REFRESH) end
  local first, counts = limits[1], L.counts
  local state = struct.pack('<BBddddddddddsdddddddddddds', LAYOUT, #limits, L.seq, L.tat,
                            L.expires, first.r, first.t, first.s, first.c, L.epoch, L.cool,
                            first.qu, first.name, L.sfrom, L.served, L.s1, L.s2, L.s3, L.top,
                            first.q or 0, first.qc, first.p, counts[1], counts[2], counts[3],
                            L.tname)
  if #limits > 1 then
    local parts = {state}
    for i = 2, #limits do
      local lim = limits[i]
      parts[i] = struct.pack('<sdddddddd', lim.name, lim.r, lim.t, lim.s, lim.q or 0, lim.qu,
                             lim.qc, lim.c, lim.p)
    end
    state = table.concat(parts)
  end
  state = state .. L.log
  if #slides > 0 then
    if L.log == '' then state = state .. string.char(0) end  -- (an empty success log)
    state = state .. table.concat(slides)
  end
  if keep then
    redis.call('SET', L.key, state, 'KEEPTTL')
  else
    redis.call('SET', L.key, state, 'PX', ceil((L.expires - now + remember) * 1000))
  end
end

-- fair share (policy/fair.py): a chained tenant's share of the integration-wide level (C),
-- by weight among the tenants active now: KEYS[4] the share buckets (a hash: tenant ->
-- '<dddd' tokens, ts, credit, and the place its last due holder sent back was told, 0:
-- none (fair.tell); '<ddd' as written before: none), KEYS[5] when each tenant stays
-- active (a zset: tenant -> the end of its booked share, or its last call); ARGV[7] the
-- tenant '<sd' (member, weight), then '<d' the count of weighted tenants and each '<sd'
-- (member, weight)
local function open_share(C, cost)
  local member, weight, pos = struct.unpack('<sd', ARGV[7])
  local count
  count, pos = struct.unpack('<d', ARGV[7], pos)
  local last = tonumber(redis.call('ZSCORE', KEYS[5], member))
  if not last or last < now then redis.call('ZADD', KEYS[5], string.format('%.17g', now), member) end
  local since = string.format('%.17g', now - FAIR_GRACE)
  local total = redis.call('ZCOUNT', KEYS[5], since, '+inf') + weight - 1
  for _ = 1, count do
    local other, w
    other, w, pos = struct.unpack('<sd', ARGV[7], pos)
    if other ~= member then
      local seen = tonumber(redis.call('ZSCORE', KEYS[5], other))
      if seen and seen >= now - FAIR_GRACE then total = total + w - 1 end
    end
  end
  local up = C.limits[1]
  local pace = refill_rate(up)
  if pace <= 0 then pace = up.r end  -- a window's (its nominal rate)
  local used, used_at = 0, now  -- what the tenants using less than their share take, per s
  local kept = redis.call('HGET', KEYS[4], '%u')
  if kept then used, used_at = struct.unpack('<dd', kept) end
  used = used * math.exp(-(now - used_at) / FAIR_USAGE)
  local rate = max(pace - used, pace / (total + 1)) * weight / total
  local F = {member = member, weight = weight, total = total, r = rate, min = rate, max = rate,
             used = used, spent = false,
             burst = max(1, up.burst * weight / total), t = 0, s = now, c = 0, cost = cost,
             q = false, qu = 0, qc = 0, win = 0}
  F.t = F.burst
  local saved = redis.call('HGET', KEYS[4], member)
  F.full = now  -- since when its share has been full (unused): a full one keeps its ts
  F.told = 0
  if saved then F.t, F.s, F.c = struct.unpack('<ddd', saved) end
  if saved and #saved >= 32 then F.told = struct.unpack('<d', saved, 25) end
  if F.t >= F.burst then
    F.t, F.full = F.burst, F.s
  elseif now > F.s then
    local before = F.t
    F.full = F.s + (F.burst - before) / rate
    F.t = min(F.burst, F.t + (now - F.s) * rate)
    F.c = F.c + max(0, F.t - before)
    F.s = now
    if F.full < now then F.s = F.full end  -- (full since then: its ts says so)
  end
  -- what the others' shares keep in the level's bucket: beyond it, this tenant borrows
  F.borrow = up.t - up.cost >= up.burst * (total - weight) / total
  return F
end

-- the share bucket written back; its tenant active until its booked share is served, and
-- the tenants idle past idle_ttl forgotten (their keys expire alike)
local function save_share(F)
  local told = F.told
  if told <= now then told = 0 end
  redis.call('HSET', KEYS[4], F.member, struct.pack('<dddd', F.t, F.s, F.c, told))
  local until_ = max(now, F.s + max(0, -F.t) / F.r)
  if F.t >= 0 and now - F.full > F.cost / F.r then  -- it used less than its share: it
    until_ = now - FAIR_GRACE - 0.000001  -- takes what it needs, and counts in no one's
    if F.spent then  -- (but in what the others share)
      redis.call('HSET', KEYS[4], '%u', struct.pack('<dd', F.used + F.cost / FAIR_USAGE, now))
    end
  end
  redis.call('ZADD', KEYS[5], string.format('%.17g', until_), F.member)
  local old = redis.call('ZRANGEBYSCORE', KEYS[5], '-inf', string.format('%.17g', now - idle_ttl),
                         'LIMIT', 0, 100)
  if #old > 0 then
    redis.call('ZREM', KEYS[5], unpack(old))
    redis.call('HDEL', KEYS[4], unpack(old))
  end
  local ttl = ceil(max(idle_ttl, until_ - now + idle_ttl) * 1000)
  for k = 4, 5 do  -- set when it has none, else only moved later (another's booking)
    redis.call('PEXPIRE', KEYS[k], ttl, 'NX')
    redis.call('PEXPIRE', KEYS[k], ttl, 'GT')
  end
end

local plan_at = at
at = select(2, fresh(blob, plan_at, n))
local A  -- the op's numbers (false: none); acquire reads its own where it uses them
if op ~= ACQUIRE then A = numbers(blob, at) end
local word = ARGV[2] or ''

if op == RELEASE then
  return {redis.call('ZREM', KEYS[2], word)}
end

if op == SNAPSHOTS then  -- KEYS: state keys, or (A[1] = 2) state and leases key pairs
  local per, all = A[1] or 1, {}
  for k = 1, #KEYS, per do
    local saved = redis.call('GET', KEYS[k])
    local keyed, expires, epoch, cool, counts, tname = fresh(blob, plan_at, n), -1, 0, 0, nil, ''
    if saved and string.byte(saved, 1) == LAYOUT then
      local x = {load(saved, keyed)}
      expires, epoch, cool, counts, tname = x[3], x[4], x[5], x[12], x[13]
    end
    if expires >= now then  -- (an expired key is only remembered)
      bring(keyed)
      all[#all + 1] = snapshot_of(keyed, epoch, cool, per == 2 and KEYS[k + 1], counts, tname)
    else
      all[#all + 1] = {0, micro(now)}
    end
  end
  return all
end

-- the call's key, and with a chain (ARGV[5]: the integration-wide level's limits) the
-- integration-wide key (KEYS[3]): both loaded and brought to `now`
if got == nil then got = redis.call('GET', KEYS[1]) end
local K = open_level(KEYS[1], got, blob, plan_at, n, slow)
local C  -- the chain's integration-wide level, if any
if chained then
  local count, app_slow = struct.unpack('<BB', ARGV[5])  -- its limits, its start phase
  C = open_level(KEYS[3], redis.call('GET', KEYS[3]), ARGV[5], 3, count, app_slow)
end
if ARGV[4] and ARGV[4] ~= '' then K.tname = ARGV[4] end
if op == SNAPSHOT then
  if not K.exists then return {0, micro(now)} end
  return snapshot_of(K.limits, K.epoch, K.cool, KEYS[2], K.counts, K.tname)
end

local limits = K.limits
local out  -- the acquire's answer
local old, decreased, held = limits[1].r, 0, nil  -- the reports' answer
local touched = false  -- the chain's level changed: written back
if op == ACQUIRE then
  local max_wait, reserve, res_epoch, res_slot, cooldown_wait, sleepers
  max_wait, reserve, res_epoch, res_slot, cooldown_wait, sleepers, at =
    struct.unpack('<dddddd', blob, at)
  local tokens_wanted = reserve >= 2  -- reserve's second bit: a grant answers its tokens
  max_wait, reserve = max_wait + SLACK, reserve % 2 == 1
  if res_epoch ~= res_epoch then res_epoch = false end  -- NaN: none
  if cooldown_wait ~= cooldown_wait then cooldown_wait = false end
  if sleepers ~= sleepers then sleepers = false end
  for i = 1, n do limits[i].cost, at = struct.unpack('<d', blob, at) end
  local dues = {}  -- a reservation's dues (and its share's, fair share); none: its slot
  while at <= #blob do dues[#dues + 1], at = struct.unpack('<d', blob, at) end
  local cool = K.cool  -- the cooldown the call waits for: the chain's levels' latest
  local chain_slot = now  -- the earliest the chain's level pays the call (it reserves nothing)
  if C then
    for i = 1, #C.limits do  -- charged as the call's limit of its name, else as requests
      local lim = C.limits[i]
      lim.cost = limits[1].cost
      local own = find(limits, lim.name)
      if own then lim.cost = own.cost end
    end
    if C.cool > cool then cool = C.cool end
    chain_slot = bucket_slot(C.limits, max(now, C.cool))
    -- and in the order granted: a call another level holds back took this level's token
    -- when granted, not at its slot, so this level's slots follow its schedule (chain.py)
    local up, cpace = C.limits[1], refill_rate(C.limits[1])
    if up.cost > 0 and cpace > 0 then
      chain_slot = max(chain_slot, C.tat - max(0, up.burst - up.cost) / cpace)
    end
  end
  local F  -- fair share: the tenant's share bucket, unless it borrows what others leave
  if C and ARGV[7] and ARGV[7] ~= '' then F = open_share(C, C.limits[1].cost) end
  local share_slot = now
  if F and not F.borrow then share_slot = bucket_slot({F}, now) end
  local redeeming = res_epoch and res_epoch == K.epoch
  local kept = 0
  if redeeming then kept = res_slot end
  local wait, reason, slot_out, recheck, dues_out = 0, RATE, 0, nil, nil
  local granted_at = now  -- a grant's slot
  repeat  -- once; each outcome breaks out to the one save and answer below
    local probe = false
    if bstate ~= CLOSED then
      if now < buntil then
        wait, reason, slot_out, dues_out = buntil - now, BREAKER_OPEN, kept, dues
        break
      end
      probe = true
    end
    local slot
    local late = false
    if redeeming then
      local due_at = pulled(res_slot, dues, limits, now)
      slot = max(due_at, cool, now, chain_slot, slid(limits))
      late = due_at < now - pacing_tolerance(refill_rate(limits[1]))
      share_slot = now
      if F and not F.borrow then  -- its booked share: no sooner than that comes; none
        local mark = dues[n + 1]  -- booked (it borrowed then: -1), or a mark past all the
        local owed = 0            -- share owes (of a bucket forgotten since): as a new call
        if mark and mark >= 0 then owed = mark - F.c end
        if not mark or mark < 0 or owed > max(0, -F.t) + SLACK then
          F.unbooked, share_slot = true, bucket_slot({F}, now)
        elseif owed > 0 then
          share_slot = max(F.s, now) + owed / F.r
        end
      end
      slot = max(slot, share_slot)
    else
      slot = max(bucket_slot(limits, max(now, cool)), chain_slot, share_slot)
    end
    wait = slot - now
    -- admission.fits_wait: the wait for a place in line, capped to max_sleepers places, and a
    -- cooldown up to cooldown_wait before it
    local in_line = max_wait
    local pace = refill_rate(limits[1])
    local line = pace  -- a place in line: the interval of the slower level (not of a
    if C then  -- share: a worker each; a window's: its nominal rate)
      local cline = refill_rate(C.limits[1])
      if cline <= 0 then cline = C.limits[1].r end
      line = min(line, cline)
    end
    if sleepers and line > 0 then in_line = min(in_line, sleepers / line + SLACK) end
    local cw = max_wait
    if cooldown_wait then cw = cooldown_wait + SLACK end
    local fits = wait <= in_line
    if not fits and now < cool and cool <= now + cw then fits = slot - cool <= in_line end
    -- pacing: the arrival schedule may add a sleep, within max_wait (past the start phase
    -- every grant, in it a late holder's)
    local requests = limits[1].cost
    local steady = not (K.slow == 1 and limits[1].p == 0 and limits[1].inc > 0)  -- (starting)
    local paced = 0  -- the schedule's slot, when it holds a late holder back
    if fits and (late or steady) and requests > 0 and pace > 0 then
      local due = K.tat - max(0, limits[1].burst - requests) / pace - pacing_tolerance(pace)
      if late then  -- no sooner than the schedule, within max_wait
        if due > slot then
          fits = due - now <= max(max_wait, wait + SLACK)
          slot, wait, paced = due, due - now, due
        end
      elseif due > slot then  -- on time or new: later, within max_wait (never refused
        local held = min(due, now + max_wait)  -- for it)
        if held > slot then slot, wait = held, held - now end
      end
    end
    for i = 1, n do  -- a sliding window grants no more than a window ahead (sliding.beyond)
      local lim = limits[i]
      if fits and lim.lv and lim.cost > 0 and slot - now > -lim.win then fits = false end
    end
    if max_conc > 0 and fits then
      redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', string.format('%.17g', now))
      if redis.call('ZCARD', KEYS[2]) >= max_conc then
        local first = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
        wait = min(tonumber(first[2]) - now, 1 / limits[1].r)
        reason, slot_out, dues_out = CONCURRENCY, kept, dues
        break
      end
    end
    if fits then
      if not redeeming then
        K.seq = K.seq + 1
        pay(limits, now)
      end
      for i = 1, n do  -- (paid or redeemed: a sliding window takes its units now)
        local lim = limits[i]
        if lim.lv and lim.cost > 0 then
          lim.lv = lim.lv .. string.rep(struct.pack('<d', slot - lim.win), min(lim.cost, lim.burst))
        end
      end
      granted_at = slot
      if requests > 0 and pace > 0 then K.tat = max(K.tat, slot) + requests / pace end
      if F then F.spent = true end
      if F and not F.borrow and (F.unbooked or not redeeming) then
        F.t, F.s = F.t - F.cost, now
      end
      if C then  -- the chain's level pays on a grant only
        local cpace = refill_rate(C.limits[1])
        C.seq = C.seq + 1
        pay(C.limits, now)
        if C.limits[1].cost > 0 and cpace > 0 then
          C.tat = max(C.tat, slot) + C.limits[1].cost / cpace
        end
        touched = true
      end
      if max_conc > 0 then
        redis.call('ZADD', KEYS[2], string.format('%.17g', now + lease_ttl), word)
        redis.call('PEXPIRE', KEYS[2], ceil((lease_ttl + idle_ttl) * 1000))
      end
      reason = OK
      if redeeming then reason = REDEEMED end
      if probe then reason = PROBE end  -- the probe an ADMIT gave this caller
      break
    end
    if cool > now then reason = COOLDOWN end
    if wait > max_backoff then  -- held past it by a stated cooldown or a spent quota
      if cool - now > max_backoff or quota_held(limits) or (C and quota_held(C.limits)) then
        reason = EXHAUSTED
      end
    end
    if not (reserve or redeeming) then break end
    if not redeeming then
      K.seq = K.seq + 1
      pay(limits, now)
      dues = {}
      for i = 1, n do dues[i] = limits[i].c - limits[i].t end
      if F then  -- its share is booked too, unless it borrows (-1: none booked)
        dues[n + 1] = -1
        if not F.borrow then F.t, F.s, dues[n + 1] = F.t - F.cost, now, F.c - F.t + F.cost end
      end
    end
    local growth = limits[1].inc
    if growth > 0 and slow == 1 and limits[1].p == 0 then growth = max(growth, START_GROWTH) end
    recheck = recheck_of(dues, wait, limits, now, cool, growth)
    local windows = slid(limits) - now  -- (a sliding window reserves nothing: not sooner)
    if recheck < windows then recheck = windows end
    if recheck < paced - now then recheck = paced - now end  -- (nor the schedule's)
    if recheck < chain_slot - now then recheck = chain_slot - now end  -- (not sooner)
    if recheck < share_slot - now then recheck = share_slot - now end
    if F and redeeming then  -- its own slot come, sent back: its own place (admission._told)
      local cpace = refill_rate(C.limits[1])
      if cpace <= 0 then cpace = C.limits[1].r end  -- (a window's: its nominal rate)
      local pace = min(refill_rate(limits[1]), cpace)
      if pace > 0 and pulled(res_slot, dues, limits, now) <= now then
        local told = max(now + recheck, F.told)
        F.told = told + 1 / pace
        recheck = told - now
      end
    end
    slot_out, dues_out = slot, dues
  until true
  if F then save_share(F) end
  out = {reason, micro(wait), K.epoch, micro(now), K.seq}
  if C then out[6] = C.epoch end  -- the chain's level's epoch (its backoffs are its own)
  local tail = #out
  if reason <= PROBE and tokens_wanted then
    for i = 1, n do
      local lim = limits[i]
      if lim.lv then out[tail + i] = micro(slide_left(lim, granted_at))
      else out[tail + i] = micro(lim.t) end
    end
  end
  if slot_out ~= 0 then
    out[tail + 1], out[tail + 2] = micro(slot_out), -1
    if recheck then out[tail + 2] = micro(recheck) end
    for i = 1, #dues_out do out[tail + 2 + i] = micro(dues_out[i]) end
  end
else
  -- success / backoff / failure: give the lease back, apply the response's feedback
  if word ~= '' then redis.call('ZREM', KEYS[2], word) end
  local seen_seq, seen_epoch, retry_after = A[1], A[2], A[3]
  for i = 1, n do
    local lim = limits[i]
    local f = 4 + 3 * (i - 1)
    local delta = A[f]
    local qrem, qreset = A[f + 1], A[f + 2]
    if lim.lv then delta, qrem = 0, false end  -- a sliding window: costs known when granted
    if delta ~= 0 then
      lim.t = min(lim.burst, lim.t - delta)
      if quota_active(lim, now) then lim.q = lim.q - delta end
    end
    if qrem and qreset and qreset > 0 then
      if i == 1 and seen_seq then qrem = qrem - max(0, K.seq - seen_seq) - 1 end
      qrem = max(0, qrem)
      lim.q, lim.qu, lim.qc = qrem, now + qreset, qrem / qreset
      lim.t = min(lim.t, qrem)
    end
  end
  if op == SUCCESS then
    succeed(K)
    if C then succeed(C); touched = true end
  elseif op == BACKOFF then  -- (a failure changes the rates nothing: the breaker counts it)
    K.counts[BACKOFFS] = K.counts[BACKOFFS] + 1
    if retry_after then retry_after = min(max(retry_after, 0), max_quota) end  -- stated
    held = K.cool
    if C and C.cool > held then held = C.cool end  -- (a hold past max_backoff: the latest)
    -- which level a chain's backoff lowers: ARGV[6] 1 the call's key, 2 the chain's, 3 both
    local level = tonumber(ARGV[6] or '1') or 1
    if not C or level ~= 2 then decreased = back_off(K, seen_epoch, retry_after) end
    if C and level >= 2 then
      if back_off(C, A[4 + 3 * n] or nil, retry_after) == 1 then decreased = 1 end
      touched = true
    end
  end
end

if op == ACQUIRE and out[1] > PROBE and ARGV[3] and ARGV[3] ~= '' then  -- a counted refusal
  local event = tonumber(ARGV[3])
  K.counts[event] = K.counts[event] + 1
end
save_level(K)
if touched then save_level(C) end
if op == ACQUIRE then return out end
local cool = K.cool
if C and C.cool > cool then cool = C.cool end
local answer = {K.epoch, decreased, micro(old), micro(limits[1].r), micro(max(0, cool - now))}
if held and cool > held and cool - now > max_backoff then answer[6] = 1 end  -- a long hold
return answer
