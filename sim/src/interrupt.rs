//! Ctrl-C (SIGINT) and SIGTERM for the commands that run simulations (`run`, `sweep`, `live`),
//! copy them (`merge`) or draw them (`plot`, between figures).
//!
//! While a [`CtrlC`] guard is alive, the first SIGINT or SIGTERM only raises a flag; the engine's
//! clocks ([`InterruptibleClock`] for `run` and `sweep`, the live [`crate::live::WallClock`]) check
//! it before every event and end the run there, so the command can write what finished (marked
//! partial) or clean up its temporary directory. A second signal of the same kind kills the
//! process as usual. (Staging directories of a process killed outright, e.g. by SIGKILL, are
//! removed by the next command writing the same output: see [`crate::staging`].)

use std::sync::atomic::{AtomicI32, Ordering};

use crate::engine::Clock;
use crate::vocab::time::Ns;

/// The signal that raised the flag (0 before any).
static SIGNAL: AtomicI32 = AtomicI32::new(0);

const SIGINT: i32 = 2;
const SIGTERM: i32 = 15;

/// Whether Ctrl-C (or SIGTERM) arrived since the current [`CtrlC`] guard was installed.
pub fn interrupted() -> bool {
    crate::input::stop_requested()
}

/// Whether Ctrl-C or SIGTERM arrived since the last [`CtrlC`] guard was installed, even after
/// that guard is gone (a command that failed because of it exits as the signal asks).
pub fn signal_seen() -> bool {
    SIGNAL.load(Ordering::Relaxed) != 0
}

/// What stopped the command, in the user's words: "Ctrl-C" or "SIGTERM".
pub fn signal_name() -> &'static str {
    if SIGNAL.load(Ordering::Relaxed) == SIGTERM {
        "SIGTERM"
    } else {
        "Ctrl-C"
    }
}

/// The exit status of a command the signal stopped: 128 + its number (130 for Ctrl-C, 143 for
/// SIGTERM), the shell convention.
pub fn exit_code() -> i32 {
    match SIGNAL.load(Ordering::Relaxed) {
        SIGTERM => 128 + SIGTERM,
        _ => 128 + SIGINT,
    }
}

#[cfg(unix)]
unsafe extern "C" {
    fn signal(signum: i32, handler: usize) -> usize;
    fn kill(pid: i32, sig: i32) -> i32;
}

/// Send the signal that raised the flag (SIGINT or SIGTERM) on to child process `pid`: a command
/// that runs another program passes the user's stop request on instead of leaving it orphaned.
pub fn forward_to(pid: u32) {
    #[cfg(unix)]
    if let Ok(pid) = i32::try_from(pid) {
        let sig = match SIGNAL.load(Ordering::Relaxed) {
            SIGTERM => SIGTERM,
            _ => SIGINT,
        };
        // SAFETY: kill() has no memory-safety preconditions; a stale pid only fails.
        unsafe {
            kill(pid, sig);
        }
    }
}

#[cfg(unix)]
extern "C" fn on_signal(sig: i32) {
    SIGNAL.store(sig, Ordering::SeqCst);
    crate::input::set_stop_requested(true);
    // A second signal of the same kind kills the process as usual (signal() is
    // async-signal-safe).
    // SAFETY: restores the default disposition (SIG_DFL = 0) of the signal.
    unsafe {
        signal(sig, 0);
    }
}

/// While alive, Ctrl-C (SIGINT) and SIGTERM stop runs at their next event instead of killing the
/// process; a second one kills it. Dropping it restores the default dispositions.
pub struct CtrlC(());

impl CtrlC {
    pub fn install() -> CtrlC {
        crate::input::set_stop_requested(false);
        SIGNAL.store(0, Ordering::SeqCst);
        #[cfg(unix)]
        // SAFETY: the handler only stores to atomics and calls signal(), all async-signal-safe.
        unsafe {
            signal(SIGINT, on_signal as extern "C" fn(i32) as usize);
            signal(SIGTERM, on_signal as extern "C" fn(i32) as usize);
        }
        CtrlC(())
    }
}

impl Drop for CtrlC {
    fn drop(&mut self) {
        #[cfg(unix)]
        // SAFETY: restores the default disposition (SIG_DFL = 0) of both signals.
        unsafe {
            signal(SIGINT, 0);
            signal(SIGTERM, 0);
        }
        crate::input::set_stop_requested(false);
    }
}

/// `f` on each item in parallel (on the current rayon pool), in item order, skipping every item
/// not yet started once `stop()` is true (`None` for it). A sweep of many short runs checks
/// Ctrl-C this way between its runs, not only inside them, so it stops promptly.
pub fn par_map_until<T: Sync, R: Send>(
    items: &[T],
    stop: &(dyn Fn() -> bool + Sync),
    f: &(dyn Fn(&T) -> R + Sync),
) -> Vec<Option<R>> {
    use rayon::prelude::*;
    items
        .par_iter()
        .map(|x| if stop() { None } else { Some(f(x)) })
        .collect()
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    /// Once `stop` says so, no further item starts (one worker: exactly the items before it).
    #[test]
    fn par_map_until_starts_nothing_after_stop() {
        let started = AtomicUsize::new(0);
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap();
        let items: Vec<u32> = (0..1000).collect();
        let out = pool.install(|| {
            par_map_until(&items, &|| started.load(Ordering::SeqCst) >= 5, &|x| {
                started.fetch_add(1, Ordering::SeqCst);
                x * 2
            })
        });
        assert_eq!(out.len(), 1000);
        assert_eq!(started.load(Ordering::SeqCst), 5);
        assert_eq!(out.iter().flatten().count(), 5);
        // With `stop` never true, every item runs, in order.
        let all = par_map_until(&items, &|| false, &|x| x * 2);
        assert!(
            all.iter()
                .enumerate()
                .all(|(i, v)| *v == Some(2 * i as u32))
        );
    }
}
