-- GCRA, the generic cell rate algorithm, as governor runs it in memory:
-- a quota refills one cell every `interval` and holds at most `burst`.
-- KEYS[1]: the theoretical arrival time (TAT), in microseconds of Redis's
--          own clock (every replica reads the same clock).
-- ARGV[1]: the interval, in microseconds per cell.
-- ARGV[2]: the burst, in cells.
-- ARGV[3]: the cells this call takes.
-- Returns 0 when the cells were taken, else how many microseconds to wait
-- before asking again. Atomic: no other call runs between the read and
-- the write.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local cells = tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then
  tat = now
end
local new_tat = tat + cells * interval
local allow_at = new_tat - burst * interval
if allow_at > now then
  return allow_at - now
end
-- %.0f: Lua 5.1 prints numbers this large with 14 digits.
redis.call('SET', KEYS[1], string.format('%.0f', new_tat),
  'PX', string.format('%.0f', math.ceil((new_tat - now) / 1000) + 1))
return 0
