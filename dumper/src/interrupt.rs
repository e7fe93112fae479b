//! SIGINT, SIGTERM and SIGHUP during `dumper run`: the night stops where it is and still
//! writes its report, instead of dying with dumps half written and no word to the admin.
//!
//! The handler only records the signal (an atomic store is async-signal-safe); the run's
//! main loop polls [`received`] between events. A second signal ends the process at once.

use std::sync::atomic::{AtomicI32, Ordering};

use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};

static RECEIVED: AtomicI32 = AtomicI32::new(0);

extern "C" fn note(sig: libc::c_int) {
    // A second signal means "now": leave at once (partial `.tmp` files are swept by the
    // next run).
    if RECEIVED.swap(sig, Ordering::SeqCst) != 0 {
        // SAFETY: _exit is async-signal-safe.
        unsafe { libc::_exit(128 + sig) };
    }
}

/// Installs the handlers (process-wide; call once, from the main thread).
pub fn install() {
    let action = SigAction::new(
        SigHandler::Handler(note),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    for sig in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        // SAFETY: the handler only performs an atomic store.
        if let Err(e) = unsafe { sigaction(sig, &action) } {
            log::warn!("cannot catch {sig}: {e}");
        }
    }
}

/// The name of the first signal received since [`install`], if any.
pub fn received() -> Option<&'static str> {
    match RECEIVED.load(Ordering::SeqCst) {
        0 => None,
        n => Some(Signal::try_from(n).map_or("a signal", Signal::as_str)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signal_is_recorded_not_fatal() {
        install();
        assert_eq!(received(), None);
        nix::sys::signal::raise(Signal::SIGHUP).unwrap();
        assert_eq!(received(), Some("SIGHUP"));
        // Other tests in this process must not see a night that was asked to stop.
        RECEIVED.store(0, Ordering::SeqCst);
    }
}
