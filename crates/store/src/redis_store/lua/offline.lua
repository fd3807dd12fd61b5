-- Takes silent agents of one bucket offline, exactly once: for each agent,
-- if it is still in the online index with a last-seen time before the
-- deadline and its state is still the one the plan was made from, store
-- the offline state, drop it from the online index and announce its
-- agent_status_changed on `agents` and `agent:{id}`: published right here,
-- or appended to the bucket's outbox (see apply.lua). Anything else
-- (another checker got there first, the agent was heard from) leaves the
-- agent alone.
--
-- KEYS[1] state hash   KEYS[2] seen sorted set
-- KEYS[3] outbox stream   KEYS[4] pending hash (outbox mode only)
-- publish mode only: KEYS[5], KEYS[6], KEYS[7]  history stream, live
--   channel and epoch of `agents`, then per agent: the same of `agent:{id}`
--
-- ARGV[1] deadline, ms (exclusive)   ARGV[2] history length cap
-- ARGV[3] epoch candidate, for a channel whose history starts anew
-- ARGV[4] 'publish' or 'outbox'   ARGV[5] the channel `agents`
-- then per agent: id, state JSON read, offline state JSON, draft JSON,
-- channel `agent:{id}`. An empty offline state marks an entry whose state
-- is missing or unreadable: it is only dropped from the online index,
-- unannounced.
--
-- Returns two strings per agent: in publish mode the positions on `agents`
-- and `agent:{id}`, in outbox mode the entry id and the id of the agent's
-- previous entry still pending (or ''); two empty strings for an agent
-- left alone.
local deadline = tonumber(ARGV[1])
local maxlen = tonumber(ARGV[2])
local candidate = ARGV[3]
local outbox = ARGV[4] == 'outbox'
local fleet = ARGV[5]
local result = {}
local k = 8
for a = 6, #ARGV, 5 do
  local id, expected, offline, draft, channel = ARGV[a], ARGV[a + 1], ARGV[a + 2], ARGV[a + 3], ARGV[a + 4]
  local score = redis.call('ZSCORE', KEYS[2], id)
  local first, second = '', ''
  if score and tonumber(score) < deadline and (redis.call('HGET', KEYS[1], id) or '') == expected then
    redis.call('ZREM', KEYS[2], id)
    if offline ~= '' then
      redis.call('HSET', KEYS[1], id, offline)
      if outbox then
        first = redis.call('XADD', KEYS[3], '*', 'agent', id, fleet, draft, channel, '')
        second = redis.call('HGET', KEYS[4], id) or ''
        redis.call('HSET', KEYS[4], id, first)
      else
        first = pulse_publish(KEYS[5], KEYS[6], KEYS[7], candidate, maxlen, draft)
        second = pulse_publish(KEYS[k], KEYS[k + 1], KEYS[k + 2], candidate, maxlen, draft)
      end
    end
  end
  result[#result + 1] = first
  result[#result + 1] = second
  k = k + 3
end
return result
