//! The live dashboard in headless Chromium (Debian `chromium`, driven by
//! playwright-core): after a burst of traffic it shows the burst's figures
//! and its conversion (sends confirmed through `/api/confirm`), and its
//! Unblock button removes a block. Saves a screenshot to
//! `target/tmp/dashboard.png`, or to the README's `docs/dashboard.png` with
//! `SMSGUARD_UPDATE_SCREENSHOT=1` (so a test run leaves the tree clean).

mod common;

use std::path::Path;
use std::process::Command;

use bytes::Bytes;
use common::*;
use http::{Method, Request, StatusCode};
use http_body_util::Full;

const TOKEN: &str = "dashboard-test-token-51f0";

fn required(path: &Path, what: &str) -> bool {
    if path.exists() {
        return true;
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!(
            "{what} is missing at {}: .ci/run installs it",
            path.display()
        );
    }
    eprintln!("skipping: {what} is missing at {}", path.display());
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_a_burst_and_unblocks() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let chromium = Path::new("/usr/bin/chromium");
    if !required(chromium, "chromium")
        || !required(
            &root.join("tests/dashboard/node_modules/playwright-core/package.json"),
            "playwright-core",
        )
    {
        return;
    }
    std::env::set_var("SMSGUARD_DASHBOARD_TOKEN", TOKEN);
    // `[adaptive]` takes confirmations; its signals that could trip on
    // this burst are turned off.
    let env = start(
        "[geo]\nallow = [\"US\", \"GB\"]\n[admin]\naddr = \"127.0.0.1:0\"\ntoken_env = \"SMSGUARD_DASHBOARD_TOKEN\"\n[[limit]]\nname = \"prefix\"\nkey = \"prefix:8\"\nrates = [\"3/10m\"]\nblock = \"1h\"\n[budget]\ndaily = \"5\"\nprices = { default = \"0.01\" }\n[adaptive]\n[adaptive.surge]\nfloor = 100000\nregion = 0\n[adaptive.distinct]\nclient_ip = []\nuser = []\nregions = 0\n",
    )
    .await;
    // The burst: 40 sends to the pumped block, a UK range hammered until the
    // prefix limit blocks it, and some ordinary sends.
    for i in 0..40 {
        env.send(&format!("+99899394{i:04}")).await;
    }
    for i in 0..6 {
        env.send(&format!("+4474001234{i:02}")).await;
    }
    for area in [212, 312, 415, 617, 718] {
        env.send(&format!("+1{area}5550123")).await;
    }
    let shadow = 40 + 3;
    let allow = 3 + 5;
    assert_eq!(env.upstream_count(), allow);
    let key = "prefix:8=+44740012";
    let screenshot = if std::env::var_os("SMSGUARD_UPDATE_SCREENSHOT").is_some_and(|v| v == "1") {
        root.join("docs/dashboard.png")
    } else {
        Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard.png")
    };
    // Removed first, so that the check below sees this run's screenshot.
    let _ = std::fs::remove_file(&screenshot);
    let admin = format!("http://{}", env.guard.admin_addr().unwrap());
    // Confirmations: 4 of the 5 US sends, 1 of the 3 forwarded UK ones.
    for to in [
        "+12125550123",
        "+13125550123",
        "+14155550123",
        "+16175550123",
        "+447400123400",
    ] {
        let r = env
            .request(
                Request::builder()
                    .method(Method::POST)
                    .uri(format!("{admin}/api/confirm"))
                    .header("authorization", format!("Bearer {TOKEN}"))
                    .header("content-type", "application/json")
                    .body(Full::new(Bytes::from(format!(r#"{{"to": "{to}"}}"#))))
                    .unwrap(),
            )
            .await;
        assert_eq!(
            (r.status, r.json()["confirmed"].as_bool()),
            (StatusCode::OK, Some(true)),
            "{to}: {}",
            r.text()
        );
    }
    let conversion = serde_json::json!({
        "regions": [
            {"region": "US", "forwarded": 5, "confirmed": 4, "rate": "80%", "low": false},
            {"region": "GB", "forwarded": 3, "confirmed": 1, "rate": "33%", "low": true},
        ],
        "lowest_prefix": "+44740012",
    });
    let out = tokio::task::spawn_blocking({
        let (root, admin, screenshot) = (root.to_path_buf(), admin.clone(), screenshot.clone());
        move || {
            Command::new("node")
                .arg("drive.mjs")
                .current_dir(root.join("tests/dashboard"))
                .env("ADMIN_URL", admin)
                .env("ADMIN_TOKEN", TOKEN)
                .env("EXPECT_SHADOW", shadow.to_string())
                .env("EXPECT_ALLOW", allow.to_string())
                .env("UNBLOCK_KEY", key)
                .env("EXPECT_CONVERSION", conversion.to_string())
                // At 0.01 a send: 43 stopped, 8 forwarded, of 5 a day.
                .env(
                    "EXPECT_MONEY",
                    r#"{"saved": "0.43 USD", "spent": "0.08 USD", "left": "4.92 USD"}"#,
                )
                .env("SCREENSHOT", screenshot)
                .env("CHROMIUM", "/usr/bin/chromium")
                .output()
                .expect("node runs")
        }
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "drive.mjs failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(screenshot.exists(), "no screenshot");
    // The click really removed the block: the guard lets the prefix through;
    // the block added with the form holds the number in E.164.
    let r = env
        .request(
            Request::builder()
                .method(Method::GET)
                .uri(format!("{admin}/api/blocks"))
                .header("authorization", format!("Bearer {TOKEN}"))
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let blocks = r.json()["blocks"].clone();
    assert_eq!(blocks.as_array().unwrap().len(), 1, "{}", r.text());
    assert_eq!(blocks[0]["key"], "to=+13035550199", "{}", r.text());
    let before = env.upstream_count();
    env.send("+13035550199").await;
    assert_eq!(env.upstream_count(), before, "the form's block holds");
    // Two windows later nothing of the burst counts any more.
    env.clock.advance(std::time::Duration::from_secs(1201));
    env.send("+447400123499").await;
    assert_eq!(env.upstream_count(), allow + 1);
}
