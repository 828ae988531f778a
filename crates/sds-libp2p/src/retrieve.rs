//! `/sds/retrieve/1`: asking connected peers for the bytes of messages by id.
//!
//! A request names one channel and up to [`RetrievalConfig::max_ids_per_request`] message ids;
//! the answer carries the bytes of those the peer holds in its log (at most
//! [`RetrievalConfig::max_response_bytes`] in all), or says that the peer refused because we
//! asked too often. A request may instead (or as well) ask for the peer's `latest` messages of
//! the channel, at most `max_ids_per_request` of them: the query a reliable channel makes of a
//! peer that connects, to learn what was sent while it was away. Each message of an answer is
//! checked against the request before it is processed: of the channel, and one of the ids
//! asked for (or any, up to `latest`). The bytes go through `unwrap_received_message` like any received message,
//! so a peer can make us deliver nothing that a gossip message could not.
//!
//! Wire format (all integers big-endian), read with a hard bound on the bytes taken:
//!
//! ```text
//! request  = u16 channel-len, channel, u16 count, count × (u16 id-len, id) [, u16 latest]
//! response = u8 status (0 ok, 1 rate limited), u32 count, count × (u32 len, bytes)
//! ```

use std::collections::{HashMap, VecDeque};
use std::io;
use std::time::Duration;

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::{PeerId, StreamProtocol};
use sds_manager::{Bytes, ChannelId, MessageId};
use tokio::time::Instant;

/// The protocol id of message retrieval.
pub const PROTOCOL: StreamProtocol = StreamProtocol::new("/sds/retrieve/1");

/// Settings of message retrieval, as a client and as a server.
#[derive(Debug, Clone, PartialEq)]
pub struct RetrievalConfig {
    /// Ask peers for missing messages at all (default true). Serving is always on.
    pub enabled: bool,
    /// Most message ids in one request (default 64); a request with more is refused.
    pub max_ids_per_request: usize,
    /// Most bytes of message bytes in one response (default 4 MiB, above the largest message a
    /// channel accepts at the default limits); a peer stops adding messages before it.
    pub max_response_bytes: usize,
    /// Requests a peer may make of us per second, on average (default 20).
    pub serve_rate: f64,
    /// Requests a peer may make of us in one burst (default 40).
    pub serve_burst: f64,
    /// How long an asked-for message may take before it is asked for again, of another peer
    /// where there is one (default 2 s).
    pub retry_after: Duration,
    /// How often one missing message is asked for before the node gives up on it (default 10,
    /// so 20 s of asking at the default `retry_after`: in `sds sim --retrieval` five asks left
    /// ids that the peers asked did not hold yet to SDS-R; SDS-R and the lost-dependency
    /// timeout still apply after that).
    pub max_attempts: u32,
    /// Most missing messages tracked at once (default 10 000); beyond that new ones are not
    /// asked for until room frees up.
    pub max_pending: usize,
    /// How long a request may wait for its answer (default 10 s).
    pub request_timeout: Duration,
}

impl Default for RetrievalConfig {
    fn default() -> Self {
        RetrievalConfig {
            enabled: true,
            max_ids_per_request: 64,
            max_response_bytes: 4 << 20,
            serve_rate: 20.0,
            serve_burst: 40.0,
            retry_after: Duration::from_secs(2),
            max_attempts: 10,
            max_pending: 10_000,
            request_timeout: Duration::from_secs(10),
        }
    }
}

/// A request for messages of one channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The channel.
    pub channel: ChannelId,
    /// The messages wanted.
    pub ids: Vec<MessageId>,
    /// How many of the peer's most recent messages of the channel are wanted besides (0: none;
    /// at most `max_ids_per_request`). On the wire only when not 0, so that plain requests are
    /// the same bytes as before.
    pub latest: u16,
}

/// The answer to a [`Request`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    /// The bytes of the requested messages the peer holds (possibly none).
    Messages(Vec<Bytes>),
    /// The peer refused: we asked too often.
    RateLimited,
}

/// Encodes and decodes requests and responses, bounded by the limits it was made with.
#[derive(Debug, Clone)]
pub struct Codec {
    max_request_bytes: usize,
    max_response_bytes: usize,
    max_ids: usize,
}

impl Codec {
    /// A codec for `config`, with ids up to `max_id_len` bytes and messages up to
    /// `max_message_size` (the channel's limits).
    pub fn new(config: &RetrievalConfig, max_id_len: usize, max_message_size: usize) -> Self {
        let id = 2 + max_id_len.min(u16::MAX as usize);
        Codec {
            // Channel, count, ids, and the optional `latest`.
            max_request_bytes: 4 + id + id.saturating_mul(config.max_ids_per_request),
            // Room for the largest single message even when the configured total is smaller:
            // a peer always answers with at least one message it holds.
            max_response_bytes: 5 + config
                .max_response_bytes
                .max(max_message_size)
                .saturating_add(4usize.saturating_mul(config.max_ids_per_request)),
            max_ids: config.max_ids_per_request,
        }
    }
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_string())
}

async fn read_bounded<T: AsyncRead + Unpin + Send>(io: &mut T, max: usize) -> io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    io.take(max as u64 + 1).read_to_end(&mut buf).await?;
    if buf.len() > max {
        return Err(invalid("message above the size limit"));
    }
    Ok(buf)
}

/// A cursor over received bytes that fails instead of panicking when they run out.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> io::Result<&'a [u8]> {
        if self.0.len() < n {
            return Err(invalid("truncated"));
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }
    fn u8(&mut self) -> io::Result<u8> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> io::Result<usize> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]) as usize)
    }
    fn u32(&mut self) -> io::Result<usize> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
    }
    fn end(&self) -> io::Result<()> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(invalid("trailing bytes"))
        }
    }
}

fn push_u16_bytes(out: &mut Vec<u8>, bytes: &[u8]) -> io::Result<()> {
    let len = u16::try_from(bytes.len()).map_err(|_| invalid("id too long"))?;
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(bytes);
    Ok(())
}

impl Codec {
    /// The bytes of `request`.
    pub fn encode_request(&self, request: &Request) -> io::Result<Vec<u8>> {
        if request.ids.len() > self.max_ids {
            return Err(invalid("too many ids"));
        }
        let mut out = Vec::new();
        push_u16_bytes(&mut out, request.channel.as_bytes())?;
        out.extend_from_slice(&(request.ids.len() as u16).to_be_bytes());
        for id in &request.ids {
            push_u16_bytes(&mut out, id.as_bytes())?;
        }
        if request.latest as usize > self.max_ids {
            return Err(invalid("too many latest messages"));
        }
        if request.latest > 0 {
            out.extend_from_slice(&request.latest.to_be_bytes());
        }
        Ok(out)
    }

    /// Reads a request (bytes from a peer: never panics).
    pub fn decode_request(&self, bytes: &[u8]) -> io::Result<Request> {
        if bytes.len() > self.max_request_bytes {
            return Err(invalid("request above the size limit"));
        }
        let mut r = Reader(bytes);
        let n = r.u16()?;
        let channel = ChannelId::from_bytes(Bytes::copy_from_slice(r.take(n)?));
        let count = r.u16()?;
        if count > self.max_ids {
            return Err(invalid("too many ids"));
        }
        let mut ids = Vec::with_capacity(count);
        for _ in 0..count {
            let n = r.u16()?;
            ids.push(MessageId::from_bytes(Bytes::copy_from_slice(r.take(n)?)));
        }
        let latest = if r.0.is_empty() {
            0
        } else {
            match r.u16()? {
                // Written only when not 0: one encoding per request.
                0 => return Err(invalid("latest of 0 on the wire")),
                n => n,
            }
        };
        r.end()?;
        if latest > self.max_ids {
            return Err(invalid("too many latest messages"));
        }
        Ok(Request {
            channel,
            ids,
            latest: latest as u16,
        })
    }

    /// The bytes of `response`.
    pub fn encode_response(&self, response: &Response) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        match response {
            Response::RateLimited => {
                out.push(1);
                out.extend_from_slice(&0u32.to_be_bytes());
            }
            Response::Messages(messages) => {
                out.push(0);
                let count = u32::try_from(messages.len()).map_err(|_| invalid("too many"))?;
                out.extend_from_slice(&count.to_be_bytes());
                for m in messages {
                    let len = u32::try_from(m.len()).map_err(|_| invalid("message too long"))?;
                    out.extend_from_slice(&len.to_be_bytes());
                    out.extend_from_slice(m);
                }
            }
        }
        if out.len() > self.max_response_bytes {
            return Err(invalid("response above the size limit"));
        }
        Ok(out)
    }

    /// Reads a response (bytes from a peer: never panics).
    pub fn decode_response(&self, bytes: &[u8]) -> io::Result<Response> {
        if bytes.len() > self.max_response_bytes {
            return Err(invalid("response above the size limit"));
        }
        let mut r = Reader(bytes);
        let status = r.u8()?;
        let count = r.u32()?;
        match status {
            0 => {}
            1 if count == 0 => {
                r.end()?;
                return Ok(Response::RateLimited);
            }
            _ => return Err(invalid("unknown status")),
        }
        if count > self.max_ids {
            return Err(invalid("more messages than ids asked for"));
        }
        let mut messages = Vec::with_capacity(count);
        for _ in 0..count {
            let n = r.u32()?;
            messages.push(Bytes::copy_from_slice(r.take(n)?));
        }
        r.end()?;
        Ok(Response::Messages(messages))
    }
}

impl libp2p::request_response::Codec for Codec {
    type Protocol = StreamProtocol;
    type Request = Request;
    type Response = Response;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Request>
    where
        T: AsyncRead + Unpin + Send,
    {
        let bytes = read_bounded(io, self.max_request_bytes).await?;
        self.decode_request(&bytes)
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Response>
    where
        T: AsyncRead + Unpin + Send,
    {
        let bytes = read_bounded(io, self.max_response_bytes).await?;
        self.decode_response(&bytes)
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        request: Request,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        let bytes = self.encode_request(&request)?;
        io.write_all(&bytes).await?;
        io.close().await
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        response: Response,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        let bytes = self.encode_response(&response)?;
        io.write_all(&bytes).await?;
        io.close().await
    }
}

/// Picks, from `log` (id and bytes of each message a peer holds), the bytes of the requested
/// ones, in the order asked, stopping before `max_bytes` (but always answering with the first
/// one found).
pub(crate) fn select<'a>(
    wanted: &[MessageId],
    log: impl IntoIterator<Item = (&'a MessageId, &'a Bytes)>,
    max_bytes: usize,
) -> Vec<Bytes> {
    let index: HashMap<&MessageId, &Bytes> = log.into_iter().collect();
    let mut out = Vec::new();
    let mut total = 0usize;
    for id in wanted {
        if let Some(bytes) = index.get(id) {
            if !out.is_empty() && total.saturating_add(bytes.len()) > max_bytes {
                break;
            }
            total = total.saturating_add(bytes.len());
            out.push((*bytes).clone());
        }
    }
    out
}

/// Whether a message that came back in the answer to `request` is one it asked for: a
/// message of the requested channel whose id the request named. `decoded` is the channel and
/// id read from the returned bytes (`None` when they do not decode as a message of the
/// channel's profile). A peer may answer with fewer messages than asked, never with others:
/// anything else is a mismatch, not processed and held against the peer.
pub(crate) fn answer_matches(request: &Request, decoded: Option<(&ChannelId, &MessageId)>) -> bool {
    match decoded {
        Some((channel, id)) => {
            // Which messages are a peer's latest is the peer's to say; how many is bounded by
            // the codec (no more messages than `max_ids_per_request`).
            *channel == request.channel && (request.latest > 0 || request.ids.contains(id))
        }
        None => false,
    }
}

/// The bytes of the last `latest` messages of `log` (oldest first, as logs are), oldest
/// first, not counting those in `skip` (already in the answer), within `max_bytes` (but at
/// least the newest one).
pub(crate) fn select_latest<'a>(
    latest: usize,
    log: impl DoubleEndedIterator<Item = (&'a MessageId, &'a Bytes)>,
    skip: &[MessageId],
    max_bytes: usize,
) -> Vec<Bytes> {
    let mut out = Vec::new();
    let mut total = 0usize;
    for (id, bytes) in log.rev() {
        if out.len() >= latest {
            break;
        }
        if skip.contains(id) {
            continue;
        }
        if !out.is_empty() && total.saturating_add(bytes.len()) > max_bytes {
            break;
        }
        total = total.saturating_add(bytes.len());
        out.push(bytes.clone());
    }
    out.reverse();
    out
}

/// Token buckets, one per peer: how often each peer may ask us.
#[derive(Debug)]
pub(crate) struct RateLimiter {
    rate: f64,
    burst: f64,
    buckets: HashMap<PeerId, (f64, Instant)>,
}

impl RateLimiter {
    pub(crate) fn new(rate: f64, burst: f64) -> Self {
        RateLimiter {
            rate: rate.max(0.0),
            burst: burst.max(1.0),
            buckets: HashMap::new(),
        }
    }

    /// Takes one token of `peer`'s bucket if there is one.
    pub(crate) fn allow(&mut self, peer: PeerId, now: Instant) -> bool {
        let (tokens, last) = self.buckets.entry(peer).or_insert((self.burst, now));
        let elapsed = now.saturating_duration_since(*last).as_secs_f64();
        *tokens = (*tokens + elapsed * self.rate).min(self.burst);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Forgets every peer when more than `max` are tracked.
    pub(crate) fn bound(&mut self, max: usize) {
        if self.buckets.len() >= max {
            self.buckets.clear();
        }
    }

    /// Forgets `peer` (disconnected): the map holds only connected peers.
    pub(crate) fn forget(&mut self, peer: &PeerId) {
        self.buckets.remove(peer);
    }
}

/// One missing message being asked for.
#[derive(Debug)]
struct Pending {
    hint: Bytes,
    attempts: u32,
    due: Instant,
    asked: Vec<PeerId>,
}

/// The client side of retrieval, without I/O: which missing messages to ask which peer for,
/// and when to ask again.
#[derive(Debug)]
pub(crate) struct Retriever {
    config: RetrievalConfig,
    pending: HashMap<(ChannelId, MessageId), Pending>,
    order: VecDeque<(ChannelId, MessageId)>,
}

impl Retriever {
    pub(crate) fn new(config: RetrievalConfig) -> Self {
        Retriever {
            config,
            pending: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    /// How many missing messages are being asked for.
    pub(crate) fn pending(&self) -> usize {
        self.pending.len()
    }

    /// A message is missing: ask for it at the next [`due`](Self::due) (at once).
    pub(crate) fn missing(
        &mut self,
        channel: &ChannelId,
        id: &MessageId,
        hint: &Bytes,
        now: Instant,
    ) {
        if !self.config.enabled {
            return;
        }
        let key = (channel.clone(), id.clone());
        if self.pending.contains_key(&key) || self.pending.len() >= self.config.max_pending {
            return;
        }
        self.pending.insert(
            key.clone(),
            Pending {
                hint: hint.clone(),
                attempts: 0,
                due: now,
                asked: Vec::new(),
            },
        );
        self.order.push_back(key);
    }

    /// The message arrived (or was given up): stop asking for it.
    pub(crate) fn done(&mut self, channel: &ChannelId, id: &MessageId) {
        self.pending.remove(&(channel.clone(), id.clone()));
    }

    /// The requests due at `now`, among `peers` (connected peers that take part in retrieval):
    /// each message goes to the peer its hint names when that one is connected and was not
    /// asked yet, otherwise to a connected peer not asked yet for it (or, all asked, the one
    /// asked longest ago). Messages asked for `max_attempts` times are dropped.
    pub(crate) fn due(&mut self, peers: &[PeerId], now: Instant) -> Vec<(PeerId, Request)> {
        let mut batches: HashMap<(PeerId, ChannelId), Vec<MessageId>> = HashMap::new();
        if peers.is_empty() {
            return Vec::new();
        }
        let max_attempts = self.config.max_attempts;
        let retry_after = self.config.retry_after;
        let mut keep = VecDeque::with_capacity(self.order.len());
        while let Some(key) = self.order.pop_front() {
            let Some(p) = self.pending.get_mut(&key) else {
                continue; // done
            };
            if p.due > now {
                keep.push_back(key);
                continue;
            }
            if p.attempts >= max_attempts {
                self.pending.remove(&key);
                continue;
            }
            let hinted = hint_peer(&p.hint).filter(|h| peers.contains(h) && !p.asked.contains(h));
            let peer = hinted
                .or_else(|| {
                    // Spread first asks over the peers by id, so that one peer is not asked for
                    // everything.
                    let start = key.1.as_bytes().iter().map(|b| *b as usize).sum::<usize>();
                    (0..peers.len())
                        .map(|i| peers[(start + i) % peers.len()])
                        .find(|c| !p.asked.contains(c))
                })
                .or_else(|| {
                    // Every connected peer was asked: again the one asked longest ago.
                    peers
                        .iter()
                        .copied()
                        .min_by_key(|c| p.asked.iter().position(|a| a == c))
                });
            let Some(peer) = peer else {
                keep.push_back(key);
                continue;
            };
            p.asked.retain(|a| *a != peer);
            let batch = batches.entry((peer, key.0.clone())).or_default();
            if batch.len() >= self.config.max_ids_per_request {
                // Full: the rest waits for the next round.
                keep.push_back(key);
                continue;
            }
            batch.push(key.1.clone());
            p.asked.push(peer);
            p.attempts += 1;
            p.due = now + retry_after;
            keep.push_back(key);
        }
        self.order = keep;
        batches
            .into_iter()
            .map(|((peer, channel), ids)| {
                (
                    peer,
                    Request {
                        channel,
                        ids,
                        latest: 0,
                    },
                )
            })
            .collect()
    }
}

/// The retrieval hint this node gives the messages it cites: where to ask for them.
pub(crate) fn hint_for(peer: &PeerId) -> Bytes {
    Bytes::from(format!("/p2p/{peer}"))
}

/// The peer a retrieval hint names, if it is one of ours.
pub(crate) fn hint_peer(hint: &[u8]) -> Option<PeerId> {
    let text = std::str::from_utf8(hint).ok()?;
    text.strip_prefix("/p2p/")?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn codec() -> Codec {
        Codec::new(&RetrievalConfig::default(), 1024, 1 << 20)
    }

    #[test]
    fn request_round_trip_and_truncations_fail() {
        let c = codec();
        let req = Request {
            channel: ChannelId::from("lobby"),
            ids: vec![MessageId::from("a"), MessageId::from("bb")],
            latest: 0,
        };
        let bytes = c.encode_request(&req).unwrap();
        assert_eq!(
            bytes,
            [0, 5, b'l', b'o', b'b', b'b', b'y', 0, 2, 0, 1, b'a', 0, 2, b'b', b'b']
        );
        assert_eq!(c.decode_request(&bytes).unwrap(), req);
        for cut in 0..bytes.len() {
            assert!(c.decode_request(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut long = bytes.clone();
        long.push(0);
        assert!(c.decode_request(&long).is_err());
    }

    #[test]
    fn request_with_too_many_ids_is_refused() {
        let c = codec();
        let mut bytes = vec![0, 1, b'c'];
        bytes.extend_from_slice(&65u16.to_be_bytes());
        for _ in 0..65 {
            bytes.extend_from_slice(&[0, 1, b'x']);
        }
        assert!(c.decode_request(&bytes).is_err());
    }

    #[test]
    fn response_round_trip_and_bounds() {
        let c = codec();
        let resp = Response::Messages(vec![Bytes::from_static(b"xyz"), Bytes::new()]);
        let bytes = c.encode_response(&resp).unwrap();
        assert_eq!(
            bytes,
            [0, 0, 0, 0, 2, 0, 0, 0, 3, b'x', b'y', b'z', 0, 0, 0, 0]
        );
        assert_eq!(c.decode_response(&bytes).unwrap(), resp);
        for cut in 0..bytes.len() {
            assert!(c.decode_response(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let limited = c.encode_response(&Response::RateLimited).unwrap();
        assert_eq!(limited, [1, 0, 0, 0, 0]);
        assert_eq!(c.decode_response(&limited).unwrap(), Response::RateLimited);
        // A length claiming more than is there fails without allocating it.
        assert!(c
            .decode_response(&[0, 0, 0, 0, 1, 0xff, 0xff, 0xff, 0xff])
            .is_err());
        // More messages than a request may ask for.
        assert!(c.decode_response(&[0, 0, 0, 1, 0]).is_err());
        assert!(c.decode_response(&[2, 0, 0, 0, 0]).is_err());
    }

    #[test]
    fn select_keeps_order_and_byte_bound() {
        let (a, b, c) = (
            MessageId::from("a"),
            MessageId::from("b"),
            MessageId::from("c"),
        );
        let (ba, bb, bc) = (
            Bytes::from(vec![1; 10]),
            Bytes::from(vec![2; 10]),
            Bytes::from(vec![3; 10]),
        );
        let log = [(&a, &ba), (&b, &bb), (&c, &bc)];
        let got = select(&[c.clone(), MessageId::from("zz"), a.clone()], log, 100);
        assert_eq!(got, vec![bc.clone(), ba.clone()]);
        // The bound stops after the first message that fits; a first message is always sent.
        assert_eq!(select(&[b.clone(), c.clone()], log, 15), vec![bb.clone()]);
        assert_eq!(select(std::slice::from_ref(&b), log, 1), vec![bb]);
    }

    #[test]
    fn answers_must_be_messages_that_were_asked_for() {
        let request = Request {
            channel: ChannelId::from("c"),
            ids: vec![MessageId::from("a"), MessageId::from("b")],
            latest: 0,
        };
        let (c, other) = (ChannelId::from("c"), ChannelId::from("d"));
        let (a, z) = (MessageId::from("a"), MessageId::from("z"));
        assert!(answer_matches(&request, Some((&c, &a))));
        assert!(
            !answer_matches(&request, Some((&c, &z))),
            "an id not asked for"
        );
        assert!(
            !answer_matches(&request, Some((&other, &a))),
            "another channel"
        );
        assert!(!answer_matches(&request, None), "bytes that are no message");
        let latest = Request {
            channel: ChannelId::from("c"),
            ids: Vec::new(),
            latest: 5,
        };
        assert!(
            answer_matches(&latest, Some((&c, &z))),
            "any id of the channel"
        );
        assert!(!answer_matches(&latest, Some((&other, &z))));
    }

    #[test]
    fn latest_requests_round_trip_and_bound() {
        let c = codec();
        let req = Request {
            channel: ChannelId::from("c"),
            ids: vec![MessageId::from("a")],
            latest: 3,
        };
        let bytes = c.encode_request(&req).unwrap();
        assert_eq!(bytes, [0, 1, b'c', 0, 1, 0, 1, b'a', 0, 3]);
        assert_eq!(c.decode_request(&bytes).unwrap(), req);
        // A zero on the wire, and more than a request may ask for, are refused.
        assert!(c.decode_request(&[0, 1, b'c', 0, 0, 0, 0]).is_err());
        assert!(c.decode_request(&[0, 1, b'c', 0, 0, 0, 65]).is_err());
        assert!(c.decode_request(&[0, 1, b'c', 0, 0, 0, 64]).is_ok());
        let too_many = Request { latest: 65, ..req };
        assert!(c.encode_request(&too_many).is_err());
    }

    #[test]
    fn select_latest_takes_the_newest_oldest_first() {
        let ids: Vec<MessageId> = ["a", "b", "c", "d"].map(MessageId::from).to_vec();
        let bytes: Vec<Bytes> = (0..4u8).map(|i| Bytes::from(vec![i; 10])).collect();
        let log = || ids.iter().zip(bytes.iter());
        assert_eq!(
            select_latest(2, log(), &[], 100),
            vec![bytes[2].clone(), bytes[3].clone()]
        );
        assert_eq!(
            select_latest(2, log(), &ids[3..], 100),
            vec![bytes[1].clone(), bytes[2].clone()],
            "those already answered by id are not sent twice"
        );
        assert_eq!(select_latest(3, log(), &[], 15), vec![bytes[3].clone()]);
        assert!(select_latest(0, log(), &[], 100).is_empty());
    }

    #[test]
    fn rate_limiter_refills_over_time() {
        let mut rl = RateLimiter::new(2.0, 3.0);
        let peer = PeerId::random();
        let t0 = Instant::now();
        assert!((0..3).all(|_| rl.allow(peer, t0)));
        assert!(!rl.allow(peer, t0));
        assert!(rl.allow(peer, t0 + Duration::from_millis(500)));
        assert!(!rl.allow(peer, t0 + Duration::from_millis(500)));
        // Another peer has a bucket of its own.
        assert!(rl.allow(PeerId::random(), t0));
    }

    #[test]
    fn retriever_prefers_the_hinted_peer_then_others_then_gives_up() {
        let config = RetrievalConfig {
            max_attempts: 3,
            ..RetrievalConfig::default()
        };
        let mut r = Retriever::new(config.clone());
        let (p1, p2) = (PeerId::random(), PeerId::random());
        let ch = ChannelId::from("c");
        let id = MessageId::from("m");
        let t0 = Instant::now();
        r.missing(&ch, &id, &hint_for(&p2), t0);
        r.missing(&ch, &id, &hint_for(&p2), t0); // once only
        let peers = [p1, p2];
        let first = r.due(&peers, t0);
        assert_eq!(first.len(), 1);
        assert_eq!(first[0].0, p2);
        assert_eq!(first[0].1.ids, vec![id.clone()]);
        assert!(
            r.due(&peers, t0).is_empty(),
            "not due again before retry_after"
        );
        let t1 = t0 + config.retry_after;
        let second = r.due(&peers, t1);
        assert_eq!(second[0].0, p1, "then a peer not asked yet");
        let t2 = t1 + config.retry_after;
        assert_eq!(r.due(&peers, t2).len(), 1, "third attempt");
        assert!(r.due(&peers, t2 + config.retry_after).is_empty());
        assert_eq!(r.pending(), 0, "given up after max_attempts");
    }

    #[test]
    fn retriever_stops_when_done_and_bounds_pending() {
        let config = RetrievalConfig {
            max_pending: 2,
            ..RetrievalConfig::default()
        };
        let mut r = Retriever::new(config);
        let ch = ChannelId::from("c");
        let t0 = Instant::now();
        for id in ["a", "b", "c"] {
            r.missing(&ch, &MessageId::from(id), &Bytes::new(), t0);
        }
        assert_eq!(r.pending(), 2);
        r.done(&ch, &MessageId::from("a"));
        let reqs = r.due(&[PeerId::random()], t0);
        assert_eq!(reqs.len(), 1);
        assert_eq!(reqs[0].1.ids, vec![MessageId::from("b")]);
    }

    #[test]
    fn hints_name_peers() {
        let p = PeerId::random();
        assert_eq!(hint_peer(&hint_for(&p)), Some(p));
        assert_eq!(hint_peer(b"/p2p/not-a-peer"), None);
        assert_eq!(hint_peer(b"waku-hash"), None);
        assert_eq!(hint_peer(&[0xff, 0xfe]), None);
    }
}
