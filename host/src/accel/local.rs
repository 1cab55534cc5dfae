//! Local acceleration: the hop between weir and an application on the same host, carried by
//! `sk_msg` instead of TCP/IP over loopback (`--local-accel-cgroup DIR`).
//!
//! `ebpf/local.bpf.c` has two programs. A `sock_ops` program, attached to one cgroup v2
//! directory, adds every established TCP socket of that cgroup whose two ends are loopback
//! addresses to the `local_socks` sockhash, keyed by its 4-tuple; an `sk_msg` program on that
//! sockhash hands each message a member sends straight to its peer's receive queue when the
//! peer is a member too. Only processes in that cgroup are affected: attaching at the root
//! cgroup would redirect every process's loopback traffic on the machine, so this is opt-in
//! and scoped. weir moves itself into the cgroup; the operator puts the application there.
//!
//! Every part of it is per process (programs, maps, the cgroup attachment is a link owned by
//! weir's fd): two weirs on one machine, each with its own cgroup, do not see each other, and
//! everything is detached when weir exits.
//!
//! Interplay with the kernel splice (`kernel`): its `sk_skb` program and `splice(2)` see only
//! what arrives through TCP, never what `sk_msg` delivered, and the order of the two cannot be
//! guaranteed when a socket switches from one to the other mid-stream (an app that speaks
//! first lost its byte order in a test). So while local acceleration is on, a tunnel with a
//! loopback socket ([`Local::may_hold`]) is copied with `recv(2)`, which reads `sk_msg`'s queue
//! and then TCP's in order; `sk_msg` still carries its hop to a local app.

use crate::stats::LocalCounts;
use aya::Ebpf;
use aya::maps::{MapData, PerCpuArray, SockHash};
use aya::programs::{CgroupAttachMode, SkMsg, SockOps};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::Instant;
use tokio::net::TcpStream;

/// `CGROUP2_SUPER_MAGIC` (linux/magic.h): `statfs` type of a cgroup v2 filesystem.
const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;
const AF_INET: u32 = libc::AF_INET as u32;
const AF_INET6: u32 = libc::AF_INET6 as u32;
/// Indexes of `local_stats` (see local.bpf.c).
const STAT_SOCKETS: u32 = 0;
const STAT_BYTES: u32 = 1;
const STAT_MESSAGES: u32 = 2;

#[repr(C, align(8))]
struct Aligned<B: ?Sized>(B);
static OBJECT: &Aligned<[u8]> = &Aligned(*include_bytes!(concat!(env!("OUT_DIR"), "/local.bpf.o")));

static LOCAL: OnceLock<Local> = OnceLock::new();

/// Why local acceleration is off although `--local-accel-cgroup` asked for it.
#[derive(Debug, thiserror::Error)]
pub enum LocalUnavailable {
    /// clang was missing when weir was built.
    #[error("the eBPF program was not built (clang missing at build time; `make deps`)")]
    NotBuilt,
    /// The directory (or, when it does not exist yet, its nearest existing parent) is not on
    /// a cgroup v2 filesystem.
    #[error("{0}: not on a cgroup v2 filesystem (give a directory under the cgroup2 mount)")]
    NotCgroup2(PathBuf),
    /// Creating, opening or joining the cgroup failed.
    #[error("{path}: cannot {step}: {error}")]
    Cgroup {
        /// The cgroup directory.
        path: PathBuf,
        /// create, open, or join.
        step: &'static str,
        /// The OS error.
        error: io::Error,
    },
    /// The kernel refused to load or attach (typically not root).
    #[error("cannot {step} the eBPF programs: {reason}")]
    Load {
        /// parse, load, attach, or find.
        step: &'static str,
        /// aya's error, with its causes.
        reason: String,
    },
    /// Asked for twice in one process.
    #[error("already on")]
    AlreadyOn,
}

/// One socket as `local.bpf.c` keys it: its own address and port, then its peer's; IPv4 in
/// `local_ip[0]` (also for an IPv4-mapped IPv6 address), addresses as the kernel stores them
/// (network byte order), ports in host byte order.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LocalKey {
    family: u32,
    local_ip: [u32; 4],
    remote_ip: [u32; 4],
    local_port: u32,
    remote_port: u32,
}

// SAFETY: plain old data: `repr(C)` u32 fields, no padding, every bit pattern valid.
unsafe impl aya::Pod for LocalKey {}

impl LocalKey {
    /// The key of a socket with these two ends, when both are loopback addresses (the only
    /// sockets the program adds).
    pub fn of(local: SocketAddr, remote: SocketAddr) -> Option<LocalKey> {
        let (family, local_ip) = loopback_words(local.ip())?;
        let (remote_family, remote_ip) = loopback_words(remote.ip())?;
        if family != remote_family {
            return None;
        }
        Some(LocalKey {
            family,
            local_ip,
            remote_ip,
            local_port: u32::from(local.port()),
            remote_port: u32::from(remote.port()),
        })
    }

    /// The key of a connected socket (see [`LocalKey::of`]).
    pub fn of_socket(socket: &TcpStream) -> Option<LocalKey> {
        Self::of(socket.local_addr().ok()?, socket.peer_addr().ok()?)
    }

    /// The key of the other end of the connection.
    pub fn reversed(&self) -> LocalKey {
        LocalKey {
            family: self.family,
            local_ip: self.remote_ip,
            remote_ip: self.local_ip,
            local_port: self.remote_port,
            remote_port: self.local_port,
        }
    }
}

/// An address as the program stores it, when it is loopback: the family and four words.
fn loopback_words(ip: IpAddr) -> Option<(u32, [u32; 4])> {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    };
    match ip {
        IpAddr::V4(v4) if v4.is_loopback() => {
            Some((AF_INET, [u32::from_ne_bytes(v4.octets()), 0, 0, 0]))
        }
        IpAddr::V6(v6) if v6.is_loopback() => {
            let o = v6.octets();
            let word = |i: usize| u32::from_ne_bytes([o[i], o[i + 1], o[i + 2], o[i + 3]]);
            Some((AF_INET6, [word(0), word(4), word(8), word(12)]))
        }
        _ => None,
    }
}

/// The loaded programs and their maps, for the life of the process.
pub struct Local {
    maps: Mutex<Maps>,
    cgroup: PathBuf,
    /// Owns the programs and the cgroup link; dropping it would detach them.
    _ebpf: Mutex<Ebpf>,
}

struct Maps {
    socks: SockHash<MapData, LocalKey>,
    stats: PerCpuArray<MapData, u64>,
}

/// Turns local acceleration on for this process (`--local-accel-cgroup DIR`), at start-up
/// before any listener or upstream socket exists: checks that `cgroup` is (or can be made)
/// a cgroup v2 directory, creates it if missing, loads and attaches the programs, then moves
/// weir into it. Sockets weir made before the call (the admin listener) stay outside.
///
/// On failure nothing is attached and weir stays where it was; the caller logs the reason
/// once and serves without it.
pub fn enable(cgroup: &Path) -> Result<&'static Local, LocalUnavailable> {
    if LOCAL.get().is_some() {
        return Err(LocalUnavailable::AlreadyOn);
    }
    let started = Instant::now();
    let local = load(cgroup)?;
    join(cgroup)?;
    let local = LOCAL.get_or_init(|| local);
    crate::stats::register_local_accel(|| get().map(Local::counts).unwrap_or_default());
    tracing::info!(
        cgroup = %cgroup.display(),
        load_ms = started.elapsed().as_millis() as u64,
        "accel: local acceleration on (sock_ops + sk_msg on loopback sockets of this cgroup); \
         put the local application into the same cgroup"
    );
    Ok(local)
}

/// Local acceleration, where [`enable`] turned it on.
pub fn get() -> Option<&'static Local> {
    LOCAL.get()
}

fn load(cgroup: &Path) -> Result<Local, LocalUnavailable> {
    if OBJECT.0.is_empty() {
        return Err(LocalUnavailable::NotBuilt);
    }
    ensure_cgroup2_dir(cgroup)?;
    let cgroup_dir = std::fs::File::open(cgroup).map_err(|error| LocalUnavailable::Cgroup {
        path: cgroup.to_path_buf(),
        step: "open",
        error,
    })?;
    let mut ebpf = Ebpf::load(&OBJECT.0).map_err(|e| failed("load", &e))?;
    let socks: SockHash<MapData, LocalKey> = take(&mut ebpf, "local_socks")?;
    let stats: PerCpuArray<MapData, u64> = take(&mut ebpf, "local_stats")?;
    let redirect: &mut SkMsg = ebpf
        .program_mut("local_redirect")
        .ok_or_else(|| missing("program local_redirect"))?
        .try_into()
        .map_err(|e| failed("find", &e))?;
    redirect.load().map_err(|e| failed("load", &e))?;
    redirect
        .attach(socks.fd())
        .map_err(|e| failed("attach", &e))?;
    let sockops: &mut SockOps = ebpf
        .program_mut("local_sockops")
        .ok_or_else(|| missing("program local_sockops"))?
        .try_into()
        .map_err(|e| failed("find", &e))?;
    sockops.load().map_err(|e| failed("load", &e))?;
    // A bpf_link (kernel >= 5.7): the kernel takes no flags there and always lets other links
    // run beside it, so a second weir (or another tool) on the same cgroup does not make this
    // one fail (a socket then joins the first sockhash that takes it); the link goes away
    // with weir's fd.
    sockops
        .attach(&cgroup_dir, CgroupAttachMode::Single)
        .map_err(|e| failed("attach", &e))?;
    Ok(Local {
        maps: Mutex::new(Maps { socks, stats }),
        cgroup: cgroup.to_path_buf(),
        _ebpf: Mutex::new(ebpf),
    })
}

/// Makes sure `path` is a cgroup v2 directory: an existing one, or a new one made under a
/// cgroup v2 parent. Nothing is created outside a cgroup v2 filesystem.
fn ensure_cgroup2_dir(path: &Path) -> Result<(), LocalUnavailable> {
    let existing = path
        .ancestors()
        .find(|dir| dir.is_dir())
        .unwrap_or(Path::new("/"));
    if !is_cgroup2(existing) {
        return Err(LocalUnavailable::NotCgroup2(existing.to_path_buf()));
    }
    if existing != path {
        std::fs::create_dir_all(path).map_err(|error| LocalUnavailable::Cgroup {
            path: path.to_path_buf(),
            step: "create",
            error,
        })?;
        tracing::info!(cgroup = %path.display(), "accel: created the cgroup for local acceleration");
    }
    Ok(())
}

fn is_cgroup2(dir: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt as _;
    let Ok(path) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: an all-zero statfs is a valid out-buffer; `path` is NUL-terminated.
    let mut stat: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: both pointers are valid for the duration of the call.
    let rc = unsafe { libc::statfs(path.as_ptr(), &mut stat) };
    // `f_type` is i64 on x86_64 but narrower on some targets.
    #[allow(clippy::useless_conversion)]
    let fs_type = i64::from(stat.f_type);
    rc == 0 && fs_type == CGROUP2_SUPER_MAGIC
}

/// Moves this whole process (every thread) into the cgroup: sockets made from now on belong
/// to it, and so do the sockets accepted from listeners made from now on.
fn join(cgroup: &Path) -> Result<(), LocalUnavailable> {
    let procs = cgroup.join("cgroup.procs");
    std::fs::write(&procs, std::process::id().to_string()).map_err(|error| {
        LocalUnavailable::Cgroup {
            path: cgroup.to_path_buf(),
            step: "join",
            error,
        }
    })
}

fn take<M>(ebpf: &mut Ebpf, name: &'static str) -> Result<M, LocalUnavailable>
where
    M: TryFrom<aya::maps::Map, Error = aya::maps::MapError>,
{
    let map = ebpf.take_map(name).ok_or_else(|| missing(name))?;
    M::try_from(map).map_err(|e| failed("find", &e))
}

fn missing(what: &'static str) -> LocalUnavailable {
    LocalUnavailable::Load {
        step: "find",
        reason: format!("{what} is not in the object"),
    }
}

/// The error with its causes, and a privilege hint where the kernel said EPERM.
fn failed(step: &'static str, error: &dyn std::error::Error) -> LocalUnavailable {
    let mut reason = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !reason.contains(&text) {
            reason.push_str(": ");
            reason.push_str(&text);
        }
        source = cause.source();
    }
    if reason.contains("Operation not permitted") {
        reason.push_str(" (not privileged: needs root, or CAP_BPF + CAP_NET_ADMIN)");
    }
    LocalUnavailable::Load { step, reason }
}

impl Local {
    fn maps(&self) -> MutexGuard<'_, Maps> {
        // The maps hold no invariant a panic could break; a poisoned lock is used as is.
        self.maps
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The cgroup the `sock_ops` program is attached to.
    pub fn cgroup(&self) -> &Path {
        &self.cgroup
    }

    /// What the programs counted so far, and the sockets in the sockhash now.
    pub fn counts(&self) -> LocalCounts {
        let maps = self.maps();
        let sum = |index: u32| {
            maps.stats.get(&index, 0).map_or(0, |values| {
                values.iter().copied().fold(0u64, u64::wrapping_add)
            })
        };
        LocalCounts {
            sockets_added: sum(STAT_SOCKETS),
            sockets_active: maps.socks.keys().filter(Result::is_ok).count() as u64,
            redirected_bytes: sum(STAT_BYTES),
            redirected_messages: sum(STAT_MESSAGES),
        }
    }

    /// Whether `socket` may be in the sockhash: it is a loopback connection (the program
    /// adds exactly those of the cgroup, which weir's sockets are in). What such a socket
    /// receives may sit in its sk_msg queue, readable by `recv(2)` but not `splice(2)`.
    pub fn may_hold(&self, socket: &TcpStream) -> bool {
        LocalKey::of_socket(socket).is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_loopback_only_and_reverse_to_the_peer() {
        let a: SocketAddr = "127.0.0.1:40000".parse().unwrap();
        let b: SocketAddr = "127.0.0.2:8080".parse().unwrap();
        let key = LocalKey::of(a, b).unwrap();
        assert_eq!(key.family, AF_INET);
        assert_eq!(key.local_ip[0].to_ne_bytes(), [127, 0, 0, 1]);
        assert_eq!(key.remote_ip[0].to_ne_bytes(), [127, 0, 0, 2]);
        assert_eq!((key.local_port, key.remote_port), (40000, 8080));
        assert_eq!(key.reversed(), LocalKey::of(b, a).unwrap());
        assert_eq!(key.reversed().reversed(), key);

        let mapped: SocketAddr = "[::ffff:127.0.0.1]:40000".parse().unwrap();
        assert_eq!(
            LocalKey::of(mapped, b),
            Some(key),
            "v4-mapped is stored as v4"
        );

        let v6 = LocalKey::of("[::1]:1".parse().unwrap(), "[::1]:2".parse().unwrap()).unwrap();
        assert_eq!(v6.family, AF_INET6);
        assert_eq!(v6.local_ip[3].to_ne_bytes(), [0, 0, 0, 1]);

        assert_eq!(LocalKey::of(a, "10.0.0.1:80".parse().unwrap()), None);
        assert_eq!(LocalKey::of("[::1]:1".parse().unwrap(), b), None);
        assert_eq!(std::mem::size_of::<LocalKey>(), 44, "the C struct's size");
    }
}
