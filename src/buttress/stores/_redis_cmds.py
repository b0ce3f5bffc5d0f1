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
* ``P:{ns}:cb:<key>``  circuit breaker state (hash), ``P:{ns}:cbr:<key>`` its window (a
  string: for a count window one byte per call, for a time window 18 bytes per bucket);
  both expire ``max(3600, 10 x longest break, window_duration)`` seconds after the last
  change (then the breaker reads closed and empty again).
* ``P:{ns}:rl:<key>``  rate-limiter bucket (GCRA): hash ``tat`` theoretical arrival time,
  ``last`` latest server time seen (us); expires once the bucket is full again.
* ``P:{ns}:budget``   retry budget: hash ``b`` balance, ``t`` last update (server us),
  ``c:<client>`` running deposit total seen from each budget object (so a repeated
  exchange is not counted twice); expires after ``max(3600, 10 * window)`` seconds
  without use.
"""

from __future__ import annotations

from typing import Any

from .base import CacheRecord

__all__ = [
    "BUCKET",
    "BUDGET",
    "CIRCUIT",
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

    def bucket(self, name: str, key: str) -> str:
        return f"{self.prefix}:{{{name}}}:rl:{key}"

    def circuit(self, name: str, key: str) -> tuple[str, str]:
        return f"{self.prefix}:{{{name}}}:cb:{key}", f"{self.prefix}:{{{name}}}:cbr:{key}"


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


# -- circuit breaker ----------------------------------------------------------------------------
# Mirrors buttress._state.circuit.CircuitState. KEYS: state hash, window string.
# The window string holds, for a count window, the ring of outcome codes (one byte per call:
# bit 0 failed, bit 1 slow); for a time window, the rolling buckets, 18 bytes each (calls,
# failures, slow calls as 6-byte big-endian integers) at offset 18 x (index mod buckets).
# The hash keeps the running totals, the ring position (``pos``), the absolute index of the
# newest bucket (``cur``, '' for none) and the window's shape (``wk``: a window written under
# another shape is cleared instead of misread).
# ARGV: op, token, failed, slow, window (0: time window), min_throughput, failure_ratio
# (-1: off), consecutive limit (-1: off), slow ratio (-1: off), half_open_calls,
# half_open_successes, half_open_max (us, -1: off), break_reset_after (us), key ttl (s),
# buckets (0: count window), bucket width (s), clock (us; -1: the server's TIME),
# break table (s)...
# Reply: effective state, generation, calls, failures, slow, consecutive, opens,
# break duration (s, string), retry_after (us, -1: none), trials in flight, trial
# successes, trial failures, previous state ('' none), permitted, trial, actual state.
CIRCUIT = """
local op = ARGV[1]
local token = tonumber(ARGV[2])
local failed, slowf = tonumber(ARGV[3]), tonumber(ARGV[4])
local size, minthr = tonumber(ARGV[5]), tonumber(ARGV[6])
local ratio, climit, sratio = tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(ARGV[9])
local hcalls, hsucc, hmax = tonumber(ARGV[10]), tonumber(ARGV[11]), tonumber(ARGV[12])
local reset_after, ttl = tonumber(ARGV[13]), tonumber(ARGV[14])
local nb, width = tonumber(ARGV[15]), tonumber(ARGV[16])
local now = tonumber(ARGV[17])
local BT = 17
local nbreaks = #ARGV - BT
if now < 0 then
  local _t = redis.call('TIME')
  now = tonumber(_t[1]) * 1000000 + tonumber(_t[2])
end
local spec
if nb > 0 then spec = 't' .. ARGV[15] .. ':' .. ARGV[16] else spec = 'c' .. ARGV[5] end
local f = redis.call('HMGET', KEYS[1], 'st', 'gen', 'cons', 'opens', 'bd', 'until', 'cs',
                     'rs', 'tif', 'ts', 'tf', 'calls', 'fails', 'slow', 'pos', 'cur', 'wk')
local st = tonumber(f[1]) or 0
local gen = tonumber(f[2]) or 0
local cons = tonumber(f[3]) or 0
local opens = tonumber(f[4]) or 0
local bd = f[5] or '0'
local untl = tonumber(f[6]) or 0
local cs = tonumber(f[7]) or now
local rs = tonumber(f[8]) or 0
local tif = tonumber(f[9]) or 0
local ts = tonumber(f[10]) or 0
local tf = tonumber(f[11]) or 0
local calls = tonumber(f[12]) or 0
local fails = tonumber(f[13]) or 0
local slow = tonumber(f[14]) or 0
local pos = tonumber(f[15]) or 0
local cur = tonumber(f[16])
local NAMES = {[0] = 'closed', [1] = 'open', [2] = 'half_open', [3] = 'isolated'}
local previous = ''
local permitted, trial = 0, 0
local dirty = false
-- a window of another shape (the policy changed; state of an older version with a
-- time window) is dropped rather than misread
if f[1] and f[17] ~= spec and (f[17] or nb > 0) then
  redis.call('DEL', KEYS[2])
  calls, fails, slow, pos, cur = 0, 0, 0, 0, nil
  dirty = true
end

local function open_()
  if st == 0 and now - cs >= reset_after then opens = 0 end
  opens = opens + 1
  bd = ARGV[BT + math.min(opens, nbreaks)]
  untl = now + math.floor(tonumber(bd) * 1000000)
  st = 1
  gen = gen + 1
  tif, ts, tf = 0, 0, 0
end
local function close_()
  st = 0
  gen = gen + 1
  redis.call('DEL', KEYS[2])
  calls, fails, slow, pos, cur = 0, 0, 0, 0, nil
  cons = 0
  cs = now
  tif, ts, tf = 0, 0, 0
end

-- time window: BB bytes per bucket, three 6-byte big-endian counts
local BB = 18
local function dec(s, i)
  local v = 0
  for k = i, i + 5 do v = v * 256 + string.byte(s, k) end
  return v
end
local function enc(v)
  local b = {}
  for k = 6, 1, -1 do
    b[k] = v % 256
    v = math.floor(v / 256)
  end
  return string.char(b[1], b[2], b[3], b[4], b[5], b[6])
end
local function bucket(i)
  local s = redis.call('GETRANGE', KEYS[2], i * BB, i * BB + BB - 1)
  if #s < BB then return 0, 0, 0 end
  return dec(s, 1), dec(s, 7), dec(s, 13)
end
-- bring the buckets to now; a reading older than the newest bucket counts in the newest
local function rotate()
  local index = math.floor(now / 1000000 / width)
  if cur == nil then
    cur = index
  elseif index > cur then
    if index - cur >= nb then
      redis.call('DEL', KEYS[2])
      calls, fails, slow = 0, 0, 0
    else
      for i = cur + 1, index do
        local slot = i % nb
        local c, fl, sl = bucket(slot)
        if c > 0 then
          calls, fails, slow = calls - c, fails - fl, slow - sl
          redis.call('SETRANGE', KEYS[2], slot * BB, string.rep(string.char(0), BB))
        end
      end
    end
    cur = index
  end
end

local function add(code)
  if nb > 0 then
    rotate()
    local slot = cur % nb
    local c, fl, sl = bucket(slot)
    c = c + 1
    calls = calls + 1
    if code % 2 == 1 then
      fl = fl + 1
      fails = fails + 1
    end
    if code >= 2 then
      sl = sl + 1
      slow = slow + 1
    end
    redis.call('SETRANGE', KEYS[2], slot * BB, enc(c) .. enc(fl) .. enc(sl))
    return
  end
  if calls >= size then
    local old = redis.call('GETRANGE', KEYS[2], pos, pos)
    local b = 0
    if old ~= '' then b = string.byte(old) end
    if b % 2 == 1 then fails = fails - 1 end
    if b >= 2 then slow = slow - 1 end
  else
    calls = calls + 1
  end
  redis.call('SETRANGE', KEYS[2], pos, string.char(code))
  if code % 2 == 1 then fails = fails + 1 end
  if code >= 2 then slow = slow + 1 end
  pos = (pos + 1) % size
end
local function should_trip()
  if climit >= 0 and cons >= climit then return true end
  if calls < minthr or calls == 0 then return false end
  if ratio >= 0 and fails >= ratio * calls then return true end
  if sratio >= 0 and slow >= sratio * calls then return true end
  return false
end

if op == 'acquire' then
  if st == 0 then
    permitted = 1
  elseif st ~= 3 then
    if st == 1 and now >= untl then
      st = 2
      gen = gen + 1
      rs = now
      tif, ts, tf = 0, 0, 0
      previous = 'open'
      dirty = true
    end
    if st == 2 then
      if tif + ts + tf < hcalls then
        tif = tif + 1
        permitted, trial = 1, 1
        dirty = true
      elseif hmax >= 0 and tif > 0 and now - rs >= hmax then
        open_()
        previous = 'half_open'
        dirty = true
      end
    end
  end
elseif op == 'record' then
  if token == gen then
    if st == 0 then
      if failed == 0 and slowf == 0 then
        add(0)
        cons = 0
      else
        add(failed + 2 * slowf)
        if failed == 1 then cons = cons + 1 else cons = 0 end
        if should_trip() then
          open_()
          previous = 'closed'
        end
      end
      dirty = true
    elseif st == 2 and tif > 0 then
      tif = tif - 1
      if failed == 1 or slowf == 1 then
        tf = tf + 1
        if tf > hcalls - hsucc then
          open_()
          previous = 'half_open'
        end
      else
        ts = ts + 1
        if ts >= hsucc then
          close_()
          previous = 'half_open'
        end
      end
      dirty = true
    end
  end
elseif op == 'release' then
  if token == gen and st == 2 and tif > 0 then
    tif = tif - 1
    dirty = true
  end
elseif op == 'snapshot' then
  -- closed: the time window as of now (an empty window has nothing to expire)
  if st == 0 and nb > 0 and calls > 0 then
    local before = cur
    rotate()
    if cur ~= before then dirty = true end
  end
elseif op == 'isolate' then
  if st ~= 3 then
    previous = NAMES[st]
    st = 3
    gen = gen + 1
    tif, ts, tf = 0, 0, 0
    dirty = true
  end
elseif op == 'close' or op == 'reset' then
  if st ~= 0 then previous = NAMES[st] end
  close_()
  if op == 'reset' then
    opens = 0
    bd = '0'
  end
  dirty = true
end

if dirty then
  local c = ''
  if cur ~= nil then c = string.format('%.0f', cur) end
  redis.call('HSET', KEYS[1], 'st', st, 'gen', gen, 'cons', cons, 'opens', opens, 'bd', bd,
             'until', string.format('%.0f', untl), 'cs', string.format('%.0f', cs),
             'rs', string.format('%.0f', rs), 'tif', tif, 'ts', ts, 'tf', tf,
             'calls', calls, 'fails', fails, 'slow', slow, 'pos', pos, 'cur', c, 'wk', spec)
  redis.call('EXPIRE', KEYS[1], ttl)
  redis.call('EXPIRE', KEYS[2], ttl)
end
local eff = NAMES[st]
local retry = -1
if st == 1 then
  if now >= untl then eff = 'half_open' else retry = untl - now end
end
return {eff, gen, calls, fails, slow, cons, opens, bd, string.format('%.0f', retry),
        tif, ts, tf, previous, permitted, trial, NAMES[st]}
"""


# -- rate limiter (GCRA) ------------------------------------------------------------------------
# Mirrors buttress._state.gcra.gcra_take on the server's clock (microseconds). KEYS: bucket
# hash (``tat``, ``last``). ARGV: permits, rate (/s), burst, max_wait (s; -1: infinite).
# Reply: the wait in seconds as a string ("0": taken; "inf": never).
BUCKET = (
    """
local permits, rate, burst = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local max_wait = tonumber(ARGV[4])
"""
    + _NOW
    + """
local f = redis.call('HMGET', KEYS[1], 'tat', 'last')
local last = tonumber(f[2])
if last ~= nil and now < last then now = last end
local tat = tonumber(f[1]) or now
local interval = 1000000 / rate
local tolerance = burst * interval
local base = tat
if base < now then base = now end
local new_tat = base + permits * interval
local wait = new_tat - tolerance - now
local eps = 0.001
local function store(t)
  redis.call('HSET', KEYS[1], 'tat', string.format('%.17g', t), 'last', string.format('%.0f', now))
  redis.call('PEXPIRE', KEYS[1], math.max(1, math.ceil((t - now) / 1000)) + 1000)
end
if wait <= eps then
  store(new_tat)
  return '0'
end
if permits * interval > tolerance + eps then return 'inf' end
local max_us = max_wait * 1000000
if max_wait < 0 or wait <= max_us then
  store(new_tat)
  return string.format('%.17g', wait / 1000000)
end
if wait <= max_us + eps then
  store(new_tat)
  return string.format('%.17g', max_wait)
end
return string.format('%.17g', wait / 1000000)
"""
)
