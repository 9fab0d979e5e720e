//! Policy scenarios under a controlled clock: no sleeps, no network.

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::config::{Action, Config};
use crate::phone::{Channel, Classification, Destination, NumberType, Region};
use crate::store::MemoryStore;

const T0: Millis = 1_700_000_000_000;
const SEC: Millis = 1_000;
const MIN: Millis = 60 * SEC;
const HOUR: Millis = 60 * MIN;

fn policy(toml: &str) -> Policy {
    let c = Config::parse(Path::new("t.toml"), toml).expect("test policy parses");
    Policy::new(Arc::new(c), Arc::new(MemoryStore::new(10_000, 1_000)))
}

fn region(r: &str) -> Option<Region> {
    Some(r.parse().unwrap())
}

struct Send {
    to: Destination,
    class: Classification,
    ip: IpAddr,
    user: Option<&'static str>,
    segments: u32,
    balance: BalanceView,
    content: Option<u64>,
    end_user_ip: bool,
}

fn send(e164: &str, r: &str) -> Send {
    Send {
        to: Destination {
            channel: Channel::Sms,
            e164: e164.into(),
        },
        class: Classification {
            calling_code: 1,
            region: region(r),
            kind: NumberType::Mobile,
            valid: true,
        },
        ip: "198.51.100.1".parse().unwrap(),
        user: None,
        segments: 1,
        balance: BalanceView::NotAsked,
        content: None,
        end_user_ip: true,
    }
}

impl Send {
    fn ip(mut self, ip: &str) -> Self {
        self.ip = ip.parse().unwrap();
        self
    }
    fn attempt(&self) -> Attempt<'_> {
        Attempt {
            product: Product::Messaging,
            account: "AC00000000000000000000000000000001",
            to: &self.to,
            class: self.class,
            client_ip: self.ip,
            end_user_ip: self.end_user_ip,
            user: self.user,
            segments: self.segments,
            media: 0,
            content: self.content,
            balance: self.balance,
        }
    }
}

fn rule(d: &Decision) -> &str {
    d.deciding().map(|v| v.rule.as_str()).unwrap_or("-")
}

#[test]
fn the_safe_list_skips_every_stage() {
    let p = policy(
        "[geo]\nallow = [\"US\"]\n[numbers]\nsafe = [\"+998 99 394 1234\"]\nsafe_clients = [\"10.0.0.0/8\"]\n",
    );
    let d = p.decide(&send("+998993941234", "UZ").attempt(), T0);
    assert_eq!(d.action, Action::Allow);
    assert!(d.verdict.is_none());
    let d = p.decide(&send("+998993940000", "UZ").ip("10.1.2.3").attempt(), T0);
    assert_eq!(d.action, Action::Allow);
    let d = p.decide(&send("+998993940000", "UZ").attempt(), T0);
    assert_eq!((d.action, rule(&d)), (Action::Shadow, "geo:UZ"));
}

#[test]
fn the_number_stage_judges_validity_region_and_type() {
    let p =
        policy("[geo]\nallow = [\"US\", \"GB\"]\n[numbers]\nblock_types = [\"premium_rate\"]\n");
    let mut s = send("+15555550100", "US");
    s.class.valid = false;
    let d = p.decide(&s.attempt(), T0);
    assert_eq!((d.action, rule(&d)), (Action::Reject, "invalid"));
    assert_eq!(d.verdict.unwrap().reason, Reason::Invalid);

    let d = p.decide(&send("+998993941234", "UZ").attempt(), T0);
    assert_eq!((d.action, rule(&d)), (Action::Shadow, "geo:UZ"));

    let mut s = send("+882161234567", "US");
    s.class.region = None;
    let d = p.decide(&s.attempt(), T0);
    assert_eq!((d.action, rule(&d)), (Action::Shadow, "no_region"));

    let mut s = send("+449091234567", "GB");
    s.class.kind = NumberType::PremiumRate;
    let d = p.decide(&s.attempt(), T0);
    assert_eq!((d.action, rule(&d)), (Action::Shadow, "type:premium_rate"));

    let d = p.decide(&send("+14155550100", "US").attempt(), T0);
    assert_eq!(d.action, Action::Allow);
}

#[test]
fn geo_deny_blocks_even_without_an_allow_list() {
    let p = policy("[geo]\ndeny = [\"UZ\"]\n");
    assert_eq!(
        p.decide(&send("+998993941234", "UZ").attempt(), T0).action,
        Action::Shadow
    );
    assert_eq!(
        p.decide(&send("+4915112345678", "DE").attempt(), T0).action,
        Action::Allow
    );
}

#[test]
fn a_monitored_stage_records_would_block_and_forwards() {
    let p = policy("[actions]\nnumber = \"monitor\"\n[geo]\nallow = [\"US\"]\n[[limit]]\nname = \"n\"\nkey = \"to\"\nrates = [\"1/1h\"]\n");
    let s = send("+998993941234", "UZ");
    let d = p.decide(&s.attempt(), T0);
    assert_eq!(d.action, Action::Monitor);
    assert!(d.forwarded());
    assert_eq!(d.would_block[0].rule, "geo:UZ");
    // Evaluation went on: the second send trips the limit and is shadowed.
    let d = p.decide(&s.attempt(), T0 + 1);
    assert_eq!(
        (d.action, d.verdict.unwrap().rule.as_str()),
        (Action::Shadow, "limit:n")
    );
}

const BACKOFF: &str =
    "[backoff]\nfree = 1\nbase = \"30s\"\nfactor = 2\nmax = \"2m\"\nreset_after = \"2h\"\n";

#[test]
fn backoff_doubles_the_wait_after_each_send_up_to_max() {
    let p = policy(BACKOFF);
    let s = send("+14155550123", "US");
    let at = |t: Millis| p.decide(&s.attempt(), t);
    assert_eq!(at(T0).action, Action::Allow, "the free send");
    assert_eq!(at(T0 + 29 * SEC).action, Action::Shadow, "29s < 30s");
    assert_eq!(rule(&at(T0 + 29 * SEC)), "backoff");
    assert_eq!(
        at(T0 + 30 * SEC).action,
        Action::Allow,
        "30s after the first"
    );
    let t2 = T0 + 30 * SEC;
    assert_eq!(
        at(t2 + 59 * SEC).action,
        Action::Shadow,
        "now 60s are needed"
    );
    assert_eq!(at(t2 + 60 * SEC).action, Action::Allow);
    let t3 = t2 + 60 * SEC;
    assert_eq!(at(t3 + 119 * SEC).action, Action::Shadow, "120s = max");
    assert_eq!(at(t3 + 120 * SEC).action, Action::Allow);
    let t4 = t3 + 120 * SEC;
    // 240s would be next, but max caps it at 2m.
    assert_eq!(at(t4 + 120 * SEC).action, Action::Allow);
    // Blocked attempts keep the streak alive; a quiet 2h resets it.
    let t5 = t4 + 120 * SEC;
    assert_eq!(at(t5 + 2 * HOUR).action, Action::Allow);
    assert_eq!(
        at(t5 + 2 * HOUR + 30 * SEC).action,
        Action::Allow,
        "level reset to the first step"
    );
}

#[test]
fn backoff_holds_a_send_whose_wait_is_short() {
    let p = policy(&format!("{BACKOFF}hold_up_to = \"10s\"\n"));
    let s = send("+14155550123", "US");
    assert_eq!(p.decide(&s.attempt(), T0).hold, None);
    let d = p.decide(&s.attempt(), T0 + 25 * SEC);
    assert_eq!(d.action, Action::Allow);
    assert_eq!(d.hold, Some(Duration::from_secs(5)));
    // The held send took the slot at T0+30s: the next needs 60s from there.
    let d = p.decide(&s.attempt(), T0 + 26 * SEC);
    assert_eq!(d.action, Action::Shadow);
    let d = p.decide(&s.attempt(), T0 + 85 * SEC);
    assert_eq!(
        (d.action, d.hold),
        (Action::Allow, Some(Duration::from_secs(5)))
    );
}

#[test]
fn a_send_blocked_by_a_later_stage_does_not_use_a_backoff_slot() {
    let p = policy(&format!(
        "{BACKOFF}[[limit]]\nname = \"ip\"\nkey = \"client_ip\"\nrates = [\"1/1h\"]\n"
    ));
    let s = send("+14155550123", "US").ip("203.0.113.9");
    assert_eq!(
        p.decide(&send("+14155550999", "US").ip("203.0.113.9").attempt(), T0)
            .action,
        Action::Allow
    );
    // Passes backoff (free send) but the IP limit blocks it.
    assert_eq!(rule(&p.decide(&s.attempt(), T0 + 1)), "limit:ip");
    // From another IP, the number's free send is still free.
    let other = send("+14155550123", "US").ip("203.0.113.10");
    assert_eq!(p.decide(&other.attempt(), T0 + 2).action, Action::Allow);
}

const PREFIX_LIMIT: &str =
    "[[limit]]\nname = \"prefix\"\nkey = \"prefix:8\"\nrates = [\"20/10m\"]\nblock = \"12h\"\n";

#[test]
fn twenty_sends_to_one_prefix_in_ten_minutes_get_the_twenty_first_shadowed_and_the_prefix_blocked()
{
    let p = policy(PREFIX_LIMIT);
    for i in 0..20 {
        let s = send(&format!("+4474001234{i:02}"), "GB");
        assert_eq!(
            p.decide(&s.attempt(), T0 + i * SEC).action,
            Action::Allow,
            "send {i}"
        );
    }
    let d = p.decide(&send("+447400123499", "GB").attempt(), T0 + 30 * SEC);
    assert_eq!((d.action, rule(&d)), (Action::Shadow, "limit:prefix"));
    // The prefix is now blocked for 12h: the blocks stage stops it, even slowly.
    let d = p.decide(&send("+447400120000", "GB").attempt(), T0 + 6 * HOUR);
    assert_eq!(d.verdict.as_ref().unwrap().stage, Stage::Blocks);
    assert_eq!(
        d.verdict.as_ref().unwrap().detail.as_deref(),
        Some("prefix:8=+44740012")
    );
    // Another prefix is untouched.
    assert_eq!(
        p.decide(&send("+447500123456", "GB").attempt(), T0 + 6 * HOUR)
            .action,
        Action::Allow
    );
    // After 12h it is free again.
    let t = T0 + 30 * SEC + 12 * HOUR;
    assert_eq!(
        p.decide(&send("+447400120001", "GB").attempt(), t).action,
        Action::Allow
    );
}

#[test]
fn a_repeat_offence_doubles_the_block() {
    let p = policy(PREFIX_LIMIT);
    let burst = |start: Millis| {
        for i in 0..21 {
            p.decide(
                &send(&format!("+4474001234{i:02}"), "GB").attempt(),
                start + i,
            );
        }
    };
    burst(T0);
    let blocks = p.store().blocks(T0 + 100);
    assert_eq!(blocks.len(), 1);
    assert_eq!(blocks[0].1.until - blocks[0].1.since, 12 * HOUR);
    let second = T0 + 13 * HOUR;
    burst(second);
    let blocks = p.store().blocks(second + 100);
    assert_eq!(blocks[0].1.offence, 2);
    assert_eq!(blocks[0].1.until - blocks[0].1.since, 24 * HOUR);
    assert_eq!(
        p.decide(&send("+447400120000", "GB").attempt(), second + 20 * HOUR)
            .action,
        Action::Shadow
    );
}

#[test]
fn every_attempt_counts_so_hammering_keeps_a_key_blocked() {
    let p = policy("[[limit]]\nname = \"number\"\nkey = \"to\"\nrates = [\"5/1h\"]\n");
    let s = send("+14155550123", "US");
    for i in 0..5 {
        assert_eq!(p.decide(&s.attempt(), T0 + i * MIN).action, Action::Allow);
    }
    // Keep trying every 10 minutes: each try counts, so the sliding hour
    // never empties and the number stays limited.
    for i in 1..=12 {
        assert_eq!(
            p.decide(&s.attempt(), T0 + 5 * MIN + i * 10 * MIN).action,
            Action::Shadow,
            "try {i}"
        );
    }
    // Stop for two hours and the number is free again.
    assert_eq!(
        p.decide(&s.attempt(), T0 + 5 * MIN + 120 * MIN + 2 * HOUR)
            .action,
        Action::Allow
    );
}

#[test]
fn a_limit_with_several_rates_catches_slow_and_fast_attacks() {
    let p = policy("[[limit]]\nname = \"n\"\nkey = \"to\"\nrates = [\"3/1m\", \"5/1d\"]\n");
    let s = send("+14155550123", "US");
    for i in 0..3 {
        assert_eq!(p.decide(&s.attempt(), T0 + i).action, Action::Allow);
    }
    assert_eq!(
        p.decide(&s.attempt(), T0 + 10).action,
        Action::Shadow,
        "fast: 4th in a minute"
    );
    // Slowly: the 5th attempt of the day (the blocked one counted) passes,
    // the 6th does not, however far apart they are.
    assert_eq!(p.decide(&s.attempt(), T0 + 10 * MIN).action, Action::Allow);
    assert_eq!(p.decide(&s.attempt(), T0 + 5 * HOUR).action, Action::Shadow);
}

#[test]
fn a_combined_key_counts_each_combination_apart() {
    let p = policy("[[limit]]\nname = \"ipreg\"\nkey = \"client_ip+region\"\nrates = [\"2/1h\"]\n");
    let a = |n: &str, r: &str, ip: &str| p.decide(&send(n, r).ip(ip).attempt(), T0).action;
    assert_eq!(a("+14155550001", "US", "192.0.2.1"), Action::Allow);
    assert_eq!(a("+14155550002", "US", "192.0.2.1"), Action::Allow);
    assert_eq!(
        a("+447400000003", "GB", "192.0.2.1"),
        Action::Allow,
        "other region"
    );
    assert_eq!(
        a("+14155550004", "US", "192.0.2.2"),
        Action::Allow,
        "other ip"
    );
    assert_eq!(a("+14155550005", "US", "192.0.2.1"), Action::Shadow);
}

#[test]
fn a_user_limit_does_not_apply_without_a_user() {
    let p = policy("[[limit]]\nname = \"u\"\nkey = \"user\"\nrates = [\"1/1h\"]\n");
    let mut s = send("+14155550001", "US");
    assert_eq!(p.decide(&s.attempt(), T0).action, Action::Allow);
    assert_eq!(p.decide(&s.attempt(), T0).action, Action::Allow);
    s.user = Some("u-1");
    assert_eq!(p.decide(&s.attempt(), T0).action, Action::Allow);
    assert_eq!(p.decide(&s.attempt(), T0).action, Action::Shadow);
}

#[test]
fn a_monitored_limit_forwards_and_a_reject_limit_rejects_with_its_reason() {
    let p = policy(
        "[[limit]]\nname = \"watch\"\nkey = \"global\"\nrates = [\"1/1m\"]\naction = \"monitor\"\n[[limit]]\nname = \"global\"\nkey = \"global\"\nrates = [\"2/1m\"]\naction = \"reject\"\n",
    );
    let s = send("+14155550001", "US");
    assert_eq!(p.decide(&s.attempt(), T0).action, Action::Allow);
    let d = p.decide(&s.attempt(), T0);
    assert_eq!((d.action, rule(&d)), (Action::Monitor, "limit:watch"));
    let d = p.decide(&s.attempt(), T0);
    assert_eq!(d.action, Action::Reject);
    assert_eq!(d.verdict.as_ref().unwrap().reason, Reason::RateLimited);
    assert_eq!(d.would_block[0].rule, "limit:watch");
}

#[test]
fn a_manual_block_on_any_prefix_length_applies_and_can_be_removed() {
    let p = policy("");
    let req = BlockRequest {
        key: "prefix:6".parse().unwrap(),
        value: "+998993".into(),
        duration: Duration::from_secs(3600),
        action: Some(Action::Reject),
    };
    let key = p.add_block(&req, T0).unwrap();
    assert_eq!(key, "prefix:6=+998993");
    let d = p.decide(&send("+998993941234", "UZ").attempt(), T0 + 1);
    assert_eq!((d.action, rule(&d)), (Action::Reject, "manual"));
    assert!(p.remove_block(&key));
    assert_eq!(
        p.decide(&send("+998993941234", "UZ").attempt(), T0 + 2)
            .action,
        Action::Allow
    );
    let bad = BlockRequest {
        value: "+99899".into(),
        ..req
    };
    assert!(p.add_block(&bad, T0).is_err());
}

#[test]
fn the_budget_caps_spend_and_only_forwarded_sends_spend() {
    let p = policy(
        "[geo]\ndeny = [\"UZ\"]\n[budget]\ndaily = \"0.05\"\nprices = { default = \"0.01\", UZ = \"0.30\" }\n",
    );
    // Shadowed sends (geo) spend nothing.
    for _ in 0..10 {
        assert_eq!(
            p.decide(&send("+998993941234", "UZ").attempt(), T0).action,
            Action::Shadow
        );
    }
    for i in 0..5 {
        let d = p.decide(&send(&format!("+1415555010{i}"), "US").attempt(), T0 + i);
        assert_eq!(d.action, Action::Allow, "send {i}");
    }
    let d = p.decide(&send("+14155550109", "US").attempt(), T0 + 10);
    assert_eq!((d.action, rule(&d)), (Action::Shadow, "budget:day:*"));
    // Two segments cost twice: still refused. The next UTC day is fresh.
    let next_day = T0 - T0 % (24 * HOUR) + 24 * HOUR;
    assert_eq!(
        p.decide(&send("+14155550109", "US").attempt(), next_day)
            .action,
        Action::Allow
    );
}

#[test]
fn the_budget_holds_exactly_under_concurrent_sends() {
    let p = Arc::new(policy(
        "[budget]\nhourly = \"1.00\"\nprices = { default = \"0.01\" }\n",
    ));
    let allowed = std::sync::atomic::AtomicU64::new(0);
    std::thread::scope(|sc| {
        for t in 0..8 {
            let p = p.clone();
            let allowed = &allowed;
            sc.spawn(move || {
                for i in 0..100 {
                    let s = send(&format!("+1415{t}{i:06}"), "US");
                    if p.decide(&s.attempt(), T0).forwarded() {
                        allowed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                }
            });
        }
    });
    assert_eq!(allowed.into_inner(), 100, "1.00 / 0.01 = exactly 100 sends");
}

#[test]
fn explain_reports_every_stage() {
    let p = policy(&format!("[geo]\nallow = [\"US\"]\n{BACKOFF}{PREFIX_LIMIT}"));
    let d = p.explain(&send("+998993941234", "UZ").attempt(), T0);
    let stages: Vec<Stage> = d.trace.iter().map(|(s, _)| *s).collect();
    assert_eq!(stages, Stage::ALL.to_vec());
    assert!(matches!(d.trace[1].1, StageOutcome::Block(_)));
    assert_eq!(d.action, Action::Shadow);
}

#[test]
fn the_balance_stage_blocks_below_the_minimum_and_follows_on_error() {
    let p = policy("[balance]\nmin = \"1.00\"\non_error = \"block\"\n");
    let mut s = send("+14155550123", "US");
    s.balance = BalanceView::Known(crate::config::Money(999_999));
    let d = p.decide(&s.attempt(), T0);
    assert_eq!((d.action, rule(&d)), (Action::Shadow, "balance:min"));
    s.balance = BalanceView::Known(crate::config::Money(1_000_000));
    assert_eq!(p.decide(&s.attempt(), T0).action, Action::Allow);
    s.balance = BalanceView::Unavailable;
    assert_eq!(rule(&p.decide(&s.attempt(), T0)), "balance:unavailable");
    let open = policy("[balance]\nmin = \"1.00\"\non_error = \"allow\"\n");
    assert_eq!(open.decide(&s.attempt(), T0).action, Action::Allow);
}

#[test]
fn a_send_blocked_by_the_balance_stage_spends_no_budget() {
    let p = policy(
        "[budget]\nhourly = \"0.02\"\nprices = { default = \"0.01\" }\n[balance]\nmin = \"1.00\"\n",
    );
    let mut s = send("+14155550123", "US");
    s.balance = BalanceView::Known(crate::config::Money(0));
    for _ in 0..5 {
        assert_eq!(p.decide(&s.attempt(), T0).action, Action::Shadow);
    }
    s.balance = BalanceView::Known(crate::config::Money(50_000_000));
    assert_eq!(p.decide(&s.attempt(), T0).action, Action::Allow);
    assert_eq!(
        p.decide(&s.attempt(), T0 + 1).action,
        Action::Allow,
        "refunded: 2 sends still fit"
    );
    assert_eq!(rule(&p.decide(&s.attempt(), T0 + 2)), "budget:hour:*");
}

// ---- adaptive stage

/// Only the unconfirmed signal: surges and distinct-number limits off.
const UNCONFIRMED_ONLY: &str = "[adaptive]\n[adaptive.surge]\nfloor = 100000\nregion = 0\n[adaptive.distinct]\nclient_ip = []\nuser = []\nregions = 0\n[adaptive.unconfirmed]\nclient_ip = []\nuser = []\n";

fn numbered(prefix: &str, i: u64) -> Send {
    send(&format!("{prefix}{i:04}"), "US")
}

/// Makes confirmations flow for the test account's messaging.
fn confirmations_flow(p: &Policy, at: Millis) {
    let s = send("+19175550000", "US");
    assert!(p.decide(&s.attempt(), at).forwarded());
    assert!(p.confirm(&s.to, &s.class, at + 10 * SEC));
}

#[test]
fn a_prefix_whose_sends_are_never_confirmed_is_blocked_after_the_minimum_sample() {
    let p = policy(UNCONFIRMED_ONLY);
    confirmations_flow(&p, T0);
    let mut first_stop = None;
    for i in 0..40 {
        let s = numbered("+1646555", i);
        let d = p.decide(&s.attempt(), T0 + MIN + i * MIN);
        if !d.forwarded() {
            first_stop = Some((i, d));
            break;
        }
    }
    let (i, d) = first_stop.expect("an unconverting prefix is stopped");
    // Nothing is judged before five sends are past their five-minute grace
    // (and more than the floor of 4 are unconfirmed).
    assert!(i >= 5 + 4, "stopped after only {i} sends");
    assert_eq!(d.action, Action::Shadow);
    // The block (prefix:7) and the range above it (prefix:6) hold the same
    // sends here; the broadest key that tripped names the verdict.
    assert!(
        rule(&d).starts_with("adaptive:unconfirmed:prefix:"),
        "{}",
        rule(&d)
    );
    let detail = detail_of(&d);
    assert!(
        detail.contains("=+164655") && detail.contains("unconfirmed in 1h"),
        "{detail}"
    );
    // The prefix is now blocked: the next send stops at the blocks stage.
    let d = p.decide(&numbered("+1646555", 99).attempt(), T0 + 50 * MIN);
    assert_eq!(d.verdict.as_ref().unwrap().stage, Stage::Blocks);
    assert!(rule(&d).starts_with("adaptive:unconfirmed:prefix:"));
}

#[test]
fn a_prefix_whose_sends_are_confirmed_is_never_blocked() {
    let p = policy(UNCONFIRMED_ONLY);
    confirmations_flow(&p, T0);
    for i in 0..120 {
        let s = numbered("+1212555", i);
        let at = T0 + MIN + i * MIN;
        let d = p.decide(&s.attempt(), at);
        assert!(d.forwarded(), "send {i} stopped: {:?}", d.verdict);
        // Nine in ten people enter their code, 30 s to 3 min later.
        if i % 10 != 0 {
            assert!(p.confirm(&s.to, &s.class, at + 30 * SEC + (i % 5) * 40 * SEC));
        }
    }
}

#[test]
fn an_app_that_never_confirms_is_not_judged_on_conversion() {
    let p = policy(UNCONFIRMED_ONLY);
    for i in 0..60 {
        let d = p.decide(&numbered("+1646555", i).attempt(), T0 + i * MIN);
        assert!(d.forwarded(), "send {i} stopped: {:?}", d.verdict);
    }
}

#[test]
fn a_new_prefix_inherits_its_parents_baseline() {
    // Judged: the region and the first digit after the country code.
    let cfg = format!(
        "{UNCONFIRMED_ONLY}prefix = [\"2/1d\"]\nregion = [\"100000/1d\"]\nmin_sample = 1\n"
    )
    .replace(
        "[adaptive]\n",
        "[adaptive]\nprefixes = [1]\nblock_digits = 0\n",
    );
    let busy = policy(&cfg);
    // The region has a confirmed baseline of 400 sends today, all under +12...
    for i in 0..400 {
        let s = numbered("+1201555", i);
        assert!(busy.decide(&s.attempt(), T0 + i * SEC).forwarded());
        assert!(busy.confirm(&s.to, &s.class, T0 + i * SEC + 5 * SEC));
    }
    let quiet = policy(&cfg);
    confirmations_flow(&quiet, T0);
    // ...so a prefix it has never seen (+13...) borrows a tenth of it (40):
    // fifteen unconfirmed sends pass there, and trip the floor of 2 where
    // the region has no baseline to lend.
    let mut stopped = [None, None];
    for (n, p) in [&busy, &quiet].into_iter().enumerate() {
        for i in 0..15 {
            let d = p.decide(&numbered("+1303555", i).attempt(), T0 + HOUR + i * 10 * MIN);
            if !d.forwarded() && stopped[n].is_none() {
                stopped[n] = Some(rule(&d).to_string());
            }
        }
    }
    assert_eq!(
        stopped[0], None,
        "the inherited baseline lets a busy region's new prefix through"
    );
    assert_eq!(stopped[1].as_deref(), Some("adaptive:unconfirmed:prefix:2"));
}

#[test]
fn a_surge_of_new_numbers_in_one_block_is_stopped_and_resends_do_not_count() {
    let p = policy("[adaptive]\n[adaptive.distinct]\nclient_ip = []\nuser = []\nregions = 0\n");
    // One person asking for codes again and again is not a surge of numbers.
    for i in 0..20 {
        assert!(p
            .decide(&numbered("+1303555", 1).attempt(), T0 + i * SEC)
            .forwarded());
    }
    // New numbers in one block (+1646555....): the fourth within ten minutes
    // trips the floor of 3 and blocks the block.
    let mut results = Vec::new();
    for i in 0..10 {
        let d = p.decide(
            &numbered("+1646555", i)
                .ip(&format!("203.0.113.{i}"))
                .attempt(),
            T0 + i * SEC,
        );
        results.push((d.forwarded(), rule(&d).to_string()));
    }
    assert!(results[..3].iter().all(|r| r.0), "{results:?}");
    assert_eq!(results[3], (false, "adaptive:surge:prefix:7".to_string()));
    assert!(results[4..].iter().all(|r| !r.0));
}

#[test]
fn a_broadcast_by_the_app_is_neither_counted_nor_judged_and_the_same_message_for_end_users_is() {
    let p = policy("[adaptive]\n[adaptive.distinct]\nclient_ip = []\nuser = []\nregions = 0\n");
    let sale = content_fingerprint([("Body", "Winter sale: 20% off until Sunday")]);
    let blast = |p: &Policy, range: &str, at: Millis| -> Vec<(bool, bool, String)> {
        (0..10)
            .map(|i| {
                let mut s = numbered(range, i);
                s.content = Some(sale);
                s.end_user_ip = false;
                let d = p.decide(&s.attempt(), at + i * SEC);
                (d.forwarded(), d.broadcast, rule(&d).to_string())
            })
            .collect()
    };
    // An app that never marks its end users' sends cannot say which sends
    // are its own: a fixed text from it is judged (the block's surge floor
    // of 3 stops the fourth new number). An `explain` with an address
    // teaches nothing.
    let _ = p.explain(&send("+12025550123", "US").attempt(), T0);
    let r = blast(&p, "+1718555", T0);
    assert!(r.iter().all(|x| !x.1), "{r:?}");
    assert_eq!(r[3], (false, false, "adaptive:surge:prefix:7".to_string()));
    // Once it does (a send with its end user's address), leaving the
    // address out says the send is the app's own.
    assert!(p
        .decide(&send("+12025550123", "US").attempt(), T0 + MIN)
        .forwarded());
    let start = T0 + 2 * MIN;
    // The app texts one message to its customers, many in one block
    // (+1646555....), without an end user's address: from the third
    // number on it is a broadcast, and no surge trips.
    for i in 0..30 {
        let mut s = numbered("+1646555", i);
        s.content = Some(sale);
        s.end_user_ip = false;
        let d = p.decide(&s.attempt(), start + i * SEC);
        assert!(d.forwarded(), "send {i} stopped: {:?}", d.verdict);
        assert_eq!(d.broadcast, i >= 2, "send {i}");
    }
    // Only its first two sends were counted: one new number asked for by
    // an end user still goes, the next trips the block's surge floor (3).
    let d = p.decide(&numbered("+1646555", 90).attempt(), start + 40 * SEC);
    assert!(d.forwarded() && !d.broadcast, "{:?}", d.verdict);
    let d = p.decide(&numbered("+1646555", 91).attempt(), start + 41 * SEC);
    assert_eq!(rule(&d), "adaptive:surge:prefix:7");

    // The same message asked for by end users (an app link texted from a
    // web form, each with its visitor's address) is judged as ever.
    let link = content_fingerprint([("Body", "Get the app: https://example.com/app")]);
    let mut first_stop = None;
    for i in 0..10 {
        let mut s = numbered("+1303555", i).ip(&format!("203.0.113.{i}"));
        s.content = Some(link);
        let d = p.decide(&s.attempt(), start + i * SEC);
        assert!(!d.broadcast);
        if !d.forwarded() && first_stop.is_none() {
            first_stop = Some((i, rule(&d).to_string()));
        }
    }
    assert_eq!(first_stop, Some((3, "adaptive:surge:prefix:7".to_string())));

    // Messages that differ (each its own code) are no broadcast either.
    let mut first_stop = None;
    for i in 0..10 {
        let mut s = numbered("+1212555", i);
        s.content = Some(content_fingerprint([(
            "Body",
            format!("Your code is {:06}", 100_000 + i).as_str(),
        )]));
        s.end_user_ip = false;
        let d = p.decide(&s.attempt(), start + i * SEC);
        assert!(!d.broadcast);
        if !d.forwarded() && first_stop.is_none() {
            first_stop = Some((i, rule(&d).to_string()));
        }
    }
    assert_eq!(first_stop, Some((3, "adaptive:surge:prefix:7".to_string())));

    // `bulk = 0` turns it off: the app's own message is judged too.
    let p = policy(
        "[adaptive]\nbulk = 0\n[adaptive.distinct]\nclient_ip = []\nuser = []\nregions = 0\n",
    );
    assert!(p
        .decide(&send("+12025550123", "US").attempt(), T0)
        .forwarded());
    let r = blast(&p, "+1646555", T0 + MIN);
    assert_eq!(r[3], (false, false, "adaptive:surge:prefix:7".to_string()));
}

#[test]
fn one_address_texting_many_numbers_is_stopped_unless_its_sends_are_confirmed() {
    let cfg = "[adaptive]\n[adaptive.surge]\nfloor = 100000\nregion = 0\n[adaptive.distinct]\nclient_ip = [\"8/1h\"]\nregions = 0\n";
    let p = policy(cfg);
    let mut stopped_at = None;
    for i in 0..30 {
        let d = p.decide(
            &numbered(&format!("+1{}55", 201 + i), i).attempt(),
            T0 + i * MIN,
        );
        if !d.forwarded() {
            assert_eq!(rule(&d), "adaptive:distinct:client_ip");
            stopped_at = Some(i);
            break;
        }
    }
    assert_eq!(
        stopped_at,
        Some(8),
        "the ninth distinct number in an hour is stopped"
    );

    // Behind a carrier NAT, the same address serves people who confirm:
    // each confirmed send raises the allowance.
    let p = policy(cfg);
    for i in 0..30 {
        let s = numbered(&format!("+1{}55", 201 + i), i);
        let d = p.decide(&s.attempt(), T0 + i * MIN);
        assert!(d.forwarded(), "send {i}: {:?}", d.verdict);
        assert!(p.confirm(&s.to, &s.class, T0 + i * MIN + 20 * SEC));
    }
}

#[test]
fn one_user_reaching_many_regions_is_stopped() {
    let p = policy("[adaptive]\n[adaptive.distinct]\nclient_ip = []\nuser = []\nregions = 2\n");
    let mut verdicts = Vec::new();
    for (i, r) in ["US", "CA", "GB"].iter().enumerate() {
        let mut s = send(&format!("+1416555{i:04}"), r);
        s.user = Some("user-7");
        s.ip = format!("198.51.100.{}", i + 10).parse().unwrap();
        let d = p.decide(&s.attempt(), T0 + i as u64 * MIN);
        verdicts.push(rule(&d).to_string());
    }
    assert_eq!(verdicts, ["-", "-", "adaptive:regions:user"]);
}

#[test]
fn a_monitored_adaptive_stage_records_and_forwards() {
    let p = policy("[adaptive]\naction = \"monitor\"\n[adaptive.distinct]\nclient_ip = []\nuser = []\nregions = 0\n");
    let mut would = 0;
    for i in 0..10 {
        let d = p.decide(&numbered("+1646555", i).attempt(), T0 + i * SEC);
        assert!(d.forwarded());
        if d.action == Action::Monitor {
            assert!(
                d.would_block
                    .iter()
                    .any(|v| v.rule.starts_with("adaptive:")),
                "{d:?}"
            );
            would += 1;
        }
    }
    assert!(would >= 4, "{would}");
}

#[test]
fn a_stopped_send_can_never_be_confirmed() {
    let p = policy("[geo]\nallow = [\"US\"]\n[adaptive]\n");
    let s = send("+998993941234", "UZ");
    assert!(!p.decide(&s.attempt(), T0).forwarded());
    assert!(
        !p.confirm(&s.to, &s.class, T0 + SEC),
        "nothing awaited a confirmation"
    );
    let s = send("+14155550123", "US");
    assert!(p.decide(&s.attempt(), T0).forwarded());
    assert!(p.confirm(&s.to, &s.class, T0 + SEC));
    // A second confirmation of the same send counts once.
    assert!(!p.confirm(&s.to, &s.class, T0 + 2 * SEC));
}

#[test]
fn pumping_spread_over_a_region_stops_its_new_numbers_while_it_lasts() {
    // Prefix, surge and sender signals out of reach: only the region's
    // figures can see a pump that sends once per range.
    let p = policy(
        "[adaptive]\n[adaptive.surge]\nfloor = 100000\nregion = 0\n[adaptive.distinct]\nclient_ip = []\nuser = []\nregions = 0\n[adaptive.unconfirmed]\nclient_ip = []\nuser = []\nregion = [\"20/1h\"]\ndispersed_ratio = 6\n",
    );
    // A day of real users: one confirmed send in each of 40 area codes.
    for k in 0..40u64 {
        let s = send(&format!("+1{}5550000", 201 + k), "US").ip(&format!("203.0.113.{k}"));
        assert!(p.decide(&s.attempt(), T0 + k * SEC).forwarded());
        assert!(p.confirm(&s.to, &s.class, T0 + k * SEC + 30 * SEC));
    }
    // Confirmations flow for Verify too.
    let v = send("+13055550000", "US").ip("203.0.113.200");
    let a = Attempt {
        product: Product::Verify,
        ..v.attempt()
    };
    assert!(p.decide(&a, T0).forwarded());
    assert!(p.confirm(&v.to, &v.class, T0 + 30 * SEC));
    // Two hours later, one send a minute, each to a new number in one of
    // those area codes, from a new address, never confirmed.
    let start = T0 + 2 * HOUR;
    let attack = |i: u64| {
        send(&format!("+1{}555{:04}", 201 + i % 40, 1000 + i), "US").ip(&format!(
            "198.51.{}.{}",
            i / 200,
            i % 200
        ))
    };
    let mut first_stop = None;
    for i in 0..60 {
        let d = p.decide(&attack(i).attempt(), start + i * MIN);
        match (&first_stop, d.forwarded()) {
            (None, false) => {
                assert_eq!(rule(&d), "adaptive:dispersed:region", "{:?}", d.verdict);
                let detail = detail_of(&d);
                assert!(
                    detail.starts_with("product_region=messaging:US: ")
                        && detail.contains("0 confirmed"),
                    "{detail}"
                );
                first_stop = Some(i);
            }
            (Some(_), true) => panic!("send {i} forwarded once the region was judged pumped"),
            _ => {}
        }
    }
    // Twenty sends past their five-minute grace, none confirmed.
    let first = first_stop.expect("the pump is stopped");
    assert!((24..=27).contains(&first), "first stop at send {first}");

    let now = start + 60 * MIN;
    // A number that proved receipt passes; so does a send the app makes
    // itself, and the same region's other products.
    let returning = send("+12025550000", "US").ip("192.0.2.10");
    assert!(
        p.decide(&returning.attempt(), now).forwarded(),
        "a vouched number"
    );
    let mut app = attack(500);
    app.end_user_ip = false;
    assert!(
        p.decide(&app.attempt(), now).forwarded(),
        "the app's own send"
    );
    let verify = attack(501);
    let a = Attempt {
        product: Product::Verify,
        ..verify.attempt()
    };
    assert!(p.decide(&a, now).forwarded(), "another product");

    // The stop lasts while new numbers keep coming, and lifts once the
    // hour's unanswered sends (the stopped ones among them) age out.
    let d = p.decide(&attack(600).attempt(), now + 30 * MIN);
    assert_eq!(rule(&d), "adaptive:dispersed:region");
    let d = p.decide(&attack(601).attempt(), now + 30 * MIN + 61 * MIN);
    assert!(d.forwarded(), "{:?}", d.verdict);
}

#[test]
fn a_sprayer_that_sends_several_numbers_per_block_is_left_to_the_ranges() {
    let p = policy(
        "[adaptive]\n[adaptive.surge]\nfloor = 100000\nregion = 0\n[adaptive.distinct]\nclient_ip = []\nuser = []\nregions = 0\n[adaptive.unconfirmed]\nclient_ip = []\nuser = []\nregion = [\"20/1h\"]\ndispersed_ratio = 6\n",
    );
    confirmations_flow(&p, T0);
    // Three new numbers in each block, one a minute, never confirmed:
    // the region's figures pass the ratio, but the excess has locality.
    let start = T0 + 2 * HOUR;
    for i in 0..60u64 {
        let s = send(&format!("+1{}555{:04}", 201 + i / 3, 1000 + i % 3), "US")
            .ip(&format!("198.51.100.{i}"));
        let d = p.decide(&s.attempt(), start + i * MIN);
        assert_ne!(
            rule(&d),
            "adaptive:dispersed:region",
            "send {i}: {:?}",
            d.verdict
        );
    }
}

/// The sends of a city's campaign: one new number per exchange of area
/// code 305 (`+1305 2xx` to `+1305 4xx`), each from its own address,
/// `gap` apart from `start`.
fn campaign(p: &Policy, start: Millis, gap: Millis, people: u64) -> Vec<Decision> {
    (0..people)
        .map(|i| {
            let s = send(&format!("+1305{}5550", 200 + i), "US").ip(&format!(
                "198.51.{}.{}",
                100 + i / 200,
                i % 200
            ));
            p.decide(&s.attempt(), start + i * gap)
        })
        .collect()
}

#[test]
fn without_confirmations_a_broad_surge_raises_an_alert_and_blocks_nothing() {
    // The example's figures: a block's floor of 3 new numbers in 10 min,
    // 4 times that per digit shorter, so the area code's first digit
    // (`prefix:5`, two digits shorter: broad) surges past 48.
    let p = policy("[adaptive]\n");
    let people = 150;
    let d = campaign(&p, T0, 2 * SEC, people);
    let stopped: Vec<_> = d.iter().filter(|d| !d.forwarded()).map(rule).collect();
    assert!(stopped.is_empty(), "stopped: {stopped:?}");
    // The alert is raised, and says why it blocks nothing.
    let s = send("+13053995550", "US").ip("198.51.103.1");
    let d = p.explain(&s.attempt(), T0 + people * 2 * SEC);
    assert!(d.forwarded());
    let text = d.explained();
    assert!(
        text.contains("prefix:5=+13053 under alert")
            && text.contains("an alert blocks nothing without them"),
        "{text}"
    );

    // Where confirmations flow, the same surge never confirming is
    // judged: the alert blocks the ranges under it.
    let p = policy("[adaptive]\n");
    confirmations_flow(&p, T0 - HOUR);
    let d = campaign(&p, T0, 2 * SEC, people);
    assert!(
        d.iter()
            .any(|d| rule(d).starts_with("adaptive:alert:prefix:")),
        "the alert judged nothing where confirmations flow"
    );
}

/// Only the distinct-number signal, per client address: 8 an hour.
const DISTINCT_ADDRESS_ONLY: &str = "[adaptive]\n[adaptive.surge]\nfloor = 100000\nregion = 0\n[adaptive.distinct]\nclient_ip = [\"8/1h\"]\nregions = 0\n";

/// The `i`th new number (each in its own area code) asked for from one
/// address.
fn busy_address(i: u64) -> Send {
    numbered(&format!("+1{}55", 201 + i), i).ip("203.0.113.7")
}

/// The stopping verdict's detail.
fn detail_of(d: &Decision) -> String {
    d.verdict.as_ref().unwrap().detail.clone().unwrap()
}

#[test]
fn without_confirmations_a_busy_address_is_blocked_briefly_and_again_while_it_goes_on() {
    let p = policy(DISTINCT_ADDRESS_ONLY);
    for i in 0..8 {
        assert!(p
            .decide(&busy_address(i).attempt(), T0 + i * MIN)
            .forwarded());
    }
    // The ninth distinct number in the hour: blocked for `alert_block`
    // (15 min), not `block` (12 h). Its distinct numbers are all the
    // evidence, and a carrier NAT's busy hour shows as many.
    let d = p.decide(&busy_address(8).attempt(), T0 + 8 * MIN);
    assert_eq!(rule(&d), "adaptive:distinct:client_ip");
    let detail = detail_of(&d);
    assert!(detail.ends_with("blocked for 15m (offence 1)"), "{detail}");
    // Blocked until 23 min.
    let d = p.decide(&busy_address(9).attempt(), T0 + 20 * MIN);
    assert_eq!(d.verdict.as_ref().map(|v| v.stage), Some(Stage::Blocks));
    // Once it lifts, the address is still over its hour's floor: its
    // next new number trips it again, escalated.
    let d = p.decide(&busy_address(10).attempt(), T0 + 24 * MIN);
    assert_eq!(rule(&d), "adaptive:distinct:client_ip");
    let detail = detail_of(&d);
    assert!(detail.ends_with("blocked for 30m (offence 2)"), "{detail}");

    // Where confirmations flow (this address's sends never confirm), the
    // trip is judged on conversion too: `block`.
    let p = policy(DISTINCT_ADDRESS_ONLY);
    confirmations_flow(&p, T0 - HOUR);
    for i in 0..8 {
        assert!(p
            .decide(&busy_address(i).attempt(), T0 + i * MIN)
            .forwarded());
    }
    let d = p.decide(&busy_address(8).attempt(), T0 + 8 * MIN);
    assert_eq!(rule(&d), "adaptive:distinct:client_ip");
    let detail = detail_of(&d);
    assert!(detail.ends_with("blocked for 12h (offence 1)"), "{detail}");
}

/// Makes confirmations flow for the test account's Verify only.
fn verify_confirmations_flow(p: &Policy, at: Millis) {
    let s = send("+19175550001", "US").ip("192.0.2.200");
    let a = Attempt {
        product: Product::Verify,
        ..s.attempt()
    };
    assert!(p.decide(&a, at).forwarded());
    assert!(p.confirm(&s.to, &s.class, at + 10 * SEC));
}

#[test]
fn sends_nobody_can_confirm_do_not_count_as_unanswered_beside_sends_that_can() {
    // An app whose Verify codes are checked through the guard (they
    // confirm) and whose messages nobody reports (no Feedback): its
    // messages must not make the ranges and senders they share with
    // Verify look unanswered.
    let p = policy(UNCONFIRMED_ONLY);
    verify_confirmations_flow(&p, T0);
    for i in 0..40 {
        let s = numbered("+1646555", i).ip(&format!("203.0.113.{i}"));
        let d = p.decide(&s.attempt(), T0 + MIN + i * MIN);
        assert!(d.forwarded(), "message {i}: {:?}", d.verdict);
    }
    let s = numbered("+1646555", 100).ip("203.0.113.100");
    let a = Attempt {
        product: Product::Verify,
        ..s.attempt()
    };
    let d = p.explain(&a, T0 + 50 * MIN);
    assert!(d.forwarded(), "{}", d.explained());
    assert!(
        d.explained()
            .contains("prefix:7=+1646555: sent/confirmed 0/0 in 1h"),
        "{}",
        d.explained()
    );

    // The same Verify sends, never confirmed, are judged.
    let p = policy(UNCONFIRMED_ONLY);
    verify_confirmations_flow(&p, T0);
    let stopped = (0..40).any(|i| {
        let s = numbered("+1646555", i).ip(&format!("203.0.113.{i}"));
        let a = Attempt {
            product: Product::Verify,
            ..s.attempt()
        };
        !p.decide(&a, T0 + MIN + i * MIN).forwarded()
    });
    assert!(stopped, "unanswered Verify sends were not judged");
}

#[test]
fn an_address_whose_numbers_no_conversion_can_weigh_is_blocked_briefly() {
    fn verify(s: &Send) -> Attempt<'_> {
        Attempt {
            product: Product::Verify,
            ..s.attempt()
        }
    }
    // Verify confirms, messages are never reported: eight messages, then
    // a Verify send, from one address.
    let p = policy(DISTINCT_ADDRESS_ONLY);
    verify_confirmations_flow(&p, T0 - HOUR);
    for i in 0..8 {
        assert!(p
            .decide(&busy_address(i).attempt(), T0 + i * MIN)
            .forwarded());
    }
    let s = busy_address(8);
    let d = p.decide(&verify(&s), T0 + 8 * MIN);
    assert_eq!(rule(&d), "adaptive:distinct:client_ip");
    let detail = detail_of(&d);
    assert!(detail.ends_with("blocked for 15m (offence 1)"), "{detail}");

    // Nine Verify sends, all of which could confirm: `block`.
    let p = policy(DISTINCT_ADDRESS_ONLY);
    verify_confirmations_flow(&p, T0 - HOUR);
    for i in 0..8 {
        assert!(p
            .decide(&verify(&busy_address(i)), T0 + i * MIN)
            .forwarded());
    }
    let d = p.decide(&verify(&busy_address(8)), T0 + 8 * MIN);
    assert_eq!(rule(&d), "adaptive:distinct:client_ip");
    let detail = detail_of(&d);
    assert!(detail.ends_with("blocked for 12h (offence 1)"), "{detail}");
}

#[test]
fn a_range_is_judged_past_its_share_of_a_broad_surge() {
    // Surges only: no confirmations flow, distinct-number floors off.
    let p = policy(
        "[adaptive]\n[adaptive.surge]\nregion = 0\n[adaptive.distinct]\nclient_ip = []\nuser = []\nregions = 0\n",
    );
    // A big city's campaign: 3,200 new numbers in eight minutes, four in
    // each of the area code's 800 exchanges, each from its own address.
    // In a quiet area code a block is stopped at its fourth new number in
    // ten minutes (the floor of 3); here that is the campaign's share.
    for i in 0..3_200u64 {
        let s = send(&format!("+1305{}{:04}", 200 + i % 800, i / 800), "US").ip(&format!(
            "198.18.{}.{}",
            i / 250,
            1 + i % 250
        ));
        let d = p.decide(&s.attempt(), T0 + i * 150);
        assert!(d.forwarded(), "person {i}: {:?}", d.verdict);
    }
    // A pump into one of its exchanges still trips, past that share:
    // 3.2 a range, and four standard deviations, and one.
    let now = T0 + 3_200 * 150;
    let mut stopped = None;
    for k in 0..30u64 {
        let s =
            send(&format!("+1305201{:04}", 5_000 + k), "US").ip(&format!("203.0.113.{}", 10 + k));
        let d = p.decide(&s.attempt(), now + (k + 1) * SEC);
        if !d.forwarded() {
            assert_eq!(rule(&d), "adaptive:surge:prefix:7");
            let detail = detail_of(&d);
            let chance: f64 = detail
                .split("chance ")
                .nth(1)
                .and_then(|t| t.split(')').next())
                .and_then(|t| t.parse().ok())
                .expect("the chance is in the figures");
            // 2.8 to 3.2 a range over the window, four standard deviations
            // and one more.
            assert!((10.0..11.5).contains(&chance), "{detail}");
            stopped = Some(k);
            break;
        }
    }
    // The campaign's four, then six or seven more.
    assert!(matches!(stopped, Some(6..=7)), "{stopped:?}");
}

#[test]
fn an_alert_a_surge_raised_lifts_once_half_its_new_numbers_confirm() {
    let p = policy("[adaptive]\n[adaptive.distinct]\nclient_ip = []\nuser = []\nregions = 0\n");
    confirmations_flow(&p, T0 - HOUR);
    // A campaign's first minute: 48 new numbers in +1305 2xx, one per
    // exchange; the next is past the broad floor of 48, before any code
    // is typed.
    let people: Vec<Send> = (0..48u64)
        .map(|i| send(&format!("+1305{}5550", 200 + i), "US").ip(&format!("198.18.0.{}", 1 + i)))
        .collect();
    for (i, s) in people.iter().enumerate() {
        assert!(p.decide(&s.attempt(), T0 + i as u64 * SEC).forwarded());
    }
    let text = |e164: &str, at: Millis| {
        let s = send(e164, "US").ip("203.0.113.1");
        p.explain(&s.attempt(), at).explained()
    };
    let before = text("+13052805551", T0 + 50 * SEC);
    assert!(before.contains("prefix:5=+13052 under alert"), "{before}");
    // A minute later, 30 of them have typed their code.
    for (i, s) in people.iter().take(30).enumerate() {
        assert!(p.confirm(&s.to, &s.class, T0 + 60 * SEC + i as u64 * SEC));
    }
    let after = text("+13052705551", T0 + 91 * SEC);
    assert!(!after.contains("under alert"), "{after}");
}

/// Only a country's conversion and the ranges an alert on it judges.
const REGION_ALERT_ONLY: &str = "[adaptive]\n[adaptive.surge]\nfloor = 100000\nregion = 0\n[adaptive.distinct]\nclient_ip = []\nuser = []\nregions = 0\n[adaptive.unconfirmed]\nregion = [\"10/1h\"]\nprefix = []\ndispersed_ratio = 0\nclient_ip = []\nuser = []\n";

/// A day's sign-ups: one person a minute from `start`, each a new number
/// in its own area code and exchange, from their own address; the people
/// `answers` picks enter their code 30 s after it is sent. The number of
/// sends stopped.
fn sign_ups(p: &Policy, start: Millis, day: u64, answers: impl Fn(u64) -> bool) -> usize {
    let mut stopped = 0;
    for i in 0..200 {
        if !sign_up(p, start + i * MIN, day, i, &answers) {
            stopped += 1;
        }
    }
    stopped
}

/// The `i`th sign-up of [`sign_ups`], at `at`: whether it was forwarded.
fn sign_up(p: &Policy, at: Millis, day: u64, i: u64, answers: impl Fn(u64) -> bool) -> bool {
    let s = send(&format!("+1{}{}55{i:04}", 200 + i, 2 + day), "US").ip(&format!(
        "198.51.{}.{}",
        100 + day,
        i
    ));
    let forwarded = p.decide(&s.attempt(), at).forwarded();
    if forwarded && answers(i) {
        assert!(p.confirm(&s.to, &s.class, at + 30 * SEC));
    }
    forwarded
}

#[test]
fn an_app_whose_people_answer_fewer_codes_is_judged_by_its_own_share() {
    // An app whose real users answer one code in two, yesterday and today:
    // today nobody is stopped, and `explain` says how it is judged.
    let p = policy(REGION_ALERT_ONLY);
    let one_in_two = |i: u64| !i.is_multiple_of(2);
    assert_eq!(sign_ups(&p, T0, 0, one_in_two), 0, "yesterday");
    assert_eq!(sign_ups(&p, T0 + 24 * HOUR, 1, one_in_two), 0, "today");
    let s = send("+12125550199", "US").ip("192.0.2.1");
    let text = p.explain(&s.attempt(), T0 + 28 * HOUR).explained();
    assert!(
        text.contains(
            "leave more than 0.2 unanswered: ratios x4.00, 5 unanswered sends against a range"
        ),
        "{text}"
    );

    // An app whose users answer nine in ten: the same day is a collapse of
    // its conversion, and an alert stops the new numbers of the ranges
    // that carry it.
    let p = policy(REGION_ALERT_ONLY);
    assert_eq!(
        sign_ups(&p, T0, 0, |i| !i.is_multiple_of(10)),
        0,
        "yesterday"
    );
    assert!(sign_ups(&p, T0 + 24 * HOUR, 1, one_in_two) > 0, "today");

    // A pump is still stopped where people answer one in two: new numbers
    // in one range, one a minute, never confirmed.
    let p = policy(REGION_ALERT_ONLY);
    sign_ups(&p, T0, 0, one_in_two);
    let stop = (0..60).find(|&i| {
        let s = numbered("+1303555", i).ip(&format!("203.0.113.{i}"));
        !p.decide(&s.attempt(), T0 + 24 * HOUR + i * MIN).forwarded()
    });
    assert!(stop.is_some_and(|i| i < 30), "the pump went on: {stop:?}");
}

#[test]
fn a_pump_today_does_not_loosen_its_own_judging() {
    // Yesterday the app's people answered nine codes in ten. Today, beside
    // them, a slow pump forwards an unanswered send every 8 minutes for
    // eight hours (one per area code, under its country's hourly floor):
    // two hours later, three in ten of today's sends are unanswered. The
    // app's share is still read from yesterday, so a pump in one range
    // that starts then is stopped as soon as on a quiet day. (Read from
    // today alone, it is stopped five numbers later.)
    let stop_after = |slow_pump: bool| {
        let p = policy(REGION_ALERT_ONLY);
        let nine_in_ten = |i: u64| !i.is_multiple_of(10);
        sign_ups(&p, T0, 0, nine_in_ten);
        let today = T0 + 24 * HOUR;
        for m in 0..720u64 {
            let at = today + m * MIN;
            if m % 3 == 0 {
                let forwarded = sign_up(&p, at, 1, m / 3, nine_in_ten);
                assert!(forwarded || m >= 600, "a sign-up stopped before the pump");
            }
            if slow_pump && m < 480 && m % 8 == 0 {
                let s = send(&format!("+1{}7{}5{m:04}", 200 + m / 8, m % 10), "US")
                    .ip(&format!("203.0.113.{}", m / 8));
                assert!(p.decide(&s.attempt(), at).forwarded());
            }
            if m >= 600 {
                // The pump in one range, a new number a minute.
                let i = m - 600;
                let s = numbered("+1303555", i).ip(&format!("192.0.2.{i}"));
                if !p.decide(&s.attempt(), at + SEC).forwarded() {
                    return Some(i);
                }
            }
        }
        None
    };
    let quiet = stop_after(false).expect("stopped on a quiet day");
    let pumped = stop_after(true).expect("stopped after a day of pumping");
    assert!(
        pumped <= quiet,
        "the pump loosened the judging: {pumped} vs {quiet}"
    );
}

#[test]
fn where_half_the_people_never_answer_a_busy_address_that_answers_after_ten_unanswered_is_believed()
{
    // Behind a carrier NAT address, ten people in a row never enter their
    // code; the eleventh does, 30 s after it was sent.
    let vouched = |yesterday: fn(u64) -> bool| {
        let p = policy(REGION_ALERT_ONLY);
        sign_ups(&p, T0, 0, yesterday);
        let today = T0 + 24 * HOUR;
        for i in 0..10 {
            let s = numbered("+1917555", i).ip("100.64.9.9");
            assert!(p.decide(&s.attempt(), today + i * MIN).forwarded());
        }
        let s = numbered("+1917555", 100).ip("100.64.9.9");
        let at = today + 20 * MIN;
        assert!(p.decide(&s.attempt(), at).forwarded());
        assert!(p.confirm(&s.to, &s.class, at + 30 * SEC));
        p.explain(&s.attempt(), at + 10 * MIN)
            .explained()
            .contains("vouched for until")
    };
    // Where half the app's people never answer, ten unanswered sends from
    // a busy address are its people's: the confirmation is believed.
    assert!(vouched(|i| !i.is_multiple_of(2)));
    // Where nine in ten answer, the same address is a pumper entering a
    // code of its own: it credits nothing and vouches for nothing.
    assert!(!vouched(|i| !i.is_multiple_of(10)));
}

/// The dispersed tests' policy: only the region's figures and the ranges'
/// own conversion judge.
const DISPERSED_ONLY: &str = "[adaptive]\n[adaptive.surge]\nfloor = 100000\nregion = 0\n[adaptive.distinct]\nclient_ip = []\nuser = []\nregions = 0\n[adaptive.unconfirmed]\nclient_ip = []\nuser = []\nregion = [\"20/1h\"]\ndispersed_ratio = 6\n";

/// Midnight (UTC) starting day `d` after `T0`'s.
fn midnight(d: u64) -> Millis {
    const DAY: Millis = 24 * HOUR;
    T0 - T0 % DAY + (d + 1) * DAY
}

/// Yesterday 200 people signed up, four in five answering; today one signs
/// up every five minutes from 07:00 and answers, and from 08:00 a pump asks
/// for three new numbers a minute, each in its own block of the region's
/// area codes, each from a new address, never answered. Returns how many
/// pump sends went before the first stop, that stop's rule, and its time.
fn pump_over_a_region(p: &Policy) -> (u64, String, Millis) {
    assert_eq!(sign_ups(p, midnight(0) + 8 * HOUR, 0, |i| i % 5 != 0), 0);
    pump_from(p, midnight(1) + 7 * HOUR, 5)
}

/// One person every `every` minutes from `today`, all answering, and from
/// an hour later the pump of [`pump_over_a_region`].
fn pump_from(p: &Policy, today: Millis, every: u64) -> (u64, String, Millis) {
    let mut pumped = 0;
    for m in 0..180u64 {
        let at = today + m * MIN;
        if m % every == 0 {
            sign_up(p, at, 1, m / every, |_| true);
        }
        if m < 60 {
            continue;
        }
        for k in 0..3 {
            let at = at + k * 20 * SEC;
            let d = pump(p, (m - 60) * 3 + k, at);
            if !d.forwarded() {
                return (pumped, rule(&d).to_string(), at);
            }
            pumped += 1;
        }
    }
    panic!("the pump was never stopped");
}

/// The `i`th send of [`pump_over_a_region`]'s pump, at `at`.
fn pump(p: &Policy, i: u64, at: Millis) -> Decision {
    let s = send(&format!("+1{}{}{:04}", 201 + i % 90, 600 + i / 90, i), "US").ip(&format!(
        "198.18.{}.{}",
        i / 250,
        i % 250
    ));
    p.decide(&s.attempt(), at)
}

#[test]
fn a_pump_spread_over_a_region_is_stopped_within_tens_of_its_sends() {
    let p = policy(DISPERSED_ONLY);
    let (forwarded, rule, _) = pump_over_a_region(&p);
    assert_eq!(rule, "adaptive:dispersed:region");
    // The region's floor is twenty unanswered past their five-minute
    // grace: 40 sends at this pace. Judged by the hour's figures alone (six
    // unanswered per confirmation of the last hour, a dozen), the region
    // was not judged pumped before an alert blocked a whole area code.
    assert!(forwarded <= 45, "{forwarded} pump sends forwarded first");
}

#[test]
fn a_sprayer_under_a_region_stop_is_handed_to_its_ranges() {
    let p = policy(DISPERSED_ONLY);
    let (pumped, _, mut at) = pump_over_a_region(&p);
    // A sprayer comes back to one block of an area code whose people
    // answer, a number a minute: each send the
    // region's stop meets counts unanswered in its ranges too, so the
    // block trips on its own figures and its sends no longer reach the
    // region's judgement (which would otherwise hold on them alone).
    let mut rules = Vec::new();
    for i in 0..12u64 {
        at += MIN;
        // The pump goes on.
        for k in 0..3 {
            pump(&p, pumped + 1 + i * 3 + k, at + k * 15 * SEC);
        }
        let s = send(&format!("+1206777{:04}", 100 + i), "US").ip(&format!("198.19.0.{i}"));
        let d = p.decide(&s.attempt(), at);
        assert!(!d.forwarded(), "send {i} forwarded under the stop");
        rules.push(rule(&d).to_string());
    }
    assert_eq!(rules[0], "adaptive:dispersed:region");
    assert!(
        rules[11].contains(":prefix:"),
        "the block's own rule stops the sprayer: {rules:?}"
    );
}

#[test]
fn a_code_answered_too_soon_to_believe_counts_unanswered_at_once() {
    let p = policy(UNCONFIRMED_ONLY);
    // Confirmations flow for the app: one person answers.
    let s = send("+12125550100", "US").ip("192.0.2.1");
    assert!(p.decide(&s.attempt(), T0).forwarded());
    assert!(p.confirm(&s.to, &s.class, T0 + 30 * SEC));
    // A pumper that owns its numbers enters each code a second after its
    // send, a send every half minute into one block; answered (not awaited
    // any more), but not believed.
    let forwarded = forwarded_until_its_block_trips(
        &p,
        40,
        |i| {
            let s = send(&format!("+1206555{i:04}"), "US").ip(&format!("198.51.100.{i}"));
            (s, T0 + MIN + i * 30 * SEC)
        },
        |_| Some(SEC),
    );
    // Each counts unanswered when its answer is not believed: the block
    // trips past its floor of four. Counted only once its five-minute
    // grace ended, 17 went first.
    assert!(forwarded <= 6, "{forwarded} sends forwarded first");
}

#[test]
fn a_pump_at_night_is_weighed_against_the_nights_pace_not_the_days() {
    let p = policy(DISPERSED_ONLY);
    // Yesterday was busy: a new number a minute all day, four in five
    // answered (60 an hour, ten per ten minutes: a pump of 30 in ten
    // minutes is no surge of ten times that).
    for i in 0..1440u64 {
        let at = midnight(0) + i * MIN;
        let s = send(
            &format!("+1{}{}{:04}", 200 + i % 200, 300 + i / 200, i),
            "US",
        )
        .ip(&format!("198.51.{}.{}", i / 250, i % 250));
        assert!(p.decide(&s.attempt(), at).forwarded());
        if i % 5 != 0 {
            assert!(p.confirm(&s.to, &s.class, at + 30 * SEC));
        }
    }
    // Tonight one person every fifteen minutes from 01:00, and the pump
    // from 02:00: against the hour before, four new numbers, it surges.
    let (forwarded, rule, _) = pump_from(&p, midnight(1) + HOUR, 15);
    assert_eq!(rule, "adaptive:dispersed:region", "after {forwarded}");
    // Weighed against the day's average, the region was not judged pumped
    // before an alert blocked a whole area code, 44 sends in.
    assert!(forwarded <= 40, "{forwarded} pump sends forwarded first");
}

#[test]
fn a_send_answered_inside_its_grace_is_subtracted_once() {
    let p = policy(UNCONFIRMED_ONLY);
    confirmations_flow(&p, T0);
    // A block gets a new number a minute; one in three answers its code
    // half a minute later. The rest are pumped.
    let forwarded = forwarded_until_its_block_trips(
        &p,
        60,
        |i| (numbered("+1646555", i), T0 + MIN + i * MIN),
        |i| (i % 3 == 0).then_some(30 * SEC),
    );
    // Two unanswered sends for each answered one outnumber the block's
    // confirmations past its floor of four within 14 sends. Counted twice
    // (among the sends still in their grace, and as confirmed), the codes
    // answered in the last five minutes hid as many unanswered sends, and
    // 21 went first.
    assert!(forwarded <= 16, "{forwarded} sends forwarded first");
    assert!(forwarded >= 8, "{forwarded} sends forwarded first");
}

/// Sends up to `count` new numbers into one block (the `i`th as `at(i)`
/// says) until the block's unconfirmed rule stops one, answering each
/// forwarded send after `answer(i)`, if any: how many went first.
fn forwarded_until_its_block_trips(
    p: &Policy,
    count: u64,
    at: impl Fn(u64) -> (Send, Millis),
    answer: impl Fn(u64) -> Option<Millis>,
) -> u64 {
    let mut forwarded = 0;
    for i in 0..count {
        let (s, at) = at(i);
        let d = p.decide(&s.attempt(), at);
        if !d.forwarded() {
            assert!(
                rule(&d).starts_with("adaptive:unconfirmed:prefix"),
                "{}",
                rule(&d)
            );
            break;
        }
        forwarded += 1;
        if let Some(after) = answer(i) {
            assert!(p.confirm(&s.to, &s.class, at + after));
        }
    }
    forwarded
}

#[test]
fn a_person_who_asks_again_after_a_stop_gets_one_probe_per_half_hour_and_the_stop_holds() {
    let p = policy(DISPERSED_ONLY);
    let (pumped, rule_of_stop, start) = pump_over_a_region(&p);
    assert_eq!(rule_of_stop, "adaptive:dispersed:region");
    let mut next = pumped + 1;
    let mut pumped_until = start;
    // The pump goes on, three numbers a minute, up to `until`: all stopped.
    let mut pump_until = |until: Millis| {
        while pumped_until + 20 * SEC <= until {
            pumped_until += 20 * SEC;
            let d = pump(&p, next, pumped_until);
            assert!(!d.forwarded(), "pump send {next} forwarded under the stop");
            next += 1;
        }
    };
    let minute = |m: u64| start + m * MIN;
    // People whose area codes converted yesterday, asking for a code
    // under the stop.
    let person = send("+13515550123", "US").ip("192.0.2.77");
    let other = send("+13525550124", "US").ip("192.0.2.78");
    let third = send("+13535550125", "US").ip("192.0.2.79");
    let late = send("+13545550126", "US").ip("192.0.2.80");
    let stopped = |s: &Send, at: Millis| {
        let d = p.decide(&s.attempt(), at);
        assert_eq!(rule(&d), "adaptive:dispersed:region", "{:?}", d.verdict);
    };
    // With no code after a minute and a half, the person asks again: the
    // second send goes out, and is answered.
    pump_until(minute(1));
    stopped(&person, minute(1));
    pump_until(minute(1) + 90 * SEC);
    let d = p.decide(&person.attempt(), minute(1) + 90 * SEC);
    assert!(d.forwarded(), "{:?}", d.verdict);
    assert!(p.confirm(&person.to, &person.class, minute(2)));
    // The pump's next numbers are still stopped (the probe was counted
    // once, not as one more new number in a block that had another), and
    // a second person asking again within the half hour waits: the
    // region's probe is taken.
    pump_until(minute(11));
    let d = p.decide(&other.attempt(), minute(11));
    assert_eq!(rule(&d), "adaptive:dispersed:region");
    assert!(
        detail_of(&d).contains(", 0 of "),
        "no new number went to a block that had another: {}",
        detail_of(&d)
    );
    pump_until(minute(12));
    stopped(&other, minute(12));
    // Half an hour after the first probe a third person's retry goes; one
    // asking again past the grace (five minutes) is a new request.
    pump_until(minute(36));
    stopped(&third, minute(36));
    stopped(&late, minute(36));
    pump_until(minute(37));
    assert!(p.decide(&third.attempt(), minute(37)).forwarded());
    pump_until(minute(42));
    stopped(&late, minute(42));
}

/// The hour before `until`, a new number a minute over area codes 201-210,
/// a new exchange each time, each from its own address, never answered.
fn pump_over_ten_area_codes(p: &Policy, until: Millis) {
    for i in 0..60u64 {
        let s = send(&format!("+1{}{}{:04}", 201 + i % 10, 300 + i, i), "US")
            .ip(&format!("198.51.100.{i}"));
        p.decide(&s.attempt(), until - HOUR + i * MIN);
    }
}

#[test]
fn a_person_who_asks_again_in_a_range_an_alert_blocked_gets_its_one_probe() {
    let p = policy(&format!("{UNCONFIRMED_ONLY}dispersed_ratio = 0\n"));
    confirmations_flow(&p, T0);
    // A pump over ten area codes, a new exchange each time, never
    // answered: the region goes under alert.
    let start = T0 + 2 * HOUR;
    pump_over_ten_area_codes(&p, start);
    // Area code 206 carries the pump's unanswered sends: under the
    // region's alert it is blocked for new numbers.
    let person = send("+12065550999", "US").ip("192.0.2.77");
    let d = p.decide(&person.attempt(), start + MIN);
    assert!(rule(&d).starts_with("adaptive:alert:"), "{:?}", d.verdict);
    assert_eq!(detail_of(&d), "prefix:4=+1206", "{:?}", d.verdict);
    // Asked again a minute later: the block passes it over, and so does
    // the range's judgement (one probe per range, the same send).
    let explained = p
        .explain_live(&person.attempt(), start + 2 * MIN)
        .explained();
    assert!(
        explained
            .contains("asked again 1m after it was stopped: forwarded as prefix:4=+1206's probe"),
        "{explained}"
    );
    let d = p.decide(&person.attempt(), start + 2 * MIN);
    assert!(d.forwarded(), "{:?}", d.verdict);
    // Another number in the range asking again within the half hour waits.
    let other = send("+12065550998", "US").ip("192.0.2.78");
    assert!(!p.decide(&other.attempt(), start + 3 * MIN).forwarded());
    assert!(!p.decide(&other.attempt(), start + 4 * MIN).forwarded());
}

#[test]
fn a_surge_block_passes_a_code_asked_for_again_while_its_first_send_is_awaited() {
    let p = policy("[adaptive]\n[adaptive.distinct]\nclient_ip = []\nuser = []\nregions = 0\n");
    // A campaign in a quiet exchange: its fourth new number in ten
    // minutes blocks the exchange before anyone could answer.
    let person = |i: u64| numbered("+1416924", i).ip(&format!("203.0.113.{i}"));
    for i in 0..3 {
        assert!(p.decide(&person(i).attempt(), T0 + i * SEC).forwarded());
    }
    let d = p.decide(&person(3).attempt(), T0 + 3 * SEC);
    assert_eq!(rule(&d), "adaptive:surge:prefix:7");
    // The first two ask again two minutes later: their codes, sent before
    // the block, are awaited, so the resends go. The one the block
    // stopped gets no probe from a surge block, and one asking again past
    // the grace is a new request.
    let at = T0 + 2 * MIN;
    for i in 0..2 {
        let d = p.decide(&person(i).attempt(), at);
        assert!(d.forwarded(), "resend {i}: {:?}", d.verdict);
    }
    assert_eq!(
        rule(&p.decide(&person(3).attempt(), at)),
        "adaptive:surge:prefix:7"
    );
    assert_eq!(
        rule(&p.decide(&person(2).attempt(), T0 + 6 * MIN)),
        "adaptive:surge:prefix:7"
    );
    // Both answer: half the surge's new numbers proved receipt, the block
    // lifts, and the campaign's next person gets a code.
    for i in 0..2 {
        assert!(p.confirm(&person(i).to, &person(i).class, T0 + 7 * MIN));
    }
    assert!(p.decide(&person(4).attempt(), T0 + 8 * MIN).forwarded());
}

#[test]
fn under_an_alert_a_range_whose_people_confirm_now_is_blocked_only_on_an_unlikely_excess() {
    let p = policy(&format!("{UNCONFIRMED_ONLY}dispersed_ratio = 0\n"));
    // Yesterday 200 people signed up, four in five answering; those of
    // area code 416 all answered.
    assert_eq!(sign_ups(&p, midnight(0) + 8 * HOUR, 0, |i| i % 5 != 0), 0);
    for i in 0..10u64 {
        let s = send(&format!("+1416{}0000", 200 + i), "US").ip(&format!("192.0.2.{i}"));
        let at = midnight(0) + 12 * HOUR + i * MIN;
        assert!(p.decide(&s.attempt(), at).forwarded());
        assert!(p.confirm(&s.to, &s.class, at + 30 * SEC));
    }
    // Today a pump over ten other area codes puts the region under alert.
    let start = midnight(1) + 8 * HOUR;
    pump_over_ten_area_codes(&p, start);
    // A campaign in exchanges 290-294 of the area code: two of its five
    // people answer.
    let person =
        |k: u64| send(&format!("+1416{}0000", 290 + k), "US").ip(&format!("203.0.113.{k}"));
    for k in 0..5 {
        let s = person(k);
        let d = p.decide(&s.attempt(), start + k * MIN);
        assert!(d.forwarded(), "person {k}: {:?}", d.verdict);
        if k < 2 {
            assert!(p.confirm(&s.to, &s.class, start + k * MIN + 40 * SEC));
        }
    }
    // Past their grace: three unanswered beside two answered this hour is
    // a campaign's bad luck one time in seventeen, not an excess.
    let d = p.decide(&person(5).attempt(), start + 12 * MIN);
    assert!(d.forwarded(), "{:?}", d.verdict);
    // Four more left unanswered (seven beside two: one time in three
    // thousand) are an excess: the range is blocked.
    for k in 6..9 {
        assert!(p
            .decide(&person(k).attempt(), start + 13 * MIN + k * SEC)
            .forwarded());
    }
    let d = p.decide(&person(9).attempt(), start + 20 * MIN);
    assert_eq!(rule(&d), "adaptive:alert:prefix:6", "{:?}", d.verdict);
    assert!(
        detail_of(&d).starts_with("prefix:6=+141629: 7 unconfirmed and 2 confirmed sends in 1h"),
        "{}",
        detail_of(&d)
    );
}

#[test]
fn old_evidence_under_an_excess_only_the_days_figures_show_stops_nobody() {
    let p = policy(&format!("{UNCONFIRMED_ONLY}dispersed_ratio = 0\n"));
    // Yesterday 60 people signed up, four in five answering.
    for i in 0..60u64 {
        assert!(sign_up(&p, midnight(0) + 8 * HOUR + i * MIN, 0, i, |i| i
            % 5
            != 0));
    }
    // Today a slow pump, ten numbers an hour from midnight (never past
    // the hour's floor), two to each of 60 ranges (+1 2xx 7) six hours
    // apart, never answered: the region's day passes its floor of 100.
    for i in 0..120u64 {
        let s = send(&format!("+1{}7{}{:05}", 201 + i % 60, i / 60, i), "US").ip(&format!(
            "198.51.{}.{}",
            i / 250,
            i % 250
        ));
        p.decide(&s.attempt(), midnight(1) + i * 6 * MIN);
    }
    let start = midnight(1) + 9 * HOUR;
    // Two hours after it ended only the region's day still shows it. A
    // new number in a range the pump left two old unanswered sends goes.
    let now = start + 5 * HOUR;
    let person = send("+12057500000", "US").ip("192.0.2.50");
    let explained = p.explain_live(&person.attempt(), now).explained();
    assert!(
        explained.contains("in 1d > max(")
            && explained.contains(
                "prefix:5=+12057: 0 unconfirmed and 0 confirmed sends in 1h, 2 and 0 in 1d, none this hour: old evidence under the day's excess only"
            ),
        "{explained}"
    );
    assert!(p.decide(&person.attempt(), now).forwarded());
}
