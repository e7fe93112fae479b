//! Amanda's string unquoting, as used by its configuration readers.
//!
//! Facts (common-src/amutil.c: unquote_string, Amanda 3.5.1): every `"` is deleted, not only
//! the enclosing ones; `\n \t \r \f` decode to control characters; `\ooo` (one to three
//! octal digits) decodes to that byte, and a decoded 0 is dropped; any other `\x` gives `x`;
//! a trailing lone `\` is dropped. Quirk kept from 3.5.1: the character right after an
//! octal escape is copied as is, without quote deletion or escape processing (fixed after
//! 3.5.1). Unlike 3.5.1 we never read past the end when an octal escape ends the string.
//!
//! What this module must not do: quote (amanda-rs never writes Amanda configs), or keep a
//! second copy of the rules (they live in `proto::quote`).

/// Unquotes `raw` (which may include its enclosing quotes) like Amanda 3.5.1. The wire
/// protocol uses the same function; there is one implementation, in `proto`.
pub fn unquote(raw: &[u8]) -> Vec<u8> {
    proto::quote::unquote_string(raw)
}

/// [`unquote`], decoded as UTF-8 (invalid sequences become U+FFFD).
pub fn unquote_lossy(raw: &[u8]) -> String {
    match String::from_utf8(unquote(raw)) {
        Ok(s) => s,
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unquote_deletes_every_double_quote() {
        assert_eq!(unquote(br#""a"b"c""#), b"abc");
    }

    #[test]
    fn unquote_decodes_c_escapes() {
        assert_eq!(unquote(br#""a\tb\nc\\d\"e""#), b"a\tb\nc\\d\"e");
    }

    #[test]
    fn unquote_octal_drops_zero_and_copies_next_char_verbatim_like_351() {
        assert_eq!(unquote(br"\101B"), b"AB");
        assert_eq!(unquote(br"\000x"), b"x");
        // the character after an octal escape is not escape-processed in 3.5.1
        assert_eq!(unquote(br"\101\n"), b"A\\n");
        // nor is a quote after it deleted
        assert_eq!(unquote(br#"\101""#), b"A\"");
    }

    #[test]
    fn unquote_drops_trailing_backslash_and_never_reads_past_the_end() {
        assert_eq!(unquote(b"ab\\"), b"ab");
        assert_eq!(unquote(b"\\1"), &[1u8][..]);
        assert_eq!(unquote(b"\\7777"), &[0xffu8, b'7'][..]);
    }

    proptest::proptest! {
        #[test]
        fn unquote_never_panics_and_never_grows(input in proptest::collection::vec(proptest::num::u8::ANY, 0..64)) {
            let out = unquote(&input);
            proptest::prop_assert!(out.len() <= input.len());
        }
    }
}
