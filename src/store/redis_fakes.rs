//! Shadow fakes shared between replicas through Redis, so a fake one
//! replica answered is answered the same by every other
//! ([`FakeStore::attach`](crate::pipeline::shadow::FakeStore::attach)).
//!
//! Key layout (`P` is `store.prefix`; each key its own hash slot, so it
//! works on Redis Cluster):
//!
//! | key                  | type   | holds                                         |
//! |----------------------|--------|-----------------------------------------------|
//! | `P f:{sid}`          | string | a fake by sid (or `CF.../Participants/id`), as `FakeStore` encodes it |
//! | `P v:{VA...\|+1555}` | string | a shadowed verification: `stamp\|sid`, or `stamp\|` once forgotten |
//!
//! Every key expires after `shadow.retention` (PX, on Redis's clock).
//! A verification is written with a stamp (microseconds since the epoch,
//! rising in each replica) and a write older than what is there is
//! dropped: a remember and a forget sent concurrently land in the order
//! they were made, and a forget stays (as `stamp|`) until it expires.

use std::sync::LazyLock;
use std::time::Duration;

use ::redis::{Script, Value};

use super::redis::{Call, LinkError, RedisLink};
use super::redis_ops::key;

/// Tables of the shared fakes, beside those of `redis_ops::table`.
pub mod table {
    /// Fakes by sid.
    pub const FAKES: &str = "f";
    /// Shadowed verifications by service and number.
    pub const VERIFICATIONS: &str = "v";
}

/// KEYS[1]; ARGV[1] the value, ARGV[2] the expiry (ms).
const PUT_LUA: &str = "redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) return 1";

/// KEYS[1]. `{value, pttl}`, or nil when absent.
const FETCH_LUA: &str = r#"
local v = redis.call('GET', KEYS[1])
if not v then return false end
return {v, redis.call('PTTL', KEYS[1])}
"#;

/// KEYS[1]; ARGV[1] the stamp, ARGV[2] the sid (empty: forgotten),
/// ARGV[3] the expiry (ms). Writes unless what is there is newer; 1 when
/// written.
const PUT_STAMPED_LUA: &str = r#"
local cur = redis.call('GET', KEYS[1])
if cur then
  local i = string.find(cur, '|', 1, true)
  local s = i and tonumber(string.sub(cur, 1, i - 1))
  if s and s > tonumber(ARGV[1]) then return 0 end
end
redis.call('SET', KEYS[1], ARGV[1] .. '|' .. ARGV[2], 'PX', ARGV[3])
return 1
"#;

static PUT: LazyLock<Script> = LazyLock::new(|| Script::new(PUT_LUA));
static FETCH: LazyLock<Script> = LazyLock::new(|| Script::new(FETCH_LUA));
static PUT_STAMPED: LazyLock<Script> = LazyLock::new(|| Script::new(PUT_STAMPED_LUA));

/// Longest expiry given to Redis (about 31,000 years).
const TTL_MAX_MS: u128 = 1_000_000_000_000_000;

fn ttl_ms(ttl: Duration) -> String {
    ttl.as_millis().clamp(1, TTL_MAX_MS).to_string()
}

fn unexpected(what: &str, v: &Value) -> LinkError {
    LinkError::Server(format!("unexpected answer to {what}: {}", kind(v)))
}

/// The shape of an answer, never its content (it may hold a message body).
fn kind(v: &Value) -> &'static str {
    match v {
        Value::Nil => "nil",
        Value::Int(_) => "integer",
        Value::BulkString(_) => "bulk string",
        Value::SimpleString(_) => "simple string",
        Value::Array(_) => "array",
        _ => "other",
    }
}

/// Stores `value` under `k` in `table` for `ttl`, batched with the other
/// writes made meanwhile (a flood of shadowed sends costs a round trip per
/// batch, not per fake).
pub async fn put(
    link: &RedisLink,
    table: &str,
    k: &str,
    value: &[u8],
    ttl: Duration,
) -> Result<(), LinkError> {
    let ttl = ttl_ms(ttl);
    match std::str::from_utf8(value) {
        Ok(text) => link
            .eval_batched(Call {
                script: &PUT,
                keys: vec![key(link, table, k)],
                args: vec![text.to_string(), ttl],
            })
            .await
            .map(|_| ()),
        Err(_) => link
            .eval(&PUT, &[key(link, table, k)], &[value, ttl.as_bytes()])
            .await
            .map(|_| ()),
    }
}

/// What is stored under `k` in `table`, and how long it has left. One
/// round trip.
pub async fn fetch(
    link: &RedisLink,
    table: &str,
    k: &str,
) -> Result<Option<(Vec<u8>, Duration)>, LinkError> {
    let v = link
        .eval(&FETCH, &[key(link, table, k)], &[] as &[&str])
        .await?;
    match v {
        Value::Nil => Ok(None),
        Value::Array(a) => match a.as_slice() {
            [Value::BulkString(b), Value::Int(pttl)] => {
                // -1 (no expiry) cannot happen: every write sets one.
                let left = Duration::from_millis(u64::try_from(*pttl).unwrap_or(0));
                Ok(Some((b.clone(), left)))
            }
            // Expired between the GET and the PTTL.
            [Value::BulkString(_), Value::Int(_), ..] => Ok(None),
            _ => Err(unexpected("fetch", &Value::Array(a))),
        },
        other => Err(unexpected("fetch", &other)),
    }
}

/// A shadowed verification as Redis holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StampedSid {
    /// When it was written (microseconds since the epoch).
    pub stamp: u64,
    /// The fake verification's sid; None once forgotten.
    pub sid: Option<String>,
    /// How long Redis keeps it still.
    pub left: Duration,
}

/// Records (`sid` Some) or forgets (None) the shadowed verification `k`
/// (`service|number`) as of `stamp`, unless Redis holds a newer one.
/// Returns whether it was written. One round trip.
pub async fn put_verification(
    link: &RedisLink,
    k: &str,
    stamp: u64,
    sid: Option<&str>,
    ttl: Duration,
) -> Result<bool, LinkError> {
    let args = vec![
        stamp.to_string(),
        sid.unwrap_or("").to_string(),
        ttl_ms(ttl),
    ];
    // Batched with the other writes made meanwhile.
    let v = link
        .eval_batched(Call {
            script: &PUT_STAMPED,
            keys: vec![key(link, table::VERIFICATIONS, k)],
            args,
        })
        .await?;
    match v {
        Value::Int(n) => Ok(n == 1),
        other => Err(unexpected("put_verification", &other)),
    }
}

/// The shadowed verification `k` (`service|number`), if Redis holds one
/// (or its forgetting). One round trip.
pub async fn fetch_verification(
    link: &RedisLink,
    k: &str,
) -> Result<Option<StampedSid>, LinkError> {
    let Some((value, left)) = fetch(link, table::VERIFICATIONS, k).await? else {
        return Ok(None);
    };
    let text = std::str::from_utf8(&value)
        .map_err(|_| LinkError::Server("a shared verification is not UTF-8".into()))?;
    let (stamp, sid) = text
        .split_once('|')
        .and_then(|(s, sid)| Some((s.parse::<u64>().ok()?, sid)))
        .ok_or_else(|| LinkError::Server("a shared verification is malformed".into()))?;
    Ok(Some(StampedSid {
        stamp,
        sid: (!sid.is_empty()).then(|| sid.to_string()),
        left,
    }))
}
