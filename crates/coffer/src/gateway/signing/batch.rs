//! Ed25519 signatures checked in batches, off the request threads.
//!
//! A signed request costs the gateway one Ed25519 verification, the largest
//! part of what signing adds to a payment. Checked together, signatures
//! cost about half as much each (ed25519-dalek's batch verification; on the
//! 2-core host: 42 µs alone, 19 µs in a batch of 8, 17 µs from 16 on). So
//! requests hand their signature to one checker thread; signatures that
//! arrive while it is busy form the next batch. A request alone is checked
//! at once, as a batch of one: batching adds no wait, only what the batch
//! before it still takes.
//!
//! A batch that fails is checked again one by one, so one bad signature
//! refuses only its own request (sending bad signatures can therefore cost
//! the checker up to twice the work, never more).

use crate::error::Error;
use ed25519_dalek::{Signature, VerifyingKey};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use tokio::sync::oneshot;

/// At most this many signatures in a batch: past 16 a batch costs no less
/// per signature, and a smaller batch is answered sooner.
const BATCH_MAX: usize = 32;
/// Signatures waiting for the checker, at most. A request that finds the
/// queue full checks its own signature on its own thread instead of
/// waiting without bound.
const QUEUE_MAX: usize = 1_024;

const _: () = assert!(BATCH_MAX >= 2 && BATCH_MAX <= QUEUE_MAX);

struct Job {
    key: VerifyingKey,
    message: Vec<u8>,
    signature: Signature,
    answer: oneshot::Sender<bool>,
}

/// The checker thread's queue; the thread ends when this is dropped.
pub struct Ed25519Batches {
    queue: SyncSender<Job>,
}

impl Ed25519Batches {
    pub fn start() -> Result<Ed25519Batches, Error> {
        let (queue, jobs) = std::sync::mpsc::sync_channel(QUEUE_MAX);
        std::thread::Builder::new()
            .name("coffer-signatures".into())
            .spawn(move || check_batches(&jobs))
            .map_err(|e| Error::internal("starting the signature checker", e))?;
        Ok(Ed25519Batches { queue })
    }

    /// Whether `signature` is `key`'s signature of `message`. A signature
    /// of the wrong form is simply not a valid signature.
    pub async fn verify(&self, key: VerifyingKey, message: Vec<u8>, signature: &[u8]) -> Result<bool, Error> {
        let Ok(signature) = Signature::from_slice(signature) else {
            return Ok(false);
        };
        let (answer, answered) = oneshot::channel();
        match self.queue.try_send(Job { key, message, signature, answer }) {
            Ok(()) => answered.await.map_err(|_| Error::Internal("the signature checker stopped".into())),
            Err(TrySendError::Full(job) | TrySendError::Disconnected(job)) => Ok(verify_one(&job)),
        }
    }
}

/// The checker thread: takes what has queued up (at least one signature,
/// at most [`BATCH_MAX`]), checks it as one batch, answers each request.
fn check_batches(jobs: &Receiver<Job>) {
    let mut batch = Vec::with_capacity(BATCH_MAX);
    while let Ok(first) = jobs.recv() {
        batch.push(first);
        while batch.len() < BATCH_MAX {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let all_valid = batch.len() > 1 && verify_together(&batch);
        for job in batch.drain(..) {
            let valid = all_valid || verify_one(&job);
            // The request may have gone (its client hung up): nobody to tell.
            let _ = job.answer.send(valid);
        }
    }
}

fn verify_together(batch: &[Job]) -> bool {
    let messages: Vec<&[u8]> = batch.iter().map(|job| job.message.as_slice()).collect();
    let signatures: Vec<Signature> = batch.iter().map(|job| job.signature).collect();
    let keys: Vec<VerifyingKey> = batch.iter().map(|job| job.key).collect();
    ed25519_dalek::verify_batch(&messages, &signatures, &keys).is_ok()
}

/// One signature, by the strict rules (canonical encodings, no weak key).
fn verify_one(job: &Job) -> bool {
    job.key.verify_strict(&job.message, &job.signature).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::{Signer as _, SigningKey};

    fn signed(seed: u8, message: &[u8]) -> (VerifyingKey, Vec<u8>) {
        let key = SigningKey::from_bytes(&[seed; 32]);
        (key.verifying_key(), key.sign(message).to_bytes().to_vec())
    }

    /// Many requests at once form batches; the one bad signature among them
    /// is refused and every good one accepted.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_bad_signature_in_a_batch_refuses_only_its_own_request() {
        let batches = std::sync::Arc::new(Ed25519Batches::start().unwrap());
        let checks: Vec<_> = (0..200u8)
            .map(|i| {
                let batches = std::sync::Arc::clone(&batches);
                tokio::spawn(async move {
                    let message = vec![i; 100];
                    let (key, mut signature) = signed(i, &message);
                    if i == 77 {
                        signature[10] ^= 1;
                    }
                    (i, batches.verify(key, message, &signature).await.unwrap())
                })
            })
            .collect();
        for check in checks {
            let (i, valid) = check.await.unwrap();
            assert_eq!(valid, i != 77, "request {i}");
        }
    }

    #[tokio::test]
    async fn wrong_messages_keys_and_malformed_signatures_are_not_valid() {
        let batches = Ed25519Batches::start().unwrap();
        let (key, signature) = signed(1, b"m");
        assert!(batches.verify(key, b"m".to_vec(), &signature).await.unwrap());
        assert!(!batches.verify(key, b"n".to_vec(), &signature).await.unwrap());
        assert!(!batches.verify(key, b"m".to_vec(), &signature[..63]).await.unwrap());
        let (other, _) = signed(2, b"m");
        assert!(!batches.verify(other, b"m".to_vec(), &signature).await.unwrap());
    }
}
