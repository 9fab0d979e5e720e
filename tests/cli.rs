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
