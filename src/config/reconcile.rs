//! `[reconcile]`: compare what Twilio says the account sent with what the
//! guard forwarded, to find sends that went around it (a leaked auth
//! token, a service still talking to api.twilio.com directly).
//!
//! The guard reads the account's Messages and Calls lists with a
//! credential of its own, taken from the environment only: the file names
//! the variables, never the secret, and the app's traffic is never
//! borrowed for it.

use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserializer};
use serde::Deserialize;
use toml::Spanned;

use super::defaults::{five_minutes, sixty};
use super::deserialize::is_env_name;

/// The shortest `interval` and `settle` accepted.
pub const RECONCILE_MIN: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reconcile {
    /// The account whose sends are listed (`AC` and 32 hex digits).
    #[serde(deserialize_with = "de_account")]
    pub account: String,
    /// The variable holding the account's auth token (Basic auth user =
    /// the account sid).
    #[serde(default, deserialize_with = "de_env_name")]
    pub token_env: Option<Spanned<String>>,
    /// With `secret_env`, instead of `token_env`: the variables holding an
    /// API key's sid (`SK…`, the Basic auth user) and its secret.
    #[serde(default, deserialize_with = "de_env_name")]
    pub key_env: Option<Spanned<String>>,
    #[serde(default, deserialize_with = "de_env_name")]
    pub secret_env: Option<Spanned<String>>,
    /// How often the lists are read.
    #[serde(default = "five_minutes", deserialize_with = "de_at_least_a_second")]
    pub interval: Duration,
    /// How long after its creation a send is first judged: longer than
    /// Twilio's slowest answer to a forwarded send plus a second (the
    /// lists' dates are whole seconds), so a send in flight through the
    /// guard is never mistaken for one that went around it.
    #[serde(default = "sixty", deserialize_with = "de_at_least_a_second")]
    pub settle: Duration,
    /// Most sids of forwarded sends remembered in memory (a Redis store
    /// keeps as many).
    #[serde(default = "two_hundred_thousand")]
    pub capacity: u64,
    /// Resources per page of a list (Twilio's maximum is 1000).
    #[serde(default = "thousand")]
    pub page_size: u32,
}

fn two_hundred_thousand() -> u64 {
    200_000
}

fn thousand() -> u32 {
    1000
}

/// Where the credential is read from, and the credential once read.
#[derive(Clone)]
pub struct ReconcileCredential {
    /// The Basic auth user: the account sid, or an API key sid.
    pub user: String,
    secret: String,
}

impl ReconcileCredential {
    pub fn new(user: String, secret: String) -> ReconcileCredential {
        ReconcileCredential { user, secret }
    }

    /// The `Authorization` header value.
    pub fn basic(&self) -> String {
        format!(
            "Basic {}",
            base64(format!("{}:{}", self.user, self.secret).as_bytes())
        )
    }
}

impl fmt::Debug for ReconcileCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the secret.
        f.debug_struct("ReconcileCredential")
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

fn base64(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

impl Reconcile {
    /// Reads the credential from the environment; the error names the
    /// variable that is missing or empty (never a value).
    pub fn credential(&self) -> Result<ReconcileCredential, String> {
        let read = |name: &str| {
            std::env::var(name)
                .ok()
                .filter(|v| !v.trim().is_empty())
                .map(|v| v.trim().to_string())
                .ok_or_else(|| {
                    format!("reconcile: ${name} is not set (or empty): it must hold the credential the guard lists the account's sends with")
                })
        };
        match (&self.token_env, &self.key_env, &self.secret_env) {
            (Some(token), _, _) => Ok(ReconcileCredential::new(
                self.account.clone(),
                read(token.get_ref())?,
            )),
            (None, Some(key), Some(secret)) => {
                let user = read(key.get_ref())?;
                let secret = read(secret.get_ref())?;
                Ok(ReconcileCredential::new(user, secret))
            }
            _ => Err("reconcile: set token_env, or key_env and secret_env".into()),
        }
    }

    /// How the credential is named, for `check`: `$NAME (auth token)`.
    pub fn credential_source(&self) -> String {
        match (&self.token_env, &self.key_env, &self.secret_env) {
            (Some(t), _, _) => format!("${} (auth token)", t.get_ref()),
            (None, Some(k), Some(s)) => {
                format!("${} + ${} (API key)", k.get_ref(), s.get_ref())
            }
            _ => "-".into(),
        }
    }

    /// Checks the credential's variables together; errors point at them.
    pub(super) fn validate(&self) -> Result<(), (Option<std::ops::Range<usize>>, String)> {
        match (&self.token_env, &self.key_env, &self.secret_env) {
            (Some(_), None, None) | (None, Some(_), Some(_)) => {}
            (Some(t), _, _) => {
                return Err((
                    Some(t.span()),
                    "reconcile: set token_env, or key_env and secret_env, not both".into(),
                ))
            }
            (None, Some(k), None) => {
                return Err((
                    Some(k.span()),
                    "reconcile.key_env needs reconcile.secret_env (the API key's secret)".into(),
                ))
            }
            (None, None, Some(s)) => {
                return Err((
                    Some(s.span()),
                    "reconcile.secret_env needs reconcile.key_env (the API key's sid)".into(),
                ))
            }
            (None, None, None) => {
                return Err((
                    None,
                    "reconcile needs a credential: token_env (the variable holding the auth token), or key_env and secret_env (an API key)".into(),
                ))
            }
        }
        if !(1..=1000).contains(&self.page_size) {
            return Err((None, "reconcile.page_size must be 1..=1000".into()));
        }
        if self.capacity == 0 {
            return Err((None, "reconcile.capacity must be at least 1".into()));
        }
        Ok(())
    }
}

fn de_account<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let s = String::deserialize(d)?;
    let ok = s.len() == 34 && s.starts_with("AC") && s[2..].bytes().all(|b| b.is_ascii_hexdigit());
    if !ok {
        return Err(de::Error::custom(format!(
            "reconcile.account {s:?} must be an account sid: AC and 32 hex digits"
        )));
    }
    Ok(s)
}

fn de_env_name<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Spanned<String>>, D::Error> {
    let s = Spanned::<String>::deserialize(d)?;
    if !is_env_name(s.get_ref()) {
        // The value is not repeated: it may be a secret pasted in error.
        return Err(de::Error::custom(
            "this must be the name of an environment variable (letters, digits, '_'), not a credential: the secret itself stays out of the file",
        ));
    }
    Ok(Some(s))
}

fn de_at_least_a_second<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    let t = humantime::parse_duration(&s)
        .map_err(|e| de::Error::custom(format!("duration {s:?}: {e}")))?;
    if t < RECONCILE_MIN {
        return Err(de::Error::custom(format!(
            "duration {s:?} must be at least 1s"
        )));
    }
    Ok(t)
}

#[cfg(test)]
mod tests {
    use crate::config::load::tests::parse;

    const AC: &str = "AC0123456789abcdef0123456789abcdef";

    #[test]
    fn a_reconcile_section_has_defaults_and_needs_a_credential() {
        let c = parse(&format!(
            "[reconcile]\naccount = \"{AC}\"\ntoken_env = \"TW_TOKEN\"\n"
        ))
        .unwrap();
        let r = c.reconcile.unwrap();
        assert_eq!(r.interval, std::time::Duration::from_secs(300));
        assert_eq!(r.page_size, 1000);
        assert_eq!(r.credential_source(), "$TW_TOKEN (auth token)");
        let e = parse(&format!("[reconcile]\naccount = \"{AC}\"\n")).unwrap_err();
        assert!(e.message.contains("token_env"), "{e}");
        let e = parse(&format!(
            "[reconcile]\naccount = \"{AC}\"\nkey_env = \"K\"\n"
        ))
        .unwrap_err();
        assert_eq!((e.line, e.col), (3, 11), "{e}");
        assert!(e.message.contains("secret_env"), "{e}");
    }

    #[test]
    fn reconcile_errors_name_the_place() {
        let e = parse("[reconcile]\naccount = \"AC12\"\ntoken_env = \"T\"\n").unwrap_err();
        assert_eq!((e.line, e.col), (2, 11), "{e}");
        let e = parse(&format!(
            "[reconcile]\naccount = \"{AC}\"\ntoken_env = \"abc123:secret\"\n"
        ))
        .unwrap_err();
        assert_eq!(e.line, 3, "{e}");
        assert!(
            !e.message.contains("abc123"),
            "a pasted secret is not echoed: {e}"
        );
        let e = parse(&format!(
            "[reconcile]\naccount = \"{AC}\"\ntoken_env = \"T\"\ninterval = \"500ms\"\n"
        ))
        .unwrap_err();
        assert_eq!(e.line, 4, "{e}");
        let e = parse(&format!(
            "[reconcile]\naccount = \"{AC}\"\ntoken_env = \"T\"\nevery = \"5m\"\n"
        ))
        .unwrap_err();
        assert_eq!(e.line, 4, "{e}");
    }

    #[test]
    fn the_credential_comes_from_the_environment_and_is_never_shown() {
        let c = parse(&format!(
            "[reconcile]\naccount = \"{AC}\"\nkey_env = \"SMSGUARD_UNIT_RECONCILE_KEY\"\nsecret_env = \"SMSGUARD_UNIT_RECONCILE_SECRET_UNSET\"\n"
        ))
        .unwrap();
        let r = c.reconcile.unwrap();
        let e = r.credential().unwrap_err();
        assert!(e.contains("$SMSGUARD_UNIT_RECONCILE_KEY"), "{e}");
        let cred = super::ReconcileCredential::new("SKabc".into(), "s3cr3t".into());
        assert!(!format!("{cred:?}").contains("s3cr3t"));
        // base64("SKabc:s3cr3t")
        assert_eq!(cred.basic(), "Basic U0thYmM6czNjcjN0");
    }
}
