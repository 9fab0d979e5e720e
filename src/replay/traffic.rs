//! Generated traffic for `smsguard demo`: a day of legitimate one-time-code
//! sends (with the people who confirm them) and pumping attacks of several
//! kinds, as replay records labelled by class.
//!
//! Labels start with `legitimate` or `attack`; the demo's verdict counts by
//! that first word. Attackers never confirm a code; legitimate people
//! mostly do. Nothing here judges anything: it only describes what an app
//! would have asked Twilio to send.
//!
//! Each class is one small function with its own random stream (the seed,
//! the day kind and the class label), so a change to one class does not
//! reshuffle the others.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr};

use rand::rngs::StdRng;
use rand::seq::{index, SliceRandom};
use rand::{Rng, SeedableRng};

use crate::clock::Millis;
use crate::config::Config;
use crate::phone::{Classifier, NumberType, Region};
use crate::twilio::routes::Product;

use super::Record;

pub const DAILY_SIGN_INS: &str = "legitimate: daily sign-ins";
pub const CAMPAIGN_SURGE: &str = "legitimate: campaign surge";
pub const CARRIER_NAT: &str = "legitimate: carrier NAT";
pub const BLOCKED_COUNTRY: &str = "attack: blocked country";
pub const BLOCKED_COUNTRY_VERIFY: &str = "attack: blocked country via Verify";
pub const MOBILE_BLOCKS: &str = "attack: mobile blocks";
pub const WIDE_AND_SHALLOW: &str = "attack: wide and shallow";
pub const LOW_AND_SLOW: &str = "attack: low and slow";
pub const ONE_ADDRESS: &str = "attack: one address";
pub const ONE_USER: &str = "attack: one user";
pub const IN_COUNTRY_VERIFY: &str = "attack: in-country Verify";

/// Every label a generated day uses, legitimate classes first.
pub const LABELS: [&str; 11] = [
    DAILY_SIGN_INS,
    CAMPAIGN_SURGE,
    CARRIER_NAT,
    BLOCKED_COUNTRY,
    BLOCKED_COUNTRY_VERIFY,
    MOBILE_BLOCKS,
    WIDE_AND_SHALLOW,
    LOW_AND_SLOW,
    ONE_ADDRESS,
    ONE_USER,
    IN_COUNTRY_VERIFY,
];

const ACCOUNT: &str = "AC5ef8732a3c49700934481addd5ce1659";
const FROM: &str = "+15017122661";

const SECOND: u64 = 1_000;
const MINUTE: u64 = 60 * SECOND;
const HOUR: u64 = 60 * MINUTE;
const DAY: u64 = 24 * HOUR;

/// What to generate. Different seeds give different numbers, ranges, times
/// and client addresses; the held-out day also changes rates and mixes.
#[derive(Debug, Clone)]
pub struct Plan {
    pub seed: u64,
    /// A day whose attack ranges, rates and mixes differ from the demo's,
    /// to check that a policy does not depend on the demo's numbers.
    pub held_out: bool,
}

impl Default for Plan {
    fn default() -> Self {
        Plan {
            seed: 20_231_122,
            held_out: false,
        }
    }
}

/// The day's sends starting at `day` (a UTC midnight), sorted by time.
/// `config` tells which countries and number types the policy allows, so
/// legitimate users only have numbers a real user of this app would have.
pub fn day(plan: &Plan, day: Millis, config: &Config) -> Result<Vec<Record>, String> {
    let mut g = Gen::new(plan, day, config)?;
    let habits = Habits::new(&mut g.rng("habits"), plan.held_out);

    daily_sign_ins(&mut g, &habits)?;
    campaign_surge(&mut g, &habits)?;
    carrier_nat(&mut g, &habits)?;

    let pool = attack_pool(&g);
    let pump = pump(&g)?;
    blocked_country(&mut g, &pool, &pump);
    blocked_country_verify(&mut g, &pool, &pump);
    mobile_blocks(&mut g, &pool)?;
    wide_and_shallow(&mut g, &pool)?;
    low_and_slow(&mut g, &pool)?;
    one_address(&mut g)?;
    one_user(&mut g, &pool)?;
    in_country_verify(&mut g, &pool)?;

    // Stable: records of one moment keep the order they were made in.
    g.records.sort_by_key(|r| r.at);
    Ok(g.records)
}

// ---------------------------------------------------------------------------
// Legitimate traffic

/// People signing in over the day, five times busier in their daytime than
/// at night; a quarter through Verify; some ask for a second or third code
/// when the first is slow to arrive. Each has their own address, except a
/// few who share one with someone else (a household, an office).
fn daily_sign_ins(g: &mut Gen, habits: &Habits) -> Result<(), String> {
    let mut rng = g.rng(DAILY_SIGN_INS);
    let sends = if g.held_out { 5_000 } else { 4_000 };
    let mut recent: Vec<IpAddr> = Vec::new();
    let mut made = 0;
    while made < sends {
        let country = g.pick_country(&mut rng);
        let to = g.number_of(&mut rng, country)?;
        let ip = match recent.choose(&mut rng) {
            Some(ip) if rng.gen_bool(0.08) => *ip,
            _ => IpAddr::V4(public_ipv4(&mut rng)),
        };
        recent.push(ip);
        if recent.len() > 64 {
            recent.remove(0);
        }
        let person = Person {
            to,
            ip,
            user: Some(g.new_user()),
            product: habits.product(&mut rng),
        };
        let at = busy_time(&mut rng, country);
        let codes = habits.codes(&mut rng).min(sends - made);
        made += g.person(&mut rng, &person, at, codes, DAILY_SIGN_INS, habits);
    }
    Ok(())
}

/// A marketing campaign (an email blast, a local TV spot) brings hundreds
/// of sign-ups from one city within half an hour, most in the first
/// minutes. Their numbers share the city's area code but are spread over
/// its exchanges, as real people's are; their addresses come from the
/// city's few ISPs. New accounts: the app has no user id for them yet.
fn campaign_surge(g: &mut Gen, habits: &Habits) -> Result<(), String> {
    let mut rng = g.rng(CAMPAIGN_SURGE);
    let cities: &[(&str, u16, Country)] = if g.held_out {
        &[
            ("Seattle", 206, Country::Us),
            ("Miami", 305, Country::Us),
            ("Boston", 617, Country::Us),
            ("Toronto", 416, Country::Ca),
        ]
    } else {
        &[
            ("Chicago", 312, Country::Us),
            ("Houston", 713, Country::Us),
            ("Atlanta", 404, Country::Us),
            ("Phoenix", 602, Country::Us),
        ]
    };
    let cities: Vec<_> = cities.iter().filter(|c| g.allows(c.2)).collect();
    // A policy that allows neither the US nor Canada has no such city.
    let Some(&&(_city, npa, country)) = cities.choose(&mut rng) else {
        return Ok(());
    };
    let (people, start, span) = if g.held_out {
        // Prime time in the evening, overlapping the night's attacks.
        (
            rng.gen_range(600..=1_000),
            rng.gen_range(0..3) * HOUR + rng.gen_range(0..HOUR),
            rng.gen_range(20..=45) * MINUTE,
        )
    } else {
        (
            rng.gen_range(300..=500),
            rng.gen_range(17..21) * HOUR + rng.gen_range(0..HOUR),
            30 * MINUTE,
        )
    };
    let isps: Vec<u32> = (0..rng.gen_range(3..=6))
        .map(|_| u32::from(public_ipv4(&mut rng)) & 0xffff_0000)
        .collect();
    for _ in 0..people {
        let to = g.usable_number(&mut rng, country, |rng| {
            format!(
                "+1{npa}{}{:04}",
                rng.gen_range(200..1_000),
                rng.gen_range(0..10_000)
            )
        })?;
        let isp = isps[rng.gen_range(0..isps.len())];
        let ip = IpAddr::V4(host_in(&mut rng, isp));
        let person = Person {
            to,
            ip,
            user: None,
            product: habits.product(&mut rng),
        };
        // Arrivals decay after the campaign lands: most come early.
        let after = (rng.gen::<f64>().powi(2) * span as f64) as u64;
        let codes = habits.codes(&mut rng);
        g.person(
            &mut rng,
            &person,
            start + after,
            codes,
            CAMPAIGN_SURGE,
            habits,
        );
    }
    Ok(())
}

/// Mobile carriers put many subscribers behind one public address
/// (carrier-grade NAT): a few addresses, each used by dozens of different
/// people over the day, all with numbers of the carrier's country.
fn carrier_nat(g: &mut Gen, habits: &Habits) -> Result<(), String> {
    let mut rng = g.rng(CARRIER_NAT);
    let (preferred, addresses, people) = if g.held_out {
        (
            [Country::Gb, Country::Ie, Country::Ca, Country::Us],
            4..=6,
            40..=80,
        )
    } else {
        (
            [Country::Us, Country::Ca, Country::Gb, Country::Ie],
            3..=5,
            30..=60,
        )
    };
    let Some(country) = preferred.into_iter().find(|c| g.allows(*c)) else {
        return Ok(());
    };
    let carrier = u32::from(public_ipv4(&mut rng)) & 0xffff_0000;
    for _ in 0..rng.gen_range(addresses) {
        let ip = IpAddr::V4(host_in(&mut rng, carrier));
        for _ in 0..rng.gen_range(people.clone()) {
            let person = Person {
                to: g.number_of(&mut rng, country)?,
                ip,
                user: Some(g.new_user()),
                product: habits.product(&mut rng),
            };
            let at = busy_time(&mut rng, country);
            let codes = habits.codes(&mut rng);
            g.person(&mut rng, &person, at, codes, CARRIER_NAT, habits);
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Attacks. Bots behind residential proxies: client addresses from a large
// pool, no user id (the sign-up form needs none) unless the class says
// otherwise, and never a confirmation.

/// The residential proxy addresses the attacks come from.
fn attack_pool(g: &Gen) -> Vec<IpAddr> {
    let mut rng = g.rng("attack pool");
    let size = if g.held_out {
        rng.gen_range(5_000..=40_000)
    } else {
        20_000
    };
    let mut seen = HashSet::new();
    while seen.len() < size {
        seen.insert(public_ipv4(&mut rng));
    }
    let mut pool: Vec<IpAddr> = seen.into_iter().map(IpAddr::V4).collect();
    // A HashSet's order is not the seed's: sort, then shuffle with the seed.
    pool.sort();
    pool.shuffle(&mut rng);
    pool
}

/// The number block of a high-cost country whose carrier shares the
/// revenue with the attacker, and when the attack on it runs.
struct Pump {
    /// An 8-digit prefix (`prefix:8`): the demo's is the README's
    /// `+99899394…` (Uzbekistan).
    block: String,
    /// Digits of its numbers, country code included.
    digits: usize,
    /// Start (ms into the day) and length of the messages' wave.
    start: u64,
    span: u64,
}

fn pump(g: &Gen) -> Result<Pump, String> {
    let mut rng = g.rng("pump");
    if !g.held_out {
        return Ok(Pump {
            block: "+99899394".into(),
            digits: 12,
            start: HOUR,
            span: HOUR,
        });
    }
    // Countries known for pumping, and +882 (international networks, no
    // region at all): the prefix of a mobile range, the length of its numbers.
    let mut candidates = vec![
        ("+99655", 12), // Kyrgyzstan
        ("+99670", 12), // Kyrgyzstan
        ("+96393", 12), // Syria
        ("+25261", 12), // Somalia
        ("+99290", 12), // Tajikistan
        ("+99450", 12), // Azerbaijan
        ("+22462", 12), // Guinea
        ("+2327", 11),  // Sierra Leone
        ("+2376", 12),  // Cameroon
        ("+88216", 12), // international networks
    ];
    candidates.shuffle(&mut rng);
    let start = rng.gen_range(2..=6) * HOUR + rng.gen_range(0..HOUR);
    let span = rng.gen_range(20..=180) * MINUTE;
    for (range, digits) in candidates {
        for _ in 0..20 {
            let block = fill(&mut rng, range, 8);
            let c = g.classifier.classify(&fill(&mut rng, &block, digits));
            if c.valid && !g.allowed(c.region) {
                return Ok(Pump {
                    block,
                    digits,
                    start,
                    span,
                });
            }
        }
    }
    Err("every candidate country of the blocked-country attack is allowed by the policy".into())
}

/// The classic pump: thousands of messages to one block of a high-cost
/// country within about an hour, from thousands of addresses.
fn blocked_country(g: &mut Gen, pool: &[IpAddr], pump: &Pump) {
    let mut rng = g.rng(BLOCKED_COUNTRY);
    let sends = if g.held_out {
        scaled(&mut rng, 13_000)
    } else {
        13_000
    };
    for _ in 0..sends {
        let at = within(&mut rng, pump.start, pump.span);
        let to = fill(&mut rng, &pump.block, pump.digits);
        let ip = pick(&mut rng, pool);
        g.attack(&mut rng, at, to, Product::Messaging, ip, BLOCKED_COUNTRY);
    }
}

/// The same block through a sign-up form that uses Verify: alongside the
/// messages in the demo; in the held-out day the attacker turns to it
/// halfway through the messages' wave, for a while of its own.
fn blocked_country_verify(g: &mut Gen, pool: &[IpAddr], pump: &Pump) {
    let mut rng = g.rng(BLOCKED_COUNTRY_VERIFY);
    let (sends, start, span) = if g.held_out {
        (
            scaled(&mut rng, 1_000),
            pump.start + pump.span / 2,
            rng.gen_range(30..=120) * MINUTE,
        )
    } else {
        (1_000, pump.start, pump.span)
    };
    for _ in 0..sends {
        let at = within(&mut rng, start, span);
        let to = fill(&mut rng, &pump.block, pump.digits);
        let ip = pick(&mut rng, pool);
        g.attack(
            &mut rng,
            at,
            to,
            Product::Verify,
            ip,
            BLOCKED_COUNTRY_VERIFY,
        );
    }
}

/// Premium-sharing ranges exist in allowed countries too: a few 8-digit
/// mobile blocks (`prefix:8`), hit hard within an hour. Geo cannot stop it.
fn mobile_blocks(g: &mut Gen, pool: &[IpAddr]) -> Result<(), String> {
    let mut rng = g.rng(MOBILE_BLOCKS);
    let (country, blocks, sends, start, span) = if g.held_out {
        (
            g.attack_country(&[Country::Ca, Country::Us, Country::Gb, Country::Ie]),
            rng.gen_range(2..=6),
            scaled(&mut rng, 1_000),
            rng.gen_range(8..=15) * HOUR + rng.gen_range(0..HOUR),
            rng.gen_range(30..=120) * MINUTE,
        )
    } else {
        let country = g.attack_country(&[Country::Gb, Country::Us, Country::Ca, Country::Ie]);
        (country, 4, 1_000, HOUR, HOUR)
    };
    // Each block in a range of its own: the attacker's partners are
    // scattered over the numbering plan.
    let mut prefixes = Vec::new();
    for _ in 0..blocks {
        let range = g.attack_range(&mut rng, country)?;
        prefixes.push(format!("{range}{}", rng.gen_range(0..10)));
    }
    for _ in 0..sends {
        let at = within(&mut rng, start, span);
        let block = &prefixes[rng.gen_range(0..blocks)];
        let to = fill(&mut rng, block, country.digits());
        let ip = pick(&mut rng, pool);
        g.attack(&mut rng, at, to, Product::Messaging, ip, MOBILE_BLOCKS);
    }
    Ok(())
}

/// A burst made to slip under per-block limits: one 7-digit range spread
/// evenly over its ten 8-digit blocks, hundreds of sends within a minute,
/// every one from a different address.
fn wide_and_shallow(g: &mut Gen, pool: &[IpAddr]) -> Result<(), String> {
    let mut rng = g.rng(WIDE_AND_SHALLOW);
    let (country, sends, start, span) = if g.held_out {
        (
            g.attack_country(&[Country::Us, Country::Ca, Country::Gb, Country::Ie]),
            scaled(&mut rng, 300),
            rng.gen_range(4..=22) * HOUR + rng.gen_range(0..59 * MINUTE),
            rng.gen_range(30..=120) * SECOND,
        )
    } else {
        let country = g.attack_country(&[Country::Gb, Country::Us, Country::Ca, Country::Ie]);
        (
            country,
            300,
            3 * HOUR + rng.gen_range(0..59 * MINUTE),
            MINUTE,
        )
    };
    let range = g.attack_range(&mut rng, country)?;
    let sends = sends.min(pool.len());
    for (i, k) in index::sample(&mut rng, pool.len(), sends)
        .into_iter()
        .enumerate()
    {
        let at = within(&mut rng, start, span);
        let to = fill(&mut rng, &format!("{range}{}", i % 10), country.digits());
        g.attack(
            &mut rng,
            at,
            to,
            Product::Messaging,
            pool[k],
            WIDE_AND_SHALLOW,
        );
    }
    Ok(())
}

/// A patient attacker who knows the usual limits: a few sends an hour to
/// each of several 8-digit blocks of one range, all day, every number
/// once, under `20/10m, 100/1d` per block and `5/1h` per number.
fn low_and_slow(g: &mut Gen, pool: &[IpAddr]) -> Result<(), String> {
    let mut rng = g.rng(LOW_AND_SLOW);
    // At most this many sends per block: under 100/1d with room to spare.
    const PER_BLOCK: usize = 80;
    let (country, sends, start, span) = if g.held_out {
        let hours = rng.gen_range(10..=20);
        (
            g.attack_country(&[Country::Us, Country::Ca, Country::Gb, Country::Ie]),
            scaled(&mut rng, 400).min(10 * PER_BLOCK),
            rng.gen_range(0..=(24 - hours) * HOUR),
            hours * HOUR,
        )
    } else {
        let country = g.attack_country(&[Country::Gb, Country::Us, Country::Ca, Country::Ie]);
        (country, 400, 6 * HOUR + rng.gen_range(0..HOUR), 12 * HOUR)
    };
    let range = g.attack_range(&mut rng, country)?;
    let blocks = sends.div_ceil(PER_BLOCK);
    let mut used = HashSet::new();
    for (b, digit) in index::sample(&mut rng, 10, blocks).into_iter().enumerate() {
        let block = format!("{range}{digit}");
        // This block's share, one per equal slot of the window: never two
        // close together, so no 10-minute window sees more than a few.
        let n = sends / blocks + usize::from(b < sends % blocks);
        let slot = span / n as u64;
        for k in 0..n as u64 {
            let at = (start + k * slot + rng.gen_range(0..slot)).min(DAY - 1);
            let to = loop {
                let to = fill(&mut rng, &block, country.digits());
                if used.insert(to.clone()) {
                    break to;
                }
            };
            let ip = pick(&mut rng, pool);
            g.attack(&mut rng, at, to, Product::Messaging, ip, LOW_AND_SLOW);
        }
    }
    Ok(())
}

/// One machine (a script on a rented server) texting scattered valid
/// numbers of allowed countries: every number different, every 8-digit
/// prefix different, so only the address ties them together.
fn one_address(g: &mut Gen) -> Result<(), String> {
    let mut rng = g.rng(ONE_ADDRESS);
    let (sends, start, span) = if g.held_out {
        (
            scaled(&mut rng, 200),
            rng.gen_range(15..=20) * HOUR + rng.gen_range(0..HOUR),
            rng.gen_range(30..=120) * MINUTE,
        )
    } else {
        (200, 10 * HOUR + rng.gen_range(0..HOUR), HOUR)
    };
    let ip = IpAddr::V4(public_ipv4(&mut rng));
    for to in g.scattered_numbers(&mut rng, sends)? {
        let at = within(&mut rng, start, span);
        g.attack(&mut rng, at, to, Product::Messaging, ip, ONE_ADDRESS);
    }
    Ok(())
}

/// One signed-up account (the attacker registered once: the day's newest
/// user id) driving the app's "text me a code" feature at scattered
/// numbers, hopping between proxy addresses every few sends.
fn one_user(g: &mut Gen, pool: &[IpAddr]) -> Result<(), String> {
    let mut rng = g.rng(ONE_USER);
    let (sends, start, span) = if g.held_out {
        (
            scaled(&mut rng, 200),
            rng.gen_range(3..=9) * HOUR + rng.gen_range(0..HOUR),
            rng.gen_range(60..=240) * MINUTE,
        )
    } else {
        (200, 14 * HOUR + rng.gen_range(0..HOUR), 2 * HOUR)
    };
    let user = g.new_user();
    let mut times: Vec<u64> = (0..sends).map(|_| within(&mut rng, start, span)).collect();
    times.sort_unstable();
    let mut ip = pick(&mut rng, pool);
    for (at, to) in times.into_iter().zip(g.scattered_numbers(&mut rng, sends)?) {
        if rng.gen_range(0..3) == 0 {
            ip = pick(&mut rng, pool);
        }
        g.attack(&mut rng, at, to, Product::Messaging, ip, ONE_USER)
            .user = Some(user.clone());
    }
    Ok(())
}

/// Verify abused inside an allowed country: one mobile range, sends spread
/// over hours and over every 8-digit block, slow enough per block that only
/// the missing confirmations give it away.
fn in_country_verify(g: &mut Gen, pool: &[IpAddr]) -> Result<(), String> {
    let mut rng = g.rng(IN_COUNTRY_VERIFY);
    let (country, sends, start, span) = if g.held_out {
        (
            g.attack_country(&[Country::Ie, Country::Gb, Country::Ca, Country::Us]),
            scaled(&mut rng, 500),
            rng.gen_range(9..=18) * HOUR + rng.gen_range(0..HOUR),
            rng.gen_range(60..=240) * MINUTE,
        )
    } else {
        let country = g.attack_country(&[Country::Us, Country::Ca, Country::Gb, Country::Ie]);
        (country, 500, 20 * HOUR + rng.gen_range(0..HOUR), 2 * HOUR)
    };
    let range = g.attack_range(&mut rng, country)?;
    for _ in 0..sends {
        let at = within(&mut rng, start, span);
        let to = fill(&mut rng, &range, country.digits());
        let ip = pick(&mut rng, pool);
        g.attack(&mut rng, at, to, Product::Verify, ip, IN_COUNTRY_VERIFY);
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// People

/// How the app's real users behave on this day.
struct Habits {
    /// Share of people whose app uses Verify rather than Messaging.
    verify_percent: u32,
    /// People who ask for exactly two codes, and for three.
    second_percent: u32,
    third_percent: u32,
    /// Chance that someone who asked once confirms: people who asked again
    /// always confirm their last code (that is why they asked).
    confirm_single: f64,
}

impl Habits {
    fn new(rng: &mut StdRng, held_out: bool) -> Habits {
        let (verify_percent, second_percent, third_percent) =
            if held_out { (40, 18, 6) } else { (25, 12, 3) };
        // Share of people who end up confirming a code.
        let people = rng.gen_range(0.85..0.95);
        let asked_again = f64::from(second_percent + third_percent) / 100.0;
        Habits {
            verify_percent,
            second_percent,
            third_percent,
            confirm_single: (people - asked_again) / (1.0 - asked_again),
        }
    }

    fn product(&self, rng: &mut StdRng) -> Product {
        if rng.gen_range(0..100) < self.verify_percent {
            Product::Verify
        } else {
            Product::Messaging
        }
    }

    fn codes(&self, rng: &mut StdRng) -> usize {
        let roll = rng.gen_range(0..100);
        if roll < self.third_percent {
            3
        } else if roll < self.third_percent + self.second_percent {
            2
        } else {
            1
        }
    }
}

struct Person {
    to: String,
    ip: IpAddr,
    user: Option<String>,
    product: Product,
}

/// A moment of the day (ms after midnight UTC) when a person of `country`
/// is awake: by their local hour, five times busier by day than at night.
fn busy_time(rng: &mut StdRng, country: Country) -> u64 {
    const WEIGHT: [u32; 24] = [
        1, 1, 1, 1, 1, 1, 2, 3, 4, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 4, 3, 2, 1,
    ];
    let utc_offset = country.utc_offset(rng);
    loop {
        let t = rng.gen_range(0..DAY);
        let local = ((t / HOUR) as i64 + utc_offset).rem_euclid(24) as usize;
        if rng.gen_range(0..5) < WEIGHT[local] {
            return t;
        }
    }
}

/// The countries legitimate users come from.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Country {
    Us,
    Ca,
    Gb,
    Ie,
}

impl Country {
    fn region(self) -> &'static str {
        match self {
            Country::Us => "US",
            Country::Ca => "CA",
            Country::Gb => "GB",
            Country::Ie => "IE",
        }
    }

    /// Digits of a whole number, country code included.
    fn digits(self) -> usize {
        match self {
            Country::Us | Country::Ca => 11,
            Country::Gb | Country::Ie => 12,
        }
    }

    /// Hours from UTC of one of its people (winter time).
    fn utc_offset(self, rng: &mut StdRng) -> i64 {
        match self {
            // Eastern and Central hold most people, then Pacific.
            Country::Us => [-5, -5, -5, -5, -6, -6, -6, -7, -8, -8][rng.gen_range(0..10)],
            Country::Ca => [-5, -5, -5, -6, -7, -8][rng.gen_range(0..6)],
            Country::Gb | Country::Ie => 0,
        }
    }

    /// A 7-digit prefix (`prefix:7`) of its mobile numbering: a NANP area
    /// code and exchange, `+44 7xxx`, `+353 8x x`. Not yet checked.
    fn range(self, rng: &mut StdRng) -> String {
        match self {
            Country::Us | Country::Ca => {
                let npa = npa(rng, self);
                format!("+1{npa}{}", rng.gen_range(200..1_000))
            }
            // 76xx is pagers and the Isle of Man; checked after anyway.
            Country::Gb => format!(
                "+447{}{:03}",
                [4, 5, 7, 8, 9][rng.gen_range(0..5)],
                rng.gen_range(0..1_000)
            ),
            Country::Ie => format!(
                "+3538{}{:02}",
                [3, 5, 6, 7, 9][rng.gen_range(0..5)],
                rng.gen_range(0..100)
            ),
        }
    }
}

/// Area codes of large cities.
fn npa(rng: &mut StdRng, country: Country) -> u16 {
    const US: [u16; 30] = [
        201, 206, 212, 213, 214, 305, 310, 312, 404, 415, 469, 480, 503, 512, 602, 617, 646, 702,
        713, 718, 773, 786, 818, 832, 917, 919, 929, 972, 720, 615,
    ];
    const CA: [u16; 10] = [416, 647, 437, 604, 778, 514, 438, 403, 613, 905];
    match country {
        Country::Ca => CA[rng.gen_range(0..CA.len())],
        _ => US[rng.gen_range(0..US.len())],
    }
}

// ---------------------------------------------------------------------------
// The generator's state and helpers

struct Gen<'a> {
    seed: u64,
    held_out: bool,
    day: Millis,
    config: &'a Config,
    classifier: Classifier,
    /// Where the day's legitimate users live, weighted (allowed ones only).
    countries: Vec<(Country, u32)>,
    /// 7-digit ranges already attacked: two attack classes never share one.
    ranges: HashSet<String>,
    next_user: u64,
    records: Vec<Record>,
}

impl<'a> Gen<'a> {
    fn new(plan: &Plan, day: Millis, config: &'a Config) -> Result<Gen<'a>, String> {
        let mut g = Gen {
            seed: plan.seed,
            held_out: plan.held_out,
            day,
            config,
            classifier: Classifier::new(100_000),
            countries: Vec::new(),
            ranges: HashSet::new(),
            next_user: 0,
            records: Vec::new(),
        };
        let mix = if plan.held_out {
            [
                (Country::Us, 55),
                (Country::Ca, 20),
                (Country::Gb, 17),
                (Country::Ie, 8),
            ]
        } else {
            [
                (Country::Us, 80),
                (Country::Ca, 8),
                (Country::Gb, 9),
                (Country::Ie, 3),
            ]
        };
        g.countries = mix.into_iter().filter(|(c, _)| g.allows(*c)).collect();
        if g.countries.is_empty() {
            return Err(
                "the policy allows none of US, CA, GB, IE: the generated day's users live there"
                    .into(),
            );
        }
        g.next_user = g.rng("users").gen_range(100_000..900_000);
        Ok(g)
    }

    /// A random stream of its own for one class: the seed, the kind of day
    /// and the class name.
    fn rng(&self, name: &str) -> StdRng {
        // FNV-1a: stable across Rust versions, unlike the std hasher.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in name.bytes().chain([u8::from(self.held_out)]) {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        StdRng::seed_from_u64(self.seed ^ h)
    }

    fn allowed(&self, region: Option<Region>) -> bool {
        let geo = &self.config.geo;
        region.is_some_and(|r| {
            (geo.allow.is_empty() || geo.allow.contains(&r)) && !geo.deny.contains(&r)
        })
    }

    fn allows(&self, country: Country) -> bool {
        self.allowed(country.region().parse().ok())
    }

    /// The first of `preferred` the policy allows: an attack on an allowed
    /// country is the point. If none is, the first anyway.
    fn attack_country(&self, preferred: &[Country]) -> Country {
        preferred
            .iter()
            .copied()
            .find(|c| self.allows(*c))
            .unwrap_or(preferred[0])
    }

    fn pick_country(&self, rng: &mut StdRng) -> Country {
        let total: u32 = self.countries.iter().map(|(_, w)| w).sum();
        let mut roll = rng.gen_range(0..total);
        for (c, w) in &self.countries {
            if roll < *w {
                return *c;
            }
            roll -= w;
        }
        self.countries[0].0
    }

    /// Whether `number` is one a person in `country` could have: valid,
    /// in that region, mobile-capable, of a type the policy does not block,
    /// and not a fictional NANP 555 number.
    fn fits(&self, number: &str, country: Country) -> bool {
        let c = self.classifier.classify(number);
        let fictional =
            matches!(country, Country::Us | Country::Ca) && number.get(5..8) == Some("555");
        c.valid
            && c.region.is_some_and(|r| r.as_str() == country.region())
            && matches!(c.kind, NumberType::Mobile | NumberType::FixedLineOrMobile)
            && !self.config.numbers.block_types.contains(&c.kind)
            && !fictional
    }

    /// A number made by `make` that [`Gen::fits`] `country`.
    fn usable_number(
        &self,
        rng: &mut StdRng,
        country: Country,
        make: impl Fn(&mut StdRng) -> String,
    ) -> Result<String, String> {
        for _ in 0..10_000 {
            let n = make(rng);
            if self.fits(&n, country) {
                return Ok(n);
            }
        }
        Err(format!(
            "no {} number that the policy allows (number types?)",
            country.region()
        ))
    }

    /// A number of someone living in `country`.
    fn number_of(&self, rng: &mut StdRng, country: Country) -> Result<String, String> {
        self.usable_number(rng, country, |rng| {
            let range = country.range(rng);
            fill(rng, &range, country.digits())
        })
    }

    /// `n` numbers of allowed countries, each in an 8-digit block of its own.
    fn scattered_numbers(&self, rng: &mut StdRng, n: usize) -> Result<Vec<String>, String> {
        let mut blocks = HashSet::new();
        let mut numbers = Vec::with_capacity(n);
        while numbers.len() < n {
            let country = self.pick_country(rng);
            let to = self.number_of(rng, country)?;
            if blocks.insert(to[..9].to_string()) {
                numbers.push(to);
            }
        }
        Ok(numbers)
    }

    /// A 7-digit mobile range of `country` no other attack uses, whose ten
    /// 8-digit blocks all hold numbers that pass the number stage.
    fn attack_range(&mut self, rng: &mut StdRng, country: Country) -> Result<String, String> {
        for _ in 0..10_000 {
            let range = country.range(rng);
            if self.ranges.contains(&range) {
                continue;
            }
            let fits = (0..10).all(|d| {
                let n = fill(rng, &format!("{range}{d}"), country.digits());
                self.fits(&n, country)
            });
            if fits {
                self.ranges.insert(range.clone());
                return Ok(range);
            }
        }
        Err(format!("no {} mobile range to attack", country.region()))
    }

    fn new_user(&mut self) -> String {
        self.next_user += 1;
        format!("user-{}", self.next_user)
    }

    /// One person's codes: the first at `first` (ms into the day), each
    /// resend 45 s to 4 min after the previous one. Someone who asked more
    /// than once confirms the last code; someone who asked once confirms
    /// it with the day's odds. Returns how many sends were made.
    fn person(
        &mut self,
        rng: &mut StdRng,
        p: &Person,
        first: u64,
        codes: usize,
        label: &'static str,
        habits: &Habits,
    ) -> usize {
        let gaps: Vec<u64> = (1..codes)
            .map(|_| rng.gen_range(45 * SECOND..=4 * MINUTE))
            .collect();
        // Late-night askers keep their codes inside the day.
        let mut t = first.min(DAY - 1 - gaps.iter().sum::<u64>());
        let confirms = codes > 1 || rng.gen_bool(habits.confirm_single);
        for k in 0..codes {
            let mut r = send(rng, self.day + t, &p.to, p.product, p.ip, label);
            r.user = p.user.clone();
            if k + 1 == codes && confirms {
                // Most people type the code within a minute: 15 s to 3 min,
                // skewed short.
                let delay = 15 * SECOND + (rng.gen::<f64>().powi(2) * (165 * SECOND) as f64) as u64;
                r.confirmed_at = Some(r.at + delay);
            }
            self.records.push(r);
            if let Some(gap) = gaps.get(k) {
                t += gap;
            }
        }
        codes
    }

    /// One attack send at `at` (ms into the day), without a user id.
    /// Never confirmed.
    fn attack(
        &mut self,
        rng: &mut StdRng,
        at: u64,
        to: String,
        product: Product,
        ip: IpAddr,
        label: &'static str,
    ) -> &mut Record {
        let r = send(rng, self.day + at.min(DAY - 1), &to, product, ip, label);
        self.records.push(r);
        let last = self.records.len() - 1;
        &mut self.records[last]
    }
}

/// A send as the app makes it: a message with a one-time code, or a Verify
/// verification over SMS (Twilio writes the code itself).
fn send(
    rng: &mut StdRng,
    at: Millis,
    to: &str,
    product: Product,
    ip: IpAddr,
    label: &str,
) -> Record {
    let mut r = Record::new(at, to, product);
    r.account = Some(ACCOUNT.into());
    r.client_ip = Some(ip);
    r.label = Some(label.into());
    match product {
        Product::Verify => r.channel = Some("sms".into()),
        Product::Messaging => {
            r.from = Some(FROM.into());
            r.body = Some(format!(
                "Your verification code is {:06}",
                rng.gen_range(0..1_000_000)
            ));
        }
        Product::Voice => r.from = Some(FROM.into()),
    }
    r
}

/// `prefix` followed by random digits up to `digits` digits in all.
fn fill(rng: &mut StdRng, prefix: &str, digits: usize) -> String {
    let mut n = prefix.to_string();
    while n.len() < digits + 1 {
        n.push(char::from(b'0' + rng.gen_range(0..10u8)));
    }
    n
}

/// A moment in `[start, start + span)`, kept inside the day.
fn within(rng: &mut StdRng, start: u64, span: u64) -> u64 {
    (start + rng.gen_range(0..span.max(1))).min(DAY - 1)
}

fn pick(rng: &mut StdRng, pool: &[IpAddr]) -> IpAddr {
    pool[rng.gen_range(0..pool.len())]
}

/// `n` scaled by 0.5 to 2: the held-out day's attack sizes.
fn scaled(rng: &mut StdRng, n: usize) -> usize {
    (n as f64 * rng.gen_range(0.5..=2.0)).round() as usize
}

/// A random address a home, office or phone could have on the Internet.
fn public_ipv4(rng: &mut StdRng) -> Ipv4Addr {
    loop {
        let a = Ipv4Addr::from(rng.gen_range(0x0100_0000u32..0xe000_0000));
        if is_public(a) {
            return a;
        }
    }
}

/// A public address inside the /16 `net`.
fn host_in(rng: &mut StdRng, net: u32) -> Ipv4Addr {
    loop {
        let a = Ipv4Addr::from(net | rng.gen_range(1..0xffff));
        if is_public(a) {
            return a;
        }
    }
}

fn is_public(a: Ipv4Addr) -> bool {
    let [o1, o2, o3, _] = a.octets();
    !(a.is_private()
        || a.is_loopback()
        || a.is_link_local()
        || a.is_documentation()
        || a.is_unspecified()
        || o1 == 0
        || (o1 == 100 && (64..128).contains(&o2)) // carrier-grade NAT inside
        || (o1 == 198 && (18..20).contains(&o2)) // benchmarking
        || (o1 == 192 && o2 == 0 && o3 == 0)) // IETF protocol assignments
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet, HashMap};
    use std::path::Path;

    use super::*;

    /// A UTC midnight: 2023-11-22.
    const MIDNIGHT: Millis = 1_700_611_200_000;

    fn config() -> Config {
        let text = include_str!("../../config.example.toml");
        Config::parse(Path::new("config.example.toml"), text).expect("example policy")
    }

    fn generate(seed: u64, held_out: bool) -> Vec<Record> {
        day(&Plan { seed, held_out }, MIDNIGHT, &config()).expect("a day")
    }

    /// The demo's day, generated once for the tests that only read it.
    fn demo() -> &'static [Record] {
        static DEMO: std::sync::OnceLock<Vec<Record>> = std::sync::OnceLock::new();
        DEMO.get_or_init(|| generate(Plan::default().seed, false))
    }

    fn of<'r>(records: &'r [Record], label: &str) -> Vec<&'r Record> {
        records
            .iter()
            .filter(|r| r.label.as_deref() == Some(label))
            .collect()
    }

    fn prefix(r: &Record, n: usize) -> String {
        r.to[..n + 1].to_string()
    }

    #[test]
    fn deterministic_for_a_seed_and_different_across_seeds() {
        let a = generate(Plan::default().seed, false);
        assert_eq!(a, demo());
        let b = generate(7, false);
        assert_ne!(a, b);
        // Every class changes with the seed, not only the first one.
        for label in LABELS {
            let (x, y) = (of(&a, label), of(&b, label));
            let same = x.iter().zip(&y).filter(|(x, y)| x.to == y.to).count();
            // The demo's pump block is fixed; its numbers are not.
            assert!(same < x.len() / 10 + 2, "{label}: {same} of {}", x.len());
            let ips = |v: &[&Record]| v.iter().map(|r| r.client_ip).collect::<BTreeSet<_>>();
            assert_ne!(ips(&x), ips(&y), "{label}");
        }
        assert_eq!(generate(7, true), generate(7, true));
    }

    #[test]
    fn records_are_complete_sorted_and_inside_the_day() {
        for held_out in [false, true] {
            let records = generate(11, held_out);
            assert!(records.windows(2).all(|w| w[0].at <= w[1].at));
            for r in &records {
                assert!((MIDNIGHT..MIDNIGHT + DAY).contains(&r.at), "{r:?}");
                let label = r.label.as_deref().unwrap();
                assert!(LABELS.contains(&label), "{label}");
                assert!(label.starts_with("legitimate") || label.starts_with("attack"));
                assert!(r.client_ip.is_some());
                assert_eq!(r.account.as_deref(), Some(ACCOUNT));
                assert_eq!(r.line, 0);
                assert!(r.judged());
                assert!(r.to.starts_with('+') && r.to[1..].bytes().all(|b| b.is_ascii_digit()));
                match r.product {
                    Product::Verify => {
                        assert_eq!(r.channel.as_deref(), Some("sms"));
                        assert!(r.body.is_none());
                    }
                    Product::Messaging => {
                        assert_eq!(r.from.as_deref(), Some(FROM));
                        let body = r.body.as_deref().unwrap();
                        let code = body.strip_prefix("Your verification code is ").unwrap();
                        assert!(code.len() == 6 && code.bytes().all(|b| b.is_ascii_digit()));
                    }
                    Product::Voice => panic!("no class calls"),
                }
            }
            for label in LABELS {
                assert!(!of(&records, label).is_empty(), "{label} missing");
            }
        }
    }

    #[test]
    fn demo_counts_and_windows() {
        let records = demo();
        let count = |label| of(records, label).len();
        assert_eq!(count(DAILY_SIGN_INS), 4_000);
        assert!((300..=700).contains(&count(CAMPAIGN_SURGE)));
        assert_eq!(count(BLOCKED_COUNTRY), 13_000);
        assert_eq!(count(BLOCKED_COUNTRY_VERIFY), 1_000);
        assert_eq!(count(MOBILE_BLOCKS), 1_000);
        assert_eq!(count(WIDE_AND_SHALLOW), 300);
        assert_eq!(count(LOW_AND_SLOW), 400);
        assert_eq!(count(ONE_ADDRESS), 200);
        assert_eq!(count(ONE_USER), 200);
        assert_eq!(count(IN_COUNTRY_VERIFY), 500);
        // The pump: one hour from 01:00, to +99899394…, thousands of addresses.
        for label in [BLOCKED_COUNTRY, BLOCKED_COUNTRY_VERIFY] {
            let v = of(records, label);
            assert!(v
                .iter()
                .all(|r| r.to.starts_with("+99899394") && r.to.len() == 13));
            assert!(v
                .iter()
                .all(|r| (MIDNIGHT + HOUR..MIDNIGHT + 2 * HOUR).contains(&r.at)));
            assert!(v.iter().all(|r| r.user.is_none()));
        }
        let ips: BTreeSet<_> = of(records, BLOCKED_COUNTRY)
            .iter()
            .map(|r| r.client_ip)
            .collect();
        assert!(ips.len() > 9_000, "{}", ips.len());
        assert!(of(records, BLOCKED_COUNTRY_VERIFY)
            .iter()
            .all(|r| r.product == Product::Verify));
        assert!(of(records, IN_COUNTRY_VERIFY)
            .iter()
            .all(|r| r.product == Product::Verify));
        // Four UK mobile blocks within the same hour.
        let v = of(records, MOBILE_BLOCKS);
        let blocks: BTreeSet<_> = v.iter().map(|r| prefix(r, 8)).collect();
        assert_eq!(blocks.len(), 4, "{blocks:?}");
        assert!(blocks.iter().all(|b| b.starts_with("+447")));
        assert!(v
            .iter()
            .all(|r| (MIDNIGHT + HOUR..MIDNIGHT + 2 * HOUR).contains(&r.at)));
    }

    #[test]
    fn attackers_never_confirm_and_legitimate_people_mostly_do() {
        for (seed, held_out) in [(Plan::default().seed, false), (3, false), (3, true)] {
            let records = generate(seed, held_out);
            let mut people: HashMap<(String, String), Vec<&Record>> = HashMap::new();
            for r in &records {
                let label = r.label.clone().unwrap();
                if label.starts_with("attack") {
                    assert_eq!(r.confirmed_at, None, "{r:?}");
                } else {
                    people.entry((label, r.to.clone())).or_default().push(r);
                }
            }
            let mut confirmed = 0;
            for codes in people.values() {
                let last = codes.len() - 1;
                for (k, r) in codes.iter().enumerate() {
                    if let Some(c) = r.confirmed_at {
                        assert_eq!(k, last, "only the last code is confirmed");
                        assert!((15 * SECOND..=180 * SECOND).contains(&(c - r.at)));
                    }
                }
                if codes.len() > 1 {
                    // Asked again: the last one came.
                    assert!(codes[last].confirmed_at.is_some());
                    for w in codes.windows(2) {
                        let gap = w[1].at - w[0].at;
                        assert!((45 * SECOND..=4 * MINUTE).contains(&gap), "{gap}");
                        assert_eq!(
                            (w[0].client_ip, w[0].product),
                            (w[1].client_ip, w[1].product)
                        );
                    }
                }
                confirmed += usize::from(codes[last].confirmed_at.is_some());
            }
            let share = confirmed as f64 / people.len() as f64;
            assert!((0.83..=0.97).contains(&share), "{share}");
        }
    }

    #[test]
    fn legitimate_users_have_numbers_the_policy_allows() {
        let config = config();
        let classifier = Classifier::new(10_000);
        let records = demo();
        let mut regions: BTreeMap<String, usize> = BTreeMap::new();
        for r in records
            .iter()
            .filter(|r| r.label.as_deref().unwrap().starts_with("legit"))
        {
            let c = classifier.classify(&r.to);
            assert!(c.valid, "{}", r.to);
            let region = c.region.unwrap();
            assert!(config.geo.allow.contains(&region), "{}", r.to);
            assert!(!config.numbers.block_types.contains(&c.kind), "{}", r.to);
            *regions.entry(region.to_string()).or_default() += 1;
        }
        assert_eq!(regions.keys().collect::<Vec<_>>(), ["CA", "GB", "IE", "US"]);
        let daily = of(records, DAILY_SIGN_INS);
        let us = daily.iter().filter(|r| r.to.starts_with("+1")).count();
        assert!((0.82..=0.93).contains(&(us as f64 / daily.len() as f64)));
        let verify = daily
            .iter()
            .filter(|r| r.product == Product::Verify)
            .count();
        assert!((0.20..=0.30).contains(&(verify as f64 / daily.len() as f64)));
        assert!(daily.iter().all(|r| r.user.is_some()));
        // Busier by day: US afternoon (18:00-22:00 UTC) against US night.
        let hour = |r: &&&Record| (r.at - MIDNIGHT) / HOUR;
        let afternoon = daily.iter().filter(|r| (18..22).contains(&hour(r))).count();
        let night = daily.iter().filter(|r| (7..11).contains(&hour(r))).count();
        assert!(afternoon > 2 * night, "{afternoon} vs {night}");
    }

    #[test]
    fn campaign_is_one_city_over_many_exchanges() {
        let records = demo();
        let v = of(records, CAMPAIGN_SURGE);
        let npas: BTreeSet<_> = v.iter().map(|r| prefix(r, 4)).collect();
        assert_eq!(npas.len(), 1, "{npas:?}");
        let exchanges: BTreeSet<_> = v.iter().map(|r| prefix(r, 7)).collect();
        assert!(exchanges.len() > 150, "{}", exchanges.len());
        let first = v.iter().map(|r| r.at).min().unwrap();
        // Within half an hour, but for a few people's later second codes.
        let early = v.iter().filter(|r| r.at - first <= 30 * MINUTE).count();
        assert!(early * 100 >= v.len() * 95);
        let nets: BTreeSet<_> = v
            .iter()
            .map(|r| match r.client_ip {
                Some(IpAddr::V4(a)) => u32::from(a) >> 16,
                other => panic!("{other:?}"),
            })
            .collect();
        assert!((3..=6).contains(&nets.len()), "{nets:?}");
    }

    #[test]
    fn carrier_nat_shares_few_addresses_among_many_people() {
        let records = demo();
        let mut by_ip: BTreeMap<IpAddr, BTreeSet<&str>> = BTreeMap::new();
        for r in of(records, CARRIER_NAT) {
            by_ip.entry(r.client_ip.unwrap()).or_default().insert(&r.to);
        }
        assert!((3..=5).contains(&by_ip.len()), "{}", by_ip.len());
        for people in by_ip.values() {
            assert!((30..=60).contains(&people.len()), "{}", people.len());
        }
    }

    #[test]
    fn wide_and_shallow_covers_ten_blocks_of_one_range_within_a_minute() {
        let records = demo();
        let v = of(records, WIDE_AND_SHALLOW);
        assert_eq!(v.len(), 300);
        let ranges: BTreeSet<_> = v.iter().map(|r| prefix(r, 7)).collect();
        assert_eq!(ranges.len(), 1, "{ranges:?}");
        let mut blocks: BTreeMap<String, usize> = BTreeMap::new();
        for r in &v {
            *blocks.entry(prefix(r, 8)).or_default() += 1;
        }
        assert_eq!(blocks.len(), 10);
        assert!(blocks.values().all(|n| *n == 30));
        let span = v.last().unwrap().at - v[0].at;
        assert!(span < MINUTE, "{span}");
        let ips: BTreeSet<_> = v.iter().map(|r| r.client_ip).collect();
        assert_eq!(ips.len(), 300);
        // Numbers a geo rule lets through.
        let classifier = Classifier::new(1_000);
        assert!(v.iter().all(|r| classifier.classify(&r.to).valid));
    }

    #[test]
    fn low_and_slow_stays_under_the_usual_limits() {
        for held_out in [false, true] {
            let records = generate(5, held_out);
            let v = of(&records, LOW_AND_SLOW);
            let span = v.last().unwrap().at - v[0].at;
            assert!(span >= 9 * HOUR, "{span}");
            let ranges: BTreeSet<_> = v.iter().map(|r| prefix(r, 7)).collect();
            assert_eq!(ranges.len(), 1);
            let mut blocks: BTreeMap<String, Vec<Millis>> = BTreeMap::new();
            let mut numbers = BTreeSet::new();
            for r in &v {
                blocks.entry(prefix(r, 8)).or_default().push(r.at);
                assert!(numbers.insert(&r.to), "each number once");
            }
            assert!(blocks.len() >= 3);
            for times in blocks.values() {
                assert!(times.len() < 100);
                for (i, t) in times.iter().enumerate() {
                    let in_ten = times[i..]
                        .iter()
                        .take_while(|u| **u < t + 10 * MINUTE)
                        .count();
                    assert!(in_ten <= 5, "{in_ten} in 10 minutes");
                }
            }
        }
    }

    #[test]
    fn one_address_and_one_user_scatter_their_numbers() {
        let records = demo();
        let v = of(records, ONE_ADDRESS);
        let ips: BTreeSet<_> = v.iter().map(|r| r.client_ip).collect();
        assert_eq!(ips.len(), 1);
        let blocks: BTreeSet<_> = v.iter().map(|r| prefix(r, 8)).collect();
        assert_eq!(blocks.len(), v.len());
        assert!(v.last().unwrap().at - v[0].at < HOUR);

        let v = of(records, ONE_USER);
        let users: BTreeSet<_> = v.iter().map(|r| r.user.clone()).collect();
        assert_eq!(users.len(), 1);
        assert!(users.iter().all(Option::is_some));
        let ips: BTreeSet<_> = v.iter().map(|r| r.client_ip).collect();
        assert!(ips.len() > 30, "{}", ips.len());
        let blocks: BTreeSet<_> = v.iter().map(|r| prefix(r, 8)).collect();
        assert_eq!(blocks.len(), v.len());
        assert!(v.last().unwrap().at - v[0].at < 2 * HOUR);
        // The attacker's id looks like everyone else's.
        assert!(users.iter().flatten().all(|u| u.starts_with("user-")));
    }

    #[test]
    fn held_out_uses_other_ranges_sizes_and_times() {
        let ranged = [
            BLOCKED_COUNTRY,
            BLOCKED_COUNTRY_VERIFY,
            MOBILE_BLOCKS,
            WIDE_AND_SHALLOW,
            LOW_AND_SLOW,
            IN_COUNTRY_VERIFY,
        ];
        for seed in [Plan::default().seed, 3] {
            let (demo, held) = (generate(seed, false), generate(seed, true));
            let blocks = |records: &[Record]| -> BTreeSet<String> {
                records
                    .iter()
                    .filter(|r| ranged.contains(&r.label.as_deref().unwrap()))
                    .map(|r| prefix(r, 7))
                    .collect()
            };
            let shared: Vec<_> = blocks(&demo)
                .intersection(&blocks(&held))
                .cloned()
                .collect();
            assert!(shared.is_empty(), "seed {seed}: {shared:?}");
            let pump = of(&held, BLOCKED_COUNTRY);
            assert!(!pump[0].to.starts_with("+998"));
            assert!(pump.iter().all(|r| r.to[..9] == pump[0].to[..9]));
            // Not the UK for the block attacks.
            for label in [MOBILE_BLOCKS, WIDE_AND_SHALLOW, LOW_AND_SLOW] {
                assert!(of(&held, label).iter().all(|r| !r.to.starts_with("+44")));
            }
            let different = LABELS
                .iter()
                .filter(|l| l.starts_with("attack"))
                .filter(|l| of(&demo, l).len() != of(&held, l).len())
                .count();
            assert!(different >= 6, "seed {seed}: {different} sizes differ");
            let first = |records: &[Record], label| of(records, label)[0].at;
            assert_ne!(
                first(&demo, BLOCKED_COUNTRY) / HOUR,
                first(&held, BLOCKED_COUNTRY) / HOUR
            );
            assert_ne!(
                of(&demo, CAMPAIGN_SURGE)[0].to[..5],
                of(&held, CAMPAIGN_SURGE)[0].to[..5]
            );
        }
    }

    #[test]
    fn a_policy_without_these_countries_is_refused_not_looped() {
        let text = include_str!("../../config.example.toml")
            .replace(r#"allow = ["US", "CA", "GB", "IE"]"#, r#"allow = ["FR"]"#);
        let config = Config::parse(Path::new("x.toml"), &text).unwrap();
        assert!(day(&Plan::default(), MIDNIGHT, &config).is_err());
        // Only the UK: every legitimate class still has people, in the UK.
        let text = include_str!("../../config.example.toml")
            .replace(r#"allow = ["US", "CA", "GB", "IE"]"#, r#"allow = ["GB"]"#);
        let config = Config::parse(Path::new("x.toml"), &text).unwrap();
        let records = day(&Plan::default(), MIDNIGHT, &config).unwrap();
        assert!(records
            .iter()
            .filter(|r| r.label.as_deref().unwrap().starts_with("legit"))
            .all(|r| r.to.starts_with("+44")));
    }
}
