//! The shared store's per-key operations: Lua scripts run by EVALSHA
//! through a [`RedisLink`], each atomic on one key (or on keys sharing one
//! `{hash tag}`), so they work on Redis Cluster and can be pipelined.
//!
//! Their semantics are those of [`MemoryStore`](super::MemoryStore) (the
//! reference; `tests/redis_ops.rs` checks them step by step against it),
//! with every key expiring when what it holds stops mattering, so Redis
//! never grows without bound. Expiry is relative (PEXPIRE `until - now`,
//! at least 1 ms): Redis expires on its own clock, and a replica's clock
//! only decides what a script reads, never when Redis drops a key.
//!
//! Key layout (`P` is `store.prefix`, `smsguard:` by default; `K` the
//! store key, `limit=+99899394`, `hour:*@1700000000000`, ...):
//!
//! | key                | type   | holds                                             |
//! |--------------------|--------|---------------------------------------------------|
//! | `P c:{K}`          | string | rate counters: byte 1, then per rate a form byte, its period (u32 or double), newest slot index (double) and the 7 slots' counts (u16 or u32, newest first), little-endian; the text layout of earlier versions is still read |
//! | `P s:{K}`          | string | spend total (millionths), exact integer           |
//! | `P b:{K}`          | hash   | a block: `since`, `until`, `rule`, `action`, `offence` |
//! | `P o:{K}`          | hash   | offences: `count`, `last`                         |
//! | `P k:{K}`          | hash   | a number's backoff: `s` sends, `l` last sent, `a` last attempt; and the counter of its own limit (`key = "to"`), a field named as the limit's counter keys start (`number=`), in `P c:{K}`'s layout: one key per number |
//! | `P{blocks}:until`  | zset   | index of blocks: member `K`, score `until`        |
//! | `P{blocks}:entries`| hash   | index of blocks: `K` → `since|until|offence|action|rule` |
//! | `P{blocks}:kinds`  | hash   | blocks in the index per kind (`prefix:8`)         |
//!
//! Every operation is one EVALSHA (one round trip once the script is
//! loaded), except `set_block` and `remove_block`: the block key and the
//! index live in different hash slots, so they take two. The index is
//! written first when a block is set and last when one is removed, so it
//! never misses an enforced block (`may_block` never answers a false
//! "none"); a failure between the two calls leaves at worst an index entry
//! whose block is not enforced, dropped when its `until` passes.
//!
//! `trip` takes two as well: one script decides on the key's block and
//! offences together (they share the key's slot), so a trip on a key that
//! any replica already blocked is never a second offence; the index is
//! written after, from what that script answered. Until then the block is
//! enforced by the replica that tripped it (and by any replica whose own
//! trip script reads it), and listed to the others from the index.

use std::sync::{Arc, LazyLock};

use ::redis::{Script, Value};

use super::redis::{Call, LinkError, RedisLink};
use super::{BackoffState, BlockEntry, Escalation};
use crate::base::clock::{ms, Millis};
use crate::config::{self, Action};

/// Lua helpers shared by the scripts: exact integer formatting of Lua
/// numbers (doubles, exact below 2^53) and a PEXPIRE argument.
pub(super) const LUA_PRELUDE: &str = r#"
local function f(x) return string.format('%.0f', x) end
local function ttl(x) return f(math.min(math.max(x, 1), 1e15)) end
"#;

/// Reads a counter string (`HIT_LUA`'s layout) into `rates`: per rate
/// {period, newest slot index, count of the newest slot, ... 7 counts};
/// empty when absent, unreadable or written for another number of rates.
/// The layout is binary, little-endian: a version byte (1), then per rate
/// a form byte and the rate packed in that form: the slot index as a
/// double (exact below 2^53), the period as a u32 when it fits (the form's
/// bit of value 2) else a double, the seven counts as u16 when they all
/// fit (its bit of value 1) else u32. One `struct.unpack` per rate, where
/// the text layout of earlier versions (`p,t,c0,...,c6` per rate joined by
/// `|`, still read) took a pattern match per number; and smaller than that
/// text for the usual small counts (a two-rate counter: 55 bytes, ~59).
pub(super) const LUA_COUNTERS: &str = r#"
local FORMS = {[0] = '<ddIIIIIII', '<ddHHHHHHH', '<IdIIIIIII', '<IdHHHHHHH'}
local SIZES = {[0] = 44, 30, 40, 26}
local function counters(cur, n)
  local rates = {}
  if not cur then return rates end
  if string.byte(cur, 1) == 1 then
    local pos = 2
    for i = 1, n do
      local f = string.byte(cur, pos)
      local form = f and FORMS[f]
      if not form or pos + SIZES[f] > #cur then return {} end
      local v = {struct.unpack(form, cur, pos + 1)}
      pos = v[10]
      v[10] = nil
      rates[i] = v
    end
    if pos ~= #cur + 1 then return {} end
    return rates
  end
  local segs = {}
  for seg in string.gmatch(cur, '[^|]+') do segs[#segs + 1] = seg end
  if #segs ~= n then return rates end
  for i, seg in ipairs(segs) do
    local v = {}
    for x in string.gmatch(seg, '[^,]+') do v[#v + 1] = tonumber(x) end
    if #v ~= 9 then return {} end
    rates[i] = v
  end
  return rates
end
local function encode(rates)
  local parts = {'\1'}
  for i, v in ipairs(rates) do
    local f = 0
    if math.max(v[3], v[4], v[5], v[6], v[7], v[8], v[9]) <= 65535 then f = 1 end
    if v[1] <= 4294967295 then f = f + 2 end
    parts[i + 1] = string.char(f) ..
      struct.pack(FORMS[f], v[1], v[2], v[3], v[4], v[5], v[6], v[7], v[8], v[9])
  end
  return table.concat(parts)
end
local function hit_rates(cur, now, periods)
  local n = #periods
  local rates = counters(cur, n)
  local out, live = {}, 0
  for i = 1, n do
    local period = periods[i]
    local w = math.max(math.ceil(period / 6), 1)
    local idx = math.floor(now / w)
    local r = rates[i]
    local c = {0, 0, 0, 0, 0, 0, 0}
    local t = idx
    if r then
      local p, rt = r[1], r[2]
      if p ~= period then
        -- A new period: what still counted under the old one counts on.
        local age = math.max(math.floor(now / math.max(math.ceil(p / 6), 1)) - rt, 0)
        local carried = 0
        for k = 0, 6 - age do carried = carried + r[3 + k] end
        c[1] = math.min(carried, 4294967295)
      elseif idx > rt then
        local shift = idx - rt
        for k = shift, 6 do c[k + 1] = r[3 + k - shift] end
      else
        for k = 0, 6 do c[k + 1] = r[3 + k] end
        t = rt
      end
    end
    if c[1] < 4294967295 then c[1] = c[1] + 1 end
    local sum = 0
    for k = 1, 7 do sum = sum + c[k] end
    out[i] = sum
    live = math.max(live, (t + 7) * w)
    rates[i] = {period, t, c[1], c[2], c[3], c[4], c[5], c[6], c[7]}
  end
  return rates, out, live
end
local function unhit_rates(rates, at, periods)
  local done = 0
  for i = 1, #periods do
    local period = periods[i]
    local r = rates[i]
    if r[1] == period then
      local w = math.max(math.ceil(period / 6), 1)
      local k = r[2] - math.min(math.floor(at / w), r[2])
      if k <= 6 and r[3 + k] > 0 then
        r[3 + k] = r[3 + k] - 1
        done = done + 1
      end
    end
  end
  return done
end
local function numbers_from(args, first)
  local v = {}
  for i = first, #args do v[i - first + 1] = tonumber(args[i]) end
  return v
end
"#;

/// `hit`: KEYS[1] the counter string; ARGV[1] now, ARGV[2..] the periods.
/// The `Slots` of the memory store, one per rate: slot width ceil(period/6)
/// (at least 1 ms), the attempt counted in the newest slot (a clock that
/// stepped back counts there too), the count the sum of the seven newest
/// slots. A changed number of rates starts afresh, as in memory; a rate
/// whose period changed (a reload) carries what still counted under the
/// old one into its newest slot. One string per key (`LUA_COUNTERS`'s
/// layout): a GET and a SET however many rates.
pub(super) const HIT_LUA: &str = r#"
local now = tonumber(ARGV[1])
local rates, out, live = hit_rates(redis.call('GET', KEYS[1]), now, numbers_from(ARGV, 2))
redis.call('SET', KEYS[1], encode(rates), 'PX', ttl(live - now))
return out
"#;

/// `unhit`: KEYS[1] the counter string; ARGV[1] when the attempt was
/// counted, ARGV[2..] the periods. Takes back one attempt counted by `hit`
/// at that instant from each rate whose period and slot are still there
/// (an attempt a later stage showed was never made, say one that backoff
/// stopped). Returns how many rates gave one back.
pub(super) const UNHIT_LUA: &str = r#"
local periods = numbers_from(ARGV, 2)
local rates = counters(redis.call('GET', KEYS[1]), #periods)
if #rates ~= #periods then return 0 end
local done = unhit_rates(rates, tonumber(ARGV[1]), periods)
if done > 0 then redis.call('SET', KEYS[1], encode(rates), 'KEEPTTL') end
return done
"#;

/// `hash_unhit`: [`UNHIT_LUA`] on a counter kept as field ARGV[1] of the
/// hash KEYS[1] (a number's own counter, in its backoff hash); ARGV[2]
/// when the attempt was counted, ARGV[3..] the periods.
pub(super) const HASH_UNHIT_LUA: &str = r#"
local periods = numbers_from(ARGV, 3)
local rates = counters(redis.call('HGET', KEYS[1], ARGV[1]), #periods)
if #rates ~= #periods then return 0 end
local done = unhit_rates(rates, tonumber(ARGV[2]), periods)
if done > 0 then redis.call('HSET', KEYS[1], ARGV[1], encode(rates)) end
return done
"#;

/// Exact comparison of two non-negative integers in canonical decimal.
pub(super) const LUA_LE: &str = r#"
local function le(a, b)
  if #a ~= #b then return #a < #b end
  return a <= b
end
"#;

/// `spend`: KEYS[1] the total; ARGV amount, cap, ttl. Adds when the new
/// total stays within the cap, else leaves it; exact (Redis integers, the
/// cap compared as a decimal string). Returns {1, new} or {0, unchanged}.
pub(super) const SPEND_LUA: &str = r#"
local key = KEYS[1]
local cur = redis.call('GET', key)
local r = redis.pcall('INCRBY', key, ARGV[1])
if type(r) == 'table' and r.err then return {0, cur or '0'} end
local total = redis.call('GET', key)
if le(total, ARGV[2]) then
  redis.call('PEXPIRE', key, ARGV[3])
  return {1, total}
end
if cur then redis.call('DECRBY', key, ARGV[1]) else redis.call('DEL', key) end
return {0, cur or '0'}
"#;

/// `refund`: KEYS[1] the total; ARGV amount. Never below 0; an absent
/// total stays absent; the expiry is kept.
pub(super) const REFUND_LUA: &str = r#"
local cur = redis.call('GET', KEYS[1])
if not cur then return 0 end
if le(cur, ARGV[1]) then
  redis.call('SET', KEYS[1], '0', 'KEEPTTL')
else
  redis.call('DECRBY', KEYS[1], ARGV[1])
end
return 1
"#;

const GET_LUA: &str = "return redis.call('GET', KEYS[1])";

/// `block`: KEYS[1] the block hash; ARGV now. The entry when it is active.
const BLOCK_LUA: &str = r#"
local e = redis.call('HMGET', KEYS[1], 'since', 'until', 'rule', 'action', 'offence')
if not e[1] or not e[2] then return false end
if tonumber(e[2]) <= tonumber(ARGV[1]) then return false end
return e
"#;

/// `set_block`: KEYS[1] the block hash; ARGV since, until, rule, action,
/// offence, ttl.
const SET_BLOCK_LUA: &str = r#"
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'since', ARGV[1], 'until', ARGV[2], 'rule', ARGV[3],
  'action', ARGV[4], 'offence', ARGV[5])
redis.call('PEXPIRE', KEYS[1], ARGV[6])
return 1
"#;

const DEL_LUA: &str = "return redis.call('DEL', KEYS[1])";

/// `mark`: KEYS[1] the marker that Redis still holds the fleet's state;
/// 1 when it was missing (and is set now), 0 when it was there.
const MARK_LUA: &str = "if redis.call('SET', KEYS[1], '1', 'NX') then return 1 end return 0";

/// The index's shared part: KEYS[1] until (zset), KEYS[2] entries (hash),
/// KEYS[3] kinds (hash). `drop(m)` takes a member out, `trim(now)` drops
/// up to 1,000 expired members (until <= now).
const LUA_INDEX: &str = r#"
local function kind(m)
  local i = string.find(m, '=', 1, true)
  if i then return string.sub(m, 1, i - 1) end
  return m
end
local function drop(m)
  if redis.call('ZREM', KEYS[1], m) == 1 then
    redis.call('HDEL', KEYS[2], m)
    local k = kind(m)
    if redis.call('HINCRBY', KEYS[3], k, -1) <= 0 then redis.call('HDEL', KEYS[3], k) end
  end
end
local function trim(now)
  local gone = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, 1000)
  for _, m in ipairs(gone) do drop(m) end
end
"#;

/// ARGV now, member, until, encoded entry.
const INDEX_ADD_LUA: &str = r#"
trim(ARGV[1])
if redis.call('ZADD', KEYS[1], ARGV[3], ARGV[2]) == 1 then
  redis.call('HINCRBY', KEYS[3], kind(ARGV[2]), 1)
end
redis.call('HSET', KEYS[2], ARGV[2], ARGV[4])
return 1
"#;

/// ARGV member.
const INDEX_REMOVE_LUA: &str = r#"
drop(ARGV[1])
return 1
"#;

/// ARGV now: trims, then {member, entry, ...} of the active blocks.
const INDEX_LIST_LUA: &str = r#"
trim(ARGV[1])
local ms = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. ARGV[1], '+inf')
local out = {}
for _, m in ipairs(ms) do
  local e = redis.call('HGET', KEYS[2], m)
  if e then
    out[#out + 1] = m
    out[#out + 1] = e
  end
end
return out
"#;

/// KEYS[1] the kinds hash (ARGV kind): whether the index holds a block of
/// this kind.
const MAY_BLOCK_LUA: &str = r#"
return tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0') > 0 and 1 or 0
"#;

/// `offend`: KEYS[1] the offence hash; ARGV now, forgive_after. As in
/// memory: forgotten after more than `forgive_after` of quiet.
const OFFEND_LUA: &str = r#"
local now, forgive = tonumber(ARGV[1]), tonumber(ARGV[2])
local got = redis.call('HMGET', KEYS[1], 'count', 'last')
local count, last = tonumber(got[1]) or 0, tonumber(got[2]) or 0
if count > 0 and math.max(now - last, 0) > forgive then count = 0 end
count = math.min(count + 1, 4294967295)
redis.call('HSET', KEYS[1], 'count', f(count), 'last', f(now))
redis.call('PEXPIRE', KEYS[1], ttl(forgive + 1))
return count
"#;

/// `powi(a, b)` for a whole `b >= 0`: square-and-multiply, the same IEEE
/// doubles in the same order as Rust's `f64::powi`.
pub(super) const LUA_POWI: &str = r#"
local function powi(a, b)
  local r = 1.0
  while true do
    if b % 2 == 1 then r = r * a end
    b = math.floor(b / 2)
    if b == 0 then break end
    a = a * a
  end
  return r
end
"#;

/// `trip`: KEYS[1] the block hash, KEYS[2] the offence hash (one slot);
/// ARGV at, base, escalate, max, forgive_after, rule, action, whether the
/// action blocks (1/0), now (for expiry). `Store::trip` of the memory
/// store in one atomic step: a key with an active block at `at` is the
/// same offence (the block is renewed until `max(until, at + duration)`,
/// keeping its offence, since, rule and action, unless it blocks nothing
/// and this trip does); else one more offence is counted (as `OFFEND`)
/// and the key blocked for what it earns. The duration is
/// `Escalation::duration`: `base × escalate^(offence - 1)` (powi), at
/// most `max`, truncated. Returns {since, until, rule, action, offence,
/// renewed (1/0)}.
const TRIP_LUA: &str = r#"
local at, base, esc = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local max, forgive = tonumber(ARGV[4]), tonumber(ARGV[5])
local rule, action, blocks, now = ARGV[6], ARGV[7], ARGV[8] == '1', tonumber(ARGV[9])
local function duration(n)
  local d = base * powi(esc, math.min(math.max(n - 1, 0), 1000))
  if d ~= d or d > max then d = max end
  return math.floor(d)
end
local e = redis.call('HMGET', KEYS[1], 'since', 'until', 'rule', 'action', 'offence')
local since, untl, offence = tonumber(e[1]), tonumber(e[2]), tonumber(e[5])
if since and untl and offence and e[3] and e[4] and untl > at then
  untl = math.max(untl, at + duration(offence))
  local r, a = e[3], e[4]
  if blocks and a ~= 'shadow' and a ~= 'reject' then r, a = rule, action end
  redis.call('HSET', KEYS[1], 'until', f(untl), 'rule', r, 'action', a)
  redis.call('PEXPIRE', KEYS[1], ttl(untl - now))
  return {e[1], f(untl), r, a, f(offence), 1}
end
local got = redis.call('HMGET', KEYS[2], 'count', 'last')
local count, last = tonumber(got[1]) or 0, tonumber(got[2]) or 0
if count > 0 and math.max(at - last, 0) > forgive then count = 0 end
count = math.min(count + 1, 4294967295)
redis.call('HSET', KEYS[2], 'count', f(count), 'last', f(at))
redis.call('PEXPIRE', KEYS[2], ttl(forgive + 1 - math.max(now - at, 0)))
untl = at + duration(count)
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'since', f(at), 'until', f(untl), 'rule', rule,
  'action', action, 'offence', f(count))
redis.call('PEXPIRE', KEYS[1], ttl(untl - now))
return {f(at), f(untl), rule, action, f(count), 0}
"#;

/// The index entry of a tripped block: ARGV now, member, until, encoded
/// entry. As `INDEX_ADD`, but never shortens the entry listed: two
/// replicas' index writes of one block (set, then renewed) may arrive in
/// either order.
const INDEX_TRIP_LUA: &str = r#"
local cur = redis.call('ZSCORE', KEYS[1], ARGV[2])
if cur and tonumber(cur) > tonumber(ARGV[3]) then return 0 end
trim(ARGV[1])
if redis.call('ZADD', KEYS[1], ARGV[3], ARGV[2]) == 1 then
  redis.call('HINCRBY', KEYS[3], kind(ARGV[2]), 1)
end
redis.call('HSET', KEYS[2], ARGV[2], ARGV[4])
return 1
"#;

/// The backoff step shared by [`BACKOFF_JUDGE_LUA`] and
/// [`BACKOFF_HIT_LUA`]: from the arguments of `backoff_judge` (`A`) and
/// the state read (`got`: sends, last sent, last attempt), the state to
/// write and the reply.
pub(super) const LUA_BACKOFF: &str = r#"
local function backoff_step(A, got)
  local now, free, base = tonumber(A[1]), tonumber(A[2]), tonumber(A[3])
  local factor, max, reset = tonumber(A[4]), tonumber(A[5]), tonumber(A[6])
  local hold, blocks = tonumber(A[7]), A[8] == '1'
  local function wait(sends)
    local k = math.min(math.max(sends - free, 0), 1000)
    local w = base * powi(factor, k)
    if w == w and w ~= math.huge and w < max then return math.floor(w) end
    return max
  end
  local s, l, a = tonumber(got[1]) or 0, tonumber(got[2]) or 0, tonumber(got[3]) or 0
  if s > 0 and math.max(now - a, 0) >= reset then s, l, a = 0, 0, 0 end
  local bs, bl, ba = s, l, a
  a = now
  local outcome, v = 0, 0
  if bs >= free then
    local ready_at = bl + wait(bs)
    if now < ready_at then
      v = ready_at - now
      if hold >= 0 and v <= hold then outcome = 1 else outcome = 2 end
    end
  end
  local at = now
  if outcome == 1 then at = now + v end
  local reserved = 1
  if outcome == 2 and blocks then
    reserved = 0
  else
    s = math.min(bs + 1, 4294967295)
    l = at
  end
  return {'s', f(s), 'l', f(l), 'a', f(a)}, {f(bs), f(bl), f(ba), outcome, f(v), reserved, f(at)}
end
"#;

/// `backoff_judge`: KEYS[1] the backoff hash; ARGV now, free, base,
/// factor, max, reset_after, hold_up_to (-1: none), blocks (1/0). What
/// `Backoff::check` in src/policy/backoff.rs does inside `store.backoff`.
/// The wait is `base × factor^k` with `powi`'s square-and-multiply (the
/// same IEEE doubles in the same order as Rust's `f64::powi`), truncated.
/// Returns {sends, last_sent, last_attempt (before), outcome (0 ready,
/// 1 hold, 2 wait), hold or wait ms, reserved (1/0), at}.
pub(super) const BACKOFF_JUDGE_LUA: &str = r#"
local set, reply = backoff_step(ARGV, redis.call('HMGET', KEYS[1], 's', 'l', 'a'))
redis.call('HSET', KEYS[1], unpack(set))
redis.call('PEXPIRE', KEYS[1], ttl(tonumber(ARGV[6])))
return reply
"#;

/// `backoff_hit`: `backoff_judge` and `hit` in one, on a number whose own
/// limit counter is kept in its backoff hash (one key for both): KEYS[1]
/// the hash; ARGV[1..8] as `backoff_judge`; ARGV[9] the counter's field;
/// ARGV[10..] its periods. The hash lives as long as the longer of the
/// two needs it. Replies `backoff_judge`'s seven values, then the counts.
pub(super) const BACKOFF_HIT_LUA: &str = r#"
local got = redis.call('HMGET', KEYS[1], 's', 'l', 'a', ARGV[9])
local set, reply = backoff_step(ARGV, got)
local now = tonumber(ARGV[1])
local rates, out, live = hit_rates(got[4], now, numbers_from(ARGV, 10))
set[7], set[8] = ARGV[9], encode(rates)
redis.call('HSET', KEYS[1], unpack(set))
redis.call('PEXPIRE', KEYS[1], ttl(math.max(tonumber(ARGV[6]), live - now)))
for i = 1, #out do reply[7 + i] = out[i] end
return reply
"#;

/// `backoff_undo`: KEYS[1]; ARGV before.sends, before.last_sent, at.
pub(super) const BACKOFF_UNDO_LUA: &str = r#"
local got = redis.call('HMGET', KEYS[1], 's', 'l')
if not got[1] then return 0 end
local bs, bl, at = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
if tonumber(got[2]) == at and tonumber(got[1]) == math.min(bs + 1, 4294967295) then
  redis.call('HSET', KEYS[1], 's', f(bs), 'l', f(bl))
  return 1
end
return 0
"#;

const BACKOFF_STATE_LUA: &str = "return redis.call('HMGET', KEYS[1], 's', 'l', 'a')";

fn script(parts: &[&str]) -> Script {
    Script::new(&parts.concat())
}

pub static HIT: LazyLock<Script> = LazyLock::new(|| script(&[LUA_PRELUDE, LUA_COUNTERS, HIT_LUA]));
pub static UNHIT: LazyLock<Script> =
    LazyLock::new(|| script(&[LUA_PRELUDE, LUA_COUNTERS, UNHIT_LUA]));
pub static HASH_UNHIT: LazyLock<Script> =
    LazyLock::new(|| script(&[LUA_PRELUDE, LUA_COUNTERS, HASH_UNHIT_LUA]));
pub static BACKOFF_HIT: LazyLock<Script> = LazyLock::new(|| {
    script(&[
        LUA_PRELUDE,
        LUA_POWI,
        LUA_COUNTERS,
        LUA_BACKOFF,
        BACKOFF_HIT_LUA,
    ])
});
pub static SPEND: LazyLock<Script> = LazyLock::new(|| script(&[LUA_LE, SPEND_LUA]));
pub static REFUND: LazyLock<Script> = LazyLock::new(|| script(&[LUA_LE, REFUND_LUA]));
pub static GET: LazyLock<Script> = LazyLock::new(|| Script::new(GET_LUA));
pub static BLOCK: LazyLock<Script> = LazyLock::new(|| Script::new(BLOCK_LUA));
pub static SET_BLOCK: LazyLock<Script> = LazyLock::new(|| Script::new(SET_BLOCK_LUA));
pub static DEL: LazyLock<Script> = LazyLock::new(|| Script::new(DEL_LUA));
pub static MARK: LazyLock<Script> = LazyLock::new(|| Script::new(MARK_LUA));
pub static INDEX_ADD: LazyLock<Script> = LazyLock::new(|| script(&[LUA_INDEX, INDEX_ADD_LUA]));
pub static INDEX_REMOVE: LazyLock<Script> =
    LazyLock::new(|| script(&[LUA_INDEX, INDEX_REMOVE_LUA]));
pub static INDEX_LIST: LazyLock<Script> = LazyLock::new(|| script(&[LUA_INDEX, INDEX_LIST_LUA]));
pub static MAY_BLOCK: LazyLock<Script> = LazyLock::new(|| Script::new(MAY_BLOCK_LUA));
pub static OFFEND: LazyLock<Script> = LazyLock::new(|| script(&[LUA_PRELUDE, OFFEND_LUA]));
pub static BACKOFF_JUDGE: LazyLock<Script> =
    LazyLock::new(|| script(&[LUA_PRELUDE, LUA_POWI, LUA_BACKOFF, BACKOFF_JUDGE_LUA]));
pub static TRIP: LazyLock<Script> = LazyLock::new(|| script(&[LUA_PRELUDE, LUA_POWI, TRIP_LUA]));
pub static INDEX_TRIP: LazyLock<Script> = LazyLock::new(|| script(&[LUA_INDEX, INDEX_TRIP_LUA]));
pub static BACKOFF_UNDO: LazyLock<Script> =
    LazyLock::new(|| script(&[LUA_PRELUDE, BACKOFF_UNDO_LUA]));
pub static BACKOFF_STATE: LazyLock<Script> = LazyLock::new(|| Script::new(BACKOFF_STATE_LUA));

/// Longest relative expiry given to Redis (about 31,000 years).
const TTL_MAX: Millis = 1_000_000_000_000_000;

fn ttl(ms: Millis) -> String {
    ms.clamp(1, TTL_MAX).to_string()
}

/// Tables of the store, each its own key space.
pub mod table {
    pub const COUNTERS: &str = "c";
    pub const SPEND: &str = "s";
    pub const BLOCKS: &str = "b";
    pub const OFFENCES: &str = "o";
    pub const BACKOFF: &str = "k";
}

/// The Redis key of store key `key` in `table`: `smsguard:c:{key}`. The
/// braces make the whole store key the Cluster hash tag, so keys of one
/// store key (say a block and its offences) share a slot.
pub fn key(link: &RedisLink, table: &str, key: &str) -> String {
    let p = link.prefix();
    let mut k = String::with_capacity(p.len() + table.len() + key.len() + 3);
    k.push_str(p);
    k.push_str(table);
    k.push_str(":{");
    k.push_str(key);
    k.push('}');
    k
}

/// The three keys of the block index (one hash slot: `{blocks}`).
pub fn index_keys(link: &RedisLink) -> [String; 3] {
    let p = link.prefix();
    [
        format!("{p}{{blocks}}:until"),
        format!("{p}{{blocks}}:entries"),
        format!("{p}{{blocks}}:kinds"),
    ]
}

fn unexpected(what: &str, v: &Value) -> LinkError {
    LinkError::Server(format!("unexpected answer to {what}: {v:?}"))
}

fn int(v: &Value) -> Option<u64> {
    match v {
        Value::Int(n) => u64::try_from(*n).ok(),
        Value::BulkString(b) => std::str::from_utf8(b).ok()?.parse().ok(),
        Value::SimpleString(s) => s.parse().ok(),
        _ => None,
    }
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    }
}

fn array(v: Value, what: &str) -> Result<Vec<Value>, LinkError> {
    match v {
        Value::Array(a) => Ok(a),
        other => Err(unexpected(what, &other)),
    }
}

/// Counts one attempt on `key` in a window per period and returns each
/// window's count, this attempt included (`Store::hit`). One round trip.
///
/// Unlike the memory store, a rate whose period changed (a reload) starts
/// afresh: the memory store keeps its slots, counted in the old width.
pub async fn hit(
    link: &RedisLink,
    key: &str,
    periods: &[Millis],
    now: Millis,
) -> Result<Vec<u64>, LinkError> {
    if periods.is_empty() {
        return Ok(Vec::new());
    }
    let c = hit_call(link, key, periods, now);
    read_hit(link.eval(c.script, &c.keys, &c.args).await?, periods.len())
}

/// The call of [`hit`], for [`RedisLink::eval_many`].
pub fn hit_call(link: &RedisLink, key: &str, periods: &[Millis], now: Millis) -> Call<'static> {
    let mut args = Vec::with_capacity(periods.len() + 1);
    args.push(now.to_string());
    args.extend(periods.iter().map(|p| p.to_string()));
    Call {
        script: &HIT,
        keys: vec![self::key(link, table::COUNTERS, key)],
        args,
    }
}

/// Reads the answer of a [`hit_call`] with `n` periods.
pub fn read_hit(v: Value, n: usize) -> Result<Vec<u64>, LinkError> {
    let counts = array(v, "hit")?;
    if counts.len() != n {
        return Err(LinkError::Server(format!(
            "hit answered {} counts for {n} periods",
            counts.len(),
        )));
    }
    counts
        .iter()
        .map(|c| int(c).ok_or_else(|| unexpected("hit", c)))
        .collect()
}

/// Takes back one attempt that [`hit`] counted at `at` (see `UNHIT_LUA`).
pub fn unhit_call(link: &RedisLink, key: &str, periods: &[Millis], at: Millis) -> Call<'static> {
    let mut c = hit_call(link, key, periods, at);
    c.script = &UNHIT;
    c
}

/// Adds `amount` to the spend under `key` unless the total would pass
/// `cap`: `Ok(new total)`, or `Err(unchanged total)` (`Store::spend`).
/// Check and add are one atomic step: concurrent replicas never overshoot.
/// The key expires at `expire_at` (the end of its budget window, on the
/// caller's clock, given to Redis as `expire_at - now`). One round trip.
///
/// Totals are Redis integers: a total past `i64::MAX` millionths is
/// refused (the memory store's limit is `u64::MAX`).
pub async fn spend(
    link: &RedisLink,
    key: &str,
    amount: u64,
    cap: u64,
    now: Millis,
    expire_at: Millis,
) -> Result<Result<u64, u64>, LinkError> {
    match spend_call(link, key, amount, cap, now, expire_at) {
        None => Ok(Err(spent(link, key).await?)),
        Some(c) => read_spend(link.eval(c.script, &c.keys, &c.args).await?),
    }
}

/// The call of [`spend`] (`None`: an amount past Redis integers, which is
/// refused).
pub fn spend_call(
    link: &RedisLink,
    key: &str,
    amount: u64,
    cap: u64,
    now: Millis,
    expire_at: Millis,
) -> Option<Call<'static>> {
    i64::try_from(amount).ok()?;
    Some(Call {
        script: &SPEND,
        keys: vec![self::key(link, table::SPEND, key)],
        args: vec![
            amount.to_string(),
            cap.to_string(),
            ttl(expire_at.saturating_sub(now)),
        ],
    })
}

/// Reads the answer of a [`spend_call`].
pub fn read_spend(v: Value) -> Result<Result<u64, u64>, LinkError> {
    let a = array(v, "spend")?;
    match (a.first().and_then(int), a.get(1).and_then(int)) {
        (Some(1), Some(t)) => Ok(Ok(t)),
        (Some(0), Some(t)) => Ok(Err(t)),
        _ => Err(LinkError::Server(format!(
            "unexpected answer to spend: {a:?}"
        ))),
    }
}

/// Takes `amount` back from the spend under `key`, never below 0
/// (`Store::refund`). One round trip.
pub async fn refund(link: &RedisLink, key: &str, amount: u64) -> Result<(), LinkError> {
    let c = refund_call(link, key, amount);
    link.eval(c.script, &c.keys, &c.args).await?;
    Ok(())
}

/// The call of [`refund`].
pub fn refund_call(link: &RedisLink, key: &str, amount: u64) -> Call<'static> {
    Call {
        script: &REFUND,
        keys: vec![self::key(link, table::SPEND, key)],
        args: vec![amount.to_string()],
    }
}

/// The spend under `key` (`Store::spent`). One round trip.
pub async fn spent(link: &RedisLink, key: &str) -> Result<u64, LinkError> {
    let v = link
        .eval(&GET, &[self::key(link, table::SPEND, key)], &[] as &[&str])
        .await?;
    match v {
        Value::Nil => Ok(0),
        v => int(&v).ok_or_else(|| unexpected("spent", &v)),
    }
}

/// The active block on `key` (`Store::block`). One round trip.
pub async fn block(
    link: &RedisLink,
    key: &str,
    now: Millis,
) -> Result<Option<BlockEntry>, LinkError> {
    let v = link
        .eval(
            &BLOCK,
            &[self::key(link, table::BLOCKS, key)],
            &[now.to_string()],
        )
        .await?;
    if v == Value::Nil {
        return Ok(None);
    }
    let f = array(v, "block")?;
    let get = |i: usize| f.get(i).and_then(text);
    let entry = (|| {
        Some(BlockEntry {
            since: get(0)?.parse().ok()?,
            until: get(1)?.parse().ok()?,
            rule: Arc::from(get(2)?),
            action: get(3)?.parse().ok()?,
            offence: get(4)?.parse().ok()?,
        })
    })();
    entry
        .map(Some)
        .ok_or_else(|| LinkError::Server(format!("unreadable block entry for {key}: {f:?}")))
}

fn encode(e: &BlockEntry) -> String {
    format!(
        "{}|{}|{}|{}|{}",
        e.since,
        e.until,
        e.offence,
        e.action.as_str(),
        e.rule
    )
}

fn decode(s: &str) -> Option<BlockEntry> {
    let mut p = s.splitn(5, '|');
    Some(BlockEntry {
        since: p.next()?.parse().ok()?,
        until: p.next()?.parse().ok()?,
        offence: p.next()?.parse().ok()?,
        action: p.next()?.parse::<Action>().ok()?,
        rule: Arc::from(p.next()?),
    })
}

/// Sets the block on `key` (`Store::set_block`); it expires at
/// `entry.until` (given to Redis as `until - now`). Two round trips: the
/// index (listed by [`blocks`], counted by [`may_block`]), then the block.
pub async fn set_block(
    link: &RedisLink,
    key: &str,
    entry: &BlockEntry,
    now: Millis,
) -> Result<(), LinkError> {
    let args = [
        now.to_string(),
        key.to_string(),
        entry.until.to_string(),
        encode(entry),
    ];
    link.eval(&INDEX_ADD, &index_keys(link), &args).await?;
    let args = [
        entry.since.to_string(),
        entry.until.to_string(),
        entry.rule.to_string(),
        entry.action.as_str().to_string(),
        entry.offence.to_string(),
        ttl(entry.until.saturating_sub(now)),
    ];
    link.eval(&SET_BLOCK, &[self::key(link, table::BLOCKS, key)], &args)
        .await?;
    Ok(())
}

/// Removes the block on `key`; whether Redis still held one (an expired
/// one is gone from Redis: false, where the memory store may say true).
/// Two round trips: the block, then the index.
pub async fn remove_block(link: &RedisLink, key: &str) -> Result<bool, LinkError> {
    let v = link
        .eval(&DEL, &[self::key(link, table::BLOCKS, key)], &[] as &[&str])
        .await?;
    let removed = int(&v).ok_or_else(|| unexpected("remove_block", &v))? > 0;
    link.eval(&INDEX_REMOVE, &index_keys(link), &[key]).await?;
    Ok(removed)
}

/// Active blocks (until after `now`), sorted by key, for the admin API;
/// expired ones are trimmed from the index. One round trip.
pub async fn blocks(link: &RedisLink, now: Millis) -> Result<Vec<(String, BlockEntry)>, LinkError> {
    let v = link
        .eval(&INDEX_LIST, &index_keys(link), &[now.to_string()])
        .await?;
    let a = array(v, "blocks")?;
    let mut out = Vec::with_capacity(a.len() / 2);
    for pair in a.chunks(2) {
        let (Some(k), Some(e)) = (pair.first().and_then(text), pair.get(1).and_then(text)) else {
            return Err(LinkError::Server(format!(
                "unreadable block index: {pair:?}"
            )));
        };
        let e = decode(&e)
            .ok_or_else(|| LinkError::Server(format!("unreadable block index entry {k}: {e}")))?;
        out.push((k, e));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// Whether Redis lost the fleet's state since this was last asked: the
/// marker it sets (beside the block index, in its slot) is gone. A Redis
/// restarted without persistence, flushed, or new. One round trip.
pub async fn state_lost(link: &RedisLink) -> Result<bool, LinkError> {
    let marker = format!("{}{{blocks}}:kept", link.prefix());
    let v = link.eval(&MARK, &[marker], &[] as &[&str]).await?;
    Ok(int(&v).ok_or_else(|| unexpected("mark", &v))? == 1)
}

/// Whether the index holds a block (maybe expired, not yet trimmed) of
/// this kind (`prefix:8`, `to`): false means no block of it is set.
/// One round trip.
pub async fn may_block(link: &RedisLink, kind: &str) -> Result<bool, LinkError> {
    let [_, _, kinds] = index_keys(link);
    let v = link.eval(&MAY_BLOCK, &[kinds], &[kind]).await?;
    Ok(int(&v).ok_or_else(|| unexpected("may_block", &v))? > 0)
}

/// Records one more offence on `key` and returns how many are remembered
/// (forgotten after more than `forgive_after` of quiet: the key expires
/// then). One round trip.
pub async fn offend(
    link: &RedisLink,
    key: &str,
    now: Millis,
    forgive_after: Millis,
) -> Result<u32, LinkError> {
    let v = link
        .eval(
            &OFFEND,
            &[self::key(link, table::OFFENCES, key)],
            &[now.to_string(), forgive_after.min(TTL_MAX).to_string()],
        )
        .await?;
    int(&v)
        .and_then(|n| u32::try_from(n).ok())
        .ok_or_else(|| unexpected("offend", &v))
}

/// A rule tripped on `key` at `at` (`Store::trip`, see `TRIP_LUA`): one
/// atomic step on the key's block and offences records one more offence
/// and blocks the key, or, when the key already has an active block (set
/// by any replica), renews that block as the same offence. Then the index
/// lists the block (never shortened there). `now` is the caller's clock
/// for expiries (later than `at` when a trip made while Redis was away is
/// written). Returns the block as Redis now holds it. Two round trips.
pub async fn trip(
    link: &RedisLink,
    key: &str,
    at: Millis,
    now: Millis,
    esc: &Escalation,
    rule: &str,
    action: Action,
) -> Result<BlockEntry, LinkError> {
    let keys = [
        self::key(link, table::BLOCKS, key),
        self::key(link, table::OFFENCES, key),
    ];
    let args = [
        at.to_string(),
        esc.base.min(TTL_MAX).to_string(),
        // Shortest text that reads back as the same double.
        format!("{:?}", esc.escalate),
        esc.max.min(TTL_MAX).to_string(),
        esc.forgive_after.min(TTL_MAX).to_string(),
        rule.to_string(),
        action.as_str().to_string(),
        if action.blocks() { "1" } else { "0" }.to_string(),
        now.max(at).to_string(),
    ];
    let v = link.eval(&TRIP, &keys, &args).await?;
    let f = array(v, "trip")?;
    let get = |i: usize| f.get(i).and_then(text);
    let entry = (|| {
        Some(BlockEntry {
            since: get(0)?.parse().ok()?,
            until: get(1)?.parse().ok()?,
            rule: Arc::from(get(2)?),
            action: get(3)?.parse().ok()?,
            offence: get(4)?.parse().ok()?,
        })
    })()
    .ok_or_else(|| LinkError::Server(format!("unexpected answer to trip: {f:?}")))?;
    let args = [
        now.to_string(),
        key.to_string(),
        entry.until.to_string(),
        encode(&entry),
    ];
    link.eval(&INDEX_TRIP, &index_keys(link), &args).await?;
    Ok(entry)
}

/// The backoff stage's settings (src/policy/backoff.rs), as the script
/// needs them.
#[derive(Debug, Clone, PartialEq)]
pub struct BackoffParams {
    pub free: u32,
    pub base: Millis,
    pub factor: f64,
    pub max: Millis,
    pub reset_after: Millis,
    pub hold_up_to: Option<Millis>,
    /// Whether a send that must wait is stopped (the stage's action
    /// blocks): then it reserves nothing; else it goes and counts.
    pub blocks: bool,
}

impl BackoffParams {
    /// `action` is the stage's effective action.
    pub fn new(b: &config::Backoff, action: Action) -> Self {
        BackoffParams {
            free: b.free,
            base: ms(b.base),
            factor: b.factor,
            max: ms(b.max),
            reset_after: ms(b.reset_after),
            hold_up_to: b.hold_up_to.map(ms),
            blocks: action.blocks(),
        }
    }

    /// Wait required after the previous send when `sends` were made
    /// (as `Backoff::wait`).
    pub fn wait(&self, sends: u32) -> Millis {
        let k = sends.saturating_sub(self.free);
        let w = self.base as f64 * self.factor.powi(k.min(1_000) as i32);
        if w.is_finite() && w < self.max as f64 {
            w as Millis
        } else {
            self.max
        }
    }

    fn args(&self, now: Millis) -> [String; 8] {
        [
            now.to_string(),
            self.free.to_string(),
            self.base.to_string(),
            // Shortest text that reads back as the same double.
            format!("{:?}", self.factor),
            self.max.to_string(),
            self.reset_after.min(TTL_MAX).to_string(),
            self.hold_up_to.map_or("-1".into(), |h| h.to_string()),
            if self.blocks { "1" } else { "0" }.into(),
        ]
    }
}

/// What the backoff stage decided for one send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackoffDecision {
    /// It may go now.
    Ready,
    /// It goes after this many ms (within `hold_up_to`).
    Hold(Millis),
    /// It would have to wait this many ms: blocked, or (monitored) sent
    /// and counted anyway.
    Wait(Millis),
}

/// A reserved slot, to give back with [`backoff_undo`] when a later stage
/// blocks the send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackoffReservation {
    pub before: BackoffState,
    pub at: Millis,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackoffJudgement {
    /// The state the send was judged on (after a quiet spell's reset).
    pub before: BackoffState,
    pub decision: BackoffDecision,
    /// Set when the send counted (every outcome but a blocking wait).
    pub reservation: Option<BackoffReservation>,
}

/// `Backoff::check` of src/policy/backoff.rs in one atomic step on the
/// number's backoff key: reset after `reset_after` of quiet, judge, record
/// the attempt, count the send unless a blocking wait stops it. The key
/// expires `reset_after` after this attempt. One round trip.
pub async fn backoff_judge(
    link: &RedisLink,
    key: &str,
    now: Millis,
    params: &BackoffParams,
) -> Result<BackoffJudgement, LinkError> {
    let c = backoff_judge_call(link, key, now, params);
    read_backoff_judge(link.eval(c.script, &c.keys, &c.args).await?)
}

/// The call of [`backoff_judge`].
pub fn backoff_judge_call(
    link: &RedisLink,
    key: &str,
    now: Millis,
    params: &BackoffParams,
) -> Call<'static> {
    Call {
        script: &BACKOFF_JUDGE,
        keys: vec![self::key(link, table::BACKOFF, key)],
        args: params.args(now).to_vec(),
    }
}

/// Reads the answer of a [`backoff_judge_call`].
pub fn read_backoff_judge(v: Value) -> Result<BackoffJudgement, LinkError> {
    let a = array(v, "backoff_judge")?;
    let n: Vec<u64> = a.iter().filter_map(int).collect();
    let &[sends, last_sent, last_attempt, outcome, value, reserved, at] = n.as_slice() else {
        return Err(LinkError::Server(format!(
            "unexpected answer to backoff_judge: {a:?}"
        )));
    };
    let before = BackoffState {
        sends: u32::try_from(sends).unwrap_or(u32::MAX),
        last_sent,
        last_attempt,
    };
    let decision = match outcome {
        0 => BackoffDecision::Ready,
        1 => BackoffDecision::Hold(value),
        _ => BackoffDecision::Wait(value),
    };
    Ok(BackoffJudgement {
        before,
        decision,
        reservation: (reserved == 1).then_some(BackoffReservation { before, at }),
    })
}

/// The call of `backoff_judge` and `hit` in one (`BACKOFF_HIT_LUA`):
/// the backoff step of number `key` and the hit on its own limit counter,
/// kept as `field` of the number's backoff hash rather than a key of its
/// own. Read the answer with [`read_backoff_hit`]; take a hit back with
/// [`hash_unhit_call`].
pub fn backoff_hit_call(
    link: &RedisLink,
    key: &str,
    now: Millis,
    params: &BackoffParams,
    field: &str,
    periods: &[Millis],
) -> Call<'static> {
    let mut args = Vec::with_capacity(9 + periods.len());
    args.extend(params.args(now));
    args.push(field.to_string());
    args.extend(periods.iter().map(|p| p.to_string()));
    Call {
        script: &BACKOFF_HIT,
        keys: vec![self::key(link, table::BACKOFF, key)],
        args,
    }
}

/// Reads the answer of a [`backoff_hit_call`] with `n` periods: the
/// backoff judgement and the counts.
pub fn read_backoff_hit(v: Value, n: usize) -> Result<(BackoffJudgement, Vec<u64>), LinkError> {
    let mut a = array(v, "backoff_hit")?;
    if a.len() != 7 + n {
        return Err(LinkError::Server(format!(
            "backoff_hit answered {} values for {n} periods",
            a.len()
        )));
    }
    let counts = a.split_off(7);
    let judged = read_backoff_judge(Value::Array(a))?;
    let counts = read_hit(Value::Array(counts), n)?;
    Ok((judged, counts))
}

/// Takes back one attempt that [`backoff_hit_call`] counted at `at` in
/// the counter kept as `field` of number `key`'s backoff hash.
pub fn hash_unhit_call(
    link: &RedisLink,
    key: &str,
    field: &str,
    periods: &[Millis],
    at: Millis,
) -> Call<'static> {
    let mut args = Vec::with_capacity(2 + periods.len());
    args.push(field.to_string());
    args.push(at.to_string());
    args.extend(periods.iter().map(|p| p.to_string()));
    Call {
        script: &HASH_UNHIT,
        keys: vec![self::key(link, table::BACKOFF, key)],
        args,
    }
}

/// Gives back a reserved slot (`Backoff::undo`): only when no other send
/// counted since. Whether it was given back. One round trip.
pub async fn backoff_undo(
    link: &RedisLink,
    key: &str,
    r: &BackoffReservation,
) -> Result<bool, LinkError> {
    let c = backoff_undo_call(link, key, r);
    let v = link.eval(c.script, &c.keys, &c.args).await?;
    Ok(int(&v).ok_or_else(|| unexpected("backoff_undo", &v))? == 1)
}

/// The call of [`backoff_undo`].
pub fn backoff_undo_call(link: &RedisLink, key: &str, r: &BackoffReservation) -> Call<'static> {
    Call {
        script: &BACKOFF_UNDO,
        keys: vec![self::key(link, table::BACKOFF, key)],
        args: vec![
            r.before.sends.to_string(),
            r.before.last_sent.to_string(),
            r.at.to_string(),
        ],
    }
}

/// The stored backoff state (default when absent or expired).
pub async fn backoff_state(link: &RedisLink, key: &str) -> Result<BackoffState, LinkError> {
    let v = link
        .eval(
            &BACKOFF_STATE,
            &[self::key(link, table::BACKOFF, key)],
            &[] as &[&str],
        )
        .await?;
    let a = array(v, "backoff_state")?;
    let get = |i: usize| a.get(i).and_then(int).unwrap_or(0);
    Ok(BackoffState {
        sends: u32::try_from(get(0)).unwrap_or(u32::MAX),
        last_sent: get(1),
        last_attempt: get(2),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The script's powi: square-and-multiply, as Rust's `f64::powi`
    /// (compiler-rt's `__powidf2`) does it.
    fn powi(mut a: f64, mut b: u32) -> f64 {
        let mut r = 1.0;
        loop {
            if b % 2 == 1 {
                r *= a;
            }
            b /= 2;
            if b == 0 {
                break;
            }
            a *= a;
        }
        r
    }

    #[test]
    fn the_scripts_powi_is_rusts() {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let factor = 1.0 + (x % 100_000) as f64 / 7_919.0;
            let k = (x >> 20) as u32 % 1_001;
            let (a, b) = (factor.powi(k as i32), powi(factor, k));
            assert!(
                a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan()),
                "{factor}^{k}: {a} vs {b}"
            );
        }
    }

    #[test]
    fn block_entries_read_back() {
        let e = BlockEntry {
            since: 1,
            until: 2,
            rule: Arc::from("limit:a|b"),
            action: Action::Reject,
            offence: 3,
        };
        assert_eq!(decode(&encode(&e)), Some(e));
    }
}
