"""Quotas shared by many processes: the sliding windows of `window.py` in Redis hashes,
read and written by one Lua script per operation, so a reservation is atomic across
every router process.

Keys: `{prefix}:{<tenant>}:minute` and `…:day` (one hash tag, so both live in the same
Redis Cluster slot). Each hash holds one field per bucket plus `sum`, `lo` (no bucket
older than it) and `hi` (the newest bucket). Every write sets a TTL of the window's
length (61 s, 86,460 s), after which nothing in the hash still counts: an idle tenant
costs nothing and no key grows without bound (at most 61 / 1,441 buckets).

The clock is Redis's own `TIME`, so processes with skewed clocks still agree; tests may
pass a clock instead.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import redis.asyncio as aioredis

from pipeline.router.errors import QuotaExceeded
from pipeline.router.quota.base import QuotaLimits, Reservation
from pipeline.router.quota.window import DAY, MINUTE

_COMMON = """
local function fmt(b) return string.format('%d', b) end

local function now_s(arg)
  if arg ~= '' then return tonumber(arg) end
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1000000
end

-- Drop buckets that left the window; return the tokens still in it.
local function prune(key, cur, span)
  local st = redis.call('HMGET', key, 'lo', 'hi', 'sum')
  local lo, hi, sum = tonumber(st[1]), tonumber(st[2]), tonumber(st[3]) or 0
  if lo == nil then return 0 end
  local first_live = cur - span + 1
  if lo >= first_live then return sum end
  if hi < first_live then
    redis.call('DEL', key)
    return 0
  end
  for b = lo, first_live - 1 do
    local v = redis.call('HGET', key, fmt(b))
    if v then
      sum = sum - tonumber(v)
      redis.call('HDEL', key, fmt(b))
    end
  end
  redis.call('HSET', key, 'lo', fmt(first_live), 'sum', fmt(sum))
  return sum
end

local function charge(key, cur, tokens, width, span)
  redis.call('HINCRBY', key, fmt(cur), tokens)
  redis.call('HINCRBY', key, 'sum', tokens)
  redis.call('HSET', key, 'hi', fmt(cur))
  redis.call('HSETNX', key, 'lo', fmt(cur))
  redis.call('EXPIRE', key, width * span)  -- past it, nothing here counts
end

local now = now_s(ARGV[1])
local mw, ms, dw, ds = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local mcur, dcur = math.floor(now / mw), math.floor(now / dw)
local mtot, dtot = prune(KEYS[1], mcur, ms), prune(KEYS[2], dcur, ds)
"""

_RESERVE = _COMMON + """
-- Seconds until `tokens` more fit under `limit`: walk buckets from the oldest.
local function wait_for(key, total, tokens, limit, width, span)
  if tokens > limit then return width * span end
  local need = total + tokens - limit
  if need <= 0 then return 0 end
  local flat = redis.call('HGETALL', key)
  local buckets = {}
  for i = 1, #flat, 2 do
    local b = tonumber(flat[i])
    if b then table.insert(buckets, {b, tonumber(flat[i + 1])}) end
  end
  table.sort(buckets, function(x, y) return x[1] < y[1] end)
  local freed = 0
  for _, e in ipairs(buckets) do
    freed = freed + e[2]
    if freed >= need then return math.max((e[1] + span) * width - now, 0) end
  end
  return width * span
end

local tokens, tpm, tpd = tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])
local floor = tonumber(ARGV[9])
local wait = math.max(wait_for(KEYS[1], mtot, tokens, tpm, mw, ms),
                      wait_for(KEYS[2], dtot, tokens, tpd, dw, ds))
if wait > 0 then
  -- and how long not even the smallest request (`floor` tokens) fits
  local blocked = math.max(wait_for(KEYS[1], mtot, floor, tpm, mw, ms),
                           wait_for(KEYS[2], dtot, floor, tpd, dw, ds))
  return {0, math.ceil(wait * 1000), math.floor(blocked * 1000), string.format('%.6f', now)}
end
charge(KEYS[1], mcur, tokens, mw, ms)
charge(KEYS[2], dcur, tokens, dw, ds)
return {1, mcur, dcur, string.format('%.6f', now)}
"""

_SETTLE = _COMMON + """
local function refund(key, bucket, tokens)
  local v = tonumber(redis.call('HGET', key, fmt(bucket)))
  if not v then return end
  local back = math.min(tokens, v)
  redis.call('HINCRBY', key, fmt(bucket), -back)
  redis.call('HINCRBY', key, 'sum', -back)
end

local unused, mb, db = tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])
if unused > 0 then
  refund(KEYS[1], mb, unused)
  refund(KEYS[2], db, unused)
elseif unused < 0 then
  charge(KEYS[1], mcur, -unused, mw, ms)
  charge(KEYS[2], dcur, -unused, dw, ds)
end
return 1
"""

_SHAPES = [MINUTE.width_s, MINUTE.span, DAY.width_s, DAY.span]


class RedisQuotaStore:
    def __init__(self, client: aioredis.Redis, *, prefix: str = "secanalyst:quota",
                 clock: Callable[[], float] | None = None) -> None:
        self._client = client
        self._prefix = prefix
        self._clock = clock
        self._reserve = client.register_script(_RESERVE)
        self._settle = client.register_script(_SETTLE)

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> RedisQuotaStore:
        return cls(aioredis.Redis.from_url(url), **kwargs)

    def keys(self, tenant_id: str) -> list[str]:
        base = f"{self._prefix}:{{{tenant_id}}}"
        return [f"{base}:minute", f"{base}:day"]

    async def reserve(self, tenant_id: str, tokens: int, limits: QuotaLimits, *,
                      floor_tokens: int = 1) -> Reservation:
        admitted, first, second, now = await self._reserve(
            keys=self.keys(tenant_id),
            args=[self._now(), *_SHAPES, tokens, limits.tokens_per_minute,
                  limits.tokens_per_day, floor_tokens])
        if int(admitted) != 1:
            raise QuotaExceeded(tenant_id, int(first) / 1000, int(second) / 1000)
        return Reservation(tenant_id=tenant_id, tokens=tokens, minute_bucket=int(first),
                           day_bucket=int(second), at=float(now))

    async def settle(self, reservation: Reservation, used_tokens: int) -> None:
        unused = reservation.tokens - max(used_tokens, 0)
        if unused == 0:
            return
        await self._settle(keys=self.keys(reservation.tenant_id),
                           args=[self._now(), *_SHAPES, unused, reservation.minute_bucket,
                                 reservation.day_bucket])

    async def close(self) -> None:
        await self._client.aclose()

    def _now(self) -> str:
        return "" if self._clock is None else repr(self._clock())
