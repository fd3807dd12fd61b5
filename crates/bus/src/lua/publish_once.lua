-- KEYS[1] history stream, KEYS[2] live channel, KEYS[3] epoch,
-- KEYS[4] idempotency key;
-- ARGV[1] max length, ARGV[2] draft JSON, ARGV[3] epoch candidate,
-- ARGV[4] time to live of the idempotency key, ms.
-- Returns {0, position} when published, {1, position of the first publish}
-- when the key was used before. The key is checked and recorded in the same
-- step as the append, so no failure in between can leave one without the
-- other.
local prior = redis.call('GET', KEYS[4])
if prior then
  return {1, prior}
end
local position = pulse_publish(KEYS[1], KEYS[2], KEYS[3], ARGV[3], tonumber(ARGV[1]), ARGV[2])
redis.call('SET', KEYS[4], position, 'PX', ARGV[4])
return {0, position}
