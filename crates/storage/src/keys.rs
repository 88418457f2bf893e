//! Encode keys whose byte order must equal their numeric order.

/// Length of a height key in bytes.
pub const HEIGHT_KEY_LEN: usize = 8;

/// Encodes a height as a key: big-endian, so bytewise order equals numeric order.
pub fn height_key(h: u64) -> [u8; HEIGHT_KEY_LEN] {
    h.to_be_bytes()
}

/// Decodes a key made by [`height_key`]; `None` unless it is exactly [`HEIGHT_KEY_LEN`] bytes.
pub fn parse_height_key(k: &[u8]) -> Option<u64> {
    let bytes: [u8; HEIGHT_KEY_LEN] = k.try_into().ok()?;
    Some(u64::from_be_bytes(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn height_key_round_trips() {
        for h in [0, 1, 255, 256, 1 << 32, u64::MAX - 1, u64::MAX] {
            assert_eq!(parse_height_key(&height_key(h)), Some(h));
        }
    }

    #[test]
    fn byte_order_of_height_keys_equals_numeric_order() {
        let heights = [0u64, 1, 9, 10, 255, 256, 65_535, 65_536, 1 << 40, u64::MAX];
        for pair in heights.windows(2) {
            assert!(height_key(pair[0]) < height_key(pair[1]), "{pair:?}");
        }
    }

    #[test]
    fn parse_height_key_rejects_wrong_lengths() {
        assert_eq!(parse_height_key(&[]), None);
        assert_eq!(parse_height_key(&[0; 7]), None);
        assert_eq!(parse_height_key(&[0; 9]), None);
    }
}
