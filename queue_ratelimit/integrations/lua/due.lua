-- Requeued tasks kept in Redis until due, and which copy of each task is the latest.
-- queue_ratelimit/integrations/due.py explains the protocol.
--
-- KEYS[1] due zset:    task id -> when it is due (or, once claimed, when the claim lapses)
-- KEYS[2] messages:    hash, task id -> the parked message
-- KEYS[3] copies:      hash, task id -> the token of its latest copy ('' = the original), and
--                      of a pending one after '|'; its field ':seq' numbers the claims. A
--                      task with no entry (never requeued, or forgotten) is unknown: any
--                      copy of it counts as the latest.
-- KEYS[4] forget zset: task id -> when its copies entry may be forgotten
-- The due zset and the messages hold tasks: they never expire. The copies and forget keys
-- live at least as long as the last entry written needs (an abandoned scope's expire).
-- ARGV[1] op; times are the server's TIME, in seconds.
--
-- park   ARGV[2] id  ARGV[3] token of the copy being run ('' = the original)
--        ARGV[4] token of the new copy  ARGV[5] countdown  ARGV[6] message ('' = none: the
--        caller publishes the copy itself)  ARGV[7] keep (s)  ARGV[8] '1': the run copy is
--        an original's first delivery (it cannot be stale; its id may be reused)
--        The run copy must be the latest, else nothing is written. With a message, the new
--        copy becomes the latest, due at TIME + countdown. Without, it is pending
--        ("<run>|<new>"): the caller publishes it, then acknowledges the run copy; killed in
--        between, both may arrive, and the first to arrive is the latest.
--        Returns 1 (parked), 0 (the run copy is stale).
-- check  ARGV[2] id  ARGV[3] token ('' = the original)  ARGV[4] keep (s)
--        Returns 1 when this copy is the latest (or pending, and first to arrive), 0 when
--        it is stale. The arrival of a claimed copy settles its task: it leaves the due zset
--        and the messages.
-- claim  ARGV[2] most  ARGV[3] claim (s)  ARGV[4] keep (s)
--        Up to most due tasks get a new token each, "c<seq>.<n>" for their n-th claim in a
--        row (an earlier claim's copy goes stale), and stay in the due zset until their copy
--        arrives: due again when the claim lapses, after claim * 2^n s (at most 2^6).
--        Returns {microseconds until the next is due (-1 = none), id, token, message, ...}.
-- drop   ARGV[2] id: the task leaves the due zset and the messages (revoked, expired,
--        unknown to the workers). Returns 1 when it was parked, else 0.
--
-- Originals published to a Redis broker are tracked until a worker receives them (a broker
-- client killed between taking a message and recording it as unacknowledged loses it).
-- These ops take KEYS[5]: the sent zset of one queue (task id -> when it was published,
-- the publisher's clock) or the consumers hash (member -> its last beat; ':died' -> when a
-- member was last found dead). Their times are the callers' clocks.
-- sent     ARGV[2] id  ARGV[3] message  ARGV[4] at  ARGV[5] keep (s)
--          Track an original just published. Returns 1, or 0 when a worker received it
--          already (its 'received' came first: nothing is written).
-- received ARGV[2] id  ARGV[3] mark (s)
--          A worker received an original. Returns 1 (run it) or 0 (stale: a copy was
--          published in its stead). An untracked one leaves a mark for `mark` s, so a
--          'sent' arriving after it writes nothing.
-- lost     ARGV[2] before  ARGV[3] most  ARGV[4] claim (s)  ARGV[5] keep (s)  ARGV[6] horizon
--          Originals published before `before` that no worker received are claimed as
--          copies 'o<seq>.0' (the original, should it still arrive, is stale); the claim
--          lapses as claim's do. Returns {originals published before `horizon` still
--          tracked, id, token, message, ...}.
-- beat     ARGV[2] member  ARGV[3] at  ARGV[4] dead after (s)  ARGV[5] keep (s)
--          A worker is alive at `at`; members silent for `dead after` s are found dead.
--          Returns when a member was last found dead (0: never).
-- leave    ARGV[2] member: a worker stopped cleanly (it lost nothing).
-- loss     ARGV[2] at: a worker's broker connection broke (a reply in flight may be lost):
--          as a death at `at`. Returns 1.

local due, messages, copies, forget = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local op = ARGV[1]
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6

-- the latest copy's token and a pending one; nil when the task is unknown
local function latest(id)
  local entry = redis.call('HGET', copies, id)
  if not entry or entry == '!' then -- '!': an untracked original was received
    return nil, nil
  end
  local current, pending = string.match(entry, '^([^|]*)|(.*)$')
  if current then
    return current, pending
  end
  return entry, nil
end

local function settle(id)
  redis.call('ZREM', due, id)
  redis.call('HDEL', messages, id)
end

-- the copies and forget keys live at least `seconds` more
local function last(seconds)
  local ms = math.ceil(seconds * 1000)
  for _, key in ipairs({copies, forget}) do
    local left = redis.call('PTTL', key)
    if left ~= -2 and left < ms then
      redis.call('PEXPIRE', key, ms)
    end
  end
end

local function remember(id, token, keep)
  redis.call('HSET', copies, id, token)
  redis.call('ZADD', forget, now + keep, id)
  last(keep)
end

-- claim task `id` for its n-th time in a row: a new token, due again after `lapse` s unless
-- its copy arrives; appended to `reply` as id, token, message
local function claimed(reply, id, kind, n, lapse, keep, message)
  local token = kind .. redis.call('HINCRBY', copies, ':seq', 1) .. '.' .. n
  redis.call('ZADD', due, now + lapse, id)
  remember(id, token, lapse + keep)
  reply[#reply + 1] = id
  reply[#reply + 1] = token
  reply[#reply + 1] = message
end

-- forget what no stale copy can still need (never a task that is still parked)
local function sweep(keep)
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', forget, '-inf', now, 'LIMIT', 0, 100)) do
    if redis.call('ZSCORE', due, id) then
      redis.call('ZADD', forget, now + keep, id)
    else
      redis.call('ZREM', forget, id)
      redis.call('HDEL', copies, id)
    end
  end
end

if op == 'park' then
  local id, token, new, countdown, message = ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[5]), ARGV[6]
  local keep = tonumber(ARGV[7])
  local current = latest(id)
  if ARGV[8] ~= '1' and current ~= nil and current ~= token then
    return 0
  end
  sweep(keep)
  if message == '' then
    settle(id)
    remember(id, token .. '|' .. new, countdown + keep)
  else
    redis.call('ZADD', due, now + countdown, id)
    redis.call('HSET', messages, id, message)
    remember(id, new, countdown + keep)
  end
  return 1
end

if op == 'check' then
  local id, token, keep = ARGV[2], ARGV[3], tonumber(ARGV[4])
  local current, pending = latest(id)
  if current == nil then
    return 1
  end
  if pending and (token == current or token == pending) then
    remember(id, token, keep) -- whichever arrives first is the latest; the other is stale
    return 1
  end
  if current ~= token then
    return 0
  end
  if token ~= '' and redis.call('ZSCORE', due, id) then
    settle(id) -- the claim that published this copy is settled by its arrival
    redis.call('ZADD', forget, now + keep, id)
    last(keep)
  end
  return 1
end

if op == 'claim' then
  local most, claim, keep = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
  sweep(keep)
  local reply = {-1}
  local ids = redis.call('ZRANGEBYSCORE', due, '-inf', now, 'LIMIT', 0, most)
  for _, id in ipairs(ids) do
    local message = redis.call('HGET', messages, id)
    if message then
      local kind, n = string.match(latest(id) or '', '^([co])%d+%.(%d+)$')
      n = tonumber(n or -1) + 1
      -- a copy of an original found lost stays 'o': the original is stale wherever it is
      claimed(reply, id, kind or 'c', n, claim * 2 ^ math.min(n, 6), keep, message)
    else
      redis.call('ZREM', due, id) -- no message: nothing to publish (not written by park)
    end
  end
  local head = redis.call('ZRANGE', due, 0, 0, 'WITHSCORES')
  if head[2] then
    reply[1] = math.floor(math.max(0, tonumber(head[2]) - now) * 1e6)
  end
  return reply
end

if op == 'drop' then
  local parked = redis.call('ZREM', due, ARGV[2])
  redis.call('HDEL', messages, ARGV[2])
  return parked
end

if op == 'sent' then
  local id, message, at, keep = ARGV[2], ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5])
  if redis.call('HGET', copies, id) == '!' or redis.call('ZSCORE', due, id) then
    return 0
  end
  sweep(keep)
  redis.call('ZADD', KEYS[5], at, id)
  redis.call('HSET', messages, id, message)
  remember(id, '', keep) -- the new original is the latest (a retry reuses its task's id)
  return 1
end

if op == 'received' then
  local id = ARGV[2]
  if redis.call('ZREM', KEYS[5], id) == 1 then
    redis.call('HDEL', messages, id)
    return 1
  end
  local current = latest(id)
  if current == nil then
    remember(id, '!', tonumber(ARGV[3]))
    return 1
  end
  if string.sub(current, 1, 1) == 'o' then
    return 0
  end
  return 1
end

if op == 'lost' then
  local before, most = ARGV[2], tonumber(ARGV[3])
  local claim, keep = tonumber(ARGV[4]), tonumber(ARGV[5])
  local reply = {0}
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[5], '-inf', '(' .. before, 'LIMIT', 0, most)) do
    redis.call('ZREM', KEYS[5], id)
    local message = redis.call('HGET', messages, id)
    local current = latest(id)
    if message and (current == nil or current == '') and not redis.call('ZSCORE', due, id) then
      claimed(reply, id, 'o', 0, claim, keep, message)
    end
  end
  reply[1] = redis.call('ZCOUNT', KEYS[5], '-inf', '(' .. ARGV[6])
  return reply
end

if op == 'beat' then
  local member, at, dead, keep = ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[5]
  local fields = redis.call('HGETALL', KEYS[5])
  local died = 0
  for i = 1, #fields, 2 do
    if fields[i] == ':died' then
      died = math.max(died, tonumber(fields[i + 1]))
    elseif fields[i] ~= member and tonumber(fields[i + 1]) < at - dead then
      redis.call('HDEL', KEYS[5], fields[i])
      died = math.max(died, at)
      redis.call('HSET', KEYS[5], ':died', tostring(died))
    end
  end
  redis.call('HSET', KEYS[5], member, tostring(at))
  redis.call('PEXPIRE', KEYS[5], math.ceil(tonumber(keep) * 1000))
  return tostring(died)
end

if op == 'leave' then
  return redis.call('HDEL', KEYS[5], ARGV[2])
end

if op == 'loss' then
  local died = tonumber(redis.call('HGET', KEYS[5], ':died') or '0')
  redis.call('HSET', KEYS[5], ':died', tostring(math.max(died, tonumber(ARGV[2]))))
  return 1
end

return redis.error_reply('due: unknown op ' .. tostring(op))
