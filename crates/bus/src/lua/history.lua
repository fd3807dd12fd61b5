-- KEYS[1] history stream; ARGV[1] read after this id; ARGV[2] at most this many.
-- Returns {max-deleted-entry-id, entries}, read atomically so that the
-- "truncated" verdict matches the entries returned.
local max_deleted = '0-0'
local ok, info = pcall(redis.call, 'XINFO', 'STREAM', KEYS[1])
if ok then
  for i = 1, #info, 2 do
    if info[i] == 'max-deleted-entry-id' then
      max_deleted = info[i + 1]
    end
  end
end
local entries = redis.call('XRANGE', KEYS[1], '(' .. ARGV[1], '+', 'COUNT', ARGV[2])
return {max_deleted, entries}
