//! Segmentation: a payload above the segment size is sent as several SDS messages, each
//! tracked by SDS on its own, and put back together before delivery.
//!
//! Every message a [`ReliableChannel`](crate::ReliableChannel) sends carries a small frame
//! inside its SDS content (integers big-endian):
//!
//! ```text
//! frame   = u8 version (1), u8 kind, body
//! kind 0  = whole: body is the payload
//! kind 1  = segment: u8 id-len, id, u32 index, u32 count, u64 total-len, 32 bytes sha-256 of
//!           the whole payload, then this segment's bytes
//! ```
//!
//! A segment's SDS message id is `id#index/count`, and a received segment
//! whose SDS id is not the one its frame names is refused: SDS keeps one message per id, so
//! no member can slip other bytes into a segment slot that was already filled. Reassembly
//! checks the length and digest of the whole before delivering it.
//!
//! Partial messages are bounded ([`ReassemblyLimits`]): how many at once, how many bytes in
//! all, and how long one may wait for its missing segments. Beyond those the oldest gives
//! way. Segments are ordinary SDS messages, stored in the channel's log as they are
//! delivered: after a restart the partial state is rebuilt from the log.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::time::Duration;

use sds_manager::{Bytes, MessageId};
use sha2::{Digest, Sha256};
use tokio::time::Instant;

/// The frame version written and read.
pub const VERSION: u8 = 1;
const KIND_WHOLE: u8 = 0;
const KIND_SEGMENT: u8 = 1;
/// Bytes a segment frame adds to its data, beyond the id.
pub(crate) const SEGMENT_OVERHEAD: usize = 2 + 1 + 4 + 4 + 8 + 32;
/// Longest logical message id in a segment frame.
pub(crate) const MAX_ID_LEN: usize = u8::MAX as usize;

/// One segment of a message, as read from a frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Segment {
    /// The id of the whole message.
    pub(crate) id: MessageId,
    pub(crate) index: u32,
    pub(crate) count: u32,
    pub(crate) total_len: u64,
    pub(crate) digest: [u8; 32],
    pub(crate) data: Bytes,
}

/// What a frame holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Frame {
    Whole(Bytes),
    Segment(Segment),
}

/// Why a frame could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// A version this build does not know.
    #[error("unknown frame version {0}")]
    Version(u8),
    /// An unknown kind, a truncated header, or fields that contradict each other.
    #[error("malformed frame: {0}")]
    Malformed(&'static str),
}

/// The frame of a payload sent whole.
pub(crate) fn whole(payload: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(2 + payload.len());
    out.extend_from_slice(&[VERSION, KIND_WHOLE]);
    out.extend_from_slice(payload);
    Bytes::from(out)
}

/// The SDS message id of segment `index` of `count` of message `id`.
pub(crate) fn segment_id(id: &MessageId, index: u32, count: u32) -> MessageId {
    let mut out = id.as_bytes().to_vec();
    out.extend_from_slice(format!("#{index}/{count}").as_bytes());
    MessageId::from_bytes(Bytes::from(out))
}

/// The message, segment index and segment count an SDS id names: `(id, 0, 1)` for an id that
/// is not a segment's.
pub(crate) fn parse_segment_id(sds_id: &MessageId) -> (MessageId, u32, u32) {
    let bytes = sds_id.as_bytes();
    let parsed = bytes.iter().rposition(|b| *b == b'#').and_then(|hash| {
        let tail = std::str::from_utf8(&bytes[hash + 1..]).ok()?;
        let (index, count) = tail.split_once('/')?;
        let (index, count): (u32, u32) = (index.parse().ok()?, count.parse().ok()?);
        (index < count && segment_id_matches(&bytes[..hash], index, count, bytes)).then(|| {
            (
                MessageId::from_bytes(Bytes::copy_from_slice(&bytes[..hash])),
                index,
                count,
            )
        })
    });
    parsed.unwrap_or_else(|| (sds_id.clone(), 0, 1))
}

/// Whether `full` is exactly the segment id of (`id`, `index`, `count`) (no leading zeros or
/// signs that parse alike).
fn segment_id_matches(id: &[u8], index: u32, count: u32, full: &[u8]) -> bool {
    segment_id(
        &MessageId::from_bytes(Bytes::copy_from_slice(id)),
        index,
        count,
    )
    .as_bytes()
        == full
}

/// Splits `payload` into frames of segments of at most `segment_size` bytes of data, for
/// message `id` (at most [`MAX_ID_LEN`] bytes; `segment_size` at least 1).
pub(crate) fn split(id: &MessageId, payload: &[u8], segment_size: usize) -> Vec<Bytes> {
    let digest: [u8; 32] = Sha256::digest(payload).into();
    let chunks: Vec<&[u8]> = payload.chunks(segment_size.max(1)).collect();
    let count = chunks.len() as u32;
    let id_bytes = &id.as_bytes()[..id.as_bytes().len().min(MAX_ID_LEN)];
    chunks
        .iter()
        .enumerate()
        .map(|(index, data)| {
            let mut out = Vec::with_capacity(SEGMENT_OVERHEAD + id_bytes.len() + data.len());
            out.extend_from_slice(&[VERSION, KIND_SEGMENT, id_bytes.len() as u8]);
            out.extend_from_slice(id_bytes);
            out.extend_from_slice(&(index as u32).to_be_bytes());
            out.extend_from_slice(&count.to_be_bytes());
            out.extend_from_slice(&(payload.len() as u64).to_be_bytes());
            out.extend_from_slice(&digest);
            out.extend_from_slice(data);
            Bytes::from(out)
        })
        .collect()
}

/// Reads a frame (bytes from a remote member: never panics).
pub(crate) fn decode(content: &Bytes) -> Result<Frame, FrameError> {
    let malformed = FrameError::Malformed;
    let (&version, rest) = content.split_first().ok_or(malformed("empty"))?;
    if version != VERSION {
        return Err(FrameError::Version(version));
    }
    let (&kind, _) = rest.split_first().ok_or(malformed("no kind"))?;
    match kind {
        KIND_WHOLE => Ok(Frame::Whole(content.slice(2..))),
        KIND_SEGMENT => {
            let mut at = 2usize;
            let mut take = |n: usize| -> Result<&[u8], FrameError> {
                let end = at.checked_add(n).filter(|e| *e <= content.len());
                let end = end.ok_or(malformed("truncated segment header"))?;
                let out = &content[at..end];
                at = end;
                Ok(out)
            };
            let id_len = take(1)?[0] as usize;
            let id = MessageId::from_bytes(Bytes::copy_from_slice(take(id_len)?));
            let u32_at = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
            let index = u32_at(take(4)?);
            let count = u32_at(take(4)?);
            let len = take(8)?;
            let total_len = u64::from_be_bytes([
                len[0], len[1], len[2], len[3], len[4], len[5], len[6], len[7],
            ]);
            let mut digest = [0u8; 32];
            digest.copy_from_slice(take(32)?);
            if id_len == 0 {
                return Err(malformed("empty message id"));
            }
            if count < 2 || index >= count {
                return Err(malformed("segment index or count out of range"));
            }
            if u64::from(count) > total_len {
                return Err(malformed("more segments than bytes"));
            }
            let data = content.slice(at..);
            if data.is_empty() {
                return Err(malformed("empty segment"));
            }
            Ok(Frame::Segment(Segment {
                id,
                index,
                count,
                total_len,
                digest,
                data,
            }))
        }
        _ => Err(malformed("unknown kind")),
    }
}

/// Bounds on messages being put back together.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReassemblyLimits {
    /// Most partial messages at once (default 64); beyond it the oldest is dropped.
    pub max_messages: usize,
    /// Most bytes of segments held in all (default 64 MiB); beyond it the oldest partial
    /// messages are dropped. A message whose announced length is above it is refused.
    pub max_bytes: usize,
    /// How long a partial message waits for its missing segments before it is dropped
    /// (default 10 minutes).
    pub timeout: Duration,
}

impl Default for ReassemblyLimits {
    fn default() -> Self {
        ReassemblyLimits {
            max_messages: 64,
            max_bytes: 64 << 20,
            timeout: Duration::from_secs(600),
        }
    }
}

impl ReassemblyLimits {
    /// Sets [`max_messages`](Self::max_messages).
    #[must_use]
    pub fn with_max_messages(mut self, max_messages: usize) -> Self {
        self.max_messages = max_messages;
        self
    }

    /// Sets [`max_bytes`](Self::max_bytes).
    #[must_use]
    pub fn with_max_bytes(mut self, max_bytes: usize) -> Self {
        self.max_bytes = max_bytes;
        self
    }

    /// Sets [`timeout`](Self::timeout).
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }
}

/// Why a partial message was given up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReassemblyDropReason {
    /// Its missing segments did not come within [`ReassemblyLimits::timeout`].
    Expired,
    /// Newer partial messages needed the room ([`ReassemblyLimits`]).
    Evicted,
    /// Its segments disagree with each other, or the whole does not match its length or
    /// digest.
    Corrupt,
    /// It announced more bytes than [`ReassemblyLimits::max_bytes`].
    TooLarge,
    /// One of its segments is irretrievably lost.
    Lost,
}

#[derive(Debug)]
struct Partial {
    count: u32,
    total_len: u64,
    digest: [u8; 32],
    parts: BTreeMap<u32, Bytes>,
    held: usize,
    started: Instant,
}

/// What came of adding a segment.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Added {
    /// The message it completed, whole.
    pub(crate) complete: Option<(MessageId, Bytes)>,
    /// Partial messages given up on the way.
    pub(crate) dropped: Vec<(MessageId, ReassemblyDropReason)>,
}

/// Most ids of completed messages remembered, so that a late copy of one of their segments
/// starts nothing new.
const MAX_DONE: usize = 4096;

/// Partial messages being put back together, within [`ReassemblyLimits`].
#[derive(Debug)]
pub(crate) struct Reassembly {
    limits: ReassemblyLimits,
    partial: HashMap<MessageId, Partial>,
    /// Partial messages, oldest first (may hold ids no longer partial).
    order: VecDeque<MessageId>,
    held: usize,
    done: HashSet<MessageId>,
    done_order: VecDeque<MessageId>,
}

impl Reassembly {
    pub(crate) fn new(limits: ReassemblyLimits) -> Self {
        Reassembly {
            limits,
            partial: HashMap::new(),
            order: VecDeque::new(),
            held: 0,
            done: HashSet::new(),
            done_order: VecDeque::new(),
        }
    }

    /// Bytes of segments held.
    #[cfg(test)]
    pub(crate) fn held_bytes(&self) -> usize {
        self.held
    }

    /// Partial messages held.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.partial.len()
    }

    /// The ids of the partial messages, oldest first.
    #[cfg(test)]
    pub(crate) fn partial_ids(&self) -> Vec<MessageId> {
        self.order
            .iter()
            .filter(|id| self.partial.contains_key(*id))
            .cloned()
            .collect()
    }

    fn remember_done(&mut self, id: MessageId) {
        if self.done.insert(id.clone()) {
            self.done_order.push_back(id);
            while self.done_order.len() > MAX_DONE {
                if let Some(old) = self.done_order.pop_front() {
                    self.done.remove(&old);
                }
            }
        }
    }

    fn remove(&mut self, id: &MessageId) -> Option<Partial> {
        let p = self.partial.remove(id)?;
        self.held -= p.held;
        Some(p)
    }

    /// Gives up the partial message `id`, if there is one.
    pub(crate) fn drop_partial(&mut self, id: &MessageId) -> bool {
        self.remove(id).is_some()
    }

    /// Adds `segment`, received at `now`.
    pub(crate) fn add(&mut self, segment: Segment, now: Instant) -> Added {
        let mut added = Added::default();
        let id = segment.id.clone();
        if self.done.contains(&id) {
            return added;
        }
        if segment.total_len > self.limits.max_bytes as u64 {
            self.remove(&id);
            self.remember_done(id.clone());
            added.dropped.push((id, ReassemblyDropReason::TooLarge));
            return added;
        }
        if let Some(p) = self.partial.get(&id) {
            let agrees = p.count == segment.count
                && p.total_len == segment.total_len
                && p.digest == segment.digest;
            if !agrees {
                self.remove(&id);
                self.remember_done(id.clone());
                added.dropped.push((id, ReassemblyDropReason::Corrupt));
                return added;
            }
            if p.parts.contains_key(&segment.index) {
                return added;
            }
        } else {
            self.partial.insert(
                id.clone(),
                Partial {
                    count: segment.count,
                    total_len: segment.total_len,
                    digest: segment.digest,
                    parts: BTreeMap::new(),
                    held: 0,
                    started: now,
                },
            );
            self.order.push_back(id.clone());
        }
        let size = segment.data.len();
        if let Some(p) = self.partial.get_mut(&id) {
            p.parts.insert(segment.index, segment.data);
            p.held += size;
        }
        self.held += size;
        let complete = self
            .partial
            .get(&id)
            .is_some_and(|p| p.parts.len() as u64 == u64::from(p.count));
        if complete {
            if let Some(p) = self.remove(&id) {
                self.remember_done(id.clone());
                let mut whole = Vec::with_capacity(p.held);
                for part in p.parts.values() {
                    whole.extend_from_slice(part);
                }
                let digest: [u8; 32] = Sha256::digest(&whole).into();
                if whole.len() as u64 == p.total_len && digest == p.digest {
                    added.complete = Some((id, Bytes::from(whole)));
                } else {
                    added.dropped.push((id, ReassemblyDropReason::Corrupt));
                }
            }
        }
        added.dropped.extend(self.bound(now));
        added
    }

    /// Drops partial messages older than the timeout, then the oldest while there are too
    /// many or they hold too many bytes.
    pub(crate) fn bound(&mut self, now: Instant) -> Vec<(MessageId, ReassemblyDropReason)> {
        let mut dropped = Vec::new();
        while let Some(id) = self.order.front().cloned() {
            let Some(p) = self.partial.get(&id) else {
                self.order.pop_front();
                continue;
            };
            let reason = if now.saturating_duration_since(p.started) >= self.limits.timeout {
                ReassemblyDropReason::Expired
            } else if self.partial.len() > self.limits.max_messages
                || self.held > self.limits.max_bytes
            {
                ReassemblyDropReason::Evicted
            } else {
                break;
            };
            self.order.pop_front();
            self.remove(&id);
            self.remember_done(id.clone());
            dropped.push((id, reason));
        }
        dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segments(id: &str, payload: &[u8], size: usize) -> Vec<Segment> {
        split(&MessageId::from(id), payload, size)
            .iter()
            .map(|f| match decode(f).unwrap() {
                Frame::Segment(s) => s,
                Frame::Whole(_) => panic!("not a segment"),
            })
            .collect()
    }

    #[test]
    fn frames_round_trip_and_bad_ones_fail() {
        assert_eq!(
            decode(&whole(b"hi")).unwrap(),
            Frame::Whole(Bytes::from_static(b"hi"))
        );
        let payload: Vec<u8> = (0..25u8).collect();
        let frames = split(&MessageId::from("m"), &payload, 10);
        assert_eq!(frames.len(), 3);
        // The header, byte by byte: version, kind, id, index, count, length, digest.
        let f = &frames[1];
        assert_eq!(&f[..4], &[1, 1, 1, b'm']);
        assert_eq!(&f[4..8], &1u32.to_be_bytes());
        assert_eq!(&f[8..12], &3u32.to_be_bytes());
        assert_eq!(&f[12..20], &25u64.to_be_bytes());
        assert_eq!(&f[20..52], Sha256::digest(&payload).as_slice());
        assert_eq!(&f[52..], &payload[10..20]);
        // Every truncation of the header fails; none panics.
        for cut in 0..52 {
            assert!(decode(&f.slice(..cut)).is_err(), "cut at {cut}");
        }
        assert_eq!(
            decode(&Bytes::from_static(&[2, 0])),
            Err(FrameError::Version(2))
        );
        assert!(decode(&Bytes::from_static(&[1, 9])).is_err());
        // Index beyond the count, a count of one, more segments than bytes.
        let mut bad = f.to_vec();
        bad[4..8].copy_from_slice(&3u32.to_be_bytes());
        assert!(decode(&Bytes::from(bad)).is_err());
        let mut bad = f.to_vec();
        bad[8..12].copy_from_slice(&1u32.to_be_bytes());
        bad[4..8].copy_from_slice(&0u32.to_be_bytes());
        assert!(decode(&Bytes::from(bad)).is_err());
        let mut bad = f.to_vec();
        bad[12..20].copy_from_slice(&2u64.to_be_bytes());
        assert!(decode(&Bytes::from(bad)).is_err());
    }

    #[test]
    fn segment_ids_name_their_place() {
        let id = MessageId::from("abc");
        let s = segment_id(&id, 2, 5);
        assert_eq!(s.as_bytes(), b"abc#2/5");
        assert_eq!(parse_segment_id(&s), (id.clone(), 2, 5));
        assert_eq!(parse_segment_id(&id), (id.clone(), 0, 1));
        for odd in ["abc#5/5", "abc#02/5", "abc#+2/5", "abc#2/", "abc#x/5"] {
            let odd = MessageId::from(odd);
            assert_eq!(parse_segment_id(&odd), (odd.clone(), 0, 1));
        }
    }

    #[test]
    fn segments_in_any_order_make_the_whole_once() {
        let payload: Vec<u8> = (0..1000u32).map(|i| (i * 7) as u8).collect();
        let mut segs = segments("m", &payload, 64);
        segs.reverse();
        let mut r = Reassembly::new(ReassemblyLimits::default());
        let t = Instant::now();
        let last = segs.pop().unwrap();
        for s in segs.iter().cloned().chain(segs.iter().take(2).cloned()) {
            assert_eq!(r.add(s, t), Added::default());
        }
        assert_eq!(r.len(), 1);
        let added = r.add(last.clone(), t);
        assert_eq!(
            added.complete,
            Some((MessageId::from("m"), Bytes::from(payload)))
        );
        assert_eq!((r.len(), r.held_bytes()), (0, 0));
        // A late copy starts nothing.
        assert_eq!(r.add(last, t), Added::default());
        assert_eq!(r.len(), 0);
    }

    #[test]
    fn disagreeing_or_corrupt_segments_drop_the_message() {
        let t = Instant::now();
        let mut r = Reassembly::new(ReassemblyLimits::default());
        let a = segments("m", &[1; 30], 10);
        let b = segments("m", &[2; 30], 10);
        r.add(a[0].clone(), t);
        let added = r.add(b[1].clone(), t);
        assert_eq!(
            added.dropped,
            vec![(MessageId::from("m"), ReassemblyDropReason::Corrupt)]
        );
        assert_eq!((r.len(), r.held_bytes()), (0, 0));
        // Bytes that do not match the digest, with a consistent header.
        let mut r = Reassembly::new(ReassemblyLimits::default());
        let mut segs = segments("n", &[3; 20], 10);
        segs[1].data = Bytes::from(vec![4; 10]);
        r.add(segs[0].clone(), t);
        let added = r.add(segs[1].clone(), t);
        assert_eq!(added.complete, None);
        assert_eq!(
            added.dropped,
            vec![(MessageId::from("n"), ReassemblyDropReason::Corrupt)]
        );
    }

    #[test]
    fn partial_state_is_bounded_by_count_bytes_and_time() {
        let t = Instant::now();
        let limits = ReassemblyLimits::default()
            .with_max_messages(2)
            .with_max_bytes(100)
            .with_timeout(Duration::from_secs(60));
        let mut r = Reassembly::new(limits);
        for id in ["a", "b"] {
            r.add(segments(id, &[0; 40], 10)[0].clone(), t);
        }
        let added = r.add(segments("c", &[0; 40], 10)[0].clone(), t);
        assert_eq!(
            added.dropped,
            vec![(MessageId::from("a"), ReassemblyDropReason::Evicted)]
        );
        assert_eq!(
            r.partial_ids(),
            vec![MessageId::from("b"), MessageId::from("c")]
        );
        // Bytes: b and c hold 10 each; six more segments of c reach 80, then a third
        // message's two make 100, and one more pushes the oldest (b) out.
        let c = segments("c", &[0; 40], 10);
        let d = segments("d", &[0; 90], 10);
        r.add(c[1].clone(), t);
        r.add(c[2].clone(), t);
        assert_eq!(r.held_bytes(), 40);
        let limits = ReassemblyLimits::default().with_max_bytes(100);
        let mut r2 = Reassembly::new(limits);
        for s in &d[..8] {
            assert!(r2.add(s.clone(), t).dropped.is_empty());
        }
        for s in &c[..2] {
            assert!(r2.add(s.clone(), t).dropped.is_empty());
        }
        let added = r2.add(c[2].clone(), t);
        assert_eq!(
            added.dropped,
            vec![(MessageId::from("d"), ReassemblyDropReason::Evicted)]
        );
        assert_eq!(r2.held_bytes(), 30);
        // Too large to ever fit.
        let added = r.add(segments("big", &[0; 200], 100)[0].clone(), t);
        assert_eq!(
            added.dropped,
            vec![(MessageId::from("big"), ReassemblyDropReason::TooLarge)]
        );
        // Time.
        let later = t + Duration::from_secs(60);
        let dropped = r.bound(later);
        assert_eq!(dropped.len(), 2);
        assert!(dropped
            .iter()
            .all(|(_, why)| *why == ReassemblyDropReason::Expired));
        assert_eq!((r.len(), r.held_bytes()), (0, 0));
    }
}
