-- KEYS[1] history stream, KEYS[2] epoch;
-- ARGV[1] epoch of the reader's position ('' if unknown), ARGV[2] its offset,
-- ARGV[3] at most this many entries.
-- Returns {epoch, last-generated-id, max-deleted-entry-id, entries, missing},
-- read atomically so that the verdict on continuity matches the entries. A
-- reader from another epoch gets the oldest entries of this one. No stream
-- means no history, whatever the epoch key says: epoch ''.
--
-- `missing` is 1 when the reader's position is of this epoch, newer than
-- anything trimmed and not ahead of the head, yet not in the stream: this
-- history never had it. That is what a failover to a replica that had not
-- received the newest entries (asynchronous replication) leaves behind,
-- once new entries take the head past the lost ones: the reader saw events
-- this history does not hold, and cannot continue from it.
local epoch, last, max_deleted = '', '0-0', '0-0'
local ok, info = pcall(redis.call, 'XINFO', 'STREAM', KEYS[1])
if ok then
  epoch = redis.call('GET', KEYS[2]) or ''
  for i = 1, #info, 2 do
    if info[i] == 'last-generated-id' then
      last = info[i + 1]
    elseif info[i] == 'max-deleted-entry-id' then
      max_deleted = info[i + 1]
    end
  end
end
local after = ARGV[2]
local missing = 0
if ARGV[1] ~= epoch then
  after = '0-0'
elseif after ~= '0-0' and after ~= max_deleted then
  local at = redis.call('XRANGE', KEYS[1], after, after)
  if #at == 0 then
    missing = 1
  end
end
local entries = redis.call('XRANGE', KEYS[1], '(' .. after, '+', 'COUNT', ARGV[3])
return {epoch, last, max_deleted, entries, missing}
