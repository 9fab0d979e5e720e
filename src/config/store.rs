//! `[store]`: memory or a shared Redis (one server or a cluster), what a
//! send is judged with while it cannot answer, and the checks of its URLs.

use std::str::FromStr;
use std::time::Duration;

use serde::de::{self, Deserializer};
use serde::Deserialize;
use toml::Spanned;

use super::deserialize::{de_from_str, de_nonzero_duration, is_env_name};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Store {
    /// Most keys each state table tracks (counters, backoff); memory stays
    /// bounded whatever the number of distinct numbers.
    pub capacity: u64,
    /// Most blocks held at once.
    pub block_capacity: u64,
    /// One Redis node: `redis://host:port/db` or `rediss://` (TLS). Never
    /// with a password: that comes from `redis_password_env`.
    pub redis: Option<Spanned<String>>,
    /// The environment variable holding the Redis password.
    pub redis_password_env: Option<Spanned<String>>,
    /// Seed nodes of a Redis Cluster (instead of `redis`).
    pub redis_cluster: Option<Spanned<Vec<Spanned<String>>>>,
    /// Longest wait for one Redis call.
    #[serde(deserialize_with = "de_nonzero_duration")]
    pub timeout: Duration,
    /// What sends are judged with while Redis is down or slow.
    #[serde(deserialize_with = "de_from_str")]
    pub on_error: StoreOnError,
    /// How often each replica mirrors the shared blocks and reads the
    /// fleet's log: a block set on another replica is enforced here within
    /// this (at least 10 ms).
    #[serde(with = "humantime_serde")]
    pub near_cache: Duration,
    /// Put before every Redis key, so several guards (or other programs)
    /// can share one Redis.
    #[serde(deserialize_with = "de_redis_prefix")]
    pub prefix: String,
}

impl Default for Store {
    fn default() -> Self {
        Store {
            capacity: 1_000_000,
            block_capacity: 100_000,
            redis: None,
            redis_password_env: None,
            redis_cluster: None,
            timeout: Duration::from_millis(50),
            on_error: StoreOnError::Local,
            near_cache: Duration::from_secs(1),
            prefix: "smsguard:".into(),
        }
    }
}

impl Store {
    /// Whether state is shared in Redis (one node or a cluster).
    pub fn shared(&self) -> bool {
        self.redis.is_some() || self.redis_cluster.is_some()
    }

    /// Checks the Redis settings together; errors point at the value.
    pub(super) fn validate(&self) -> Result<(), (Option<std::ops::Range<usize>>, String)> {
        if let (Some(_), Some(cluster)) = (&self.redis, &self.redis_cluster) {
            return Err((
                Some(cluster.span()),
                "store.redis and store.redis_cluster are mutually exclusive: set one".into(),
            ));
        }
        if let Some(url) = &self.redis {
            check_redis_url("store.redis", url.get_ref(), true)
                .map_err(|m| (Some(url.span()), m))?;
        }
        if let Some(cluster) = &self.redis_cluster {
            if cluster.get_ref().is_empty() {
                return Err((
                    Some(cluster.span()),
                    "store.redis_cluster needs at least one seed node URL".into(),
                ));
            }
            for url in cluster.get_ref() {
                check_redis_url("store.redis_cluster", url.get_ref(), false)
                    .map_err(|m| (Some(url.span()), m))?;
            }
        }
        if let Some(env) = &self.redis_password_env {
            let name = env.get_ref();
            if !is_env_name(name) {
                return Err((
                    Some(env.span()),
                    format!(
                        "store.redis_password_env {name:?} must be the name of an environment variable (letters, digits, '_')"
                    ),
                ));
            }
            if !self.shared() {
                return Err((
                    Some(env.span()),
                    "store.redis_password_env is set but neither store.redis nor store.redis_cluster is".into(),
                ));
            }
        }
        Ok(())
    }
}

/// What a send is judged with while the shared store cannot answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StoreOnError {
    /// With this replica's own memory (the default).
    #[default]
    Local,
    /// Every judged send is blocked.
    Block,
    /// The stages that need shared state (backoff, limits, budget) let
    /// sends pass; number rules and known blocks still apply.
    Allow,
}

impl StoreOnError {
    pub fn as_str(&self) -> &'static str {
        match self {
            StoreOnError::Local => "local",
            StoreOnError::Block => "block",
            StoreOnError::Allow => "allow",
        }
    }
}

impl FromStr for StoreOnError {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "local" => Ok(StoreOnError::Local),
            "block" => Ok(StoreOnError::Block),
            "allow" => Ok(StoreOnError::Allow),
            _ => Err(format!(
                "unknown store.on_error {s:?}: expected \"local\", \"block\" or \"allow\""
            )),
        }
    }
}

/// `url` without its userinfo, for messages: a password never reaches a log.
fn redacted_url(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
            match rest[..end].rfind('@') {
                Some(at) => format!("{scheme}://***@{}", &rest[at + 1..]),
                None => url.to_string(),
            }
        }
        None => url.to_string(),
    }
}

/// A Redis URL the guard accepts: `redis://` or `rediss://`, a host, an
/// optional port and (when `db` is allowed) database number, and no
/// password, query or fragment.
fn check_redis_url(what: &str, url: &str, db: bool) -> Result<(), String> {
    let shown = redacted_url(url);
    let Some(u) = redis::parse_redis_url(url).filter(|u| matches!(u.scheme(), "redis" | "rediss"))
    else {
        return Err(format!(
            "{what} {shown:?} must be a URL starting with redis:// or rediss://"
        ));
    };
    if u.password().is_some() {
        return Err(format!(
            "{what} {shown:?} holds a password: remove it from the file and name the environment variable that holds it in store.redis_password_env"
        ));
    }
    if u.host_str().is_none_or(str::is_empty) {
        return Err(format!("{what} {shown:?} has no host"));
    }
    if u.query().is_some() || u.fragment().is_some() {
        return Err(format!(
            "{what} {shown:?} must not have a query or fragment (TLS certificates are always verified)"
        ));
    }
    let path = u.path().trim_start_matches('/');
    if !path.is_empty() {
        if !db {
            return Err(format!(
                "{what} {shown:?}: a cluster has no database number, remove the path"
            ));
        }
        if path.parse::<u32>().is_err() {
            return Err(format!(
                "{what} {shown:?}: the path must be a database number such as /0"
            ));
        }
    }
    redis::IntoConnectionInfo::into_connection_info(url)
        .map(|_| ())
        .map_err(|e| format!("{what} {shown:?}: {e}"))
}

fn de_redis_prefix<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let s = String::deserialize(d)?;
    if s.is_empty() || s.len() > 64 || !s.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(de::Error::custom(format!(
            "store.prefix {s:?} must be 1 to 64 printable ASCII characters without spaces"
        )));
    }
    if s.contains(['{', '}']) {
        return Err(de::Error::custom(format!(
            "store.prefix {s:?} must not hold '{{' or '}}': they choose a Redis Cluster hash slot"
        )));
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::load::tests::parse;

    /// The error of `[store]` followed by `body`, which must name line
    /// `line` and column `col`, and its message.
    fn store_error(body: &str, line: usize, col: usize) -> String {
        let e = parse(&format!("[store]\n{body}")).unwrap_err();
        assert_eq!((e.line, e.col), (line, col), "{e}");
        e.message
    }

    #[test]
    fn store_redis_settings_parse_with_their_defaults() {
        let c = parse("").unwrap();
        assert!(!c.store.shared());
        assert_eq!(c.store.timeout, Duration::from_millis(50));
        assert_eq!(c.store.on_error, StoreOnError::Local);
        assert_eq!(c.store.near_cache, Duration::from_secs(1));
        assert_eq!(c.store.prefix, "smsguard:");
        let c = parse(
            "[store]\nredis = \"rediss://cache.internal:6380/2\"\nredis_password_env = \"REDIS_PASSWORD\"\ntimeout = \"20ms\"\non_error = \"block\"\nnear_cache = \"0s\"\nprefix = \"guard-eu:\"\n",
        )
        .unwrap();
        assert!(c.store.shared());
        assert_eq!(
            c.store.redis.as_ref().unwrap().get_ref(),
            "rediss://cache.internal:6380/2"
        );
        assert_eq!(
            c.store.redis_password_env.as_ref().unwrap().get_ref(),
            "REDIS_PASSWORD"
        );
        assert_eq!(c.store.timeout, Duration::from_millis(20));
        assert_eq!(c.store.on_error, StoreOnError::Block);
        assert!(c.store.near_cache.is_zero());
        assert_eq!(c.store.prefix, "guard-eu:");
        let c =
            parse("[store]\nredis = \"redis://user@10.0.0.5\"\non_error = \"allow\"\n").unwrap();
        assert_eq!(c.store.on_error, StoreOnError::Allow);
        let c = parse(
            "[store]\nredis_cluster = [\"redis://10.0.0.1:7000\", \"redis://10.0.0.2:7000/\"]\n",
        )
        .unwrap();
        assert!(c.store.shared());
        assert_eq!(c.store.redis_cluster.as_ref().unwrap().get_ref().len(), 2);
    }

    #[test]
    fn a_password_in_a_redis_url_is_refused_and_never_repeated() {
        let m = store_error("redis = \"redis://:hunter2@10.0.0.5:6379\"\n", 2, 9);
        assert!(
            m.contains("password") && m.contains("redis_password_env"),
            "{m}"
        );
        assert!(!m.contains("hunter2"), "{m}");
        let m = store_error("redis = \"rediss://admin:hunter2@cache/0\"\n", 2, 9);
        assert!(!m.contains("hunter2") && m.contains("***@cache"), "{m}");
        let m = store_error(
            "redis_cluster = [\"redis://a:7000\", \"redis://:hunter2@b:7000\"]\n",
            2,
            36,
        );
        assert!(m.contains("password") && !m.contains("hunter2"), "{m}");
    }

    #[test]
    fn a_redis_url_needs_the_redis_scheme_and_a_host() {
        let m = store_error("redis = \"http://10.0.0.5\"\n", 2, 9);
        assert!(m.contains("redis://") && m.contains("rediss://"), "{m}");
        store_error("redis = \"redis+unix:///tmp/redis.sock\"\n", 2, 9);
        store_error("redis = \"10.0.0.5:6379\"\n", 2, 9);
        let m = store_error("redis = \"redis://\"\n", 2, 9);
        assert!(m.contains("host"), "{m}");
        let m = store_error("\nredis = \"redis://h/db1\"\n", 3, 9);
        assert!(m.contains("database number"), "{m}");
        let m = store_error("redis = \"rediss://h#insecure\"\n", 2, 9);
        assert!(m.contains("fragment"), "{m}");
        store_error("redis = \"redis://h?protocol=resp3\"\n", 2, 9);
        store_error("redis = \"redis://0.0.0.0\"\n", 2, 9);
        let m = store_error("redis_cluster = [\"redis://a:7000/1\"]\n", 2, 18);
        assert!(m.contains("cluster has no database"), "{m}");
    }

    #[test]
    fn one_redis_or_a_cluster_of_seeds_never_both() {
        let m = store_error(
            "redis = \"redis://a\"\nredis_cluster = [\"redis://b:7000\"]\n",
            3,
            17,
        );
        assert!(m.contains("mutually exclusive"), "{m}");
        let m = store_error("redis_cluster = []\n", 2, 17);
        assert!(m.contains("at least one"), "{m}");
    }

    #[test]
    fn the_password_variable_must_be_a_name_and_need_a_redis() {
        let m = store_error(
            "redis = \"redis://a\"\nredis_password_env = \"$REDIS PASS\"\n",
            3,
            22,
        );
        assert!(m.contains("environment variable"), "{m}");
        store_error("redis = \"redis://a\"\nredis_password_env = \"\"\n", 3, 22);
        store_error(
            "redis = \"redis://a\"\nredis_password_env = \"1PASS\"\n",
            3,
            22,
        );
        let m = store_error("redis_password_env = \"REDIS_PASSWORD\"\n", 2, 22);
        assert!(m.contains("neither"), "{m}");
    }

    #[test]
    fn store_timeouts_modes_and_prefix_are_checked_where_they_are() {
        let m = store_error("timeout = \"0ms\"\n", 2, 11);
        assert!(m.contains("longer than 0"), "{m}");
        store_error("timeout = \"soon\"\n", 2, 11);
        let m = store_error("on_error = \"deny\"\n", 2, 12);
        assert!(m.contains("\"local\""), "{m}");
        store_error("near_cache = \"a while\"\n", 2, 14);
        let m = store_error("prefix = \"sms{guard}:\"\n", 2, 10);
        assert!(m.contains("hash slot"), "{m}");
        store_error("prefix = \"\"\n", 2, 10);
        store_error("prefix = \"sms guard\"\n", 2, 10);
        let m = store_error("redis_db = 2\n", 2, 1);
        assert!(m.contains("redis_db"), "{m}");
    }
}
