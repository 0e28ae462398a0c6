//! The loader's own CPU priority.
//!
//! A paced load shares Redis with live traffic, and often shares the host
//! too: a box that runs Redis and a model server, or a small VM. There the
//! loader's own threads (reading, checking and encoding rows) compete for
//! the same cores as Redis and the server answering reads, and every time
//! the scheduler runs a loader thread while a read is ready, the read
//! waits. So a paced load gives way by default: it runs at nice 19, the
//! lowest share. `--full-speed` (nothing else runs) keeps the priority it
//! was started with. `idle` (Linux's SCHED_IDLE, which any normal process
//! that wakes preempts at once) is there to choose, not the default: on a
//! host kept busy by other work it starves the load more than nice 19
//! does, and it measured no better.
//!
//! Measured on 2 cores beside a `/read` client, 1,000,000 rows at the
//! default pacing, `fs-bench --only sharing` runs alternated: `/read`'s p50
//! at 1.32x to 2.12x of idle at normal priority (median 1.67x, five runs),
//! 1.03x to 1.58x at nice 19 (median 1.24x, six), 0.85x to 1.54x under
//! SCHED_IDLE (median 1.18x, eight), at the same load rates. The p99 moved
//! within the machine's noise.
//!
//! Lowering is allowed to any process; raising it back may not be (that
//! takes a privilege or a nice limit few hosts grant), so it is done once,
//! for the whole run. On Linux priority is per thread and a
//! thread inherits its creator's: [`CpuPriority::apply`] runs on the main
//! thread after the pacer's probe started (the probe stands for the other
//! clients and measures what they wait, so it keeps their priority) and
//! before the writers start.

use std::fmt;
use std::io;

/// How much CPU the loader claims next to the other processes of its host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CpuPriority {
    /// As the loader was started (`nice` and `chrt` still apply).
    Normal,
    /// The lowest nice level, 19: the loader runs whenever a core is free
    /// and gives way to any normal process that wakes.
    Low,
    /// Linux's SCHED_IDLE: the loader runs only on a core nothing else
    /// wants. On a host kept busy by other work it may barely progress.
    Idle,
}

/// The nice level `Low` sets: the lowest there is.
const LOWEST_NICE: libc::c_int = 19;

impl CpuPriority {
    /// The priority a load runs at when no flag says: low when it is paced
    /// (sharing), normal at full speed.
    pub fn default_for(paced: bool) -> CpuPriority {
        if paced {
            CpuPriority::Low
        } else {
            CpuPriority::Normal
        }
    }

    /// Sets it for the calling thread and every thread it starts after.
    pub fn apply(self) -> io::Result<()> {
        match self {
            CpuPriority::Normal => Ok(()),
            CpuPriority::Low => set_nice(LOWEST_NICE),
            CpuPriority::Idle => set_sched_idle(),
        }
    }
}

impl fmt::Display for CpuPriority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CpuPriority::Normal => "normal",
            CpuPriority::Low => "low (nice 19)",
            CpuPriority::Idle => "idle (SCHED_IDLE)",
        })
    }
}

fn set_nice(nice: libc::c_int) -> io::Result<()> {
    // SAFETY: a plain system call on the calling thread (who = 0); no
    // memory is passed.
    let r = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, nice) };
    if r == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(target_os = "linux")]
fn set_sched_idle() -> io::Result<()> {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: `param` outlives the call, which only reads it; pid 0 is the
    // calling thread.
    let r = unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) };
    if r == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(not(target_os = "linux"))]
fn set_sched_idle() -> io::Result<()> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "SCHED_IDLE is Linux's; use --cpu-priority low here",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// This thread's nice level, as the kernel reports it.
    fn own_nice() -> libc::c_int {
        // SAFETY: a plain system call on the calling thread. Its -1 is
        // ambiguous, which no level these tests set is.
        unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) }
    }

    #[cfg(target_os = "linux")]
    fn own_policy() -> libc::c_int {
        // SAFETY: a plain system call on the calling thread.
        unsafe { libc::sched_getscheduler(0) }
    }

    /// Applies `priority` on a fresh thread (priority is per thread on
    /// Linux, and a lowered one cannot be raised back), then reads `read`
    /// there and on a thread that one starts after: (own, child).
    fn read_after_applying<T: Send + 'static>(priority: CpuPriority, read: fn() -> T) -> (T, T) {
        std::thread::spawn(move || {
            priority.apply().expect("lowering is allowed to anyone");
            let child = std::thread::spawn(read).join().expect("joins");
            (read(), child)
        })
        .join()
        .expect("joins")
    }

    #[test]
    fn low_sets_the_lowest_nice_and_threads_started_after_inherit_it() {
        let seen = read_after_applying(CpuPriority::Low, own_nice);
        assert_eq!(seen, (LOWEST_NICE, LOWEST_NICE));
    }

    #[test]
    fn normal_leaves_the_priority_as_it_was() {
        let before = std::thread::spawn(own_nice).join().expect("joins");
        let seen = read_after_applying(CpuPriority::Normal, own_nice);
        assert_eq!(seen, (before, before));
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn idle_switches_to_sched_idle_and_threads_started_after_inherit_it() {
        let seen = read_after_applying(CpuPriority::Idle, own_policy);
        assert_eq!(seen, (libc::SCHED_IDLE, libc::SCHED_IDLE));
    }
}
