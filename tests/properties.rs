//! Property tests for invariants that span modules: number normalization and
//! classification feeding per-number state, rate limits under any
//! interleaving (sequential and concurrent), and money budgets.
//!
//! Most properties drive the library directly (`Policy` over a memory store
//! on a controlled clock): no sleeps, no network. One property goes through
//! the real HTTP listener to cover form decoding too. Every property checks
//! the guard against a reference model written here, independently of the
//! code under test.

mod common;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;
use std::sync::{Arc, Barrier, OnceLock};

use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, TestRunner};

use smsguard::base::clock::Millis;
use smsguard::config::{Action, Config};
use smsguard::phone::{normalize, Classification, Classifier, Destination, Region};
use smsguard::policy::{Attempt, BalanceView, Decision, Policy};
use smsguard::store::MemoryStore;
use smsguard::twilio::routes::Product;

const SEC: Millis = 1_000;
const MIN: Millis = 60 * SEC;
const HOUR: Millis = 60 * MIN;
const DAY: Millis = 24 * HOUR;
/// A Tuesday in November 2023, 22:13:20 UTC: not aligned to any window.
const T0: Millis = 1_700_000_000_000;
const ACCOUNT: &str = "AC00000000000000000000000000000001";

fn policy(toml: &str) -> Policy {
    let c = Config::parse(Path::new("properties.toml"), toml)
        .unwrap_or_else(|e| panic!("test policy: {e}\n{toml}"));
    Policy::new(Arc::new(c), Arc::new(MemoryStore::new(1_000_000, 100_000)))
}

/// Proptest's defaults, minus the regression files it would write next to
/// the tests: a failure prints its minimal input, to be pasted into a test.
fn quiet() -> ProptestConfig {
    ProptestConfig {
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

fn classifier() -> &'static Classifier {
    static C: OnceLock<Classifier> = OnceLock::new();
    C.get_or_init(|| Classifier::new(100_000))
}

/// One send as the policy sees it, owning what `Attempt` borrows.
#[derive(Debug, Clone)]
struct Send {
    product: Product,
    to: Destination,
    class: Classification,
    ip: IpAddr,
    user: Option<String>,
    segments: u32,
    media: usize,
    balance: BalanceView,
}

impl Send {
    fn new(to: Destination) -> Send {
        let class = classifier().classify(&to.e164);
        Send {
            product: Product::Messaging,
            to,
            class,
            ip: "198.51.100.1".parse().unwrap(),
            user: None,
            segments: 1,
            media: 0,
            balance: BalanceView::NotAsked,
        }
    }

    fn e164(e164: &str) -> Send {
        Send::new(Destination {
            channel: smsguard::phone::Channel::Sms,
            e164: e164.to_string(),
        })
    }

    fn attempt(&self) -> Attempt<'_> {
        Attempt {
            product: self.product,
            account: ACCOUNT,
            to: &self.to,
            class: self.class,
            client_ip: self.ip,
            end_user_ip: true,
            user: self.user.as_deref(),
            segments: self.segments,
            media: self.media,
            content: None,
            balance: self.balance,
        }
    }
}

fn rule(d: &Decision) -> &str {
    d.deciding().map(|v| v.rule.as_str()).unwrap_or("-")
}

// ====================================================================
// 1. A send is counted once under every spelling of its number.
// ====================================================================

/// A country whose numbers the generator writes: its calling code, the
/// leading digits of a national significant number (mobile ranges, so the
/// numbers are valid), how many random digits follow, and its national
/// trunk prefix when national spellings are read in that region.
struct Country {
    region: &'static str,
    cc: &'static str,
    leads: &'static [&'static str],
    rest: usize,
    trunk: Option<&'static str>,
}

const COUNTRIES: &[Country] = &[
    // +1: area codes that exist, exchanges 2-9xx (never N11 or 555-01xx).
    Country {
        region: "US",
        cc: "1",
        leads: &["415", "212", "312", "617", "713", "206", "305", "512"],
        rest: 7,
        trunk: Some("1"),
    },
    Country {
        region: "CA",
        cc: "1",
        leads: &["416", "604", "514", "403"],
        rest: 7,
        trunk: Some("1"),
    },
    // GB mobiles; never 7911 (+44 7911 1… is Guernsey).
    Country {
        region: "GB",
        cc: "44",
        leads: &["7400", "7700", "7800", "7500"],
        rest: 6,
        trunk: Some("0"),
    },
    Country {
        region: "DE",
        cc: "49",
        leads: &["151", "160", "170"],
        rest: 8,
        trunk: Some("0"),
    },
    Country {
        region: "FR",
        cc: "33",
        leads: &["6", "7"],
        rest: 8,
        trunk: Some("0"),
    },
    Country {
        region: "AU",
        cc: "61",
        leads: &["4"],
        rest: 8,
        trunk: Some("0"),
    },
    Country {
        region: "IN",
        cc: "91",
        leads: &["98", "99", "70"],
        rest: 8,
        trunk: Some("0"),
    },
    Country {
        region: "UZ",
        cc: "998",
        leads: &["99", "90", "93"],
        rest: 7,
        trunk: None,
    },
    Country {
        region: "BR",
        cc: "55",
        leads: &["119"],
        rest: 8,
        trunk: None,
    },
];

/// A valid number: (country index, national significant number).
fn valid_number() -> impl Strategy<Value = (usize, String)> {
    (0..COUNTRIES.len(), any::<u64>(), any::<u64>())
        .prop_map(|(c, pick, digits)| {
            let country = &COUNTRIES[c];
            let lead = country.leads[(pick % country.leads.len() as u64) as usize];
            let mut n = String::from(lead);
            let mut d = digits;
            for i in 0..country.rest {
                // The first digit of a +1 exchange is 2-9.
                let digit = if country.cc == "1" && i == 0 {
                    2 + d % 8
                } else {
                    d % 10
                };
                n.push(char::from(b'0' + digit as u8));
                d /= 10;
            }
            (c, n)
        })
        .prop_filter("libphonenumber calls it valid", |(c, nsn)| {
            let e164 = format!("+{}{nsn}", COUNTRIES[*c].cc);
            let class = classifier().classify(&e164);
            class.valid
                && class.region.map(|r| r.to_string()).as_deref() == Some(COUNTRIES[*c].region)
        })
}

/// How one spelling is written.
#[derive(Debug, Clone)]
struct Spelling {
    /// 0: "+", 1: "00", 2: a leading space (a '+' the form decoding ate),
    /// 3: national (trunk prefix), 4: national without the trunk prefix
    /// (+1 only), 5: "whatsapp:+".
    form: u8,
    /// Per gap between two digits: 0 none, 1 space, 2 dash, 3 dot.
    gaps: Vec<u8>,
    /// Which digit group to put in parentheses, if any.
    paren: Option<usize>,
    pad_left: bool,
    pad_right: bool,
}

fn spelling() -> impl Strategy<Value = Spelling> {
    (
        0u8..6,
        proptest::collection::vec(
            prop_oneof![5 => Just(0u8), 2 => Just(1u8), 1 => Just(2u8), 1 => Just(3u8)],
            20,
        ),
        proptest::option::weighted(0.3, 0usize..6),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(form, gaps, paren, pad_left, pad_right)| Spelling {
            form,
            gaps,
            paren,
            pad_left,
            pad_right,
        })
}

/// Writes digit groups with single separators, one group maybe in
/// parentheses: "1 (415) 555-0123", "44.7400.123456".
fn group(digits: &str, s: &Spelling, paren_ok_first: bool) -> String {
    let mut groups: Vec<(String, char)> = vec![(String::new(), ' ')];
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 {
            let sep = s.gaps.get(i - 1).copied().unwrap_or(0);
            if sep != 0 {
                let c = [' ', '-', '.'][sep as usize - 1];
                groups.push((String::new(), c));
            }
        }
        groups.last_mut().unwrap().0.push(ch);
    }
    let paren = s
        .paren
        .map(|p| p % groups.len())
        .filter(|p| *p > 0 || paren_ok_first);
    let mut out = String::new();
    for (i, (g, sep)) in groups.iter().enumerate() {
        if i > 0 {
            out.push(*sep);
        }
        if paren == Some(i) {
            out.push('(');
            out.push_str(g);
            out.push(')');
        } else {
            out.push_str(g);
        }
    }
    out
}

/// The raw `To` value (as form-decoded) for number (`c`, `nsn`) spelled
/// `s`, and the default region the guard needs to read it.
fn spell(c: usize, nsn: &str, s: &Spelling) -> String {
    let country = &COUNTRIES[c];
    let international = format!("{}{nsn}", country.cc);
    let form = match s.form {
        3 | 4 if country.trunk.is_none() => 0,
        4 if country.cc != "1" => 3,
        f => f,
    };
    let mut out = match form {
        0 => format!("+{}", group(&international, s, true)),
        1 => format!("00 {}", group(&international, s, true)),
        // The first group must start with a digit for the space to read
        // as a lost '+'.
        2 => format!(" {}", group(&international, s, false)),
        3 => group(&format!("{}{nsn}", country.trunk.unwrap()), s, true),
        4 => group(nsn, s, true),
        _ => format!("whatsapp:+{}", group(&international, s, true)),
    };
    // A leading space before a digit reads as a '+' the form decoding ate
    // (SPEC §4): pad only in front of an explicit '+'.
    if s.pad_left && form == 0 {
        out.insert(0, ' ');
    }
    if s.pad_right {
        out.push(' ');
    }
    out
}

fn numbers_policy(region: &str, rules: &str) -> Policy {
    policy(&format!(
        "[numbers]\ndefault_region = \"{region}\"\nrequire_valid = true\n{rules}"
    ))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..quiet() })]

    /// With a per-number limit of K, exactly K sends go out across mixed
    /// spellings of one number; with a backoff that allows `free` sends in
    /// the hour, exactly `free`. Another number is not affected.
    #[test]
    fn a_send_is_counted_once_under_every_spelling_of_its_number(
        (c, nsn) in valid_number(),
        spellings in proptest::collection::vec(spelling(), 2..12),
        k in 1u64..5,
        free in 1u32..4,
        (other_c, other_nsn) in valid_number(),
    ) {
        let country = &COUNTRIES[c];
        let e164 = format!("+{}{nsn}", country.cc);
        prop_assume!(format!("+{}{other_nsn}", COUNTRIES[other_c].cc) != e164);
        let limit = numbers_policy(
            country.region,
            &format!("[[limit]]\nname = \"number\"\nkey = \"to\"\nrates = [\"{k}/1h\"]\n"),
        );
        let backoff = numbers_policy(
            country.region,
            &format!("[backoff]\nfree = {free}\nbase = \"1h\"\nfactor = 1\nmax = \"1h\"\nreset_after = \"2h\"\n"),
        );
        let region: Region = country.region.parse().unwrap();
        let mut allowed_limit = 0u64;
        let mut allowed_backoff = 0u32;
        for (i, s) in spellings.iter().enumerate() {
            let raw = spell(c, &nsn, s);
            let dest = normalize(&raw, Some(region))
                .map_err(|e| TestCaseError::fail(format!("{raw:?}: {e}")))?;
            prop_assert_eq!(&dest.e164, &e164, "spelling {:?}", raw);
            let send = Send::new(dest);
            prop_assert!(send.class.valid, "{:?}", raw);
            let now = T0 + i as Millis * 10 * SEC;
            let d = limit.decide(&send.attempt(), now);
            if d.forwarded() {
                allowed_limit += 1;
            } else {
                prop_assert_eq!(rule(&d), "limit:number", "{:?}", raw);
            }
            let d = backoff.decide(&send.attempt(), now);
            if d.forwarded() {
                allowed_backoff += 1;
            } else {
                prop_assert_eq!(rule(&d), "backoff", "{:?}", raw);
            }
        }
        let n = spellings.len() as u64;
        prop_assert_eq!(allowed_limit, k.min(n), "per-number limit {}/1h over {} spellings", k, n);
        prop_assert_eq!(allowed_backoff as u64, u64::from(free).min(n), "backoff free = {}", free);
        // Another number has its own count.
        let other = Send::new(
            normalize(&format!("+{}{other_nsn}", COUNTRIES[other_c].cc), None).unwrap(),
        );
        let later = T0 + n * 10 * SEC;
        prop_assert!(limit.decide(&other.attempt(), later).forwarded());
        prop_assert!(backoff.decide(&other.attempt(), later).forwarded());
    }
}

/// The same through the real listener: spellings form-encoded as an SDK
/// would (or with the '+' left unencoded), one guard per case.
#[test]
fn a_send_is_counted_once_under_every_spelling_over_http() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut runner = TestRunner::new(ProptestConfig {
        cases: 12,
        ..quiet()
    });
    let strategy = (
        valid_number(),
        proptest::collection::vec(spelling(), 3..8),
        1usize..3,
    );
    runner
        .run(&strategy, |((c, nsn), spellings, k)| {
            rt.block_on(async {
                let country = &COUNTRIES[c];
                let env = common::start(&format!(
                    "[numbers]\ndefault_region = \"{}\"\n[[limit]]\nname = \"number\"\nkey = \"to\"\nrates = [\"{k}/1h\"]\n",
                    country.region
                ))
                .await;
                let e164 = format!("+{}{nsn}", country.cc);
                let mut created = 0;
                for s in &spellings {
                    let raw = spell(c, &nsn, s);
                    let to: String = form_urlencoded::byte_serialize(raw.as_bytes()).collect();
                    let r = env
                        .post_form(common::MESSAGES, &format!("To={to}&Body=hi"))
                        .await;
                    prop_assert_eq!(r.status.as_u16(), 201, "{:?}: {}", raw, r.text());
                    created += 1;
                }
                prop_assert_eq!(created, spellings.len());
                let seen = env.fake.requests();
                prop_assert_eq!(
                    seen.len(),
                    k.min(spellings.len()),
                    "limit {}/1h over spellings of {}",
                    k,
                    e164
                );
                Ok(())
            })
        })
        .unwrap_or_else(|e| panic!("{e}"));
}

// ====================================================================
// 2. A limit never lets more than its count through.
// ====================================================================

/// (name, key, [(count, period)]) of the limits under test, as the
/// reference model reads them.
struct RefLimit {
    key: fn(&Send) -> Option<String>,
    rates: &'static [(u64, Millis)],
}

const LIMITS_TOML: &str = r#"
[[limit]]
name = "number"
key = "to"
rates = ["2/10m"]

[[limit]]
name = "prefix"
key = "prefix:8"
rates = ["3/10m", "6/1h"]

[[limit]]
name = "user"
key = "user"
rates = ["4/30m"]
block = "20m"

[[limit]]
name = "ip_region"
key = "client_ip+region"
rates = ["3/5m"]

[[limit]]
name = "global"
key = "global"
rates = ["8/10m", "15/1h"]
"#;

fn ref_limits() -> Vec<RefLimit> {
    vec![
        RefLimit {
            key: |s| Some(format!("to={}", s.to.e164)),
            rates: &[(2, 10 * MIN)],
        },
        RefLimit {
            key: |s| Some(format!("prefix={}", &s.to.e164[..9])),
            rates: &[(3, 10 * MIN), (6, HOUR)],
        },
        RefLimit {
            key: |s| s.user.as_ref().map(|u| format!("user={u}")),
            rates: &[(4, 30 * MIN)],
        },
        RefLimit {
            key: |s| {
                Some(format!(
                    "ip_region={}|{}",
                    s.ip,
                    s.class.region.map(|r| r.to_string()).unwrap_or_default()
                ))
            },
            rates: &[(3, 5 * MIN)],
        },
        RefLimit {
            key: |_| Some("global".into()),
            rates: &[(8, 10 * MIN), (15, HOUR)],
        },
    ]
}

/// Prefixes (8 digits: the `prefix:8` keys) and the length of their numbers.
const POOL_PREFIXES: [(&str, usize); 3] = [("+44740012", 12), ("+44790055", 12), ("+14155550", 11)];

/// Number `n` under prefix `p`, padded to a valid length.
fn pool_number(p: usize, n: usize) -> String {
    let (prefix, digits) = POOL_PREFIXES[p];
    let width = digits + 1 - prefix.len();
    format!(
        "{prefix}1{:0w$}",
        n % 10usize.pow(width as u32 - 1),
        w = width - 1
    )
}

/// One step of an interleaving: wait, then send.
#[derive(Debug, Clone)]
struct Step {
    advance: Millis,
    prefix: usize,
    number: u8,
    user: Option<u8>,
    ip: u8,
}

fn step() -> impl Strategy<Value = Step> {
    (
        prop_oneof![
            4 => Just(0 as Millis),
            4 => 0..30 * SEC,
            3 => 0..5 * MIN,
            1 => 0..40 * MIN,
        ],
        0..POOL_PREFIXES.len(),
        0u8..6,
        proptest::option::weighted(0.7, 0u8..3),
        0u8..3,
    )
        .prop_map(|(advance, prefix, number, user, ip)| Step {
            advance,
            prefix,
            number,
            user,
            ip,
        })
}

fn step_send(s: &Step) -> Send {
    let mut send = Send::e164(&pool_number(s.prefix, s.number as usize));
    send.user = s.user.map(|u| format!("u{u}"));
    send.ip = format!("203.0.113.{}", s.ip + 1).parse().unwrap();
    send
}

/// The sends `steps` let through, with when they went.
fn run_limits(start: Millis, steps: &[Step]) -> Vec<(Millis, Send)> {
    let p = policy(LIMITS_TOML);
    let mut now = start;
    let mut allowed = Vec::new();
    for s in steps {
        now += s.advance;
        let send = step_send(s);
        if p.decide(&send.attempt(), now).forwarded() {
            allowed.push((now, send));
        }
    }
    allowed
}

/// For every key and rate: (key, count, period, most allowed in one
/// aligned window, most allowed in any sliding window of the period).
fn window_maxima(allowed: &[(Millis, Send)]) -> Vec<(String, u64, Millis, u64, u64)> {
    let mut out = Vec::new();
    for l in ref_limits() {
        let mut by_key: BTreeMap<String, Vec<Millis>> = BTreeMap::new();
        for (t, s) in allowed {
            if let Some(k) = (l.key)(s) {
                by_key.entry(k).or_default().push(*t);
            }
        }
        for (key, times) in by_key {
            for &(count, period) in l.rates {
                let mut aligned: BTreeMap<Millis, u64> = BTreeMap::new();
                for t in &times {
                    *aligned.entry(t / period).or_default() += 1;
                }
                let max_aligned = aligned.values().copied().max().unwrap_or(0);
                // Any window (t - period, t] ending at an allowed send.
                let max_sliding = times
                    .iter()
                    .map(|&end| {
                        times
                            .iter()
                            .filter(|&&t| t + period > end && t <= end)
                            .count() as u64
                    })
                    .max()
                    .unwrap_or(0);
                out.push((key.clone(), count, period, max_aligned, max_sliding));
            }
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..quiet() })]

    /// Random sends across numbers, prefixes, users and client addresses
    /// with random clock advances: per key, the allowed sends never exceed
    /// the count in any stretch of the period (the promise an operator
    /// reads in `rates = ["5/1h"]`: never more than 5 in any hour), in
    /// calendar-aligned windows or sliding ones.
    #[test]
    fn a_limit_never_lets_more_than_its_count_through_in_any_window(
        offset in 0..DAY,
        steps in proptest::collection::vec(step(), 1..150),
    ) {
        let allowed = run_limits(T0 + offset, &steps);
        // A fresh policy lets the very first send through.
        prop_assert!(allowed.first().is_some_and(|(t, _)| *t == T0 + offset + steps[0].advance));
        for (key, count, period, aligned, sliding) in window_maxima(&allowed) {
            prop_assert!(
                aligned <= count,
                "{} allowed {} in one {}ms window, rate {}", key, aligned, period, count
            );
            prop_assert!(
                sliding <= count,
                "{} allowed {} within {}ms, rate {}", key, sliding, period, count
            );
        }
    }
}

/// The smallest case the property above found with the two-window
/// estimate (it forwarded 9 within 48 minutes), as a regression test.
#[test]
fn a_five_per_hour_limit_never_lets_more_than_five_through_in_an_hour() {
    let p = policy("[[limit]]\nname = \"number\"\nkey = \"to\"\nrates = [\"5/1h\"]\n");
    let s = Send::e164("+14155550123");
    let hour_start = T0 - T0 % HOUR + HOUR;
    let mut forwarded = Vec::new();
    // Five sends in the last second of one hour...
    for i in 0..5 {
        let t = hour_start - SEC + i;
        if p.decide(&s.attempt(), t).forwarded() {
            forwarded.push(t);
        }
    }
    // ...then one try every 12 minutes of the next hour, each the moment
    // the estimate has room.
    for i in 1..=4 {
        let t = hour_start + i * 12 * MIN;
        if p.decide(&s.attempt(), t).forwarded() {
            forwarded.push(t);
        }
    }
    let last = *forwarded.last().unwrap();
    let in_last_hour = forwarded.iter().filter(|&&t| t + HOUR > last).count();
    assert!(
        in_last_hour <= 5,
        "rate 5/1h forwarded {in_last_hour} sends within one hour: {:?}",
        forwarded
            .iter()
            .map(|t| (t - (hour_start - HOUR)) / SEC)
            .collect::<Vec<_>>()
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..quiet() })]

    /// Threads deciding at the same instant on one policy: no key lets more
    /// than its count through, and a lone global limit lets exactly its
    /// count through (nothing lost to races either way).
    #[test]
    fn concurrent_deciders_never_let_more_than_the_count_through(
        threads in 2usize..9,
        per_thread in 5usize..60,
        global in 1u64..80,
        prefix in 1u64..20,
        user in 1u64..20,
        offset in 0..HOUR,
    ) {
        let now = T0 + offset;
        let toml = format!(
            "[[limit]]\nname = \"prefix\"\nkey = \"prefix:8\"\nrates = [\"{prefix}/1h\"]\n\
             [[limit]]\nname = \"user\"\nkey = \"user\"\nrates = [\"{user}/1h\"]\n\
             [[limit]]\nname = \"global\"\nkey = \"global\"\nrates = [\"{global}/1h\"]\n"
        );
        let mixed = Arc::new(policy(&toml));
        let alone = Arc::new(policy(&format!(
            "[[limit]]\nname = \"global\"\nkey = \"global\"\nrates = [\"{global}/1h\"]\n"
        )));
        let barrier = Arc::new(Barrier::new(threads));
        let results: Vec<Vec<(Send, bool, bool)>> = std::thread::scope(|sc| {
            let handles: Vec<_> = (0..threads)
                .map(|t| {
                    let (mixed, alone, barrier) = (mixed.clone(), alone.clone(), barrier.clone());
                    sc.spawn(move || {
                        barrier.wait();
                        (0..per_thread)
                            .map(|i| {
                                let mut s = Send::e164(&pool_number(
                                    (t + i) % POOL_PREFIXES.len(),
                                    t * 100 + i,
                                ));
                                s.user = Some(format!("u{}", i % 3));
                                let a = mixed.decide(&s.attempt(), now).forwarded();
                                let b = alone.decide(&s.attempt(), now).forwarded();
                                (s, a, b)
                            })
                            .collect()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let all: Vec<&(Send, bool, bool)> = results.iter().flatten().collect();
        let total = all.len() as u64;
        let alone_allowed = all.iter().filter(|r| r.2).count() as u64;
        prop_assert_eq!(alone_allowed, global.min(total));
        let mut per_key: BTreeMap<String, u64> = BTreeMap::new();
        for (s, a, _) in &all {
            if *a {
                *per_key.entry("global".into()).or_default() += 1;
                *per_key.entry(format!("prefix={}", &s.to.e164[..9])).or_default() += 1;
                *per_key.entry(format!("user={}", s.user.as_ref().unwrap())).or_default() += 1;
            }
        }
        for (key, n) in &per_key {
            let cap = match key.split('=').next().unwrap() {
                "global" => global,
                "prefix" => prefix,
                _ => user,
            };
            prop_assert!(*n <= cap, "{} allowed {} at one instant, rate {}/1h", key, n, cap);
        }
        // Something went out: the first decider always finds room.
        prop_assert!(per_key.get("global").copied().unwrap_or(0) >= 1);
    }
}

// ====================================================================
// 3. Spend never exceeds a cap.
// ====================================================================

/// Prices in micro-dollars, as the reference model reads them.
const SMS: [(&str, u64); 3] = [("GB", 40_000), ("UZ", 250_000), ("*", 10_000)];
const MMS: u64 = 20_000;
const VOICE: [(&str, u64); 2] = [("UZ", 300_000), ("*", 13_000)];
const VERIFY: u64 = 50_000;
const UZ_HOURLY: u64 = 600_000;
const UZ_DAILY: u64 = 1_000_000;

fn price(table: &[(&str, u64)], region: &str) -> u64 {
    table
        .iter()
        .find(|(r, _)| *r == region)
        .or_else(|| table.iter().find(|(r, _)| *r == "*"))
        .unwrap()
        .1
}

fn money(micros: u64) -> String {
    format!("{}.{:06}", micros / 1_000_000, micros % 1_000_000)
}

fn budget_toml(hourly: u64, daily: u64) -> String {
    format!(
        "[geo]\ndeny = [\"CU\"]\n\
         [budget]\nhourly = \"{}\"\ndaily = \"{}\"\n\
         prices = {{ default = \"0.01\", GB = \"0.04\", UZ = \"0.25\" }}\n\
         mms_prices = {{ default = \"0.02\" }}\n\
         voice_prices = {{ default = \"0.013\", UZ = \"0.30\" }}\n\
         verify_prices = {{ default = \"0.05\" }}\n\
         regions = {{ UZ = {{ hourly = \"{}\", daily = \"{}\" }} }}\n\
         [balance]\nmin = \"1.00\"\non_error = \"block\"\n",
        money(hourly),
        money(daily),
        money(UZ_HOURLY),
        money(UZ_DAILY),
    )
}

/// (region, prefix, digits of a valid number).
const REGION_NUMBERS: [(&str, &str, usize); 5] = [
    ("US", "+1415555", 11),
    ("GB", "+447400", 12),
    ("UZ", "+99899394", 12),
    ("DE", "+4915112", 13),
    ("CU", "+535123", 10),
];

#[derive(Debug, Clone)]
struct Purchase {
    advance: Millis,
    region: usize,
    n: u16,
    product: u8,
    segments: u32,
    media: bool,
    balance: u8,
}

fn purchase() -> impl Strategy<Value = Purchase> {
    (
        prop_oneof![
            3 => Just(0 as Millis),
            4 => 0..10 * MIN,
            2 => 0..2 * HOUR,
            1 => 0..DAY,
        ],
        0..REGION_NUMBERS.len(),
        0u16..1000,
        0u8..3,
        1u32..6,
        proptest::bool::weighted(0.2),
        prop_oneof![6 => Just(0u8), 1 => Just(1u8), 1 => Just(2u8)],
    )
        .prop_map(
            |(advance, region, n, product, segments, media, balance)| Purchase {
                advance,
                region,
                n,
                product,
                segments,
                media,
                balance,
            },
        )
}

impl Purchase {
    fn send(&self) -> Send {
        let (_, prefix, total) = REGION_NUMBERS[self.region];
        let digits = total + 1 - prefix.len();
        let mut s = Send::e164(&format!(
            "{prefix}{:0width$}",
            self.n as u64 * 7 % 10u64.pow(digits as u32),
            width = digits
        ));
        s.product = [Product::Messaging, Product::Voice, Product::Verify][self.product as usize];
        s.segments = self.segments;
        s.media = usize::from(self.media);
        s.balance = match self.balance {
            0 => BalanceView::Known(smsguard::config::Money(5_000_000)),
            1 => BalanceView::Known(smsguard::config::Money(500_000)),
            _ => BalanceView::Unavailable,
        };
        s
    }

    /// What the send costs, by the reference price tables.
    fn cost(&self) -> u64 {
        let region = REGION_NUMBERS[self.region].0;
        match self.product {
            0 if self.media => MMS,
            0 => price(&SMS, region) * u64::from(self.segments),
            1 => price(&VOICE, region),
            _ => VERIFY,
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..quiet() })]

    /// Random sends with prices, segments, products, regions and balances
    /// over hours and days: the cost of what went out never exceeds a cap
    /// in its window; a send refused for money really did not fit; the
    /// guard's own spend figures match the reference sum (sends blocked
    /// after the budget stage spent nothing).
    #[test]
    fn spend_never_exceeds_a_cap(
        hourly in 50_000u64..2_000_000,
        daily_factor in 1u64..4,
        offset in 0..DAY,
        purchases in proptest::collection::vec(purchase(), 1..120),
    ) {
        let daily = hourly * daily_factor;
        let p = policy(&budget_toml(hourly, daily));
        let mut now = T0 + offset;
        // (window name, window start) -> spent, by the reference.
        let mut spent: BTreeMap<(String, Millis), u64> = BTreeMap::new();
        for purchase in &purchases {
            now += purchase.advance;
            let send = purchase.send();
            let region = REGION_NUMBERS[purchase.region].0;
            let cost = purchase.cost();
            let mut caps: Vec<(&str, Millis, u64)> =
                vec![("hour:*", HOUR, hourly), ("day:*", DAY, daily)];
            if region == "UZ" {
                caps.push(("hour:UZ", HOUR, UZ_HOURLY));
                caps.push(("day:UZ", DAY, UZ_DAILY));
            }
            let d = p.decide(&send.attempt(), now);
            let r = rule(&d).to_string();
            if d.forwarded() {
                prop_assert!(region != "CU", "geo deny lets nothing out");
                prop_assert!(purchase.balance == 0, "balance blocks: {}", r);
                for (name, window, cap) in &caps {
                    let total = spent.entry((name.to_string(), now - now % window)).or_default();
                    *total += cost;
                    prop_assert!(
                        *total <= *cap,
                        "{} spent {} over cap {}", name, total, cap
                    );
                }
            } else if r.starts_with("budget:") {
                // Refused for money: some cap that applies had no room.
                let full = caps.iter().any(|(name, window, cap)| {
                    spent.get(&(name.to_string(), now - now % window)).copied().unwrap_or(0) + cost > *cap
                });
                prop_assert!(full, "{} refused a send of {} that fit: {:?}", r, cost, spent);
            } else {
                prop_assert!(
                    r == "geo:CU" || r.starts_with("balance:"),
                    "unexpected rule {}", r
                );
            }
        }
        // The guard's figures for the current windows are the reference's.
        for (name, guard_spent, _) in p.budget_status(now) {
            let window = if name.starts_with("hour") { HOUR } else { DAY };
            let want = spent.get(&(name.clone(), now - now % window)).copied().unwrap_or(0);
            prop_assert_eq!(guard_spent.0, want, "{} spent", name);
        }
    }

    /// Threads deciding at the same instant against one hourly cap: the
    /// allowed costs sum to at most the cap, every refused send really did
    /// not fit in what was finally spent, and the guard's figure matches.
    #[test]
    fn concurrent_spend_never_exceeds_the_cap(
        cap in 10_000u64..3_000_000,
        threads in 2usize..9,
        purchases in proptest::collection::vec(purchase(), 8..64),
        offset in 0..HOUR,
    ) {
        let p = Arc::new(policy(&format!(
            "[budget]\nhourly = \"{}\"\n\
             prices = {{ default = \"0.01\", GB = \"0.04\", UZ = \"0.25\" }}\n\
             mms_prices = {{ default = \"0.02\" }}\n\
             voice_prices = {{ default = \"0.013\", UZ = \"0.30\" }}\n\
             verify_prices = {{ default = \"0.05\" }}\n",
            money(cap)
        )));
        let now = T0 + offset;
        let barrier = Arc::new(Barrier::new(threads));
        let purchases = Arc::new(purchases);
        let results: Vec<(u64, bool)> = std::thread::scope(|sc| {
            let handles: Vec<_> = (0..threads)
                .map(|t| {
                    let (p, barrier, purchases) = (p.clone(), barrier.clone(), purchases.clone());
                    sc.spawn(move || {
                        barrier.wait();
                        purchases
                            .iter()
                            .enumerate()
                            .filter(|(i, _)| i % threads == t)
                            .map(|(_, pu)| {
                                let mut s = pu.send();
                                s.balance = BalanceView::NotAsked;
                                (pu.cost(), p.decide(&s.attempt(), now).forwarded())
                            })
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            handles.into_iter().flat_map(|h| h.join().unwrap()).collect()
        });
        let total: u64 = results.iter().filter(|r| r.1).map(|r| r.0).sum();
        prop_assert!(total <= cap, "spent {} over cap {}", total, cap);
        for (cost, ok) in &results {
            if !ok {
                prop_assert!(total + cost > cap, "a send of {} was refused with {} of {} spent", cost, total, cap);
            }
        }
        let status = p.budget_status(now);
        let guard = status.iter().find(|(n, _, _)| n == "hour:*").unwrap().1;
        prop_assert_eq!(guard.0, total);
    }
}

#[test]
fn the_reference_prices_are_the_policys() {
    // If the policy priced differently from the reference, the budget
    // properties would check the wrong sums: pin the two together.
    let p = policy(&budget_toml(100_000_000, 100_000_000));
    let mut now = T0;
    // Every region but CU, which geo stops before the budget.
    for (region, (name, _, _)) in REGION_NUMBERS.iter().enumerate().take(4) {
        for product in 0..3u8 {
            for media in [false, true] {
                let pu = Purchase {
                    advance: 0,
                    region,
                    n: 1,
                    product,
                    segments: 2,
                    media,
                    balance: 0,
                };
                // A day apart: the UZ caps hold one send at a time.
                now += DAY;
                let send = pu.send();
                assert!(send.class.valid, "{pu:?}");
                assert_eq!(
                    send.class.region.map(|r| r.to_string()).as_deref(),
                    Some(*name)
                );
                let before = p.budget_status(now)[0].1 .0;
                let d = p.decide(&send.attempt(), now);
                assert_eq!(d.action, Action::Allow, "{pu:?}");
                let after = p.budget_status(now)[0].1 .0;
                assert_eq!(after - before, pu.cost(), "{pu:?}");
            }
        }
    }
}

#[test]
fn the_generated_numbers_are_valid_and_where_the_models_think() {
    for (p, (prefix, _)) in POOL_PREFIXES.iter().enumerate() {
        for n in [0, 7, 99, 812] {
            let s = Send::e164(&pool_number(p, n));
            assert!(s.class.valid, "{}", s.to.e164);
            assert!(s.to.e164.starts_with(prefix));
        }
    }
    let cu = Purchase {
        advance: 0,
        region: 4,
        n: 3,
        product: 0,
        segments: 1,
        media: false,
        balance: 0,
    };
    let s = cu.send();
    assert!(s.class.valid, "{}", s.to.e164);
    assert_eq!(s.class.region.map(|r| r.to_string()).as_deref(), Some("CU"));
}
