//! What tar says on stderr, turned into MESG and INDEX stream bytes (spec §6.7.5, §6.7.6).
//!
//! During a backup GNU tar writes to stderr: `block N: ./path` lines (`--verbose
//! --block-number`, the index), warnings and errors, and `Total bytes written: N (...)`
//! (`--totals`). The real client classifies every non-index line with a table of regular
//! expressions (amgtar.c `init_re_table` + the NORMAL/IGNORE/STRANGE properties, merged by
//! client_util.c `build_re_table`; sendbackup-gnutar.c `re_table` for the legacy GNUTAR
//! program) and writes `| line` (normal), `? line` (strange, error) or nothing (ignore) to
//! MESG; the size line also gives `sendbackup: size <KiB>`. [`BackupMessages`] does the
//! same, fed bytes in arbitrary chunks.
//!
//! Lines are cut like amgtar's `fgets(line, 32768)`: a line longer than 32767 bytes is
//! handled as several lines. That is both what the real client does and our memory bound: a
//! hostile or broken tar cannot make us buffer more than one such piece.
//!
//! What this module must not do: any I/O (it is fed bytes and appends bytes), or allocate
//! in proportion to anything but the input it was just given.

use crate::tar::regex::{Regex, RegexError};

/// The longest piece of a line handled at once (amgtar reads with `fgets(line, 32768)`).
pub const MAX_LINE: usize = 32767;

/// How a message line is classified (Amanda's `dmpline_t`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineKind {
    /// `| line`.
    Normal,
    /// Dropped.
    Ignore,
    /// `? line`: the dump is at least STRANGE.
    Strange,
    /// `| line`, and the first number in it is the size in bytes.
    Size,
    /// `? line` (amgtar's ERROR class prints like strange).
    Error,
}

impl LineKind {
    /// The MESG prefix character, `None` for lines that are dropped.
    pub const fn prefix(self) -> Option<u8> {
        match self {
            LineKind::Normal | LineKind::Size => Some(b'|'),
            LineKind::Strange | LineKind::Error => Some(b'?'),
            LineKind::Ignore => None,
        }
    }
}

/// The built-in tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Table {
    /// amgtar's `init_re_table`.
    Amgtar,
    /// sendbackup-gnutar.c's `re_table` as Debian builds it (Samba >= 2, no
    /// IGNORE_TAR_ERRORS), plus the two IGNORE rules for the lines only `--verbose` makes
    /// tar print (the legacy client never passes `--verbose`; we do, for the index).
    Gnutar,
}

const SIZE_RE: &str = "^ *Total bytes written: [0-9][0-9]*";

fn builtin(table: Table) -> &'static [(&'static str, LineKind)] {
    use LineKind::*;
    match table {
        Table::Amgtar => &[
            (SIZE_RE, Size),
            ("^could not open conf file", Normal),
            ("^Elapsed time:", Normal),
            ("^Throughput", Normal),
            (": Directory is new$", Ignore),
            (": Directory has been renamed", Ignore),
            (
                ": directory is on a different filesystem; not dumped",
                Normal,
            ),
            (": socket ignored$", Normal),
            (
                ": File .* shrunk by [0-9][0-9]* bytes, padding with zeros",
                Normal,
            ),
            (": Cannot add file .*: No such file or directory$", Normal),
            (": Error exit delayed from previous errors", Normal),
            ("amgtar: error", Error),
        ],
        Table::Gnutar => &[
            (SIZE_RE, Size),
            (": Directory is new$", Ignore),
            (": Directory has been renamed", Ignore),
            ("^Elapsed time:", Normal),
            ("^Throughput", Normal),
            (": socket ignored$", Normal),
            ("^[Aa]dded interface", Normal),
            ("^session request to ", Normal),
            ("^tar: dumped [0-9][0-9]* (tar )?files", Normal),
            ("ERRDOS - ERRbadpath (Directory invalid.)", Error),
            ("^Domain=", Normal),
        ],
    }
}

/// An ordered list of (regex, kind); the first match wins, no match is [`LineKind::Strange`].
#[derive(Debug)]
pub struct Classifier {
    rules: Vec<(Regex, LineKind)>,
}

/// The admin's NORMAL / IGNORE / STRANGE regexes (amgtar properties).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserRules {
    /// NORMAL.
    pub normal: Vec<String>,
    /// IGNORE.
    pub ignore: Vec<String>,
    /// STRANGE.
    pub strange: Vec<String>,
}

impl Classifier {
    /// A built-in table, merged with the admin's rules like `build_re_table`: SIZE, user
    /// IGNORE, built-in IGNORE, user NORMAL, built-in NORMAL, user STRANGE, built-in STRANGE,
    /// built-in ERROR; a built-in rule whose text equals any user rule is dropped.
    pub fn new<'a>(table: Table, user: &'a UserRules) -> Result<Classifier, RegexError> {
        let base = builtin(table);
        let overridden = |re: &str| {
            user.normal
                .iter()
                .chain(&user.ignore)
                .chain(&user.strange)
                .any(|u| u == re)
        };
        let builtin_of = |kind: LineKind| {
            base.iter()
                .filter(move |&&(re, k)| k == kind && !overridden(re))
                .map(|&(re, k)| (re, k))
        };
        let user_of =
            |list: &'a [String], kind: LineKind| list.iter().map(move |s| (s.as_str(), kind));
        let ordered: Vec<(&str, LineKind)> = builtin_of(LineKind::Size)
            .chain(user_of(&user.ignore, LineKind::Ignore))
            .chain(builtin_of(LineKind::Ignore))
            .chain(user_of(&user.normal, LineKind::Normal))
            .chain(builtin_of(LineKind::Normal))
            .chain(user_of(&user.strange, LineKind::Strange))
            .chain(builtin_of(LineKind::Strange))
            .chain(builtin_of(LineKind::Error))
            .collect();
        let rules = ordered
            .into_iter()
            .map(|(re, k)| Regex::new(re).map(|r| (r, k)))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Classifier { rules })
    }

    /// The legacy GNUTAR table in source order (it has no user rules; the order differs from
    /// `build_re_table`'s only in where ERRDOS sits, which we keep as the source has it).
    pub fn gnutar() -> Classifier {
        let rules = builtin(Table::Gnutar)
            .iter()
            .filter_map(|&(re, k)| Regex::new(re).ok().map(|r| (r, k)))
            .collect();
        Classifier { rules }
    }

    /// How `line` (without its newline) is classified.
    pub fn classify(&self, line: &[u8]) -> LineKind {
        self.rules
            .iter()
            .find(|(re, _)| re.is_match(line))
            .map_or(LineKind::Strange, |(_, k)| *k)
    }
}

/// The size in KiB from a size line, like `(the_num(line, 1) * 1 + 1023) / 1024`: the
/// first run of digits, rounded up to whole KiB (saturating; a fraction after the digits
/// cannot change the result).
pub fn size_kib_from_line(line: &[u8]) -> Option<u64> {
    let start = line.iter().position(u8::is_ascii_digit)?;
    let mut n: u64 = 0;
    for &b in line
        .get(start..)
        .unwrap_or_default()
        .iter()
        .take_while(|b| b.is_ascii_digit())
    {
        n = n.saturating_mul(10).saturating_add(u64::from(b - b'0'));
    }
    Some(n.div_ceil(1024))
}

/// Splits a byte stream into lines like `fgets(buf, MAX_LINE + 1)`: a piece ends after a
/// newline or after [`MAX_LINE`] bytes; the newline is removed.
#[derive(Debug, Default)]
pub struct LineSplitter {
    partial: Vec<u8>,
}

impl LineSplitter {
    /// Feeds `chunk`, calling `f` with each complete piece (without its newline).
    pub fn push(&mut self, mut chunk: &[u8], mut f: impl FnMut(&[u8])) {
        while !chunk.is_empty() {
            let room = MAX_LINE - self.partial.len();
            let window = &chunk[..chunk.len().min(room)];
            match memchr::memchr(b'\n', window) {
                Some(nl) => {
                    if self.partial.is_empty() {
                        f(&window[..nl]);
                    } else {
                        self.partial.extend_from_slice(&window[..nl]);
                        f(&self.partial);
                        self.partial.clear();
                    }
                    chunk = &chunk[nl + 1..];
                }
                None if window.len() == room => {
                    // A full piece without a newline: handled as a line of its own.
                    self.partial.extend_from_slice(window);
                    f(&self.partial);
                    self.partial.clear();
                    chunk = &chunk[window.len()..];
                }
                None => {
                    self.partial.extend_from_slice(window);
                    chunk = &[];
                }
            }
        }
    }

    /// Ends the stream: a last line without a newline is still a line.
    pub fn finish(&mut self, mut f: impl FnMut(&[u8])) {
        if !self.partial.is_empty() {
            f(&self.partial);
            self.partial.clear();
        }
    }
}

/// Bytes for the MESG and INDEX streams, appended by the backup's parsers; the event loop
/// takes them out (`std::mem::take`) and writes them.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct StreamOutput {
    /// For MESG.
    pub mesg: Vec<u8>,
    /// For INDEX (always empty when the DLE has no index).
    pub index: Vec<u8>,
}

/// The prefix of the lines amandad-runtar prints when it refuses to run tar.
pub const RUNTAR_ERROR_PREFIX: &[u8] = b"amandad-runtar: error [";

/// The MESG/INDEX state machine of one backup.
#[derive(Debug)]
pub struct BackupMessages {
    classifier: Classifier,
    index: bool,
    lines: LineSplitter,
    size_kib: Option<u64>,
    errors: usize,
}

impl BackupMessages {
    /// `index`: write `block N: ./path` lines to INDEX as `/path`.
    pub fn new(classifier: Classifier, index: bool) -> BackupMessages {
        BackupMessages {
            classifier,
            index,
            lines: LineSplitter::default(),
            size_kib: None,
            errors: 0,
        }
    }

    /// Feeds bytes tar wrote to stderr.
    pub fn push(&mut self, chunk: &[u8], out: &mut StreamOutput) {
        let mut lines = std::mem::take(&mut self.lines);
        lines.push(chunk, |line| self.line(line, out));
        self.lines = lines;
    }

    /// tar's stderr is at EOF.
    pub fn finish(&mut self, out: &mut StreamOutput) {
        let mut lines = std::mem::take(&mut self.lines);
        lines.finish(|line| self.line(line, out));
        self.lines = lines;
    }

    /// The size from the last `Total bytes written` line, in KiB.
    pub fn size_kib(&self) -> Option<u64> {
        self.size_kib
    }

    /// How many `sendbackup: error` lines were written (runtar refusals).
    pub fn errors(&self) -> usize {
        self.errors
    }

    fn line(&mut self, line: &[u8], out: &mut StreamOutput) {
        if let Some(rest) = line.strip_prefix(b"block ".as_slice()) {
            // amgtar: the file name starts two bytes after the first ':'.
            if let Some(colon) = memchr::memchr(b':', rest)
                && let Some(name) = rest.get(colon + 2..)
                && let Some(path) = name.strip_prefix(b".")
                && path.first() == Some(&b'/')
                && self.index
            {
                out.index.extend_from_slice(path);
                out.index.push(b'\n');
            }
            return;
        }
        if let Some(inner) = line.strip_prefix(RUNTAR_ERROR_PREFIX) {
            let inner = inner.strip_suffix(b"]").unwrap_or(inner);
            out.mesg
                .extend_from_slice(b"sendbackup: error [amandad-runtar: ");
            out.mesg.extend_from_slice(inner);
            out.mesg.extend_from_slice(b"]\n");
            self.errors += 1;
            return;
        }
        let kind = self.classifier.classify(line);
        if kind == LineKind::Size
            && let Some(kib) = size_kib_from_line(line)
        {
            self.size_kib = Some(kib);
        }
        if let Some(c) = kind.prefix() {
            out.mesg.push(c);
            out.mesg.push(b' ');
            out.mesg.extend_from_slice(line);
            out.mesg.push(b'\n');
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn run(
        classifier: Classifier,
        index: bool,
        input: &[u8],
        chunk: usize,
    ) -> (StreamOutput, Option<u64>) {
        let mut m = BackupMessages::new(classifier, index);
        let mut out = StreamOutput::default();
        for c in input.chunks(chunk.max(1)) {
            m.push(c, &mut out);
        }
        m.finish(&mut out);
        (out, m.size_kib())
    }

    fn amgtar() -> Classifier {
        Classifier::new(Table::Amgtar, &UserRules::default()).unwrap()
    }

    const TAR_STDERR: &[u8] = b"tar: .: Directory is new\n\
tar: ./sub dir: Directory is new\n\
block 0: ./\n\
block 2: ./sub\\ dir/\n\
block 4: ./file\\ with\\ spaces.txt\n\
tar: ./sock: socket ignored\n\
tar: ./gone: Cannot stat: No such file or directory\n\
Total bytes written: 20480 (20KiB, 9.6MiB/s)\n";

    #[test]
    fn amgtar_stderr_becomes_mesg_and_index_like_the_real_client() {
        let (out, size) = run(amgtar(), true, TAR_STDERR, 4096);
        assert_eq!(
            String::from_utf8(out.mesg).unwrap(),
            "| tar: ./sock: socket ignored\n\
? tar: ./gone: Cannot stat: No such file or directory\n\
| Total bytes written: 20480 (20KiB, 9.6MiB/s)\n"
        );
        assert_eq!(
            String::from_utf8(out.index).unwrap(),
            "/\n/sub\\ dir/\n/file\\ with\\ spaces.txt\n"
        );
        assert_eq!(size, Some(20));
    }

    #[test]
    fn no_index_when_the_dle_has_none() {
        let (out, _) = run(amgtar(), false, TAR_STDERR, 7);
        assert!(out.index.is_empty());
    }

    fn assert_classified(c: &Classifier, cases: &[(&str, LineKind)]) {
        for (line, kind) in cases {
            assert_eq!(c.classify(line.as_bytes()), *kind, "{line:?}");
        }
    }

    #[test]
    fn gnutar_table_keeps_the_legacy_classification() {
        assert_classified(
            &Classifier::gnutar(),
            &[
                ("tar: ./x: Directory is new", LineKind::Ignore),
                ("Total bytes written: 10240 (10KiB)", LineKind::Size),
                (
                    "tar: ./a: File ./a shrunk by 3 bytes, padding with zeros",
                    LineKind::Strange,
                ),
                ("tar: ./s: socket ignored", LineKind::Normal),
                // The parentheses are an ERE group, as in the real client.
                ("ERRDOS - ERRbadpath Directory invalid.", LineKind::Error),
            ],
        );
    }

    #[test]
    fn user_rules_are_merged_in_build_re_table_order() {
        let user = UserRules {
            normal: vec!["Cannot stat".into()],
            ignore: vec!["^tar: \\./tmp/".into()],
            strange: vec![": socket ignored$".into()],
        };
        assert_classified(
            &Classifier::new(Table::Amgtar, &user).unwrap(),
            &[
                ("tar: ./x: Cannot stat: Permission denied", LineKind::Normal),
                ("tar: ./tmp/a: Cannot stat: x", LineKind::Ignore),
                // the built-in NORMAL rule with the same text is dropped: STRANGE wins
                ("tar: ./s: socket ignored", LineKind::Strange),
                ("amgtar: error x", LineKind::Error),
                ("whatever", LineKind::Strange),
            ],
        );
        assert!(
            Classifier::new(
                Table::Amgtar,
                &UserRules {
                    normal: vec!["(".into()],
                    ..Default::default()
                }
            )
            .is_err()
        );
    }

    #[test]
    fn size_is_rounded_up_to_kib() {
        assert_eq!(
            size_kib_from_line(b"Total bytes written: 20480 (20KiB)"),
            Some(20)
        );
        assert_eq!(
            size_kib_from_line(b"Total bytes written: 20481 (20KiB)"),
            Some(21)
        );
        assert_eq!(size_kib_from_line(b"Total bytes written: 0"), Some(0));
        assert_eq!(size_kib_from_line(b"no digits"), None);
        assert_eq!(
            size_kib_from_line(b"Total bytes written: 99999999999999999999999999"),
            Some(u64::MAX.div_ceil(1024))
        );
    }

    #[test]
    fn runtar_refusals_become_sendbackup_errors() {
        let (out, _) = run(
            amgtar(),
            true,
            b"amandad-runtar: error [option --to-command refused]\n",
            5,
        );
        assert_eq!(
            out.mesg,
            b"sendbackup: error [amandad-runtar: option --to-command refused]\n"
        );
    }

    #[test]
    fn long_lines_are_cut_like_fgets_and_memory_stays_bounded() {
        let mut input = vec![b'x'; MAX_LINE + 10];
        input.push(b'\n');
        let mut m = BackupMessages::new(amgtar(), true);
        let mut out = StreamOutput::default();
        for c in input.chunks(1000) {
            m.push(c, &mut out);
            assert!(m.lines.partial.len() <= MAX_LINE);
        }
        m.finish(&mut out);
        let text = out.mesg;
        let lines: Vec<&[u8]> = text
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].len(), MAX_LINE + 2);
        assert_eq!(lines[1].len(), 10 + 2);
    }

    #[test]
    fn a_last_line_without_newline_is_kept() {
        let (out, size) = run(amgtar(), true, b"Total bytes written: 2048", 3);
        assert_eq!(out.mesg, b"| Total bytes written: 2048\n");
        assert_eq!(size, Some(2));
    }

    #[test]
    fn malformed_block_lines_never_panic() {
        let (out, _) = run(
            amgtar(),
            true,
            b"block\nblock 1:\nblock 2: \nblock 3: x\nblock 4: ./\nblock 5:./a\n",
            2,
        );
        assert_eq!(out.index, b"/\n");
        // "block" without a space is not an index line (amgtar compares 6 bytes)
        assert_eq!(out.mesg, b"? block\n");
    }

    proptest! {
        #[test]
        fn chunking_never_changes_the_output(input in proptest::collection::vec(any::<u8>(), 0..2000), chunk in 1usize..64) {
            let whole = run(amgtar(), true, &input, input.len().max(1));
            let split = run(amgtar(), true, &input, chunk);
            prop_assert_eq!(whole, split);
        }

        #[test]
        fn splitter_preserves_every_byte_but_newlines(input in proptest::collection::vec(any::<u8>(), 0..5000), chunk in 1usize..300) {
            let mut s = LineSplitter::default();
            let mut got = Vec::new();
            for c in input.chunks(chunk) {
                s.push(c, |l| got.extend_from_slice(l));
            }
            s.finish(|l| got.extend_from_slice(l));
            let want: Vec<u8> = input.iter().copied().filter(|b| *b != b'\n').collect();
            prop_assert_eq!(got, want);
        }
    }
}
