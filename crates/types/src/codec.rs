//! The one canonical binary encoding of everything that is hashed, signed or sent.
//!
//! # Design
//! - Integers are fixed-width big-endian: one value, one encoding (no varints to normalise).
//! - Variable-length fields carry a `u32` big-endian length and declare their own bound; a length
//!   over the bound is rejected before anything is allocated.
//! - Enums and options are a one-byte tag; an unknown tag is an error, never a default.
//! - [`Decode::from_bytes`] rejects input longer than the type's bound and trailing bytes.
//!
//! # Invariants
//! Every value that decodes re-encodes to exactly the bytes it came from. The fuzz targets check
//! this for every decoder; it is what makes hashes and signatures over encodings unambiguous.

use thiserror::Error;

/// Why bytes were refused as the encoding of a value.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DecodeError {
    /// The input is larger than any valid encoding of the type.
    #[error("{what}: input of {len} bytes exceeds the bound of {max} bytes")]
    Oversized {
        /// The type being decoded.
        what: &'static str,
        /// Input length.
        len: usize,
        /// The type's bound.
        max: usize,
    },
    /// The input ended in the middle of a field.
    #[error("unexpected end of input: {needed} bytes needed, {remaining} left")]
    UnexpectedEnd {
        /// Bytes the field needs.
        needed: usize,
        /// Bytes that were left.
        remaining: usize,
    },
    /// Bytes are left after a complete value.
    #[error("{count} trailing bytes after a complete value")]
    TrailingBytes {
        /// How many bytes are left over.
        count: usize,
    },
    /// A length prefix or element count over the field's bound.
    #[error("{what}: length {len} exceeds the bound of {max}")]
    TooLong {
        /// The field.
        what: &'static str,
        /// Declared length.
        len: usize,
        /// The bound.
        max: usize,
    },
    /// A field that must not be empty is empty.
    #[error("{what}: must not be empty")]
    Empty {
        /// The field.
        what: &'static str,
    },
    /// An enum or option tag that names no variant.
    #[error("{what}: unknown tag {tag}")]
    InvalidTag {
        /// The enum.
        what: &'static str,
        /// The tag found.
        tag: u8,
    },
    /// A text field that is not in its allowed alphabet.
    #[error("{what}: invalid text ({reason})")]
    InvalidText {
        /// The field.
        what: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// Public key bytes that are not the canonical encoding of a usable curve point.
    #[error("invalid public key: {reason}")]
    InvalidPublicKey {
        /// What is wrong with it.
        reason: &'static str,
    },
    /// Signature bytes with a non-canonical scalar.
    #[error("invalid signature encoding: scalar is not canonical")]
    InvalidSignature,
    /// A list that must be strictly ascending (sorted, no duplicates) is not.
    #[error("{what}: entries must be strictly ascending (sorted, no duplicates)")]
    NotCanonicalOrder {
        /// The list.
        what: &'static str,
    },
    /// A value that is well-formed but breaks a rule of its type.
    #[error("{what}: {reason}")]
    Invalid {
        /// The type.
        what: &'static str,
        /// The rule.
        reason: &'static str,
    },
}

impl DecodeError {
    /// A stable, bounded label for metrics and logs.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Oversized { .. } => "oversized",
            Self::UnexpectedEnd { .. } => "truncated",
            Self::TrailingBytes { .. } => "trailing_bytes",
            Self::TooLong { .. } => "too_long",
            Self::Empty { .. } => "empty",
            Self::InvalidTag { .. } => "invalid_tag",
            Self::InvalidText { .. } => "invalid_text",
            Self::InvalidPublicKey { .. } => "invalid_public_key",
            Self::InvalidSignature => "invalid_signature_encoding",
            Self::NotCanonicalOrder { .. } => "not_canonical_order",
            Self::Invalid { .. } => "invalid_value",
        }
    }
}

/// A value with a canonical encoding.
pub trait Encode {
    /// Appends the encoding of `self` to `out`.
    fn encode_to(&self, out: &mut Vec<u8>);

    /// The encoding of `self`.
    fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode_to(&mut out);
        out
    }
}

/// A value that can be read back from its canonical encoding.
pub trait Decode: Sized {
    /// Upper bound of the encoding's length in bytes; longer input is refused unread.
    const MAX_BYTES: usize;
    /// Name used in errors.
    const NAME: &'static str;

    /// Reads one value from the reader (the reader may hold more after it).
    fn decode_from(r: &mut Reader<'_>) -> Result<Self, DecodeError>;

    /// Decodes a whole buffer: exactly one value, within the bound, no trailing bytes.
    fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        if bytes.len() > Self::MAX_BYTES {
            return Err(DecodeError::Oversized {
                what: Self::NAME,
                len: bytes.len(),
                max: Self::MAX_BYTES,
            });
        }
        let mut r = Reader::new(bytes);
        let value = Self::decode_from(&mut r)?;
        r.finish()?;
        Ok(value)
    }
}

/// A cursor over bytes being decoded; every read is bounds-checked.
#[derive(Debug)]
pub struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    /// A reader over `bytes`.
    pub fn new(bytes: &'a [u8]) -> Self {
        Self { bytes }
    }

    /// Bytes not read yet.
    pub fn remaining(&self) -> usize {
        self.bytes.len()
    }

    /// Fails if anything is left unread.
    pub fn finish(&self) -> Result<(), DecodeError> {
        match self.bytes.len() {
            0 => Ok(()),
            count => Err(DecodeError::TrailingBytes { count }),
        }
    }

    /// The next `n` bytes.
    pub fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if n > self.bytes.len() {
            return Err(DecodeError::UnexpectedEnd {
                needed: n,
                remaining: self.bytes.len(),
            });
        }
        let (head, tail) = self.bytes.split_at(n);
        self.bytes = tail;
        Ok(head)
    }

    /// The next `N` bytes as an array.
    pub fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    /// One byte.
    pub fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.array::<1>()?[0])
    }

    /// A big-endian `u32`.
    pub fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    /// A big-endian `u64`.
    pub fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    /// A `u32` length prefix, checked against `max` and against the bytes left (each element
    /// takes at least `min_element_bytes`), so a huge declared count allocates nothing.
    pub fn length(
        &mut self,
        what: &'static str,
        max: usize,
        min_element_bytes: usize,
    ) -> Result<usize, DecodeError> {
        let len = self.u32()? as usize;
        if len > max {
            return Err(DecodeError::TooLong { what, len, max });
        }
        let needed = len.saturating_mul(min_element_bytes.max(1));
        if needed > self.remaining() {
            return Err(DecodeError::UnexpectedEnd {
                needed,
                remaining: self.remaining(),
            });
        }
        Ok(len)
    }

    /// Length-prefixed bytes of at most `max` bytes.
    pub fn bytes(&mut self, what: &'static str, max: usize) -> Result<&'a [u8], DecodeError> {
        let len = self.length(what, max, 1)?;
        self.take(len)
    }

    /// A length-prefixed list of at most `max` elements.
    pub fn list<T: Decode>(
        &mut self,
        what: &'static str,
        max: usize,
        min_element_bytes: usize,
    ) -> Result<Vec<T>, DecodeError> {
        let len = self.length(what, max, min_element_bytes)?;
        let mut out = Vec::with_capacity(len);
        for _ in 0..len {
            out.push(T::decode_from(self)?);
        }
        Ok(out)
    }

    /// An option: tag 0 (none) or 1 (some).
    pub fn option<T: Decode>(&mut self, what: &'static str) -> Result<Option<T>, DecodeError> {
        match self.u8()? {
            0 => Ok(None),
            1 => Ok(Some(T::decode_from(self)?)),
            tag => Err(DecodeError::InvalidTag { what, tag }),
        }
    }
}

/// Appends a big-endian `u32` length prefix.
pub fn put_len(out: &mut Vec<u8>, len: usize) {
    let len = u32::try_from(len).expect("encoded lengths are bounded far below u32::MAX");
    out.extend_from_slice(&len.to_be_bytes());
}

/// Appends length-prefixed bytes.
pub fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    put_len(out, bytes.len());
    out.extend_from_slice(bytes);
}

/// Appends a length-prefixed list.
pub fn put_list<T: Encode>(out: &mut Vec<u8>, items: &[T]) {
    put_len(out, items.len());
    for item in items {
        item.encode_to(out);
    }
}

/// Appends an option (tag 0, or tag 1 and the value).
pub fn put_option<T: Encode>(out: &mut Vec<u8>, value: Option<&T>) {
    match value {
        None => out.push(0),
        Some(v) => {
            out.push(1);
            v.encode_to(out);
        }
    }
}

/// Fails unless `items` are strictly ascending by `key`.
pub fn check_ascending<T, K: Ord>(
    what: &'static str,
    items: &[T],
    key: impl Fn(&T) -> K,
) -> Result<(), DecodeError> {
    if items.windows(2).all(|w| key(&w[0]) < key(&w[1])) {
        Ok(())
    } else {
        Err(DecodeError::NotCanonicalOrder { what })
    }
}

impl Encode for u64 {
    fn encode_to(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_be_bytes());
    }
}

impl Decode for u64 {
    const MAX_BYTES: usize = 8;
    const NAME: &'static str = "u64";
    fn decode_from(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        r.u64()
    }
}

impl Encode for u32 {
    fn encode_to(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_be_bytes());
    }
}

impl Decode for u32 {
    const MAX_BYTES: usize = 4;
    const NAME: &'static str = "u32";
    fn decode_from(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        r.u32()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_are_big_endian_and_fixed_width() {
        assert_eq!(1u64.to_bytes(), [0, 0, 0, 0, 0, 0, 0, 1]);
        assert_eq!(u64::from_bytes(&[0, 0, 0, 0, 0, 0, 1, 0]), Ok(256));
    }

    #[test]
    fn trailing_bytes_are_rejected() {
        assert_eq!(
            u32::from_bytes(&[0, 0, 0, 1, 9]),
            Err(DecodeError::Oversized {
                what: "u32",
                len: 5,
                max: 4
            })
        );
        let mut r = Reader::new(&[0, 0, 0, 1, 9]);
        assert_eq!(r.u32(), Ok(1));
        assert_eq!(r.finish(), Err(DecodeError::TrailingBytes { count: 1 }));
    }

    #[test]
    fn truncated_input_is_rejected() {
        assert_eq!(
            u64::from_bytes(&[1, 2, 3]),
            Err(DecodeError::UnexpectedEnd {
                needed: 8,
                remaining: 3
            })
        );
    }

    #[test]
    fn huge_declared_lengths_are_rejected_before_allocating() {
        let mut r = Reader::new(&[0xff, 0xff, 0xff, 0xff]);
        assert!(matches!(
            r.list::<u64>("list", 10, 8),
            Err(DecodeError::TooLong {
                len: 0xffff_ffff,
                max: 10,
                ..
            })
        ));
        let mut r = Reader::new(&[0, 0, 0, 9, 1, 2]);
        assert!(matches!(
            r.list::<u64>("list", 10, 8),
            Err(DecodeError::UnexpectedEnd { needed: 72, .. })
        ));
    }

    #[test]
    fn option_tags_other_than_zero_and_one_are_rejected() {
        let mut r = Reader::new(&[2]);
        assert_eq!(
            r.option::<u64>("opt"),
            Err(DecodeError::InvalidTag {
                what: "opt",
                tag: 2
            })
        );
    }
}
