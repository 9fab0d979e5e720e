//! The demo's promise: the example policy stops at least 99% of the attack
//! and blocks at most 1% of legitimate sends, and every forwarded send
//! really reached the fake Twilio.

use std::path::Path;

use smsguard::config::Config;
use smsguard::demo::{self, Class, Plan};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_policy_stops_the_attack_and_spares_legitimate_users() {
    let config = Config::parse(Path::new("config.example.toml"), demo::EXAMPLE_POLICY).unwrap();
    let report = demo::run(config, Plan::default()).await.expect("demo runs");
    println!("{}", report.table());
    assert!(report.attack_stopped_ratio() >= 0.99, "{}", report.table());
    assert!(report.legit_blocked_ratio() <= 0.01, "{}", report.table());
    assert_eq!(
        report.upstream_received as u64,
        report.forwarded(),
        "forwarded = received"
    );
    let legit = &report.classes[&Class::Legitimate];
    assert_eq!(legit.sends, Plan::default().legit as u64);
    let uz = &report.classes[&Class::AttackBlockedCountry];
    assert_eq!(uz.forwarded, 0);
    let verify = &report.classes[&Class::AttackVerify];
    assert_eq!((verify.sends, verify.forwarded), (1_000, 0));
    // The example policy asks the balance, once per refresh at most.
    assert!(
        report.balance_checks >= 1 && report.balance_checks <= 24 * 60 + 1,
        "{}",
        report.balance_checks
    );
    let allowed = &report.classes[&Class::AttackAllowedCountry];
    assert!(
        allowed
            .stopped_by
            .keys()
            .any(|k| k.contains("limit:prefix")),
        "{allowed:?}"
    );
}
