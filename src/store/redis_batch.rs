//! One script for a send's calls on a single Redis.
//!
//! A send's plan is several per-key operations ([`super::redis_ops`]: the
//! backoff step, each limit counter, each budget window; and the fleet's
//! log since this replica last read it, when the send carries that read).
//! Pipelined, they cost one round
//! trip but one EVALSHA each, and Redis pays a script invocation per call
//! (the lookup, the argument vectors, the Lua call) on top of the work.
//! On a single Redis every key is on the one server, so the calls are run
//! as one EVALSHA of `BATCH`: the same operations, their bodies wrapped
//! as functions of `(KEYS, ARGV)`, called in order by a dispatcher that
//! answers with one reply per call (an error reply for one whose body
//! failed, the others unaffected). The batch is atomic, where the
//! pipeline ran each call atomically on its own: no other client's
//! command comes between two of a send's operations.
//!
//! On a Redis Cluster the keys of one send live in different hash slots
//! and cannot meet in one script: the calls go as they are.
//!
//! Layout of a batch: KEYS are every call's keys in order; `ARGV[1]` is the
//! number of calls, then per call its operation's code, its number of
//! keys, its number of arguments, and its arguments.

use std::fmt::Write as _;
use std::sync::LazyLock;

use ::redis::{Script, Value};

use super::fleet;
use super::redis::{Call, LinkError, RedisLink};
use super::redis_ops as ops;

/// The operations a batch can run: code, script, body. The bodies use
/// only the shared helpers defined once at the top of [`BATCH`].
fn operations() -> [(&'static str, &'static Script, &'static str); 9] {
    [
        ("h", &ops::HIT, ops::HIT_LUA),
        ("u", &ops::UNHIT, ops::UNHIT_LUA),
        ("s", &ops::SPEND, ops::SPEND_LUA),
        ("r", &ops::REFUND, ops::REFUND_LUA),
        ("b", &ops::BACKOFF_JUDGE, ops::BACKOFF_JUDGE_LUA),
        ("d", &ops::BACKOFF_UNDO, ops::BACKOFF_UNDO_LUA),
        ("bh", &ops::BACKOFF_HIT, ops::BACKOFF_HIT_LUA),
        ("hu", &ops::HASH_UNHIT, ops::HASH_UNHIT_LUA),
        ("t", &fleet::TAIL, fleet::TAIL_LUA),
    ]
}

/// Calls each operation in turn and answers one pair per call: `{1,
/// reply}`, or `{0, message}` for a body that raised an error (an error
/// reply inside an array would fail the whole answer on the client).
const DISPATCH: &str = r#"
local out = {}
local k, a = 1, 2
for i = 1, tonumber(ARGV[1]) do
  local code, nk, na = ARGV[a], tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
  local keys
  if nk == 1 then keys = {KEYS[k]} else keys = {unpack(KEYS, k, k + nk - 1)} end
  local args = {unpack(ARGV, a + 3, a + 2 + na)}
  k, a = k + nk, a + 3 + na
  local ok, r = pcall(op[code], keys, args)
  if ok then
    out[i] = {1, r}
  else
    if type(r) == 'table' and r.err then r = r.err end
    out[i] = {0, tostring(r)}
  end
end
return out
"#;

static BATCH: LazyLock<Script> = LazyLock::new(|| Script::new(&batch_text()));

/// [`BATCH`]'s source.
fn batch_text() -> String {
    let mut text = [
        ops::LUA_PRELUDE,
        ops::LUA_POWI,
        ops::LUA_COUNTERS,
        ops::LUA_BACKOFF,
        ops::LUA_LE,
    ]
    .concat();
    text.push_str("local op = {}\n");
    for (code, _, body) in operations() {
        let _ = write!(text, "op['{code}'] = function(KEYS, ARGV)\n{body}\nend\n");
    }
    text.push_str(DISPATCH);
    text
}

/// `calls` as one call of [`BATCH`], when there are two or more and each
/// is an operation it runs; else `calls` back, as they were.
fn combine(calls: Vec<Call<'static>>) -> Result<Call<'static>, Vec<Call<'static>>> {
    if calls.len() < 2 {
        return Err(calls);
    }
    let known = operations();
    let codes: Option<Vec<&str>> = calls
        .iter()
        .map(|c| {
            let hash = c.script.get_hash();
            known
                .iter()
                .find(|(_, s, _)| s.get_hash() == hash)
                .map(|(code, _, _)| *code)
        })
        .collect();
    let Some(codes) = codes else {
        return Err(calls);
    };
    let mut keys = Vec::with_capacity(calls.len() * 2);
    let mut args = Vec::with_capacity(calls.len() * 6);
    args.push(calls.len().to_string());
    for (c, code) in calls.into_iter().zip(codes) {
        args.push(code.to_string());
        args.push(c.keys.len().to_string());
        args.push(c.args.len().to_string());
        args.extend(c.args);
        keys.extend(c.keys);
    }
    Ok(Call {
        script: &BATCH,
        keys,
        args,
    })
}

/// Runs `calls` on `link` as [`RedisLink::eval_many`] does, with the same
/// answers: as one script on a single Redis when they are all operations
/// `BATCH` runs, else pipelined as they are. The calls are taken, so
/// their keys and arguments move into the batch rather than being copied.
pub async fn eval_many(
    link: &RedisLink,
    calls: Vec<Call<'static>>,
) -> Result<Vec<Result<Value, LinkError>>, LinkError> {
    if link.is_cluster() {
        return link.eval_many(&calls).await;
    }
    let n = calls.len();
    let batch = match combine(calls) {
        Ok(batch) => batch,
        Err(calls) => return link.eval_many(&calls).await,
    };
    let answer = link
        .eval_many(std::slice::from_ref(&batch))
        .await?
        .pop()
        .unwrap_or_else(|| Err(LinkError::Server("no answer to a batch".into())));
    Ok(split(answer, n))
}

/// One answer per call from the batch's answer.
fn split(answer: Result<Value, LinkError>, n: usize) -> Vec<Result<Value, LinkError>> {
    match answer {
        Ok(Value::Array(replies)) if replies.len() == n => replies.into_iter().map(reply).collect(),
        Ok(_) => vec![Err(LinkError::Server("unexpected answer to a batch".into())); n],
        Err(e) => vec![Err(e); n],
    }
}

/// One call's reply from its pair: `{1, reply}` (a nil reply leaves the
/// pair one long) or `{0, message}`.
fn reply(pair: Value) -> Result<Value, LinkError> {
    let unexpected = || LinkError::Server("unexpected reply in a batch".into());
    let Value::Array(mut pair) = pair else {
        return Err(unexpected());
    };
    let ok = pair.first().cloned();
    let r = if pair.len() > 1 {
        pair.swap_remove(1)
    } else {
        Value::Nil
    };
    match (ok, r) {
        (Some(Value::Int(1)), r) => Ok(r),
        (Some(Value::Int(0)), Value::BulkString(m)) => {
            Err(LinkError::Server(String::from_utf8_lossy(&m).into_owned()))
        }
        _ => Err(unexpected()),
    }
}
