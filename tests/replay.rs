//! `smsguard replay` as an operator uses it: past sends from a Twilio Bulk
//! Export (JSON lines, also gzipped) or the Console's CSV, backtested
//! through the real guard in front of the fake Twilio; bad lines named by
//! number, `--out` one decision per input record in input order, and the
//! confirmations of forwarded sends replayed as real calls.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use smsguard::config::Config;
use smsguard::replay::engine::{self, Transport};
use smsguard::replay::input;
use smsguard::twilio::fake::FakeTwilio;

const EXPORT: &str = "tests/replay/export.jsonl";
const CONSOLE: &str = "tests/replay/console.csv";

fn smsguard(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_smsguard"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("the binary runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("smsguard-replay-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

fn decisions(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn example() -> Config {
    Config::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("config.example.toml")).unwrap()
}

fn manifest(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(p)
}

#[test]
fn an_export_is_backtested_with_bad_lines_named_and_one_decision_per_record() {
    let out = scratch("export-decisions.jsonl");
    let (code, stdout, stderr) = smsguard(&[
        "replay",
        "--config",
        "config.example.toml",
        "--out",
        out.to_str().unwrap(),
        EXPORT,
    ]);
    assert_eq!(code, 0, "{stderr}\n{stdout}");

    // Bad lines by file and number, with the reason; the run goes on.
    for (line, why) in [
        (5, "not a JSON object"),
        (6, "no to"),
        (7, "date_created: \"21 Nov 2023 25:00\""),
        (8, "client_ip \"not-an-ip\" is not an IP address"),
    ] {
        assert!(
            stdout.contains(&format!("{EXPORT}:{line}: {why}")),
            "line {line}:\n{stdout}"
        );
    }
    assert!(
        stdout.contains(
            "6 sends replayed, 2 skipped (not outbound-api: inbound: 1, outbound-reply: 1), 4 bad"
        ),
        "{stdout}"
    );
    assert!(
        stdout.contains("attack stopped:          100.00% (2 of 2"),
        "{stdout}"
    );
    assert!(stdout.contains("geo (UZ not allowed): 2"), "{stdout}");
    // The confirmed traveller to Uzbekistan is the false positive to see.
    assert!(
        stdout.contains("confirmed sends stopped: 1 of 3"),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!(
            "{EXPORT}:11  legitimate: traveller in Uzbekistan  +99890123****  geo (UZ not allowed)"
        )),
        "{stdout}"
    );
    assert!(
        stdout.contains("confirmations replayed:  2, all answered 2xx"),
        "{stdout}"
    );
    assert!(
        stdout.contains("fake Twilio received:    3 sends,") && !stdout.contains("MISMATCH"),
        "{stdout}"
    );
    // Costs: the records' own prices (0.0079 + 0.0158 + 0.30 * 3) and the
    // policy's default price (0.0079) for the Verify send that has none.
    assert!(
        stdout.contains("0.93 USD without the guard, 0.03 USD with it"),
        "{stdout}"
    );
    // No message body reaches the report.
    assert!(!stdout.contains("verification code"), "{stdout}");

    // One decision per input record (the blank line is none), in input
    // order, although the replay ran in time order.
    let d = decisions(&out);
    let lines: Vec<u64> = d.iter().map(|v| v["line"].as_u64().unwrap()).collect();
    assert_eq!(lines, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13]);
    let actions: Vec<&str> = d.iter().map(|v| v["action"].as_str().unwrap()).collect();
    assert_eq!(
        actions,
        [
            "allow", "skipped", "shadow", "shadow", "bad", "bad", "bad", "bad", "skipped", "allow",
            "shadow", "allow"
        ]
    );
    assert_eq!(d[2]["stage"], "number");
    assert_eq!(d[2]["rule"], "geo:UZ");
    assert_eq!(d[2]["detail"], "+998993941234", "the rule's figures");
    assert_eq!(d[0]["detail"], Value::Null, "an allowed send has none");
    assert_eq!(d[2]["label"], "attack: UZ block");
    assert_eq!(d[2]["to"], "+998993941234");
    assert_eq!(
        (&d[0]["forwarded"], &d[0]["confirmed"]),
        (&Value::Bool(true), &Value::Bool(true))
    );
    assert_eq!(d[9]["confirmed"], true, "the Verify send was confirmed");
    assert_eq!(
        (&d[10]["forwarded"], &d[10]["confirmed"]),
        (&Value::Bool(false), &Value::Bool(false))
    );
    assert_eq!(
        d[11]["confirmed"], false,
        "no confirmed_at, no confirmation"
    );
    assert_eq!(d[4]["file"], EXPORT);
    assert!(d[4]["error"]
        .as_str()
        .unwrap()
        .starts_with("not a JSON object"));
}

#[test]
fn a_gzipped_export_replays_like_the_plain_one() {
    let gz = scratch("export.jsonl.gz");
    let mut enc = flate2::write::GzEncoder::new(
        std::fs::File::create(&gz).unwrap(),
        flate2::Compression::default(),
    );
    enc.write_all(&std::fs::read(manifest(EXPORT)).unwrap())
        .unwrap();
    enc.finish().unwrap();
    let (plain, zipped) = (scratch("plain.jsonl"), scratch("zipped.jsonl"));
    let (code, _, err) = smsguard(&[
        "replay",
        "--config",
        "config.example.toml",
        "--out",
        plain.to_str().unwrap(),
        EXPORT,
    ]);
    assert_eq!(code, 0, "{err}");
    let (code, stdout, err) = smsguard(&[
        "replay",
        "--config",
        "config.example.toml",
        "--out",
        zipped.to_str().unwrap(),
        gz.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(
        stdout.contains(&format!("{}:5: not a JSON object", gz.display())),
        "{stdout}"
    );
    let strip = |mut v: Vec<Value>| {
        for d in &mut v {
            d.as_object_mut().unwrap().remove("file");
        }
        v
    };
    assert_eq!(strip(decisions(&plain)), strip(decisions(&zipped)));
}

#[test]
fn console_csv_is_read_by_its_header_row_with_bad_rows_named() {
    let out = scratch("console-decisions.jsonl");
    let (code, stdout, err) = smsguard(&[
        "replay",
        "--config",
        "config.example.toml",
        "--out",
        out.to_str().unwrap(),
        CONSOLE,
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(
        stdout.contains(&format!("{CONSOLE}:5: SentDate: \"not a date\"")),
        "{stdout}"
    );
    assert!(stdout.contains(&format!("{CONSOLE}:8: no to")), "{stdout}");
    assert!(
        stdout.contains("3 sends replayed, 1 skipped (not outbound-api: inbound: 1), 2 bad"),
        "{stdout}"
    );
    let d = decisions(&out);
    // The quoted body over two lines is one record, starting on line 6.
    let lines: Vec<u64> = d.iter().map(|v| v["line"].as_u64().unwrap()).collect();
    assert_eq!(lines, [2, 3, 4, 5, 6, 8]);
    let actions: Vec<&str> = d.iter().map(|v| v["action"].as_str().unwrap()).collect();
    assert_eq!(
        actions,
        ["allow", "skipped", "shadow", "bad", "allow", "bad"]
    );
    assert_eq!(d[0]["confirmed"], true);
    assert_eq!(d[2]["label"], "attack: UZ block");
}

#[test]
fn times_without_a_zone_are_read_as_utc_and_counted() {
    let day = scratch("zoneless.csv");
    std::fs::write(
        &day,
        "SentDate,To,Direction,ConfirmedAt\n\
         2023-11-21 01:02:03,+14155550101,outbound-api,\n\
         2023-11-21T01:03:03Z,+14155550102,outbound-api,2023-11-21 01:03:30\n\
         2023-11-21T01:04:03-08:00,+14155550103,outbound-api,\n",
    )
    .unwrap();
    let (code, stdout, err) = smsguard(&[
        "replay",
        "--config",
        "config.example.toml",
        day.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(stdout.contains("3 sends replayed"), "{stdout}");
    assert!(
        stdout.contains(
            "note: 2 sends have a time without a zone (like 2023-11-21 01:02:03): read as UTC"
        ),
        "{stdout}"
    );
}

#[test]
fn records_without_confirmations_say_so() {
    let day = scratch("unconfirmed.jsonl");
    std::fs::write(
        &day,
        "{\"date_created\": \"2023-11-21T01:02:03Z\", \"to\": \"+14155550101\"}\n",
    )
    .unwrap();
    let (code, stdout, err) = smsguard(&[
        "replay",
        "--config",
        "config.example.toml",
        day.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(stdout.contains("1 sends replayed"), "{stdout}");
    assert!(
        stdout.contains("confirmations replayed:  none (the records carry no confirmed_at)"),
        "{stdout}"
    );
}

#[test]
fn several_files_are_replayed_in_time_order_and_written_in_input_order() {
    let out = scratch("both.jsonl");
    let (code, stdout, err) = smsguard(&[
        "replay",
        "--config",
        "config.example.toml",
        "--out",
        out.to_str().unwrap(),
        EXPORT,
        CONSOLE,
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(stdout.contains("9 sends replayed"), "{stdout}");
    assert!(stdout.contains("6 bad, from 2 files"), "{stdout}");
    let d = decisions(&out);
    assert_eq!(d.len(), 12 + 6);
    assert!(d[..12].iter().all(|v| v["file"] == EXPORT));
    assert!(d[12..].iter().all(|v| v["file"] == CONSOLE));
    // The UZ number both files text is one state: the CSV's send (01:12:40
    // UTC) and the export's (01:12:40 UTC) are judged one after the other.
    assert_eq!(d[2]["action"], "shadow");
    assert_eq!(d[14]["action"], "shadow");
    assert_eq!(d[0]["action"], "allow");
    assert_eq!(d[12]["action"], "allow");
}

#[test]
fn missing_inputs_and_configs_fail_with_exit_1_without_a_position() {
    let (code, _, err) = smsguard(&[
        "replay",
        "--config",
        "config.example.toml",
        "/nonexistent/day.jsonl",
    ]);
    assert_eq!(code, 1);
    assert!(
        err.starts_with("/nonexistent/day.jsonl: cannot read"),
        "{err}"
    );
    let (code, _, err) = smsguard(&["replay", "--config", "/nonexistent/x.toml", EXPORT]);
    assert_eq!(code, 1);
    assert!(
        err.starts_with("/nonexistent/x.toml: cannot read the file"),
        "{err}"
    );
}

#[tokio::test]
async fn confirmations_of_forwarded_sends_reach_twilio_as_real_calls() {
    let fake = FakeTwilio::start().await.unwrap();
    let loaded = input::load(&[manifest(EXPORT)]).unwrap();
    let r = engine::replay_with(example(), &loaded, &fake, Transport::Tcp)
        .await
        .unwrap();
    let seen = fake.requests();
    let path_of = |suffix: &str| {
        seen.iter()
            .filter(|r| r.method == http::Method::POST && r.uri.path().ends_with(suffix))
            .collect::<Vec<_>>()
    };
    // Messaging: Feedback on the sid the guard answered the send with.
    let feedback = path_of("/Feedback.json");
    assert_eq!(feedback.len(), 1);
    assert_eq!(feedback[0].body, "Outcome=confirmed");
    let sends = path_of("/Messages.json");
    assert!(
        feedback[0]
            .uri
            .path()
            .starts_with("/2010-04-01/Accounts/AC5ef8732a3c49700934481addd5ce1659/Messages/SM"),
        "{}",
        feedback[0].uri
    );
    // It came after its send, and the UZ sends never reached Twilio.
    assert!(sends
        .iter()
        .all(|s| !String::from_utf8_lossy(&s.body).contains("998")));
    // Verify: a check of the same number, answered approved by Twilio.
    let checks = path_of("/VerificationCheck");
    assert_eq!(checks.len(), 1);
    assert_eq!(checks[0].body, "To=%2B447400123456&Code=123456");
    assert_eq!(r.report.confirmations, 2);
    assert_eq!(r.report.confirmation_failures.count, 0);
    assert_eq!(r.report.upstream.sends, r.report.forwarded());
    assert_eq!(r.report.upstream.confirmations, 2);
    let stopped = &r.report.confirmed_stopped;
    assert_eq!(stopped.len(), 1);
    assert_eq!(
        (stopped[0].line, stopped[0].to.as_str()),
        (11, "+99890123****")
    );
    fake.shutdown();
}

#[tokio::test]
async fn the_pipe_into_the_guard_decides_exactly_as_its_tcp_listener() {
    let both = [manifest(EXPORT), manifest(CONSOLE)];
    let loaded = input::load(&both).unwrap();
    let mut outcomes = Vec::new();
    for transport in [Transport::Tcp, Transport::Pipe] {
        let fake = FakeTwilio::start().await.unwrap();
        let r = engine::replay_with(example(), &loaded, &fake, transport)
            .await
            .unwrap();
        outcomes.push(r.outcomes);
        fake.shutdown();
    }
    assert_eq!(outcomes[0], outcomes[1]);
    assert_eq!(outcomes[0].len(), loaded.entries.len());
}

#[tokio::test]
async fn masked_numbers_stay_masked_in_the_decisions() {
    let mut config = example();
    config.log.mask_numbers = true;
    let loaded = input::load(&[manifest(EXPORT)]).unwrap();
    let r = engine::replay(config, &loaded).await.unwrap();
    let mut out = Vec::new();
    smsguard::replay::report::write_decisions(&mut out, &loaded, &r.outcomes).unwrap();
    let text = String::from_utf8(out).unwrap();
    assert!(text.contains("\"to\":\"+99899394****\""), "{text}");
    assert!(text.contains("\"to\":\"+1212555****\""), "{text}");
    assert!(!text.contains("+998993941234"), "{text}");
}

#[tokio::test]
async fn confirmations_are_replayed_at_their_time_between_later_sends() {
    use smsguard::replay::Record;
    use smsguard::twilio::routes::Product;
    let t0 = 1_700_528_523_000;
    let mut first = Record::new(t0, "+12125550143", Product::Messaging);
    first.confirmed_at = Some(t0 + 100_000);
    first.client_ip = Some("198.51.100.1".parse().unwrap());
    let mut second = Record::new(t0 + 50_000, "+13125550177", Product::Messaging);
    second.client_ip = Some("198.51.100.2".parse().unwrap());
    let mut third = Record::new(t0 + 150_000, "+14045550123", Product::Voice);
    third.confirmed_at = Some(t0 + 160_000);
    third.client_ip = Some("198.51.100.3".parse().unwrap());
    // Input order is not time order: the replay sorts, --out does not.
    let loaded = input::Loaded::from_records("made", vec![third, second, first]);
    let fake = FakeTwilio::start().await.unwrap();
    let r = engine::replay_with(example(), &loaded, &fake, Transport::Pipe)
        .await
        .unwrap();
    let calls: Vec<String> = fake
        .requests()
        .iter()
        .filter(|q| !q.uri.path().ends_with("/Balance.json"))
        .map(|q| {
            let last = q.uri.path().rsplit('/').next().unwrap().to_string();
            let body = String::from_utf8_lossy(&q.body);
            format!("{last} {}", body.split('&').next().unwrap_or(""))
        })
        .collect();
    assert_eq!(
        calls,
        [
            "Messages.json To=%2B12125550143",
            "Messages.json To=%2B13125550177",
            "Feedback.json Outcome=confirmed",
            "Calls.json To=%2B14045550123",
        ]
    );
    // The call's confirmation went to the admin API, not to Twilio.
    assert_eq!(r.report.confirmations, 2);
    assert_eq!(
        r.report.confirmation_failures.count, 0,
        "{:?}",
        r.report.confirmation_failures
    );
    let confirmed: Vec<bool> = r.outcomes.iter().map(|o| o.confirmed).collect();
    assert_eq!(confirmed, [true, false, true]);
    fake.shutdown();
}

/// Blocks set during a replay: the keys, who set them and for how long,
/// whose sends they stopped, and the attack's first stop; numbers masked.
#[tokio::test]
async fn keys_blocked_during_a_replay_are_reported_with_whose_sends_they_stopped() {
    use smsguard::replay::report::{Kind, Span};
    use smsguard::replay::Record;
    use smsguard::twilio::routes::Product;
    let config = Config::parse(
        Path::new("t.toml"),
        "[geo]\nallow = [\"US\", \"GB\"]\n[log]\nmask_numbers = true\n\
         [[limit]]\nname = \"prefix\"\nkey = \"prefix:8\"\nrates = [\"2/1h\"]\nblock = \"1h\"\n\
         [[limit]]\nname = \"user\"\nkey = \"user\"\nrates = [\"1/1d\"]\nblock = \"3h\"\n\
         [[limit]]\nname = \"number\"\nkey = \"to\"\nrates = [\"1/1d\"]\nblock = \"2h\"\n",
    )
    .unwrap();
    let t0 = 1_700_528_523_000;
    let minute = 60_000;
    let send = |minutes: u64, to: &str, label: Option<&str>| {
        let mut r = Record::new(t0 + minutes * minute, to, Product::Messaging);
        r.label = label.map(str::to_string);
        r.user = to.starts_with("+1").then(|| "u1".to_string());
        r
    };
    let uk = Some("attack: UK blocks");
    let repeat = Some("legitimate: second code");
    let loaded = input::Loaded::from_records(
        "made",
        vec![
            send(0, "+447400123001", uk),
            send(1, "+447400123002", uk),
            // The third number in the block trips the prefix limit...
            send(2, "+447400123003", uk),
            // ...whose block stops whoever comes next.
            send(10, "+447400123004", Some("legitimate")),
            send(20, "+447400123005", None),
            // A second send of one user to one number trips the user's
            // limit, which decides, and the number's, which blocks the
            // number too: the block the next send meets first.
            send(30, "+12125550143", repeat),
            send(31, "+12125550143", repeat),
            send(40, "+12125550143", repeat),
        ],
    );
    let r = engine::replay(config, &loaded).await.unwrap();
    let actions: Vec<(&str, Option<&str>)> =
        r.outcomes.iter().map(|o| (o.action, o.stage)).collect();
    assert_eq!(
        actions,
        [
            ("allow", None),
            ("allow", None),
            ("shadow", Some("limits")),
            ("shadow", Some("blocks")),
            ("shadow", Some("blocks")),
            ("allow", None),
            ("shadow", Some("limits")),
            ("shadow", Some("blocks")),
        ]
    );
    let detail = |i: usize| r.outcomes[i].detail.as_deref().unwrap_or("-").to_string();
    assert_eq!(
        detail(2),
        "prefix:8=+44740012: 3 attempts, rate 2/1h; blocked for 1h (offence 1)"
    );
    assert_eq!(detail(3), "prefix:8=+44740012");
    assert_eq!(
        detail(6),
        "user=u1: 2 attempts, rate 1/1d; blocked for 3h (offence 1)"
    );
    assert_eq!(detail(7), "to=+1212555****");

    let report = &r.report;
    let attack = report.tally("attack: UK blocks").unwrap();
    assert_eq!(attack.forwarded_before_stop, 2);
    assert_eq!(attack.minutes_to_detect(), Some(2.0));
    let keys: Vec<(&str, &str, u64, u64, u64)> = report
        .blocked_keys_ranked()
        .iter()
        .map(|k| {
            (
                k.key.as_str(),
                k.rule.as_str(),
                k.sends.legitimate,
                k.sends.attack,
                k.sends.other,
            )
        })
        .collect();
    assert_eq!(
        keys,
        [
            ("prefix:8=+44740012", "limit:prefix", 1, 1, 1),
            ("to=+1212555****", "limit:number", 1, 0, 0),
            ("user=u1", "limit:user", 1, 0, 0),
        ]
    );
    // Read from the guard's store, also under a masked number whose block
    // the replay first met in the blocks stage.
    assert_eq!(
        report.blocked_keys[0].spans,
        [Span {
            since: t0 + 2 * minute,
            until: t0 + 62 * minute,
            offence: 1
        }]
    );
    assert_eq!(report.blocked_keys[1].key, "user=u1");
    assert_eq!(
        report.blocked_keys[1].spans,
        [Span {
            since: t0 + 31 * minute,
            until: t0 + 211 * minute,
            offence: 1
        }]
    );
    assert_eq!(report.blocked_keys[2].key, "to=+1212555****");
    assert_eq!(
        report.blocked_keys[2].spans,
        [Span {
            since: t0 + 31 * minute,
            until: t0 + 151 * minute,
            offence: 1
        }]
    );
    let rules = report.legit_stopped_by_rule();
    let legit: Vec<(&str, &str, u64)> = rules
        .iter()
        .map(|r| (r.stage, r.rule.as_str(), r.sends))
        .collect();
    assert_eq!(
        legit,
        [
            ("blocks", "limit:number", 1),
            ("blocks", "limit:prefix", 1),
            ("limits", "limit:user", 1),
        ]
    );
    assert_eq!(report.legit_sends(), 4);
    assert!(rules.iter().all(|r| r.share == 0.25), "{rules:?}");
    assert_eq!(Kind::of("Legitimate: x"), Kind::Legitimate);

    let text = report.render();
    for line in [
        "attack: UK blocks                                  2               2.00\n",
        "  prefix:8=+44740012  limit prefix  1h                    1        1        1\n",
        "  to=+1212555****     limit number  2h                    1        0        0\n",
        "  user=u1             limit user    3h                    1        0        0\n",
        "  blocks (limit number)         1   25.00%\n",
    ] {
        assert!(text.contains(line), "{line:?} in\n{text}");
    }
    let mut out = Vec::new();
    smsguard::replay::report::write_decisions(&mut out, &loaded, &r.outcomes).unwrap();
    let out = String::from_utf8(out).unwrap();
    assert!(
        out.contains(
            r#""detail":"prefix:8=+44740012: 3 attempts, rate 2/1h; blocked for 1h (offence 1)""#
        ),
        "{out}"
    );
    for shown in [&text, &out] {
        assert!(!shown.contains("+12125550143"), "{shown}");
        assert!(!shown.contains("+447400123004"), "{shown}");
    }
}

#[test]
fn a_saved_demo_day_reads_back_as_the_same_records() {
    use smsguard::replay::demo::{self, Plan};
    let config = example();
    let start = 1_700_524_800_000; // 2023-11-21T00:00:00Z
    let day = demo::day(&config, &Plan::default(), start).unwrap();
    let records: Vec<_> = day
        .entries
        .iter()
        .map(|e| e.record.clone().unwrap())
        .collect();
    assert!(records.len() > 1_000);
    let mut text = Vec::new();
    input::write_json_lines(&mut text, &records).unwrap();
    let mut back = Vec::new();
    input::read_json_lines(text.as_slice(), 0, &mut back);
    assert_eq!(back.len(), records.len());
    for (saved, made) in back.iter().zip(&records) {
        assert_eq!(saved.record.as_ref().unwrap(), made);
    }
    // Another seed is another day.
    let other = demo::day(
        &config,
        &Plan {
            seed: 7,
            ..Plan::default()
        },
        start,
    )
    .unwrap();
    assert_ne!(
        other.entries[0].record.as_ref().unwrap(),
        day.entries[0].record.as_ref().unwrap()
    );
}
