-- Requeued RQ jobs: when each is due, to the microsecond of the server's clock, and its
-- promotion to the front of its queue. queue_ratelimit/integrations/rq_due.py explains why.
--
-- ARGV[1] op: add | promote
--
-- add:     KEYS[1] the queue's due zset.  ARGV[2] job id  ARGV[3] countdown (s)
--          Scores the job at the server's TIME + countdown.  Returns 1.
-- promote: KEYS in threes, one three per queue: due zset, RQ's ScheduledJobRegistry zset,
--          the queue's list.  ARGV[2] margin (s)  ARGV[3] most jobs per queue
--          Every job due by the server's TIME leaves the due zset. While its registry score
--          is more than margin away, it also leaves the registry and is pushed to the front
--          of its queue, the earliest first; otherwise (or when it is no longer in the
--          registry) RQ's scheduler has it, or had it.
--          Returns {jobs promoted, microseconds until the next due job (-1 = none)}.

local function server_now()
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1e6
end

local op = ARGV[1]
local now = server_now()

if op == 'add' then
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[2])
  return 1
end

if op ~= 'promote' then
  return redis.error_reply('rq_due: unknown op ' .. tostring(op))
end

local margin, most = tonumber(ARGV[2]), tonumber(ARGV[3])
local promoted, soonest = 0, -1
for i = 1, #KEYS, 3 do
  local due, registry, queue = KEYS[i], KEYS[i + 1], KEYS[i + 2]
  local ids = redis.call('ZRANGEBYSCORE', due, '-inf', now, 'LIMIT', 0, most)
  for j = #ids, 1, -1 do -- the latest first: LPUSH leaves the earliest at the front
    local id = ids[j]
    redis.call('ZREM', due, id)
    local fallback = redis.call('ZSCORE', registry, id)
    if fallback and now < tonumber(fallback) - margin then
      redis.call('ZREM', registry, id)
      redis.call('LPUSH', queue, id)
      promoted = promoted + 1
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
