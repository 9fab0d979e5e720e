//! Generated traffic for `smsguard demo`: a day of legitimate one-time-code
//! sends (with the people who confirm them) and pumping attacks of several
//! kinds, as replay records labelled by class.
//!
//! Labels start with `legitimate` or `attack`; the demo's verdict counts by
//! that first word. Attackers never confirm a code (but for the poisoned
//! conversions of the two-day plan, a pumper that reads its own SIMs);
//! legitimate people mostly do. Nothing here judges anything: it only
//! describes what an app would have asked Twilio to send.
//!
//! The two-day plan ([`Plan::dispersed`]) is the held-out day followed by a
//! day of returning users and attacks of other shapes, for measuring a
//! policy on traffic it was not tuned on.
//!
//! Each class is one small function with its own random stream (the seed,
//! the day kind and the class label), so a change to one class does not
//! reshuffle the others.

use std::collections::{BTreeSet, HashSet};
use std::net::{IpAddr, Ipv4Addr};

use rand::rngs::StdRng;
use rand::seq::{index, SliceRandom};
use rand::{Rng, SeedableRng};

use crate::base::clock::Millis;
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
pub const RETURNING_USERS: &str = "legitimate: returning users";
pub const DISPERSED_VERIFY: &str = "attack: dispersed Verify";
pub const PREFIX_SPRAYER: &str = "attack: prefix sprayer";
pub const POISONED_CONVERSIONS: &str = "attack: poisoned conversions";
pub const NOTIFICATION_BLAST: &str = "legitimate: notification blast";
pub const REMINDERS: &str = "legitimate: reminders";

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

/// Every label the two-day plan uses, legitimate classes first: the
/// held-out day's, then the second day's new ones.
pub const DISPERSED_LABELS: [&str; 17] = [
    DAILY_SIGN_INS,
    CAMPAIGN_SURGE,
    CARRIER_NAT,
    RETURNING_USERS,
    NOTIFICATION_BLAST,
    REMINDERS,
    BLOCKED_COUNTRY,
    BLOCKED_COUNTRY_VERIFY,
    MOBILE_BLOCKS,
    WIDE_AND_SHALLOW,
    LOW_AND_SLOW,
    ONE_ADDRESS,
    ONE_USER,
    IN_COUNTRY_VERIFY,
    DISPERSED_VERIFY,
    PREFIX_SPRAYER,
    POISONED_CONVERSIONS,
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
    /// Two days: the held-out day (whatever `held_out` says), then a day of
    /// returning users, new sign-ins and attacks of other shapes (dispersed
    /// Verify, prefix sprayer, poisoned conversions).
    pub dispersed: bool,
}

impl Default for Plan {
    fn default() -> Self {
        Plan {
            seed: 20_231_122,
            held_out: false,
            dispersed: false,
        }
    }
}

/// The day's sends starting at `day` (a UTC midnight), sorted by time; two
/// days of them for the dispersed plan. `config` tells which countries and
/// number types the policy allows, so legitimate users only have numbers a
/// real user of this app would have.
pub fn day(plan: &Plan, day: Millis, config: &Config) -> Result<Vec<Record>, String> {
    if plan.dispersed {
        return two_days(plan.seed, day, config);
    }
    let mut g = Gen::new(plan, day, config)?;
    one_day(&mut g)?;
    // Stable: records of one moment keep the order they were made in.
    g.records.sort_by_key(|r| r.at);
    Ok(g.records)
}

/// The classes of one day, demo or held-out.
fn one_day(g: &mut Gen) -> Result<(), String> {
    let habits = Habits::new(&mut g.rng("habits"), g.held_out);

    let sends = if g.held_out { 5_000 } else { 4_000 };
    daily_sign_ins(g, &habits, sends)?;
    campaign_surge(g, &habits)?;
    carrier_nat(g, &habits)?;

    let pool = attack_pool(g);
    let pump = pump(g)?;
    blocked_country(g, &pool, &pump);
    blocked_country_verify(g, &pool, &pump);
    mobile_blocks(g, &pool)?;
    wide_and_shallow(g, &pool)?;
    low_and_slow(g, &pool)?;
    one_address(g)?;
    one_user(g, &pool)?;
    in_country_verify(g, &pool)?;
    Ok(())
}

/// The dispersed plan: the held-out day of `seed` from `start`, then a
/// second day from `start` + 24 h. On the second day the people who
/// confirmed a code come back (a third to a half of the day's legitimate
/// sends), new people sign in, another campaign and another carrier's NAT
/// show up; the attackers spread themselves thin (one number per address
/// and per user), spray many prefixes a few numbers each, or confirm part
/// of their own sends to look like people.
fn two_days(seed: u64, start: Millis, config: &Config) -> Result<Vec<Record>, String> {
    let held_out = Plan {
        seed,
        held_out: true,
        dispersed: false,
    };
    let mut first = Gen::new(&held_out, start, config)?;
    one_day(&mut first)?;
    first.records.sort_by_key(|r| r.at);

    let mut g = Gen::new(&held_out, start + DAY, config)?;
    g.stream = "day 2";
    // The same app: user ids go on from the first day's, attacks keep off
    // the first day's ranges, the campaign is in another city.
    g.next_user = first.next_user;
    g.ranges = first.ranges.clone();
    g.campaign_npa = first.campaign_npa;
    let habits = Habits::new(&mut g.rng("habits"), true);

    campaign_surge(&mut g, &habits)?;
    carrier_nat(&mut g, &habits)?;
    let others = g.records.len();
    // Sign-ins and returning people together, and the returning people's
    // share of the day's legitimate sends.
    let mut rng = g.rng("mix");
    let volume: usize = rng.gen_range(4_000..=5_000);
    let share: f64 = rng.gen_range(0.35..=0.55);
    let returning = ((volume + others) as f64 * share).round() as usize;
    let made = returning_users(&mut g, &habits, &first.records, returning.min(volume));
    daily_sign_ins(&mut g, &habits, volume - made)?;
    notification_blast(&mut g, &first.records)?;
    reminders(&mut g)?;

    let pool = attack_pool(&g);
    dispersed_verify(&mut g, &pool)?;
    prefix_sprayer(&mut g, &pool)?;
    poisoned_conversions(&mut g, &pool)?;

    g.records.sort_by_key(|r| r.at);
    let mut records = first.records;
    records.append(&mut g.records);
    Ok(records)
}

// ---------------------------------------------------------------------------
// Legitimate traffic

/// People signing in over the day, five times busier in their daytime than
/// at night; a quarter through Verify; some ask for a second or third code
/// when the first is slow to arrive. Each has their own address, except a
/// few who share one with someone else (a household, an office).
fn daily_sign_ins(g: &mut Gen, habits: &Habits, sends: usize) -> Result<(), String> {
    let mut rng = g.rng(DAILY_SIGN_INS);
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
    // The second day's campaign is in another city, if there is one.
    let elsewhere: Vec<_> = cities
        .iter()
        .copied()
        .filter(|c| Some(c.1) != g.campaign_npa)
        .collect();
    let cities = if elsewhere.is_empty() {
        cities
    } else {
        elsewhere
    };
    // A policy that allows neither the US nor Canada has no such city.
    let Some(&&(_city, npa, country)) = cities.choose(&mut rng) else {
        return Ok(());
    };
    g.campaign_npa = Some(npa);
    let (people, start, span) = if g.held_out {
        (
            rng.gen_range(600..=1_000),
            if g.second_day() {
                // A daytime spot: North American late morning to evening.
                rng.gen_range(15..=22) * HOUR + rng.gen_range(0..HOUR)
            } else {
                // Prime time in the evening, overlapping the night's attacks.
                rng.gen_range(0..3) * HOUR + rng.gen_range(0..HOUR)
            },
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

/// People who confirmed a code on the first day come back on the second
/// (to sign in again, for a second factor): the same number and user id,
/// the same product but for a few, the same address for most and another
/// one for the rest (at work, on mobile data), at their country's busy
/// hours. Only people the app knows by a user id come back as such: the
/// campaign's new accounts had none yet. Returns the sends made: `sends`,
/// unless too few people confirmed the first day.
fn returning_users(g: &mut Gen, habits: &Habits, first_day: &[Record], sends: usize) -> usize {
    let mut rng = g.rng(RETURNING_USERS);
    let mut seen = HashSet::new();
    let mut people: Vec<(&Record, Country)> = Vec::new();
    for r in first_day {
        let legitimate = r
            .label
            .as_deref()
            .is_some_and(|l| l.starts_with("legitimate"));
        if !legitimate || r.confirmed_at.is_none() || r.user.is_none() {
            continue;
        }
        let region = g.classifier.classify(&r.to).region;
        let country = region.and_then(|c| Country::of_region(c.as_str()));
        if let Some(country) = country {
            if seen.insert(r.to.as_str()) {
                people.push((r, country));
            }
        }
    }
    people.shuffle(&mut rng);
    let same_address = rng.gen_range(0.65..=0.85);
    let mut made = 0;
    for (r, country) in people {
        if made >= sends {
            break;
        }
        let product = match r.product {
            Product::Verify if rng.gen_bool(0.1) => Product::Messaging,
            Product::Messaging if rng.gen_bool(0.1) => Product::Verify,
            p => p,
        };
        let ip = match r.client_ip {
            Some(ip) if rng.gen_bool(same_address) => ip,
            _ => IpAddr::V4(public_ipv4(&mut rng)),
        };
        let person = Person {
            to: r.to.clone(),
            ip,
            user: r.user.clone(),
            product,
        };
        let at = busy_time(&mut rng, country);
        let codes = habits.codes(&mut rng).min(sends - made);
        made += g.person(&mut rng, &person, at, codes, RETURNING_USERS, habits);
    }
    made
}

/// The app texts one promotion to its customers in one go: a thousand or
/// more numbers within minutes, a quarter of them people seen the day
/// before, a third around the shop's own city, the rest over the app's
/// countries. Sent by the app itself (no end user's address, no user id),
/// the same text to every number, and nobody confirms anything.
fn notification_blast(g: &mut Gen, first_day: &[Record]) -> Result<(), String> {
    let mut rng = g.rng(NOTIFICATION_BLAST);
    let known: Vec<&str> = first_day
        .iter()
        .filter(|r| {
            r.label
                .as_deref()
                .is_some_and(|l| l.starts_with("legitimate"))
        })
        .map(|r| r.to.as_str())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let body = *[
        "Winter sale: 20% off everything until Sunday. Reply STOP to opt out",
        "New this week: free delivery on every order over $30. Reply STOP to opt out",
        "Our spring collection is here. Show this text in store for a gift",
    ]
    .choose(&mut rng)
    .expect("a body");
    let customers: usize = rng.gen_range(1_200..=2_500);
    // The shop's city: a North American area code when the policy allows
    // one, else its usual ranges of a country it allows.
    let home = [
        (Country::Us, 303u16),
        (Country::Us, 512),
        (Country::Ca, 604),
    ]
    .into_iter()
    .filter(|(c, _)| g.allows(*c))
    .collect::<Vec<_>>()
    .choose(&mut rng)
    .copied();
    let start = rng.gen_range(15..=20) * HOUR + rng.gen_range(0..HOUR);
    let per_second: f64 = rng.gen_range(1.0..=5.0);
    for i in 0..customers {
        let to = match (rng.gen::<f64>(), home) {
            (x, _) if x < 0.25 && !known.is_empty() => {
                known[rng.gen_range(0..known.len())].to_string()
            }
            (x, Some((country, npa))) if x < 0.6 => g.usable_number(&mut rng, country, |rng| {
                format!(
                    "+1{npa}{}{:04}",
                    rng.gen_range(200..1_000),
                    rng.gen_range(0..10_000)
                )
            })?,
            _ => {
                let country = g.pick_country(&mut rng);
                g.number_of(&mut rng, country)?
            }
        };
        let at = start + (i as f64 * 1_000.0 / per_second) as u64;
        g.app_message(at, to, body, NOTIFICATION_BLAST);
    }
    Ok(())
}

/// Appointment reminders over the working day: a few hundred, the same
/// text to each, sent by the app's scheduler (no end user, no user id).
fn reminders(g: &mut Gen) -> Result<(), String> {
    let mut rng = g.rng(REMINDERS);
    let body = "Reminder: you have an appointment tomorrow. Reply C to confirm or R to reschedule";
    for _ in 0..rng.gen_range(150..=400) {
        let country = g.pick_country(&mut rng);
        let to = g.number_of(&mut rng, country)?;
        let at = rng.gen_range(13 * HOUR..23 * HOUR);
        g.app_message(at, to, body, REMINDERS);
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

/// Verify abused from everywhere at once: inside one allowed country, in
/// its evening, hundreds of verifications over a few hours, each to another
/// number anywhere in the country's mobile numbering, each from another
/// proxy address and under a fresh account of its own (the bot signs up,
/// then asks for the code). No number, address or user comes twice, and
/// hardly a prefix: only the missing confirmations tie them together.
fn dispersed_verify(g: &mut Gen, pool: &[IpAddr]) -> Result<(), String> {
    let mut rng = g.rng(DISPERSED_VERIFY);
    let country = g.any_allowed_country(&mut rng);
    let sends = rng.gen_range(600..=1_000).min(pool.len());
    let span = rng.gen_range(120..=240) * MINUTE;
    let start = evening(&mut rng, country, span);
    let mut numbers = HashSet::new();
    for k in index::sample(&mut rng, pool.len(), sends) {
        let to = loop {
            let to = g.usable_number(&mut rng, country, |rng| country.any_number(rng))?;
            if numbers.insert(to.clone()) {
                break to;
            }
        };
        let at = within(&mut rng, start, span);
        let user = g.new_user();
        g.attack(&mut rng, at, to, Product::Verify, pool[k], DISPERSED_VERIFY)
            .user = Some(user);
    }
    Ok(())
}

/// A sprayer that hides among the prefixes real users live in: 120 to 180
/// prefixes of one allowed country (a number but its last four digits: a
/// NANP area code and exchange, `+44 7xxx xx`, `+353 8x xxx`), 8 to 12
/// numbers in each, at an even pace over 4 to 8 hours, from rotating
/// proxy addresses.
fn prefix_sprayer(g: &mut Gen, pool: &[IpAddr]) -> Result<(), String> {
    let mut rng = g.rng(PREFIX_SPRAYER);
    let country = g.any_allowed_country(&mut rng);
    let prefixes = rng.gen_range(120..=180);
    let span = rng.gen_range(4 * HOUR..=8 * HOUR);
    let start = rng.gen_range(0..=DAY - span);
    let mut chosen: Vec<String> = Vec::new();
    let mut numbers: Vec<String> = Vec::new();
    for _ in 0..100_000 {
        if chosen.len() == prefixes {
            break;
        }
        let range = country.range(&mut rng);
        let prefix = fill(&mut rng, &range, country.digits() - 4);
        // Not another attack's range; a prefix whose numbers people have.
        if g.ranges.contains(&range) || chosen.contains(&prefix) {
            continue;
        }
        let first = fill(&mut rng, &prefix, country.digits());
        if !g.fits(&first, country) {
            continue;
        }
        let want = rng.gen_range(8..=12);
        let mut mine = vec![first];
        for _ in 0..1_000 {
            if mine.len() == want {
                break;
            }
            let to = fill(&mut rng, &prefix, country.digits());
            if !mine.contains(&to) && g.fits(&to, country) {
                mine.push(to);
            }
        }
        chosen.push(prefix);
        numbers.append(&mut mine);
    }
    if chosen.len() < prefixes {
        return Err(format!("too few {} prefixes to spray", country.region()));
    }
    for prefix in &chosen {
        g.ranges.insert(prefix[..8].to_string());
    }
    numbers.shuffle(&mut rng);
    let slot = span / numbers.len() as u64;
    for (k, to) in numbers.into_iter().enumerate() {
        let at = start + k as u64 * slot + rng.gen_range(0..slot);
        let ip = pick(&mut rng, pool);
        g.attack(&mut rng, at, to, Product::Messaging, ip, PREFIX_SPRAYER);
    }
    Ok(())
}

/// A pumper who owns its numbers (a SIM bank on one 6-digit mobile range,
/// the UK's if the policy allows it) and knows that conversions count:
/// 600 to 1,500 messages over 1 to 3 hours from rotating proxy addresses,
/// a fifth to 30 % of them confirmed 1 to 4 seconds after the send by a bot
/// that reads the code off its own SIM. The codes did arrive: the
/// confirmations are real, only too fast and too few.
fn poisoned_conversions(g: &mut Gen, pool: &[IpAddr]) -> Result<(), String> {
    let mut rng = g.rng(POISONED_CONVERSIONS);
    let country = g.attack_country(&[Country::Gb, Country::Ie, Country::Us, Country::Ca]);
    let sends = rng.gen_range(600..=1_500);
    let span = rng.gen_range(60..=180) * MINUTE;
    let start = rng.gen_range(0..=DAY - span);
    let share: f64 = rng.gen_range(0.20..=0.30);
    let mut range = None;
    for _ in 0..10_000 {
        // `+44 7xxx`, `+353 8x x`, a NANP area code and the exchange's
        // first two digits: a million numbers, or a hundred thousand.
        let candidate = country.range(&mut rng)[..7].to_string();
        if g.ranges.iter().any(|r| r.starts_with(&candidate)) {
            continue;
        }
        let clean = (0..20).all(|_| {
            let n = fill(&mut rng, &candidate, country.digits());
            g.fits(&n, country)
        });
        if clean {
            range = Some(candidate);
            break;
        }
    }
    let Some(range) = range else {
        return Err(format!("no {} mobile range to own", country.region()));
    };
    let mut confirmed = vec![false; sends];
    let count = (sends as f64 * share).round() as usize;
    for k in index::sample(&mut rng, sends, count) {
        confirmed[k] = true;
    }
    for confirms in confirmed {
        let at = within(&mut rng, start, span);
        let to = g.usable_number(&mut rng, country, |rng| fill(rng, &range, country.digits()))?;
        let ip = pick(&mut rng, pool);
        let delay = rng.gen_range(SECOND..=4 * SECOND);
        let r = g.attack(
            &mut rng,
            at,
            to,
            Product::Messaging,
            ip,
            POISONED_CONVERSIONS,
        );
        if confirms {
            r.confirmed_at = Some(r.at + delay);
        }
    }
    Ok(())
}

/// A start (ms into the day, UTC) in the evening of one of `country`'s
/// time zones, 17:00 to 22:00 local, such that `span` after it is still
/// inside the day.
fn evening(rng: &mut StdRng, country: Country, span: u64) -> u64 {
    let offset = country.utc_offset(rng) * HOUR as i64;
    loop {
        let local = rng.gen_range(17 * HOUR..22 * HOUR) as i64;
        let utc = (local - offset).rem_euclid(DAY as i64) as u64;
        if utc + span <= DAY {
            return utc;
        }
    }
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
    const ALL: [Country; 4] = [Country::Us, Country::Ca, Country::Gb, Country::Ie];

    fn of_region(region: &str) -> Option<Country> {
        Country::ALL.into_iter().find(|c| c.region() == region)
    }

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

impl Country {
    /// A number anywhere in its mobile numbering, not only where the big
    /// cities are: any NANP area code and exchange, `+44 7…`, `+353 8…`.
    /// Not yet checked (most are not valid, or not of this country).
    fn any_number(self, rng: &mut StdRng) -> String {
        let start = match self {
            Country::Us | Country::Ca => format!(
                "+1{}{}",
                rng.gen_range(200..1_000),
                rng.gen_range(200..1_000)
            ),
            Country::Gb => "+447".to_string(),
            Country::Ie => "+3538".to_string(),
        };
        fill(rng, &start, self.digits())
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
    /// The area code of the campaign surge, once it has one.
    campaign_npa: Option<u16>,
    /// Added to every class's stream name: empty on a one-day plan and on
    /// the first day of the two-day plan (that day is the held-out day).
    stream: &'static str,
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
            campaign_npa: None,
            stream: "",
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
    /// and the class name (and which day of the two-day plan).
    fn rng(&self, name: &str) -> StdRng {
        use crate::twilio::responses::{fnv1a, FNV_OFFSET};
        let h = fnv1a(
            FNV_OFFSET,
            name.bytes()
                .chain([u8::from(self.held_out)])
                .chain(self.stream.bytes()),
        );
        StdRng::seed_from_u64(self.seed ^ h)
    }

    /// Whether this is the second day of the two-day plan.
    fn second_day(&self) -> bool {
        !self.stream.is_empty()
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

    /// One of the countries the policy allows, any of them alike.
    fn any_allowed_country(&self, rng: &mut StdRng) -> Country {
        let allowed: Vec<Country> = Country::ALL
            .into_iter()
            .filter(|c| self.allows(*c))
            .collect();
        // Gen::new refuses a policy that allows none of them.
        allowed.choose(rng).copied().unwrap_or(Country::Us)
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

    /// A message the app sends on its own at `at` (ms into the day): no
    /// end user's address, no user id, never confirmed.
    fn app_message(&mut self, at: u64, to: String, body: &str, label: &'static str) {
        let mut r = Record::new(self.day + at.min(DAY - 1), &to, Product::Messaging);
        r.account = Some(ACCOUNT.into());
        r.from = Some(FROM.into());
        r.body = Some(body.into());
        r.label = Some(label.into());
        self.records.push(r);
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
        let plan = Plan {
            seed,
            held_out,
            dispersed: false,
        };
        day(&plan, MIDNIGHT, &config()).expect("a day")
    }

    fn generate_two_days(seed: u64) -> Vec<Record> {
        let plan = Plan {
            seed,
            held_out: false,
            dispersed: true,
        };
        day(&plan, MIDNIGHT, &config()).expect("two days")
    }

    /// The two-day plan of seeds 1 to 4, generated once each.
    fn dispersed_plan(seed: u64) -> &'static [Record] {
        static DAYS: [std::sync::OnceLock<Vec<Record>>; 4] =
            [const { std::sync::OnceLock::new() }; 4];
        DAYS[seed as usize - 1].get_or_init(|| generate_two_days(seed))
    }

    fn second_day(records: &[Record]) -> &[Record] {
        let first = records.partition_point(|r| r.at < MIDNIGHT + DAY);
        &records[first..]
    }

    fn region(classifier: &Classifier, r: &Record) -> String {
        classifier.classify(&r.to).region.unwrap().to_string()
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
        let plans = [
            (Plan::default().seed, false, false),
            (3, false, false),
            (3, true, false),
            (2, true, true),
        ];
        for (seed, held_out, dispersed) in plans {
            let plan = Plan {
                seed,
                held_out,
                dispersed,
            };
            let records = day(&plan, MIDNIGHT, &config()).unwrap();
            // A person: a label, a number and a day.
            let mut people: HashMap<(String, String, u64), Vec<&Record>> = HashMap::new();
            for r in &records {
                let label = r.label.clone().unwrap();
                // The pumper that reads its own SIMs is the one exception.
                let app = [NOTIFICATION_BLAST, REMINDERS].contains(&label.as_str());
                if (label.starts_with("attack") && label != POISONED_CONVERSIONS) || app {
                    assert_eq!(r.confirmed_at, None, "{r:?}");
                } else if label.starts_with("legitimate") {
                    let day = (r.at - MIDNIGHT) / DAY;
                    people
                        .entry((label, r.to.clone(), day))
                        .or_default()
                        .push(r);
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

    // -----------------------------------------------------------------------
    // The two-day plan

    #[test]
    fn two_days_are_deterministic_for_a_seed_and_different_across_seeds() {
        let a = dispersed_plan(1);
        assert_eq!(a, generate_two_days(1));
        let b = dispersed_plan(2);
        assert_ne!(a, b);
        // Every class of the second day changes with the seed.
        let (a, b) = (second_day(a), second_day(b));
        for label in [
            DAILY_SIGN_INS,
            CAMPAIGN_SURGE,
            CARRIER_NAT,
            RETURNING_USERS,
            DISPERSED_VERIFY,
            PREFIX_SPRAYER,
            POISONED_CONVERSIONS,
        ] {
            let (x, y) = (of(a, label), of(b, label));
            assert!(!x.is_empty() && !y.is_empty(), "{label}");
            let same = x.iter().zip(&y).filter(|(x, y)| x.to == y.to).count();
            assert!(same < x.len() / 10 + 2, "{label}: {same} of {}", x.len());
            let ips = |v: &[&Record]| v.iter().map(|r| r.client_ip).collect::<BTreeSet<_>>();
            assert_ne!(ips(&x), ips(&y), "{label}");
        }
        // The dispersed plan is the same whether --held-out is given or not.
        let plan = Plan {
            seed: 1,
            held_out: true,
            dispersed: true,
        };
        assert_eq!(day(&plan, MIDNIGHT, &config()).unwrap(), dispersed_plan(1));
    }

    #[test]
    fn the_first_of_two_days_is_the_held_out_day() {
        for seed in [1, 3] {
            let records = dispersed_plan(seed);
            let second = second_day(records);
            let first = &records[..records.len() - second.len()];
            assert_eq!(first, generate(seed, true));
            assert!(records.windows(2).all(|w| w[0].at <= w[1].at));
            assert!(second
                .iter()
                .all(|r| (MIDNIGHT + DAY..MIDNIGHT + 2 * DAY).contains(&r.at)));
            for r in records {
                let label = r.label.as_deref().unwrap();
                assert!(DISPERSED_LABELS.contains(&label), "{label}");
                assert!(label.starts_with("legitimate") || label.starts_with("attack"));
                // The app's own messages carry no end user's address.
                let app = [NOTIFICATION_BLAST, REMINDERS].contains(&label);
                assert!(r.client_ip.is_some() != app && r.judged(), "{label}");
            }
            for label in DISPERSED_LABELS {
                assert!(!of(records, label).is_empty(), "{label} missing");
            }
            // The second day: its own legitimate classes and the new attacks.
            let labels: BTreeSet<_> = second.iter().map(|r| r.label.as_deref().unwrap()).collect();
            let expected: BTreeSet<_> = [
                DAILY_SIGN_INS,
                CAMPAIGN_SURGE,
                CARRIER_NAT,
                RETURNING_USERS,
                NOTIFICATION_BLAST,
                REMINDERS,
                DISPERSED_VERIFY,
                PREFIX_SPRAYER,
                POISONED_CONVERSIONS,
            ]
            .into();
            assert_eq!(labels, expected);
            // Fewer new people; another city for the campaign, at another time.
            let sign_ins = of(second, DAILY_SIGN_INS).len();
            assert!(sign_ins < of(first, DAILY_SIGN_INS).len() * 7 / 10);
            let city = |v: &[Record]| of(v, CAMPAIGN_SURGE)[0].to[..5].to_string();
            assert_ne!(city(first), city(second));
            let hour = |v: &[Record]| (of(v, CAMPAIGN_SURGE)[0].at - MIDNIGHT) % DAY / HOUR;
            assert_ne!(hour(first), hour(second));
            // New people have new user ids: the first day's are not reused.
            let users = |v: &[Record], label| -> BTreeSet<String> {
                of(v, label).iter().filter_map(|r| r.user.clone()).collect()
            };
            let old: BTreeSet<String> = first.iter().filter_map(|r| r.user.clone()).collect();
            for label in [DAILY_SIGN_INS, CARRIER_NAT, DISPERSED_VERIFY] {
                assert!(users(second, label).is_disjoint(&old), "{label}");
            }
        }
    }

    #[test]
    fn returning_users_confirmed_on_the_first_day() {
        for seed in [1, 2, 3, 4] {
            let records = dispersed_plan(seed);
            let second = second_day(records);
            let first = &records[..records.len() - second.len()];
            let mut confirmed: BTreeMap<&str, &Record> = BTreeMap::new();
            for r in first {
                if r.label.as_deref().unwrap().starts_with("legitimate") && r.confirmed_at.is_some()
                {
                    confirmed.insert(&r.to, r);
                }
            }
            let back = of(second, RETURNING_USERS);
            let (mut same_ip, mut same_product) = (0, 0);
            let mut numbers = BTreeSet::new();
            for r in &back {
                let before = confirmed.get(r.to.as_str()).expect("confirmed on day 1");
                assert!(r.user.is_some());
                assert_eq!(r.user, before.user, "{}", r.to);
                same_ip += usize::from(r.client_ip == before.client_ip);
                same_product += usize::from(r.product == before.product);
                numbers.insert(&r.to);
            }
            let n = back.len();
            assert!(same_ip * 100 >= n * 55 && same_ip < n, "{same_ip} of {n}");
            assert!(same_product * 100 >= n * 85 && same_product < n);
            // A third to a half or so of the day's legitimate sends of
            // codes (the app's own messages aside).
            let legitimate = second
                .iter()
                .filter(|r| {
                    let label = r.label.as_deref().unwrap();
                    label.starts_with("legitimate")
                        && ![NOTIFICATION_BLAST, REMINDERS].contains(&label)
                })
                .count();
            let share = n as f64 / legitimate as f64;
            assert!((0.30..=0.60).contains(&share), "seed {seed}: {share}");
            assert!(numbers.len() > 1_000, "{}", numbers.len());
            // At the busy hours: US afternoon against US night, as the
            // first day's people.
            let hour = |r: &&Record| (r.at - MIDNIGHT - DAY) / HOUR;
            let afternoon = back.iter().filter(|r| (18..22).contains(&hour(r))).count();
            let night = back.iter().filter(|r| (7..11).contains(&hour(r))).count();
            assert!(afternoon > 2 * night, "{afternoon} vs {night}");
        }
    }

    #[test]
    fn dispersed_verify_never_repeats_a_number_address_or_user() {
        let config = config();
        let classifier = Classifier::new(10_000);
        let mut countries = BTreeSet::new();
        for seed in [1, 2, 3, 4] {
            let records = dispersed_plan(seed);
            let v = of(records, DISPERSED_VERIFY);
            assert!((600..=1_000).contains(&v.len()), "{}", v.len());
            assert!(v.iter().all(|r| r.product == Product::Verify));
            assert!(v.iter().all(|r| r.confirmed_at.is_none()));
            let regions: BTreeSet<_> = v.iter().map(|r| region(&classifier, r)).collect();
            assert_eq!(regions.len(), 1, "{regions:?}");
            let country = regions.into_iter().next().unwrap();
            assert!(config.geo.allow.contains(&country.parse().unwrap()));
            for r in &v {
                let c = classifier.classify(&r.to);
                assert!(
                    c.valid && matches!(c.kind, NumberType::Mobile | NumberType::FixedLineOrMobile)
                );
            }
            let distinct = |f: &dyn Fn(&Record) -> String| {
                v.iter().map(|r| f(r)).collect::<BTreeSet<_>>().len()
            };
            assert_eq!(distinct(&|r| r.to.clone()), v.len());
            assert_eq!(distinct(&|r| format!("{:?}", r.client_ip)), v.len());
            assert_eq!(distinct(&|r| r.user.clone().unwrap()), v.len());
            // Over the whole numbering, not a range.
            assert!(
                distinct(&|r| prefix(r, 7)) > 300,
                "{}",
                distinct(&|r| prefix(r, 7))
            );
            if country == "US" {
                let npas = distinct(&|r| prefix(r, 4));
                assert!(npas > 100, "{npas} area codes");
            }
            let span = v.last().unwrap().at - v[0].at;
            assert!((110 * MINUTE..=4 * HOUR).contains(&span), "{span}");
            countries.insert(country);
        }
        assert!(countries.len() >= 2, "{countries:?}");
    }

    #[test]
    fn prefix_sprayer_hits_many_prefixes_a_few_numbers_each_at_an_even_pace() {
        let classifier = Classifier::new(10_000);
        for seed in [1, 2, 3, 4] {
            let records = dispersed_plan(seed);
            let v = of(records, PREFIX_SPRAYER);
            let regions: BTreeSet<_> = v.iter().map(|r| region(&classifier, r)).collect();
            assert_eq!(regions.len(), 1, "{regions:?}");
            // A number but its last four digits: prefix:7 in NANP, else 8.
            let len = v[0].to.len() - 1 - 4;
            assert_eq!(len, if v[0].to.starts_with("+1") { 7 } else { 8 });
            let mut prefixes: BTreeMap<String, usize> = BTreeMap::new();
            for r in &v {
                *prefixes.entry(prefix(r, len)).or_default() += 1;
                assert_eq!(r.product, Product::Messaging);
                assert!(r.user.is_none() && r.confirmed_at.is_none());
                assert!(classifier.classify(&r.to).valid, "{}", r.to);
            }
            assert!((120..=180).contains(&prefixes.len()), "{}", prefixes.len());
            assert!(
                prefixes.values().all(|n| (8..=12).contains(n)),
                "{prefixes:?}"
            );
            let numbers: BTreeSet<_> = v.iter().map(|r| &r.to).collect();
            assert_eq!(numbers.len(), v.len());
            let span = v.last().unwrap().at - v[0].at;
            assert!(
                (4 * HOUR - 10 * MINUTE..=8 * HOUR).contains(&span),
                "{span}"
            );
            // Even: no gap longer than two slots.
            let slot = span / v.len() as u64;
            assert!(v.windows(2).all(|w| w[1].at - w[0].at <= 2 * slot + SECOND));
            let ips: BTreeSet<_> = v.iter().map(|r| r.client_ip).collect();
            assert!(ips.len() * 10 >= v.len() * 9, "{}", ips.len());
        }
    }

    #[test]
    fn poisoned_conversions_confirm_a_quarter_within_seconds() {
        for seed in [1, 2, 3, 4] {
            let records = dispersed_plan(seed);
            let v = of(records, POISONED_CONVERSIONS);
            assert!((600..=1_500).contains(&v.len()), "{}", v.len());
            let ranges: BTreeSet<_> = v.iter().map(|r| prefix(r, 6)).collect();
            assert_eq!(ranges.len(), 1, "{ranges:?}");
            // The UK, allowed by the example policy.
            assert!(v[0].to.starts_with("+447"), "{}", v[0].to);
            assert!(v
                .iter()
                .all(|r| r.product == Product::Messaging && r.user.is_none()));
            let confirmed: Vec<_> = v.iter().filter(|r| r.confirmed_at.is_some()).collect();
            let share = confirmed.len() as f64 / v.len() as f64;
            assert!((0.20..=0.30).contains(&share), "{share}");
            for r in confirmed {
                let delay = r.confirmed_at.unwrap() - r.at;
                assert!((SECOND..=4 * SECOND).contains(&delay), "{delay}");
            }
            let span = v.last().unwrap().at - v[0].at;
            assert!((50 * MINUTE..=3 * HOUR).contains(&span), "{span}");
            let ips: BTreeSet<_> = v.iter().map(|r| r.client_ip).collect();
            assert!(ips.len() * 10 >= v.len() * 9, "{}", ips.len());
        }
        // Without the UK, another allowed country's range.
        let text = include_str!("../../config.example.toml").replace(
            r#"allow = ["US", "CA", "GB", "IE"]"#,
            r#"allow = ["US", "CA"]"#,
        );
        let config = Config::parse(Path::new("x.toml"), &text).unwrap();
        let plan = Plan {
            seed: 5,
            held_out: true,
            dispersed: true,
        };
        let records = day(&plan, MIDNIGHT, &config).unwrap();
        let v = of(&records, POISONED_CONVERSIONS);
        let ranges: BTreeSet<_> = v.iter().map(|r| prefix(r, 6)).collect();
        assert_eq!(ranges.len(), 1, "{ranges:?}");
        assert!(v[0].to.starts_with("+1"));
        for label in [DISPERSED_VERIFY, PREFIX_SPRAYER, RETURNING_USERS] {
            assert!(
                of(&records, label).iter().all(|r| r.to.starts_with("+1")),
                "{label}"
            );
        }
    }
}
