//! How long a buffer handed to a callback stays valid.
//!
//! Consumers of nim-sds's `libsds` (the Go bindings among them) store the pointer they are given
//! and read it after the callback has returned, on another thread. So every buffer libsds hands
//! out is NUL-terminated, never a dangling pointer (an empty one is a readable `""`), and is kept
//! alive by a ring: it stays valid until [`RETAINED`] later buffers have been handed out through
//! the same ring, or until the context is released, whichever comes first.

use std::collections::VecDeque;
use std::ffi::c_char;
use std::sync::{Arc, LazyLock, Mutex};

use crate::lock;

/// How many of the latest buffers a ring keeps alive.
pub const RETAINED: usize = 64;

/// The buffer of every empty result: a readable, NUL-terminated `""` that is never released.
static EMPTY: [u8; 1] = [0];

/// The last [`RETAINED`] buffers handed out, oldest first.
#[derive(Default)]
pub struct Retained {
    ring: Mutex<VecDeque<Arc<Vec<u8>>>>,
}

/// Refusals that cannot be tied to a context (NULL or released) are kept here.
pub static WITHOUT_CONTEXT: LazyLock<Arc<Retained>> = LazyLock::new(Arc::default);

/// A buffer being handed to a callback: valid at least while this value lives.
pub struct Handed {
    /// Keeps the bytes alive during the callback, whatever other threads push meanwhile.
    _keep: Option<Arc<Vec<u8>>>,
    /// The first byte.
    pub ptr: *const c_char,
    /// The length without the terminating NUL.
    pub len: usize,
}

impl Retained {
    /// Appends a NUL to `bytes`, keeps the result among the ring's latest buffers (releasing the
    /// oldest beyond [`RETAINED`]) and returns it to hand to a callback.
    pub fn hand_out(&self, mut bytes: Vec<u8>) -> Handed {
        if bytes.is_empty() {
            return Handed {
                _keep: None,
                ptr: EMPTY.as_ptr().cast(),
                len: 0,
            };
        }
        let len = bytes.len();
        bytes.push(0);
        let buffer = Arc::new(bytes);
        let ptr = buffer.as_ptr().cast();
        let released = {
            let mut ring = lock(&self.ring);
            ring.push_back(buffer.clone());
            // Released outside the lock.
            (ring.len() > RETAINED).then(|| ring.pop_front())
        };
        drop(released);
        Handed {
            _keep: Some(buffer),
            ptr,
            len,
        }
    }

    /// How many buffers the ring keeps now.
    #[cfg(test)]
    pub fn kept(&self) -> usize {
        lock(&self.ring).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_buffer_stays_valid_for_the_next_retained_buffers_and_is_nul_terminated() {
        let ring = Retained::default();
        let first = ring.hand_out(b"first".to_vec());
        let (ptr, len) = (first.ptr, first.len);
        drop(first);
        for i in 0..RETAINED - 1 {
            drop(ring.hand_out(format!("later {i}").into_bytes()));
        }
        // SAFETY: the ring still holds the first buffer (RETAINED - 1 buffers came after it).
        let read = unsafe { std::slice::from_raw_parts(ptr.cast::<u8>(), len + 1) };
        assert_eq!(read, b"first\0");
        assert_eq!(ring.kept(), RETAINED);
        drop(ring.hand_out(b"one more".to_vec()));
        assert_eq!(ring.kept(), RETAINED, "the ring is bounded");
    }

    #[test]
    fn an_empty_buffer_is_a_readable_empty_string_and_takes_no_slot() {
        let ring = Retained::default();
        let empty = ring.hand_out(Vec::new());
        assert_eq!(empty.len, 0);
        assert!(!empty.ptr.is_null());
        // SAFETY: EMPTY is a static one-byte array.
        assert_eq!(unsafe { *empty.ptr }, 0);
        assert_eq!(ring.kept(), 0);
    }
}
