//! What the manager reports to operators: `tracing` events at the points that matter and
//! counters, gauges and histograms through the `metrics` facade (free when no recorder is
//! installed). Metric names (no per-channel labels: channel ids come from the network, and a
//! label per id would let any member grow the metrics without bound):
//!
//! | name | kind | what |
//! |---|---|---|
//! | `sds_sent_total` | counter | messages wrapped |
//! | `sds_received_total{kind}` | counter | messages unwrapped, by outcome (`delivered`, `buffered`, `duplicate`, `own`, `sync`, `ephemeral`) |
//! | `sds_delivered_total` | counter | `MessageReady` events |
//! | `sds_acknowledged_total` | counter | own messages acknowledged |
//! | `sds_send_failed_total` | counter | own messages given up |
//! | `sds_missing_dependencies_total` | counter | messages buffered for missing dependencies |
//! | `sds_irretrievably_lost_total` | counter | dependencies given up as lost |
//! | `sds_transmits_total{kind}` | counter | periodic transmissions (`resend`, `sync`, `repair`) |
//! | `sds_bytes_in_total`, `sds_bytes_out_total` | counter | bytes unwrapped / wrapped and transmitted |
//! | `sds_store_batch_seconds` | histogram | time of one store batch |
//! | `sds_store_failures_total` | counter | store batches that failed |
//! | `sds_log_entries`, `sds_incoming_buffered`, `sds_outgoing_unacknowledged` | gauge | summed over loaded channels |
//! | `sds_held_bytes` | gauge | bytes held on behalf of remote members, summed over loaded channels (what `ManagerConfig::max_held_bytes` bounds) |

use std::time::Duration;

use sds_proto::engine::{Channel, Event, ReceivedKind, Transmit};

/// The sizes of one channel that the gauges sum.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Sizes {
    log: usize,
    incoming: usize,
    outgoing: usize,
    held: usize,
}

impl Sizes {
    pub(crate) fn of(ch: &Channel) -> Sizes {
        Sizes {
            log: ch.log_len(),
            incoming: ch.incoming_len(),
            outgoing: ch.outgoing_len(),
            held: ch.held_bytes(),
        }
    }

    /// Bytes held on behalf of remote members.
    pub(crate) fn held(&self) -> usize {
        self.held
    }

    /// Moves the gauges from `before` to `after` (a channel loaded, changed or dropped).
    pub(crate) fn moved(before: Sizes, after: Sizes) {
        let delta = |a: usize, b: usize| b as f64 - a as f64;
        if before.log != after.log {
            metrics::gauge!("sds_log_entries").increment(delta(before.log, after.log));
        }
        if before.incoming != after.incoming {
            metrics::gauge!("sds_incoming_buffered")
                .increment(delta(before.incoming, after.incoming));
        }
        if before.outgoing != after.outgoing {
            metrics::gauge!("sds_outgoing_unacknowledged")
                .increment(delta(before.outgoing, after.outgoing));
        }
        if before.held != after.held {
            metrics::gauge!("sds_held_bytes").increment(delta(before.held, after.held));
        }
    }
}

/// A message wrapped: `bytes` to broadcast.
pub(crate) fn sent(bytes: usize) {
    metrics::counter!("sds_sent_total").increment(1);
    metrics::counter!("sds_bytes_out_total").increment(bytes as u64);
}

/// A message unwrapped.
pub(crate) fn received(bytes: usize, kind: &ReceivedKind) {
    let kind = kind.as_str();
    metrics::counter!("sds_received_total", "kind" => kind).increment(1);
    metrics::counter!("sds_bytes_in_total").increment(bytes as u64);
}

/// A store batch took `elapsed`; `ok` whether it committed.
pub(crate) fn store_batch(elapsed: Duration, ok: bool) {
    metrics::histogram!("sds_store_batch_seconds").record(elapsed.as_secs_f64());
    if !ok {
        metrics::counter!("sds_store_failures_total").increment(1);
    }
}

/// What one committed operation announces.
pub(crate) fn announced(events: &[Event], transmits: &[Transmit]) {
    for e in events {
        match e {
            Event::MessageReady {
                channel_id,
                message_id,
                ..
            } => {
                metrics::counter!("sds_delivered_total").increment(1);
                tracing::trace!(channel = %channel_id, message_id = %message_id, "delivered");
            }
            Event::Acknowledged { .. } => {
                metrics::counter!("sds_acknowledged_total").increment(1);
            }
            Event::MissingDependencies {
                channel_id,
                message_id,
                missing,
            } => {
                metrics::counter!("sds_missing_dependencies_total").increment(1);
                tracing::debug!(channel = %channel_id, message_id = %message_id, missing = missing.len(), "buffered: dependencies missing");
            }
            Event::SendFailed {
                channel_id,
                message_id,
                reason,
            } => {
                metrics::counter!("sds_send_failed_total").increment(1);
                tracing::warn!(channel = %channel_id, message_id = %message_id, ?reason, "gave up sending");
            }
            Event::IrretrievablyLost { channel_id, entry } => {
                metrics::counter!("sds_irretrievably_lost_total").increment(1);
                tracing::warn!(channel = %channel_id, message_id = %entry.message_id, "dependency lost for good");
            }
            Event::Dropped {
                channel_id,
                message_id,
                reason,
            } => {
                metrics::counter!("sds_dropped_total").increment(1);
                tracing::debug!(channel = %channel_id, message = %message_id, ?reason, "waiting message dropped");
            }
            Event::MessageConflict {
                channel_id,
                message_id,
                sender_id,
            } => {
                metrics::counter!("sds_message_conflicts_total").increment(1);
                tracing::warn!(channel = %channel_id, message = %message_id, sender = %sender_id, "another message under an id already held");
            }
            Event::RepairReady { channel_id, .. } => {
                tracing::debug!(channel = %channel_id, "repair answered");
            }
            Event::InvalidBloomFilter {
                channel_id,
                message_id,
                error,
            } => {
                tracing::debug!(channel = %channel_id, message_id = %message_id, %error, "received bloom filter ignored");
            }
            _ => {}
        }
    }
    for t in transmits {
        let kind = t.kind.as_str();
        metrics::counter!("sds_transmits_total", "kind" => kind).increment(1);
        metrics::counter!("sds_bytes_out_total").increment(t.bytes.len() as u64);
        tracing::trace!(channel = %t.channel_id, message_id = %t.message_id, kind, bytes = t.bytes.len(), "transmit");
    }
}
