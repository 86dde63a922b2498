//! Passwords: argon2id with the OWASP parameters (m = 19 MiB, t = 2, p = 1).
//!
//! A hash holds 19 MiB and ~25 ms of a core. It runs on a small pool of dedicated threads at
//! the lowest OS priority (`SCHED_IDLE`), so the scheduler gives proxied traffic the cores first and
//! a burst of logins slows down logins, not the requests beside them. A semaphore bounds how
//! many wait, so a flood cannot queue unbounded memory.
//!
//! A login for an unknown account verifies against a dummy hash, so the answer takes the same
//! time whether or not the account exists.

use argon2::Argon2;
use argon2::password_hash::{PasswordHasher, PasswordVerifier, phc::PasswordHash};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use tokio::sync::{Semaphore, oneshot};

use crate::error::Refusal;

type Job = Box<dyn FnOnce() + Send>;

pub struct Passwords {
    permits: Arc<Semaphore>,
    jobs: Mutex<mpsc::Sender<Job>>,
    dummy: Arc<String>,
}

impl Passwords {
    pub fn new(threads: usize) -> Passwords {
        let (tx, rx) = mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..threads.max(1) {
            let rx = rx.clone();
            std::thread::Builder::new()
                .name(format!("argon2-{i}"))
                .spawn(move || {
                    lower_priority();
                    loop {
                        let job = match rx.lock() {
                            Ok(r) => r.recv(),
                            Err(_) => return,
                        };
                        match job {
                            Ok(job) => job(),
                            Err(_) => return,
                        }
                    }
                })
                .expect("spawn a password-hashing thread");
        }
        let dummy = hash_now("not a password anyone has").expect("argon2 works");
        Passwords {
            permits: Arc::new(Semaphore::new(threads.max(1) * 8)),
            jobs: Mutex::new(tx),
            dummy: Arc::new(dummy),
        }
    }

    async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, Refusal> {
        let _permit = self.permits.acquire().await.map_err(|_| busy())?;
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move || {
            let _ = tx.send(f());
        });
        self.jobs
            .lock()
            .map_err(|_| busy())?
            .send(job)
            .map_err(|_| busy())?;
        rx.await.map_err(|_| busy())
    }

    pub async fn hash(&self, password: &str) -> Result<String, Refusal> {
        let password = password.to_string();
        self.run(move || hash_now(&password))
            .await?
            .ok_or_else(busy)
    }

    /// True when `password` matches `phc`; with no `phc`, checks a dummy hash and says false.
    pub async fn verify(&self, password: &str, phc: Option<&str>) -> Result<bool, Refusal> {
        let password = password.to_string();
        let (phc, real) = match phc {
            Some(p) => (p.to_string(), true),
            None => (self.dummy.as_str().to_string(), false),
        };
        let ok = self
            .run(move || {
                PasswordHash::new(&phc)
                    .map(|h| {
                        Argon2::default()
                            .verify_password(password.as_bytes(), &h)
                            .is_ok()
                    })
                    .unwrap_or(false)
            })
            .await?;
        Ok(ok && real)
    }
}

/// The calling thread to `SCHED_IDLE` (and nice 19 where that is refused; on Linux both are
/// per thread). Under `SCHED_IDLE` the thread runs only on a core nothing else wants, and any
/// waking proxy worker preempts it at once; under nice 19 alone a hash could keep a worker
/// waiting for the rest of its time slice, which showed in proxied p99 beside logins.
fn lower_priority() {
    // SAFETY: plain syscalls on the calling thread's own id with a zeroed, valid sched_param;
    // failure only leaves the priority as it was.
    unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        libc::setpriority(libc::PRIO_PROCESS, tid, 19);
        let param = libc::sched_param { sched_priority: 0 };
        libc::sched_setscheduler(0, libc::SCHED_IDLE, &param);
    }
}

fn hash_now(password: &str) -> Option<String> {
    Argon2::default()
        .hash_password(password.as_bytes())
        .ok()
        .map(|h| h.to_string())
}

fn busy() -> Refusal {
    Refusal::unavailable("password hashing is unavailable; try again")
}

#[cfg(test)]
mod tests {
    #[test]
    fn hashing_threads_run_only_on_idle_cores() {
        let policy = std::thread::spawn(|| {
            super::lower_priority();
            // SAFETY: a query of the calling thread's own policy.
            unsafe { libc::sched_getscheduler(0) }
        })
        .join()
        .unwrap();
        assert_eq!(policy, libc::SCHED_IDLE);
    }
}
