//! Reading request bodies off the request threads.
//!
//! A body of more than 1024 bytes is still in the socket when tiny_http
//! hands the request over, and a client may send it a byte at a time. Read
//! on a request thread, `--threads` such clients would hold every thread
//! until the request deadline, again and again. So a request whose body is
//! on the socket goes to a body thread instead: it reads the body (under
//! the same deadline), then takes one of `--threads` handler permits and
//! answers. Request threads stay free for everything else; handlers, and so
//! Redis connections, stay bounded by `--threads`.
//!
//! Body threads start on demand, up to a bound (slow bodies are connections,
//! which the connection cap already bounds), and exit after
//! [`IDLE_EXIT`] without work. Requests with small bodies never come here.

use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

/// A body thread with no work for this long exits.
pub const IDLE_EXIT: Duration = Duration::from_secs(5);

type Job = Box<dyn FnOnce() + Send>;

#[derive(Default)]
struct State {
    jobs: VecDeque<Job>,
    idle: usize,
    threads: usize,
}

pub struct BodyPool {
    state: Mutex<State>,
    wake: Condvar,
    max_threads: usize,
}

impl BodyPool {
    pub fn new(max_threads: usize) -> Arc<BodyPool> {
        Arc::new(BodyPool {
            state: Mutex::default(),
            wake: Condvar::new(),
            max_threads: max_threads.max(1),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `job` on a body thread; gives it back when every body thread is
    /// busy and no more may start (the caller then runs it itself).
    pub fn submit(self: &Arc<Self>, job: Job) -> Result<(), Job> {
        let mut state = self.lock();
        if state.idle > state.jobs.len() {
            state.jobs.push_back(job);
            self.wake.notify_one();
            return Ok(());
        }
        if state.threads >= self.max_threads {
            return Err(job);
        }
        state.jobs.push_back(job);
        state.threads += 1;
        drop(state);
        let me = self.clone();
        let spawned = std::thread::Builder::new()
            .name("fs-body".into())
            .spawn(move || me.run());
        if spawned.is_err() {
            let mut state = self.lock();
            state.threads -= 1;
            // Some job back to the caller, unless a body thread took it.
            if let Some(job) = state.jobs.pop_back() {
                return Err(job);
            }
        }
        Ok(())
    }

    fn run(&self) {
        let mut state = self.lock();
        loop {
            if let Some(job) = state.jobs.pop_front() {
                drop(state);
                // `handle` catches its own panics; this is belt and braces.
                let _ = catch_unwind(AssertUnwindSafe(job));
                state = self.lock();
                continue;
            }
            state.idle += 1;
            let (next, timeout) = self
                .wake
                .wait_timeout(state, IDLE_EXIT)
                .unwrap_or_else(|p| p.into_inner());
            state = next;
            state.idle -= 1;
            if timeout.timed_out() && state.jobs.is_empty() {
                state.threads -= 1;
                return;
            }
        }
    }
}

/// At most `n` holders at once: how many requests run handlers in body
/// threads.
pub struct Permits {
    free: Mutex<usize>,
    wake: Condvar,
}

pub struct Permit<'a>(&'a Permits);

impl Permits {
    pub fn new(n: usize) -> Permits {
        Permits {
            free: Mutex::new(n.max(1)),
            wake: Condvar::new(),
        }
    }

    pub fn acquire(&self) -> Permit<'_> {
        let mut free = self.free.lock().unwrap_or_else(|p| p.into_inner());
        while *free == 0 {
            free = self.wake.wait(free).unwrap_or_else(|p| p.into_inner());
        }
        *free -= 1;
        Permit(self)
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        *self.0.free.lock().unwrap_or_else(|p| p.into_inner()) += 1;
        self.0.wake.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};

    #[test]
    fn jobs_beyond_the_thread_bound_are_given_back() {
        let pool = BodyPool::new(2);
        let gate = Arc::new((Mutex::new(false), Condvar::new()));
        let done = Arc::new(AtomicUsize::new(0));
        let job = |gate: Arc<(Mutex<bool>, Condvar)>, done: Arc<AtomicUsize>| -> Job {
            Box::new(move || {
                let (open, cv) = &*gate;
                let mut g = open.lock().unwrap_or_else(|p| p.into_inner());
                while !*g {
                    g = cv.wait(g).unwrap_or_else(|p| p.into_inner());
                }
                done.fetch_add(1, SeqCst);
            })
        };
        assert!(pool.submit(job(gate.clone(), done.clone())).is_ok());
        assert!(pool.submit(job(gate.clone(), done.clone())).is_ok());
        assert!(pool.submit(job(gate.clone(), done.clone())).is_err());
        *gate.0.lock().unwrap_or_else(|p| p.into_inner()) = true;
        gate.1.notify_all();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while done.load(SeqCst) < 2 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(done.load(SeqCst), 2);
    }
}
