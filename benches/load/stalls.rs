//! The machine's own stalls, seen by a thread that nothing in this machine can delay.
//!
//! These machines are virtual and shared: the host sometimes stops running a virtual CPU
//! for tens of milliseconds, without counting it as steal time. Any server on it, the echo
//! included, then answers nothing for that long, and an open loop at half the maximum
//! falls behind by as much again while it catches up. A thread at real-time priority
//! (`SCHED_FIFO`) preempts everything else in this machine, so when its one-millisecond
//! sleep ends late by more than a few milliseconds, the machine itself was not running.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long the probe sleeps between looks.
const TICK: Duration = Duration::from_millis(1);
/// Lateness recorded as a stall.
const RECORDED: Duration = Duration::from_millis(2);

/// A running probe.
pub struct StallProbe {
    /// Whether the probe runs at real-time priority: without it, its lateness also counts
    /// the load's own contention for the CPUs, and says nothing about the machine alone.
    pub real_time: bool,
    /// Each stall: when the probe woke, and how late.
    stalls: Arc<Mutex<Vec<(Instant, Duration)>>>,
    stop: Arc<AtomicBool>,
}

impl StallProbe {
    pub fn start() -> Self {
        let stalls = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (seen, stopped) = (stalls.clone(), stop.clone());
        std::thread::Builder::new()
            .name("stall-probe".into())
            .spawn(move || {
                // SAFETY: both calls only change this thread's own scheduling: its timer
                // slack, and its policy and priority (which needs CAP_SYS_NICE; without it
                // the call fails and changes nothing).
                let real_time = unsafe {
                    libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong);
                    let param = libc::sched_param { sched_priority: 50 };
                    libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) == 0
                };
                let _ = ready_tx.send(real_time);
                while !stopped.load(Ordering::Relaxed) {
                    let before = Instant::now();
                    std::thread::sleep(TICK);
                    let woke = Instant::now();
                    let late = woke.duration_since(before).saturating_sub(TICK);
                    if late >= RECORDED {
                        seen.lock().expect("stall list").push((woke, late));
                    }
                }
            })
            .expect("stall probe thread");
        let real_time = ready_rx.recv().unwrap_or(false);
        Self {
            real_time,
            stalls,
            stop,
        }
    }

    /// The stalls that ended between `from` and `to`, longest first.
    pub fn between(&self, from: Instant, to: Instant) -> Vec<Duration> {
        let mut found: Vec<Duration> = self
            .stalls
            .lock()
            .expect("stall list")
            .iter()
            .filter(|(at, _)| *at >= from && *at <= to)
            .map(|(_, late)| *late)
            .collect();
        found.sort_unstable_by(|a, b| b.cmp(a));
        found
    }
}

impl Drop for StallProbe {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
