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

/// A send never waits for the log: `serve` with its stderr a pipe nobody
/// reads (a stalled log shipper) still answers thousands of sends, each
/// logged at `info`, after the pipe has filled. A writer on the request
/// path would block in `write` once the pipe's 64 KiB were full.
#[test]
fn a_stalled_stderr_never_holds_up_a_send() {
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::TcpStream;
    use std::time::Duration;

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    let dir = std::env::temp_dir().join(format!("smsguard-cli-log-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("log.toml");
    // Every send shadowed: no upstream is ever contacted.
    std::fs::write(
        &path,
        format!("[listen]\naddr = \"127.0.0.1:{port}\"\n[geo]\nallow = [\"US\"]\n[shadow]\ntiming = false\n[log]\nlevel = \"info\"\n"),
    )
    .unwrap();
    /// Stopped by PID however the test ends.
    struct Serve(std::process::Child);
    impl Drop for Serve {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let child = Serve(
        Command::new(env!("CARGO_BIN_EXE_smsguard"))
            .args(["serve", "--config", path.to_str().unwrap()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut conn = None;
    for _ in 0..200 {
        if let Ok(c) = TcpStream::connect(("127.0.0.1", port)) {
            conn = Some(c);
            break;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    let conn = conn.expect("the guard listens");
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut w = conn;
    let body = "To=%2B998993941234&From=%2B15005550006&Body=hi";
    let req = format!(
        "POST /2010-04-01/Accounts/AC0123456789abcdef0123456789abcdef/Messages.json HTTP/1.1\r\nHost: x\r\nAuthorization: Basic QUM6dA==\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    // ~300 bytes of log per send: 3,000 sends are 14 times the pipe.
    for i in 0..3_000 {
        w.write_all(req.as_bytes()).unwrap();
        let mut status = String::new();
        reader
            .read_line(&mut status)
            .unwrap_or_else(|e| panic!("send {i} got no answer: {e}"));
        assert!(status.starts_with("HTTP/1.1 201"), "send {i}: {status}");
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
    }
    drop(child);
    let _ = std::fs::remove_dir_all(&dir);
}
