//! The connection between a context and its manager: one thread per context that runs requests
//! one at a time, in order, and calls the callbacks.
//!
//! Every event an operation produces reaches the event callback before that operation's result
//! callback is called, as nim-sds does (it fires them inside the call).

use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sds_manager::{MessageId, Notification, ReliabilityManager};
use sds_proto::ChannelId;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use crate::callbacks::{Callbacks, Reply};
use crate::json::{b64, error_text, event_json, id_text, unwrapped_json};
use crate::lock;
use crate::retained::Retained;

/// What a context asks its worker to do; each carries the reply to call once.
pub enum Request {
    /// Wrap content as message id on channel.
    Wrap(Vec<u8>, MessageId, ChannelId, Reply),
    /// Process received bytes.
    Unwrap(Vec<u8>, Reply),
    /// Mark ids as met on a channel.
    Mark(Vec<MessageId>, ChannelId, Reply),
    /// Delete every channel.
    Reset(Reply),
    /// Start periodic work.
    StartTasks(Reply),
    /// Stop the worker.
    Stop,
}

/// What the worker thread owns besides the requests.
pub struct Worker {
    /// The manager.
    pub manager: ReliabilityManager,
    /// The callbacks, set from any thread.
    pub callbacks: Arc<Mutex<Callbacks>>,
    /// Keeps the buffers of event and transmit callbacks alive.
    pub events: Arc<Retained>,
    /// The manager's sync interval: `periodic_sync` events come that often.
    pub sync_interval: Duration,
}

impl Worker {
    /// Runs until `Stop` or until every sender is gone. `created` is told once the worker can
    /// take requests (or why it cannot).
    pub fn run(self, requests: mpsc::UnboundedReceiver<Request>, created: Reply) {
        let rt = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => {
                created.refuse(&format!("cannot start: {e}"));
                return;
            }
        };
        rt.block_on(self.serve(requests, created));
    }

    async fn serve(self, mut requests: mpsc::UnboundedReceiver<Request>, created: Reply) {
        let hints = self.callbacks.clone();
        self.manager
            .set_retrieval_hint_provider(Some(Arc::new(move |id: &MessageId| {
                let provider = lock(&hints).hint;
                provider.and_then(|h| h.hint(id))
            })))
            .await;
        // Drained after every request: large enough for the largest burst of one operation.
        let mut notifications = self.manager.subscribe_with_capacity(1 << 20);
        created.ok("");
        let mut periodic: Option<tokio::time::Interval> = None;
        loop {
            tokio::select! {
                biased;
                Some(n) = notifications.recv() => self.forward(n),
                _ = async { match periodic.as_mut() { Some(i) => { i.tick().await; } None => std::future::pending::<()>().await } } => {
                    self.emit(json!({"eventType": "periodic_sync"}));
                }
                request = requests.recv() => {
                    let Some(request) = request else { break };
                    let Some((reply, result)) = self.handle(request, &mut periodic).await else { break };
                    // The operation's events first, then its result.
                    while let Ok(n) = notifications.try_recv() {
                        self.forward(n);
                    }
                    match result {
                        Ok(text) => reply.ok(text),
                        Err(reason) => { reply.refuse(&reason); }
                    }
                }
            }
        }
        self.manager.cleanup().await;
    }

    /// Runs one request: its reply and what to tell it; `None` for `Stop`.
    async fn handle(
        &self,
        request: Request,
        periodic: &mut Option<tokio::time::Interval>,
    ) -> Option<(Reply, Result<Vec<u8>, String>)> {
        let m = &self.manager;
        Some(match request {
            Request::Wrap(content, id, channel, reply) => {
                let result = m.wrap_outgoing_message(content, id, channel).await;
                (
                    reply,
                    result
                        .map(|bytes| decimal_list(&bytes))
                        .map_err(|e| error_text(&e)),
                )
            }
            Request::Unwrap(bytes, reply) => {
                let result = m.unwrap_received_message(bytes).await;
                (
                    reply,
                    result
                        .map(|r| unwrapped_json(&r).into_bytes())
                        .map_err(|e| error_text(&e)),
                )
            }
            Request::Mark(ids, channel, reply) => {
                let result = m.mark_dependencies_met(&ids, channel).await;
                (
                    reply,
                    result.map(|()| Vec::new()).map_err(|e| error_text(&e)),
                )
            }
            Request::Reset(reply) => {
                let result = m.reset().await;
                (
                    reply,
                    result.map(|()| Vec::new()).map_err(|e| error_text(&e)),
                )
            }
            Request::StartTasks(reply) => {
                m.start_periodic_tasks().await;
                if periodic.is_none() {
                    // The first periodic_sync comes before the result, the next one a sync
                    // interval later.
                    self.emit(json!({"eventType": "periodic_sync"}));
                    let first = tokio::time::Instant::now() + self.sync_interval;
                    *periodic = Some(tokio::time::interval_at(first, self.sync_interval));
                }
                (reply, Ok(Vec::new()))
            }
            Request::Stop => return None,
        })
    }

    fn emit(&self, event: Value) {
        let cb = lock(&self.callbacks).event;
        if let Some(cb) = cb {
            cb.call(crate::RET_OK, event.to_string().into_bytes(), &self.events);
        }
    }

    fn forward(&self, n: Notification) {
        match n {
            Notification::Event(e) => {
                if let Some(v) = event_json(&e) {
                    self.emit(v);
                }
            }
            Notification::Transmit(t) => {
                let kind = t.kind.as_str();
                self.emit(json!({"eventType": "transmit", "kind": kind, "messageId": id_text(&t.message_id), "channelId": id_text(&t.channel_id), "message": b64(&t.bytes)}));
                let cb = lock(&self.callbacks).transmit;
                if let Some(cb) = cb {
                    cb.call(crate::RET_OK, t.bytes.to_vec(), &self.events);
                }
            }
            Notification::TaskError { channel_id, error } => self.emit(json!({"eventType": "task_error", "channelId": id_text(&channel_id), "error": format!("libsds error: {}", error_text(&error))})),
            Notification::Lagged { missed } => self.emit(json!({"eventType": "events_lost", "missed": missed})),
            _ => {}
        }
    }
}

/// Bytes as decimal numbers joined by commas, as nim-sds returns wrapped messages.
fn decimal_list(bytes: &[u8]) -> Vec<u8> {
    let mut text = String::with_capacity(bytes.len() * 4);
    for (i, b) in bytes.iter().enumerate() {
        if i > 0 {
            text.push(',');
        }
        let _ = write!(text, "{b}");
    }
    text.into_bytes()
}
