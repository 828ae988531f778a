//! Protobuf primitives with the exact reading rules of the nim-sds profile.
//!
//! nim-sds reads messages with libp2p's `minprotobuf`, whose behaviour differs from
//! `protoc`-generated decoders in ways the golden vectors pin down, so the reader here is written
//! for those rules rather than taken from a general protobuf crate:
//!
//! * every field lookup scans the whole buffer, so the first structural error anywhere in the
//!   buffer (in buffer order) fails the message, whatever field was being looked up;
//! * wire types 3 and 4 (groups) and 6, 7 are errors (`BadWireType`); field number 0 is legal;
//! * a varint is at most ten bytes; of the tenth byte only its lowest bit is used, an eleventh
//!   byte is an error; non-minimal encodings are accepted;
//! * a truncated fixed32/fixed64 value is reported as `VarintDecode`, a truncated
//!   length-delimited value as `MessageIncomplete`.

use std::fmt;

/// A structural protobuf error, named as in libp2p `minprotobuf` (`ProtoError`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ProtoError {
    /// A varint (tag, value or length) is truncated or longer than ten bytes, or a fixed-width
    /// value is truncated.
    VarintDecode,
    /// A length-delimited value extends past the end of the buffer.
    MessageIncomplete,
    /// A tag carries a wire type other than 0, 1, 2 or 5.
    BadWireType,
}

impl ProtoError {
    /// The `minprotobuf` name of the error.
    pub fn name(self) -> &'static str {
        match self {
            ProtoError::VarintDecode => "VarintDecode",
            ProtoError::MessageIncomplete => "MessageIncomplete",
            ProtoError::BadWireType => "BadWireType",
        }
    }
}

impl fmt::Display for ProtoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Wire type 0.
pub(crate) const WT_VARINT: u8 = 0;
/// Wire type 2.
pub(crate) const WT_LEN: u8 = 2;

/// One field read from a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Value<'a> {
    /// Wire type 0.
    Varint(u64),
    /// Wire type 2.
    Len(&'a [u8]),
    /// Wire types 1 and 5: the value is never used by SDS, only skipped.
    Fixed,
}

/// Reads a varint at the start of `buf`: `(value, bytes used)`.
#[inline]
pub(crate) fn read_varint(buf: &[u8]) -> Result<(u64, usize), ProtoError> {
    let mut value = 0u64;
    for (i, &b) in buf.iter().enumerate() {
        if i == 10 {
            return Err(ProtoError::VarintDecode);
        }
        // At i = 9 the shift is 63: only the lowest payload bit survives, as in minprotobuf.
        value |= u64::from(b & 0x7f) << (7 * i as u32);
        if b & 0x80 == 0 {
            return Ok((value, i + 1));
        }
    }
    Err(ProtoError::VarintDecode)
}

/// Iterates over the fields of a buffer in order. After the first error it yields nothing more.
pub(crate) struct Fields<'a> {
    buf: &'a [u8],
    pos: usize,
    failed: bool,
}

impl<'a> Fields<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Fields {
            buf,
            pos: 0,
            failed: false,
        }
    }

    fn next_field(&mut self) -> Result<(u64, Value<'a>), ProtoError> {
        let rest = &self.buf[self.pos..];
        let (tag, n) = read_varint(rest)?;
        let rest = &rest[n..];
        let field = tag >> 3;
        let (value, used) = match (tag & 7) as u8 {
            WT_VARINT => {
                let (v, m) = read_varint(rest)?;
                (Value::Varint(v), m)
            }
            1 => (Value::Fixed, fixed(rest, 8)?),
            WT_LEN => {
                let (len, m) = read_varint(rest)?;
                let body = &rest[m..];
                if len > body.len() as u64 {
                    return Err(ProtoError::MessageIncomplete);
                }
                let len = len as usize;
                (Value::Len(&body[..len]), m + len)
            }
            5 => (Value::Fixed, fixed(rest, 4)?),
            _ => return Err(ProtoError::BadWireType),
        };
        self.pos += n + used;
        Ok((field, value))
    }
}

/// The first `id_field` and the last `content_field` of a buffer (content empty when absent),
/// without decoding anything else; `None` when the buffer does not parse or has no id.
pub(crate) fn peek_id_content(
    buf: &[u8],
    id_field: u64,
    content_field: u64,
) -> Option<(&[u8], &[u8])> {
    let mut id = None;
    let mut content: &[u8] = &[];
    for field in Fields::new(buf) {
        match field.ok()? {
            (f, Value::Len(b)) if f == id_field && id.is_none() => id = Some(b),
            (f, Value::Len(b)) if f == content_field => content = b,
            _ => {}
        }
    }
    Some((id?, content))
}

fn fixed(rest: &[u8], width: usize) -> Result<usize, ProtoError> {
    if rest.len() >= width {
        Ok(width)
    } else {
        Err(ProtoError::VarintDecode)
    }
}

impl<'a> Iterator for Fields<'a> {
    type Item = Result<(u64, Value<'a>), ProtoError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.pos >= self.buf.len() {
            return None;
        }
        let item = self.next_field();
        self.failed = item.is_err();
        Some(item)
    }
}

/// Number of bytes a varint encoding of `v` takes.
#[inline]
pub(crate) fn varint_len(v: u64) -> usize {
    // ceil(significant bits / 7); zero takes one byte.
    let bits = 64 - (v | 1).leading_zeros() as usize;
    bits.div_ceil(7)
}

#[inline]
pub(crate) fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Writes a varint field (`field`, wire type 0).
#[inline]
pub(crate) fn put_varint_field(out: &mut Vec<u8>, field: u32, v: u64) {
    put_varint(out, u64::from(field) << 3 | u64::from(WT_VARINT));
    put_varint(out, v);
}

/// Writes a length-delimited field.
#[inline]
pub(crate) fn put_bytes_field(out: &mut Vec<u8>, field: u32, bytes: &[u8]) {
    put_len_header(out, field, bytes.len());
    out.extend_from_slice(bytes);
}

/// Writes the tag and length of a length-delimited field whose body follows.
#[inline]
pub(crate) fn put_len_header(out: &mut Vec<u8>, field: u32, len: usize) {
    put_varint(out, u64::from(field) << 3 | u64::from(WT_LEN));
    put_varint(out, len as u64);
}

/// Encoded size of a varint field.
#[inline]
pub(crate) fn varint_field_len(field: u32, v: u64) -> usize {
    varint_len(u64::from(field) << 3) + varint_len(v)
}

/// Encoded size of a length-delimited field with a body of `len` bytes.
#[inline]
pub(crate) fn bytes_field_len(field: u32, len: usize) -> usize {
    varint_len(u64::from(field) << 3) + varint_len(len as u64) + len
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varint_rules() {
        assert_eq!(read_varint(&[0x00]), Ok((0, 1)));
        assert_eq!(read_varint(&[0xac, 0x02]), Ok((300, 2)));
        // Non-minimal encodings are accepted.
        assert_eq!(read_varint(&[0x80, 0x00]), Ok((0, 2)));
        // Ten bytes: only the low bit of the last one counts.
        let max = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f];
        assert_eq!(read_varint(&max), Ok((u64::MAX, 10)));
        // Eleven bytes, truncation and the empty buffer are errors.
        let long = [
            0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01,
        ];
        assert_eq!(read_varint(&long), Err(ProtoError::VarintDecode));
        assert_eq!(read_varint(&[0x80]), Err(ProtoError::VarintDecode));
        assert_eq!(read_varint(&[]), Err(ProtoError::VarintDecode));
    }

    #[test]
    fn varint_len_matches_encoding() {
        for v in [0u64, 1, 127, 128, 16383, 16384, u64::MAX >> 1, u64::MAX] {
            let mut out = Vec::new();
            put_varint(&mut out, v);
            assert_eq!(out.len(), varint_len(v), "{v}");
            assert_eq!(read_varint(&out), Ok((v, out.len())));
        }
    }

    #[test]
    fn truncated_values() {
        // fixed64 and fixed32 truncated: VarintDecode (minprotobuf's skipValue).
        let r: Vec<_> = Fields::new(&[0x09, 0, 0]).collect();
        assert_eq!(r, vec![Err(ProtoError::VarintDecode)]);
        let r: Vec<_> = Fields::new(&[0x0d, 0, 0, 0]).collect();
        assert_eq!(r, vec![Err(ProtoError::VarintDecode)]);
        // Length past the end: MessageIncomplete.
        let r: Vec<_> = Fields::new(&[0x0a, 0x05, 1]).collect();
        assert_eq!(r, vec![Err(ProtoError::MessageIncomplete)]);
        // Groups and wire type 6: BadWireType.
        for tag in [0x0b, 0x0c, 0x0e, 0x0f] {
            let buf = [tag, 0];
            let r: Vec<_> = Fields::new(&buf).collect();
            assert_eq!(r, vec![Err(ProtoError::BadWireType)], "{tag:#x}");
        }
    }
}
