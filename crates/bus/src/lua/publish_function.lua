-- Appends `draft_json` to the capped history stream `hist_key` and publishes
-- "<epoch>:<id> <draft_json>" on the sharded pub/sub channel `live_key`
-- (`SPUBLISH`: on a Redis Cluster the keys and the channel share one hash
-- slot, so this runs on its master), so the live copy and the history
-- copy carry the same position. Returns the position "<epoch>:<id>".
--
-- `epoch_key` holds the identity of the channel's history. A history that
-- does not exist (never written, deleted, or lost with the data set: Redis
-- restarted empty, a failover to an empty replica, FLUSHALL) starts a new
-- epoch, `epoch_candidate` (random, chosen by the caller), so that positions
-- of the old history are never taken for positions of the new one.
--
-- The history keeps at least `maxlen` events. Trimming is amortised: it
-- waits until the stream is `maxlen / 32` events over (so a channel holds
-- between `maxlen` and `maxlen * 33 / 32` events; exactly `maxlen` below 32)
-- and then trims back to `maxlen` at once, instead of trimming one event on
-- every publish. Trimming records the newest trimmed id as the stream's
-- max-deleted-entry-id, which tells readers when history no longer reaches
-- back far enough.
local function pulse_publish(hist_key, live_key, epoch_key, epoch_candidate, maxlen, draft_json)
  local epoch = redis.call('GET', epoch_key)
  local id = redis.call('XADD', hist_key, '*', 'e', draft_json)
  local len = redis.call('XLEN', hist_key)
  -- One event after the append: the history did not exist before it (or
  -- had been emptied by hand, which is treated the same).
  if not epoch or len == 1 then
    epoch = epoch_candidate
    redis.call('SET', epoch_key, epoch)
  end
  if len > maxlen + math.floor(maxlen / 32) then
    -- Trim to one over, then delete that one by id: XDEL records it as the
    -- max-deleted-entry-id (XTRIM records nothing), and only one entry is
    -- read back instead of every trimmed one (each read entry costs the
    -- script its whole event, copied into Lua).
    redis.call('XTRIM', hist_key, 'MAXLEN', maxlen + 1)
    local oldest = redis.call('XRANGE', hist_key, '-', '+', 'COUNT', 1)
    redis.call('XDEL', hist_key, oldest[1][1])
  end
  local position = epoch .. ':' .. id
  redis.call('SPUBLISH', live_key, position .. ' ' .. draft_json)
  return position
end
