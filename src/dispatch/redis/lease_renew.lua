-- Renews this process's leases (see lease_acquire.lua).
-- KEYS[i]: the lease set of lease ARGV[i + 1]; ARGV[1]: the time to live,
-- in ms. A lease that already expired (and may have been given to another
-- caller) is not taken back.
-- Returns the ids of the leases that were gone (expired, or lost with
-- Redis's data), which the process stops renewing.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[1])
local lost = {}
for i, key in ipairs(KEYS) do
  local expiry = tonumber(redis.call('ZSCORE', key, ARGV[i + 1]))
  if expiry and expiry > now then
    redis.call('ZADD', key, 'XX', string.format('%.0f', now + ttl), ARGV[i + 1])
    redis.call('PEXPIRE', key, string.format('%.0f', 2 * ttl))
  else
    table.insert(lost, ARGV[i + 1])
  end
end
return lost
