//! Group commit, the part both backends share: a write job runs in the
//! writer's batch and hands back a [`Reply`], which the writer calls once
//! the batch's transaction has ended, so a caller hears of its write only
//! after it is durable (or that the batch failed to commit).

use super::Answer;
use crate::error::Error;
use tokio::sync::{mpsc, oneshot, watch};

/// A job's answer, waiting for its batch's commit.
pub type Reply = Box<dyn FnOnce(Result<(), &Error>) + Send>;

/// Where a job's answer goes.
pub type Done = oneshot::Sender<Result<Answer, Error>>;

/// The reply of a job that answered `result`.
pub fn reply(result: Result<Answer, Error>, done: Done) -> Reply {
    Box::new(move |commit| {
        let outcome = match commit {
            Ok(()) => result,
            // The store cannot write just now: the caller may retry (503).
            Err(Error::Unavailable(why)) => Err(Error::Unavailable(why)),
            Err(e) => Err(Error::internal("commit", e)),
        };
        // The caller may have gone away; the work is committed anyway.
        let _ = done.send(outcome);
    })
}

/// Counts a commit on `commits`.
pub fn count(commits: &watch::Sender<u64>) {
    commits.send_modify(|n| *n = n.wrapping_add(1));
}

/// A channel for one job's answer.
pub fn answer() -> (Done, oneshot::Receiver<Result<Answer, Error>>) {
    oneshot::channel()
}

/// Queues `job` for the writer and waits for its answer.
pub async fn queue<J>(
    jobs: &mpsc::Sender<J>,
    job: J,
    answer: oneshot::Receiver<Result<Answer, Error>>,
) -> Result<Answer, Error> {
    jobs.send(job).await.map_err(|_| Error::Unavailable("the store is shutting down"))?;
    answer.await.map_err(|_| Error::Unavailable("the store did not take the write; try again shortly"))?
}

/// Tells a batch's callers how it ended. A commit is counted first
/// (`committed`): a caller that has its answer sees the counter past its
/// own commit (the outbox's watchers wake on it).
pub fn answer_batch(commit: Result<(), &Error>, committed: impl FnOnce(), replies: &mut Vec<Reply>) {
    if commit.is_ok() {
        committed();
    }
    for reply in replies.drain(..) {
        reply(commit);
    }
}
