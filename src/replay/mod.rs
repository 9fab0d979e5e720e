//! `smsguard replay` and the demo: past or generated sends driven through
//! the same guard as `serve`, in front of the built-in fake Twilio, on a
//! simulated clock.
//!
//! One engine serves both: the demo is a replay of a generated day. A
//! record is one send as an operator's export describes it (Twilio's Bulk
//! Export JSON lines or the Console's CSV, plus smsguard's own optional
//! fields); it never reaches the network beyond 127.0.0.1.

pub mod demo;
pub mod engine;
pub mod input;
pub mod report;
pub mod traffic;

use std::net::IpAddr;

use crate::base::clock::Millis;
use crate::twilio::routes::Product;

/// One send to replay, in the order of its input.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// Line of the input it came from (1-based; 0 for generated traffic).
    pub line: usize,
    /// When it was sent (`date_created` / `date_sent` / `SentDate`).
    pub at: Millis,
    /// Destination as written in the export (`to` / `To`).
    pub to: String,
    pub from: Option<String>,
    /// Only its length and alphabet matter (segments); never printed.
    pub body: Option<String>,
    pub num_segments: Option<u32>,
    /// Media attached (`num_media`): an MMS is priced per message.
    pub num_media: Option<u32>,
    /// What Twilio charged, in millionths of the currency (absolute value:
    /// exports write charges as negative numbers).
    pub price: Option<u64>,
    pub status: Option<String>,
    /// `outbound-api` is judged; anything else is counted and skipped.
    pub direction: Option<String>,
    /// The account the send was billed to (`account_sid`), when known.
    pub account: Option<String>,
    pub client_ip: Option<IpAddr>,
    pub user: Option<String>,
    pub product: Product,
    /// Verify channel (`sms`, `call`, `whatsapp`); messaging ignores it.
    pub channel: Option<String>,
    /// When the recipient proved receipt: replayed as the real confirmation
    /// call (a Verify check answered `approved`, or Messaging Feedback
    /// `Outcome=confirmed`) at that moment, if the guard let the send out.
    pub confirmed_at: Option<Millis>,
    /// Free text the report groups by (`legitimate`, `attack: ...`).
    pub label: Option<String>,
    /// A time of the record was written without a zone, and read as UTC.
    pub zoneless: bool,
}

impl Record {
    /// A generated outbound send with everything optional left empty.
    pub fn new(at: Millis, to: impl Into<String>, product: Product) -> Record {
        Record {
            line: 0,
            at,
            to: to.into(),
            from: None,
            body: None,
            num_segments: None,
            num_media: None,
            price: None,
            status: None,
            direction: None,
            account: None,
            client_ip: None,
            user: None,
            product,
            channel: None,
            confirmed_at: None,
            label: None,
            zoneless: false,
        }
    }

    /// Whether the guard judges this record (outbound sends only).
    pub fn judged(&self) -> bool {
        self.direction
            .as_deref()
            .is_none_or(|d| d.eq_ignore_ascii_case("outbound-api"))
    }

    /// SMS segments the send was (or would be) billed for: the export's
    /// `num_segments`, else counted from the body, else one.
    pub fn segments(&self) -> u32 {
        match (self.num_segments, &self.body) {
            (Some(n), _) => n.max(1),
            (None, Some(b)) => crate::twilio::responses::segments(b).1,
            (None, None) => 1,
        }
    }
}

/// A runtime for a replay: one thread runs the client, the guard and the
/// fake Twilio, so a request never waits for another thread to wake up.
pub fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))
}

/// `smsguard replay --config FILE [--out DECISIONS.jsonl] TRAFFIC...`;
/// returns the exit code.
pub fn command(
    config: &std::path::Path,
    out: Option<&std::path::Path>,
    traffic: &[std::path::PathBuf],
) -> i32 {
    if let Some(out) = out {
        if let Some(input) = overwrites(out, config, traffic) {
            eprintln!(
                "--out {} is {}: refusing to overwrite an input (name another file)",
                out.display(),
                input.display()
            );
            return 1;
        }
    }
    let config = match crate::config::Config::load(config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return 1;
        }
    };
    let started = std::time::Instant::now();
    let loaded = match input::load(traffic) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("{e}");
            return 1;
        }
    };
    let read = started.elapsed().as_secs_f64();
    match run_and_print(config, &loaded, out, Some(read)) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("replay failed: {e}");
            1
        }
    }
}

/// The input (`config` or a traffic file) that `out` names, if any: the
/// same path, or the same file under another name (a link, `./`, `..`).
fn overwrites<'a>(
    out: &std::path::Path,
    config: &'a std::path::Path,
    traffic: &'a [std::path::PathBuf],
) -> Option<&'a std::path::Path> {
    let canonical = |p: &std::path::Path| std::fs::canonicalize(p).ok();
    // `out` may not exist yet: then it is its directory's, plus its name.
    let out_c = canonical(out).or_else(|| {
        let name = out.file_name()?;
        let dir = match out.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => std::path::Path::new("."),
        };
        Some(canonical(dir)?.join(name))
    });
    std::iter::once(config)
        .chain(traffic.iter().map(|p| p.as_path()))
        .find(|input| *input == out || (out_c.is_some() && canonical(input) == out_c))
}

/// Replays, prints the report, writes `--out`.
pub fn run_and_print(
    config: crate::config::Config,
    loaded: &input::Loaded,
    out: Option<&std::path::Path>,
    read_seconds: Option<f64>,
) -> Result<(), String> {
    // Opened first: a path that cannot be written fails before the replay.
    let file = out
        .map(|path| {
            std::fs::File::create(path)
                .map(|f| (path, f))
                .map_err(|e| format!("cannot write {}: {e}", path.display()))
        })
        .transpose()?;
    let mut replayed = runtime()?.block_on(engine::replay(config, loaded))?;
    replayed.report.read_seconds = read_seconds;
    print!("{}", replayed.report.render());
    if let Some((path, file)) = file {
        let mut w = std::io::BufWriter::new(file);
        report::write_decisions(&mut w, loaded, &replayed.outcomes)
            .and_then(|()| std::io::Write::flush(&mut w))
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        println!(
            "{:<25}{} (one line per input record, in input order)",
            "decisions written to:",
            path.display()
        );
    }
    Ok(())
}
