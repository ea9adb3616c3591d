-- Takes one of `limit` concurrency slots as a lease that expires unless
-- renewed, so that a process killed while holding slots gives them back.
-- KEYS[1]: the sorted set of leases (member: lease id; score: expiry in
--          milliseconds of Redis's clock).
-- ARGV[1]: the limit; ARGV[2]: the lease's time to live, in ms;
-- ARGV[3]: the lease id.
-- Returns 1 when the lease was taken, 0 when every slot is held.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', string.format('%.0f', now))
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then
  return 0
end
redis.call('ZADD', KEYS[1], string.format('%.0f', now + ttl), ARGV[3])
redis.call('PEXPIRE', KEYS[1], string.format('%.0f', 2 * ttl))
return 1
