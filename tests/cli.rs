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
