//! Which way a tunnel between two plain TCP sockets moves its payload: `--accel`.
//!
//! The default is `splice`: `splice(2)` through a pipe per direction ([`super::pipe`]). What
//! weir holds of a tunnel is then bounded by the pipe (256 KiB a way), the rest waits in the
//! sockets' own buffers, which the kernel bounds and charges to them, and a reader that
//! resumes frees room that the sender sees at once (epoll readiness). The eBPF splice
//! ([`super::kernel`]) is opt-in (`--accel kernel`), because neither holds there: its queue
//! between the two sockets has no bound of its own, and its opt-in bound
//! (`--accel-backlog-limit`) resumes a paused sender only at the sender's next zero-window
//! probe, 50 to 220 ms after the reader caught up (see [`super::backpressure`]). `copy` is
//! the read/write copy every other pair of streams gets (TLS, h2 and h3 streams), selectable
//! for plain TCP to compare it with the other two in `make bench`.

use std::sync::atomic::{AtomicU8, Ordering};

/// How plain TCP tunnels move their payload (`--accel`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The eBPF sockhash splice where the program loads (root, or CAP_BPF + CAP_NET_ADMIN),
    /// else [`Mode::Splice`].
    Kernel,
    /// `splice(2)` through a pipe per direction: no copy into weir's memory (the default).
    Splice,
    /// read/write through a 64 KiB buffer per direction.
    Copy,
}

/// Env var read where `--accel` is not given: `kernel`, `splice` (or `userspace`, its older
/// name) or `copy`.
pub const MODE_ENV: &str = "WEIR_ACCEL";

const UNSET: u8 = 0;
static CHOSEN: AtomicU8 = AtomicU8::new(UNSET);

impl Mode {
    fn code(self) -> u8 {
        match self {
            Mode::Kernel => 1,
            Mode::Splice => 2,
            Mode::Copy => 3,
        }
    }

    fn from_code(code: u8) -> Option<Mode> {
        match code {
            1 => Some(Mode::Kernel),
            2 => Some(Mode::Splice),
            3 => Some(Mode::Copy),
            _ => None,
        }
    }

    /// The mode a `--accel` or [`MODE_ENV`] value names.
    pub fn parse(name: &str) -> Option<Mode> {
        match name {
            "kernel" | "auto" => Some(Mode::Kernel),
            "splice" | "userspace" => Some(Mode::Splice),
            "copy" => Some(Mode::Copy),
            _ => None,
        }
    }

    /// The name `--accel` takes for it.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Kernel => "kernel",
            Mode::Splice => "splice",
            Mode::Copy => "copy",
        }
    }
}

/// Sets the mode from the command line (`None`: not given, [`MODE_ENV`] or the default
/// decides). Tunnels started from now on use it. Returns what chose it, for the log line.
pub fn set(mode: Option<Mode>) -> String {
    let (mode, chosen_by) = match mode {
        Some(mode) => (Some(mode), format!("--accel {}", mode.name())),
        None => match std::env::var(MODE_ENV) {
            Ok(value) => match Mode::parse(value.trim()) {
                Some(mode) => (Some(mode), format!("{MODE_ENV}={value}")),
                None => (
                    None,
                    format!(
                        "default; {MODE_ENV}={value:?} ignored: expected kernel, splice or copy"
                    ),
                ),
            },
            Err(_) => (None, "default".to_owned()),
        },
    };
    CHOSEN.store(mode.map_or(UNSET, Mode::code), Ordering::Relaxed);
    chosen_by
}

/// The mode in force: the one [`set`] chose, else [`Mode::Splice`].
pub fn get() -> Mode {
    Mode::from_code(CHOSEN.load(Ordering::Relaxed)).unwrap_or(Mode::Splice)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_userspace_is_splice() {
        for mode in [Mode::Kernel, Mode::Splice, Mode::Copy] {
            assert_eq!(Mode::parse(mode.name()), Some(mode));
            assert_eq!(Mode::from_code(mode.code()), Some(mode));
        }
        assert_eq!(Mode::parse("userspace"), Some(Mode::Splice));
        assert_eq!(Mode::parse("auto"), Some(Mode::Kernel));
        assert_eq!(Mode::parse("sockmap"), None);
        assert_eq!(Mode::from_code(UNSET), None);
    }
}
