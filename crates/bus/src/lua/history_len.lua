-- KEYS[1] the sorted set of history length claims;
-- ARGV[1] this process's claim, "<history_len>:<instance>";
-- ARGV[2] how long a claim lives unless renewed, ms.
-- Records the claim (score: when it expires), drops expired ones, and
-- returns the largest history length claimed by a live process: the length
-- every publisher trims to, so that whoever publishes, a channel keeps the
-- same history.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]) * 2)
local largest = 0
for _, claim in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local len = tonumber(string.match(claim, '^(%d+):'))
  if len and len > largest then
    largest = len
  end
end
return largest
