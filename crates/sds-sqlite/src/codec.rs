//! Storage encoding of a list of history entries (an incoming message's missing set):
//! for each entry, three length-prefixed fields (id, hint, sender), lengths as u32 little-endian.

use sds_manager::{Bytes, HistoryEntry, MessageId, ParticipantId};

pub(crate) fn encode_entries(entries: &[HistoryEntry]) -> Vec<u8> {
    let mut out = Vec::new();
    for e in entries {
        for field in [
            e.message_id.as_bytes(),
            &e.retrieval_hint[..],
            e.sender_id.as_bytes(),
        ] {
            out.extend_from_slice(&(field.len() as u32).to_le_bytes());
            out.extend_from_slice(field);
        }
    }
    out
}

/// Reads what [`encode_entries`] wrote; `None` for bytes it could not have written.
pub(crate) fn decode_entries(mut bytes: &[u8]) -> Option<Vec<HistoryEntry>> {
    let mut field = || -> Option<Vec<u8>> {
        let (len, rest) = bytes.split_first_chunk::<4>()?;
        let len = u32::from_le_bytes(*len) as usize;
        let value = rest.get(..len)?.to_vec();
        bytes = &rest[len..];
        Some(value)
    };
    let mut entries = Vec::new();
    while let Some(id) = field() {
        let hint = field()?;
        let sender = field()?;
        entries.push(HistoryEntry {
            message_id: MessageId::from(id),
            retrieval_hint: Bytes::from(hint),
            sender_id: ParticipantId::from(sender),
        });
    }
    // Every byte must have been consumed by whole entries.
    bytes.is_empty().then_some(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_garbage() {
        let entries = vec![
            HistoryEntry {
                message_id: "a".into(),
                retrieval_hint: Bytes::from_static(b"h"),
                sender_id: "s".into(),
            },
            HistoryEntry::new("b"),
        ];
        assert_eq!(decode_entries(&encode_entries(&entries)), Some(entries));
        assert_eq!(decode_entries(&[]), Some(vec![]));
        assert_eq!(decode_entries(&[1, 0, 0]), None);
        assert_eq!(decode_entries(&[9, 0, 0, 0, 1]), None);
        assert_eq!(decode_entries(&[0xff; 12]), None);
    }
}
