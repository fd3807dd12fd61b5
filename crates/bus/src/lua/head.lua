-- KEYS[1] history stream, KEYS[2] epoch.
-- Returns {epoch, last-generated-id}; {'', '0-0'} when there is no history.
local ok, info = pcall(redis.call, 'XINFO', 'STREAM', KEYS[1])
if not ok then
  return {'', '0-0'}
end
local last = '0-0'
for i = 1, #info, 2 do
  if info[i] == 'last-generated-id' then
    last = info[i + 1]
  end
end
return {redis.call('GET', KEYS[2]) or '', last}
