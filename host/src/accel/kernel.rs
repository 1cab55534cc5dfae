//! The kernel path: loading `ebpf/splice.bpf.c` (built by `host/build.rs`) with aya, once per
//! process, and the per-tunnel entries in its maps.
//!
//! The program is an `sk_skb/stream_verdict` attached to the `socks` sockhash: each skb a
//! member socket receives is redirected to the egress of the socket named by `peers[cookie]`.
//! Loading needs CAP_BPF + CAP_NET_ADMIN (or CAP_SYS_ADMIN); without them, or with the object
//! not built, [`get`] says why and tunnels are moved in user space. It is only loaded where
//! `--accel kernel` asked for it (see [`super::Mode`]).

use crate::socket as sock;
use aya::Ebpf;
use aya::maps::{HashMap as BpfHashMap, MapData, RingBuf, SockHash};
use aya::programs::SkSkb;
use std::collections::HashMap;
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Instant;
use tokio::net::TcpStream;

/// Why the kernel splice is not in use.
#[derive(Debug, thiserror::Error)]
pub enum Unavailable {
    /// clang was missing when weir was built: the embedded object is empty.
    #[error("the eBPF program was not built (clang missing at build time; `make deps`)")]
    NotBuilt,
    /// The kernel refused to load or attach (typically not root / no CAP_BPF + CAP_NET_ADMIN).
    #[error("cannot {step} the eBPF program: {reason}{hint}")]
    Load {
        /// parse, load, attach, or find a map.
        step: &'static str,
        /// aya's error, with its causes.
        reason: String,
        /// A hint on privileges when the kernel said EPERM.
        hint: &'static str,
    },
}

/// A failure to add or remove one tunnel's entries.
#[derive(Debug, thiserror::Error)]
pub enum MapError {
    /// A socket option could not be read.
    #[error("socket: {0}")]
    Socket(#[from] std::io::Error),
    /// The kernel refused a map update (full map, socket state).
    #[error("map update: {0}")]
    Map(#[from] aya::maps::MapError),
    /// The task reading the program's wake-ups could not be started earlier.
    #[error("the wake-up ring buffer is not being read")]
    NoWakes,
}

/// The 8-byte-aligned embedded object (aya's ELF parser needs aligned data).
#[repr(C, align(8))]
struct Aligned<B: ?Sized>(B);
static OBJECT: &Aligned<[u8]> =
    &Aligned(*include_bytes!(concat!(env!("OUT_DIR"), "/splice.bpf.o")));

static KERNEL: OnceLock<Result<Kernel, Unavailable>> = OnceLock::new();

/// The loaded program and its maps, for the life of the process.
pub struct Kernel {
    maps: Mutex<Maps>,
    /// The reader of the program's `wakes` ring buffer.
    wake_reader: Mutex<WakeReader>,
    /// Who waits for a `wakes` entry, by cookie.
    waiters: Mutex<HashMap<u64, Arc<tokio::sync::Notify>>>,
    /// Owns the program and its attachment; dropping it would detach.
    _ebpf: Mutex<Ebpf>,
}

/// The task reading the `wakes` ring buffer, started by the first tunnel that needs it.
enum WakeReader {
    /// Not started: the ring buffer, for the task to take.
    Idle(RingBuf<MapData>),
    Running,
    /// Could not be started (no tokio runtime, or epoll refused the fd).
    Failed,
}

struct Maps {
    socks: SockHash<MapData, u64>,
    peers: BpfHashMap<MapData, u64, u64>,
    bytes: BpfHashMap<MapData, u64, u64>,
    wake_at: BpfHashMap<MapData, u64, u64>,
}

/// The kernel splice, loaded on first call; the reason it is off otherwise. The first call
/// logs the outcome once (info when on, warn when off).
pub fn get() -> Result<&'static Kernel, &'static Unavailable> {
    KERNEL
        .get_or_init(|| {
            let started = Instant::now();
            let loaded = load();
            match &loaded {
                Ok(_) => tracing::info!(
                    load_ms = started.elapsed().as_millis() as u64,
                    "accel: kernel splice on (eBPF sockhash + sk_skb verdict)"
                ),
                Err(reason) => {
                    tracing::warn!("accel: kernel splice unavailable: {reason}; tunnels are moved with splice(2) instead")
                }
            }
            loaded
        })
        .as_ref()
}

/// The kernel splice if it has been loaded; never loads it.
pub fn loaded() -> Option<&'static Kernel> {
    KERNEL.get().and_then(|loaded| loaded.as_ref().ok())
}

fn load() -> Result<Kernel, Unavailable> {
    if OBJECT.0.is_empty() {
        return Err(Unavailable::NotBuilt);
    }
    let mut ebpf = Ebpf::load(&OBJECT.0).map_err(|e| failed("load", &e))?;
    let socks: SockHash<MapData, u64> = take(&mut ebpf, "socks")?;
    let peers: BpfHashMap<MapData, u64, u64> = take(&mut ebpf, "peers")?;
    let bytes: BpfHashMap<MapData, u64, u64> = take(&mut ebpf, "bytes")?;
    let wake_at: BpfHashMap<MapData, u64, u64> = take(&mut ebpf, "wake_at")?;
    let wakes: RingBuf<MapData> = take(&mut ebpf, "wakes")?;
    let program: &mut SkSkb = ebpf
        .program_mut("splice_verdict")
        .ok_or_else(|| missing("program splice_verdict"))?
        .try_into()
        .map_err(|e| failed("find", &e))?;
    program.load().map_err(|e| failed("load", &e))?;
    program
        .attach(socks.fd())
        .map_err(|e| failed("attach", &e))?;
    Ok(Kernel {
        maps: Mutex::new(Maps {
            socks,
            peers,
            bytes,
            wake_at,
        }),
        wake_reader: Mutex::new(WakeReader::Idle(wakes)),
        waiters: Mutex::new(HashMap::new()),
        _ebpf: Mutex::new(ebpf),
    })
}

fn take<M>(ebpf: &mut Ebpf, name: &'static str) -> Result<M, Unavailable>
where
    M: TryFrom<aya::maps::Map, Error = aya::maps::MapError>,
{
    let map = ebpf.take_map(name).ok_or_else(|| missing(name))?;
    M::try_from(map).map_err(|e| failed("find", &e))
}

fn missing(what: &'static str) -> Unavailable {
    Unavailable::Load {
        step: "find",
        reason: format!("{what} is not in the object"),
        hint: "",
    }
}

/// The error with its causes; a privilege hint where the kernel said EPERM.
fn failed(step: &'static str, error: &dyn std::error::Error) -> Unavailable {
    let mut reason = error.to_string();
    let mut source = error.source();
    let mut eperm = false;
    while let Some(cause) = source {
        let text = cause.to_string();
        if !reason.contains(&text) {
            reason.push_str(": ");
            reason.push_str(&text);
        }
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            eperm |= io.raw_os_error() == Some(libc::EPERM);
        }
        source = cause.source();
    }
    eperm |= reason.contains("Operation not permitted");
    let hint = if eperm {
        " (not privileged: needs root, or CAP_BPF + CAP_NET_ADMIN)"
    } else {
        ""
    };
    Unavailable::Load { step, reason, hint }
}

impl Kernel {
    fn maps(&self) -> MutexGuard<'_, Maps> {
        // A panic while holding the lock cannot leave the maps inconsistent beyond what the
        // kernel already reflects, so a poisoned lock is used as is.
        lock(&self.maps)
    }

    /// Splices `a` and `b`: from now on what either receives is sent out of the other.
    ///
    /// Order matters (see ebpf/splice.bpf.c): counters and peers first, then one socket, then
    /// the other into the sockhash. What the first one receives before the second joins
    /// cannot be redirected: the program passes it up and user space copies it, while what
    /// arrives after is redirected and may get there first (seen once in a loaded test run: a
    /// download that began on accept, 64 KiB passed up, the stream reordered; the two inserts
    /// are microseconds apart unless weir's thread is preempted between them). What a socket
    /// held before joining was not at risk in the tests (1 MiB queued on the socket that
    /// joined first stayed in order): the program seems to read it on the next arrival, by
    /// which time both are in. So the socket that holds no bytes, the side that is not talking, goes
    /// in first; where both hold bytes (both sides spoke before the link), `b` goes first. On failure the entries
    /// made so far are removed by the returned error path ([`Pair`]'s drop).
    pub fn link(&'static self, a: &TcpStream, b: &TcpStream) -> Result<Pair, MapError> {
        let pair = Pair {
            kernel: self,
            a: sock::cookie(a)?,
            b: sock::cookie(b)?,
        };
        let b_first = sock::bytes_readable(b)? == 0 || sock::bytes_readable(a)? > 0;
        let mut maps = self.maps();
        maps.bytes.insert(pair.a, 0, 0)?;
        maps.bytes.insert(pair.b, 0, 0)?;
        maps.peers.insert(pair.a, pair.b, 0)?;
        maps.peers.insert(pair.b, pair.a, 0)?;
        let (first, second) = if b_first {
            ((pair.b, b), (pair.a, a))
        } else {
            ((pair.a, a), (pair.b, b))
        };
        maps.socks.insert(first.0, first.1.as_raw_fd(), 0)?;
        maps.socks.insert(second.0, second.1.as_raw_fd(), 0)?;
        drop(maps);
        Ok(pair)
    }

    /// Entries in the program's own maps (`peers`, `bytes`, `wake_at`) and in the table of
    /// who waits for a wake-up; 0 when no tunnel is spliced.
    pub fn entries(&self) -> usize {
        let maps = self.maps();
        maps.peers.keys().count()
            + maps.bytes.keys().count()
            + maps.wake_at.keys().count()
            + lock(&self.waiters).len()
    }

    /// Starts, once, the task that reads the program's `wakes` ring buffer and notifies the
    /// waiter of each cookie in it. Needs a tokio runtime; where it could not be started,
    /// every later call says so too.
    fn start_wake_reader(&'static self) -> Result<(), MapError> {
        let mut state = lock(&self.wake_reader);
        let ring = match std::mem::replace(&mut *state, WakeReader::Failed) {
            WakeReader::Idle(ring) => ring,
            WakeReader::Running => {
                *state = WakeReader::Running;
                return Ok(());
            }
            WakeReader::Failed => return Err(MapError::NoWakes),
        };
        // SAFETY: the RingBuf owns its map's fd, which stays open and the same until the
        // RingBuf is dropped, which only the AsyncFd owning it does.
        let mut ring = unsafe {
            tokio::io::unix::AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE)
        }
        .map_err(std::io::Error::from)?;
        *state = WakeReader::Running;
        drop(state);
        tokio::spawn(async move {
            loop {
                let mut guard = match ring.readable_mut().await {
                    Ok(guard) => guard,
                    Err(error) => {
                        tracing::error!(%error, "accel: the wake-up ring buffer failed; backlog limits are no longer enforced");
                        return;
                    }
                };
                let waiters = lock(&self.waiters);
                while let Some(item) = guard.get_inner_mut().next() {
                    let cookie = <[u8; 8]>::try_from(&item[..]).map(u64::from_ne_bytes);
                    if let Some(waiter) = cookie.ok().and_then(|cookie| waiters.get(&cookie)) {
                        waiter.notify_one();
                    }
                }
                drop(waiters);
                guard.clear_ready();
            }
        });
        Ok(())
    }
}

/// A std mutex's guard, poisoned or not (the data behind these locks stays consistent: each
/// critical section is a single insert, remove or lookup).
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// One spliced pair's map entries; removed on drop, whatever the path (trap E). The sockets
/// themselves leave the sockhash when they are closed; they are never removed while open,
/// since that would lose the data queued for them (trap D).
pub struct Pair {
    kernel: &'static Kernel,
    /// `a`'s cookie.
    pub a: u64,
    /// `b`'s cookie.
    pub b: u64,
}

impl Pair {
    /// Bytes the program has redirected away from the socket with `cookie` (a or b).
    pub fn redirected_from(&self, cookie: u64) -> u64 {
        self.kernel.maps().bytes.get(&cookie, 0).unwrap_or(0)
    }

    /// Has `waiter` notified on each of this pair's wake-ups (see [`Pair::wake_when`]).
    pub fn notify_wakes(&self, waiter: &Arc<tokio::sync::Notify>) -> Result<(), MapError> {
        self.kernel.start_wake_reader()?;
        let mut waiters = lock(&self.kernel.waiters);
        for cookie in [self.a, self.b] {
            waiters.insert(cookie, Arc::clone(waiter));
        }
        Ok(())
    }

    /// Wakes this pair's waiter (see [`Pair::notify_wakes`]) once the program's count for `a`
    /// reaches `at[0]` or the one for `b` reaches `at[1]` (a count already past its threshold
    /// wakes it on the next skb). Replaces the thresholds set before.
    pub fn wake_when(&self, at: [u64; 2]) -> Result<(), MapError> {
        let mut maps = self.kernel.maps();
        maps.wake_at.insert(self.a, at[0], 0)?;
        maps.wake_at.insert(self.b, at[1], 0)?;
        Ok(())
    }
}

impl Drop for Pair {
    fn drop(&mut self) {
        let mut maps = self.kernel.maps();
        for cookie in [self.a, self.b] {
            let _ = maps.peers.remove(&cookie);
            let _ = maps.bytes.remove(&cookie);
            let _ = maps.wake_at.remove(&cookie);
        }
        drop(maps);
        let mut waiters = lock(&self.kernel.waiters);
        for cookie in [self.a, self.b] {
            waiters.remove(&cookie);
        }
    }
}
