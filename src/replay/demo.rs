//! `smsguard demo`: a generated day of legitimate sends and SMS pumping
//! attacks ([`crate::replay::traffic`]), replayed by the same engine as
//! `smsguard replay` through the guard in front of the built-in fake
//! Twilio, offline. `--save` writes the day as JSON lines, so
//! `smsguard replay --config FILE day.jsonl` gives the same report.

use std::path::Path;

use crate::base::clock::{Clock, Millis, SystemClock};
use crate::config::Config;
use crate::replay::engine::{self, Replayed};
use crate::replay::input::{self, Loaded};
pub use crate::replay::traffic::Plan;

/// The built-in example policy.
pub const EXAMPLE_POLICY: &str = include_str!("../../config.example.toml");

/// The policy file, or the built-in example.
pub fn config(path: Option<&Path>) -> Result<Config, String> {
    match path {
        Some(p) => Config::load(p),
        None => Config::parse(Path::new("config.example.toml (built in)"), EXAMPLE_POLICY),
    }
    .map_err(|e| e.to_string())
}

/// The last UTC midnight: the demo's day starts there, so fake dates look
/// real.
pub fn today() -> Millis {
    SystemClock.now() / 86_400_000 * 86_400_000
}

/// The generated day, as replay input.
pub fn day(config: &Config, plan: &Plan, start: Millis) -> Result<Loaded, String> {
    let records = crate::replay::traffic::day(plan, start, config)?;
    Ok(Loaded::from_records("demo day", records))
}

/// Generates the day and replays it; returns its figures.
pub async fn run(config: Config, plan: &Plan) -> Result<Replayed, String> {
    let loaded = day(&config, plan, today())?;
    engine::replay(config, &loaded).await
}

/// `smsguard demo [--config FILE] [--seed N] [--held-out | --dispersed]
/// [--save FILE]`.
pub fn main(
    path: Option<&Path>,
    seed: Option<u64>,
    held_out: bool,
    dispersed: bool,
    save: Option<&Path>,
) -> i32 {
    let result = (|| -> Result<(), String> {
        let config = config(path)?;
        let mut plan = Plan {
            held_out: held_out || dispersed,
            dispersed,
            ..Plan::default()
        };
        if let Some(s) = seed {
            plan.seed = s;
        }
        let started = std::time::Instant::now();
        let loaded = day(&config, &plan, today())?;
        let generated = started.elapsed().as_secs_f64();
        if let Some(save) = save {
            let records: Vec<_> = loaded
                .entries
                .iter()
                .filter_map(|e| e.record.as_ref().ok().cloned())
                .collect();
            let file = std::fs::File::create(save)
                .map_err(|e| format!("cannot write {}: {e}", save.display()))?;
            let mut w = std::io::BufWriter::new(file);
            input::write_json_lines(&mut w, &records)
                .and_then(|()| std::io::Write::flush(&mut w))
                .map_err(|e| format!("cannot write {}: {e}", save.display()))?;
        }
        if plan.dispersed {
            println!(
                "smsguard demo: the two-day dispersed plan (seed {}): the held-out day, then a day of returning users,",
                plan.seed
            );
            println!(
                "new sign-ins and dispersed Verify, prefix-sprayer and poisoned-conversion attacks,"
            );
        } else {
            println!(
                "smsguard demo: a generated day of one-time-code traffic and SMS pumping attacks (seed {}{}),",
                plan.seed,
                if plan.held_out { ", held-out day" } else { "" }
            );
        }
        println!(
            "replayed as HTTP requests through the guard in front of a built-in fake Twilio (offline).\n"
        );
        crate::replay::run_and_print(config, &loaded, None, Some(generated))?;
        if let Some(save) = save {
            println!(
                "{:<25}{} (smsguard replay --config FILE {} gives this report again)",
                "day saved to:",
                save.display(),
                save.display()
            );
        }
        Ok(())
    })();
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("demo failed: {e}");
            1
        }
    }
}
