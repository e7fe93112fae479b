//! Amanda's string quoting and C-style field splitting (spec §8.1), the names it gives files
//! (`sanitise_filename`), and [`ByteString`].
//!
//! Disk names, devices, paths and messages travel as 8-bit strings. Where Amanda puts them
//! into space-separated text it uses `quote_string` (quote only when needed),
//! `unquote_string`, and the `skip_quoted_string` / `strtok` field splitters of its C code.
//! This module reproduces those byte for byte, because both ends must agree on where a
//! field ends.
//!
//! Which `unquote_string` we implement: the one of 3.5.1 (spec §0.1), whose octal escape
//! copies the byte that follows the escape *without* escape processing (`\101\n` gives
//! `A\n`, not `A` + newline). We must read whatever a 3.5.1 peer would read the same way it
//! does; and since [`quote_string`] never writes octal escapes, what we write is read
//! identically by 3.5.1 and by later versions. The one place where 3.5.1 reads past the end
//! of its buffer (an octal escape that ends the string) we simply stop.
//!
//! On the wire Amanda only uses the "maybe" form: the traces' sendsize REP writes
//! `/tmp/amanda-harness/data/plain 0 SIZE 560` but `"/tmp/amanda-harness/data/dle with space é"
//! 0 SIZE 10`. [`quote_string_always`] exists for the few places where we must force quotes
//! to protect a name from a reader's quirk (a `#` read by `agets`, a disk named `ERROR`).
//!
//! What this module must not do: allocate unboundedly more than its input (every function
//! here is linear), or panic on any byte sequence.

use std::borrow::Borrow;
use std::fmt;
use std::ops::Deref;

/// An 8-bit string as Amanda handles it: a disk name, device, path, property value, message.
///
/// Linux paths need not be UTF-8, so this is bytes; `Display` is lossy (invalid UTF-8
/// shows as U+FFFD) and meant for humans, never for the wire.
#[derive(Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ByteString(Vec<u8>);

impl ByteString {
    /// An empty string.
    pub const fn new() -> ByteString {
        ByteString(Vec::new())
    }

    /// The bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The bytes, by value.
    pub fn into_vec(self) -> Vec<u8> {
        self.0
    }

    /// The string quoted as [`quote_string`] would (for legacy lines and messages).
    pub fn quoted(&self) -> ByteString {
        ByteString(quote_string(&self.0))
    }
}

impl Deref for ByteString {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.0
    }
}

impl AsRef<[u8]> for ByteString {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl Borrow<[u8]> for ByteString {
    fn borrow(&self) -> &[u8] {
        &self.0
    }
}

impl From<Vec<u8>> for ByteString {
    fn from(v: Vec<u8>) -> ByteString {
        ByteString(v)
    }
}

impl From<&[u8]> for ByteString {
    fn from(v: &[u8]) -> ByteString {
        ByteString(v.to_vec())
    }
}

impl<const N: usize> From<&[u8; N]> for ByteString {
    fn from(v: &[u8; N]) -> ByteString {
        ByteString(v.to_vec())
    }
}

impl From<&str> for ByteString {
    fn from(v: &str) -> ByteString {
        ByteString(v.as_bytes().to_vec())
    }
}

impl From<String> for ByteString {
    fn from(v: String) -> ByteString {
        ByteString(v.into_bytes())
    }
}

impl From<ByteString> for Vec<u8> {
    fn from(v: ByteString) -> Vec<u8> {
        v.0
    }
}

impl PartialEq<[u8]> for ByteString {
    fn eq(&self, other: &[u8]) -> bool {
        self.0 == other
    }
}

impl PartialEq<&[u8]> for ByteString {
    fn eq(&self, other: &&[u8]) -> bool {
        self.0 == *other
    }
}

impl PartialEq<str> for ByteString {
    fn eq(&self, other: &str) -> bool {
        self.0 == other.as_bytes()
    }
}

impl PartialEq<&str> for ByteString {
    fn eq(&self, other: &&str) -> bool {
        self.0 == other.as_bytes()
    }
}

impl fmt::Display for ByteString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&String::from_utf8_lossy(&self.0))
    }
}

impl fmt::Debug for ByteString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", String::from_utf8_lossy(&self.0))
    }
}

/// GLib's `g_ascii_isspace`: space, tab, newline, form feed, carriage return. Not vertical
/// tab (checked against the libglib of this machine: bytes 9, 10, 12, 13, 32).
pub const fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0c | b'\r')
}

/// Whether [`quote_string`] would quote `s`: empty, or containing `:` `'` `\` `"`, a byte
/// <= 0x20, 0x7F, or (because `char` is signed on the x86/amd64 builds we talk to) a byte
/// >= 0x80.
pub fn needs_quoting(s: &[u8]) -> bool {
    s.is_empty()
        || s.iter()
            .any(|&b| matches!(b, b':' | b'\'' | b'\\' | b'"' | 0x7f) || b <= b' ' || b >= 0x80)
}

/// Amanda's `quote_string`: `s` unchanged unless [`needs_quoting`], else `"` + `s` with
/// `\t \n \r \f \\ \"` escaped + `"`. The empty string becomes `""`.
pub fn quote_string(s: &[u8]) -> Vec<u8> {
    if needs_quoting(s) {
        quote_string_always(s)
    } else {
        s.to_vec()
    }
}

/// Amanda's `quote_string_always` (`quote_string_maybe(s, TRUE)`): always in double quotes,
/// same escapes as [`quote_string`].
pub fn quote_string_always(s: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len() + 2);
    out.push(b'"');
    for &b in s {
        match b {
            b'\t' => out.extend_from_slice(b"\\t"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            0x0c => out.extend_from_slice(b"\\f"),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'"' => out.extend_from_slice(b"\\\""),
            _ => out.push(b),
        }
    }
    out.push(b'"');
    out
}

/// Amanda 3.5.1's `unquote_string`.
///
/// Deletes every `"` (not only the enclosing ones); decodes `\n \t \r \f`; decodes `\ooo`
/// (1 to 3 octal digits, value modulo 256, a resulting 0 is dropped) and then copies the
/// next byte verbatim (the 3.5.1 quirk, see the module docs); `\x` gives `x` for any other
/// `x`; a trailing lone `\` is dropped. Input is treated as a C string: it ends at the first
/// NUL.
pub fn unquote_string(s: &[u8]) -> Vec<u8> {
    let s = until_nul(s);
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while let Some(&b) = s.get(i) {
        if b == b'"' {
            i += 1;
            continue;
        }
        if b == b'\\' {
            i += 1;
            match s.get(i) {
                Some(b'n') => {
                    out.push(b'\n');
                    i += 1;
                    continue;
                }
                Some(b't') => {
                    out.push(b'\t');
                    i += 1;
                    continue;
                }
                Some(b'r') => {
                    out.push(b'\r');
                    i += 1;
                    continue;
                }
                Some(b'f') => {
                    out.push(0x0c);
                    i += 1;
                    continue;
                }
                Some(b'0'..=b'7') => {
                    let mut c: u8 = 0;
                    let mut digits = 0;
                    while digits < 3 {
                        match s.get(i) {
                            Some(&d @ b'0'..=b'7') => {
                                c = (c << 3).wrapping_add(d - b'0');
                                i += 1;
                                digits += 1;
                            }
                            _ => break,
                        }
                    }
                    if c != 0 {
                        out.push(c);
                    }
                    // 3.5.1 falls through and copies the next byte unprocessed.
                }
                None => break,
                Some(_) => {}
            }
        }
        match s.get(i) {
            Some(&next) => {
                out.push(next);
                i += 1;
            }
            None => break,
        }
    }
    out
}

/// The bytes of `s` up to (not including) the first NUL: how C sees a buffer.
pub fn until_nul(s: &[u8]) -> &[u8] {
    match memchr::memchr(0, s) {
        Some(n) => &s[..n],
        None => s,
    }
}

/// Splits off the first line of a reply body the way Amanda's planner
/// (`skip_quoted_line`) and amcheck read them: a newline inside double quotes does not end
/// the line (backslashes are not special there). Returns the line without its `\n`, and
/// what follows it.
pub fn split_quoted_line(s: &[u8]) -> (&[u8], &[u8]) {
    let mut in_quotes = false;
    let end = s.iter().position(|&b| {
        if b == b'"' {
            in_quotes = !in_quotes;
        }
        b == b'\n' && !in_quotes
    });
    match end {
        Some(n) => (&s[..n], &s[n + 1..]),
        None => (s, &[][..]),
    }
}

/// The length of the quoted field at the start of `s`, like Amanda's `skip_quoted_string`:
/// the field ends at a whitespace byte ([`is_space`]) outside double quotes, or at a NUL,
/// or at the end; a backslash protects the next byte.
pub fn quoted_field_len(s: &[u8]) -> usize {
    let mut in_quotes = false;
    let mut i = 0;
    while let Some(&b) = s.get(i) {
        if b == 0 || (!in_quotes && is_space(b)) {
            break;
        }
        if b == b'"' {
            in_quotes = !in_quotes;
        } else if b == b'\\' && s.get(i + 1).is_some_and(|&n| n != 0) {
            i += 1;
        }
        i += 1;
    }
    i.min(s.len())
}

/// Splits off the quoted field at the start of `s` (see [`quoted_field_len`]): returns the
/// raw (still quoted) field and the rest, starting at the delimiter.
pub fn split_quoted_field(s: &[u8]) -> (&[u8], &[u8]) {
    s.split_at(quoted_field_len(s))
}

/// Amanda's `split_quoted_strings`: splits at single spaces outside quotes (a backslash
/// protects the next byte), and unquotes each part. Empty input gives no parts.
pub fn split_quoted_strings(s: &[u8]) -> Vec<Vec<u8>> {
    let s = until_nul(s);
    let mut parts = Vec::new();
    if s.is_empty() {
        return parts;
    }
    let mut in_quotes = false;
    let mut start = 0;
    let mut i = 0;
    while let Some(&b) = s.get(i) {
        if !in_quotes && b == b' ' {
            parts.push(unquote_string(&s[start..i]));
            start = i + 1;
        } else if b == b'\\' {
            i += 1;
            if i >= s.len() {
                break;
            }
        } else if b == b'"' {
            in_quotes = !in_quotes;
        }
        i += 1;
    }
    parts.push(unquote_string(s.get(start..).unwrap_or_default()));
    parts
}

/// A C `strtok` over a byte string: each call may use a different delimiter set, like the
/// Amanda parsers that switch between `" "`, `" \n"`, `"\n"` and `""` on the same buffer.
///
/// Semantics: skip leading delimiters; the token runs to the next delimiter, which is
/// consumed; an empty delimiter set returns the whole rest (if non-empty). The buffer ends
/// at its first NUL, as in C.
#[derive(Debug, Clone)]
pub struct Strtok<'a> {
    rest: &'a [u8],
}

impl<'a> Strtok<'a> {
    /// Starts tokenizing `s` (up to its first NUL).
    pub fn new(s: &'a [u8]) -> Strtok<'a> {
        Strtok { rest: until_nul(s) }
    }

    /// The next token, delimited by any byte of `delims`; `None` when only delimiters remain.
    pub fn next_token(&mut self, delims: &[u8]) -> Option<&'a [u8]> {
        let start = self.rest.iter().position(|b| !delims.contains(b))?;
        let rest = &self.rest[start..];
        match rest.iter().position(|b| delims.contains(b)) {
            Some(end) => {
                self.rest = &rest[end + 1..];
                Some(&rest[..end])
            }
            None => {
                self.rest = &[];
                Some(rest)
            }
        }
    }

    /// What has not been consumed yet.
    pub fn remainder(&self) -> &'a [u8] {
        self.rest
    }

    /// The optional `delay N` and `level N` words of a retry line (the REP's `RETRY` and
    /// the MESG `sendbackup: retry`, read alike by Amanda), and the space-delimited token
    /// that follows them.
    pub fn retry_delay_level(&mut self) -> (Option<i32>, Option<i32>, Option<&'a [u8]>) {
        let (mut delay, mut level) = (None, None);
        let mut tok = self.next_token(b" ");
        if tok == Some(b"delay".as_slice()) {
            delay = self.next_token(b" ").map(atoi);
            tok = self.next_token(b" ");
        }
        if tok == Some(b"level".as_slice()) {
            level = self.next_token(b" ").map(atoi);
            tok = self.next_token(b" ");
        }
        (delay, level, tok)
    }
}

/// The control character of C's escapes `\b \f \n \r \t \v` (the letter after the
/// backslash), or `None` for any other letter.
pub fn c_control_escape(letter: u8) -> Option<u8> {
    match letter {
        b'b' => Some(0x08),
        b'f' => Some(0x0c),
        b'n' => Some(b'\n'),
        b'r' => Some(b'\r'),
        b't' => Some(b'\t'),
        b'v' => Some(0x0b),
        _ => None,
    }
}

/// The optional sign C's `strtol` family reads at `s[pos]`: whether it was `-`, and the
/// position after it.
pub(crate) fn c_sign(s: &[u8], pos: usize) -> (bool, usize) {
    match s.get(pos) {
        Some(b'-') => (true, pos + 1),
        Some(b'+') => (false, pos + 1),
        _ => (false, pos),
    }
}

/// The value of C's `atoi`/`strtol` on `s`: optional leading whitespace, optional sign,
/// decimal digits; anything else ends the number. Returns `None` when no digit was found
/// (what `sscanf("%d")` reports as a failed conversion). Saturates instead of overflowing.
pub fn parse_c_int(s: &[u8]) -> Option<i64> {
    let mut i = 0;
    while s
        .get(i)
        .is_some_and(|&b| b == b' ' || (b'\t'..=b'\r').contains(&b))
    {
        i += 1;
    }
    let (negative, mut i) = c_sign(s, i);
    let mut value: i64 = 0;
    let mut any = false;
    while let Some(&d @ b'0'..=b'9') = s.get(i) {
        any = true;
        value = value.saturating_mul(10).saturating_add(i64::from(d - b'0'));
        i += 1;
    }
    if !any {
        return None;
    }
    Some(if negative {
        value.saturating_neg()
    } else {
        value
    })
}

/// [`parse_c_int`] narrowed like a C `int` (`%d`), saturating at the `i32` range.
pub fn parse_c_i32(s: &[u8]) -> Option<i32> {
    parse_c_int(s).map(|v| v.clamp(i64::from(i32::MIN), i64::from(i32::MAX)) as i32)
}

/// `atoi`: [`parse_c_i32`] with 0 for "no number".
pub fn atoi(s: &[u8]) -> i32 {
    parse_c_i32(s).unwrap_or(0)
}

/// Amanda's `sanitise_filename` (common-src/file.c): a host or disk name as both sides put
/// it into file names (gnutar-lists, holding files, indexes, curinfo), with every `/`, `:`
/// and `\` replaced by `_`.
pub fn sanitise_filename(name: &[u8]) -> Vec<u8> {
    name.iter()
        .map(|&b| {
            if matches!(b, b'/' | b':' | b'\\') {
                b'_'
            } else {
                b
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn sanitised_file_names_have_no_slash_colon_or_backslash() {
        assert_eq!(sanitise_filename(b"C:\\x/y"), b"C__x_y");
    }

    #[test]
    fn plain_names_are_not_quoted() {
        assert_eq!(
            quote_string(b"/tmp/amanda-harness/data/plain"),
            b"/tmp/amanda-harness/data/plain"
        );
        assert_eq!(quote_string(b"#hash;semi"), b"#hash;semi");
    }

    #[test]
    fn sendsize_rep_quotes_the_utf8_disk_name_like_the_trace() {
        let disk = "/tmp/amanda-harness/data/dle with space é".as_bytes();
        assert_eq!(
            quote_string(disk),
            "\"/tmp/amanda-harness/data/dle with space é\"".as_bytes()
        );
    }

    #[test]
    fn quote_escapes_and_triggers() {
        assert_eq!(quote_string(b""), b"\"\"");
        assert_eq!(quote_string(b"C:/"), b"\"C:/\"");
        assert_eq!(
            quote_string(b"a\tb\nc\rd\x0ce\\f\"g"),
            b"\"a\\tb\\nc\\rd\\fe\\\\f\\\"g\""
        );
        assert_eq!(quote_string(b"it's"), b"\"it's\"");
        assert_eq!(quote_string(b"x\x7f"), b"\"x\x7f\"");
        assert_eq!(quote_string_always(b"abc"), b"\"abc\"");
    }

    #[test]
    fn unquote_removes_every_double_quote() {
        assert_eq!(unquote_string(b"\"a\"b\"c"), b"abc");
    }

    #[test]
    fn unquote_escapes() {
        assert_eq!(
            unquote_string(b"\\n\\t\\r\\f\\\\\\\"\\q"),
            b"\n\t\r\x0c\\\"q"
        );
        assert_eq!(unquote_string(b"abc\\"), b"abc");
        assert_eq!(unquote_string(b"a\\0b"), b"ab", "a decoded NUL is dropped");
        assert_eq!(unquote_string(b"\\777x"), b"\xffx", "value modulo 256");
        assert_eq!(unquote_string(b"\\400x"), b"x", "256 wraps to 0, dropped");
        assert_eq!(unquote_string(b"a\0b"), b"a", "C string ends at NUL");
    }

    #[test]
    fn unquote_3_5_1_octal_quirk_copies_next_byte_raw() {
        // 3.5.1: after \101 the backslash of \n is copied literally, then 'n'.
        assert_eq!(unquote_string(b"\\101\\n"), b"A\\n");
        // and a double quote right after the escape survives.
        assert_eq!(unquote_string(b"\\101\"x"), b"A\"x");
        // an octal escape at the very end simply stops.
        assert_eq!(unquote_string(b"x\\101"), b"xA");
    }

    #[test]
    fn field_splitting_follows_skip_quoted_string() {
        assert_eq!(
            split_quoted_field(b"\"a b\" rest"),
            (&b"\"a b\""[..], &b" rest"[..])
        );
        assert_eq!(split_quoted_field(b"a\\ b c"), (&b"a\\ b"[..], &b" c"[..]));
        assert_eq!(split_quoted_field(b"abc"), (&b"abc"[..], &b""[..]));
        assert_eq!(split_quoted_field(b"a\tb"), (&b"a"[..], &b"\tb"[..]));
        assert_eq!(
            split_quoted_field(b"a\x0bb c"),
            (&b"a\x0bb"[..], &b" c"[..]),
            "VT is not a space"
        );
        assert_eq!(split_quoted_field(b"x\\"), (&b"x\\"[..], &b""[..]));
    }

    #[test]
    fn split_quoted_strings_like_amanda() {
        assert_eq!(
            split_quoted_strings(b"a \"b c\" d\\ e"),
            vec![b"a".to_vec(), b"b c".to_vec(), b"d e".to_vec()]
        );
        assert!(split_quoted_strings(b"").is_empty());
        assert_eq!(
            split_quoted_strings(b"a "),
            vec![b"a".to_vec(), b"".to_vec()]
        );
    }

    #[test]
    fn strtok_switches_delimiters() {
        let mut t = Strtok::new(b"  CONNECT DATA 1\nOPTIONS x;\n");
        assert_eq!(t.next_token(b" "), Some(&b"CONNECT"[..]));
        assert_eq!(t.next_token(b" \n"), Some(&b"DATA"[..]));
        assert_eq!(t.next_token(b" \n"), Some(&b"1"[..]));
        assert_eq!(t.next_token(b""), Some(&b"OPTIONS x;\n"[..]));
        assert_eq!(t.next_token(b" "), None);
        let mut t = Strtok::new(b";;a;;b;");
        assert_eq!(t.next_token(b";"), Some(&b"a"[..]));
        assert_eq!(t.next_token(b";"), Some(&b"b"[..]));
        assert_eq!(t.next_token(b";"), None);
    }

    #[test]
    fn c_integers() {
        assert_eq!(parse_c_int(b"  -12abc"), Some(-12));
        assert_eq!(parse_c_int(b"+7"), Some(7));
        assert_eq!(parse_c_int(b"x1"), None);
        assert_eq!(parse_c_int(b"99999999999999999999999"), Some(i64::MAX));
        assert_eq!(parse_c_i32(b"99999999999"), Some(i32::MAX));
        assert_eq!(atoi(b""), 0);
    }

    proptest! {
        #[test]
        fn quote_then_unquote_is_identity_without_nul(s in proptest::collection::vec(1u8..=255, 0..64)) {
            prop_assert_eq!(unquote_string(&quote_string(&s)), s.clone());
            prop_assert_eq!(unquote_string(&quote_string_always(&s)), s);
        }

        #[test]
        fn a_quoted_string_is_exactly_one_field(s in proptest::collection::vec(1u8..=255, 0..64)) {
            let mut line = quote_string(&s);
            let len = line.len();
            line.extend_from_slice(b" tail");
            prop_assert_eq!(quoted_field_len(&line), len);
        }

        #[test]
        fn unquote_and_split_never_panic(s in proptest::collection::vec(any::<u8>(), 0..128)) {
            let _ = unquote_string(&s);
            let _ = split_quoted_strings(&s);
            let _ = quoted_field_len(&s);
            let mut t = Strtok::new(&s);
            while t.next_token(b" \n").is_some() {}
        }
    }
}
