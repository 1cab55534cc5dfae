//! Logging through the host (`proxy_log`), and the panic hook that reports a filter's panic
//! before the module traps.

use weir_abi::LogLevel;

use crate::hostcalls;

/// Writes `message` at `level`. A host that cannot log is ignored: logging never fails a
/// filter.
pub fn write(level: LogLevel, message: &str) {
    let _ = hostcalls::log(level, message);
}

/// Logs at `Trace`.
pub fn trace(message: &str) {
    write(LogLevel::Trace, message);
}

/// Logs at `Debug`.
pub fn debug(message: &str) {
    write(LogLevel::Debug, message);
}

/// Logs at `Info`.
pub fn info(message: &str) {
    write(LogLevel::Info, message);
}

/// Logs at `Warn`.
pub fn warn(message: &str) {
    write(LogLevel::Warn, message);
}

/// Logs at `Error`.
pub fn error(message: &str) {
    write(LogLevel::Error, message);
}

/// Makes a panic log its message at `Critical` before the module traps, so the operator sees
/// why the filter died (with `panic = "abort"` nothing else would say).
#[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
pub(crate) fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        write(
            LogLevel::Critical,
            &format!("weir-sdk filter panicked: {info}"),
        );
    }));
}
