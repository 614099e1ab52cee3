-- Requeued RQ jobs: when each is due, by the Redis server's clock, and its promotion to
-- the front of its queue. queue_ratelimit/integrations/rq_due.py explains why.
--
-- ARGV[1] op: add | promote
--
-- add:     KEYS[1] the queue's due zset  KEYS[2] RQ's ScheduledJobRegistry of the queue
--          ARGV[2] job id  ARGV[3] countdown (s)  ARGV[4] fallback delay (s)
--          The job is due at TIME + countdown; RQ's registry gets it at that plus the delay,
--          rounded up to the second (the fallback). The due zset's member is
--          "<job id> <fallback>", so a promotion can tell the fallback it wrote from a later
--          schedule of RQ's own (a Retry's interval, say).  Returns the fallback.
-- promote: KEYS in threes, one three per queue: due zset, RQ's ScheduledJobRegistry,
--          the queue's list.  ARGV[2] margin (s)  ARGV[3] most jobs per queue
--          Every member due by TIME leaves the due zset. Its job is pushed to the front of
--          its queue (the earliest first) and leaves the registry only while the registry
--          still holds the fallback written with it and that is more than margin away;
--          otherwise RQ's scheduler has it, or had it.
--          Returns {jobs promoted, microseconds until the next due member (-1 = none)}.

local function server_now()
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1e6
end

local op = ARGV[1]
local now = server_now()

if op == 'add' then
  local due = now + tonumber(ARGV[3])
  local fallback = math.ceil(due + tonumber(ARGV[4]))
  redis.call('ZADD', KEYS[2], fallback, ARGV[2])
  redis.call('ZADD', KEYS[1], due, ARGV[2] .. ' ' .. fallback)
  return fallback
end

if op ~= 'promote' then
  return redis.error_reply('rq_due: unknown op ' .. tostring(op))
end

local margin, most = tonumber(ARGV[2]), tonumber(ARGV[3])
local promoted, soonest = 0, -1
for i = 1, #KEYS, 3 do
  local due, registry, queue = KEYS[i], KEYS[i + 1], KEYS[i + 2]
  local members = redis.call('ZRANGEBYSCORE', due, '-inf', now, 'LIMIT', 0, most)
  for j = #members, 1, -1 do -- the latest first: LPUSH leaves the earliest at the front
    local member = members[j]
    redis.call('ZREM', due, member)
    local id, written = string.match(member, '^(.*) (%d+)$')
    if id then
      local fallback = tonumber(redis.call('ZSCORE', registry, id))
      if fallback == tonumber(written) and now < fallback - margin then
        redis.call('ZREM', registry, id)
        redis.call('LPUSH', queue, id)
        promoted = promoted + 1
      end
    end
  end
  local head = redis.call('ZRANGE', due, 0, 0, 'WITHSCORES')
  if head[2] then
    local wait = math.max(0, tonumber(head[2]) - now)
    if soonest < 0 or wait < soonest then
      soonest = wait
    end
  end
end
if soonest < 0 then
  return {promoted, -1}
end
return {promoted, math.floor(soonest * 1e6)}
