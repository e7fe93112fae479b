//! POSIX extended regular expressions through the C library, compiled exactly like
//! Amanda's `match()` (common-src/match.c: `REG_EXTENDED | REG_NOSUB | REG_NEWLINE`).
//!
//! The NORMAL/IGNORE/STRANGE properties of amgtar are POSIX regexes written by admins for the
//! real client; running them through the same engine (glibc's `regcomp`) is the only way to
//! classify tar's messages exactly as it does (bracket expressions, `[[:space:]]`, back
//! references, the leftmost-longest rules...).
//!
//! What this module must not do: panic on any pattern or subject (a pattern with a NUL byte
//! is refused as an error; a subject is cut at its first NUL, as C would see it).

use std::ffi::{CStr, CString};
use std::fmt;

/// A compiled pattern. `regex_t` is not shared across threads by this type (`Send` only:
/// glibc's `regexec` on one `regex_t` from several threads at once is not documented as
/// safe), so each job compiles its own.
pub struct Regex {
    pattern: String,
    // Boxed so the address glibc may keep pointers into stays fixed.
    raw: Box<libc::regex_t>,
}

// SAFETY: a `regex_t` is plain memory owned by this value; moving it to another thread and
// using it there (one thread at a time, guaranteed by `&mut`/ownership rules: `is_match`
// takes `&self` but `Regex` is not `Sync`) is fine.
unsafe impl Send for Regex {}

/// A pattern `regcomp` refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid regular expression {pattern:?}: {reason}")]
pub struct RegexError {
    /// The pattern as given.
    pub pattern: String,
    /// glibc's `regerror` text (or why it never reached glibc).
    pub reason: String,
}

impl Regex {
    /// Compiles `pattern` as Amanda does.
    pub fn new(pattern: &str) -> Result<Regex, RegexError> {
        let c = CString::new(pattern).map_err(|_| RegexError {
            pattern: pattern.to_owned(),
            reason: "contains a NUL byte".to_owned(),
        })?;
        // SAFETY: an all-zero regex_t is a valid "not yet compiled" value (it is a plain C
        // struct of pointers and integers) and regcomp initializes it.
        let mut raw: Box<libc::regex_t> = Box::new(unsafe { std::mem::zeroed() });
        let flags = libc::REG_EXTENDED | libc::REG_NOSUB | libc::REG_NEWLINE;
        // SAFETY: `raw` points to writable memory for a regex_t, `c` is NUL-terminated.
        let rc = unsafe { libc::regcomp(&mut *raw, c.as_ptr(), flags) };
        if rc != 0 {
            let reason = error_text(rc, &raw);
            // SAFETY: glibc frees whatever a failed regcomp left allocated; calling regfree
            // on a regex_t that regcomp failed on is what Amanda does and is harmless.
            unsafe { libc::regfree(&mut *raw) };
            return Err(RegexError {
                pattern: pattern.to_owned(),
                reason,
            });
        }
        Ok(Regex {
            pattern: pattern.to_owned(),
            raw,
        })
    }

    /// Whether the pattern matches anywhere in `subject` (cut at its first NUL).
    pub fn is_match(&self, subject: &[u8]) -> bool {
        let end = memchr::memchr(0, subject).unwrap_or(subject.len());
        let mut buf = Vec::with_capacity(end + 1);
        buf.extend_from_slice(&subject[..end]);
        buf.push(0);
        let Ok(c) = CStr::from_bytes_with_nul(&buf) else {
            return false;
        };
        // SAFETY: `raw` was compiled by regcomp and not freed; `c` is NUL-terminated; with
        // REG_NOSUB and nmatch = 0, pmatch may be null.
        let rc = unsafe { libc::regexec(&*self.raw, c.as_ptr(), 0, std::ptr::null_mut(), 0) };
        rc == 0
    }

    /// The pattern text.
    pub fn as_str(&self) -> &str {
        &self.pattern
    }
}

impl Drop for Regex {
    fn drop(&mut self) {
        // SAFETY: compiled by a successful regcomp and freed exactly once, here.
        unsafe { libc::regfree(&mut *self.raw) };
    }
}

impl fmt::Debug for Regex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Regex").field(&self.pattern).finish()
    }
}

fn error_text(rc: libc::c_int, raw: &libc::regex_t) -> String {
    let mut buf = [0u8; 256];
    // SAFETY: `buf` is writable for its length; regerror writes at most that many bytes,
    // NUL-terminated.
    unsafe { libc::regerror(rc, raw, buf.as_mut_ptr().cast(), buf.len()) };
    let end = memchr::memchr(0, &buf).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amgtar_size_regex_matches_tar_totals() {
        let r = Regex::new("^ *Total bytes written: [0-9][0-9]*").unwrap();
        assert!(r.is_match(b"Total bytes written: 20480 (20KiB, 9.6MiB/s)"));
        assert!(!r.is_match(b"tar: Total bytes written: 1"));
    }

    #[test]
    fn extended_syntax_and_classes_work_like_glibc() {
        let r = Regex::new(": File .* shrunk by [0-9][0-9]* bytes, padding with zeros").unwrap();
        assert!(r.is_match(b"tar: ./a: File ./a shrunk by 12 bytes, padding with zeros"));
        let r = Regex::new("^(foo|bar)[[:space:]]+x$").unwrap();
        assert!(r.is_match(b"bar \tx"));
        assert!(!r.is_match(b"baz x"));
    }

    #[test]
    fn bad_patterns_are_errors_not_panics() {
        assert!(Regex::new("(").is_err());
        assert!(Regex::new("[a").is_err());
        assert!(Regex::new("a\0b").is_err());
        let e = Regex::new("(").unwrap_err();
        assert!(e.to_string().contains("invalid regular expression"));
    }

    #[test]
    fn subject_is_cut_at_nul() {
        let r = Regex::new("b$").unwrap();
        assert!(!r.is_match(b"a\0b"));
        assert!(r.is_match(b"ab\0c"));
    }
}
