//! Where log lines go: a buffer in memory that a thread of its own writes
//! to stderr every few milliseconds.
//!
//! A send only appends its line to the buffer (a lock and a copy): no
//! system call, no wake-up of another thread, so nothing on the request
//! path waits for stderr or for the scheduler. Under load one `write(2)`
//! carries hundreds of lines. When stderr stalls (a pipe nobody reads, a
//! slow disk) the buffer fills up to [`MAX_QUEUED`] bytes and further lines
//! are dropped and counted, never waited for.

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::thread::JoinHandle;
use std::time::Duration;

/// How often the writer thread writes what was queued.
pub const FLUSH_EVERY: Duration = Duration::from_millis(20);

/// Bytes queued at most (some 50,000 decision lines); past this a line is
/// dropped and counted.
pub const MAX_QUEUED: usize = 16 << 20;

pub struct Sink {
    queued: Mutex<Vec<u8>>,
    dropped: AtomicU64,
    stop: AtomicBool,
    max: usize,
}

impl Sink {
    pub fn new(max: usize) -> Sink {
        Sink {
            queued: Mutex::new(Vec::new()),
            dropped: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            max,
        }
    }

    /// Queues whole lines (one event's text), or drops them when the
    /// queue is full.
    pub fn push(&self, lines: &[u8]) {
        let mut q = self.queued.lock().unwrap_or_else(|p| p.into_inner());
        if q.len() + lines.len() > self.max {
            drop(q);
            let n = lines.iter().filter(|b| **b == b'\n').count().max(1);
            self.dropped.fetch_add(n as u64, Ordering::Relaxed);
            return;
        }
        q.extend_from_slice(lines);
    }

    /// Lines dropped so far.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Writes what is queued to `out`; `spare` is the buffer swapped in
    /// (so the queue keeps its capacity and nothing is allocated).
    fn drain(&self, out: &mut dyn Write, spare: &mut Vec<u8>) {
        spare.clear();
        {
            let mut q = self.queued.lock().unwrap_or_else(|p| p.into_inner());
            std::mem::swap(&mut *q, spare);
        }
        if !spare.is_empty() {
            // Nobody to tell if stderr is gone; the lines are lost either way.
            let _ = out.write_all(spare);
            let _ = out.flush();
        }
        // A burst must not keep its memory for good.
        if spare.capacity() > 1 << 20 {
            *spare = Vec::new();
        }
    }

    /// Starts the writer thread: it writes to `out` every [`FLUSH_EVERY`]
    /// until [`Writer::stop`].
    pub fn start(sink: &'static Sink, mut out: Box<dyn Write + Send>) -> std::io::Result<Writer> {
        let thread = std::thread::Builder::new()
            .name("smsguard-log".into())
            .spawn(move || {
                let mut spare = Vec::new();
                loop {
                    let stopping = sink.stop.load(Ordering::Acquire);
                    sink.drain(&mut *out, &mut spare);
                    if stopping {
                        return;
                    }
                    std::thread::park_timeout(FLUSH_EVERY);
                }
            })?;
        Ok(Writer {
            sink,
            thread: Some(thread),
        })
    }
}

/// The running writer thread; stopping it (or dropping this) writes out
/// what is queued first.
pub struct Writer {
    sink: &'static Sink,
    thread: Option<JoinHandle<()>>,
}

/// How long stopping waits for the last lines to be written: a stderr
/// that stalled must not keep the process from exiting.
pub const STOP_WAIT: Duration = Duration::from_secs(1);

impl Writer {
    pub fn stop(&mut self) {
        if let Some(t) = self.thread.take() {
            self.sink.stop.store(true, Ordering::Release);
            t.thread().unpark();
            let until = std::time::Instant::now() + STOP_WAIT;
            while !t.is_finished() && std::time::Instant::now() < until {
                std::thread::sleep(Duration::from_millis(5));
            }
            if t.is_finished() {
                let _ = t.join();
            }
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// What tracing's formatter writes one event through.
pub struct EventWriter(&'static Sink);

impl Write for EventWriter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.push(b);
        Ok(b.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for &'static Sink {
    type Writer = EventWriter;

    fn make_writer(&'a self) -> EventWriter {
        EventWriter(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[derive(Clone, Default)]
    struct Out(Arc<Mutex<Vec<u8>>>, Arc<AtomicU64>);
    impl Write for Out {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.1.fetch_add(1, Ordering::Relaxed);
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn lines_are_written_in_order_in_few_writes_and_all_of_them_on_stop() {
        let sink: &'static Sink = Box::leak(Box::new(Sink::new(1 << 20)));
        let out = Out::default();
        let mut w = Sink::start(sink, Box::new(out.clone())).unwrap();
        for i in 0..10_000 {
            sink.push(format!("line {i}\n").as_bytes());
        }
        w.stop();
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 10_000);
        assert!(lines
            .iter()
            .enumerate()
            .all(|(i, l)| *l == format!("line {i}")));
        let writes = out.1.load(Ordering::Relaxed);
        assert!(writes < 100, "{writes} writes for 10,000 lines");
        assert_eq!(sink.dropped(), 0);
    }

    #[test]
    fn stopping_gives_up_on_a_stderr_that_never_takes_a_byte() {
        struct Stalled;
        impl Write for Stalled {
            fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
                loop {
                    std::thread::sleep(Duration::from_secs(3600));
                }
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let sink: &'static Sink = Box::leak(Box::new(Sink::new(1 << 20)));
        let mut w = Sink::start(sink, Box::new(Stalled)).unwrap();
        sink.push(b"a line\n");
        std::thread::sleep(FLUSH_EVERY * 3);
        let t = std::time::Instant::now();
        w.stop();
        assert!(t.elapsed() < STOP_WAIT * 3, "{:?}", t.elapsed());
        // Meanwhile sends go on queueing.
        sink.push(b"another\n");
        assert_eq!(sink.dropped(), 0);
    }

    #[test]
    fn a_full_queue_drops_and_counts_lines_instead_of_waiting() {
        // No writer thread: stderr stalled for good.
        let sink = Sink::new(100);
        for _ in 0..10 {
            sink.push(b"0123456789012345678\n"); // 20 bytes
        }
        assert_eq!(sink.dropped(), 5);
        assert_eq!(sink.queued.lock().unwrap().len(), 100);
        // A line that does not fit whole is dropped whole.
        let sink = Sink::new(25);
        sink.push(b"0123456789012345678\n");
        sink.push(b"0123456789\n");
        assert_eq!(sink.dropped(), 1);
        assert_eq!(sink.queued.lock().unwrap().len(), 20);
    }
}
