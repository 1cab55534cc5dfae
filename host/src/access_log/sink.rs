//! Where log lines go: a file, stdout or stderr, written by a thread of its own.
//!
//! A worker renders its line straight into a buffer of the sink's (one shard per worker
//! thread, so the lock it takes is its own but for the writer's swap); the sink's writer
//! thread swaps each shard's lines out every [`FLUSH_INTERVAL`], or sooner when a shard fills
//! past [`WAKE_AT_BYTES`], and does the I/O. A line costs no allocation, no channel and no
//! wake-up. When a shard is full (the disk cannot keep up) or a write fails (the disk is
//! full), lines are dropped and counted, never the request, and a worker never waits on a
//! disk. Files are shared by path across listeners, workers and config reloads, and reopened
//! (logrotate) on `POST /reopen_logs` or SIGUSR1.

use prometheus::{IntCounter, IntGauge};
use std::cell::Cell;
use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use std::thread::Thread;
use std::time::Duration;

/// Most bytes waiting for one sink's writer, all shards together.
pub const MAX_QUEUED_BYTES: usize = 4 * 1024 * 1024;
/// Shards per sink: worker threads past this many share shards (each still takes a lock of
/// its own most of the time).
const SHARDS: usize = 8;
/// Most bytes waiting in one shard; past it, lines are dropped.
const SHARD_BYTES: usize = MAX_QUEUED_BYTES / SHARDS;
/// A shard holding this much wakes the writer before its tick, so a fast worker's lines are
/// written long before its shard is full.
const WAKE_AT_BYTES: usize = 64 * 1024;
/// How often a writer drains its shards when nothing wakes it sooner.
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

/// One destination's lines waiting for its writer; the writer thread ends (after writing what
/// is left) when the last [`Sink`] handle is dropped.
#[derive(Debug)]
pub struct Sink {
    shared: Arc<Shared>,
}

/// What a sink's handles and its writer thread share.
#[derive(Debug)]
struct Shared {
    shards: Box<[Mutex<Shard>]>,
    /// Set when the last handle goes: the writer writes what is left and ends.
    closed: AtomicBool,
    /// The writer thread, to wake it early.
    writer: OnceLock<Thread>,
}

/// Lines one worker (or a few) rendered since the writer last took them.
#[derive(Debug, Default)]
struct Shard {
    lines: Vec<u8>,
    count: u64,
    /// The writer was woken for these lines already.
    woke: bool,
}

/// Which shard this thread writes to: threads take shards in turn as they first log.
fn shard_of_this_thread() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static SHARD: Cell<usize> = const { Cell::new(usize::MAX) };
    }
    SHARD.with(|shard| match shard.get() {
        usize::MAX => {
            let picked = NEXT.fetch_add(1, Ordering::Relaxed) % SHARDS;
            shard.set(picked);
            picked
        }
        picked => picked,
    })
}

fn lock(shard: &Mutex<Shard>) -> MutexGuard<'_, Shard> {
    shard
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
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
        let shared = Arc::new(Shared {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            closed: AtomicBool::new(false),
            writer: OnceLock::new(),
        });
        let writer = Writer {
            target: target.clone(),
            file,
            generation: REOPEN_GENERATION.load(Ordering::SeqCst),
            shared: shared.clone(),
        };
        let thread = std::thread::Builder::new()
            .name("weir-access-log".into())
            .spawn(move || writer.run())?;
        let _ = shared.writer.set(thread.thread().clone());
        let sink = Arc::new(Sink { shared });
        open.insert(target, Arc::downgrade(&sink));
        Ok(sink)
    }

    /// Queues the line `render` appends (ending in its newline) to this thread's shard, or
    /// drops and counts it when the shard is full. Never blocks on the writer's I/O.
    pub fn write_with(&self, render: impl FnOnce(&mut Vec<u8>)) {
        let shard = &self.shared.shards[shard_of_this_thread()];
        let mut shard = lock(shard);
        let before = shard.lines.len();
        render(&mut shard.lines);
        if shard.lines.len() > SHARD_BYTES {
            shard.lines.truncate(before);
            drop(shard);
            SinkStats::global().dropped_lines.inc();
            return;
        }
        shard.count += 1;
        if shard.lines.len() >= WAKE_AT_BYTES && !shard.woke {
            shard.woke = true;
            drop(shard);
            if let Some(writer) = self.shared.writer.get() {
                writer.unpark();
            }
        }
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.shared.closed.store(true, Ordering::Release);
        if let Some(writer) = self.shared.writer.get() {
            writer.unpark();
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
    shared: Arc<Shared>,
}

impl Writer {
    fn run(mut self) {
        let mut batch = Vec::new();
        loop {
            // Woken by a clock or a filling shard, not by each line: a worker then finds no
            // thread to wake, and the lines of a tick go out in a few large writes.
            std::thread::park_timeout(FLUSH_INTERVAL);
            let closed = self.shared.closed.load(Ordering::Acquire);
            for index in 0..self.shared.shards.len() {
                let count = {
                    let mut shard = lock(&self.shared.shards[index]);
                    if shard.count == 0 {
                        continue;
                    }
                    std::mem::swap(&mut shard.lines, &mut batch);
                    shard.woke = false;
                    std::mem::take(&mut shard.count)
                };
                let stats = SinkStats::global();
                stats.write_buffered.inc_by(count);
                stats.write_total_buffered.add(batch.len() as i64);
                self.write(&batch, count);
                batch.clear();
                // A burst's buffer is not kept for the quiet that follows.
                if batch.capacity() > 4 * WAKE_AT_BYTES {
                    batch = Vec::new();
                }
            }
            if closed {
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    fn lines_of(path: &Path, want: usize) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            let lines: Vec<String> = text.lines().map(str::to_owned).collect();
            if lines.len() >= want || Instant::now() > deadline {
                return lines;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    #[test]
    fn each_threads_lines_arrive_whole_and_in_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("a.log");
        let sink = Sink::open(Target::File(path.clone())).expect("open");
        let threads = 4;
        let per_thread = 2_000;
        std::thread::scope(|scope| {
            for t in 0..threads {
                let sink = &sink;
                scope.spawn(move || {
                    for i in 0..per_thread {
                        sink.write_with(|out| {
                            out.extend_from_slice(
                                format!("t{t} {i:05} {}\n", "x".repeat(100)).as_bytes(),
                            );
                        });
                    }
                });
            }
        });
        let lines = lines_of(&path, threads * per_thread);
        assert_eq!(lines.len(), threads * per_thread);
        for t in 0..threads {
            let mine: Vec<&String> = lines
                .iter()
                .filter(|l| l.starts_with(&format!("t{t} ")))
                .collect();
            assert_eq!(mine.len(), per_thread, "thread {t}");
            for (i, line) in mine.iter().enumerate() {
                assert!(line.starts_with(&format!("t{t} {i:05} ")), "{line}");
                assert_eq!(line.len(), format!("t{t} {i:05} ").len() + 100);
            }
        }
    }

    #[test]
    fn the_last_handle_going_writes_what_is_left() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("b.log");
        let sink = Sink::open(Target::File(path.clone())).expect("open");
        sink.write_with(|out| out.extend_from_slice(b"one\n"));
        sink.write_with(|out| out.extend_from_slice(b"two\n"));
        drop(sink);
        assert_eq!(lines_of(&path, 2), ["one", "two"]);
    }

    #[test]
    fn a_full_shard_drops_and_counts_lines_and_keeps_its_bound() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("c.log");
        let sink = Sink::open(Target::File(path.clone())).expect("open");
        let dropped = SinkStats::global().dropped_lines.get();
        let line = format!("{}\n", "y".repeat(4095));
        // Four shards' worth from one thread, as fast as it goes: whatever the writer keeps
        // up with, the shard never holds more than its bound, and each line is written or
        // counted as dropped.
        let lines = 4 * SHARD_BYTES / line.len();
        for _ in 0..lines {
            sink.write_with(|out| out.extend_from_slice(line.as_bytes()));
            let held = lock(&sink.shared.shards[shard_of_this_thread()])
                .lines
                .len();
            assert!(held <= SHARD_BYTES, "a shard holds {held} bytes");
        }
        drop(sink);
        let written = lines_of(&path, lines).len();
        let now_dropped = SinkStats::global().dropped_lines.get() - dropped;
        assert_eq!(
            written as u64 + now_dropped,
            lines as u64,
            "{written} written"
        );
    }
}
