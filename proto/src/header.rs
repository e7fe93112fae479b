//! The 32 KiB Amanda dump-file header (spec §6.7.8): what the dumper writes in front of the
//! DATA bytes on the holding disk or tape, and what `amrestore` reads.
//!
//! [`DumpHeader::build`] follows `build_header` (3.5.1 `fileheader.c`) byte for byte:
//! the `AMANDA: FILE ...` line (note the two spaces before `lev`), optional
//! `KEY=value` lines, the DLE as a heredoc (`DLE=<<ENDDLE`, or `ENDDLE1`, `ENDDLE2`, ... if
//! the text has a line equal to the delimiter), the restore instructions, form feed, and NUL
//! padding to [`HEADER_SIZE`]. [`DumpHeader::for_dump`] fills the fields the way the
//! dumper's `finish_tapeheader` does. [`DumpHeader::parse`] reads headers like
//! `parse_file_header`, except that it keeps the DLE text and the restore command exactly
//! (Amanda's own reader drops empty DLE lines and re-splits the command at `|`), so that
//! `build(parse(x)) == x` for every header the dumper writes.
//!
//! What this module must not do: write files, or accept a header that Amanda would build
//! only by aborting (its `error()` paths are [`HeaderError`]s here).

use std::fmt;

use crate::crc::CrcValue;
use crate::dle::{Compress, Dle, Encrypt};
use crate::mesg::InfoFields;
use crate::quote::{ByteString, Strtok, parse_c_i32, parse_c_int, quote_string, unquote_string};

/// The header size (`DISK_BLOCK_BYTES`).
pub const HEADER_SIZE: usize = 32768;

/// What kind of dump file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FileKind {
    /// `FILE`: a whole dump.
    File,
    /// `CONT_FILE`: a holding-disk continuation chunk.
    ContFile,
    /// `SPLIT_FILE`: part `part` of `total` (-1: unknown) of a split dump.
    SplitFile {
        /// This part.
        part: i32,
        /// The number of parts, -1 if unknown.
        total: i32,
    },
}

impl FileKind {
    fn name(self) -> &'static str {
        match self {
            FileKind::File => "FILE",
            FileKind::ContFile => "CONT_FILE",
            FileKind::SplitFile { .. } => "SPLIT_FILE",
        }
    }
}

/// A dump-file header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DumpHeader {
    /// The file kind.
    pub kind: FileKind,
    /// The run timestamp (`YYYYMMDD`, `YYYYMMDDhhmmss`, or `X`).
    pub datestamp: ByteString,
    /// The client host name.
    pub host: ByteString,
    /// The disk name (quoted on the first line when needed).
    pub disk: ByteString,
    /// The dump level.
    pub level: i32,
    /// `program <name>`: the `BACKUP` info (e.g. `/bin/tar`, `APPLICATION`).
    pub program: ByteString,
    /// What compression and encryption wrote (the same fields a `FilterChain` gives).
    pub filters: FilterFields,
    /// `CONT_FILENAME=`: the next holding-disk chunk.
    pub cont_filename: Option<ByteString>,
    /// `APPLICATION=`.
    pub application: Option<ByteString>,
    /// `PARTIAL=YES`.
    pub partial: bool,
    /// `ORIGSIZE=` (written when > 0).
    pub orig_size: Option<i64>,
    /// `NATIVE-CRC=` (written when the CRC is not 0).
    pub native_crc: Option<CrcValue>,
    /// `CLIENT-CRC=`.
    pub client_crc: Option<CrcValue>,
    /// `SERVER-CRC=`.
    pub server_crc: Option<CrcValue>,
    /// `DLE=<<ENDDLE`: the DLE XML as sent (see `dle::XmlLayout::HeaderDle`); written only
    /// when shorter than `HEADER_SIZE - 2048`.
    pub dle: Option<ByteString>,
    /// `bs=<n>k` in the restore command: the block size in bytes.
    pub blocksize: Option<u32>,
    /// The recover command (the `RECOVER_CMD` info).
    pub recover_cmd: Option<ByteString>,
}

/// The header fields that compression and encryption set (spec §11.5): what
/// `dataphase::FilterChain::header_fields` computes and [`DumpHeader::filters`] holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FilterFields {
    /// `comp <suffix>`: `None` writes `N` (not compressed).
    pub comp_suffix: Option<ByteString>,
    /// `crypt <suffix>`: present when encrypted.
    pub encrypt_suffix: Option<ByteString>,
    /// The `server_*` programs and option: filters the dumper ran.
    pub server: FilterPrograms,
    /// The `client_*` programs and option: filters the client ran.
    pub client: FilterPrograms,
    /// The decrypt command of the restore pipeline, as the dumper stores it (` prog -d |`).
    pub decrypt_cmd: Option<ByteString>,
    /// The uncompress command (` /bin/gzip -dc |` or ` <prog> -d |`).
    pub uncompress_cmd: Option<ByteString>,
}

/// One side's custom programs (Amanda's `srvcompprog`, `srv_encrypt`, `srv_decrypt_opt` and
/// their `clnt` twins, also what the MESG `info` lines name, `mesg::InfoFields`); a valid
/// header sets each field on one side at most.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FilterPrograms {
    /// `*_custom_compress <prog>`.
    pub custom_compress: Option<ByteString>,
    /// `*_encrypt <prog>`.
    pub encrypt: Option<ByteString>,
    /// `*_decrypt_option <opt>`.
    pub decrypt_option: Option<ByteString>,
}

impl FilterPrograms {
    /// The fields in [`PROGRAM_FIELDS`] order.
    fn fields(&self) -> [&Option<ByteString>; 3] {
        [&self.custom_compress, &self.encrypt, &self.decrypt_option]
    }

    fn fields_mut(&mut self) -> [&mut Option<ByteString>; 3] {
        [
            &mut self.custom_compress,
            &mut self.encrypt,
            &mut self.decrypt_option,
        ]
    }
}

impl FilterFields {
    /// The server's and the client's programs, in that order (the order of [`ProgramField`]'s
    /// pairs and of the first line).
    fn sides(&self) -> [&FilterPrograms; 2] {
        [&self.server, &self.client]
    }
}

/// How the header names one field of [`FilterPrograms`], for the server and the client.
struct ProgramField {
    /// Amanda's field names (what [`HeaderError::Invalid`] says).
    names: [&'static str; 2],
    /// The name when both sides are set.
    both: &'static str,
    /// The first-line keywords.
    keywords: [&'static str; 2],
    /// What `parse_file_header` calls a missing value.
    expected: [&'static str; 2],
}

/// The fields of [`FilterPrograms`], in the order they stand on the first line.
const PROGRAM_FIELDS: [ProgramField; 3] = [
    ProgramField {
        names: ["srvcompprog", "clntcompprog"],
        both: "srvcompprog/clntcompprog",
        keywords: ["server_custom_compress", "client_custom_compress"],
        expected: [
            "<server custom compress param>",
            "<client custom compress param>",
        ],
    },
    ProgramField {
        names: ["srv_encrypt", "clnt_encrypt"],
        both: "srv_encrypt/clnt_encrypt",
        keywords: ["server_encrypt", "client_encrypt"],
        expected: ["<server encrypt param>", "<client encrypt param>"],
    },
    ProgramField {
        names: ["srv_decrypt_opt", "clnt_decrypt_opt"],
        both: "srv_decrypt_opt/clnt_decrypt_opt",
        keywords: ["server_decrypt_option", "client_decrypt_option"],
        expected: ["<server decrypt param>", "<client decrypt param>"],
    },
];

/// A header that cannot be built or read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    /// A field Amanda refuses (its `validate_*` would abort).
    #[error("invalid header field {field}: {reason}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// Why.
        reason: &'static str,
    },
    /// The header does not fit in [`HEADER_SIZE`] bytes.
    #[error("header is {len} bytes, more than {HEADER_SIZE}")]
    TooLarge {
        /// Its length.
        len: usize,
    },
    /// Not an Amanda header (`AMANDA:`/`NETDUMP:` missing): Amanda's `F_WEIRD`.
    #[error("not an Amanda header")]
    NotAmanda,
    /// An Amanda header of a kind other than a dump file (`TAPESTART`, `NOOP`, ...).
    #[error("not a dump file header: {0}")]
    NotADumpFile(ByteString),
    /// The first line ends before an expected field.
    #[error("malformed header: expected {expected}")]
    Malformed {
        /// What was expected (Amanda's `strange_header` wording).
        expected: &'static str,
    },
}

fn invalid(field: &'static str, reason: &'static str) -> HeaderError {
    HeaderError::Invalid { field, reason }
}

/// Chooses the heredoc delimiter like `quote_heredoc`: `ENDDLE`, else `ENDDLE1`, ... so that
/// no line of `text` equals it.
fn heredoc_delimiter(text: &[u8]) -> String {
    let mut n = 0u32;
    loop {
        let delim = if n == 0 {
            "ENDDLE".to_owned()
        } else {
            format!("ENDDLE{n}")
        };
        if !text
            .split(|&b| b == b'\n')
            .any(|line| line == delim.as_bytes())
        {
            return delim;
        }
        n += 1;
    }
}

impl DumpHeader {
    /// The header of one dump file: its kind, run, host, disk and level, no program yet and
    /// every optional field absent.
    pub fn new(
        kind: FileKind,
        datestamp: impl Into<ByteString>,
        host: impl Into<ByteString>,
        disk: impl Into<ByteString>,
        level: i32,
    ) -> DumpHeader {
        DumpHeader {
            kind,
            datestamp: datestamp.into(),
            host: host.into(),
            disk: disk.into(),
            level,
            program: ByteString::new(),
            filters: FilterFields::default(),
            cont_filename: None,
            application: None,
            partial: false,
            orig_size: None,
            native_crc: None,
            client_crc: None,
            server_crc: None,
            dle: None,
            blocksize: None,
            recover_cmd: None,
        }
    }

    /// The header the dumper writes (`finish_tapeheader`) for a dump of `dle` at `level`,
    /// given the MESG `info` fields, the client host name, the run timestamp and the DLE
    /// XML to embed. Server-side compression or encryption in `dle` add the matching
    /// restore commands (`/bin/gzip -dc` and suffix `.gz` for SERVER-FAST/BEST, as Debian
    /// builds it).
    pub fn for_dump(
        timestamp: &[u8],
        host: &[u8],
        dle: &Dle,
        level: i32,
        info: &InfoFields,
        dle_xml: Option<&[u8]>,
    ) -> DumpHeader {
        let disk = dle.disk.clone().unwrap_or_default();
        let mut f = FilterFields {
            comp_suffix: info.compress_suffix.clone().filter(|s| !s.is_empty()),
            server: info.server.clone(),
            client: info.client.clone(),
            ..FilterFields::default()
        };
        let pipe = |prog: &[u8], opt: &[u8]| {
            ByteString::from([b" ".as_slice(), prog, b" ", opt, b" |"].concat())
        };
        match &dle.compress {
            Compress::ServerCustom(p) => {
                f.uncompress_cmd = Some(pipe(p, b"-d"));
                f.comp_suffix = Some("cust".into());
                f.server.custom_compress = Some(p.clone());
            }
            Compress::Custom(p) => {
                f.uncompress_cmd = Some(pipe(p, b"-d"));
                f.comp_suffix = Some("cust".into());
                f.client.custom_compress = Some(p.clone());
            }
            Compress::ServerFast | Compress::ServerBest => {
                f.uncompress_cmd = Some(" /bin/gzip -dc |".into());
                f.comp_suffix = Some(".gz".into());
            }
            Compress::None | Compress::Fast | Compress::Best => {}
        }
        match &dle.encrypt {
            Encrypt::ServerCustom {
                program,
                decrypt_option,
            } => {
                f.decrypt_cmd = Some(match decrypt_option {
                    Some(o) => pipe(program, o),
                    None => [b" ".as_slice(), program, b" |"].concat().into(),
                });
                f.server.decrypt_option = decrypt_option.clone();
                f.encrypt_suffix = Some("enc".into());
                f.server.encrypt = Some(program.clone());
            }
            Encrypt::Custom {
                program,
                decrypt_option,
            } => {
                // 3.5.1 overwrites its own choice and prints "(null)" without an option.
                f.decrypt_cmd = Some(pipe(
                    program,
                    decrypt_option.as_deref().unwrap_or(b"(null)"),
                ));
                if decrypt_option.is_some() {
                    f.client.decrypt_option = decrypt_option.clone();
                }
                f.encrypt_suffix = Some("enc".into());
                f.client.encrypt = Some(program.clone());
            }
            Encrypt::None => {}
        }
        DumpHeader {
            program: info.backup.clone().unwrap_or_default(),
            filters: f,
            application: info.application.clone(),
            dle: dle_xml.map(ByteString::from),
            blocksize: Some(HEADER_SIZE as u32),
            recover_cmd: info.recover_cmd.clone(),
            ..DumpHeader::new(FileKind::File, timestamp, host, disk, level)
        }
    }

    /// The text of the header, without padding, as `build_header` makes it.
    pub fn build_text(&self) -> Result<Vec<u8>, HeaderError> {
        let non_empty = |v: &Option<ByteString>| v.as_ref().is_some_and(|s| !s.is_empty());
        if self.host.is_empty() {
            return Err(invalid("host", "must not be empty"));
        }
        if self.program.is_empty() {
            return Err(invalid(
                "program",
                "must not be empty (the BACKUP info is mandatory)",
            ));
        }
        // Tokens of the first line must not contain what would split or re-join it (Amanda
        // does not check; a `"` in the program name makes its reader run past the line).
        let token_ok = |v: &[u8]| {
            !v.iter()
                .any(|&b| matches!(b, b' ' | b'\n' | b'"' | b'\\' | 0))
        };
        let f = &self.filters;
        // Each program field of each side, in first-line order, with its name.
        let programs = || {
            PROGRAM_FIELDS
                .iter()
                .enumerate()
                .flat_map(move |(i, field)| {
                    (0..2).map(move |side| (f.sides()[side].fields()[i], field.names[side]))
                })
        };
        let tokens = [
            (Some(&self.host), "host"),
            (Some(&self.program), "program"),
            (f.comp_suffix.as_ref(), "comp_suffix"),
            (f.encrypt_suffix.as_ref(), "encrypt_suffix"),
        ];
        // This also refuses the spaces Amanda's `validate_*` refuse in the programs.
        for (v, name) in tokens
            .into_iter()
            .chain(programs().map(|(v, name)| (v.as_ref(), name)))
        {
            if v.is_some_and(|v| !token_ok(v)) {
                return Err(invalid(
                    name,
                    "cannot contain spaces, newlines, quotes or backslashes",
                ));
            }
        }
        for (v, name) in [
            (&self.cont_filename, "cont_filename"),
            (&self.application, "application"),
            (&f.decrypt_cmd, "decrypt_cmd"),
            (&f.uncompress_cmd, "uncompress_cmd"),
            (&self.recover_cmd, "recover_cmd"),
        ] {
            if v.as_ref()
                .is_some_and(|v| v.contains(&b'\n') || v.contains(&0))
            {
                return Err(invalid(name, "cannot contain newlines"));
            }
        }
        let d = self.datestamp.as_bytes();
        if !(d == b"X" || ((d.len() == 8 || d.len() == 14) && d.iter().all(u8::is_ascii_digit))) {
            return Err(invalid("datestamp", "must be 8 or 14 digits, or X"));
        }
        if let Some(s) = &f.encrypt_suffix
            && (s.is_empty() || s == "N")
        {
            return Err(invalid(
                "encrypt_suffix",
                "must not be empty or N when encrypted",
            ));
        }
        for (i, field) in PROGRAM_FIELDS.iter().enumerate() {
            if non_empty(f.server.fields()[i]) && non_empty(f.client.fields()[i]) {
                return Err(invalid(field.both, "cannot set both"));
            }
        }
        for (v, name) in [
            (&f.decrypt_cmd, "decrypt_cmd"),
            (&f.uncompress_cmd, "uncompress_cmd"),
        ] {
            if v.as_ref()
                .is_some_and(|s| !s.is_empty() && s.last() != Some(&b'|'))
            {
                return Err(invalid(name, "must end with '|'"));
            }
        }
        if !non_empty(&self.recover_cmd)
            && (non_empty(&f.decrypt_cmd) || non_empty(&f.uncompress_cmd))
        {
            return Err(invalid(
                "recover_cmd",
                "needed with uncompress_cmd or decrypt_cmd",
            ));
        }

        let mut out = Vec::with_capacity(1024);
        let split = match self.kind {
            FileKind::SplitFile { part, total } => format!(" part {part}/{total} "),
            _ => String::new(),
        };
        out.extend_from_slice(format!("AMANDA: {} ", self.kind.name()).as_bytes());
        out.extend_from_slice(&self.datestamp);
        out.push(b' ');
        out.extend_from_slice(&self.host);
        out.push(b' ');
        out.extend_from_slice(&quote_string(&self.disk));
        out.push(b' ');
        out.extend_from_slice(split.as_bytes());
        out.extend_from_slice(format!(" lev {} comp ", self.level).as_bytes());
        match f.comp_suffix.as_ref().filter(|s| !s.is_empty()) {
            Some(s) => out.extend_from_slice(s),
            None => out.push(b'N'),
        }
        out.extend_from_slice(b" program ");
        let program: &[u8] = &self.program;
        let program =
            if program.len() >= 4 && program[program.len() - 4..].eq_ignore_ascii_case(b".exe") {
                &program[..program.len() - 4]
            } else {
                program
            };
        out.extend_from_slice(program);
        if let Some(s) = &f.encrypt_suffix {
            out.extend_from_slice(b" crypt ");
            out.extend_from_slice(s);
        }
        // Per field the server's value, else the client's (validated: not both).
        for (i, field) in PROGRAM_FIELDS.iter().enumerate() {
            let set = (0..2).find_map(|side| {
                f.sides()[side].fields()[i]
                    .as_ref()
                    .filter(|v| !v.is_empty())
                    .map(|v| (field.keywords[side], v))
            });
            if let Some((keyword, v)) = set {
                out.push(b' ');
                out.extend_from_slice(keyword.as_bytes());
                out.push(b' ');
                out.extend_from_slice(v);
            }
        }
        out.push(b'\n');
        let mut kv = |key: &str, v: &[u8]| {
            out.extend_from_slice(key.as_bytes());
            out.extend_from_slice(v);
            out.push(b'\n');
        };
        if let Some(v) = self.cont_filename.as_ref().filter(|v| !v.is_empty()) {
            kv("CONT_FILENAME=", v);
        }
        if let Some(v) = self.application.as_ref().filter(|v| !v.is_empty()) {
            kv("APPLICATION=", v);
        }
        if self.partial {
            kv("PARTIAL=", b"YES");
        }
        if let Some(n) = self.orig_size.filter(|&n| n > 0) {
            kv("ORIGSIZE=", n.to_string().as_bytes());
        }
        for (key, crc) in [
            ("NATIVE-CRC=", &self.native_crc),
            ("CLIENT-CRC=", &self.client_crc),
            ("SERVER-CRC=", &self.server_crc),
        ] {
            if let Some(c) = crc.filter(|c| c.crc > 0) {
                kv(key, c.to_string().as_bytes());
            }
        }
        if let Some(dle) = self
            .dle
            .as_ref()
            .filter(|d| d.len() < HEADER_SIZE - 2048 && !d.contains(&0))
        {
            let delim = heredoc_delimiter(dle);
            let delim = delim.as_bytes();
            for part in [
                b"DLE=<<".as_slice(),
                delim,
                b"\n",
                dle.as_bytes(),
                b"\n",
                delim,
                b"\n",
            ] {
                out.extend_from_slice(part);
            }
        }
        out.extend_from_slice(
            b"To restore, position tape at start of file and run:\n\tdd if=<tape> ",
        );
        if let Some(bs) = self.blocksize.filter(|&b| b > 0) {
            out.extend_from_slice(format!("bs={}k ", bs / 1024).as_bytes());
        }
        out.extend_from_slice(b"skip=1 | ");
        if let Some(recover) = self.recover_cmd.as_ref().filter(|r| !r.is_empty()) {
            for cmd in [&f.decrypt_cmd, &f.uncompress_cmd].into_iter().flatten() {
                if !cmd.is_empty() {
                    out.extend_from_slice(cmd);
                    out.push(b' ');
                }
            }
            out.extend_from_slice(recover);
            out.push(b' ');
        }
        out.extend_from_slice(b"\n\x0c\n");
        if out.len() > HEADER_SIZE {
            return Err(HeaderError::TooLarge { len: out.len() });
        }
        Ok(out)
    }

    /// The 32768-byte header block: [`DumpHeader::build_text`] padded with NULs.
    pub fn build(&self) -> Result<Vec<u8>, HeaderError> {
        let mut out = self.build_text()?;
        out.resize(HEADER_SIZE, 0);
        Ok(out)
    }

    /// Reads a header block (or its text). See the module docs for where this is more
    /// precise than `parse_file_header`.
    pub fn parse(block: &[u8]) -> Result<DumpHeader, HeaderError> {
        let text = crate::quote::until_nul(block);
        // The first line ends at a newline outside double quotes; a backslash protects the
        // next byte. (Amanda's reader only honours `\"`, so it mis-splits a quoted disk name
        // that ends in a backslash; `quote_string` output is read correctly here.)
        let mut in_quotes = false;
        let mut i = 0;
        while let Some(&b) = text.get(i) {
            if b == b'\n' && !in_quotes {
                break;
            }
            if b == b'"' {
                in_quotes = !in_quotes;
            } else if b == b'\\' {
                i += 1;
            }
            i += 1;
        }
        let i = i.min(text.len());
        let first = text.get(..i).unwrap_or(text);
        let rest = text.get(i + 1..).unwrap_or_default();
        let malformed = |expected| HeaderError::Malformed { expected };
        let mut t = Strtok::new(first);
        match t.next_token(b" ") {
            Some(b"AMANDA:" | b"NETDUMP:") => {}
            _ => return Err(HeaderError::NotAmanda),
        }
        let kind_name = t.next_token(b" ").ok_or(malformed("<file type>"))?;
        let mut kind = match kind_name {
            b"FILE" => FileKind::File,
            b"CONT_FILE" => FileKind::ContFile,
            b"SPLIT_FILE" => FileKind::SplitFile { part: 0, total: 0 },
            other => return Err(HeaderError::NotADumpFile(other.into())),
        };
        let datestamp = t.next_token(b" ").ok_or(malformed("<date stamp>"))?;
        let host = t.next_token(b" ").ok_or(malformed("<file name>"))?;
        // The disk is one quoted field. (Amanda's `strquotedstr` re-joins space-split tokens
        // and so collapses runs of spaces inside the quotes; we read it exactly.)
        let after_host = t.remainder();
        let start = after_host
            .iter()
            .position(|&b| b != b' ')
            .ok_or(malformed("<disk name>"))?;
        let disk_len = crate::quote::quoted_field_len(&after_host[start..]);
        let disk = after_host[start..start + disk_len].to_vec();
        let mut t = Strtok::new(&after_host[start + disk_len..]);
        if let FileKind::SplitFile { .. } = kind {
            if t.next_token(b" ") != Some(b"part".as_slice()) {
                return Err(malformed("part"));
            }
            let part = t
                .next_token(b"/")
                .and_then(parse_c_i32)
                .ok_or(malformed("<part num param>"))?;
            let total = t
                .next_token(b" ")
                .and_then(parse_c_i32)
                .ok_or(malformed("<total parts param>"))?;
            kind = FileKind::SplitFile { part, total };
        }
        if t.next_token(b" ") != Some(b"lev".as_slice()) {
            return Err(malformed("lev"));
        }
        let level = t
            .next_token(b" ")
            .and_then(parse_c_i32)
            .ok_or(malformed("<dump level param>"))?;
        if t.next_token(b" ") != Some(b"comp".as_slice()) {
            return Err(malformed("comp"));
        }
        let comp = t.next_token(b" ").ok_or(malformed("<comp param>"))?;
        let comp_suffix = match comp {
            b"N" => None,
            b"C" => Some(".Z".into()), // pre-2.2 Amanda
            other => Some(other.into()),
        };
        let mut h = DumpHeader::new(kind, datestamp, host, unquote_string(&disk), level);
        h.filters.comp_suffix = comp_suffix;
        if t.next_token(b" ") == Some(b"program".as_slice()) {
            h.program = t
                .next_token(b" ")
                .ok_or(malformed("<program name>"))?
                .into();
            let mut tok = t.next_token(b" ");
            h.filters.encrypt_suffix = opt_field(&mut tok, b"crypt", &mut t, "<crypt param>")?
                .filter(|s| !s.starts_with(b"N"));
            for (i, field) in PROGRAM_FIELDS.iter().enumerate() {
                for (side, programs) in [&mut h.filters.server, &mut h.filters.client]
                    .into_iter()
                    .enumerate()
                {
                    *programs.fields_mut()[i] = opt_field(
                        &mut tok,
                        field.keywords[side].as_bytes(),
                        &mut t,
                        field.expected[side],
                    )?;
                }
            }
        }
        h.parse_lines(rest);
        Ok(h)
    }

    /// The `KEY=value` lines, the DLE heredoc and the restore line.
    fn parse_lines(&mut self, mut rest: &[u8]) {
        while !rest.is_empty() {
            let (line, next) = match memchr::memchr(b'\n', rest) {
                Some(n) => (&rest[..n], &rest[n + 1..]),
                None => (rest, &[][..]),
            };
            rest = next;
            if let Some(v) = line.strip_prefix(b"CONT_FILENAME=") {
                self.cont_filename = Some(v.into());
            } else if let Some(v) = line.strip_prefix(b"PARTIAL=") {
                self.partial = v.eq_ignore_ascii_case(b"yes");
            } else if let Some(v) = line.strip_prefix(b"APPLICATION=") {
                self.application = Some(v.into());
            } else if let Some(v) = line.strip_prefix(b"ORIGSIZE=") {
                self.orig_size = parse_c_int(v);
            } else if let Some(v) = line.strip_prefix(b"NATIVE-CRC=") {
                self.native_crc = CrcValue::parse(v).ok();
            } else if let Some(v) = line.strip_prefix(b"CLIENT-CRC=") {
                self.client_crc = CrcValue::parse(v).ok();
            } else if let Some(v) = line.strip_prefix(b"SERVER-CRC=") {
                self.server_crc = CrcValue::parse(v).ok();
            } else if let Some(v) = line.strip_prefix(b"DLE=") {
                match v.strip_prefix(b"<<") {
                    None => self.dle = Some(v.into()),
                    Some(delim) => {
                        // The body runs to the first line equal to the delimiter.
                        let mut body_end = None;
                        let mut pos = 0;
                        while pos <= rest.len() {
                            let end =
                                memchr::memchr(b'\n', &rest[pos..]).map_or(rest.len(), |n| pos + n);
                            if &rest[pos..end] == delim {
                                body_end = Some((pos, end));
                                break;
                            }
                            pos = end + 1;
                        }
                        match body_end {
                            Some((start, end)) => {
                                self.dle = Some(rest[..start.saturating_sub(1)].into());
                                rest = rest.get(end + 1..).unwrap_or_default();
                            }
                            None => {
                                self.dle = Some(rest.strip_suffix(b"\n").unwrap_or(rest).into());
                                rest = &[];
                            }
                        }
                    }
                }
            } else if let Some(v) = line.strip_prefix(b"\tdd if=<tape> ") {
                let mut v = v;
                if let Some(bs) = v.strip_prefix(b"bs=") {
                    let n = bs.iter().take_while(|b| b.is_ascii_digit()).count();
                    if bs.get(n..n + 2) == Some(b"k ") {
                        self.blocksize = parse_c_int(&bs[..n])
                            .and_then(|k| u32::try_from(k.saturating_mul(1024)).ok());
                        v = &bs[n + 2..];
                    }
                }
                let cmd = v.strip_prefix(b"skip=1 | ").unwrap_or(v);
                let cmd = cmd.strip_suffix(b" ").unwrap_or(cmd);
                self.recover_cmd = (!cmd.is_empty()).then(|| cmd.into());
            }
        }
    }
}

/// An optional `<keyword> <value>` pair of the first line: if the current token starts
/// with `kw`, the next token is its value and the token after becomes current.
fn opt_field<'a>(
    tok: &mut Option<&'a [u8]>,
    kw: &[u8],
    t: &mut Strtok<'a>,
    expected: &'static str,
) -> Result<Option<ByteString>, HeaderError> {
    if !tok.is_some_and(|k| k.starts_with(kw)) {
        return Ok(None);
    }
    let v = t
        .next_token(b" ")
        .ok_or(HeaderError::Malformed { expected })?;
    *tok = t.next_token(b" ");
    Ok(Some(v.into()))
}

impl fmt::Display for DumpHeader {
    /// Like `amrestore`'s summary: `FILE: date <d> host <h> disk <q> lev <n> comp <s> program <p>`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: date {} host {} disk {} lev {} comp {} program {}",
            self.kind.name(),
            self.datestamp,
            self.host,
            ByteString::from(quote_string(&self.disk)),
            self.level,
            self.filters
                .comp_suffix
                .as_ref()
                .map_or_else(|| "N".to_owned(), ToString::to_string),
            self.program
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> DumpHeader {
        let mut h = DumpHeader {
            program: "/bin/tar".into(),
            dle: Some("<dle>\n  <program>GNUTAR</program>\n</dle>\n".into()),
            blocksize: Some(32768),
            recover_cmd: Some("/bin/gzip -dc |/bin/tar -xpGf - ...".into()),
            ..DumpHeader::new(
                FileKind::File,
                "20240101020304",
                "client.example.com",
                "/home",
                0,
            )
        };
        h.filters.comp_suffix = Some(".gz".into());
        h
    }

    #[test]
    fn layout_of_a_gnutar_header() {
        let text = String::from_utf8(sample().build_text().unwrap()).unwrap();
        assert_eq!(
            text,
            "AMANDA: FILE 20240101020304 client.example.com /home  lev 0 comp .gz program /bin/tar\n\
             DLE=<<ENDDLE\n<dle>\n  <program>GNUTAR</program>\n</dle>\n\nENDDLE\n\
             To restore, position tape at start of file and run:\n\
             \tdd if=<tape> bs=32k skip=1 | /bin/gzip -dc |/bin/tar -xpGf - ... \n\x0c\n"
        );
        let block = sample().build().unwrap();
        assert_eq!(block.len(), HEADER_SIZE);
        assert_eq!(DumpHeader::parse(&block).unwrap(), sample());
    }

    #[test]
    fn heredoc_delimiter_avoids_lines_of_the_text() {
        let mut h = sample();
        h.dle = Some("a\nENDDLE\nENDDLE1\nb".into());
        let text = h.build_text().unwrap();
        assert!(
            memchr::memmem::find(&text, b"DLE=<<ENDDLE2\na\nENDDLE\nENDDLE1\nb\nENDDLE2\n")
                .is_some()
        );
        assert_eq!(DumpHeader::parse(&text).unwrap().dle, h.dle);
    }

    #[test]
    fn server_compression_and_encryption_fields() {
        let dle = Dle {
            disk: Some("/x y".into()),
            compress: Compress::ServerFast,
            encrypt: Encrypt::ServerCustom {
                program: "/usr/sbin/amcrypt".into(),
                decrypt_option: Some("-d".into()),
            },
            ..Dle::default()
        };
        let info = InfoFields {
            backup: Some("/bin/tar".into()),
            recover_cmd: Some("/bin/tar -xpGf - ...".into()),
            ..Default::default()
        };
        let h = DumpHeader::for_dump(b"20240101020304", b"h", &dle, 1, &info, None);
        let text = String::from_utf8(h.build_text().unwrap()).unwrap();
        assert!(text.starts_with("AMANDA: FILE 20240101020304 h \"/x y\"  lev 1 comp .gz program /bin/tar crypt enc server_encrypt /usr/sbin/amcrypt server_decrypt_option -d\n"), "{text}");
        assert!(text.contains("\tdd if=<tape> bs=32k skip=1 |  /usr/sbin/amcrypt -d |  /bin/gzip -dc | /bin/tar -xpGf - ... \n"), "{text}");
        let back = DumpHeader::parse(text.as_bytes()).unwrap();
        assert_eq!(back.disk, "/x y");
        assert_eq!(back.filters.server.encrypt.unwrap(), "/usr/sbin/amcrypt");
    }

    /// Found by the round-trip property: Amanda's own reader collapses the two spaces.
    #[test]
    fn disk_names_with_runs_of_spaces_survive() {
        let mut h = sample();
        h.disk = "/a  b   ".into();
        assert_eq!(
            DumpHeader::parse(&h.build().unwrap()).unwrap().disk,
            "/a  b   "
        );
    }

    /// Fuzz finding (header, crash-703e60bb): a `"` in the program name made the rebuilt
    /// first line unbalanced, so reading it back ran past the newline.
    #[test]
    fn first_line_tokens_that_would_break_the_line_are_refused() {
        let mut h = sample();
        h.program = "APaw=\"x".into();
        assert!(matches!(
            h.build(),
            Err(HeaderError::Invalid {
                field: "program",
                ..
            })
        ));
        let mut h = sample();
        h.application = Some("a\nDLE=x".into());
        assert!(matches!(
            h.build(),
            Err(HeaderError::Invalid {
                field: "application",
                ..
            })
        ));
        let d = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../fuzz/corpus/header/regress-quote-in-program"
        ))
        .unwrap();
        crate::fuzz::bodies::header(&d);
    }

    #[test]
    fn validation_errors() {
        let mut h = sample();
        h.program = ByteString::new();
        assert!(matches!(
            h.build(),
            Err(HeaderError::Invalid {
                field: "program",
                ..
            })
        ));
        let mut h = sample();
        h.datestamp = "2024".into();
        assert!(matches!(
            h.build(),
            Err(HeaderError::Invalid {
                field: "datestamp",
                ..
            })
        ));
        let mut h = sample();
        h.recover_cmd = Some("x".repeat(HEADER_SIZE).into());
        assert!(matches!(h.build(), Err(HeaderError::TooLarge { .. })));
        assert_eq!(DumpHeader::parse(b"hello"), Err(HeaderError::NotAmanda));
        assert_eq!(
            DumpHeader::parse(b"AMANDA: TAPESTART DATE x TAPE y"),
            Err(HeaderError::NotADumpFile("TAPESTART".into()))
        );
        assert_eq!(
            DumpHeader::parse(b"AMANDA: FILE 1 h /d  lev x"),
            Err(HeaderError::Malformed {
                expected: "<dump level param>"
            })
        );
    }

    proptest! {
        #[test]
        fn build_parse_round_trip(
            disk in proptest::collection::vec(1u8..=255, 1..40),
            level in 0i32..10,
            comp in proptest::option::of("[.a-z]{1,4}"),
            app in proptest::option::of("[a-z]{1,8}"),
            dle in proptest::option::of(proptest::collection::vec(1u8..=255, 0..200)),
            crc in proptest::option::of((1u32.., 0i64..1 << 40)),
            orig in proptest::option::of(1i64..1 << 40),
            split in proptest::option::of((1i32..100, -1i32..100)),
        ) {
            let mut h = sample();
            h.disk = disk.into();
            h.level = level;
            h.filters.comp_suffix = comp.filter(|c| c != "N" && c != "C").map(ByteString::from);
            h.application = app.map(ByteString::from);
            h.dle = dle.map(ByteString::from);
            h.native_crc = crc.map(|(crc, size)| CrcValue { crc, size });
            h.orig_size = orig;
            if let Some((part, total)) = split { h.kind = FileKind::SplitFile { part, total }; }
            let block = h.build().unwrap();
            prop_assert_eq!(DumpHeader::parse(&block).unwrap(), h);
        }

        #[test]
        fn parse_never_panics(s in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = DumpHeader::parse(&s);
            let mut a = b"AMANDA: FILE 20240101 h ".to_vec();
            a.extend_from_slice(&s);
            let _ = DumpHeader::parse(&a);
        }
    }
}
