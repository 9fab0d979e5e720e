//! The command line as an operator uses it.

use std::process::Command;

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

#[test]
fn check_accepts_the_example_and_summarizes_it() {
    let (code, out, err) = smsguard(&["check", "--config", "config.example.toml"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("config.example.toml: ok"), "{out}");
    assert!(out.contains("limit       prefix key=prefix:8"), "{out}");
    assert!(out.contains("allow=US, CA, GB, IE"), "{out}");
    // Durations as a policy writes them, and what each figure means.
    assert!(out.contains("rates=5/1h,10/1d"), "{out}");
    assert!(out.contains("vouch=30d"), "{out}");
    assert!(out.contains("block=number less its last 4 digits"), "{out}");
    assert!(!out.contains("day") && !out.contains("block=-"), "{out}");
}

#[test]
fn check_reports_file_line_and_column_and_exits_1() {
    let dir = std::env::temp_dir().join(format!("smsguard-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("bad.toml");
    std::fs::write(&path, "[geo]\nallow = [\"US\"]\n\n[backoff]\nbase = \"30 parsecs\"\nmax = \"1m\"\nreset_after = \"1h\"\n").unwrap();
    let p = path.to_str().unwrap();
    let (code, out, err) = smsguard(&["check", "--config", p]);
    assert_eq!(code, 1, "{out}");
    assert!(err.starts_with(&format!("{p}:5:8: ")), "{err}");
    let (code, _, err) = smsguard(&["check", "--config", "/nonexistent/x.toml"]);
    assert_eq!(code, 1);
    assert!(err.starts_with("/nonexistent/x.toml:"), "{err}");
}

#[test]
fn explain_prints_every_stage_and_the_final_action() {
    let (code, out, err) = smsguard(&[
        "explain",
        "--config",
        "config.example.toml",
        "--to",
        "+998993941234",
    ]);
    assert_eq!(code, 0, "{err}");
    for stage in [
        "safe", "number", "blocks", "backoff", "limits", "budget", "balance",
    ] {
        assert!(
            out.lines().any(|l| l.starts_with(stage)),
            "no {stage} line:\n{out}"
        );
    }
    assert!(out.contains("region=UZ"), "{out}");
    assert!(out.contains("action   shadow by number geo:UZ"), "{out}");
    let (_, out, _) = smsguard(&[
        "explain",
        "--config",
        "config.example.toml",
        "--to",
        "+1 (415) 555-0100",
    ]);
    assert!(out.contains("action   allow"), "{out}");
}

#[test]
fn explain_marks_the_stages_after_the_deciding_one_as_not_reached() {
    let (code, out, err) = smsguard(&[
        "explain",
        "--config",
        "config.example.toml",
        "--to",
        "+998993941234",
    ]);
    assert_eq!(code, 0, "{err}");
    let line = |stage: &str| {
        out.lines()
            .find(|l| l.starts_with(&format!("{stage} ")))
            .unwrap_or_else(|| panic!("no {stage} line:\n{out}"))
            .to_string()
    };
    assert!(line("safe").contains("pass"), "{out}");
    assert!(out.contains("\nnumber   shadow geo:UZ"), "{out}");
    for stage in ["blocks", "backoff", "limits", "budget", "balance"] {
        assert!(
            line(stage).contains("not reached (stopped by number)"),
            "{stage}:\n{out}"
        );
    }
}

#[test]
fn check_summarizes_balance_shadow_and_the_body_limit() {
    let (code, out, err) = smsguard(&["check", "--config", "config.example.toml"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("max_body=64KiB"), "{out}");
    assert!(
        out.contains("  balance     min=1.00 refresh=1m on_error=allow"),
        "{out}"
    );
    assert!(out.contains("  shadow      timing=on"), "{out}");
}

#[test]
fn a_missing_file_is_named_without_a_line_it_does_not_have() {
    let (code, _, err) = smsguard(&["check", "--config", "/nonexistent/smsguard.toml"]);
    assert_eq!(code, 1);
    assert!(
        err.starts_with("/nonexistent/smsguard.toml: cannot read the file: "),
        "{err}"
    );
}

#[test]
fn check_warns_about_a_policy_that_judges_nothing() {
    let dir = std::env::temp_dir().join(format!("smsguard-cli-empty-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("empty.toml");
    std::fs::write(&path, "# nothing yet\n").unwrap();
    let (code, out, err) = smsguard(&["check", "--config", path.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("warning: this policy judges nothing"), "{out}");
    let (_, out, _) = smsguard(&["check", "--config", "config.example.toml"]);
    assert!(!out.contains("judges nothing"), "{out}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn check_accepts_a_redis_store_and_names_it() {
    let dir = std::env::temp_dir().join(format!("smsguard-cli-redis-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("redis.toml");
    std::fs::write(
        &path,
        "[listen]\naddr = \"127.0.0.1:0\"\n[geo]\nallow = [\"US\"]\n[store]\nredis = \"redis://127.0.0.1:6390/0\"\non_error = \"block\"\n",
    )
    .unwrap();
    let (code, out, err) = smsguard(&["check", "--config", path.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains(
            "store       redis redis://127.0.0.1:6390/0 on_error=block timeout=50ms near_cache=1s"
        ),
        "{out}"
    );
    let (_, out, _) = smsguard(&["check", "--config", "config.example.toml"]);
    assert!(
        out.contains("store       memory (this process only)"),
        "{out}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// `smsguard serve` on a free port with `policy` (its `[listen] addr`
/// added), stopped by PID however the test ends.
struct Serve {
    child: std::process::Child,
    port: u16,
    dir: std::path::PathBuf,
}

impl Serve {
    fn start(name: &str, policy: &str, stderr: std::process::Stdio, env: &[(&str, &str)]) -> Serve {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap()
            .port();
        let dir = std::env::temp_dir().join(format!("smsguard-cli-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("policy.toml");
        std::fs::write(
            &path,
            format!("[listen]\naddr = \"127.0.0.1:{port}\"\n{policy}"),
        )
        .unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_smsguard"));
        cmd.args(["serve", "--config", path.to_str().unwrap()])
            .env_remove("SMSGUARD_LOG")
            .stdout(std::process::Stdio::null())
            .stderr(stderr);
        for (k, v) in env {
            cmd.env(k, v);
        }
        Serve {
            child: cmd.spawn().unwrap(),
            port,
            dir,
        }
    }

    /// A keep-alive connection to the guard: (reader, writer).
    fn connect(&self) -> (std::io::BufReader<std::net::TcpStream>, std::net::TcpStream) {
        use std::time::Duration;
        for _ in 0..200 {
            if let Ok(c) = std::net::TcpStream::connect(("127.0.0.1", self.port)) {
                c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                return (std::io::BufReader::new(c.try_clone().unwrap()), c);
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!("the guard never listened on {}", self.port);
    }

    /// SIGTERM, then waits for the exit (the log is written out by then).
    fn stop(mut self) {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let _ = self.child.wait();
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// POSTs a Message create to `to` and reads the whole answer; returns its
/// status line.
fn send(
    reader: &mut std::io::BufReader<std::net::TcpStream>,
    w: &mut std::net::TcpStream,
    to: &str,
) -> String {
    use std::io::{BufRead, Read, Write};
    let body = format!("To={to}&From=%2B15005550006&Body=planted-secret-body");
    let req = format!(
        "POST /2010-04-01/Accounts/AC0123456789abcdef0123456789abcdef/Messages.json HTTP/1.1\r\nHost: x\r\nAuthorization: Basic QUM6dA==\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    w.write_all(req.as_bytes()).unwrap();
    let mut status = String::new();
    reader
        .read_line(&mut status)
        .unwrap_or_else(|e| panic!("no answer: {e}"));
    let mut len = 0;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        if line == "\r\n" {
            break;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            len = v.trim().parse().unwrap();
        }
    }
    let mut body = vec![0; len];
    reader.read_exact(&mut body).unwrap();
    status
}

/// Every send shadowed: no upstream is ever contacted.
const SHADOW_ALL: &str =
    "[geo]\nallow = [\"US\"]\n[shadow]\ntiming = false\n[log]\nlevel = \"info\"\n";

/// A send never waits for the log: `serve` with its stderr a pipe nobody
/// reads (a stalled log shipper) still answers thousands of sends, each
/// logged at `info`, after the pipe has filled. A writer on the request
/// path would block in `write` once the pipe's 64 KiB were full.
#[test]
fn a_stalled_stderr_never_holds_up_a_send() {
    let serve = Serve::start("stalled", SHADOW_ALL, std::process::Stdio::piped(), &[]);
    let (mut reader, mut w) = serve.connect();
    // ~300 bytes of log per send: 3,000 sends are 14 times the pipe.
    for i in 0..3_000 {
        let status = send(&mut reader, &mut w, "%2B998993941234");
        assert!(status.starts_with("HTTP/1.1 201"), "send {i}: {status}");
    }
}

/// `serve` writes one decision line per send to stderr, in the configured
/// format, with the rule and the number but never the body or the token,
/// and honours SMSGUARD_LOG's filter for them.
#[test]
fn serve_logs_one_decision_line_per_send_in_either_format() {
    let run = |name: &str, format: &str, env: &[(&str, &str)]| -> String {
        let dir =
            std::env::temp_dir().join(format!("smsguard-cli-out-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("stderr.log");
        let policy = format!("{SHADOW_ALL}format = \"{format}\"\n");
        let serve = Serve::start(
            name,
            &policy,
            std::fs::File::create(&file).unwrap().into(),
            env,
        );
        let (mut reader, mut w) = serve.connect();
        for to in ["%2B998993941234", "%2B998993941235", "%2B998993941236"] {
            let status = send(&mut reader, &mut w, to);
            assert!(status.starts_with("HTTP/1.1 201"), "{status}");
        }
        serve.stop();
        let log = std::fs::read_to_string(&file).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        assert!(!log.contains("planted-secret-body"), "body leaked: {log}");
        assert!(!log.contains("QUM6dA"), "token leaked: {log}");
        log
    };

    let json = run("json", "json", &[]);
    let decisions: Vec<serde_json::Value> = json
        .lines()
        .filter(|l| l.contains("smsguard::decision"))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert_eq!(decisions.len(), 3, "{json}");
    for (d, to) in decisions
        .iter()
        .zip(["+998993941234", "+998993941235", "+998993941236"])
    {
        assert_eq!(d["message"], "decision", "{d}");
        assert_eq!(d["level"], "INFO", "{d}");
        assert_eq!(d["to"], to, "{d}");
        assert_eq!(d["action"], "shadow", "{d}");
        assert_eq!(d["rule"], "geo:UZ", "{d}");
        assert_eq!(d["client_ip"], "127.0.0.1", "{d}");
        assert!(d["timestamp"].as_str().unwrap().ends_with('Z'), "{d}");
    }

    let text = run("human", "human", &[]);
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("smsguard::decision"))
        .collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert!(
        lines[0].contains(
            " INFO smsguard::decision: decision endpoint=\"messages.create\" product=\"messaging\""
        ),
        "{text}"
    );
    assert!(lines[2].contains("to=\"+998993941236\""), "{text}");
    assert!(
        lines[2].contains("rule=\"geo:UZ\" action=\"shadow\""),
        "{text}"
    );

    let off = run(
        "off",
        "json",
        &[("SMSGUARD_LOG", "info,smsguard::decision=off")],
    );
    assert!(off.contains("smsguard listening"), "{off}");
    // The start line names the admin listener plainly, or says it is off.
    assert!(!off.contains("Some("), "{off}");
    assert!(off.contains(r#""admin":"off""#), "{off}");
    assert!(!off.contains("smsguard::decision"), "{off}");
}

/// A scratch directory for one test, removed however it ends.
struct Scratch(std::path::PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("smsguard-cli-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    /// Writes `text` to `name` in the directory; returns its path.
    fn file(&self, name: &str, text: &str) -> String {
        let path = self.0.join(name);
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_string()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The line of `stage` in explain's output.
fn stage_line<'a>(out: &'a str, stage: &str) -> &'a str {
    out.lines()
        .find(|l| l.starts_with(&format!("{stage} ")))
        .unwrap_or_else(|| panic!("no {stage} line:\n{out}"))
}

/// Two sign-ins: the first code entered 20 s after its send, the second
/// 1 s after (faster than a person reads a text).
const TWO_SIGN_INS: &str = concat!(
    r#"{"date_created":"2025-03-01T10:00:00Z","to":"+14155550123","client_ip":"198.51.100.7","user":"u1","confirmed_at":"2025-03-01T10:00:20Z","label":"legitimate"}"#,
    "\n",
    r#"{"date_created":"2025-03-01T10:01:00Z","to":"+14155550124","client_ip":"198.51.100.8","user":"u2","confirmed_at":"2025-03-01T10:01:01Z","label":"legitimate"}"#,
    "\n",
);

#[test]
fn explain_after_traffic_shows_a_number_that_proved_receipt_as_vouched() {
    let dir = Scratch::new("explain-vouched");
    let traffic = dir.file("day.jsonl", TWO_SIGN_INS);
    let explain = |after: bool| {
        let mut args = vec![
            "explain",
            "--config",
            "config.example.toml",
            "--to",
            "+14155550123",
        ];
        if after {
            args.extend(["--after", &traffic]);
        }
        let (code, out, err) = smsguard(&args);
        assert_eq!(code, 0, "{out}{err}");
        out
    };

    let out = explain(true);
    let first = out.lines().next().unwrap();
    assert!(
        first.starts_with(&format!("after    {traffic}: 2 sends and 2 confirmations replayed (0 skipped, 0 bad), the last event at 2025-03-01T10:01:01.000Z; judged at 2025-03-01T10:01:01.001Z")),
        "{out}"
    );
    assert!(
        stage_line(&out, "adaptive").starts_with(
            "adaptive pass   vouched for until 2025-03-31T10:00:20Z: the number proved receipt"
        ),
        "{out}"
    );
    assert!(out.contains("\naction   allow\n"), "{out}");

    // At the last send: the second confirmation, a second later, has not
    // come yet; the first has.
    let (code, out, err) = smsguard(&[
        "explain",
        "--config",
        "config.example.toml",
        "--to",
        "+14155550123",
        "--after",
        &traffic,
        "--at",
        "2025-03-01T10:01:00Z",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("2 sends and 1 confirmations replayed (0 skipped, 0 bad), the last event at 2025-03-01T10:01:00.000Z; judged at 2025-03-01T10:01:00.000Z\nnote     1 confirmation due after 2025-03-01T10:01:00.000Z not replayed\n"),
        "{out}"
    );
    assert!(
        stage_line(&out, "adaptive").starts_with("adaptive pass   vouched for until "),
        "{out}"
    );

    // With empty state nothing is known of the number.
    let out = explain(false);
    assert!(out.starts_with("number   +14155550123"), "{out}");
    assert!(!out.contains("vouched"), "{out}");
}

#[test]
fn explain_after_traffic_does_not_vouch_for_a_confirmation_within_seconds() {
    let dir = Scratch::new("explain-fast");
    let traffic = dir.file("day.jsonl", TWO_SIGN_INS);
    let (code, out, err) = smsguard(&[
        "explain",
        "--config",
        "config.example.toml",
        "--to",
        "+14155550124",
        "--after",
        &traffic,
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.starts_with("after    "), "{out}");
    // The confirmation came (conversion is judged for the account) but
    // 1 s after its send is not believed (min_confirm_delay 5s).
    let adaptive = stage_line(&out, "adaptive");
    assert!(
        adaptive.starts_with("adaptive pass   confirmations flow; "),
        "{out}"
    );
    assert!(!out.contains("vouched"), "{out}");
}

/// Prefixes (digits after the country code) 3 to 6 and the block; a prefix
/// two digits or more shorter than the block is broad: its excess is an
/// alert. A region's floors are high: only `prefix:6` (floor 4 x 2 x 2 =
/// 16 unconfirmed an hour) trips here.
const ALERT_POLICY: &str = r#"
[geo]
allow = ["US", "GB"]

[shadow]
timing = false

[adaptive]
prefixes = [3, 4, 5, 6]
block_digits = 4
grace = "5m"
vouch = "30d"
min_confirm_delay = "5s"
broad_digits = 2
alert = "30m"
alert_block = "15m"

[adaptive.unconfirmed]
ratio = 1.0
alert_ratio = 0.5
min_sample = 5
prefix = ["4/1h", "10/1d"]
region = ["100/1h", "500/1d"]
"#;

/// A day of confirmed US sign-ins, a confirmed US sign-in, a GB
/// sign-in in `+4474599` confirmed 30 s later, then 30 never-confirmed
/// sends from 30 addresses over 20 minutes to `+447459…`: 3 to each of its
/// ten 7-digit ranges, one per block, under every surge floor.
fn range_attack() -> String {
    let mut s = String::new();
    // The day before: 60 US sign-ins, each confirmed 20 s later, so the
    // app's own share of unanswered codes is known.
    for i in 0..60u32 {
        let (sent, confirmed) = (i * 40, i * 40 + 20);
        s.push_str(&format!(
            r#"{{"date_created":"2025-02-28T09:{:02}:{:02}Z","to":"+1212555{i:04}","client_ip":"100.64.0.{i}","confirmed_at":"2025-02-28T09:{:02}:{:02}Z","label":"legitimate"}}"#,
            sent / 60,
            sent % 60,
            confirmed / 60,
            confirmed % 60
        ));
        s.push('\n');
    }
    s.push_str(r#"{"date_created":"2025-03-01T10:00:00Z","to":"+14155550123","client_ip":"198.51.100.7","confirmed_at":"2025-03-01T10:00:20Z","label":"legitimate"}"#);
    s.push('\n');
    s.push_str(r#"{"date_created":"2025-03-01T10:01:00Z","to":"+447459912345","client_ip":"198.51.100.9","confirmed_at":"2025-03-01T10:01:30Z","label":"legitimate"}"#);
    s.push('\n');
    // Beside that one person, the range +4474599 gets two unanswered
    // sends first (with three of the attack's, an excess no bad luck of
    // people who answer explains).
    for m in 2..4u32 {
        s.push_str(&format!(
            r#"{{"date_created":"2025-03-01T10:{m:02}:00Z","to":"+44745999{m:04}","client_ip":"203.0.113.{}","label":"attack: range"}}"#,
            100 + m
        ));
        s.push('\n');
    }
    for k in 0..30u32 {
        let secs = 5 * 60 + 40 * k;
        s.push_str(&format!(
            r#"{{"date_created":"2025-03-01T10:{:02}:{:02}Z","to":"+447459{}{}{:04}","client_ip":"203.0.113.{}","label":"attack: range"}}"#,
            secs / 60,
            secs % 60,
            k % 10,
            k / 10,
            k * 37 % 10_000,
            k + 1
        ));
        s.push('\n');
    }
    s
}

#[test]
fn explain_after_traffic_shows_an_alert_narrowed_to_the_sends_range() {
    let dir = Scratch::new("explain-alert");
    let policy = dir.file("policy.toml", ALERT_POLICY);
    let traffic = dir.file("day.jsonl", &range_attack());
    let explain = |to: &str, extra: &[&str]| {
        let mut args = vec![
            "explain",
            "--config",
            &policy,
            "--to",
            to,
            "--ip",
            "203.0.113.200",
        ];
        args.extend(extra);
        let (code, out, err) = smsguard(&args);
        assert_eq!(code, 0, "{out}{err}");
        out
    };
    let after = ["--after", traffic.as_str()];

    // A new number in +4474590, which got three of the unanswered sends:
    // prefix:6 is under alert, and the number's own 7-digit range, which
    // carries the excess, is the one blocked.
    let out = explain("+447459055555", &after);
    assert!(
        out.starts_with(&format!("after    {traffic}: 94 sends and 62 confirmations replayed (0 skipped, 0 bad), the last event at 2025-03-01T10:24:20.000Z")),
        "{out}"
    );
    assert_eq!(
        stage_line(&out, "blocks"),
        "blocks   pass   no active block",
        "{out}"
    );
    let adaptive = stage_line(&out, "adaptive");
    assert!(
        adaptive.starts_with("adaptive shadow adaptive:alert:prefix:7 (prefix:7=+4474590: "),
        "{out}"
    );
    assert!(
        adaptive.contains("; prefix:6=+447459 under alert: "),
        "{out}"
    );
    assert!(adaptive.contains("blocked for 15m (offence 1)"), "{out}");
    assert!(
        out.contains("\naction   shadow by adaptive adaptive:alert:prefix:7\n"),
        "{out}"
    );
    // With empty state the same number simply goes.
    let out = explain("+447459055555", &[]);
    assert!(out.contains("\naction   allow\n"), "{out}");

    // +4474599's range was blocked by the alert during the replay: a new
    // number there meets the block...
    let out = explain("+447459955555", &after);
    assert_eq!(
        stage_line(&out, "blocks"),
        "blocks   shadow adaptive:alert:prefix:7 (prefix:7=+4474599)",
        "{out}"
    );
    assert!(
        stage_line(&out, "adaptive").contains("not reached (stopped by blocks)"),
        "{out}"
    );
    // ...which the number there that proved receipt passes, vouched.
    let out = explain("+447459912345", &after);
    assert!(
        stage_line(&out, "blocks").starts_with(
            "blocks   pass   blocks passed over: prefix:7=+4474599 (adaptive:alert:prefix:7): the number is vouched for until 2025-03-31T10:01:30Z"
        ),
        "{out}"
    );
    assert!(
        stage_line(&out, "adaptive").starts_with("adaptive pass   vouched for until "),
        "{out}"
    );
    assert!(out.contains("\naction   allow\n"), "{out}");

    // Half an hour later the 15-minute block is gone; the alert holds
    // while the range's unanswered sends are within the hour.
    let out = explain(
        "+447459955555",
        &["--after", &traffic, "--at", "2025-03-01T10:45:00Z"],
    );
    assert!(
        out.lines()
            .next()
            .unwrap()
            .ends_with("judged at 2025-03-01T10:45:00.000Z"),
        "{out}"
    );
    assert_eq!(
        stage_line(&out, "blocks"),
        "blocks   pass   no active block",
        "{out}"
    );
    // The range carries the excess again and is blocked again.
    let adaptive = stage_line(&out, "adaptive");
    assert!(
        adaptive.starts_with("adaptive shadow adaptive:alert:prefix:7 (prefix:7=+4474599: "),
        "{out}"
    );
    assert!(
        adaptive.contains("; prefix:6=+447459 under alert: "),
        "{out}"
    );

    // A moment before the traffic's last send is refused.
    let (code, out, err) = smsguard(&[
        "explain",
        "--config",
        &policy,
        "--to",
        "+447459055555",
        "--after",
        &traffic,
        "--at",
        "2025-03-01T10:20:00Z",
    ]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains("--at 2025-03-01T10:20:00.000Z is before the last send of the traffic, at 2025-03-01T10:24:20.000Z"),
        "{err}"
    );
}

/// A free port on loopback.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port()
}

/// The README's quick start with nothing but the repository: the built-in
/// fake Twilio, `serve` on the example policy pointed at it, a send that
/// goes and one that is shadowed, and the dashboard's listener.
#[test]
fn the_quick_start_runs_against_the_built_in_fake_twilio() {
    use std::io::{BufRead, BufReader};
    let (fake_port, port, admin) = (free_port(), free_port(), free_port());
    let mut fake = Command::new(env!("CARGO_BIN_EXE_smsguard"))
        .args(["fake-twilio", "--port", &fake_port.to_string()])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(fake.stdout.take().unwrap()).lines();
    let banner = lines.next().unwrap().unwrap();
    let url = format!("http://127.0.0.1:{fake_port}");
    assert!(banner.contains(&url), "{banner}");

    let example = std::fs::read_to_string("config.example.toml").unwrap();
    let policy = example
        .replace(
            "addr = \"127.0.0.1:8080\"",
            &format!("addr = \"127.0.0.1:{port}\""),
        )
        .replace(
            "addr = \"127.0.0.1:9090\"",
            &format!("addr = \"127.0.0.1:{admin}\""),
        )
        .replace("\"https://api.twilio.com\"", &format!("{url:?}"))
        .replace("\"https://verify.twilio.com\"", &format!("{url:?}"));
    assert!(
        policy.contains(&format!("api = {url:?}")),
        "the example's upstream moved"
    );
    let dir = std::env::temp_dir().join(format!("smsguard-quick-start-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("smsguard.toml");
    std::fs::write(&path, policy).unwrap();
    let guard = Serve {
        child: Command::new(env!("CARGO_BIN_EXE_smsguard"))
            .args(["serve", "--config", path.to_str().unwrap()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
        port,
        dir,
    };
    let (mut reader, mut w) = guard.connect();
    let allowed = send(&mut reader, &mut w, "%2B14155550123");
    assert!(allowed.starts_with("HTTP/1.1 201"), "{allowed}");
    let shadowed = send(&mut reader, &mut w, "%2B998993941234");
    assert!(shadowed.starts_with("HTTP/1.1 201"), "{shadowed}");
    // The dashboard's listener answers on loopback without a token.
    let mut c = std::net::TcpStream::connect(("127.0.0.1", admin)).unwrap();
    use std::io::{Read, Write};
    c.write_all(b"GET /readyz HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    c.read_to_string(&mut answer).unwrap();
    assert!(
        answer.starts_with("HTTP/1.0 200") || answer.starts_with("HTTP/1.1 200"),
        "{answer}"
    );
    guard.stop();
    let _ = Command::new("kill")
        .args(["-TERM", &fake.id().to_string()])
        .status();
    assert!(fake.wait().unwrap().success());
    // The fake printed the forwarded send, and only it (and the balance
    // checks the example's [balance] makes).
    let printed: Vec<String> = lines
        .map_while(Result::ok)
        .filter(|l| !l.starts_with("GET ") || !l.ends_with("/Balance.json"))
        .collect();
    assert_eq!(printed.len(), 1, "{printed:?}");
    assert!(printed[0].starts_with("POST "), "{printed:?}");
    assert!(
        printed[0].ends_with("/Messages.json To=+14155550123"),
        "{printed:?}"
    );
}

/// `check` on `policy`: (exit code, stderr).
fn check_text(name: &str, policy: &str) -> (i32, String) {
    let dir = std::env::temp_dir().join(format!("smsguard-cli-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, policy).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_smsguard"))
        .args(["check", "--config", path.to_str().unwrap()])
        .env_remove("SMSGUARD_CHECK_UNSET_TOKEN")
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&path);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn check_refuses_what_serve_refuses_and_says_what_to_write() {
    for (name, policy, says) in [
        (
            "exposed-admin",
            "[admin]\naddr = \"0.0.0.0:19090\"\ntoken_env = \"SMSGUARD_CHECK_UNSET_TOKEN\"\n",
            "serve would not start",
        ),
        (
            "clear-upstream",
            "[upstream]\napi = \"http://10.0.0.5:8080\"\n",
            "credentials in clear",
        ),
        (
            "hr",
            "[[limit]]\nname = \"n\"\nkey = \"to\"\nrates = [\"10/hr\"]\n",
            "write it like 10s, 5m, 1h or 1d",
        ),
        (
            "quoted-number",
            "[backoff]\nfree = \"2\"\nbase = \"30s\"\nmax = \"1m\"\nreset_after = \"1h\"\n",
            "write a whole number without quotes",
        ),
        (
            "bare-duration",
            "[backoff]\nbase = 30\nmax = \"1m\"\nreset_after = \"1h\"\n",
            "write a duration in quotes",
        ),
        (
            "host-name",
            "[listen]\naddr = \"localhost:18080\"\n",
            "write an IP address and a port",
        ),
    ] {
        let (code, err) = check_text(name, policy);
        assert_eq!(code, 1, "{name}: {err}");
        assert!(err.contains(says), "{name}: {err}");
    }
    // On loopback, http and a missing token are fine.
    let (code, err) = check_text(
        "loopback",
        "[admin]\naddr = \"127.0.0.1:19090\"\ntoken_env = \"SMSGUARD_CHECK_UNSET_TOKEN\"\n[upstream]\napi = \"http://127.0.0.1:9080\"\nverify = \"http://[::1]:9080\"\n",
    );
    assert_eq!(code, 0, "{err}");
}
