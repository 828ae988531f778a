//! # libsds
//!
//! The C ABI of sds-rs, a drop-in for nim-sds's `libsds` (`include/libsds.h`). Each context owns
//! one worker thread running a tokio runtime and a [`ReliabilityManager`]; requests are queued
//! to it and processed one at a time, in order; results and events are delivered through the
//! caller's callbacks on that thread.
//!
//! Safety at the boundary: every pointer is checked before use (NULL is refused with
//! `RET_ERR`), contexts are looked up in a registry so a released one is refused rather than
//! dereferenced, inputs are copied before the function returns, and no Rust panic crosses the
//! boundary.

#![allow(unsafe_code)]
// The entry points are called from C, where nothing is safe: pointer validity is the header's
// contract, and every pointer is checked for NULL before it is read.
#![allow(clippy::not_unsafe_ptr_arg_deref)]

use std::collections::HashSet;
use std::ffi::{c_char, c_int, c_void, CStr};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use base64::Engine as _;
use sds_core::{
    Config, Event, ManagerConfig, ManagerError, NoopPersistence, Notification, Persistence,
    ReliabilityManager, TransmitKind,
};
use sds_proto::{Bytes, HistoryEntry, Id, MessageId};
use serde_json::{json, Value};
use tokio::sync::mpsc;

/// Request accepted (the result follows through the callback).
pub const RET_OK: c_int = 0;
/// Request refused (the callback also gets `RET_ERR` and a reason).
pub const RET_ERR: c_int = 1;
/// The callback was NULL.
pub const RET_MISSING_CALLBACK: c_int = 2;

/// `SdsCallBack`.
pub type SdsCallBack = Option<unsafe extern "C" fn(c_int, *const c_char, usize, *mut c_void)>;
/// `SdsRetrievalHintProvider`.
pub type SdsRetrievalHintProvider =
    Option<unsafe extern "C" fn(*const c_char, *mut *mut c_char, *mut usize, *mut c_void)>;

extern "C" {
    fn free(p: *mut c_void);
}

/// A C callback with its user data. The C side promises the pair may be used from the worker
/// thread (that is the contract of libsds.h).
#[derive(Clone, Copy)]
struct Callback {
    f: unsafe extern "C" fn(c_int, *const c_char, usize, *mut c_void),
    user_data: *mut c_void,
}

// SAFETY: see the type's documentation; the pointer is only handed back to the C callback.
unsafe impl Send for Callback {}
// SAFETY: as above.
unsafe impl Sync for Callback {}

impl Callback {
    fn new(f: SdsCallBack, user_data: *mut c_void) -> Option<Callback> {
        f.map(|f| Callback { f, user_data })
    }

    fn call(&self, ret: c_int, msg: &[u8]) {
        // SAFETY: a function pointer the caller gave us, with its own user data; the buffer lives
        // for the duration of the call, as the header documents.
        unsafe { (self.f)(ret, msg.as_ptr().cast(), msg.len(), self.user_data) }
    }
}

#[derive(Clone, Copy)]
struct HintCallback {
    f: unsafe extern "C" fn(*const c_char, *mut *mut c_char, *mut usize, *mut c_void),
    user_data: *mut c_void,
}

// SAFETY: as for `Callback`.
unsafe impl Send for HintCallback {}
// SAFETY: as for `Callback`.
unsafe impl Sync for HintCallback {}

impl HintCallback {
    fn hint(&self, id: &MessageId) -> Option<Bytes> {
        let mut c_id = id.as_bytes().to_vec();
        if c_id.contains(&0) {
            return None;
        }
        c_id.push(0);
        let mut out: *mut c_char = std::ptr::null_mut();
        let mut len: usize = 0;
        // SAFETY: a NUL-terminated id and two out-pointers valid for the call.
        unsafe { (self.f)(c_id.as_ptr().cast(), &mut out, &mut len, self.user_data) };
        if out.is_null() {
            return None;
        }
        // SAFETY: the provider stored a malloc'ed buffer of `len` bytes (header contract); it is
        // copied, then released with free().
        let hint = unsafe { std::slice::from_raw_parts(out.cast::<u8>(), len) }.to_vec();
        // SAFETY: as above.
        unsafe { free(out.cast()) };
        (!hint.is_empty()).then(|| Bytes::from(hint))
    }
}

/// Callbacks the worker reads.
#[derive(Default)]
struct Callbacks {
    event: Option<Callback>,
    transmit: Option<Callback>,
    hint: Option<HintCallback>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

enum Request {
    Wrap(Vec<u8>, Id, Id, Callback),
    Unwrap(Vec<u8>, Callback),
    Mark(Vec<Id>, Id, Callback),
    Reset(Callback),
    StartTasks(Callback),
    Stop,
}

/// What a context pointer points to.
struct Context {
    requests: mpsc::UnboundedSender<Request>,
    callbacks: Arc<Mutex<Callbacks>>,
    worker: Mutex<Option<JoinHandle<()>>>,
}

/// Addresses of live contexts: a pointer not in here is refused, never dereferenced.
static CONTEXTS: Mutex<Option<HashSet<usize>>> = Mutex::new(None);

fn register(ctx: *const Context) {
    lock(&CONTEXTS)
        .get_or_insert_with(HashSet::new)
        .insert(ctx as usize);
}

/// Runs `f` on a live context; `None` for NULL or a released one.
fn with_context<T>(ctx: *mut c_void, f: impl FnOnce(&Context) -> T) -> Option<T> {
    let live = lock(&CONTEXTS);
    if ctx.is_null() || !live.as_ref().is_some_and(|s| s.contains(&(ctx as usize))) {
        return None;
    }
    // SAFETY: registered contexts are valid until unregistered, which happens under this lock.
    let context = unsafe { &*(ctx as *const Context) };
    Some(f(context))
}

fn error_text(e: &ManagerError) -> String {
    let kind = match e {
        ManagerError::InvalidArgument(_) => "reInvalidArgument",
        ManagerError::MessageTooLarge { .. } => "reMessageTooLarge",
        ManagerError::Decode(_) => "reDeserializationError",
        ManagerError::Persistence(_) => "rePersistenceError",
        _ => "reInternalError",
    };
    format!("libsds error: {kind}: {e}")
}

fn id_text(id: &Id) -> String {
    id.to_string()
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn missing_json(entries: &[HistoryEntry]) -> Value {
    Value::Array(
        entries
            .iter()
            .map(|e| json!({"messageId": id_text(&e.message_id), "retrievalHint": b64(&e.retrieval_hint)}))
            .collect(),
    )
}

fn event_json(e: &Event) -> Value {
    match e {
        Event::MessageReady {
            channel_id,
            message_id,
            ..
        } => {
            json!({"eventType": "message_ready", "messageId": id_text(message_id), "channelId": id_text(channel_id)})
        }
        Event::Acknowledged {
            channel_id,
            message_id,
        } => {
            json!({"eventType": "message_sent", "messageId": id_text(message_id), "channelId": id_text(channel_id)})
        }
        Event::MissingDependencies {
            channel_id,
            message_id,
            missing,
        } => {
            json!({"eventType": "missing_dependencies", "messageId": id_text(message_id), "channelId": id_text(channel_id), "missingDeps": missing_json(missing)})
        }
        Event::RepairReady {
            channel_id, bytes, ..
        } => {
            json!({"eventType": "repair_ready", "channelId": id_text(channel_id), "message": b64(bytes)})
        }
        Event::PossiblyAcknowledged {
            channel_id,
            message_id,
            count,
        } => {
            json!({"eventType": "possibly_acknowledged", "messageId": id_text(message_id), "channelId": id_text(channel_id), "count": count})
        }
        Event::SendFailed {
            channel_id,
            message_id,
            ..
        } => {
            json!({"eventType": "send_failed", "messageId": id_text(message_id), "channelId": id_text(channel_id)})
        }
        Event::IrretrievablyLost { channel_id, entry } => {
            json!({"eventType": "irretrievably_lost", "messageId": id_text(&entry.message_id), "channelId": id_text(channel_id), "retrievalHint": b64(&entry.retrieval_hint)})
        }
        Event::InvalidBloomFilter {
            channel_id,
            message_id,
            error,
        } => {
            json!({"eventType": "invalid_bloom_filter", "messageId": id_text(message_id), "channelId": id_text(channel_id), "error": error.to_string()})
        }
        // Only on the spec wire profile, which libsds contexts do not select (nim-sds layout).
        Event::Ephemeral {
            channel_id,
            message_id,
            content,
            ..
        } => {
            json!({"eventType": "ephemeral_message", "messageId": id_text(message_id), "channelId": id_text(channel_id), "content": b64(content)})
        }
    }
}

/// The worker: owns the runtime and the manager; processes requests in order and forwards
/// notifications to the callbacks.
fn worker(
    manager: ReliabilityManager,
    callbacks: Arc<Mutex<Callbacks>>,
    mut requests: mpsc::UnboundedReceiver<Request>,
    created: Option<Callback>,
    sync_interval: u64,
) {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            if let Some(cb) = created {
                cb.call(
                    RET_ERR,
                    format!("libsds error: cannot start: {e}").as_bytes(),
                );
            }
            return;
        }
    };
    rt.block_on(async move {
        let hints = callbacks.clone();
        manager
            .set_retrieval_hint_provider(Some(Arc::new(move |id: &MessageId| {
                let provider = lock(&hints).hint;
                provider.and_then(|h| h.hint(id))
            })))
            .await;
        let mut notifications = manager.subscribe();
        if let Some(cb) = created {
            cb.call(RET_OK, b"");
        }
        let mut periodic: Option<tokio::time::Interval> = None;
        let emit = |json: Value| {
            let cb = lock(&callbacks).event;
            if let Some(cb) = cb {
                cb.call(RET_OK, json.to_string().as_bytes());
            }
        };
        loop {
            tokio::select! {
                biased;
                Some(n) = notifications.recv() => match n {
                    Notification::Event(e) => emit(event_json(&e)),
                    Notification::Transmit(t) => {
                        let kind = match t.kind {
                            TransmitKind::Resend => "resend",
                            TransmitKind::Sync => "sync",
                            TransmitKind::Repair => "repair",
                        };
                        emit(json!({"eventType": "transmit", "kind": kind, "messageId": id_text(&t.message_id), "channelId": id_text(&t.channel_id), "message": b64(&t.bytes)}));
                        let cb = lock(&callbacks).transmit;
                        if let Some(cb) = cb {
                            cb.call(RET_OK, &t.bytes);
                        }
                    }
                    Notification::TaskError { channel_id, error } => emit(json!({"eventType": "task_error", "channelId": id_text(&channel_id), "error": error_text(&error)})),
                },
                _ = async { match periodic.as_mut() { Some(i) => { i.tick().await; } None => std::future::pending::<()>().await } } => {
                    emit(json!({"eventType": "periodic_sync"}));
                }
                request = requests.recv() => {
                    let Some(request) = request else { break };
                    match request {
                        Request::Wrap(content, id, channel, cb) => {
                            match manager.wrap_outgoing_message(content, id, channel).await {
                                Ok(bytes) => {
                                    let text: Vec<String> = bytes.iter().map(u8::to_string).collect();
                                    cb.call(RET_OK, text.join(",").as_bytes());
                                }
                                Err(e) => cb.call(RET_ERR, error_text(&e).as_bytes()),
                            }
                        }
                        Request::Unwrap(bytes, cb) => match manager.unwrap_received_message(bytes).await {
                            Ok(r) => {
                                let out = json!({
                                    "message": r.content.iter().map(|b| Value::from(*b)).collect::<Vec<_>>(),
                                    "channelId": id_text(&r.channel_id),
                                    "missingDeps": missing_json(&r.missing_dependencies),
                                });
                                cb.call(RET_OK, out.to_string().as_bytes());
                            }
                            Err(e) => cb.call(RET_ERR, error_text(&e).as_bytes()),
                        },
                        Request::Mark(ids, channel, cb) => match manager.mark_dependencies_met(&ids, channel).await {
                            Ok(()) => cb.call(RET_OK, b""),
                            Err(e) => cb.call(RET_ERR, error_text(&e).as_bytes()),
                        },
                        Request::Reset(cb) => match manager.reset().await {
                            Ok(()) => cb.call(RET_OK, b""),
                            Err(e) => cb.call(RET_ERR, error_text(&e).as_bytes()),
                        },
                        Request::StartTasks(cb) => {
                            manager.start_periodic_tasks().await;
                            if periodic.is_none() {
                                // periodic_sync fires at once, then every sync interval.
                                periodic = Some(tokio::time::interval(Duration::from_millis(sync_interval.max(1))));
                            }
                            cb.call(RET_OK, b"");
                        }
                        Request::Stop => break,
                    }
                }
            }
        }
        manager.cleanup().await;
    });
}

fn cstr(p: *const c_char) -> Option<Vec<u8>> {
    if p.is_null() {
        return None;
    }
    // SAFETY: the caller passes a NUL-terminated string (header contract); it is copied.
    Some(unsafe { CStr::from_ptr(p) }.to_bytes().to_vec())
}

fn refuse(cb: Callback, reason: &str) -> c_int {
    cb.call(RET_ERR, format!("libsds error: {reason}").as_bytes());
    RET_ERR
}

/// Catches panics at the boundary.
fn guarded<T>(fallback: T, f: impl FnOnce() -> T) -> T {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or(fallback)
}

/// An entry point that reports through a callback: `RET_MISSING_CALLBACK` without one,
/// `RET_ERR` if `f` panics, otherwise what `f` returns.
fn with_callback(
    callback: SdsCallBack,
    user_data: *mut c_void,
    f: impl FnOnce(Callback) -> c_int,
) -> c_int {
    guarded(RET_ERR, || match Callback::new(callback, user_data) {
        Some(cb) => f(cb),
        None => RET_MISSING_CALLBACK,
    })
}

/// A database to keep the state in: its path and how hard commits try to survive.
type Database = (String, sds_sqlite::Durability);

fn engine_config(v: &Value) -> Result<(String, Option<Database>, Config), String> {
    let obj = match v {
        Value::Null => return Ok((String::new(), None, Config::default())),
        Value::Object(o) => o,
        _ => return Err("configuration must be a JSON object".into()),
    };
    let mut c = Config::default();
    let participant = match obj.get("participantId") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(_) => return Err("participantId must be a string".into()),
    };
    let durability = match obj.get("databaseDurability") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s == "normal" => Some(sds_sqlite::Durability::Normal),
        Some(Value::String(s)) if s == "full" => Some(sds_sqlite::Durability::Full),
        Some(_) => return Err("databaseDurability must be \"normal\" or \"full\"".into()),
    };
    let database = match obj.get("databasePath") {
        None | Some(Value::Null) if durability.is_some() => {
            return Err("databaseDurability needs databasePath".into())
        }
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some((s.clone(), durability.unwrap_or_default())),
        Some(_) => return Err("databasePath must be a string".into()),
    };
    for (key, value) in obj {
        let n = || {
            value
                .as_u64()
                .ok_or(format!("{key} must be a non-negative integer"))
        };
        match key.as_str() {
            "participantId" | "databasePath" | "databaseDurability" => {}
            "bloomCapacity" => {
                c.bloom_capacity = value.as_i64().ok_or("bloomCapacity must be an integer")?
            }
            "bloomErrorRate" => {
                c.bloom_error_rate = value.as_f64().ok_or("bloomErrorRate must be a number")?
            }
            "maxMessageHistory" => c.max_message_history = n()? as usize,
            "maxCausalHistory" => c.max_causal_history = n()? as usize,
            "resendIntervalMs" => c.resend_interval = n()?,
            "possiblyAckedResendIntervalMs" => c.possibly_acked_resend_interval = n()?,
            "maxResendAttempts" => c.max_resend_attempts = n()? as u32,
            "possibleAckThreshold" => c.possible_ack_threshold = n()? as u32,
            "syncIntervalMs" => c.sync_interval = n()?,
            "quietSync" => {
                c.quiet_sync = value.as_bool().ok_or("quietSync must be true or false")?
            }
            "filterResendAfterMs" => c.filter_resend_after = Some(n()?).filter(|t| *t > 0),
            "lostDependencyTimeoutMs" => c.lost_dependency_timeout = Some(n()?).filter(|t| *t > 0),
            "maxIncomingBuffer" => c.max_incoming_buffer = n()? as usize,
            "maxOutgoingBuffer" => c.max_outgoing_buffer = n()? as usize,
            "repairTMinMs" => c.repair_t_min = n()?,
            "repairTMaxMs" => c.repair_t_max = n()?,
            "numResponseGroups" => c.num_response_groups = n()? as u32,
            "maxRepairRequests" => c.max_repair_requests = n()? as usize,
            other => return Err(format!("unknown setting {other:?}")),
        }
    }
    Ok((participant, database, c))
}

fn create(config: Value, created: Callback) -> *mut c_void {
    let (participant, database, engine) = match engine_config(&config) {
        Ok(x) => x,
        Err(e) => {
            refuse(created, &format!("invalid configuration: {e}"));
            return std::ptr::null_mut();
        }
    };
    let persistence: Arc<dyn Persistence> = match database {
        None => Arc::new(NoopPersistence),
        Some((path, durability)) => match sds_sqlite::SqliteStore::open_with(&path, durability) {
            Ok(store) => Arc::new(store),
            Err(e) => {
                refuse(created, &format!("rePersistenceError: {e}"));
                return std::ptr::null_mut();
            }
        },
    };
    let sync_interval = engine.sync_interval;
    let manager = match ReliabilityManager::new(
        participant.as_str(),
        ManagerConfig {
            engine,
            ..ManagerConfig::default()
        },
        persistence,
    ) {
        Ok(m) => m,
        Err(e) => {
            refuse(created, &error_text(&e));
            return std::ptr::null_mut();
        }
    };
    let (tx, rx) = mpsc::unbounded_channel();
    let callbacks = Arc::new(Mutex::new(Callbacks::default()));
    let worker_callbacks = callbacks.clone();
    let handle = std::thread::Builder::new()
        .name("libsds".into())
        .spawn(move || worker(manager, worker_callbacks, rx, Some(created), sync_interval));
    let handle = match handle {
        Ok(h) => h,
        Err(e) => {
            refuse(created, &format!("cannot start the worker: {e}"));
            return std::ptr::null_mut();
        }
    };
    let ctx = Box::into_raw(Box::new(Context {
        requests: tx,
        callbacks,
        worker: Mutex::new(Some(handle)),
    }));
    register(ctx);
    ctx.cast()
}

/// Creates a context with nim-sds's defaults (no participant id: SDS-R off; no persistence).
/// Returns NULL when `callback` is NULL. The callback gets `RET_OK` once the manager exists.
#[no_mangle]
pub extern "C" fn SdsNewReliabilityManager(
    callback: SdsCallBack,
    user_data: *mut c_void,
) -> *mut c_void {
    guarded(std::ptr::null_mut(), || {
        match Callback::new(callback, user_data) {
            Some(cb) => create(Value::Null, cb),
            None => std::ptr::null_mut(),
        }
    })
}

/// Creates a context from a JSON configuration (see the header).
#[no_mangle]
pub extern "C" fn SdsNewReliabilityManagerWithConfig(
    config_json: *const c_char,
    callback: SdsCallBack,
    user_data: *mut c_void,
) -> *mut c_void {
    guarded(std::ptr::null_mut(), || {
        let Some(cb) = Callback::new(callback, user_data) else {
            return std::ptr::null_mut();
        };
        let config = match cstr(config_json) {
            None => Value::Null,
            Some(text) => match serde_json::from_slice::<Value>(&text) {
                Ok(v) => v,
                Err(e) => {
                    refuse(cb, &format!("invalid configuration: {e}"));
                    return std::ptr::null_mut();
                }
            },
        };
        create(config, cb)
    })
}

/// Sets the event callback (events are JSON objects with an `eventType`).
#[no_mangle]
pub extern "C" fn SdsSetEventCallback(
    ctx: *mut c_void,
    callback: SdsCallBack,
    user_data: *mut c_void,
) {
    guarded((), || {
        with_context(ctx, |c| {
            lock(&c.callbacks).event = Callback::new(callback, user_data)
        });
    })
}

/// Sets the callback that receives bytes to broadcast (resends, repairs, syncs).
#[no_mangle]
pub extern "C" fn SdsSetTransmitCallback(
    ctx: *mut c_void,
    callback: SdsCallBack,
    user_data: *mut c_void,
) {
    guarded((), || {
        with_context(ctx, |c| {
            lock(&c.callbacks).transmit = Callback::new(callback, user_data)
        });
    })
}

/// Sets the retrieval-hint provider.
#[no_mangle]
pub extern "C" fn SdsSetRetrievalHintProvider(
    ctx: *mut c_void,
    callback: SdsRetrievalHintProvider,
    user_data: *mut c_void,
) {
    guarded((), || {
        with_context(ctx, |c| {
            lock(&c.callbacks).hint = callback.map(|f| HintCallback { f, user_data })
        });
    })
}

/// Queues a request on a live context.
fn submit(ctx: *mut c_void, cb: Callback, request: Request) -> c_int {
    match with_context(ctx, |c| c.requests.send(request).is_ok()) {
        Some(true) => RET_OK,
        Some(false) => refuse(cb, "the context's worker has stopped"),
        None => refuse(cb, "invalid or released context"),
    }
}

/// Wraps a message; the callback gets the bytes as decimal values joined by commas.
#[no_mangle]
pub extern "C" fn SdsWrapOutgoingMessage(
    ctx: *mut c_void,
    message: *mut c_void,
    message_len: usize,
    message_id: *const c_char,
    channel_id: *const c_char,
    callback: SdsCallBack,
    user_data: *mut c_void,
) -> c_int {
    with_callback(callback, user_data, |cb| {
        if message.is_null() && message_len > 0 {
            return refuse(cb, "message is NULL");
        }
        let Some(id) = cstr(message_id) else {
            return refuse(cb, "message id is NULL");
        };
        let channel = match cstr(channel_id) {
            Some(c) if !c.is_empty() => c,
            _ => return refuse(cb, "channel id is NULL or empty"),
        };
        let content = if message_len == 0 {
            Vec::new()
        } else {
            // SAFETY: non-NULL, `message_len` readable bytes (header contract); copied now.
            unsafe { std::slice::from_raw_parts(message.cast::<u8>(), message_len) }.to_vec()
        };
        submit(
            ctx,
            cb,
            Request::Wrap(content, Id::from(id), Id::from(channel), cb),
        )
    })
}

/// Unwraps a received message; the callback gets `{"message":[…],"channelId","missingDeps"}`.
#[no_mangle]
pub extern "C" fn SdsUnwrapReceivedMessage(
    ctx: *mut c_void,
    message: *mut c_void,
    message_len: usize,
    callback: SdsCallBack,
    user_data: *mut c_void,
) -> c_int {
    with_callback(callback, user_data, |cb| {
        if message.is_null() && message_len > 0 {
            return refuse(cb, "message is NULL");
        }
        let bytes = if message_len == 0 {
            Vec::new()
        } else {
            // SAFETY: as in SdsWrapOutgoingMessage.
            unsafe { std::slice::from_raw_parts(message.cast::<u8>(), message_len) }.to_vec()
        };
        submit(ctx, cb, Request::Unwrap(bytes, cb))
    })
}

/// Marks message ids as delivered for dependency purposes.
#[no_mangle]
pub extern "C" fn SdsMarkDependenciesMet(
    ctx: *mut c_void,
    message_ids: *mut *mut c_char,
    count: usize,
    channel_id: *const c_char,
    callback: SdsCallBack,
    user_data: *mut c_void,
) -> c_int {
    with_callback(callback, user_data, |cb| {
        if message_ids.is_null() && count > 0 {
            return refuse(cb, "message id array is NULL");
        }
        let channel = match cstr(channel_id) {
            Some(c) if !c.is_empty() => c,
            _ => return refuse(cb, "channel id is NULL or empty"),
        };
        let mut ids = Vec::with_capacity(count);
        for i in 0..count {
            // SAFETY: `count` readable pointers (header contract).
            let p = unsafe { *message_ids.add(i) };
            match cstr(p) {
                Some(id) => ids.push(Id::from(id)),
                None => return refuse(cb, "a message id in the array is NULL"),
            }
        }
        submit(ctx, cb, Request::Mark(ids, Id::from(channel), cb))
    })
}

/// Deletes every channel's state.
#[no_mangle]
pub extern "C" fn SdsResetReliabilityManager(
    ctx: *mut c_void,
    callback: SdsCallBack,
    user_data: *mut c_void,
) -> c_int {
    with_callback(callback, user_data, |cb| {
        submit(ctx, cb, Request::Reset(cb))
    })
}

/// Starts periodic work (resends, syncs, repairs); `periodic_sync` events every sync interval.
#[no_mangle]
pub extern "C" fn SdsStartPeriodicTasks(
    ctx: *mut c_void,
    callback: SdsCallBack,
    user_data: *mut c_void,
) -> c_int {
    with_callback(callback, user_data, |cb| {
        submit(ctx, cb, Request::StartTasks(cb))
    })
}

/// Stops the context's periodic work and worker, frees it, then calls the callback with
/// `RET_OK` (on the caller's thread). Later calls with this context are refused.
#[no_mangle]
pub extern "C" fn SdsCleanupReliabilityManager(
    ctx: *mut c_void,
    callback: SdsCallBack,
    user_data: *mut c_void,
) -> c_int {
    with_callback(callback, user_data, |cb| {
        // Unregister first: no other call can reach the context from now on.
        let removed = {
            let mut live = lock(&CONTEXTS);
            !ctx.is_null() && live.as_mut().is_some_and(|s| s.remove(&(ctx as usize)))
        };
        if !removed {
            return refuse(cb, "invalid or released context");
        }
        // SAFETY: it was registered, so it came from Box::into_raw and nothing else frees it.
        let context = unsafe { Box::from_raw(ctx as *mut Context) };
        let _ = context.requests.send(Request::Stop);
        if let Some(handle) = lock(&context.worker).take() {
            // Called from one of this context's own callbacks: the worker stops once the
            // callback returns; waiting for it here would wait for ourselves.
            if handle.thread().id() != std::thread::current().id() {
                let _ = handle.join();
            }
        }
        drop(context);
        cb.call(RET_OK, b"");
        RET_OK
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configuration_keys_reach_the_engine() {
        let v: Value = serde_json::from_str(
            r#"{"participantId":"alice","syncIntervalMs":5000,"quietSync":true,"filterResendAfterMs":2000}"#,
        )
        .unwrap();
        let (participant, database, c) = engine_config(&v).unwrap();
        assert_eq!(participant, "alice");
        assert_eq!(database, None);
        assert_eq!(c.sync_interval, 5_000);
        assert!(c.quiet_sync);
        assert_eq!(c.filter_resend_after, Some(2_000));
        let off: Value = serde_json::from_str(r#"{"filterResendAfterMs":0}"#).unwrap();
        assert_eq!(engine_config(&off).unwrap().2.filter_resend_after, None);
        let wrong: Value = serde_json::from_str(r#"{"quietSync":1}"#).unwrap();
        assert!(engine_config(&wrong).is_err());
    }

    #[test]
    fn database_durability_is_normal_unless_asked_and_needs_a_path() {
        let db = |json: &str| engine_config(&serde_json::from_str(json).unwrap()).map(|x| x.1);
        use sds_sqlite::Durability::{Full, Normal};
        assert_eq!(
            db(r#"{"databasePath":"a.db"}"#).unwrap(),
            Some(("a.db".into(), Normal))
        );
        assert_eq!(
            db(r#"{"databasePath":"a.db","databaseDurability":"full"}"#).unwrap(),
            Some(("a.db".into(), Full))
        );
        assert!(db(r#"{"databasePath":"a.db","databaseDurability":"fast"}"#).is_err());
        assert!(db(r#"{"databaseDurability":"full"}"#).is_err());
    }
}
