//! The protocol's hex: `blk-write`'s payload, `blk-read`'s answer (and the
//! host's diag tokens).

use core::fmt;

/// Writes bytes as lowercase hex.
#[derive(Debug, Clone, Copy)]
pub struct Hex<'a>(pub &'a [u8]);

impl fmt::Display for Hex<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

/// Decodes hex (either case) into the front of `out`; the length written.
pub fn decode_hex(s: &str, out: &mut [u8]) -> Option<usize> {
    let b = s.as_bytes();
    if !b.len().is_multiple_of(2) || b.len() / 2 > out.len() {
        return None;
    }
    for (i, pair) in b.chunks_exact(2).enumerate() {
        out[i] = (nibble(pair[0])? << 4) | nibble(pair[1])?;
    }
    Some(b.len() / 2)
}

fn nibble(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let data: Vec<u8> = (0..=255).collect();
        let text = Hex(&data).to_string();
        assert_eq!(&text[..6], "000102");
        let mut back = [0u8; 256];
        assert_eq!(decode_hex(&text, &mut back), Some(256));
        assert_eq!(back.to_vec(), data);
        assert_eq!(decode_hex("DEADbeef", &mut back), Some(4));
        assert_eq!(back[..4], [0xde, 0xad, 0xbe, 0xef]);
    }

    #[test]
    fn refuses_bad_hex() {
        let mut out = [0u8; 2];
        assert_eq!(decode_hex("abc", &mut out), None, "odd length");
        assert_eq!(decode_hex("zz", &mut out), None);
        assert_eq!(decode_hex("000000", &mut out), None, "too long for out");
        assert_eq!(decode_hex("", &mut out), Some(0));
    }
}
