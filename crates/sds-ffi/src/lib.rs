//! # libsds
//!
//! The C ABI of sds-rs, a drop-in for nim-sds's `libsds` (`include/libsds.h`). Each context owns
//! one worker thread running a tokio runtime and a [`ReliabilityManager`]; requests are queued
//! to it and processed one at a time, in order; results and events are delivered through the
//! caller's callbacks on that thread, every event of an operation before its result.
//!
//! Safety at the boundary: every pointer is checked before use (NULL is refused with
//! `RET_ERR`), contexts are looked up in a registry so a released one is refused rather than
//! dereferenced, lengths and counts are checked against the limits before anything is read or
//! allocated, inputs are copied before the function returns, every call that takes a callback
//! calls it exactly once, buffers given to callbacks outlive the call (see [`retained`]), and no
//! Rust panic crosses the boundary.

#![allow(unsafe_code)]
// The entry points are called from C, where nothing is safe: pointer validity is the header's
// contract, and every pointer is checked for NULL before it is read.
#![allow(clippy::not_unsafe_ptr_arg_deref)]

mod callbacks;
mod config;
mod json;
pub mod retained;
mod worker;

use std::collections::HashSet;
use std::ffi::{c_char, c_int, c_void, CStr};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use callbacks::{Callback, Callbacks, HintCallback, Reply};
use config::{engine_config, held_budget};
use json::error_text;
use retained::{Retained, WITHOUT_CONTEXT};
use sds_manager::{
    ManagerConfig, NoopPersistence, Persistence, ReliabilityManager, UnjoinedChannels,
};
use sds_proto::{ChannelId, MessageId};
use serde_json::Value;
use tokio::sync::mpsc;
use worker::{Request, Worker};

/// Request accepted (the result follows through the callback).
pub const RET_OK: c_int = 0;
/// Request refused (the callback also gets `RET_ERR` and a reason).
pub const RET_ERR: c_int = 1;
/// The callback was NULL.
pub const RET_MISSING_CALLBACK: c_int = 2;

/// The most channels that received messages open (channels the application sends on, or marks
/// dependencies met on, are counted apart): beyond it the least recently used is evicted.
pub const REMOTE_CHANNELS: usize = 256;

/// The most message ids one `SdsMarkDependenciesMet` call takes.
pub const MAX_IDS_PER_CALL: usize = 1 << 20;

/// `SdsCallBack`.
pub type SdsCallBack = Option<unsafe extern "C" fn(c_int, *const c_char, usize, *mut c_void)>;
/// `SdsRetrievalHintProvider`.
pub type SdsRetrievalHintProvider =
    Option<unsafe extern "C" fn(*const c_char, *mut *mut c_char, *mut usize, *mut c_void)>;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// What a context pointer points to.
struct Context {
    requests: mpsc::UnboundedSender<Request>,
    callbacks: Arc<Mutex<Callbacks>>,
    worker: Mutex<Option<JoinHandle<()>>>,
    /// Keeps result buffers alive after their callback returned.
    results: Arc<Retained>,
    /// The largest message (and content) the context accepts.
    max_message_size: usize,
}

/// Addresses of live contexts: a pointer not in here is refused, never dereferenced.
static CONTEXTS: Mutex<Option<HashSet<usize>>> = Mutex::new(None);

fn register(ctx: *const Context) {
    lock(&CONTEXTS)
        .get_or_insert_with(HashSet::new)
        .insert(ctx as usize);
}

/// Runs `f` on a live context, under the registry's lock; `None` for NULL or a released one.
fn with_context<T>(ctx: *mut c_void, f: impl FnOnce(&Context) -> T) -> Option<T> {
    let live = lock(&CONTEXTS);
    if ctx.is_null() || !live.as_ref().is_some_and(|s| s.contains(&(ctx as usize))) {
        return None;
    }
    // SAFETY: registered contexts are valid until unregistered, which happens under this lock.
    let context = unsafe { &*(ctx as *const Context) };
    Some(f(context))
}

fn cstr(p: *const c_char) -> Option<Vec<u8>> {
    if p.is_null() {
        return None;
    }
    // SAFETY: the caller passes a NUL-terminated string (header contract); it is copied.
    Some(unsafe { CStr::from_ptr(p) }.to_bytes().to_vec())
}

/// Catches panics at the boundary.
fn guarded<T>(fallback: T, f: impl FnOnce() -> T) -> T {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or(fallback)
}

/// What an entry point that reports through a callback works with: the reply (bound to the
/// context's ring of result buffers) and the context's message size limit.
struct Call {
    reply: Reply,
    max_message_size: usize,
}

/// An entry point that reports through a callback: `RET_MISSING_CALLBACK` without one; for a
/// NULL or released context the callback gets `RET_ERR`; otherwise what `f` returns. A panic
/// inside `f` (a bug) is reported through the callback too, never across the boundary.
fn with_callback(
    ctx: *mut c_void,
    callback: SdsCallBack,
    user_data: *mut c_void,
    f: impl FnOnce(&Call) -> c_int,
) -> c_int {
    guarded(RET_ERR, || {
        let Some(cb) = Callback::new(callback, user_data) else {
            return RET_MISSING_CALLBACK;
        };
        let Some(call) = with_context(ctx, |c| Call {
            reply: Reply::new(cb, c.results.clone()),
            max_message_size: c.max_message_size,
        }) else {
            return Reply::new(cb, WITHOUT_CONTEXT.clone()).refuse("invalid or released context");
        };
        let reply = call.reply.clone();
        guarded(None, || Some(f(&call)))
            .unwrap_or_else(|| reply.refuse("reInternalError: the call failed unexpectedly"))
    })
}

/// Queues a request on a live context.
fn submit(ctx: *mut c_void, reply: &Reply, request: Request) -> c_int {
    // Sent under the registry's lock: a request accepted here is queued before the Stop of a
    // concurrent cleanup, so the worker answers it.
    match with_context(ctx, |c| c.requests.send(request).is_ok()) {
        Some(true) => RET_OK,
        Some(false) => reply.refuse("the context's worker has stopped"),
        None => reply.refuse("invalid or released context"),
    }
}

/// Copies `len` bytes from `ptr` after checking `len` against `limit`; refuses (through the
/// reply) a NULL pointer with a length, a length above the limit, or memory that cannot be had.
fn copy_in(ptr: *const c_void, len: usize, limit: usize, call: &Call) -> Result<Vec<u8>, c_int> {
    if len == 0 {
        return Ok(Vec::new());
    }
    if ptr.is_null() {
        return Err(call.reply.refuse("message is NULL"));
    }
    if len > limit || len > isize::MAX as usize {
        return Err(call.reply.refuse(&format!(
            "reMessageTooLarge: message too large: {len} bytes, limit {limit}"
        )));
    }
    let mut bytes = Vec::new();
    if bytes.try_reserve_exact(len).is_err() {
        return Err(call.reply.refuse(&format!("cannot allocate {len} bytes")));
    }
    // SAFETY: non-NULL, `len` readable bytes (header contract), len ≤ isize::MAX; copied now.
    bytes.extend_from_slice(unsafe { std::slice::from_raw_parts(ptr.cast::<u8>(), len) });
    Ok(bytes)
}

fn channel_arg(channel_id: *const c_char, call: &Call) -> Result<ChannelId, c_int> {
    match cstr(channel_id) {
        Some(c) if !c.is_empty() => Ok(ChannelId::from(c)),
        _ => Err(call.reply.refuse("channel id is NULL or empty")),
    }
}

fn create(config: Value, created: Callback) -> *mut c_void {
    let refuse = |reason: &str| {
        Reply::new(created, WITHOUT_CONTEXT.clone()).refuse(reason);
        std::ptr::null_mut()
    };
    let ((participant, database, engine), held) =
        match engine_config(&config).and_then(|e| Ok((e, held_budget(&config)?))) {
            Ok(x) => x,
            Err(e) => return refuse(&format!("invalid configuration: {e}")),
        };
    let max_message_size = engine.limits.max_message_size;
    let sync_interval = engine.sync_interval.max(Duration::from_millis(1));
    let manager_config = ManagerConfig::default()
        .with_engine(engine)
        // libsds has no join: as with nim-sds, a received message opens its channel. Those
        // channels are bounded apart from the ones the application sends on.
        .with_unjoined_channels(UnjoinedChannels::Accept {
            max: REMOTE_CHANNELS,
        })
        .with_max_held_bytes(held.unwrap_or(ManagerConfig::default().max_held_bytes));
    // Checked before a database is opened or created.
    if let Err(e) = manager_config.engine.validate() {
        return refuse(&format!("reInvalidArgument: {e}"));
    }
    let persistence: Arc<dyn Persistence> = match database {
        None => Arc::new(NoopPersistence),
        Some(db) => {
            let options = sds_sqlite::Options {
                durability: db.durability,
                key: db.key,
                ..sds_sqlite::Options::default()
            };
            match sds_sqlite::SqliteStore::open_with_options(&db.path, options) {
                Ok(store) => Arc::new(store),
                Err(e) => return refuse(&format!("rePersistenceError: {e}")),
            }
        }
    };
    let manager = match ReliabilityManager::new(participant.as_str(), manager_config, persistence) {
        Ok(m) => m,
        Err(e) => return refuse(&error_text(&e)),
    };
    let (tx, rx) = mpsc::unbounded_channel();
    let callbacks = Arc::new(Mutex::new(Callbacks::default()));
    let results = Arc::new(Retained::default());
    let worker = Worker {
        manager,
        callbacks: callbacks.clone(),
        events: Arc::new(Retained::default()),
        sync_interval,
    };
    let created_reply = Reply::new(created, results.clone());
    let handle = std::thread::Builder::new()
        .name("libsds".into())
        .spawn(move || worker.run(rx, created_reply));
    let handle = match handle {
        Ok(h) => h,
        Err(e) => return refuse(&format!("cannot start the worker: {e}")),
    };
    let ctx = Box::into_raw(Box::new(Context {
        requests: tx,
        callbacks,
        worker: Mutex::new(Some(handle)),
        results,
        max_message_size,
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
                    Reply::new(cb, WITHOUT_CONTEXT.clone())
                        .refuse(&format!("invalid configuration: {e}"));
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
    with_callback(ctx, callback, user_data, |call| {
        let Some(id) = cstr(message_id) else {
            return call.reply.refuse("message id is NULL");
        };
        let channel = match channel_arg(channel_id, call) {
            Ok(c) => c,
            Err(ret) => return ret,
        };
        let content = match copy_in(message, message_len, call.max_message_size, call) {
            Ok(c) => c,
            Err(ret) => return ret,
        };
        let request = Request::Wrap(content, MessageId::from(id), channel, call.reply.clone());
        submit(ctx, &call.reply, request)
    })
}

/// Unwraps a received message; the callback gets
/// `{"message":[…],"channelId","missingDeps","messageId","kind"}`.
#[no_mangle]
pub extern "C" fn SdsUnwrapReceivedMessage(
    ctx: *mut c_void,
    message: *mut c_void,
    message_len: usize,
    callback: SdsCallBack,
    user_data: *mut c_void,
) -> c_int {
    with_callback(ctx, callback, user_data, |call| {
        match copy_in(message, message_len, call.max_message_size, call) {
            Ok(bytes) => submit(ctx, &call.reply, Request::Unwrap(bytes, call.reply.clone())),
            Err(ret) => ret,
        }
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
    with_callback(ctx, callback, user_data, |call| {
        if message_ids.is_null() && count > 0 {
            return call.reply.refuse("message id array is NULL");
        }
        if count > MAX_IDS_PER_CALL {
            return call.reply.refuse(&format!(
                "reInvalidArgument: {count} message ids, at most {MAX_IDS_PER_CALL} per call"
            ));
        }
        let channel = match channel_arg(channel_id, call) {
            Ok(c) => c,
            Err(ret) => return ret,
        };
        let mut ids = Vec::new();
        if ids.try_reserve_exact(count).is_err() {
            return call
                .reply
                .refuse(&format!("cannot allocate {count} message ids"));
        }
        for i in 0..count {
            // SAFETY: `count` readable pointers (header contract).
            let p = unsafe { *message_ids.add(i) };
            match cstr(p) {
                Some(id) => ids.push(MessageId::from(id)),
                None => return call.reply.refuse("a message id in the array is NULL"),
            }
        }
        submit(
            ctx,
            &call.reply,
            Request::Mark(ids, channel, call.reply.clone()),
        )
    })
}

/// Deletes every channel's state.
#[no_mangle]
pub extern "C" fn SdsResetReliabilityManager(
    ctx: *mut c_void,
    callback: SdsCallBack,
    user_data: *mut c_void,
) -> c_int {
    with_callback(ctx, callback, user_data, |call| {
        submit(ctx, &call.reply, Request::Reset(call.reply.clone()))
    })
}

/// Starts periodic work (resends, syncs, repairs): a `periodic_sync` event before the result,
/// then one every sync interval.
#[no_mangle]
pub extern "C" fn SdsStartPeriodicTasks(
    ctx: *mut c_void,
    callback: SdsCallBack,
    user_data: *mut c_void,
) -> c_int {
    with_callback(ctx, callback, user_data, |call| {
        submit(ctx, &call.reply, Request::StartTasks(call.reply.clone()))
    })
}

/// Stops the context's periodic work and worker (every request queued before is answered
/// first), frees it and every buffer it handed out, then calls the callback with `RET_OK` (on
/// the caller's thread). Later calls with this context are refused.
#[no_mangle]
pub extern "C" fn SdsCleanupReliabilityManager(
    ctx: *mut c_void,
    callback: SdsCallBack,
    user_data: *mut c_void,
) -> c_int {
    guarded(RET_ERR, || {
        let Some(cb) = Callback::new(callback, user_data) else {
            return RET_MISSING_CALLBACK;
        };
        let reply = Reply::new(cb, WITHOUT_CONTEXT.clone());
        // Unregister first: no other call can reach the context from now on.
        let removed = {
            let mut live = lock(&CONTEXTS);
            !ctx.is_null() && live.as_mut().is_some_and(|s| s.remove(&(ctx as usize)))
        };
        if !removed {
            return reply.refuse("invalid or released context");
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
        reply.ok("");
        RET_OK
    })
}
