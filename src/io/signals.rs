//! SIGTERM and SIGINT as a flag: the `oncelog node` and `oncelog controller` processes install
//! [`install_termination_handler`] and poll [`termination_requested`], then close cleanly (a
//! node closes its log, so the next start finds the clean-shutdown marker and scans nothing).
//!
//! The handler only stores into lock-free atomics, which is async-signal-safe. It is installed
//! with `SA_RESETHAND`: the first signal asks for a clean close, a second one (the disposition
//! is then the default again) ends the process at once, as an operator pressing Ctrl-C twice
//! expects.
#![allow(
    unsafe_code,
    reason = "sigaction(2) is a foreign call; each block says why it is sound"
)]

use std::io;
use std::sync::atomic::{AtomicI32, Ordering};

/// The first termination signal received, 0 while none was.
static RECEIVED: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_termination(signal: libc::c_int) {
    // Only an atomic store: nothing that could allocate, lock or call into libc.
    let _ = RECEIVED.compare_exchange(0, signal, Ordering::SeqCst, Ordering::SeqCst);
}

/// Installs the handler for SIGTERM and SIGINT (see the module doc).
pub fn install_termination_handler() -> io::Result<()> {
    for signal in [libc::SIGTERM, libc::SIGINT] {
        // SAFETY: `libc::sigaction` is a plain C struct of integers, a function-pointer-sized
        // integer and a signal set, for which all-zero bytes are a valid value (no handler, no
        // flags, an empty mask).
        let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
        action.sa_sigaction = on_termination as extern "C" fn(libc::c_int) as libc::sighandler_t;
        action.sa_flags = libc::SA_RESTART | libc::SA_RESETHAND;
        // SAFETY: `action.sa_mask` is a valid, exclusively borrowed `sigset_t`.
        if unsafe { libc::sigemptyset(&mut action.sa_mask) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `action` is fully initialised and names a handler with the signature the
        // kernel calls (`extern "C" fn(c_int)`, no SA_SIGINFO) that only touches an atomic;
        // a null old-action pointer is allowed.
        if unsafe { libc::sigaction(signal, &action, std::ptr::null_mut()) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// The termination signal received since the handler was installed (`SIGTERM` or `SIGINT`),
/// if any.
pub fn termination_requested() -> Option<i32> {
    match RECEIVED.load(Ordering::SeqCst) {
        0 => None,
        s => Some(s),
    }
}

/// The conventional name of a termination signal, for messages.
pub fn signal_name(signal: i32) -> &'static str {
    match signal {
        libc::SIGTERM => "SIGTERM",
        libc::SIGINT => "SIGINT",
        _ => "signal",
    }
}
