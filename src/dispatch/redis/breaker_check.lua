-- Whether the next attempt at a model may go (see src/dispatch/breaker.rs).
-- KEYS[1]: the circuit's hash (open_until, probe_after, probe_until; ms of
--          Redis's clock).
-- ARGV[1]: how long a probe may take before another is let through, in ms.
-- Returns {0, 0} (closed), {1, 0} (this attempt is the probe), {2, ms}
-- (open after failures: a probe may go in ms) or {3, ms} (a 429 asked
-- every caller to wait ms).
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local open_until = tonumber(redis.call('HGET', KEYS[1], 'open_until'))
if not open_until then
  return {0, 0}
end
local after_failures = redis.call('HGET', KEYS[1], 'probe_after') == '1'
if now < open_until then
  if after_failures then
    return {2, open_until - now}
  end
  return {3, open_until - now}
end
if not after_failures then
  redis.call('DEL', KEYS[1])
  return {0, 0}
end
local probe_until = tonumber(redis.call('HGET', KEYS[1], 'probe_until'))
if probe_until and now < probe_until then
  return {2, probe_until - now}
end
local lease = tonumber(ARGV[1])
redis.call('HSET', KEYS[1], 'probe_until', string.format('%.0f', now + lease))
redis.call('PEXPIRE', KEYS[1], string.format('%.0f', 2 * lease))
return {1, 0}
