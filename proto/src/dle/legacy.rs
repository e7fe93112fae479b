//! The legacy one-line DLE forms, for clients without `fe_req_xml` (spec §6.2, §6.5, §6.6,
//! §6.7.1), and the option string they carry.
//!
//! Encoders write what the 3.5.1 server writes (`optionstr`, amcheck's `start_host`,
//! planner's `client_lvl_estimate_as_text`, dumper's `startup_dump`). Parsers read like the
//! 3.5.1 client services (`parse_options`, and the line parsers of `selfcheck.c`,
//! `sendsize.c`, `sendbackup.c`), including their quirks, and report errors with the detail
//! texts those services print as `FORMAT ERROR IN REQUEST PACKET '<detail>'`.
//!
//! One deliberate difference: the real dumper writes the sendbackup device unquoted; we
//! quote it (identical for ordinary names; for a device with a space, what 3.5.1 sends is
//! misread by its own client, what we send is read correctly).
//!
//! What this module must not do: accept a line the real client refuses.

use std::fmt;

use super::{Compress, Dle, Encrypt, Estimate, FileList, Level};
use crate::features::{Feature, Features};
use crate::quote::{
    ByteString, Strtok, is_space, parse_c_i32, quote_string, quote_string_always, quoted_field_len,
    unquote_string, until_nul,
};

/// `quote_string`, but also quoting names with `#`: the services read their input with
/// `agets`, which drops everything after an unquoted `#`.
fn legacy_quote(name: &[u8]) -> Vec<u8> {
    if name.contains(&b'#') {
        quote_string_always(name)
    } else {
        quote_string(name)
    }
}

/// A problem `parse_options` reports (as `ERROR [<text>]`, only in selfcheck).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OptionStringDiagnostic {
    /// A repeated option; the text names it (`auth option "x"`, `compress option`, ...).
    Multiple(String),
    /// An unknown token, quoted as the client prints it.
    Unknown(ByteString),
}

impl OptionStringDiagnostic {
    /// The line selfcheck prints: `ERROR [<text>]\n`.
    pub fn error_line(&self) -> Vec<u8> {
        let text = match self {
            OptionStringDiagnostic::Multiple(what) => [&b"multiple "[..], what.as_bytes()].concat(),
            OptionStringDiagnostic::Unknown(tok) => {
                [&b"unknown option: "[..], &quote_string(tok)].concat()
            }
        };
        crate::options::error_line(&text)
    }
}

impl fmt::Display for OptionStringDiagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OptionStringDiagnostic::Multiple(what) => write!(f, "multiple {what}"),
            OptionStringDiagnostic::Unknown(tok) => write!(f, "unknown option: {}", tok.quoted()),
        }
    }
}

/// Applies an option string (`;auth=bsd;compress-fast;index;`) to `dle` like the client's
/// `parse_options`. `server` is the server's feature set (it gates `auth=` and `bsd-auth`).
/// Tokens are separated by `;`; matching is by prefix, in the client's order; a lone `|`
/// is ignored; everything else is reported.
pub fn parse_option_string(
    s: &[u8],
    dle: &mut Dle,
    server: &Features,
) -> Vec<OptionStringDiagnostic> {
    let mut diags = Vec::new();
    // The client keeps each side's program and decrypt option apart; the last `encrypt-*`
    // token picks the side. Start from what the DLE already says.
    let (mut clnt_encrypt, mut clnt_decrypt, mut srv_encrypt, mut srv_decrypt) =
        (None, None, None, None);
    match &dle.encrypt {
        Encrypt::None => {}
        Encrypt::Custom {
            program,
            decrypt_option,
        } => {
            (clnt_encrypt, clnt_decrypt) = (Some(program.clone()), decrypt_option.clone());
        }
        Encrypt::ServerCustom {
            program,
            decrypt_option,
        } => {
            (srv_encrypt, srv_decrypt) = (Some(program.clone()), decrypt_option.clone());
        }
    }
    let mut encrypt_kind = match dle.encrypt {
        Encrypt::None => 0,
        Encrypt::Custom { .. } => 1,
        Encrypt::ServerCustom { .. } => 2,
    };
    let mut t = Strtok::new(s);
    while let Some(tok) = t.next_token(b";") {
        if server.has(Feature::OPTIONS_AUTH) && tok.starts_with(b"auth=") {
            if dle.auth.is_some() {
                let q = quote_string(&tok[5..]);
                diags.push(OptionStringDiagnostic::Multiple(format!(
                    "auth option {}",
                    String::from_utf8_lossy(&q)
                )));
            }
            dle.auth = Some(tok[5..].into());
        } else if server.has(Feature::OPTIONS_BSD_AUTH) && tok.starts_with(b"bsd-auth") {
            if dle.auth.is_some() {
                diags.push(OptionStringDiagnostic::Multiple("auth option".into()));
            }
            dle.auth = Some("bsd".into());
        } else if let Some(compress) = compress_option(tok) {
            if dle.compress != Compress::None {
                diags.push(OptionStringDiagnostic::Multiple("compress option".into()));
            }
            dle.compress = compress;
        } else if let Some(p) = tok.strip_prefix(b"encrypt-serv-cust=") {
            if encrypt_kind != 0 {
                diags.push(OptionStringDiagnostic::Multiple("encrypt option".into()));
            }
            srv_encrypt = Some(p.into());
            encrypt_kind = 2;
        } else if let Some(p) = tok.strip_prefix(b"encrypt-cust=") {
            if encrypt_kind != 0 {
                diags.push(OptionStringDiagnostic::Multiple("encrypt option".into()));
            }
            clnt_encrypt = Some(p.into());
            encrypt_kind = 1;
        } else if let Some(p) = tok.strip_prefix(b"server-decrypt-option=") {
            srv_decrypt = Some(p.into());
        } else if let Some(p) = tok.strip_prefix(b"client-decrypt-option=") {
            clnt_decrypt = Some(p.into());
        } else if tok.starts_with(b"no-record") {
            if !dle.record {
                diags.push(OptionStringDiagnostic::Multiple("no-record option".into()));
            }
            dle.record = false;
        } else if tok.starts_with(b"index") {
            if dle.index {
                diags.push(OptionStringDiagnostic::Multiple("index option".into()));
            }
            dle.index = true;
        } else if tok.starts_with(b"exclude-optional") {
            set_optional(&mut dle.exclude, "exclude-optional option", &mut diags);
        } else if tok == b"include-optional" {
            set_optional(&mut dle.include, "include-optional option", &mut diags);
        } else if let Some((names, v)) = file_list_entry(dle, tok) {
            names.push(unquote_string(v).into());
        } else if tok.starts_with(b"kencrypt") {
            dle.kencrypt = true;
        } else if tok != b"|" {
            diags.push(OptionStringDiagnostic::Unknown(tok.into()));
        }
    }
    dle.encrypt = match encrypt_kind {
        1 => Encrypt::Custom {
            program: clnt_encrypt.unwrap_or_default(),
            decrypt_option: clnt_decrypt,
        },
        2 => Encrypt::ServerCustom {
            program: srv_encrypt.unwrap_or_default(),
            decrypt_option: srv_decrypt,
        },
        _ => Encrypt::None,
    };
    diags
}

/// A compression token of the option string (matched by prefix, in the client's order).
fn compress_option(tok: &[u8]) -> Option<Compress> {
    Some(if tok.starts_with(b"compress-fast") {
        Compress::Fast
    } else if tok.starts_with(b"compress-best") {
        Compress::Best
    } else if tok.starts_with(b"srvcomp-fast") {
        Compress::ServerFast
    } else if tok.starts_with(b"srvcomp-best") {
        Compress::ServerBest
    } else if let Some(p) = tok.strip_prefix(b"srvcomp-cust=") {
        Compress::ServerCustom(p.into())
    } else {
        Compress::Custom(tok.strip_prefix(b"comp-cust=")?.into())
    })
}

/// The exclude or include list, created empty by its first option.
fn file_list(list: &mut Option<FileList>) -> &mut FileList {
    list.get_or_insert_with(FileList::default)
}

/// `exclude-file=`, `exclude-list=`, `include-file=` or `include-list=` at the start of `tok`:
/// the names the value goes to, and the value (still quoted).
fn file_list_entry<'d, 't>(
    dle: &'d mut Dle,
    tok: &'t [u8],
) -> Option<(&'d mut Vec<ByteString>, &'t [u8])> {
    let (list, rest) = match tok.strip_prefix(b"exclude-") {
        Some(rest) => (&mut dle.exclude, rest),
        None => (&mut dle.include, tok.strip_prefix(b"include-")?),
    };
    if let Some(v) = rest.strip_prefix(b"file=") {
        Some((&mut file_list(list).files, v))
    } else {
        let v = rest.strip_prefix(b"list=")?;
        Some((&mut file_list(list).lists, v))
    }
}

/// `exclude-optional` / `include-optional`; `what` names the option when it is repeated.
fn set_optional(list: &mut Option<FileList>, what: &str, diags: &mut Vec<OptionStringDiagnostic>) {
    let list = file_list(list);
    if list.optional {
        diags.push(OptionStringDiagnostic::Multiple(what.into()));
    }
    list.optional = true;
}

/// The option string as the server's `optionstr` writes it for a client with `client`
/// features: `;` + fields + `;`, e.g. `;auth=bsdtcp;compress-fast;index;`.
pub fn option_string(dle: &Dle, client: &Features) -> Vec<u8> {
    let mut fields: Vec<Vec<u8>> = vec![Vec::new()];
    let auth = dle.auth.as_deref().unwrap_or(b"bsdtcp");
    if client.has(Feature::OPTIONS_AUTH) {
        fields.push([b"auth=".as_slice(), auth].concat());
    } else if auth.eq_ignore_ascii_case(b"bsd") && client.has(Feature::OPTIONS_BSD_AUTH) {
        fields.push(b"bsd-auth".to_vec());
    }
    match &dle.compress {
        Compress::None => {}
        Compress::Fast => fields.push(b"compress-fast".to_vec()),
        Compress::Best => fields.push(b"compress-best".to_vec()),
        Compress::Custom(p) => fields.push([b"comp-cust=".as_slice(), p].concat()),
        Compress::ServerFast => fields.push(b"srvcomp-fast".to_vec()),
        Compress::ServerBest => fields.push(b"srvcomp-best".to_vec()),
        Compress::ServerCustom(p) => fields.push([b"srvcomp-cust=".as_slice(), p].concat()),
    }
    if let Encrypt::Custom {
        program,
        decrypt_option,
    }
    | Encrypt::ServerCustom {
        program,
        decrypt_option,
    } = &dle.encrypt
    {
        let (key, decrypt_key) = if matches!(dle.encrypt, Encrypt::Custom { .. }) {
            (&b"encrypt-cust="[..], &b"client-decrypt-option="[..])
        } else {
            (&b"encrypt-serv-cust="[..], &b"server-decrypt-option="[..])
        };
        fields.push([key, program].concat());
        if let Some(o) = decrypt_option {
            fields.push([decrypt_key, o].concat());
        }
    }
    if !dle.record {
        fields.push(b"no-record".to_vec());
    }
    if dle.index {
        fields.push(b"index".to_vec());
    }
    if dle.kencrypt {
        fields.push(b"kencrypt".to_vec());
    }
    let empty = FileList::default();
    let exclude = dle.exclude.as_ref().unwrap_or(&empty);
    let include = dle.include.as_ref().unwrap_or(&empty);
    for (key, names) in [
        (&b"exclude-file="[..], &exclude.files),
        (b"exclude-list=", &exclude.lists),
        (b"include-file=", &include.files),
        (b"include-list=", &include.lists),
    ] {
        for n in names {
            fields.push([key, &legacy_quote(n)].concat());
        }
    }
    if exclude.optional {
        fields.push(b"exclude-optional".to_vec());
    }
    if include.optional {
        fields.push(b"include-optional".to_vec());
    }
    fields.push(Vec::new());
    fields.join(&b';')
}

/// A legacy request line the client could not parse: the detail it prints in
/// `FORMAT ERROR IN REQUEST PACKET '<detail>'` (`None`: the bare message).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("FORMAT ERROR IN REQUEST PACKET{}", match .detail { Some(d) => format!(" '{d}'"), None => String::new() })]
pub struct LegacyLineError {
    /// `no program name`, `no disk name`, `bad level`, `no dumpdate`, `bad spindle`,
    /// `Invalid parameter (...)`, `no options`, `no OPTIONS keyword`, `bad options string`.
    pub detail: Option<String>,
}

impl LegacyLineError {
    fn new(detail: &str) -> LegacyLineError {
        LegacyLineError {
            detail: Some(detail.to_owned()),
        }
    }

    fn bare() -> LegacyLineError {
        LegacyLineError { detail: None }
    }

    /// The REP line sendsize and sendbackup print: `ERROR FORMAT ERROR IN REQUEST PACKET '<d>'\n`.
    pub fn error_line(&self) -> Vec<u8> {
        format!("ERROR {self}\n").into_bytes()
    }
}

/// A parsed legacy request line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LegacyLine {
    /// The DLE (program, disk, device, estimate, level, options...).
    pub dle: Dle,
    /// The dump date token (sendsize, sendbackup), e.g. `1970:1:1:0:0:0`.
    pub dumpdate: Option<ByteString>,
    /// The raw option string, if any (starting after `OPTIONS |` for sendsize, the whole
    /// rest after `OPTIONS ` for sendbackup and selfcheck).
    pub options: Option<ByteString>,
    /// Problems `parse_options` reported.
    pub diagnostics: Vec<OptionStringDiagnostic>,
}

/// A cursor with the semantics of Amanda's `skip_*` macros.
struct Cursor<'a> {
    s: &'a [u8],
    i: usize,
}

impl<'a> Cursor<'a> {
    fn new(s: &'a [u8]) -> Cursor<'a> {
        Cursor {
            s: until_nul(s),
            i: 0,
        }
    }

    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn rest(&self) -> &'a [u8] {
        self.s.get(self.i..).unwrap_or_default()
    }

    /// `skip_whitespace`: stops at a newline.
    fn skip_ws(&mut self) {
        while self.peek().is_some_and(|b| b != b'\n' && is_space(b)) {
            self.i += 1;
        }
    }

    fn at_end(&self) -> bool {
        self.peek().is_none()
    }

    /// `skip_non_whitespace`.
    fn word(&mut self) -> &'a [u8] {
        let start = self.i;
        while self.peek().is_some_and(|b| !is_space(b)) {
            self.i += 1;
        }
        &self.s[start..self.i]
    }

    /// `skip_quoted_string`.
    fn quoted(&mut self) -> &'a [u8] {
        let start = self.i;
        self.i += quoted_field_len(self.rest());
        &self.s[start..self.i]
    }

    /// `sscanf("%d")` then `skip_integer`.
    fn int(&mut self) -> Option<i32> {
        let v = parse_c_i32(self.rest())?;
        if matches!(self.peek(), Some(b'+' | b'-')) {
            self.i += 1;
        }
        while self.peek().is_some_and(|b| b.is_ascii_digit()) {
            self.i += 1;
        }
        Some(v)
    }

    /// Consumes the delimiter after a field (the C code writes a NUL over it).
    fn skip_delim(&mut self) {
        if !self.at_end() {
            self.i += 1;
        }
    }

    /// The `<level>` field of a sendsize or sendbackup line.
    fn level(&mut self) -> Result<i32, LegacyLineError> {
        let bad = || LegacyLineError::new("bad level");
        if self.at_end() {
            return Err(bad());
        }
        self.int().ok_or_else(bad)
    }

    /// The `<dumpdate>` field after the level.
    fn dumpdate(&mut self) -> Result<&'a [u8], LegacyLineError> {
        self.skip_ws();
        if self.at_end() {
            return Err(LegacyLineError::new("no dumpdate"));
        }
        let dumpdate = self.word();
        self.skip_delim();
        Ok(dumpdate)
    }
}

/// Reads `[APPLICATION ]<program>`, returning the program and whether it is an application.
fn program_word(
    c: &mut Cursor<'_>,
    missing: Option<&str>,
) -> Result<(ByteString, bool), LegacyLineError> {
    let err = || missing.map_or_else(LegacyLineError::bare, LegacyLineError::new);
    c.skip_ws();
    if c.at_end() {
        return Err(err());
    }
    let program = c.word();
    c.skip_delim();
    if program == b"APPLICATION" {
        c.skip_ws();
        if c.at_end() {
            return Err(LegacyLineError::bare());
        }
        let name = c.word();
        c.skip_delim();
        return Ok((name.into(), true));
    }
    Ok((program.into(), false))
}

fn make_dle(program: ByteString, application: bool) -> Dle {
    let mut dle = Dle::default();
    if application {
        dle.program = "APPLICATION".into();
        dle.application = Some(super::Application {
            plugin: program,
            ..Default::default()
        });
    } else {
        dle.program = program;
    }
    dle
}

/// Disk, then optional device (present iff the next field does not start with a digit).
fn disk_and_device(
    c: &mut Cursor<'_>,
    dle: &mut Dle,
    no_disk: Option<&str>,
) -> Result<(), LegacyLineError> {
    c.skip_ws();
    if c.at_end() {
        return Err(no_disk.map_or_else(LegacyLineError::bare, LegacyLineError::new));
    }
    let disk = unquote_string(c.quoted());
    c.skip_delim();
    dle.disk = Some(disk.into());
    c.skip_ws();
    if c.at_end() {
        return Err(if no_disk.is_some() {
            LegacyLineError::new("bad level")
        } else {
            LegacyLineError::bare()
        });
    }
    if !c.peek().is_some_and(|b| b.is_ascii_digit()) {
        let device = unquote_string(c.quoted());
        c.skip_delim();
        dle.device = Some(device.into());
        c.skip_ws();
    }
    Ok(())
}

impl LegacyLine {
    /// Parses a selfcheck line like `selfcheck.c`:
    /// `[APPLICATION ][CALCSIZE ]<program> <qdisk> [<qdevice>] <level> [OPTIONS <optstr>]`.
    /// Every error is the bare `FORMAT ERROR IN REQUEST PACKET`.
    pub fn parse_selfcheck(line: &[u8], server: &Features) -> Result<LegacyLine, LegacyLineError> {
        let mut c = Cursor::new(line);
        let (mut program, application) = program_word(&mut c, None)?;
        let mut estimate = Estimate::Client;
        if program.starts_with(b"CALCSIZE") {
            c.skip_ws();
            if c.at_end() {
                return Err(LegacyLineError::bare());
            }
            program = c.word().into();
            c.skip_delim();
            estimate = Estimate::Calcsize;
        }
        let mut dle = make_dle(program, application);
        dle.estimates = vec![estimate];
        disk_and_device(&mut c, &mut dle, None)?;
        if c.at_end() {
            return Err(LegacyLineError::bare());
        }
        let level = c.int().ok_or_else(LegacyLineError::bare)?;
        dle.levels = vec![Level::new(level)];
        c.skip_ws();
        let mut options = None;
        let mut diagnostics = Vec::new();
        if !c.at_end() {
            if !c.rest().starts_with(b"OPTIONS ") {
                return Err(LegacyLineError::bare());
            }
            c.i += 8;
            c.skip_ws();
            if c.at_end() {
                return Err(LegacyLineError::bare());
            }
            let optstr = c.quoted();
            diagnostics = parse_option_string(optstr, &mut dle, server);
            options = Some(optstr.into());
        }
        Ok(LegacyLine {
            dle,
            dumpdate: None,
            options,
            diagnostics,
        })
    }

    /// Parses a sendsize line like `sendsize.c`:
    /// `[CALCSIZE ][APPLICATION ]<program> <qdisk> [<qdevice>] <level> <dumpdate> [<spindle> [OPTIONS |;<optstr> | exclude-file=... ...]]`.
    pub fn parse_sendsize(line: &[u8], server: &Features) -> Result<LegacyLine, LegacyLineError> {
        let mut c = Cursor::new(line);
        c.skip_ws();
        if c.at_end() {
            return Err(LegacyLineError::new("no program name"));
        }
        let first = c.word();
        c.skip_delim();
        let (program, application, estimate) = if first.starts_with(b"CALCSIZE") {
            let (p, app) = program_word(&mut c, Some("no program name"))?;
            (p, app, Estimate::Calcsize)
        } else if first == b"APPLICATION" {
            c.skip_ws();
            if c.at_end() {
                return Err(LegacyLineError::bare());
            }
            let p = c.word();
            c.skip_delim();
            (p.into(), true, Estimate::Client)
        } else {
            (first.into(), false, Estimate::Client)
        };
        let mut dle = make_dle(program, application);
        dle.estimates = vec![estimate];
        disk_and_device(&mut c, &mut dle, Some("no disk name"))?;
        let level = c.level()?;
        if !(0..400).contains(&level) {
            return Err(LegacyLineError::new("bad level"));
        }
        dle.levels = vec![Level::new(level)];
        let dumpdate = c.dumpdate()?;
        dle.spindle = 0;
        c.skip_ws();
        let mut options = None;
        let mut diagnostics = Vec::new();
        if !c.at_end() {
            dle.spindle = c.int().ok_or_else(|| LegacyLineError::new("bad spindle"))?;
            c.skip_ws();
            if !c.at_end() {
                if let Some(opt) = c.rest().strip_prefix(b"OPTIONS |") {
                    if opt.starts_with(b";") {
                        diagnostics = parse_option_string(opt, &mut dle, server);
                        options = Some(opt.into());
                    } else {
                        parse_exclude_tail(&mut c, &mut dle)?;
                    }
                } else {
                    parse_exclude_tail(&mut c, &mut dle)?;
                }
            }
        }
        Ok(LegacyLine {
            dle,
            dumpdate: Some(dumpdate.into()),
            options,
            diagnostics,
        })
    }

    /// Parses a sendbackup line like `sendbackup.c`:
    /// `[APPLICATION ]<program> <qdisk> [<qdevice>] <level> <dumpdate> OPTIONS <optstr>`.
    /// The option string (the whole rest) is applied without diagnostics, as the real
    /// service does.
    pub fn parse_sendbackup(line: &[u8], server: &Features) -> Result<LegacyLine, LegacyLineError> {
        let mut c = Cursor::new(line);
        let (program, application) = program_word(&mut c, Some("no program name"))?;
        let mut dle = make_dle(program, application);
        disk_and_device(&mut c, &mut dle, Some("no disk name"))?;
        dle.levels = vec![Level::new(c.level()?)];
        let dumpdate = c.dumpdate()?;
        c.skip_ws();
        if c.at_end() {
            return Err(LegacyLineError::new("no options"));
        }
        if !c.rest().starts_with(b"OPTIONS ") {
            return Err(LegacyLineError::new("no OPTIONS keyword"));
        }
        c.i += 8;
        c.skip_ws();
        if c.at_end() {
            return Err(LegacyLineError::new("bad options string"));
        }
        let optstr = c.rest();
        let _ = parse_option_string(optstr, &mut dle, server);
        Ok(LegacyLine {
            dle,
            dumpdate: Some(dumpdate.into()),
            options: Some(optstr.into()),
            diagnostics: Vec::new(),
        })
    }
}

/// sendsize's tail for clients without `fe_sendsize_req_options`: `exclude-file=...` etc.
/// 3.5.1 unquotes the *whole rest of the line* as the value; we do the same.
fn parse_exclude_tail(c: &mut Cursor<'_>, dle: &mut Dle) -> Result<(), LegacyLineError> {
    while !c.at_end() {
        let rest = c.rest();
        if let Some((names, v)) = file_list_entry(dle, rest) {
            names.push(unquote_string(v).into());
        } else {
            return Err(LegacyLineError {
                detail: Some(format!(
                    "Invalid parameter ({})",
                    String::from_utf8_lossy(rest)
                )),
            });
        }
        c.quoted();
        c.skip_delim();
        c.skip_ws();
    }
    Ok(())
}

/// amcheck's legacy selfcheck line:
/// `[CALCSIZE ]<program> <qdisk>[ <qdevice>] 0 OPTIONS |<optstr>\n`. `CALCSIZE ` is
/// written when the DLE's first estimate is calcsize and the client has
/// `fe_selfcheck_calcsize` (and `fe_calcsize_estimate`).
pub fn selfcheck_line(dle: &Dle, client: &Features) -> Vec<u8> {
    let mut out = Vec::new();
    if dle.first_estimate() == Estimate::Calcsize
        && client.has(Feature::CALCSIZE_ESTIMATE)
        && client.has(Feature::SELFCHECK_CALCSIZE)
    {
        out.extend_from_slice(b"CALCSIZE ");
    }
    out.extend_from_slice(&dle.program);
    out.push(b' ');
    out.extend_from_slice(&legacy_quote(dle.disk.as_deref().unwrap_or_default()));
    if let Some(device) = &dle.device {
        out.push(b' ');
        out.extend_from_slice(&legacy_quote(device));
    }
    out.extend_from_slice(b" 0 OPTIONS |");
    out.extend_from_slice(&option_string(dle, client));
    out.push(b'\n');
    out
}

/// planner's legacy sendsize lines, one per level in `dle.levels`, with `dumpdates[i]`
/// the date for level `i` (`Y:M:D:h:m:s` UTC): see spec §6.6 for the literal spacing.
/// `CALCSIZE` (no space, a 3.5.1 bug) is prefixed when the first estimate is calcsize and
/// the client has `fe_calcsize_estimate`. Clients without `fe_sendsize_req_options` get
/// the `exclude-…`/`include-…` tail (at most one of each, only if the list has exactly one).
pub fn sendsize_lines(dle: &Dle, dumpdates: &[&[u8]], client: &Features) -> Vec<u8> {
    let calcsize =
        dle.first_estimate() == Estimate::Calcsize && client.has(Feature::CALCSIZE_ESTIMATE);
    let options = client
        .has(Feature::SENDSIZE_REQ_OPTIONS)
        .then(|| option_string(dle, client));
    let mut out = Vec::new();
    for (i, level) in dle.levels.iter().enumerate() {
        if calcsize {
            out.extend_from_slice(b"CALCSIZE");
        }
        out.extend_from_slice(&dle.program);
        out.push(b' ');
        out.extend_from_slice(&legacy_quote(dle.disk.as_deref().unwrap_or_default()));
        out.push(b' ');
        if let Some(device) = &dle.device {
            out.extend_from_slice(&legacy_quote(device));
        }
        let dumpdate = dumpdates.get(i).copied().unwrap_or(b"1970:1:1:0:0:0");
        out.extend_from_slice(format!(" {} ", level.level).as_bytes());
        out.extend_from_slice(dumpdate);
        out.extend_from_slice(format!(" {} ", dle.spindle).as_bytes());
        match &options {
            Some(o) => {
                out.extend_from_slice(b" OPTIONS |");
                out.extend_from_slice(o);
            }
            None => {
                let one = |names: &[ByteString]| (names.len() == 1).then(|| names[0].clone());
                for (list, file_key, list_key) in [
                    (&dle.exclude, &b" exclude-file="[..], &b" exclude-list="[..]),
                    (&dle.include, b" include-file=", b" include-list="),
                ] {
                    let Some(l) = list else { continue };
                    let tail = one(&l.files)
                        .map(|f| (file_key, f))
                        .or_else(|| one(&l.lists).map(|f| (list_key, f)));
                    if let Some((key, name)) = tail {
                        out.extend_from_slice(key);
                        out.extend_from_slice(&legacy_quote(&name));
                    }
                }
            }
        }
        out.push(b'\n');
    }
    out
}

/// dumper's legacy sendbackup line: `<program> <qdisk> <qdevice-or-empty> <level>
/// <dumpdate> OPTIONS |<optstr>\n`; the device only if the client has
/// `fe_sendbackup_req_device`. Uses the first level of the DLE (0 if none).
pub fn sendbackup_line(dle: &Dle, dumpdate: &[u8], client: &Features) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&dle.program);
    out.push(b' ');
    out.extend_from_slice(&legacy_quote(dle.disk.as_deref().unwrap_or_default()));
    out.push(b' ');
    if let Some(device) = dle
        .device
        .as_ref()
        .filter(|_| client.has(Feature::SENDBACKUP_REQ_DEVICE))
    {
        out.extend_from_slice(&legacy_quote(device));
    }
    let level = dle.levels.first().map_or(0, |l| l.level);
    out.extend_from_slice(format!(" {level} ").as_bytes());
    out.extend_from_slice(dumpdate);
    out.extend_from_slice(b" OPTIONS |");
    out.extend_from_slice(&option_string(dle, client));
    out.push(b'\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn gnutar_home() -> Dle {
        Dle {
            program: "GNUTAR".into(),
            disk: Some("/home".into()),
            auth: Some("bsd".into()),
            compress: Compress::Fast,
            index: true,
            levels: vec![Level::new(0)],
            spindle: -1,
            ..Dle::default()
        }
    }

    #[test]
    fn tv3_selfcheck_line() {
        let f = Features::amanda_3_5_1();
        assert_eq!(
            selfcheck_line(&gnutar_home(), &f),
            b"GNUTAR /home 0 OPTIONS |;auth=bsd;compress-fast;index;\n"
        );
    }

    #[test]
    fn tv5_sendsize_lines_have_literal_double_spaces() {
        let f = Features::amanda_3_5_1();
        let mut dle = gnutar_home();
        dle.levels = vec![Level::new(0), Level::new(1)];
        let lines = sendsize_lines(&dle, &[b"1970:1:1:0:0:0", b"2023:12:31:2:3:4"], &f);
        assert_eq!(
            String::from_utf8(lines).unwrap(),
            "GNUTAR /home  0 1970:1:1:0:0:0 -1  OPTIONS |;auth=bsd;compress-fast;index;\n\
             GNUTAR /home  1 2023:12:31:2:3:4 -1  OPTIONS |;auth=bsd;compress-fast;index;\n"
        );
    }

    #[test]
    fn sendsize_without_bit_6_gets_the_exclude_tail() {
        let client = Features::default_2_4_2p2();
        let mut dle = gnutar_home();
        dle.exclude = Some(FileList {
            files: vec!["*.o".into()],
            ..Default::default()
        });
        let line = sendsize_lines(&dle, &[b"1970:1:1:0:0:0"], &client);
        assert_eq!(
            line,
            b"GNUTAR /home  0 1970:1:1:0:0:0 -1  exclude-file=*.o\n"
        );
        let parsed = LegacyLine::parse_sendsize(&line[..line.len() - 1], &client).unwrap();
        assert_eq!(
            parsed.dle.exclude.unwrap().files,
            vec![ByteString::from("*.o")]
        );
    }

    #[test]
    fn tv8_sendbackup_line() {
        let f = Features::amanda_3_5_1();
        assert_eq!(
            sendbackup_line(&gnutar_home(), b"1970:1:1:0:0:0", &f),
            b"GNUTAR /home  0 1970:1:1:0:0:0 OPTIONS |;auth=bsd;compress-fast;index;\n"
        );
    }

    #[test]
    fn parse_lines_back() {
        let f = Features::amanda_3_5_1();
        let l = LegacyLine::parse_sendbackup(
            b"GNUTAR /home  0 1970:1:1:0:0:0 OPTIONS |;auth=bsd;compress-fast;index;",
            &f,
        )
        .unwrap();
        assert_eq!(l.dle.program, "GNUTAR");
        assert_eq!(l.dle.disk.as_ref().unwrap(), "/home");
        assert_eq!(l.dle.device, None);
        assert_eq!(l.dle.levels, vec![Level::new(0)]);
        assert_eq!(l.dumpdate.unwrap(), "1970:1:1:0:0:0");
        assert_eq!(l.dle.auth.unwrap(), "bsd");
        assert_eq!(l.dle.compress, Compress::Fast);
        assert!(l.dle.index);

        let l = LegacyLine::parse_selfcheck(
            b"CALCSIZE GNUTAR \"/my disk\" /dev/x 0 OPTIONS |;index;bogus;",
            &f,
        )
        .unwrap();
        assert_eq!(l.dle.estimates, vec![Estimate::Calcsize]);
        assert_eq!(l.dle.disk.unwrap(), "/my disk");
        assert_eq!(l.dle.device.unwrap(), "/dev/x");
        assert_eq!(
            l.diagnostics,
            vec![OptionStringDiagnostic::Unknown("bogus".into())]
        );
        assert_eq!(
            l.diagnostics[0].error_line(),
            b"ERROR [unknown option: bogus]\n"
        );

        let l = LegacyLine::parse_sendsize(
            b"APPLICATION amgtar /x  3 2024:1:1:0:0:0 7  OPTIONS |;auth=bsdtcp;",
            &f,
        )
        .unwrap();
        assert_eq!(l.dle.program, "APPLICATION");
        assert_eq!(l.dle.application.unwrap().plugin, "amgtar");
        assert_eq!(l.dle.spindle, 7);
        assert_eq!(l.dle.levels[0].level, 3);
    }

    #[test]
    fn errors_carry_the_clients_detail_texts() {
        let f = Features::amanda_3_5_1();
        let e =
            LegacyLine::parse_sendbackup(b"GNUTAR /home 0 1970:1:1:0:0:0 NOPE", &f).unwrap_err();
        assert_eq!(
            e.error_line(),
            b"ERROR FORMAT ERROR IN REQUEST PACKET 'no OPTIONS keyword'\n"
        );
        assert_eq!(
            LegacyLine::parse_sendbackup(b"", &f)
                .unwrap_err()
                .detail
                .as_deref(),
            Some("no program name")
        );
        assert_eq!(
            LegacyLine::parse_sendbackup(b"GNUTAR", &f)
                .unwrap_err()
                .detail
                .as_deref(),
            Some("no disk name")
        );
        assert_eq!(
            LegacyLine::parse_sendbackup(b"GNUTAR /x", &f)
                .unwrap_err()
                .detail
                .as_deref(),
            Some("bad level")
        );
        assert_eq!(
            LegacyLine::parse_sendbackup(b"GNUTAR /x 1", &f)
                .unwrap_err()
                .detail
                .as_deref(),
            Some("no dumpdate")
        );
        assert_eq!(
            LegacyLine::parse_sendbackup(b"GNUTAR /x 1 d", &f)
                .unwrap_err()
                .detail
                .as_deref(),
            Some("no options")
        );
        assert_eq!(
            LegacyLine::parse_sendbackup(b"APPLICATION", &f)
                .unwrap_err()
                .to_string(),
            "FORMAT ERROR IN REQUEST PACKET"
        );
        assert_eq!(
            LegacyLine::parse_sendsize(b"GNUTAR /x 1 d x", &f)
                .unwrap_err()
                .detail
                .as_deref(),
            Some("bad spindle")
        );
        assert_eq!(
            LegacyLine::parse_sendsize(b"GNUTAR /x 400 d", &f)
                .unwrap_err()
                .detail
                .as_deref(),
            Some("bad level")
        );
        assert_eq!(
            LegacyLine::parse_sendsize(b"GNUTAR /x 1 d 1 frob", &f)
                .unwrap_err()
                .detail
                .as_deref(),
            Some("Invalid parameter (frob)")
        );
        assert!(
            LegacyLine::parse_selfcheck(b"GNUTAR /x 0 junk", &f)
                .unwrap_err()
                .detail
                .is_none()
        );
    }

    #[test]
    fn option_string_gating_and_multiples() {
        let old = Features::default_2_4_2p2();
        let mut dle = Dle {
            auth: Some("bsd".into()),
            ..Dle::default()
        };
        assert_eq!(option_string(&dle, &old), b";bsd-auth;");
        dle.auth = Some("bsdtcp".into());
        assert_eq!(option_string(&dle, &old), b";");
        let mut d = Dle::default();
        let diags = parse_option_string(
            b";compress-fast;compress-best;auth=a;auth=b;index;index;",
            &mut d,
            &Features::amanda_3_5_1(),
        );
        assert_eq!(
            diags.iter().map(|d| d.to_string()).collect::<Vec<_>>(),
            vec![
                "multiple compress option",
                "multiple auth option b",
                "multiple index option"
            ]
        );
        // auth= without the feature is an unknown option
        let mut d = Dle::default();
        let diags = parse_option_string(b"auth=bsd", &mut d, &Features::empty());
        assert_eq!(
            diags,
            vec![OptionStringDiagnostic::Unknown("auth=bsd".into())]
        );
    }

    fn arb_name() -> impl Strategy<Value = ByteString> {
        proptest::collection::vec(1u8..=255, 1..24)
            .prop_filter("no ';' in option values", |v| !v.contains(&b';'))
            .prop_map(ByteString::from)
    }

    proptest! {
        #[test]
        fn option_string_round_trips(
            auth in "[a-z]{1,8}",
            compress in 0u8..7,
            prog in "[a-z/]{1,12}",
            record in any::<bool>(),
            index in any::<bool>(),
            kencrypt in any::<bool>(),
            files in proptest::collection::vec(arb_name(), 0..3),
            lists in proptest::collection::vec(arb_name(), 0..3),
            optional in any::<bool>(),
        ) {
            let f = Features::amanda_3_5_1();
            let dle = Dle {
                auth: Some(auth.as_str().into()),
                compress: match compress {
                    0 => Compress::None, 1 => Compress::Fast, 2 => Compress::Best,
                    3 => Compress::Custom(prog.as_str().into()), 4 => Compress::ServerFast,
                    5 => Compress::ServerBest, _ => Compress::ServerCustom(prog.as_str().into()),
                },
                encrypt: Encrypt::Custom { program: prog.as_str().into(), decrypt_option: Some("-d".into()) },
                record, index, kencrypt,
                // the legacy form cannot say "an empty list"
                exclude: Some(FileList { files: files.clone(), lists: lists.clone(), optional }).filter(|l| !l.is_empty()),
                include: Some(FileList { files, lists, optional }).filter(|l| !l.is_empty()),
                ..Dle::default()
            };
            let s = option_string(&dle, &f);
            let mut back = Dle::default();
            let diags = parse_option_string(&s, &mut back, &f);
            prop_assert!(diags.is_empty(), "{:?}", diags);
            prop_assert_eq!(back, dle);
        }

        #[test]
        fn legacy_lines_round_trip(disk in arb_name(), device in proptest::option::of(arb_name()), level in 0i32..10) {
            prop_assume!(!disk.first().is_some_and(|b| b.is_ascii_digit()));
            prop_assume!(!device.as_ref().and_then(|d| d.first()).is_some_and(|b| b.is_ascii_digit()));
            let f = Features::amanda_3_5_1();
            let dle = Dle { program: "GNUTAR".into(), disk: Some(disk), device, levels: vec![Level::new(level)],
                auth: Some("bsdtcp".into()), index: true, spindle: -1, estimates: vec![Estimate::Client], ..Dle::default() };
            let line = sendbackup_line(&dle, b"1970:1:1:0:0:0", &f);
            let back = LegacyLine::parse_sendbackup(&line[..line.len() - 1], &f).unwrap();
            prop_assert_eq!(&back.dle.disk, &dle.disk);
            prop_assert_eq!(&back.dle.device, &dle.device);
            prop_assert_eq!(&back.dle.levels, &dle.levels);
            let line = sendsize_lines(&dle, &[b"1970:1:1:0:0:0"], &f);
            let back = LegacyLine::parse_sendsize(&line[..line.len() - 1], &f).unwrap();
            prop_assert_eq!(&back.dle.disk, &dle.disk);
            prop_assert_eq!(&back.dle.device, &dle.device);
            prop_assert_eq!(back.dle.spindle, -1);
            let line = selfcheck_line(&dle, &f);
            let back = LegacyLine::parse_selfcheck(&line[..line.len() - 1], &f).unwrap();
            prop_assert_eq!(&back.dle.disk, &dle.disk);
            prop_assert_eq!(back.dle.index, true);
        }

        #[test]
        fn legacy_parsers_never_panic(s in proptest::collection::vec(any::<u8>(), 0..128)) {
            let f = Features::amanda_3_5_1();
            let _ = LegacyLine::parse_selfcheck(&s, &f);
            let _ = LegacyLine::parse_sendsize(&s, &f);
            let _ = LegacyLine::parse_sendbackup(&s, &f);
            let mut d = Dle::default();
            for diag in parse_option_string(&s, &mut d, &f) { let _ = diag.error_line(); }
        }
    }
}
