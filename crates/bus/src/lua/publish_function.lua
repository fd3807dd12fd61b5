-- Appends `draft_json` to the capped history stream `hist_key` and publishes
-- "<id> <draft_json>" on `live_key`, so the live copy and the history copy
-- carry the same id. Trimming records the newest trimmed id as the stream's
-- max-deleted-entry-id, which tells readers when history no longer reaches
-- back far enough. Returns the new id.
local function pulse_publish(hist_key, live_key, maxlen, draft_json)
  local id = redis.call('XADD', hist_key, '*', 'e', draft_json)
  local len = redis.call('XLEN', hist_key)
  if len > maxlen then
    local trimmed = redis.call('XRANGE', hist_key, '-', '+', 'COUNT', len - maxlen)
    redis.call('XTRIM', hist_key, 'MAXLEN', maxlen)
    redis.call('XSETID', hist_key, id, 'MAXDELETEDID', trimmed[#trimmed][1])
  end
  redis.call('PUBLISH', live_key, id .. ' ' .. draft_json)
  return id
end
