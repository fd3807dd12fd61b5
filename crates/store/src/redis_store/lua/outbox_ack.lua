-- Removes published entries from a bucket's outbox. An agent's pending
-- mark goes with its latest entry: it stays while a newer entry of the
-- agent waits (its publisher takes care of it), and it goes even when the
-- entry was removed before (by another publisher, or lost), so that a mark
-- never outlives the agent's latest entry.
--
-- KEYS[1] outbox stream   KEYS[2] pending hash
-- ARGV: pairs (entry id, agent id)
for i = 1, #ARGV, 2 do
  redis.call('XDEL', KEYS[1], ARGV[i])
  if redis.call('HGET', KEYS[2], ARGV[i + 1]) == ARGV[i] then
    redis.call('HDEL', KEYS[2], ARGV[i + 1])
  end
end
return 0
