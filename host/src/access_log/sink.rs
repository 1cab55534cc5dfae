//! Where log lines go: a file, stdout or stderr, written by a thread of its own.
//!
//! A worker only hands a finished line to a bounded queue (lines and bytes); the sink's
//! writer thread does the I/O. When the queue is full (the disk cannot keep up) or a write
//! fails (the disk is full), lines are dropped and counted, never the request, and a worker
//! never waits on a disk. Files are shared by path across listeners, workers and config
//! reloads, and reopened (logrotate) on `POST /reopen_logs` or SIGUSR1.

use prometheus::{IntCounter, IntGauge};
use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, TrySendError};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

/// Most lines waiting for one sink's writer.
pub const MAX_QUEUED_LINES: usize = 16 * 1024;
/// Most bytes waiting for one sink's writer.
pub const MAX_QUEUED_BYTES: usize = 4 * 1024 * 1024;
/// Most bytes written at once.
const BATCH_BYTES: usize = 64 * 1024;
/// How often a writer drains its queue (the queue holds [`MAX_QUEUED_LINES`] lines, so a
/// sink takes up to ~300k lines a second before it drops any).
const FLUSH_INTERVAL: Duration = Duration::from_millis(50);

/// Bumped by [`reopen_all`]; each file writer reopens when it sees a new value.
static REOPEN_GENERATION: AtomicU64 = AtomicU64::new(0);

/// Asks every file sink to reopen its file before its next write (logrotate's
/// `postrotate`: `POST /reopen_logs`, SIGUSR1).
pub fn reopen_all() {
    REOPEN_GENERATION.fetch_add(1, Ordering::SeqCst);
    tracing::info!("access logs: reopening files");
}

/// The access log stats, process-wide: Envoy's `access_logs.file.*` and weir's dropped-line
/// count.
pub struct SinkStats {
    /// Lines queued for writing (`access_logs.file.write_buffered`).
    pub write_buffered: IntCounter,
    /// Writes that completed (`access_logs.file.write_completed`).
    pub write_completed: IntCounter,
    /// Writes that failed (`access_logs.file.write_failed`).
    pub write_failed: IntCounter,
    /// Reopens that failed (`access_logs.file.reopen_failed`).
    pub reopen_failed: IntCounter,
    /// Bytes waiting to be written (`access_logs.file.write_total_buffered`).
    pub write_total_buffered: IntGauge,
    /// Lines dropped: the queue was full or their write failed (weir's own).
    pub dropped_lines: IntCounter,
}

impl SinkStats {
    /// The process-wide instance.
    pub fn global() -> &'static SinkStats {
        static STATS: OnceLock<SinkStats> = OnceLock::new();
        STATS.get_or_init(|| {
            let registry = crate::stats::Stats::global().registry();
            let counter = |name: &str, help: &str| {
                let counter = IntCounter::new(name, help)
                    .unwrap_or_else(|e| unreachable!("static metric {name} is valid: {e}"));
                if let Err(e) = registry.register(Box::new(counter.clone())) {
                    unreachable!("static metric {name} is registered once: {e}");
                }
                counter
            };
            let gauge = IntGauge::new(
                "weir_access_logs_file_write_total_buffered",
                "Access log bytes waiting to be written.",
            )
            .unwrap_or_else(|e| unreachable!("static metric is valid: {e}"));
            if let Err(e) = registry.register(Box::new(gauge.clone())) {
                unreachable!("static metric is registered once: {e}");
            }
            SinkStats {
                write_buffered: counter(
                    "weir_access_logs_file_write_buffered",
                    "Access log lines queued for writing.",
                ),
                write_completed: counter(
                    "weir_access_logs_file_write_completed",
                    "Access log writes that completed.",
                ),
                write_failed: counter(
                    "weir_access_logs_file_write_failed",
                    "Access log writes that failed.",
                ),
                reopen_failed: counter(
                    "weir_access_logs_file_reopen_failed",
                    "Access log files that could not be reopened.",
                ),
                write_total_buffered: gauge,
                dropped_lines: counter(
                    "weir_access_log_dropped_lines",
                    "Access log lines dropped: the queue was full or the write failed.",
                ),
            }
        })
    }
}

/// Where a sink writes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Target {
    /// A file, opened for appending.
    File(PathBuf),
    /// The process's stdout.
    Stdout,
    /// The process's stderr.
    Stderr,
}

/// One destination's queue; its writer thread ends when the last [`Sink`] handle is dropped.
#[derive(Debug)]
pub struct Sink {
    queue: SyncSender<String>,
    queued_bytes: Arc<AtomicUsize>,
}

impl Sink {
    /// The sink for `target`, shared with every other logger that writes there; a file is
    /// opened (created) now, so a path that cannot be written is a config error.
    pub fn open(target: Target) -> std::io::Result<Arc<Sink>> {
        static OPEN: OnceLock<Mutex<HashMap<Target, Weak<Sink>>>> = OnceLock::new();
        let mut open = OPEN
            .get_or_init(Default::default)
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        open.retain(|_, sink| sink.strong_count() > 0);
        if let Some(sink) = open.get(&target).and_then(Weak::upgrade) {
            return Ok(sink);
        }
        let file = match &target {
            Target::File(path) => Some(open_file(path)?),
            Target::Stdout | Target::Stderr => None,
        };
        let (queue, lines) = std::sync::mpsc::sync_channel(MAX_QUEUED_LINES);
        let queued_bytes = Arc::new(AtomicUsize::new(0));
        let writer = Writer {
            target: target.clone(),
            file,
            generation: REOPEN_GENERATION.load(Ordering::SeqCst),
            queued_bytes: queued_bytes.clone(),
        };
        std::thread::Builder::new()
            .name("weir-access-log".into())
            .spawn(move || writer.run(lines))?;
        let sink = Arc::new(Sink {
            queue,
            queued_bytes,
        });
        open.insert(target, Arc::downgrade(&sink));
        Ok(sink)
    }

    /// Queues `line` (which ends in its newline), or drops and counts it when the queue is
    /// full. Never blocks.
    pub fn write(&self, line: String) {
        let stats = SinkStats::global();
        let len = line.len();
        if self.queued_bytes.fetch_add(len, Ordering::Relaxed) + len > MAX_QUEUED_BYTES {
            self.queued_bytes.fetch_sub(len, Ordering::Relaxed);
            stats.dropped_lines.inc();
            return;
        }
        match self.queue.try_send(line) {
            Ok(()) => {
                stats.write_buffered.inc();
                stats.write_total_buffered.add(len as i64);
            }
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.queued_bytes.fetch_sub(len, Ordering::Relaxed);
                stats.dropped_lines.inc();
            }
        }
    }
}

fn open_file(path: &Path) -> std::io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

/// The thread side of a sink.
struct Writer {
    target: Target,
    file: Option<File>,
    generation: u64,
    queued_bytes: Arc<AtomicUsize>,
}

impl Writer {
    fn run(mut self, lines: Receiver<String>) {
        let mut batch = Vec::with_capacity(BATCH_BYTES);
        loop {
            // Woken by a clock, not by each line: a worker's `try_send` then finds no thread
            // to wake, and the lines of a tick go out in a few large writes.
            std::thread::sleep(FLUSH_INTERVAL);
            let mut disconnected = false;
            loop {
                batch.clear();
                let mut count = 0u64;
                while batch.len() < BATCH_BYTES {
                    match lines.try_recv() {
                        Ok(line) => {
                            batch.extend_from_slice(line.as_bytes());
                            count += 1;
                        }
                        Err(TryRecvError::Empty) => break,
                        Err(TryRecvError::Disconnected) => {
                            disconnected = true;
                            break;
                        }
                    }
                }
                if count == 0 {
                    break;
                }
                self.queued_bytes.fetch_sub(batch.len(), Ordering::Relaxed);
                self.write(&batch, count);
            }
            if disconnected {
                return;
            }
        }
    }

    fn write(&mut self, batch: &[u8], lines: u64) {
        let stats = SinkStats::global();
        stats.write_total_buffered.sub(batch.len() as i64);
        self.reopen_if_asked();
        let result = match (&self.target, &mut self.file) {
            (Target::File(_), Some(file)) => file.write_all(batch),
            (Target::File(_), None) => Err(std::io::Error::other("file not open")),
            (Target::Stdout, _) => std::io::stdout().lock().write_all(batch),
            (Target::Stderr, _) => std::io::stderr().lock().write_all(batch),
        };
        match result {
            Ok(()) => stats.write_completed.inc(),
            Err(error) => {
                stats.write_failed.inc();
                stats.dropped_lines.inc_by(lines);
                tracing::debug!(%error, target = ?self.target, lines, "access log write failed");
            }
        }
    }

    fn reopen_if_asked(&mut self) {
        let now = REOPEN_GENERATION.load(Ordering::SeqCst);
        if now == self.generation {
            return;
        }
        self.generation = now;
        if let Target::File(path) = &self.target {
            match open_file(path) {
                Ok(file) => self.file = Some(file),
                Err(error) => {
                    SinkStats::global().reopen_failed.inc();
                    tracing::warn!(%error, path = %path.display(), "access log: reopen failed");
                }
            }
        }
    }
}
