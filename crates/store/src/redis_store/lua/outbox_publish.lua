-- Publishes outbox entries on one channel, each at most once, in outbox
-- order per agent. The channel's marker hash holds, per agent, the latest
-- entry published on this channel and the positions it was given:
-- "<entry id> <position> <position> ...". An entry not newer than that was
-- published before (every publisher goes through an agent's entries
-- oldest first), so it is skipped: a racing or retrying publisher never
-- publishes twice, and never publishes an older event after a newer one.
--
-- KEYS[1] history stream, KEYS[2] live channel, KEYS[3] epoch,
-- KEYS[4] marker hash (all in the channel's hash slot)
-- ARGV[1] history length cap, ARGV[2] epoch candidate
-- then per entry: agent id, entry id, n, and n draft JSONs (its events on
-- this channel, in order)
--
-- Returns one position per draft: where it was published (now or
-- before), or '' when a newer entry was published since and this one's
-- positions are no longer recorded.
local maxlen = tonumber(ARGV[1])
local candidate = ARGV[2]

local function parse(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  return tonumber(ms), tonumber(seq)
end

local function newer(id, than)
  local ms, seq = parse(id)
  local than_ms, than_seq = parse(than)
  return ms > than_ms or (ms == than_ms and seq > than_seq)
end

local result = {}
local i = 3
while i <= #ARGV do
  local agent, id, n = ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 2])
  i = i + 3
  local marker = redis.call('HGET', KEYS[4], agent)
  local last = marker and string.match(marker, '^(%S+)')
  if not last or newer(id, last) then
    local positions = {}
    for d = 0, n - 1 do
      positions[#positions + 1] = pulse_publish(KEYS[1], KEYS[2], KEYS[3], candidate, maxlen, ARGV[i + d])
      result[#result + 1] = positions[#positions]
    end
    redis.call('HSET', KEYS[4], agent, id .. ' ' .. table.concat(positions, ' '))
  elseif last == id then
    local d = 0
    for position in string.gmatch(string.sub(marker, #last + 2), '%S+') do
      if d < n then
        result[#result + 1] = position
        d = d + 1
      end
    end
    for _ = d + 1, n do
      result[#result + 1] = ''
    end
  else
    for _ = 1, n do
      result[#result + 1] = ''
    end
  end
  i = i + n
end
return result
