//! Ctrl-C (SIGINT) for the commands that run simulations: `run`, `sweep` and `live`.
//!
//! While a [`CtrlC`] guard is alive, the first SIGINT only raises a flag; the engine's clocks
//! ([`InterruptibleClock`] for `run` and `sweep`, the live [`crate::live::WallClock`]) check it
//! before every event and end the run there, so the command can write what finished (marked
//! partial) or clean up its temporary directory. A second Ctrl-C kills the process as usual.

use std::sync::atomic::{AtomicBool, Ordering};

use crate::engine::Clock;
use crate::engine::time::Ns;

/// Set by the SIGINT handler that [`CtrlC`] installs.
static SIGINT_RAISED: AtomicBool = AtomicBool::new(false);

/// Whether Ctrl-C was pressed since the current [`CtrlC`] guard was installed.
pub fn interrupted() -> bool {
    SIGINT_RAISED.load(Ordering::Relaxed)
}

#[cfg(unix)]
unsafe extern "C" {
    fn signal(signum: i32, handler: usize) -> usize;
}

#[cfg(unix)]
extern "C" fn on_sigint(_sig: i32) {
    SIGINT_RAISED.store(true, Ordering::SeqCst);
    // A second Ctrl-C kills the process as usual (signal() is async-signal-safe).
    // SAFETY: restores the default disposition (SIG_DFL = 0) of SIGINT.
    unsafe {
        signal(2, 0);
    }
}

/// While alive, Ctrl-C (SIGINT) stops runs at their next event instead of killing the process; a
/// second Ctrl-C kills it. Dropping it restores the default disposition.
pub struct CtrlC(());

impl CtrlC {
    pub fn install() -> CtrlC {
        SIGINT_RAISED.store(false, Ordering::SeqCst);
        #[cfg(unix)]
        // SAFETY: the handler only stores to an atomic and calls signal(), both async-signal-safe.
        unsafe {
            signal(2, on_sigint as extern "C" fn(i32) as usize);
        }
        CtrlC(())
    }
}

impl Drop for CtrlC {
    fn drop(&mut self) {
        #[cfg(unix)]
        // SAFETY: restores the default disposition (SIG_DFL = 0) of SIGINT.
        unsafe {
            signal(2, 0);
        }
        SIGINT_RAISED.store(false, Ordering::SeqCst);
    }
}

/// The simulator's virtual clock (every event at its own time, as fast as possible) that ends the
/// run at the first event after Ctrl-C.
#[derive(Debug, Default)]
pub struct InterruptibleClock {
    stopped: bool,
    /// Let the engine fast-forward (a Ctrl-C then takes effect at the end of the current run of
    /// identical iterations: the next event).
    pub fast_forward: bool,
}

impl InterruptibleClock {
    pub fn new(fast_forward: bool) -> Self {
        InterruptibleClock {
            stopped: false,
            fast_forward,
        }
    }
    /// Whether Ctrl-C ended the run.
    pub fn stopped(&self) -> bool {
        self.stopped
    }
}

impl Clock for InterruptibleClock {
    #[inline]
    fn advance(&mut self, t: Ns) -> Option<Ns> {
        if interrupted() {
            self.stopped = true;
            None
        } else {
            Some(t)
        }
    }
    fn fast_forward(&self) -> bool {
        self.fast_forward
    }
}
