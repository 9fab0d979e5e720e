//! `smsguard demo`: a day of legitimate sends and an SMS pumping attack,
//! replayed offline over real HTTP through the guard in front of a built-in
//! fake Twilio, then a table of what was sent, what was stopped by which
//! rule, and what it would have cost.
//!
//! Time is simulated: the guard runs on a manual clock that the replay moves
//! to each send's moment, so a day takes seconds. Nothing leaves 127.0.0.1.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::clock::{ManualClock, Millis};
use crate::config::{Config, Money, Prices};
use crate::fake_twilio::FakeTwilio;
use crate::guard::Guard;
use crate::phone::{Classifier, Region};
use crate::telemetry::DecisionEvent;

/// The built-in example policy.
pub const EXAMPLE_POLICY: &str = include_str!("../config.example.toml");

const ACCOUNT: &str = "AC5ef8732a3c49700934481addd5ce1659";
const SERVICE: &str = "VA3e1f2b5c7d9a0b4c6e8f1a3b5c7d9e0f";

/// How much traffic to replay.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    /// Legitimate sends over the day (one-time codes, with some resends).
    pub legit: usize,
    /// Attack sends to the +99899394… block.
    pub attack_blocked_country: usize,
    /// Attack sends to a few prefixes of an allowed country.
    pub attack_allowed_country: usize,
    /// Attack verifications (Verify API, channel sms) to the same block.
    pub attack_verify: usize,
    /// Share of legitimate sends made through Verify, in percent.
    pub legit_verify_percent: u32,
    /// Distinct client IPs the attack comes from.
    pub attack_ips: usize,
    pub seed: u64,
}

impl Default for Plan {
    fn default() -> Self {
        Plan {
            legit: 4_000,
            attack_blocked_country: 13_000,
            attack_allowed_country: 1_000,
            attack_verify: 1_000,
            legit_verify_percent: 25,
            attack_ips: 20_000,
            seed: 20_231_122,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Class {
    Legitimate,
    AttackBlockedCountry,
    AttackAllowedCountry,
    AttackVerify,
}

impl Class {
    fn label(&self) -> &'static str {
        match self {
            Class::Legitimate => "legitimate",
            Class::AttackBlockedCountry => "attack +99899394… (UZ)",
            Class::AttackAllowedCountry => "attack, allowed country",
            Class::AttackVerify => "attack via Verify (UZ)",
        }
    }
    pub fn is_attack(&self) -> bool {
        !matches!(self, Class::Legitimate)
    }
}

struct Send {
    at: Millis,
    class: Class,
    to: String,
    region: Option<Region>,
    ip: IpAddr,
    user: Option<String>,
    body: String,
    /// Sent as a Verify verification instead of a message.
    verify: bool,
}

/// Per-class tallies.
#[derive(Debug, Clone, Default)]
pub struct Tally {
    pub sends: u64,
    pub forwarded: u64,
    pub stopped: u64,
    /// `stage rule` → count, for stopped sends.
    pub stopped_by: BTreeMap<String, u64>,
    /// Cost in millionths if every send had gone out, and of those that did.
    pub cost_without: u64,
    pub cost_with: u64,
}

#[derive(Debug, Clone)]
pub struct Report {
    pub classes: BTreeMap<Class, Tally>,
    /// Sends the fake Twilio actually received.
    pub upstream_received: usize,
    /// Balance requests the guard made (balance stage).
    pub balance_checks: usize,
    pub currency: String,
    pub seconds: f64,
}

impl Report {
    pub fn attack_stopped_ratio(&self) -> f64 {
        let (mut sent, mut stopped) = (0, 0);
        for (c, t) in &self.classes {
            if c.is_attack() {
                sent += t.sends;
                stopped += t.stopped;
            }
        }
        stopped as f64 / sent.max(1) as f64
    }

    pub fn legit_blocked_ratio(&self) -> f64 {
        self.classes
            .get(&Class::Legitimate)
            .map_or(0.0, |t| t.stopped as f64 / t.sends.max(1) as f64)
    }

    pub fn forwarded(&self) -> u64 {
        self.classes.values().map(|t| t.forwarded).sum()
    }

    pub fn table(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "{:<26} {:>7} {:>9} {:>8}  stopped by (stage rule: sends)",
            "class", "sends", "forwarded", "stopped"
        );
        for (c, t) in &self.classes {
            let by: Vec<String> = t
                .stopped_by
                .iter()
                .map(|(k, v)| format!("{k}: {v}"))
                .collect();
            let _ = writeln!(
                s,
                "{:<26} {:>7} {:>9} {:>8}  {}",
                c.label(),
                t.sends,
                t.forwarded,
                t.stopped,
                if by.is_empty() {
                    "-".into()
                } else {
                    by.join(", ")
                }
            );
        }
        let sum = |f: fn(&Tally) -> u64| self.classes.values().map(f).sum::<u64>();
        let (without, with) = (sum(|t| t.cost_without), sum(|t| t.cost_with));
        let _ = writeln!(s);
        let _ = writeln!(
            s,
            "attack stopped:           {:.2}%",
            100.0 * self.attack_stopped_ratio()
        );
        let _ = writeln!(
            s,
            "legitimate sends blocked: {:.2}%",
            100.0 * self.legit_blocked_ratio()
        );
        let _ = writeln!(
            s,
            "estimated cost:           {} {} without the guard, {} {} with it (saved {} {})",
            Money(without),
            self.currency,
            Money(with),
            self.currency,
            Money(without.saturating_sub(with)),
            self.currency
        );
        let _ = writeln!(
            s,
            "fake Twilio received:     {} sends ({} forwarded by the guard) and {} balance checks",
            self.upstream_received,
            self.forwarded(),
            self.balance_checks
        );
        let _ = writeln!(
            s,
            "replayed in:              {:.1}s of real time",
            self.seconds
        );
        s
    }
}

pub fn main(config: Option<&Path>) -> i32 {
    let parsed = match config {
        Some(p) => Config::load(p),
        None => Config::parse(Path::new("config.example.toml (built in)"), EXAMPLE_POLICY),
    };
    let config = match parsed {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return 1;
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return 1;
        }
    };
    println!("smsguard demo: a day of one-time-code traffic plus an SMS pumping attack at 01:00,");
    println!(
        "replayed over HTTP through the guard in front of a built-in fake Twilio (offline).\n"
    );
    match rt.block_on(run(config, Plan::default())) {
        Ok(r) => {
            print!("{}", r.table());
            0
        }
        Err(e) => {
            eprintln!("demo failed: {e}");
            1
        }
    }
}

/// Runs the whole demo and returns its figures.
pub async fn run(mut config: Config, plan: Plan) -> Result<Report, String> {
    let fake = FakeTwilio::start().await.map_err(|e| e.to_string())?;
    config.listen.addr = "127.0.0.1:0".parse().map_err(|e| format!("{e}"))?;
    config.upstream.api = fake.url();
    config.upstream.verify = fake.url();
    // The day is simulated: pacing fakes like real Twilio answers would
    // only make the replay take longer in real time.
    config.shadow.timing = false;
    let uz: Region = "UZ".parse()?;
    let prices = config
        .budget
        .as_ref()
        .map(|b| b.prices.clone())
        .unwrap_or_else(|| Prices {
            default: Money(7_900),
            by_region: [(uz, Money(300_000))].into(),
        });
    let currency = config
        .budget
        .as_ref()
        .map_or("USD".into(), |b| b.currency.clone());

    // The day starts at the last UTC midnight, so fake dates look real.
    let now = crate::clock::SystemClock;
    let day = crate::clock::Clock::now(&now) / 86_400_000 * 86_400_000;
    let clock = ManualClock::new(day);
    let sends = traffic(&config, plan, day)?;

    let guard = Guard::start(config, Arc::new(clock.clone())).await?;
    let events: Arc<Mutex<Vec<DecisionEvent>>> = Arc::default();
    let sink = events.clone();
    guard
        .app()
        .set_decision_sink(Arc::new(move |e: &DecisionEvent| {
            if let Ok(mut v) = sink.lock() {
                v.push(e.clone());
            }
        }));

    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let url = format!(
        "{}/2010-04-01/Accounts/{ACCOUNT}/Messages.json",
        guard.url()
    );
    let verify_url = format!("{}/v2/Services/{SERVICE}/Verifications", guard.url());
    let auth = "Basic QUM1ZWY4NzMyYTNjNDk3MDA5MzQ0ODFhZGRkNWNlMTY1OTpkZW1vLXRva2Vu";
    let started = Instant::now();
    let mut classes: BTreeMap<Class, Tally> = BTreeMap::new();
    for s in &sends {
        clock.set(s.at);
        let (url, form) = if s.verify {
            let form = form_urlencoded::Serializer::new(String::new())
                .append_pair("To", &s.to)
                .append_pair("Channel", "sms")
                .finish();
            (&verify_url, form)
        } else {
            let form = form_urlencoded::Serializer::new(String::new())
                .append_pair("To", &s.to)
                .append_pair("From", "+15017122661")
                .append_pair("Body", &s.body)
                .finish();
            (&url, form)
        };
        let mut req = http::Request::post(url)
            .header("content-type", "application/x-www-form-urlencoded")
            .header("authorization", auth)
            .header("x-smsguard-client-ip", s.ip.to_string());
        if let Some(u) = &s.user {
            req = req.header("x-smsguard-user", u);
        }
        let req = req
            .body(Full::new(Bytes::from(form)))
            .map_err(|e| e.to_string())?;
        let resp = client
            .request(req)
            .await
            .map_err(|e| format!("request failed: {e}"))?;
        let status = resp.status();
        resp.into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?;
        let event = events
            .lock()
            .map_err(|_| "decision log poisoned")?
            .pop()
            .ok_or("the guard recorded no decision for a send")?;
        let cost = prices.for_region(s.region).0;
        let t = classes.entry(s.class).or_default();
        t.sends += 1;
        t.cost_without += cost;
        if matches!(event.action, "allow" | "monitor") {
            if !status.is_success() {
                return Err(format!("a forwarded send got {status}"));
            }
            t.forwarded += 1;
            t.cost_with += cost;
        } else {
            t.stopped += 1;
            let key = format!(
                "{} {}",
                event.stage.unwrap_or("-"),
                event.rule.as_deref().unwrap_or("-")
            );
            *t.stopped_by.entry(key).or_default() += 1;
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let seen = fake.requests();
    let balance_checks = seen
        .iter()
        .filter(|r| r.uri.path().ends_with("/Balance.json"))
        .count();
    let upstream_received = seen.len() - balance_checks;
    guard.stop().await;
    fake.shutdown();
    Ok(Report {
        classes,
        upstream_received,
        balance_checks,
        currency,
        seconds,
    })
}

/// Builds the day's sends, sorted by time.
fn traffic(config: &Config, plan: Plan, day: Millis) -> Result<Vec<Send>, String> {
    let mut rng = StdRng::seed_from_u64(plan.seed);
    let classifier = Classifier::new(100_000);
    let allowed = |r: Option<Region>| {
        r.is_some_and(|r| config.geo.allow.is_empty() || config.geo.allow.contains(&r))
    };
    // A realistic number of the region's own ranges: generated, then kept
    // only if libphonenumber calls it a valid mobile-capable number there.
    let legit_number = |rng: &mut StdRng| -> (String, Option<Region>) {
        loop {
            let pick: u32 = rng.gen_range(0..100);
            let n = if pick < 80 {
                let areas = [
                    201, 212, 213, 305, 312, 404, 415, 503, 512, 617, 646, 702, 713, 718, 773, 818,
                    917, 919, 972, 206,
                ];
                format!(
                    "+1{}{}{:06}",
                    areas[rng.gen_range(0..areas.len())],
                    rng.gen_range(2..10),
                    rng.gen_range(0..1_000_000)
                )
            } else if pick < 88 {
                let areas = [416, 604, 514, 403, 613, 647, 778, 905];
                format!(
                    "+1{}{}{:06}",
                    areas[rng.gen_range(0..areas.len())],
                    rng.gen_range(2..10),
                    rng.gen_range(0..1_000_000)
                )
            } else if pick < 97 {
                format!(
                    "+447{}{:08}",
                    rng.gen_range(4..10),
                    rng.gen_range(0..100_000_000)
                )
            } else {
                format!(
                    "+3538{}{:07}",
                    [3, 5, 6, 7, 9][rng.gen_range(0..5)],
                    rng.gen_range(0..10_000_000)
                )
            };
            let c = classifier.classify(&n);
            let blocked_type = config.numbers.block_types.contains(&c.kind);
            if c.valid && allowed(c.region) && !blocked_type && !n.contains("555") {
                return (n, c.region);
            }
        }
    };
    let body = |rng: &mut StdRng| {
        format!(
            "Your verification code is {:06}",
            rng.gen_range(0..1_000_000)
        )
    };
    let mut sends = Vec::new();

    // Legitimate: sign-ups and logins over the day, busier by day than at
    // night; some people ask for a second or third code after a while.
    let mut made = 0;
    let mut user = 0u32;
    while made < plan.legit {
        user += 1;
        let (to, region) = legit_number(&mut rng);
        let hour_weight = |h: u64| if (8..22).contains(&h) { 4 } else { 1 };
        let at = loop {
            let t = rng.gen_range(0..86_400_000u64);
            if rng.gen_range(0..4) < hour_weight(t / 3_600_000) {
                break t;
            }
        };
        let ip = IpAddr::V4(Ipv4Addr::from(rng.gen_range(0x0b00_0000u32..0xdf00_0000)));
        let mut t = at;
        let verify = rng.gen_range(0..100) < plan.legit_verify_percent;
        let resends = match rng.gen_range(0..100) {
            0..=2 => 2,
            3..=14 => 1,
            _ => 0,
        };
        for k in 0..=resends {
            if made >= plan.legit {
                break;
            }
            if k > 0 {
                // People wait for the code before asking again.
                t += rng.gen_range(45_000..240_000) * k as u64;
            }
            sends.push(Send {
                at: day + t.min(86_399_999),
                class: Class::Legitimate,
                to: to.clone(),
                region,
                ip,
                user: Some(format!("user-{user}")),
                body: body(&mut rng),
                verify,
            });
            made += 1;
        }
    }

    // The attack: one hour from 01:00, thousands of client IPs, numbers
    // concentrated in one block of a high-cost country...
    let start = 3_600_000u64;
    let ips: Vec<IpAddr> = (0..plan.attack_ips.max(1))
        .map(|_| IpAddr::V4(Ipv4Addr::from(rng.gen_range(0x0b00_0000u32..0xdf00_0000))))
        .collect();
    let uz: Region = "UZ".parse()?;
    for _ in 0..plan.attack_blocked_country {
        sends.push(Send {
            at: day + start + rng.gen_range(0..3_600_000),
            class: Class::AttackBlockedCountry,
            to: format!("+99899394{:04}", rng.gen_range(0..10_000)),
            region: Some(uz),
            ip: ips[rng.gen_range(0..ips.len())],
            user: None,
            body: body(&mut rng),
            verify: false,
        });
    }
    // The same block through a sign-up form that uses Verify.
    for _ in 0..plan.attack_verify {
        sends.push(Send {
            at: day + start + rng.gen_range(0..3_600_000),
            class: Class::AttackVerify,
            to: format!("+99899394{:04}", rng.gen_range(0..10_000)),
            region: Some(uz),
            ip: ips[rng.gen_range(0..ips.len())],
            user: None,
            body: String::new(),
            verify: true,
        });
    }
    // ...and a share aimed at a few mobile ranges of an allowed country,
    // which geo rules alone cannot stop.
    let mut prefixes = Vec::new();
    while prefixes.len() < 4 {
        // Eight digits (44 7xxxxx): exactly the `prefix:8` bucket.
        let p = format!(
            "+447{}{:04}",
            rng.gen_range(4..10),
            rng.gen_range(0..10_000)
        );
        let c = classifier.classify(&format!("{p}{:04}", 1_234));
        if c.valid && allowed(c.region) && !prefixes.contains(&p) {
            prefixes.push(p);
        }
    }
    for _ in 0..plan.attack_allowed_country {
        let p = &prefixes[rng.gen_range(0..prefixes.len())];
        let to = format!("{p}{:04}", rng.gen_range(0..10_000));
        let region = classifier.classify(&to).region;
        sends.push(Send {
            at: day + start + rng.gen_range(0..3_600_000),
            class: Class::AttackAllowedCountry,
            to,
            region,
            ip: ips[rng.gen_range(0..ips.len())],
            user: None,
            body: body(&mut rng),
            verify: false,
        });
    }
    sends.sort_by_key(|s| s.at);
    Ok(sends)
}
