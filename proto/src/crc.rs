//! CRC-32C of a data stream, and its `%08x:%lld` text form (spec §6.7.5, §8.2 item 19).
//!
//! Amanda 3.5 checks every dump end to end with CRC-32C (Castagnoli): the client's
//! `sendbackup` reports `sendbackup: native-CRC <crc>:<size>` (the bytes before client-side
//! compression or encryption) and `sendbackup: client-CRC <crc>:<size>` (exactly the bytes it
//! sent on the DATA stream) on the MESG stream, and the dumper compares the latter with the CRC
//! of what it received. [`Crc32c`] computes that value incrementally over slices (hardware
//! accelerated through the `crc32c` crate) and [`CrcValue`] prints and parses the text form the
//! way Amanda's `crc32_finish` / `parse_crc` do.
//!
//! What this module must not do: parse MESG lines (that is `mesg`), or decide whether a
//! mismatch fails a dump (that is the dumper's job).

use std::fmt;

use crate::quote::c_sign;

/// A running CRC-32C over a byte stream, plus the number of bytes seen.
///
/// Start with [`Crc32c::new`], call [`Crc32c::update`] with every slice of the stream in order
/// (slices may have any length, including zero), then read [`Crc32c::value`]. The result is the
/// standard CRC-32C (initial value `!0`, final xor `!0`), the same as Amanda's
/// `crc32_init`/`crc32_add`/`crc32_finish`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Crc32c {
    /// The finished CRC of the bytes seen so far (`crc32c_append` works on finished values).
    crc: u32,
    bytes: u64,
}

impl Crc32c {
    /// A CRC over zero bytes.
    pub const fn new() -> Crc32c {
        Crc32c { crc: 0, bytes: 0 }
    }

    /// Adds `data`, which follows everything given before, to the checksum.
    pub fn update(&mut self, data: &[u8]) {
        self.crc = crc32c::crc32c_append(self.crc, data);
        // A u64 byte count cannot overflow in practice (16 EiB); saturate rather than wrap.
        self.bytes = self.bytes.saturating_add(data.len() as u64);
    }

    /// The CRC of the bytes seen so far.
    pub const fn crc(&self) -> u32 {
        self.crc
    }

    /// How many bytes were added so far.
    pub const fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The CRC and byte count, as Amanda prints and compares them.
    pub const fn value(&self) -> CrcValue {
        CrcValue {
            crc: self.crc,
            // Amanda keeps the count in a `long long`; 2^63 bytes cannot be reached.
            size: if self.bytes > i64::MAX as u64 {
                i64::MAX
            } else {
                self.bytes as i64
            },
        }
    }
}

/// A CRC-32C and the length of the data it covers: Amanda's `crc_t`.
///
/// `Display` prints `%08x:%lld`, e.g. `328bdcbf:10240`. [`CrcValue::parse`] reads it back like
/// Amanda's `parse_crc`. The size is signed because Amanda keeps it in a `long long` and its
/// parser accepts a sign; a computed value is never negative.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct CrcValue {
    /// The CRC-32C.
    pub crc: u32,
    /// The number of bytes covered.
    pub size: i64,
}

/// Why a CRC text was not understood. Amanda's `parse_crc` turns every one of these into
/// `0:0`, which its dumper treats as "no CRC reported" (it then skips the comparison).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CrcParseError {
    /// No hexadecimal number where the CRC should be.
    #[error("CRC text {text:?}: expected a hexadecimal CRC at byte {offset}")]
    Crc {
        /// The text, lossily decoded.
        text: String,
        /// Where the CRC was expected.
        offset: usize,
    },
    /// The CRC is not followed by `:`.
    #[error("CRC text {text:?}: expected `:` at byte {offset}")]
    Colon {
        /// The text, lossily decoded.
        text: String,
        /// Where the colon was expected.
        offset: usize,
    },
    /// No decimal number after the colon.
    #[error("CRC text {text:?}: expected a decimal size at byte {offset}")]
    Size {
        /// The text, lossily decoded.
        text: String,
        /// Where the size was expected.
        offset: usize,
    },
}

impl CrcValue {
    /// Parses `<hex>:<decimal>` exactly like Amanda's `parse_crc`, i.e. glibc
    /// `sscanf(s, "%x:%lld")` requiring both conversions:
    ///
    /// - leading white space is skipped before each number (not before the `:`);
    /// - the CRC may carry a sign and a `0x`/`0X` prefix (`0x` alone reads as 0); it is read
    ///   as an unsigned 64-bit number (saturating at `u64::MAX`, a `-` negates modulo 2^64)
    ///   and truncated to 32 bits;
    /// - the size may carry a sign; it saturates at the `i64` bounds;
    /// - anything after the size is ignored (`1:2junk` is `00000001:2`).
    pub fn parse(text: &[u8]) -> Result<CrcValue, CrcParseError> {
        let lossy = || String::from_utf8_lossy(text).into_owned();
        let mut pos = skip_c_space(text, 0);
        let (crc, after) = scan_hex(text, pos).ok_or_else(|| CrcParseError::Crc {
            text: lossy(),
            offset: pos,
        })?;
        pos = after;
        if text.get(pos) != Some(&b':') {
            return Err(CrcParseError::Colon {
                text: lossy(),
                offset: pos,
            });
        }
        pos = skip_c_space(text, pos + 1);
        let size = scan_decimal_i64(text, pos).ok_or_else(|| CrcParseError::Size {
            text: lossy(),
            offset: pos,
        })?;
        Ok(CrcValue {
            // Truncation to the low 32 bits is what storing into an `unsigned int` does.
            crc: crc as u32,
            size,
        })
    }
}

impl fmt::Display for CrcValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:08x}:{}", self.crc, self.size)
    }
}

impl std::str::FromStr for CrcValue {
    type Err = CrcParseError;

    fn from_str(s: &str) -> Result<CrcValue, CrcParseError> {
        CrcValue::parse(s.as_bytes())
    }
}

/// C `isspace` in the C locale.
fn is_c_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

fn skip_c_space(s: &[u8], mut pos: usize) -> usize {
    while s.get(pos).is_some_and(|&b| is_c_space(b)) {
        pos += 1;
    }
    pos
}

/// glibc `%x`: optional sign, optional `0x`, hex digits; `strtoul` overflow rules.
/// Returns the value (before truncation to `unsigned int`) and the position after it.
fn scan_hex(s: &[u8], pos: usize) -> Option<(u64, usize)> {
    let (negative, mut pos) = c_sign(s, pos);
    let mut digits = 0usize;
    // `0x` is consumed even when no hex digit follows: the `0` already counts as the number.
    if s.get(pos) == Some(&b'0') && matches!(s.get(pos + 1), Some(b'x' | b'X')) {
        pos += 2;
        digits = 1;
    }
    let mut value: u64 = 0;
    let mut overflow = false;
    while let Some(d) = s.get(pos).and_then(|&b| (b as char).to_digit(16)) {
        match value
            .checked_mul(16)
            .and_then(|v| v.checked_add(u64::from(d)))
        {
            Some(v) => value = v,
            None => overflow = true,
        }
        digits += 1;
        pos += 1;
    }
    if digits == 0 {
        return None;
    }
    let value = if overflow {
        u64::MAX
    } else if negative {
        value.wrapping_neg()
    } else {
        value
    };
    Some((value, pos))
}

/// glibc `%lld` / `strtoll` without the white-space skip: optional sign, decimal digits,
/// saturating at the `i64` bounds.
fn scan_decimal_i64(s: &[u8], pos: usize) -> Option<i64> {
    let (negative, mut pos) = c_sign(s, pos);
    let mut value: i64 = 0;
    let mut digits = 0usize;
    while let Some(&b) = s.get(pos).filter(|b| b.is_ascii_digit()) {
        let d = i64::from(b - b'0');
        value = if negative {
            value.saturating_mul(10).saturating_sub(d)
        } else {
            value.saturating_mul(10).saturating_add(d)
        };
        digits += 1;
        pos += 1;
    }
    (digits > 0).then_some(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn crc32c_check_value_matches_the_standard() {
        // The CRC-32C check value of "123456789" (RFC 3720, B.4).
        let mut c = Crc32c::new();
        c.update(b"123456789");
        assert_eq!(c.crc(), 0xe306_9283);
        assert_eq!(c.bytes(), 9);
        assert_eq!(c.value().to_string(), "e3069283:9");
    }

    #[test]
    fn empty_stream_prints_like_amanda() {
        assert_eq!(Crc32c::new().value().to_string(), "00000000:0");
    }

    #[test]
    fn display_pads_to_eight_hex_digits() {
        let v = CrcValue {
            crc: 0xab,
            size: 10240,
        };
        assert_eq!(v.to_string(), "000000ab:10240");
    }

    /// Every case was checked against glibc `sscanf("%x:%lld")` on this machine.
    #[test]
    fn parse_follows_glibc_sscanf() {
        let ok: &[(&str, u32, i64)] = &[
            ("328bdcbf:10240", 0x328b_dcbf, 10240),
            ("0x328bdcbf:10240", 0x328b_dcbf, 10240),
            ("0X1:2", 1, 2),
            ("0x:5", 0, 5),
            ("-0x:5", 0, 5),
            ("1f: 3", 0x1f, 3),
            ("\n\tff:\n5", 0xff, 5),
            ("-1:5", 0xffff_ffff, 5),
            ("-0x1f:5", 0xffff_ffe1, 5),
            (" -ff:5", 0xffff_ff01, 5),
            ("+ff:5", 0xff, 5),
            ("123456789ab:7", 0x4567_89ab, 7),
            ("FFFFFFFFFFFFFFFFFFFFFF:1", 0xffff_ffff, 1),
            ("-FFFFFFFFFFFFFFFF:1", 1, 1),
            ("-FFFFFFFFFFFFFFFFF:1", 0xffff_ffff, 1),
            ("ff:-3", 0xff, -3),
            ("ff:+7", 0xff, 7),
            ("ff:0x10", 0xff, 0),
            ("ff:99999999999999999999", 0xff, i64::MAX),
            ("ff:-9223372036854775809", 0xff, i64::MIN),
            ("1:2junk", 1, 2),
        ];
        for &(text, crc, size) in ok {
            assert_eq!(
                CrcValue::parse(text.as_bytes()),
                Ok(CrcValue { crc, size }),
                "{text:?}"
            );
        }
        let bad = [
            "", ":1", "x1:1", "-x1:1", "-:5", "+:5", "0xz:5", "0x-1:5", "00x1:5", "ff :1", "ff:",
            "ff:- 5", "1:-", "1:+",
        ];
        for text in bad {
            assert!(CrcValue::parse(text.as_bytes()).is_err(), "{text:?}");
        }
    }

    #[test]
    fn parse_error_says_where() {
        let e = CrcValue::parse(b"ff;10").unwrap_err();
        assert_eq!(e.to_string(), "CRC text \"ff;10\": expected `:` at byte 2");
    }

    proptest! {
        #[test]
        fn chunked_updates_equal_one_update(data in proptest::collection::vec(any::<u8>(), 0..2048),
                                            cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..8)) {
            let mut whole = Crc32c::new();
            whole.update(&data);
            let mut points: Vec<usize> = cuts.iter().map(|i| i.index(data.len() + 1)).collect();
            points.sort_unstable();
            let mut parts = Crc32c::new();
            let mut start = 0;
            for p in points {
                parts.update(&data[start..p]);
                start = p;
            }
            parts.update(&data[start..]);
            prop_assert_eq!(whole, parts);
        }

        #[test]
        fn display_then_parse_round_trips(crc in any::<u32>(), size in any::<i64>()) {
            let v = CrcValue { crc, size };
            prop_assert_eq!(CrcValue::parse(v.to_string().as_bytes()), Ok(v));
        }

        #[test]
        fn parse_never_panics(text in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = CrcValue::parse(&text);
        }
    }
}
