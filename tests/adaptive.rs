//! Catching what limits miss, through the real HTTP path: conversion seen on
//! the wire (Verify checks answered `approved`, Messaging Feedback
//! `confirmed`, the admin API) and the adaptive stage acting on it.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use http::{Method, Request, StatusCode};
use http_body_util::Full;

const SERVICE: &str = "VA0123456789abcdef0123456789abcdef";
/// Geo, an open admin listener on loopback, and the adaptive stage with
/// only the signal a test is about switched on where it matters. The
/// tests' people confirm at once: every confirmation is believed.
const POLICY: &str = "[geo]\nallow = [\"US\", \"CA\", \"GB\", \"IE\"]\n[admin]\naddr = \"127.0.0.1:0\"\ntoken_env = \"SMSGUARD_TEST_UNSET_ADAPTIVE_TOKEN\"\n[adaptive]\nmin_confirm_delay = \"0s\"\n[adaptive.surge]\nfloor = 100000\nregion = 0\n[adaptive.distinct]\nclient_ip = []\nuser = []\nregions = 0\n[adaptive.unconfirmed]\nclient_ip = []\nuser = []\n";

async fn admin(env: &Env, method: Method, path: &str, body: &str) -> Answer {
    let url = format!("http://{}{}", env.guard.admin_addr().unwrap(), path);
    let mut b = Request::builder().method(method).uri(url);
    if !body.is_empty() {
        b = b.header("content-type", "application/json");
    }
    env.request(b.body(Full::new(Bytes::from(body.to_string()))).unwrap())
        .await
}

/// The app's own confirmation on the admin API.
async fn confirm(env: &Env, body: &str) -> Answer {
    admin(env, Method::POST, "/api/confirm", body).await
}

/// `smsguard_confirmations_total{via=..,matched=..}` as scraped.
async fn confirmations(env: &Env, via: &str, matched: &str) -> u64 {
    let text = admin(env, Method::GET, "/metrics", "").await.text();
    let want = format!("smsguard_confirmations_total{{via=\"{via}\",matched=\"{matched}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&want))
        .map_or(0, |v| v.trim().parse().unwrap())
}

#[tokio::test]
async fn an_approved_verification_check_is_counted_and_forwarded_unchanged() {
    let env = start(POLICY).await;
    let create = format!("/v2/Services/{SERVICE}/Verifications");
    let check = format!("/v2/Services/{SERVICE}/VerificationCheck");
    let r = env
        .post_form(&create, "To=%2B14155550123&Channel=sms")
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    let r = env.post_form(&check, "To=%2B14155550123&Code=123456").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        r.json()["status"],
        "approved",
        "Twilio's answer passes as is"
    );
    let seen = env.fake.requests();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[1].uri.path(), check);
    assert_eq!(seen[1].body, "To=%2B14155550123&Code=123456".as_bytes());
    assert_eq!(confirmations(&env, "verify", "yes").await, 1);

    // A check that names only the verification's sid: the guard remembers
    // which number Twilio's sid belongs to.
    let v = env
        .post_form(&create, "To=%2B14155550124&Channel=sms")
        .await
        .json();
    let sid = v["sid"].as_str().unwrap();
    let r = env
        .post_form(&check, &format!("VerificationSid={sid}&Code=123456"))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(confirmations(&env, "verify", "yes").await, 2);

    // The same code checked again confirms nothing more.
    env.post_form(&check, "To=%2B14155550123&Code=123456").await;
    assert_eq!(confirmations(&env, "verify", "yes").await, 2);
    assert_eq!(confirmations(&env, "verify", "no").await, 1);
}

#[tokio::test]
async fn feedback_confirmed_is_counted_and_forwarded_and_feedback_on_a_fake_stays_here() {
    let env = start(POLICY).await;
    let sent = env.send("+14155550123").await;
    assert_eq!(sent.status, StatusCode::CREATED);
    let sid = sent.json()["sid"].as_str().unwrap().to_string();
    let path = format!("/2010-04-01/Accounts/{ACCOUNT}/Messages/{sid}/Feedback.json");
    let r = env.post_form(&path, "Outcome=confirmed").await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    assert_eq!(r.json()["outcome"], "confirmed");
    let seen = env.fake.requests();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[1].uri.path(), path);
    assert_eq!(seen[1].body, "Outcome=confirmed".as_bytes());
    assert_eq!(confirmations(&env, "feedback", "yes").await, 1);

    // `unconfirmed` is forwarded and confirms nothing.
    let other = env.send("+14155550124").await.json();
    let path2 = format!(
        "/2010-04-01/Accounts/{ACCOUNT}/Messages/{}/Feedback.json",
        other["sid"].as_str().unwrap()
    );
    assert_eq!(
        env.post_form(&path2, "Outcome=unconfirmed").await.status,
        StatusCode::CREATED
    );
    assert_eq!(env.fake.count(), 4);
    assert_eq!(confirmations(&env, "feedback", "yes").await, 1);

    // Feedback on a message the guard shadowed: Twilio would answer 404 for
    // a sid it never made, so the guard answers as Twilio does for a real one.
    let fake = env.send("+998993941234").await.json();
    let fake_sid = fake["sid"].as_str().unwrap();
    let path3 = format!("/2010-04-01/Accounts/{ACCOUNT}/Messages/{fake_sid}/Feedback.json");
    let r = env.post_form(&path3, "Outcome=confirmed").await;
    assert_eq!(r.status, StatusCode::CREATED);
    let j = r.json();
    assert_eq!(
        (j["message_sid"].as_str(), j["outcome"].as_str()),
        (Some(fake_sid), Some("confirmed"))
    );
    let mut keys: Vec<String> = j.as_object().unwrap().keys().cloned().collect();
    keys.sort();
    let mut want = schema_properties(
        "api_v2010.json",
        "api.v2010.account.message.message_feedback",
    );
    want.sort();
    assert_eq!(keys, want);
    assert_eq!(env.fake.count(), 4, "nothing about the fake reached Twilio");
    assert_eq!(confirmations(&env, "feedback", "yes").await, 1);
}

#[tokio::test]
async fn the_app_can_confirm_on_the_admin_api() {
    let env = start(POLICY).await;
    assert_eq!(env.send("+14155550123").await.status, StatusCode::CREATED);
    let r = confirm(&env, r#"{"to": "+1 (415) 555-0123"}"#).await;
    assert_eq!(
        (r.status, r.json()["confirmed"].as_bool()),
        (StatusCode::OK, Some(true))
    );
    // Confirmed once; and a number never sent to has nothing to confirm.
    let r = confirm(&env, r#"{"to": "+14155550123"}"#).await;
    assert_eq!(r.json()["confirmed"], false);
    let r = confirm(&env, r#"{"to": "+14155550199"}"#).await;
    assert_eq!(r.json()["confirmed"], false);
    let r = confirm(&env, r#"{"to": "not a number"}"#).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(confirmations(&env, "api", "yes").await, 1);
}

#[tokio::test]
async fn a_prefix_with_no_confirmations_is_blocked_and_a_converting_prefix_is_not() {
    let env = start(POLICY).await;
    let step = Duration::from_secs(60);
    let mut stopped: Option<(usize, String)> = None;
    let mut converting_stopped = 0;
    for i in 0..40u32 {
        // A person who gets their code and enters it on Twilio's Verify...
        let to = format!("+1212555{i:04}");
        let r = env
            .post_form(
                &format!("/v2/Services/{SERVICE}/Verifications"),
                &format!("To={}&Channel=sms", to.replace('+', "%2B")),
            )
            .await;
        if env
            .fake
            .requests()
            .last()
            .unwrap()
            .uri
            .path()
            .ends_with("Verifications")
        {
            env.post_form(
                &format!("/v2/Services/{SERVICE}/VerificationCheck"),
                &format!("To={}&Code=123456", to.replace('+', "%2B")),
            )
            .await;
        } else {
            converting_stopped += 1;
        }
        assert_eq!(r.status, StatusCode::CREATED);
        // ...and a pumped range whose codes nobody ever enters.
        let before = env.fake.count();
        let r = env
            .post_form(
                &format!("/v2/Services/{SERVICE}/Verifications"),
                &format!("To=%2B1646555{i:04}&Channel=sms"),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "a fake answers like Twilio");
        if env.fake.count() == before && stopped.is_none() {
            let decisions = admin(&env, Method::GET, "/api/decisions?limit=1", "")
                .await
                .json();
            let rule = decisions["decisions"][0]["rule"]
                .as_str()
                .unwrap_or("")
                .to_string();
            stopped = Some((i as usize, rule));
        }
        env.clock.advance(step);
    }
    assert_eq!(
        converting_stopped, 0,
        "a converting prefix is never stopped"
    );
    let (at, rule) = stopped.expect("the pumped prefix is stopped");
    assert!(
        at >= 8,
        "judged only after the minimum sample past its grace, stopped at {at}"
    );
    // The block (prefix:7) and the range above it hold the same sends: the
    // broadest key that tripped names the verdict, and both are blocked.
    assert!(rule.starts_with("adaptive:unconfirmed:prefix:"), "{rule}");
    let blocks = admin(&env, Method::GET, "/api/blocks", "").await.text();
    assert!(blocks.contains("=+164655"), "{blocks}");
    assert!(!blocks.contains("+1212"), "{blocks}");
}

/// Sends a message to `to` from `ip`; whether it reached Twilio.
async fn forwarded(env: &Env, to: &str, ip: &str) -> bool {
    let before = env.fake.count();
    let r = env.send_from_ip(to, ip).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    env.fake.count() > before
}

#[tokio::test]
async fn a_new_prefix_inherits_its_parents_baseline() {
    // Judged: the region and the first digit after the country code, with a
    // floor of 2 unconfirmed sends a day.
    let policy = POLICY
        .replace("[adaptive]\n", "[adaptive]\nprefixes = [1]\nblock_digits = 0\n")
        .replace(
            "[adaptive.unconfirmed]\n",
            "[adaptive.unconfirmed]\nmin_sample = 1\nprefix = [\"2/1d\"]\nregion = [\"100000/1d\"]\n",
        );
    let busy = start(&policy).await;
    let quiet = start(&policy).await;
    // The busy region's people confirm 300 codes under +12...; the quiet
    // one has a single confirmed send, so that conversion is judged at all.
    for i in 0..300 {
        let to = format!("+1201555{i:04}");
        assert!(forwarded(&busy, &to, "198.51.100.7").await);
        let r = admin(
            &busy,
            Method::POST,
            "/api/confirm",
            &format!(r#"{{"to": "{to}"}}"#),
        )
        .await;
        assert_eq!(r.json()["confirmed"], true);
        busy.clock.advance(Duration::from_secs(1));
    }
    assert!(forwarded(&quiet, "+12015550000", "198.51.100.7").await);
    admin(
        &quiet,
        Method::POST,
        "/api/confirm",
        r#"{"to": "+12015550000"}"#,
    )
    .await;
    // A prefix neither has seen (+13...): never-confirmed sends, ten minutes
    // apart. The busy region lends it a tenth of its baseline (30), the
    // quiet one nothing, so only the floor of 2 holds there.
    let mut stopped = [0, 0];
    for i in 0..12 {
        for (n, env) in [&busy, &quiet].into_iter().enumerate() {
            env.clock.advance(Duration::from_secs(600));
            if !forwarded(env, &format!("+1303555{i:04}"), "198.51.100.7").await {
                stopped[n] += 1;
            }
        }
    }
    assert_eq!(
        stopped[0], 0,
        "the busy region's new prefix is judged against its baseline"
    );
    assert!(
        stopped[1] >= 5,
        "the quiet region's new prefix trips its floor: {stopped:?}"
    );
}

#[tokio::test]
async fn a_surge_of_new_numbers_in_one_block_is_stopped_across_many_addresses() {
    let policy = POLICY.replace("floor = 100000\n", "floor = 3\n");
    let env = start(&policy).await;
    let mut through = 0;
    for i in 0..30 {
        // Thirty addresses, thirty numbers in one block, within a minute.
        if forwarded(&env, &format!("+1646555{i:04}"), &format!("203.0.113.{i}")).await {
            through += 1;
        }
        env.clock.advance(Duration::from_secs(2));
    }
    assert_eq!(
        through, 3,
        "the fourth new number in the block trips the surge"
    );
    let r = admin(&env, Method::GET, "/api/decisions?limit=1", "")
        .await
        .json();
    assert_eq!(r["decisions"][0]["rule"], "adaptive:surge:prefix:7");
    // Numbers in other blocks are not affected.
    assert!(forwarded(&env, "+12125550123", "203.0.113.99").await);
}

#[tokio::test]
async fn a_surge_block_lifts_when_half_its_new_numbers_confirm() {
    let policy = POLICY.replace("floor = 100000\n", "floor = 3\n");
    let env = start(&policy).await;
    // A campaign in one block: the fourth new number trips the surge.
    for i in 0..3 {
        let to = format!("+1646555{i:04}");
        assert!(
            forwarded(&env, &to, &format!("203.0.113.{i}")).await,
            "{to}"
        );
    }
    assert!(!forwarded(&env, "+16465550003", "203.0.113.3").await);
    assert_eq!(last_rule(&env).await, "adaptive:surge:prefix:7");
    // One confirmation is not enough to lift it...
    env.clock.advance(Duration::from_secs(40));
    let r = confirm(&env, r#"{"to": "+16465550000"}"#).await;
    assert_eq!(r.json()["confirmed"], true);
    assert!(!forwarded(&env, "+16465550004", "203.0.113.4").await);
    let blocks = admin(&env, Method::GET, "/api/blocks", "").await.text();
    assert!(blocks.contains("+1646555"), "{blocks}");
    // ...two of its three new numbers proving receipt are: its people
    // get their codes again.
    let r = confirm(&env, r#"{"to": "+16465550001"}"#).await;
    assert_eq!(r.json()["confirmed"], true);
    let blocks = admin(&env, Method::GET, "/api/blocks", "").await.text();
    assert!(!blocks.contains("+1646555"), "{blocks}");
    assert!(forwarded(&env, "+16465550005", "203.0.113.5").await);
}

#[tokio::test]
async fn one_address_texting_many_numbers_is_stopped() {
    let policy = POLICY.replace(
        "[adaptive.distinct]\nclient_ip = []\n",
        "[adaptive.distinct]\nclient_ip = [\"6/1h\"]\n",
    );
    let env = start(&policy).await;
    let mut through = 0;
    let areas = [
        201, 212, 213, 305, 312, 404, 415, 503, 512, 617, 646, 702, 713, 718, 773, 818, 917, 919,
        972, 206,
    ];
    for (i, area) in areas.iter().enumerate() {
        // Scattered numbers: a different area code each time.
        if forwarded(&env, &format!("+1{area}555{i:04}"), "198.51.100.9").await {
            through += 1;
        }
        env.clock.advance(Duration::from_secs(60));
    }
    assert_eq!(through, 6);
    let r = admin(&env, Method::GET, "/api/decisions?limit=1", "")
        .await
        .json();
    let rule = r["decisions"][0]["rule"].as_str().unwrap().to_string();
    assert_eq!(rule, "adaptive:distinct:client_ip");
    // Another address is not.
    assert!(forwarded(&env, "+12125550123", "198.51.100.10").await);
}

/// The rule of the latest decision, as `/api/decisions` lists it.
async fn last_rule(env: &Env) -> String {
    let r = admin(env, Method::GET, "/api/decisions?limit=1", "")
        .await
        .json();
    r["decisions"][0]["rule"].as_str().unwrap_or("").to_string()
}

/// Sends to `to`, and confirms it `after` later on the admin API.
async fn sent_and_confirmed(env: &Env, to: &str, after: Duration) {
    assert!(forwarded(env, to, "198.51.100.20").await);
    env.clock.advance(after);
    let r = confirm(env, &format!(r#"{{"to": "{to}"}}"#)).await;
    assert_eq!(r.json()["confirmed"], true);
}

/// A day of the app's own traffic before the test: 60 people in the UK
/// who enter their codes, each from their own address, two hours ago. An
/// alert judges a broad key's conversion only once it knows what the
/// app's real users answer; these answer all of theirs.
async fn an_app_whose_people_answer(env: &Env) {
    for i in 0..60u32 {
        let to = format!("+44740012{i:04}");
        assert!(forwarded(env, &to, &format!("100.64.0.{i}")).await, "{to}");
        env.clock.advance(Duration::from_secs(20));
        let r = confirm(env, &format!(r#"{{"to": "{to}"}}"#)).await;
        assert_eq!(r.json()["confirmed"], true);
    }
    env.clock.advance(Duration::from_secs(2 * 3600));
}

/// `smsguard_vouched_sends_total` as scraped.
async fn vouched_sends(env: &Env) -> u64 {
    let text = admin(env, Method::GET, "/metrics", "").await.text();
    text.lines()
        .find_map(|l| l.strip_prefix("smsguard_vouched_sends_total "))
        .map_or(0, |v| v.trim().parse().unwrap())
}

#[tokio::test]
async fn a_returning_user_who_proved_receipt_passes_an_adaptive_block_and_a_bot_that_confirmed_in_a_second_does_not(
) {
    // Confirmations sooner than 5 s after their send are not believed.
    let policy = POLICY.replace("min_confirm_delay = \"0s\"", "min_confirm_delay = \"5s\"");
    let env = start(&policy).await;
    // Two numbers in the block +1212555…: a person who enters the code
    // after 20 s, and a bot that enters it after 1 s.
    sent_and_confirmed(&env, "+12125550100", Duration::from_secs(20)).await;
    sent_and_confirmed(&env, "+12125550101", Duration::from_secs(1)).await;
    // Then the block is pumped: never-confirmed numbers a minute apart,
    // until the adaptive stage blocks it.
    let mut blocked = false;
    for i in 0..30 {
        env.clock.advance(Duration::from_secs(60));
        if !forwarded(&env, &format!("+1212555{:04}", 1_000 + i), "203.0.113.7").await {
            blocked = true;
            break;
        }
    }
    assert!(blocked, "the pumped block is stopped");
    assert!(last_rule(&env)
        .await
        .starts_with("adaptive:unconfirmed:prefix:"));
    assert!(!forwarded(&env, "+12125559999", "203.0.113.8").await);
    let before = vouched_sends(&env).await;
    // The person comes back the next hour: vouched, the block passes them.
    env.clock.advance(Duration::from_secs(3_600));
    assert!(forwarded(&env, "+12125550100", "198.51.100.20").await);
    assert_eq!(vouched_sends(&env).await, before + 1);
    // The bot's number proved nothing: the block holds for it.
    assert!(!forwarded(&env, "+12125550101", "198.51.100.20").await);
    assert_eq!(vouched_sends(&env).await, before + 1);
}

#[tokio::test]
async fn a_countrys_excess_puts_it_under_alert_and_blocks_the_range_that_carries_it_never_the_country(
) {
    let env = start(&region_only()).await;
    an_app_whose_people_answer(&env).await;
    // People in +1212555… confirm their codes: that range converts.
    for i in 0..5 {
        sent_and_confirmed(&env, &format!("+1212555{i:04}"), Duration::from_secs(20)).await;
    }
    // A pump over +1303…, a range nobody here ever confirmed, one number
    // a minute from many addresses.
    let mut first_stop = None;
    for i in 0..30u32 {
        env.clock.advance(Duration::from_secs(60));
        let to = format!("+1303555{i:04}");
        if !forwarded(&env, &to, &format!("203.0.113.{i}")).await && first_stop.is_none() {
            first_stop = Some(i);
        }
    }
    let at = first_stop.expect("the pump is stopped");
    // Six unconfirmed sends past a grace of 5 minutes (the grace's clock
    // is kept in buckets, so a minute or two either way).
    assert!(
        (8..=15).contains(&at),
        "after the region's floor past the grace: {at}"
    );
    let rule = last_rule(&env).await;
    assert!(rule.starts_with("adaptive:alert:prefix:"), "{rule}");
    let blocks = admin(&env, Method::GET, "/api/blocks", "").await.text();
    assert!(blocks.contains("=+1303"), "{blocks}");
    assert!(
        !blocks.contains("region"),
        "a country is never blocked: {blocks}"
    );
    // Under the alert, a new number in the converting range still goes...
    assert!(forwarded(&env, "+12125550777", "198.51.100.30").await);
    // ...and so does a second code to a number the pump reached before the
    // block: an alert's block stops new numbers only.
    assert!(forwarded(&env, "+13035550000", "203.0.113.0").await);
    // A new number in the pumped range does not.
    assert!(!forwarded(&env, "+13035559998", "198.51.100.31").await);
    // Unless the address asking proves receipt: the five people above
    // entered their codes from it (a carrier's NAT, an office).
    assert!(forwarded(&env, "+13035559997", "198.51.100.20").await);
}

/// Only the region's conversion is judged, with a floor of 5 unconfirmed
/// sends an hour; ranges have no floors of their own, and a product's
/// sends to the region are not judged as a whole (`dispersed_ratio`), so
/// what is seen is how an alert judges each range.
fn region_only() -> String {
    POLICY.replace(
        "[adaptive.unconfirmed]\n",
        "[adaptive.unconfirmed]\nregion = [\"5/1h\"]\nprefix = []\ndispersed_ratio = 0\n",
    )
}

/// Raises an alert on the US: a pump over +1303…, one new number a minute
/// from many addresses, until it is stopped.
async fn pump_until_alert(env: &Env) {
    pump_until_alert_in(env, "+1303555").await;
}

/// Raises an alert on the US by pumping new numbers in `range` (a number
/// but its last four digits), one a minute, until one is stopped.
async fn pump_until_alert_in(env: &Env, range: &str) {
    for i in 0..40u32 {
        env.clock.advance(Duration::from_secs(60));
        let to = format!("{range}{i:04}");
        if !forwarded(env, &to, &format!("203.0.113.{i}")).await {
            return;
        }
    }
    panic!("the pump was never stopped");
}

#[tokio::test]
async fn under_alert_a_range_with_confirmed_history_is_blocked_only_when_its_unanswered_sends_outnumber_it(
) {
    let env = start(&region_only()).await;
    an_app_whose_people_answer(&env).await;
    // Five people in +1212555… confirmed their codes, two hours ago.
    for i in 0..5 {
        sent_and_confirmed(&env, &format!("+1212555{i:04}"), Duration::from_secs(20)).await;
    }
    env.clock.advance(Duration::from_secs(2 * 3600));
    pump_until_alert(&env).await;
    // Under the alert, three new numbers there go unanswered...
    for i in 0..3 {
        let to = format!("+1212555{:04}", 100 + i);
        assert!(forwarded(&env, &to, &format!("192.0.2.{i}")).await, "{to}");
    }
    env.clock.advance(Duration::from_secs(7 * 60));
    // ...which its five confirmations outweigh: the next still goes.
    assert!(forwarded(&env, "+12125550200", "192.0.2.10").await);
    // Three more unanswered (seven in all, against five confirmed): the
    // range now carries the excess, and its next new number is stopped.
    for i in 0..3 {
        let to = format!("+1212555{:04}", 300 + i);
        assert!(
            forwarded(&env, &to, &format!("192.0.2.{}", 20 + i)).await,
            "{to}"
        );
    }
    env.clock.advance(Duration::from_secs(7 * 60));
    assert!(!forwarded(&env, "+12125550400", "192.0.2.30").await);
    let rule = last_rule(&env).await;
    assert!(rule.starts_with("adaptive:alert:prefix:"), "{rule}");
}

#[tokio::test]
async fn under_alert_old_unanswered_sends_do_not_block_a_range_where_people_confirm_now() {
    let env = start(&region_only()).await;
    an_app_whose_people_answer(&env).await;
    // San Francisco converts; two codes to +1415555… and two to +1415444…
    // went unanswered.
    for i in 0..5 {
        sent_and_confirmed(&env, &format!("+1415777{i:04}"), Duration::from_secs(20)).await;
    }
    for (i, to) in [
        "+14155550001",
        "+14155550002",
        "+14154440001",
        "+14154440002",
    ]
    .iter()
    .enumerate()
    {
        assert!(forwarded(&env, to, &format!("192.0.2.{i}")).await, "{to}");
    }
    env.clock.advance(Duration::from_secs(2 * 3600));
    pump_until_alert(&env).await;
    // Under the alert, a new number in +1415444… is stopped while nobody
    // around it confirms this hour: its two unanswered codes are all the
    // evidence there is.
    assert!(!forwarded(&env, "+14154440003", "192.0.2.3").await);
    // Old evidence stops the send, not the range: its next new number is
    // judged again.
    let blocks = admin(&env, Method::GET, "/api/blocks", "").await.text();
    assert!(!blocks.contains("+1415444"), "{blocks}");
    // People in +1415… confirm codes now.
    for i in 0..5 {
        let to = format!("+1415778{i:04}");
        env.clock.advance(Duration::from_secs(60));
        assert!(
            forwarded(&env, &to, &format!("192.0.2.{}", 40 + i)).await,
            "{to}"
        );
        env.clock.advance(Duration::from_secs(20));
        let r = confirm(&env, &format!(r#"{{"to": "{to}"}}"#)).await;
        assert_eq!(r.json()["confirmed"], true);
    }
    env.clock.advance(Duration::from_secs(6 * 60));
    // The old unanswered codes are old news where people confirm now.
    assert!(forwarded(&env, "+14155550004", "192.0.2.4").await);
    assert!(forwarded(&env, "+14154440004", "192.0.2.6").await);
    // A range the pump reaches now is still stopped.
    assert!(!forwarded(&env, "+13035559990", "192.0.2.5").await);
}

#[tokio::test]
async fn under_alert_one_unanswered_send_this_hour_blocks_a_range_and_a_range_blocked_today_again()
{
    let env = start(&region_only()).await;
    an_app_whose_people_answer(&env).await;
    // Five people in +17205… confirmed their codes, two hours ago: the
    // area converts, so a new range there is not blocked on sight.
    for i in 0..5 {
        sent_and_confirmed(&env, &format!("+1720544{i:04}"), Duration::from_secs(20)).await;
    }
    env.clock.advance(Duration::from_secs(2 * 3600));
    pump_until_alert(&env).await;
    // A sprayer's first number in +1720555… goes: nothing is known of it.
    assert!(forwarded(&env, "+17205550001", "192.0.2.1").await);
    env.clock.advance(Duration::from_secs(7 * 60));
    // Its code went unanswered, this hour, in a range that never
    // confirmed, and nobody around it confirms now: the next new number
    // there is stopped and the range blocked (one unanswered send is
    // enough under an alert; without one, two were needed).
    assert!(!forwarded(&env, "+17205550002", "192.0.2.2").await);
    let rule = last_rule(&env).await;
    assert!(rule.starts_with("adaptive:alert:prefix:"), "{rule}");
    let blocks = admin(&env, Method::GET, "/api/blocks", "").await.text();
    assert!(blocks.contains("prefix:7=+1720555"), "{blocks}");

    // Two hours on, the block (15 minutes) has lifted and the unanswered
    // send is out of the hour. Under a new alert, the range's next new
    // number is stopped again: it was blocked today and still never
    // confirmed, so the excess persists.
    env.clock.advance(Duration::from_secs(2 * 3600));
    pump_until_alert_in(&env, "+1303556").await;
    assert!(!forwarded(&env, "+17205550003", "192.0.2.3").await);
    let blocks = admin(&env, Method::GET, "/api/blocks", "").await.json();
    let entry = blocks["blocks"]
        .as_array()
        .expect("blocks")
        .iter()
        .find(|b| b["key"] == "prefix:7=+1720555")
        .cloned()
        .unwrap_or_else(|| panic!("the range is blocked again: {blocks}"));
    assert_eq!(entry["offence"], 2, "{entry}");

    // Where people around it confirm this hour, one unanswered send is
    // anyone's bad luck: a range with one is not blocked.
    for i in 0..5 {
        sent_and_confirmed(&env, &format!("+1720545{i:04}"), Duration::from_secs(20)).await;
    }
    assert!(forwarded(&env, "+17205770001", "192.0.2.4").await);
    env.clock.advance(Duration::from_secs(7 * 60));
    pump_until_alert_in(&env, "+1303557").await;
    assert!(forwarded(&env, "+17205770002", "192.0.2.5").await);
}

#[tokio::test]
async fn under_alert_a_converting_range_blocked_today_is_blocked_again_while_its_day_stays_unanswered(
) {
    let env = start(&region_only()).await;
    an_app_whose_people_answer(&env).await;
    // One person in +1720588… confirmed a code.
    sent_and_confirmed(&env, "+17205880100", Duration::from_secs(20)).await;
    env.clock.advance(Duration::from_secs(2 * 3600));
    pump_until_alert(&env).await;
    // Under the alert, two new numbers there go out (one confirmation
    // outweighs fewer than two unanswered sends this hour) and go
    // unanswered; the third is stopped and the range blocked.
    assert!(forwarded(&env, "+17205880001", "192.0.2.1").await);
    assert!(forwarded(&env, "+17205880002", "192.0.2.2").await);
    env.clock.advance(Duration::from_secs(7 * 60));
    assert!(!forwarded(&env, "+17205880003", "192.0.2.3").await);
    let blocks = admin(&env, Method::GET, "/api/blocks", "").await.text();
    assert!(blocks.contains("prefix:7=+1720588"), "{blocks}");
    // Two hours on, the block has lifted and this hour holds no
    // unanswered send there, but the day's two still outnumber its one
    // confirmation: under a new alert its next new number is stopped.
    env.clock.advance(Duration::from_secs(2 * 3600));
    pump_until_alert_in(&env, "+1303556").await;
    assert!(!forwarded(&env, "+17205880004", "192.0.2.4").await);
    let rule = last_rule(&env).await;
    assert!(rule.starts_with("adaptive:alert:prefix:"), "{rule}");
}
