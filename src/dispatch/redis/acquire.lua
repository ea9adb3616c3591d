-- Takes what one request needs from a provider's shared limits, all or
-- nothing, in one round trip:
--   a `concurrent` slot, as a lease that expires unless renewed (so that a
--   process killed while holding slots gives them back), and
--   one cell of the requests quota and `cells` of the tokens quota, each a
--   GCRA (generic cell rate algorithm) quota, as governor runs it in
--   memory: it refills one cell every `interval` and holds at most `burst`.
-- Times come from Redis's own clock, which every replica reads alike.
--
-- KEYS[1]: the sorted set of leases (member: lease id; score: expiry, ms)
-- KEYS[2]: the requests quota's theoretical arrival time (TAT), in µs
-- KEYS[3]: the tokens quota's TAT, in µs
-- ARGV[1]: the `concurrent` limit (0: none); ARGV[2]: the lease TTL, ms;
-- ARGV[3]: the lease id
-- ARGV[4]: the requests interval, µs per cell (0: no quota); ARGV[5]: its burst
-- ARGV[6]: the tokens interval, µs per cell (0: no quota); ARGV[7]: its
-- burst; ARGV[8]: the cells this request takes
--
-- Returns {0, 0} when everything was taken, {1, 0} when every slot is held,
-- {2, µs} when a quota is short: ask again after that long. Nothing is
-- taken unless everything is.
local t = redis.call('TIME')
local now_us = tonumber(t[1]) * 1000000 + tonumber(t[2])
local now_ms = math.floor(now_us / 1000)
-- Lua 5.1 prints numbers this large with 14 digits: format them whole.
local function int(n)
  return string.format('%.0f', n)
end

local limit = tonumber(ARGV[1])
local ttl = tonumber(ARGV[2])
if limit > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', int(now_ms))
  if redis.call('ZCARD', KEYS[1]) >= limit then
    return {1, 0}
  end
end

-- The new TAT after taking `cells`, and how long until they may be taken.
-- More cells than the burst may be taken once the quota is full, and are
-- all charged: the calls after wait for the excess (a prompt larger than
-- the burst neither waits forever nor goes at a discount).
local function next_tat(key, interval, burst, cells)
  local tat = tonumber(redis.call('GET', key)) or now_us
  if tat < now_us then
    tat = now_us
  end
  local new_tat = tat + cells * interval
  local conform_at = tat + math.min(cells, burst) * interval - burst * interval
  return new_tat, conform_at - now_us
end

local wait = 0
local requests_interval = tonumber(ARGV[4])
local requests_tat
if requests_interval > 0 then
  local short
  requests_tat, short = next_tat(KEYS[2], requests_interval, tonumber(ARGV[5]), 1)
  if short > wait then
    wait = short
  end
end
local tokens_interval = tonumber(ARGV[6])
local tokens_tat
if tokens_interval > 0 then
  local short
  tokens_tat, short = next_tat(KEYS[3], tokens_interval, tonumber(ARGV[7]), tonumber(ARGV[8]))
  if short > wait then
    wait = short
  end
end
if wait > 0 then
  return {2, wait}
end

if limit > 0 then
  redis.call('ZADD', KEYS[1], int(now_ms + ttl), ARGV[3])
  redis.call('PEXPIRE', KEYS[1], int(2 * ttl))
end
if requests_tat then
  redis.call('SET', KEYS[2], int(requests_tat), 'PX', int(math.ceil((requests_tat - now_us) / 1000) + 1))
end
if tokens_tat then
  redis.call('SET', KEYS[3], int(tokens_tat), 'PX', int(math.ceil((tokens_tat - now_us) / 1000) + 1))
end
return {0, 0}
