//! The machine's own stalls, seen by a thread at real-time priority.
//!
//! These machines are virtual and shared: the host sometimes stops the whole virtual
//! machine, both vCPUs at once, for tens of milliseconds, without counting it as steal time.
//! Any server on it, the echo included, then answers nothing for that long, and an open
//! loop at half the maximum falls behind by as much again while it catches up. A thread at
//! real-time priority (`SCHED_FIFO`) preempts every task of this machine, so when its
//! one-millisecond sleep ends late by many milliseconds, the machine was not running. (Its
//! lateness reads a stop short by up to the millisecond the stop overlapped its sleep.)

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::client::Stats;

/// How long the probe sleeps between looks.
const TICK: Duration = Duration::from_millis(1);
/// Lateness beyond this is recorded as a stall.
const RECORDED: Duration = Duration::from_millis(2);

/// A running probe.
pub struct StallProbe {
    /// Whether the probe runs at real-time priority. Without it, its lateness would also
    /// count the load's own contention for the CPUs, so it reports no stalls at all.
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
                // slack, and its policy and priority (which needs CAP_SYS_NICE or an
                // RLIMIT_RTPRIO of 50; without either the call fails and changes nothing).
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
                    if late > RECORDED {
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

    /// The stalls that ended while `run` ran (from its clock's start to now), longest
    /// first; none if the probe is not at real-time priority.
    pub fn during(&self, run: &Stats) -> Vec<Duration> {
        if !self.real_time {
            return Vec::new();
        }
        let to = Instant::now();
        let from = to.checked_sub(run.elapsed).unwrap_or(to);
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
