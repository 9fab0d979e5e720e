//! The audit log: one JSON line per decision in a file, rotated by size.
//!
//! Lines are written by one background thread so a slow disk never stalls a
//! request; the fields are those of the decision event, with numbers masked
//! when configured. Never the auth token or the message body: the event
//! does not carry them.

use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::Mutex;

use serde::Serialize;

use super::DecisionEvent;
use crate::base::clock::Millis;

#[derive(Serialize)]
struct Line<'a> {
    time: String,
    endpoint: &'a str,
    product: &'a str,
    account: &'a str,
    to: &'a str,
    region: &'a str,
    prefix: &'a str,
    client_ip: &'a str,
    user: &'a str,
    stage: &'a str,
    rule: &'a str,
    action: &'a str,
    detail: &'a str,
    would_block: &'a [String],
}

pub struct Audit {
    tx: Mutex<mpsc::Sender<String>>,
}

impl Audit {
    /// Opens (appends to) `path`; rotates to `path.1` .. `path.KEEP` past
    /// `max_size` bytes.
    pub fn open(path: &Path, max_size: u64, keep: usize) -> Result<Audit, String> {
        let file = open_append(path)?;
        let size = file.metadata().map(|m| m.len()).unwrap_or(0);
        let (tx, rx) = mpsc::channel::<String>();
        let mut w = Writer {
            path: path.to_path_buf(),
            out: BufWriter::new(file),
            size,
            max_size: max_size.max(1),
            keep,
        };
        std::thread::Builder::new()
            .name("smsguard-audit".into())
            .spawn(move || {
                while let Ok(line) = rx.recv() {
                    w.write(&line);
                    // Drain what queued meanwhile, then flush once.
                    while let Ok(line) = rx.try_recv() {
                        w.write(&line);
                    }
                    if let Err(e) = w.out.flush() {
                        tracing::error!(error = %e, "audit log write failed");
                    }
                }
                let _ = w.out.flush();
            })
            .map_err(|e| format!("cannot start the audit writer: {e}"))?;
        Ok(Audit { tx: Mutex::new(tx) })
    }

    pub fn record(&self, e: &DecisionEvent, now: Millis) {
        let line = Line {
            time: humantime::format_rfc3339_millis(
                std::time::UNIX_EPOCH + std::time::Duration::from_millis(now),
            )
            .to_string(),
            endpoint: e.endpoint,
            product: e.product,
            account: e.account.as_deref().unwrap_or(""),
            to: e.to.as_deref().unwrap_or(""),
            region: e.region.as_deref().unwrap_or(""),
            prefix: e.prefix.as_deref().unwrap_or(""),
            client_ip: &e.client_ip,
            user: e.user.as_deref().unwrap_or(""),
            stage: e.stage.unwrap_or(""),
            rule: e.rule.as_deref().unwrap_or(""),
            action: e.action,
            detail: e.detail.as_deref().unwrap_or(""),
            would_block: &e.would_block,
        };
        if let Ok(mut text) = serde_json::to_string(&line) {
            text.push('\n');
            let tx = self.tx.lock().unwrap_or_else(|p| p.into_inner());
            let _ = tx.send(text);
        }
    }
}

fn open_append(path: &Path) -> Result<File, String> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| format!("audit file {}: {e}", path.display()))
}

struct Writer {
    path: PathBuf,
    out: BufWriter<File>,
    size: u64,
    max_size: u64,
    keep: usize,
}

impl Writer {
    fn write(&mut self, line: &str) {
        if self.size > 0 && self.size + line.len() as u64 > self.max_size {
            self.rotate();
        }
        match self.out.write_all(line.as_bytes()) {
            Ok(()) => self.size += line.len() as u64,
            Err(e) => tracing::error!(error = %e, "audit log write failed"),
        }
    }

    fn rotate(&mut self) {
        let _ = self.out.flush();
        let numbered = |n: usize| PathBuf::from(format!("{}.{n}", self.path.display()));
        if self.keep == 0 {
            let _ = fs::remove_file(&self.path);
        } else {
            let _ = fs::remove_file(numbered(self.keep));
            for n in (1..self.keep).rev() {
                let _ = fs::rename(numbered(n), numbered(n + 1));
            }
            let _ = fs::rename(&self.path, numbered(1));
        }
        match open_append(&self.path) {
            Ok(f) => {
                self.out = BufWriter::new(f);
                self.size = 0;
            }
            Err(e) => tracing::error!(error = %e, "audit log rotation failed"),
        }
    }
}

/// `+998993941234` → `+99899394****`: the last four digits hidden.
pub fn mask_number(n: &str) -> String {
    let keep = n.len().saturating_sub(4);
    let (head, tail) = n.split_at(keep);
    format!("{head}{}", "*".repeat(tail.chars().count()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_masked_to_their_prefix() {
        assert_eq!(mask_number("+998993941234"), "+99899394****");
        assert_eq!(mask_number("+12"), "***");
    }

    #[test]
    fn the_file_rotates_by_size_and_keeps_n_old_files() {
        let dir = std::env::temp_dir().join(format!("smsguard-audit-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("audit.log");
        let mut w = Writer {
            path: path.clone(),
            out: BufWriter::new(open_append(&path).unwrap()),
            size: 0,
            max_size: 100,
            keep: 2,
        };
        for i in 0..10 {
            w.write(&format!("{{\"line\": {i:040}}}\n"));
        }
        w.out.flush().unwrap();
        assert!(fs::metadata(&path).unwrap().len() <= 100);
        assert!(dir.join("audit.log.1").exists() && dir.join("audit.log.2").exists());
        assert!(!dir.join("audit.log.3").exists(), "only `keep` old files");
        let _ = fs::remove_dir_all(&dir);
    }
}
