//! Identifiers: message, channel and participant ids, three distinct types.
//!
//! On the wire an id is a protobuf `string`, but nim-sds never checks that the bytes are UTF-8
//! (its `invalid_utf8_id` vector is accepted), so an id holds raw bytes. Ids built from Rust
//! strings are UTF-8; ids decoded from the wire may not be, and are kept exactly as received so
//! that re-encoding, hashing and bloom-filter positions stay byte-exact.

use std::borrow::Borrow;
use std::fmt;

use bytes::Bytes;

/// Defines one kind of identifier: a distinct type over raw bytes, so that a message id cannot
/// be passed where a channel id is expected.
macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        ///
        /// Raw bytes, usually UTF-8; cheap to clone (reference counted). Build one from a string
        /// (`"m1".into()`), from bytes ([`from_bytes`](Self::from_bytes)) or from another kind
        /// of id explicitly ([`from_bytes`](Self::from_bytes) of its
        /// [`to_bytes`](Self::to_bytes)).
        #[derive(Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(Bytes);

        impl $name {
            /// An id holding `bytes` as they are.
            pub fn from_bytes(bytes: impl Into<Bytes>) -> Self {
                $name(bytes.into())
            }

            /// An id from a static string, without allocating.
            pub const fn from_static(s: &'static str) -> Self {
                $name(Bytes::from_static(s.as_bytes()))
            }

            /// The raw bytes of the id.
            pub fn as_bytes(&self) -> &[u8] {
                &self.0
            }

            /// The id as a string slice, or `None` when its bytes are not UTF-8.
            pub fn as_str(&self) -> Option<&str> {
                std::str::from_utf8(&self.0).ok()
            }

            /// A copy of the id in its own small allocation.
            ///
            /// Ids decoded from a message are slices of the message's buffer and keep all of it
            /// alive; detach an id before keeping it longer than the message.
            pub fn detached(&self) -> Self {
                $name(Bytes::copy_from_slice(&self.0))
            }

            /// The underlying shared buffer.
            pub fn to_bytes(&self) -> Bytes {
                self.0.clone()
            }

            /// Length in bytes.
            pub fn len(&self) -> usize {
                self.0.len()
            }

            /// Whether the id has no bytes.
            pub fn is_empty(&self) -> bool {
                self.0.is_empty()
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                $name(Bytes::copy_from_slice(s.as_bytes()))
            }
        }

        impl From<String> for $name {
            fn from(s: String) -> Self {
                $name(Bytes::from(s.into_bytes()))
            }
        }

        impl From<&String> for $name {
            fn from(s: &String) -> Self {
                $name::from(s.as_str())
            }
        }

        impl From<Bytes> for $name {
            fn from(b: Bytes) -> Self {
                $name(b)
            }
        }

        impl From<Vec<u8>> for $name {
            fn from(b: Vec<u8>) -> Self {
                $name(Bytes::from(b))
            }
        }

        impl From<&[u8]> for $name {
            fn from(b: &[u8]) -> Self {
                $name(Bytes::copy_from_slice(b))
            }
        }

        impl AsRef<[u8]> for $name {
            fn as_ref(&self) -> &[u8] {
                &self.0
            }
        }

        impl Borrow<[u8]> for $name {
            fn borrow(&self) -> &[u8] {
                &self.0
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.0 == other.as_bytes()
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.0 == other.as_bytes()
            }
        }

        /// Shows the id as text; bytes that are not UTF-8 are replaced by U+FFFD.
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&String::from_utf8_lossy(&self.0))
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                match self.as_str() {
                    Some(s) => write!(f, "{s:?}"),
                    None => write!(f, concat!(stringify!($name), "(0x{})"), HexBytes(&self.0)),
                }
            }
        }
    };
}

id_type! {
    /// The id of an SDS message.
    MessageId
}

id_type! {
    /// The id of an SDS channel.
    ChannelId
}

id_type! {
    /// The id of a participant (the `sender_id` on the wire).
    ParticipantId
}

/// Lower-case hex rendering of a byte slice, for debug output.
pub(crate) struct HexBytes<'a>(pub(crate) &'a [u8]);

impl fmt::Display for HexBytes<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf8_and_raw_ids() {
        let id = MessageId::from("msg-1");
        assert_eq!(id.as_str(), Some("msg-1"));
        assert_eq!(id, "msg-1");
        assert_eq!(format!("{id:?}"), "\"msg-1\"");
        let raw = ChannelId::from(vec![0xff, 0xfe]);
        assert_eq!(raw.as_str(), None);
        assert_eq!(format!("{raw:?}"), "ChannelId(0xfffe)");
        assert_eq!(raw.to_string(), "\u{fffd}\u{fffd}");
    }
}
