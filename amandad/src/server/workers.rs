//! The bounded worker pool for blocking service work (selfcheck's checks, sendsize's
//! estimates). The loop never blocks on a file system: it hands the job over and gets the
//! partial and final output back through a channel, woken by a [`mio::Waker`].
//!
//! The pool has a fixed number of threads (not one per request); jobs queue up beyond that.

use std::sync::Arc;
use std::thread;

use crossbeam_channel::{Receiver, Sender, unbounded};

use crate::services::Job;

/// What a job reports to the loop.
pub enum JobOutput {
    /// Everything the job produced so far (for a PREP).
    Partial(u64, Vec<u8>),
    /// The REP body.
    Done(u64, Vec<u8>),
}

/// The worker threads. Dropping this lets the threads finish their current job and exit.
pub struct Workers {
    jobs: Sender<(u64, Job)>,
    pub results: Receiver<JobOutput>,
}

impl Workers {
    /// Starts `threads` workers that wake the loop through `waker` after every output.
    pub fn new(threads: usize, waker: Arc<mio::Waker>) -> std::io::Result<Workers> {
        let (jobs, job_rx) = unbounded::<(u64, Job)>();
        let (out_tx, results) = unbounded();
        for i in 0..threads.max(1) {
            let job_rx = job_rx.clone();
            let out_tx: Sender<JobOutput> = out_tx.clone();
            let waker = waker.clone();
            thread::Builder::new()
                .name(format!("amandad-worker-{i}"))
                .spawn(move || {
                    while let Ok((id, job)) = job_rx.recv() {
                        let mut partial = |bytes: &[u8]| {
                            let _ = out_tx.send(JobOutput::Partial(id, bytes.to_vec()));
                            let _ = waker.wake();
                        };
                        // A service bug must not cost a worker thread or leave the exchange
                        // hanging: it becomes an error reply.
                        let body = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                            job(&mut partial)
                        }))
                        .unwrap_or_else(|_| {
                            log::error!("service job for exchange {id} panicked");
                            b"ERROR [amandad: internal error in the service]\n".to_vec()
                        });
                        let _ = out_tx.send(JobOutput::Done(id, body));
                        let _ = waker.wake();
                    }
                })?;
        }
        Ok(Workers { jobs, results })
    }

    /// Queues a job for exchange `id`.
    pub fn submit(&self, id: u64, job: Job) {
        // The receivers live as long as the workers, so sending cannot fail.
        let _ = self.jobs.send((id, job));
    }
}
