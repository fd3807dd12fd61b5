-- Applies one planned change of one agent (a report or a heartbeat) if
-- nothing the plan was made from has changed since it was read, together
-- with its events, all in one atomic step: published right here, or (on a
-- cluster, where the channels' keys are in other hash slots) appended to
-- the bucket's outbox, from which they are published next. A report first
-- claims its id (one SET NX instead of a check and a write); every other
-- check comes before the first write, and a refused plan gives the claim
-- back, so a refused plan leaves no trace.
--
-- KEYS[1] state hash         KEYS[2] seen sorted set
-- KEYS[3] open alerts hash   KEYS[4] resolved alerts list
-- KEYS[5] dedupe key of the report (ignored for heartbeats)
-- KEYS[6] outbox stream      KEYS[7] pending hash (outbox mode only)
-- KEYS[8], KEYS[9], KEYS[10], ...  history stream, live channel and epoch
--   of each event, in triples (publish mode only)
--
-- ARGV[1] agent id
-- ARGV[2] state JSON the plan was made from ('' = unknown agent)
-- ARGV[3] new state JSON (always online)
-- ARGV[4] new last-seen time, ms
-- ARGV[5] dedupe TTL, ms ('0' = not a report: no dedupe)
-- ARGV[6] history length cap
-- ARGV[7] how many resolved alerts the list keeps
-- ARGV[8] epoch candidate, for a channel whose history starts anew
-- ARGV[9] 'publish' or 'outbox'
-- then: n, and n pairs (open alerts field, value the plan was made from or '')
-- then: n, and n pairs (field, JSON) of alerts to open
-- then: n, and n pairs (field, resolved JSON) of alerts to close
-- then: one pair per event (channel, draft JSON), the draft '' when it is
--   the previous event's (the same event on its agent channel)
--
-- Returns {'duplicate'}, {'conflict'}; in publish mode {'ok', position, ...}
-- with the position (`<epoch>:<stream id>`) of each event; in outbox mode
-- {'ok', entry id, id of the agent's previous entry still pending or ''}
-- ({'ok', '', ''} for a change without events).
local agent = ARGV[1]
local ttl = tonumber(ARGV[5])
if ttl > 0 and not redis.call('SET', KEYS[5], agent, 'NX', 'PX', ARGV[5]) then
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
local i = 10
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

if ARGV[9] == 'outbox' then
  if i > #ARGV then
    return {'ok', '', ''}
  end
  -- One XADD of every pair: unpack() takes up to about 8,000 values, so
  -- a change may announce up to about 3,900 events (a report of as many
  -- failing L3 checks; ingest accepts 256 checks by default).
  local fields = {'agent', agent}
  for k = i, #ARGV do
    fields[#fields + 1] = ARGV[k]
  end
  local id = redis.call('XADD', KEYS[6], '*', unpack(fields))
  local previous = redis.call('HGET', KEYS[7], agent) or ''
  redis.call('HSET', KEYS[7], agent, id)
  return {'ok', id, previous}
end

local result = {'ok'}
local maxlen = tonumber(ARGV[6])
local draft = ''
for k = 8, #KEYS, 3 do
  if ARGV[i + 1] ~= '' then
    draft = ARGV[i + 1]
  end
  result[#result + 1] = pulse_publish(KEYS[k], KEYS[k + 1], KEYS[k + 2], ARGV[8], maxlen, draft)
  i = i + 2
end
return result
