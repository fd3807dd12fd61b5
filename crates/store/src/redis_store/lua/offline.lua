-- Takes silent agents offline, exactly once: for each agent, if it is still
-- in the online index with a last-seen time before the deadline and its
-- state is still the one the plan was made from, store the offline state,
-- drop it from the online index and publish its agent_status_changed on
-- `agents` and `agent:{id}`. Anything else (another checker got there
-- first, the agent was heard from) leaves the agent alone.
--
-- KEYS[1] agents hash   KEYS[2] agents:seen sorted set
-- KEYS[3], KEYS[4], KEYS[5]  history stream, live channel and epoch of `agents`
-- then per agent: history stream, live channel and epoch of `agent:{id}`
--
-- ARGV[1] deadline, ms (exclusive)   ARGV[2] history length cap
-- ARGV[3] epoch candidate, for a channel whose history starts anew
-- then per agent: id, state JSON read, offline state JSON, draft JSON.
-- An empty offline state marks an entry whose state is missing or
-- unreadable: it is only dropped from the online index, unannounced.
--
-- Returns two positions per agent (on `agents`, on `agent:{id}`), or two
-- empty strings for an agent left alone.
local deadline = tonumber(ARGV[1])
local maxlen = tonumber(ARGV[2])
local result = {}
local k = 6
local candidate = ARGV[3]
for a = 4, #ARGV, 4 do
  local id, expected, offline, draft = ARGV[a], ARGV[a + 1], ARGV[a + 2], ARGV[a + 3]
  local score = redis.call('ZSCORE', KEYS[2], id)
  local first, second = '', ''
  if score and tonumber(score) < deadline and (redis.call('HGET', KEYS[1], id) or '') == expected then
    redis.call('ZREM', KEYS[2], id)
    if offline ~= '' then
      redis.call('HSET', KEYS[1], id, offline)
      first = pulse_publish(KEYS[3], KEYS[4], KEYS[5], candidate, maxlen, draft)
      second = pulse_publish(KEYS[k], KEYS[k + 1], KEYS[k + 2], candidate, maxlen, draft)
    end
  end
  result[#result + 1] = first
  result[#result + 1] = second
  k = k + 3
end
return result
