//! The demo's promise: the example policy stops at least 99.5% of the
//! attack and delivers at least 99.5% of legitimate sends, on the demo's day
//! and on held-out days whose attacks use other ranges, rates and mixes; and
//! the fake Twilio received exactly the sends the guard forwarded. The demo
//! is a replay of a generated day, through the same engine as
//! `smsguard replay`.

use std::path::Path;

use smsguard::config::Config;
use smsguard::demo::{self, Plan};
use smsguard::replay::report::Report;

/// Every class the demo day must show, attacks and legitimate surges.
const CLASSES: [&str; 11] = [
    "legitimate: daily sign-ins",
    "legitimate: campaign surge",
    "legitimate: carrier NAT",
    "attack: blocked country",
    "attack: blocked country via Verify",
    "attack: mobile blocks",
    "attack: wide and shallow",
    "attack: low and slow",
    "attack: one address",
    "attack: one user",
    "attack: in-country Verify",
];

async fn replay(plan: Plan) -> Report {
    let config = Config::parse(Path::new("config.example.toml"), demo::EXAMPLE_POLICY).unwrap();
    demo::run(config, &plan).await.expect("demo runs").report
}

fn check(report: &Report, what: &str) {
    let shown = report.render();
    let attack = report
        .attack_stopped_ratio()
        .expect("the day has an attack");
    let legit = report
        .legit_delivered_ratio()
        .expect("the day has legitimate sends");
    assert!(attack >= 0.995, "{what}: attack stopped {attack}\n{shown}");
    assert!(
        legit >= 0.995,
        "{what}: legitimate delivered {legit}\n{shown}"
    );
    assert_eq!(
        report.upstream.sends,
        report.forwarded(),
        "{what}: forwarded = received"
    );
    assert_eq!(report.bad_count, 0, "generated records are all readable");
    assert_eq!(report.send_failures.count, 0, "{:?}", report.send_failures);
    for label in CLASSES {
        let t = report
            .tally(label)
            .unwrap_or_else(|| panic!("{what}: no class {label:?}\n{shown}"));
        assert!(t.sends > 0, "{what}: {label} is empty");
        if label.starts_with("attack") {
            // Each attack class on its own, not only the total.
            assert!(
                t.stopped as f64 >= 0.95 * t.sends as f64,
                "{what}: {label} stopped {} of {}\n{shown}",
                t.stopped,
                t.sends
            );
        }
    }
}

#[tokio::test]
async fn the_example_policy_stops_the_attack_and_spares_legitimate_users() {
    let report = replay(Plan::default()).await;
    println!("{}", report.render());
    check(&report, "demo day");
    // People asked for second codes, and confirmed: none of those confirmed
    // sends was stopped.
    assert_eq!(
        report.tally("legitimate: campaign surge").unwrap().stopped,
        0
    );
    // The example policy asks the balance, once per refresh at most.
    assert!(
        report.upstream.balance_checks >= 1 && report.upstream.balance_checks <= 24 * 60 + 1,
        "{}",
        report.upstream.balance_checks
    );
    // Every confirmation of a forwarded send reached the fake Twilio.
    assert!(report.upstream.confirmations > 0);
}

#[tokio::test]
async fn held_out_days_with_other_ranges_rates_and_mixes_hold_too() {
    for seed in [1, 2] {
        let report = replay(Plan {
            seed,
            held_out: true,
            ..Plan::default()
        })
        .await;
        check(&report, &format!("held-out day, seed {seed}"));
    }
}
