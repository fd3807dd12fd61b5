-- Reads the online agents last seen before a deadline, oldest first: a
-- range over the index of online agents, never the whole fleet.
--
-- KEYS[1] agents:seen sorted set   KEYS[2] agents hash
-- ARGV[1] deadline, ms (exclusive) ARGV[2] at most this many agents
--
-- Returns {id, state JSON or '', id, state JSON or '', ...}.
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
local result = {}
for _, id in ipairs(ids) do
  result[#result + 1] = id
  result[#result + 1] = redis.call('HGET', KEYS[2], id) or ''
end
return result
