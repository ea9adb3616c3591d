-- Counts a failed attempt at a model (see src/dispatch/breaker.rs).
-- KEYS[1]: the circuit's hash; KEYS[2]: the sorted set of recent failures.
-- ARGV[1]: `down` or `rate_limited`; ARGV[2]: failures that open it;
-- ARGV[3]: the window, ms; ARGV[4]: the cooldown, ms; ARGV[5]: a rate
-- limit's wait, ms; ARGV[6]: a member unique to this failure.
-- Returns 1 when the circuit is now open.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local window = tonumber(ARGV[3])
local cooldown = tonumber(ARGV[4])
local open_until = tonumber(redis.call('HGET', KEYS[1], 'open_until'))
if ARGV[1] == 'rate_limited' then
  local wait_until = now + tonumber(ARGV[5])
  if not open_until or open_until < wait_until then
    open_until = wait_until
    redis.call('HSET', KEYS[1], 'open_until', string.format('%.0f', open_until))
  end
  redis.call('PEXPIRE', KEYS[1], string.format('%.0f', open_until - now + 2 * cooldown))
  return 1
end
local half_open = redis.call('HEXISTS', KEYS[1], 'probe_until') == 1
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', string.format('%.0f', now - window))
redis.call('ZADD', KEYS[2], string.format('%.0f', now), ARGV[6])
redis.call('PEXPIRE', KEYS[2], string.format('%.0f', window))
if half_open or redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[2]) then
  redis.call('HSET', KEYS[1], 'open_until', string.format('%.0f', now + cooldown), 'probe_after', '1')
  redis.call('HDEL', KEYS[1], 'probe_until')
  redis.call('DEL', KEYS[2])
  redis.call('PEXPIRE', KEYS[1], string.format('%.0f', 3 * cooldown))
  return 1
end
if open_until and now < open_until then
  return 1
end
return 0
