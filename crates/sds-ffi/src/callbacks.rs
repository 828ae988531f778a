//! The C callbacks a context calls: results, events, transmissions and retrieval hints.

use std::ffi::{c_char, c_int, c_void};
use std::sync::Arc;

use sds_proto::{Bytes, MessageId};

use crate::retained::Retained;
use crate::{SdsCallBack, RET_ERR};

extern "C" {
    fn free(p: *mut c_void);
}

/// A C callback with its user data. The C side promises the pair may be used from the worker
/// thread (that is the contract of libsds.h).
#[derive(Clone, Copy)]
pub struct Callback {
    f: unsafe extern "C" fn(c_int, *const c_char, usize, *mut c_void),
    user_data: *mut c_void,
}

// SAFETY: see the type's documentation; the pointer is only handed back to the C callback.
unsafe impl Send for Callback {}
// SAFETY: as above.
unsafe impl Sync for Callback {}

impl Callback {
    /// `None` for a NULL function.
    pub fn new(f: SdsCallBack, user_data: *mut c_void) -> Option<Callback> {
        f.map(|f| Callback { f, user_data })
    }

    /// Calls the function with `msg`, kept alive by `ring` after the call returns (see
    /// [`crate::retained`]).
    pub fn call(&self, ret: c_int, msg: Vec<u8>, ring: &Retained) {
        let handed = ring.hand_out(msg);
        // SAFETY: a function pointer the caller gave us, with its own user data; the buffer is
        // NUL-terminated and stays valid beyond the call, as the header documents.
        unsafe { (self.f)(ret, handed.ptr, handed.len, self.user_data) }
    }
}

/// A result callback together with the ring that keeps its buffers alive: every request
/// carries one, so the callback is called exactly once, with a buffer that outlives the call.
#[derive(Clone)]
pub struct Reply {
    callback: Callback,
    ring: Arc<Retained>,
}

impl Reply {
    /// `callback`'s buffers are kept by `ring`.
    pub fn new(callback: Callback, ring: Arc<Retained>) -> Reply {
        Reply { callback, ring }
    }

    /// Success with `msg`.
    pub fn ok(&self, msg: impl Into<Vec<u8>>) {
        self.callback.call(crate::RET_OK, msg.into(), &self.ring);
    }

    /// Failure: `RET_ERR` with "libsds error: `reason`"; returns `RET_ERR` for the caller.
    pub fn refuse(&self, reason: &str) -> c_int {
        self.callback.call(
            RET_ERR,
            format!("libsds error: {reason}").into_bytes(),
            &self.ring,
        );
        RET_ERR
    }
}

/// The retrieval-hint provider with its user data.
#[derive(Clone, Copy)]
pub struct HintCallback {
    /// The provider.
    pub f: unsafe extern "C" fn(*const c_char, *mut *mut c_char, *mut usize, *mut c_void),
    /// Its user data.
    pub user_data: *mut c_void,
}

// SAFETY: as for `Callback`.
unsafe impl Send for HintCallback {}
// SAFETY: as for `Callback`.
unsafe impl Sync for HintCallback {}

impl HintCallback {
    /// Asks the provider for the hint of `id`; `None` for none (or an id with a NUL byte, which
    /// C cannot be given).
    pub fn hint(&self, id: &MessageId) -> Option<Bytes> {
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
        if len > isize::MAX as usize {
            // Not a buffer that can exist; it is released, not read.
            // SAFETY: a malloc'ed buffer (header contract).
            unsafe { free(out.cast()) };
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

/// The callbacks a context's worker reads; set from any thread.
#[derive(Default)]
pub struct Callbacks {
    /// Events.
    pub event: Option<Callback>,
    /// Bytes to broadcast.
    pub transmit: Option<Callback>,
    /// Retrieval hints.
    pub hint: Option<HintCallback>,
}
