-- Reads the online agents of one bucket last seen before a deadline,
-- oldest first: a range over the index of online agents, never the whole
-- fleet. With an outbox, also reads its entries older than a cutoff:
-- events whose publisher stopped before publishing them.
--
-- KEYS[1] seen sorted set   KEYS[2] state hash   KEYS[3] outbox stream
-- ARGV[1] deadline, ms (exclusive)   ARGV[2] at most this many agents
-- ARGV[3] outbox cutoff, ms ('' = do not read the outbox)
-- ARGV[4] at most this many outbox entries
--
-- Returns {{id, state JSON or '', id, state JSON or '', ...}, entries},
-- entries as XRANGE returns them.
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
local silent = {}
for _, id in ipairs(ids) do
  silent[#silent + 1] = id
  silent[#silent + 1] = redis.call('HGET', KEYS[2], id) or ''
end
local entries = {}
if ARGV[3] ~= '' then
  entries = redis.call('XRANGE', KEYS[3], '-', ARGV[3], 'COUNT', tonumber(ARGV[4]))
end
return {silent, entries}
