//! The chain id: names one chain, and is part of every signed message.

use std::fmt;
use std::str::FromStr;

use crate::codec::{Decode, DecodeError, Encode, Reader, put_bytes};
use crate::limits::MAX_CHAIN_ID_BYTES;

/// 1 to [`MAX_CHAIN_ID_BYTES`] bytes of `a-z`, `0-9`, `-`, `_`, `.`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChainId(String);

impl ChainId {
    /// Checks the text against the alphabet and bound.
    pub fn new(text: &str) -> Result<ChainId, DecodeError> {
        const WHAT: &str = "chain id";
        if text.is_empty() {
            return Err(DecodeError::Empty { what: WHAT });
        }
        if text.len() > MAX_CHAIN_ID_BYTES {
            return Err(DecodeError::TooLong {
                what: WHAT,
                len: text.len(),
                max: MAX_CHAIN_ID_BYTES,
            });
        }
        let allowed = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit() || b"-_.".contains(&c);
        if !text.bytes().all(allowed) {
            return Err(DecodeError::InvalidText {
                what: WHAT,
                reason: "only a-z, 0-9, '-', '_' and '.' are allowed",
            });
        }
        Ok(ChainId(text.to_owned()))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ChainId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ChainId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ChainId({})", self.0)
    }
}

impl FromStr for ChainId {
    type Err = DecodeError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ChainId::new(s)
    }
}

impl Encode for ChainId {
    fn encode_to(&self, out: &mut Vec<u8>) {
        put_bytes(out, self.0.as_bytes());
    }
}

impl Decode for ChainId {
    const MAX_BYTES: usize = 4 + MAX_CHAIN_ID_BYTES;
    const NAME: &'static str = "chain id";
    fn decode_from(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let bytes = r.bytes(Self::NAME, MAX_CHAIN_ID_BYTES)?;
        let text = std::str::from_utf8(bytes).map_err(|_| DecodeError::InvalidText {
            what: Self::NAME,
            reason: "not UTF-8",
        })?;
        ChainId::new(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_ids_outside_the_alphabet_or_bound_are_rejected() {
        assert!(ChainId::new("xdp-local.1_a").is_ok());
        assert!(ChainId::new("").is_err());
        assert!(ChainId::new("Upper").is_err());
        assert!(ChainId::new("spa ce").is_err());
        assert!(ChainId::new(&"a".repeat(MAX_CHAIN_ID_BYTES + 1)).is_err());
    }

    #[test]
    fn chain_id_round_trips() {
        let id = ChainId::new("xdp-local").expect("valid id");
        assert_eq!(ChainId::from_bytes(&id.to_bytes()), Ok(id));
    }
}
