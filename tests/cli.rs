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
    assert!(!off.contains("smsguard::decision"), "{off}");
}
