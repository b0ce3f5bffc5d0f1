"""Redis commands shared by the sync and asyncio executors: Lua scripts, keys, codecs.

Everything here is pure (no I/O): each operation is described as ``(script, keys, args)``
plus a function decoding the reply, so `RedisStore` runs the same command through
``redis.Redis`` or ``redis.asyncio.Redis`` with nothing duplicated but the I/O call.

Every duration inside a script is measured with the server's ``TIME`` (microseconds), so
processes on different machines agree on expiries whatever their own clocks say. Numbers
go through ``string.format('%.0f')`` because Lua 5.1's ``tostring`` keeps only 14
significant digits (a microsecond timestamp has 16).

Key layout (``P`` = the store's prefix, default ``buttress``; ``{ns}`` is a Redis Cluster
hash tag, so every key of one namespace lives in one slot and a script may touch several):

* ``P:{ns}:c:<key>``  cache value: hash ``v`` payload, ``e`` fresh-until (server us),
  ``d`` load seconds, ``t`` fencing token; expires at fresh-until + stale retention.
* ``P:{ns}:l:<key>``  loader lock (value = token), expires with its lease.
* ``P:{ns}:fence``    fencing-token counter of the namespace (one key per namespace).
* ``P:{ns}:inv``      pub/sub channel of invalidations (``k:<key>`` or ``p:<prefix>``).
* ``P:{ns}:budget``   retry budget: hash ``b`` balance, ``t`` last update (server us),
  ``c:<client>`` running deposit total seen from each budget object (so a repeated
  exchange is not counted twice); expires after ``max(3600, 10 * window)`` seconds
  without use.
"""

from __future__ import annotations

from typing import Any

from .base import CacheRecord

__all__ = [
    "BUDGET",
    "CACHE_DELETE",
    "CACHE_GET",
    "CACHE_LOCK",
    "CACHE_SET",
    "CACHE_UNLOCK",
    "Keys",
    "decode_record",
    "glob_escape",
]

_NOW = """
local _t = redis.call('TIME')
local now = tonumber(_t[1]) * 1000000 + tonumber(_t[2])
"""

CACHE_GET = (
    """
local r = redis.call('HMGET', KEYS[1], 'v', 'e', 'd', 't')
if not r[1] then return false end
"""
    + _NOW
    + """
return {r[1], string.format('%.0f', tonumber(r[2]) - now), r[3], r[4]}
"""
)

CACHE_SET = (
    """
local old = redis.call('HGET', KEYS[1], 't')
if old and tonumber(old) > tonumber(ARGV[5]) then return 0 end
"""
    + _NOW
    + """
local ttl = tonumber(ARGV[2])
local keep = tonumber(ARGV[3])
redis.call('HSET', KEYS[1], 'v', ARGV[1], 'e', string.format('%.0f', now + ttl),
           'd', ARGV[4], 't', ARGV[5])
redis.call('PEXPIRE', KEYS[1], math.max(1, math.ceil((ttl + keep) / 1000)))
return 1
"""
)

CACHE_LOCK = """
local token = redis.call('INCR', KEYS[2])
if redis.call('SET', KEYS[1], token, 'NX', 'PX', ARGV[1]) then
  return {1, token, 0}
end
return {0, token, redis.call('PTTL', KEYS[1])}
"""

CACHE_UNLOCK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

CACHE_DELETE = """
redis.call('DEL', KEYS[1])
redis.call('PUBLISH', ARGV[1], ARGV[2])
return 1
"""

# Mirrors buttress.stores.memory.budget_step (the in-memory store's arithmetic).
BUDGET = (
    """
local kind = ARGV[1]
local p1, p2, p3 = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local total, cost = tonumber(ARGV[5]), tonumber(ARGV[6])
local field = 'c:' .. ARGV[7]
local seen = tonumber(redis.call('HGET', KEYS[1], field) or '0')
local deposit = math.max(0, total - seen)
if total > seen then redis.call('HSET', KEYS[1], field, string.format('%.17g', total)) end
"""
    + _NOW
    + """
local r = redis.call('HMGET', KEYS[1], 'b', 't')
local bal = tonumber(r[1])
local last = tonumber(r[2])
local ttl = 3600
if kind == 'ratio' then
  if bal == nil then bal = p2 * p3 end
  local elapsed = 0
  if last ~= nil then elapsed = math.max(0, (now - last) / 1000000) end
  local add = p1 * deposit + p2 * elapsed
  if elapsed > 0 then
    local decay = math.exp(-elapsed / p3)
    bal = bal * decay + add * (1 - decay) * p3 / elapsed
  else
    bal = bal + add
  end
  ttl = math.max(3600, math.ceil(10 * p3))
else
  if bal == nil then bal = p1 end
  bal = math.min(p1, bal + deposit)
end
local taken = 0
if cost > 0 and bal >= cost then
  bal = bal - cost
  taken = 1
end
redis.call('HSET', KEYS[1], 'b', string.format('%.17g', bal), 't', string.format('%.0f', now))
redis.call('EXPIRE', KEYS[1], ttl)
return {taken, string.format('%.17g', bal)}
"""
)


class Keys:
    """Key names of one store prefix (see the module docstring for the layout)."""

    __slots__ = ("prefix",)

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def base(self, ns: str) -> str:
        return f"{self.prefix}:{{{ns}}}:"

    def value(self, ns: str, key: str) -> str:
        return f"{self.prefix}:{{{ns}}}:c:{key}"

    def lock(self, ns: str, key: str) -> str:
        return f"{self.prefix}:{{{ns}}}:l:{key}"

    def fence(self, ns: str) -> str:
        return f"{self.prefix}:{{{ns}}}:fence"

    def channel(self, ns: str) -> str:
        return f"{self.prefix}:{{{ns}}}:inv"

    def budget(self, name: str) -> str:
        return f"{self.prefix}:{{{name}}}:budget"


def decode_record(reply: Any) -> CacheRecord | None:
    """Decode `CACHE_GET`'s reply (``None`` for an absent key or a malformed reply)."""
    if not reply:
        return None
    try:
        payload, fresh_us, delta, token = reply
        return CacheRecord(
            bytes(payload), int(fresh_us) / 1e6, float(delta or 0.0), int(token or 0)
        )
    except (TypeError, ValueError):
        return None


def glob_escape(text: str) -> str:
    """Escape Redis glob characters (``* ? [ ] \\``) so ``text`` matches literally."""
    out = []
    for ch in text:
        if ch in "*?[]\\":
            out.append("\\")
        out.append(ch)
    return "".join(out)


def fmt(seconds: float) -> str:
    """Seconds as a decimal string Lua's ``tonumber`` reads back exactly enough."""
    return repr(float(seconds))
