//! The task that runs gossip, retrieval answers and retrieval requests against the manager,
//! one at a time and in order, off the node's own task.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use libp2p::gossipsub::{self, MessageAcceptance};
use libp2p::request_response::ResponseChannel;
use libp2p::PeerId;
use sds_manager::{Bytes, ChannelId, ManagerError, MessageId, ReceivedKind, ReliabilityManager};
use tokio::sync::mpsc;

use crate::retrieve::{self, Request, Response};

/// Work the node hands to the manager, off its own task.
pub(super) enum Job {
    Gossip {
        id: gossipsub::MessageId,
        from: PeerId,
        bytes: Bytes,
    },
    Retrieved {
        peer: PeerId,
        bytes: Bytes,
        /// What was asked: the answer is checked against it.
        request: Arc<Request>,
    },
    Serve {
        peer: PeerId,
        request: Request,
        channel: ResponseChannel<Response>,
    },
}

/// What came of a [`Job`].
pub(super) enum Done {
    Verdict {
        id: gossipsub::MessageId,
        from: PeerId,
        acceptance: MessageAcceptance,
    },
    Retrieved {
        peer: PeerId,
        channel_id: ChannelId,
        message_id: MessageId,
        kind: ReceivedKind,
    },
    Mismatch {
        peer: PeerId,
        channel_id: ChannelId,
    },
    Serve {
        peer: PeerId,
        channel: ResponseChannel<Response>,
        messages: Vec<Bytes>,
    },
}

pub(super) fn job_bytes(job: &Job) -> usize {
    match job {
        Job::Gossip { bytes, .. } | Job::Retrieved { bytes, .. } => bytes.len(),
        Job::Serve { .. } => 0,
    }
}

/// Whether `bytes`, from the answer to `request`, are a message it asked for (decoded as the
/// manager will decode them; see [`retrieve::answer_matches`]).
fn answered(manager: &ReliabilityManager, request: &Request, bytes: &Bytes) -> bool {
    let decoded = sds_proto::engine::decode(bytes, &manager.config().engine);
    let ids = match &decoded {
        Ok(sds_proto::engine::Received::Message(m)) => Some((&m.channel_id, &m.message_id)),
        // Ephemeral messages are never logged, so never served.
        Ok(_) | Err(_) => None,
    };
    retrieve::answer_matches(request, ids)
}

/// Runs jobs against the manager, one at a time, in order; reports back to the node.
pub(super) async fn worker(
    manager: ReliabilityManager,
    mut jobs: mpsc::UnboundedReceiver<Job>,
    done: mpsc::UnboundedSender<Done>,
    queued: Arc<AtomicUsize>,
    max_response_bytes: usize,
    max_ids: usize,
) {
    while let Some(job) = jobs.recv().await {
        let size = job_bytes(&job);
        let result = match job {
            Job::Gossip { id, from, bytes } => {
                let acceptance = match manager.unwrap_received_message(bytes).await {
                    Ok(_) => MessageAcceptance::Accept,
                    // Bytes no SDS member could have sent.
                    Err(ManagerError::Decode(_))
                    | Err(ManagerError::MessageTooLarge { .. })
                    | Err(ManagerError::InvalidArgument(_)) => MessageAcceptance::Reject,
                    Err(e) => {
                        tracing::debug!(error = %e, "received gossip not processed");
                        MessageAcceptance::Ignore
                    }
                };
                Done::Verdict {
                    id,
                    from,
                    acceptance,
                }
            }
            Job::Retrieved {
                peer,
                bytes,
                request,
            } if !answered(&manager, &request, &bytes) => {
                tracing::debug!(%peer, "retrieval answer with a message not asked for");
                Done::Mismatch {
                    peer,
                    channel_id: request.channel.clone(),
                }
            }
            Job::Retrieved { peer, bytes, .. } => {
                match manager.unwrap_received_message(bytes).await {
                    Ok(u) => Done::Retrieved {
                        peer,
                        channel_id: u.channel_id,
                        message_id: u.message_id,
                        kind: u.kind,
                    },
                    Err(e) => {
                        tracing::debug!(%peer, error = %e, "retrieved message not processed");
                        queued.fetch_sub(size, Ordering::SeqCst);
                        continue;
                    }
                }
            }
            Job::Serve {
                peer,
                request,
                channel,
            } => {
                // Only channels already open here: a request must not make us load or create
                // one.
                let messages = if manager.channel_ids().contains(&request.channel) {
                    match manager.get_log(request.channel.clone()).await {
                        Ok(log) => {
                            let entries = || log.iter().map(|e| (&e.message_id, &e.bytes));
                            let mut out =
                                retrieve::select(&request.ids, entries(), max_response_bytes);
                            let used: usize = out.iter().map(|b| b.len()).sum();
                            if request.latest > 0 && (out.is_empty() || used < max_response_bytes) {
                                out.extend(retrieve::select_latest(
                                    (request.latest as usize)
                                        .min(max_ids.saturating_sub(out.len())),
                                    entries(),
                                    &request.ids,
                                    max_response_bytes.saturating_sub(used),
                                ));
                            }
                            out
                        }
                        Err(_) => Vec::new(),
                    }
                } else {
                    Vec::new()
                };
                Done::Serve {
                    peer,
                    channel,
                    messages,
                }
            }
        };
        queued.fetch_sub(size, Ordering::SeqCst);
        if done.send(result).is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sds_manager::{ManagerConfig, MemoryPersistence};

    fn manager(name: &str) -> ReliabilityManager {
        ReliabilityManager::new(
            name,
            ManagerConfig::default(),
            Arc::new(MemoryPersistence::new()),
        )
        .unwrap()
    }

    /// A retrieval answer is processed only when it carries a message the request asked for.
    #[tokio::test]
    async fn retrieval_answers_are_checked_against_the_request() {
        let (author, us) = (manager("author"), manager("us"));
        us.join_channel("c").await.unwrap();
        let x = author
            .wrap_outgoing_message(&b"x"[..], "x", "c")
            .await
            .unwrap();
        let (jobs, job_rx) = mpsc::unbounded_channel();
        let (done_tx, mut done) = mpsc::unbounded_channel();
        tokio::spawn(worker(
            us.clone(),
            job_rx,
            done_tx,
            Arc::new(AtomicUsize::new(0)),
            1 << 20,
            64,
        ));
        let peer = PeerId::random();
        let ask = |channel: &str, id: &str| {
            Arc::new(Request {
                channel: ChannelId::from(channel),
                ids: vec![MessageId::from(id)],
                latest: 0,
            })
        };
        for (request, bytes) in [
            (ask("c", "a"), x.clone()),
            (ask("d", "x"), x.clone()),
            (ask("c", "x"), Bytes::from_static(b"not a message")),
        ] {
            let job = Job::Retrieved {
                peer,
                bytes,
                request,
            };
            assert!(jobs.send(job).is_ok());
            let answer = done.recv().await;
            assert!(matches!(answer, Some(Done::Mismatch { .. })));
        }
        assert!(
            us.get_log("c").await.unwrap().is_empty(),
            "nothing processed"
        );
        let job = Job::Retrieved {
            peer,
            bytes: x,
            request: ask("c", "x"),
        };
        assert!(jobs.send(job).is_ok());
        assert!(matches!(done.recv().await, Some(Done::Retrieved { .. })));
        assert_eq!(us.get_log("c").await.unwrap().len(), 1);
    }
}
