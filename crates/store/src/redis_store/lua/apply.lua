-- Applies one planned change of one agent (a report or a heartbeat) if
-- nothing the plan was made from has changed since it was read, and
-- publishes its events, all in one atomic step. A report first claims its
-- id (one SET NX instead of a check and a write); every other check comes
-- before the first write, and a refused plan gives the claim back, so a
-- refused plan leaves no trace.
--
-- KEYS[1] agents hash        KEYS[2] agents:seen sorted set
-- KEYS[3] alerts:open hash   KEYS[4] alerts:recent list
-- KEYS[5] dedupe key of the report (ignored for heartbeats)
-- KEYS[6], KEYS[7], KEYS[8], ...  history stream, live channel and epoch of each event, in triples
--
-- ARGV[1] agent id
-- ARGV[2] state JSON the plan was made from ('' = unknown agent)
-- ARGV[3] new state JSON (always online)
-- ARGV[4] new last-seen time, ms
-- ARGV[5] dedupe TTL, ms ('0' = not a report: no dedupe)
-- ARGV[6] history length cap
-- ARGV[7] how many resolved alerts alerts:recent keeps
-- ARGV[8] epoch candidate, for a channel whose history starts anew
-- then: n, and n pairs (alerts:open field, value the plan was made from or '')
-- then: n, and n pairs (field, JSON) of alerts to open
-- then: n, and n pairs (field, resolved JSON) of alerts to close
-- then: one draft JSON per event, in the order of the KEYS triples
--
-- Returns {'duplicate'}, {'conflict'}, or {'ok', position, position, ...}
-- with the position (`<epoch>:<stream id>`) of each event.
local agent = ARGV[1]
local ttl = tonumber(ARGV[5])
if ttl > 0 and not redis.call('SET', KEYS[5], agent, 'NX', 'PX', ttl) then
  return {'duplicate'}
end
local function refuse()
  if ttl > 0 then
    redis.call('DEL', KEYS[5])
  end
  return {'conflict'}
end
if (redis.call('HGET', KEYS[1], agent) or '') ~= ARGV[2] then
  return refuse()
end
local i = 9
local compared = tonumber(ARGV[i]); i = i + 1
for _ = 1, compared do
  if (redis.call('HGET', KEYS[3], ARGV[i]) or '') ~= ARGV[i + 1] then
    return refuse()
  end
  i = i + 2
end

redis.call('HSET', KEYS[1], agent, ARGV[3])
redis.call('ZADD', KEYS[2], ARGV[4], agent)
local opened = tonumber(ARGV[i]); i = i + 1
for _ = 1, opened do
  redis.call('HSET', KEYS[3], ARGV[i], ARGV[i + 1])
  i = i + 2
end
local resolved = tonumber(ARGV[i]); i = i + 1
for _ = 1, resolved do
  redis.call('HDEL', KEYS[3], ARGV[i])
  redis.call('LPUSH', KEYS[4], ARGV[i + 1])
  i = i + 2
end
if resolved > 0 then
  redis.call('LTRIM', KEYS[4], 0, tonumber(ARGV[7]) - 1)
end

local result = {'ok'}
local maxlen = tonumber(ARGV[6])
for k = 6, #KEYS, 3 do
  result[#result + 1] = pulse_publish(KEYS[k], KEYS[k + 1], KEYS[k + 2], ARGV[8], maxlen, ARGV[i])
  i = i + 1
end
return result
