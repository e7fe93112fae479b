//! ambackup's side of the `ambackupd` service (spec §14), sans-IO: the request bodies, what
//! each REP means (LISTDLE's JSON, CHECK's selfcheck input, BACKUP's CONNECT line and
//! sendbackup request), and the lines the server sends on MESG during a backup.
//!
//! Roles are reversed (spec §14.1): this host opens the connection and sends the REQs; the
//! server names the streams and the client sends the dump on them.
//!
//! What this module must not do: touch a socket, a pipe, a process or a clock; print.

use proto::features::{Feature, Features};
use proto::sendbackup::Stream;

/// The service name of every request but the first (`noop`).
pub const SERVICE: &[u8] = b"ambackupd";

/// The longest line the server may send on MESG (its lines are a disk name and a reason);
/// a longer one ends the backup with an error rather than growing a buffer.
pub const MAX_MESG_LINE: usize = 64 << 10;

/// The line that ends the server's MESG stream for one DLE (ambackup stops reading there).
pub const MESG_END: &[u8] = b"MESG END";

/// One `ambackupd` command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command<'a> {
    /// `LISTDLE`: the host's DLEs, as JSON.
    ListDle,
    /// `CHECK`: the DLEs as selfcheck input.
    Check,
    /// `BACKUP <disk>`: the disk name goes unquoted (the server splits at the first blank).
    Backup(&'a [u8]),
}

/// Why a request cannot be built.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// The server would cut the disk name at this byte (spec §14.2) or end the line.
    #[error("the disk name {0:?} has a blank or a line break, which ambackupd cannot take")]
    BadDiskName(String),
    /// A value that would break the OPTIONS line.
    #[error("{what} {value:?} must not contain ';', a blank or a line break")]
    BadOption {
        /// Which option.
        what: &'static str,
        /// Its value.
        value: String,
    },
}

fn check_option(what: &'static str, value: &str) -> Result<(), RequestError> {
    if value.is_empty() || value.bytes().any(|b| b == b';' || b.is_ascii_whitespace()) {
        return Err(RequestError::BadOption {
            what,
            value: value.to_string(),
        });
    }
    Ok(())
}

/// `OPTIONS features=<ours>;hostname=<server>;config=<config>;\n`, as amservice writes it.
pub fn options_line(ours: &Features, server: &str, config: &str) -> Result<Vec<u8>, RequestError> {
    check_option("the server name", server)?;
    check_option("the configuration name", config)?;
    Ok(format!(
        "OPTIONS features={};hostname={server};config={config};\n",
        ours.to_hex()
    )
    .into_bytes())
}

/// The first request: `SERVICE noop` with our OPTIONS line.
pub fn noop_body(ours: &Features, server: &str, config: &str) -> Result<Vec<u8>, RequestError> {
    Ok(proto::request::request_body(
        b"noop",
        &options_line(ours, server, config)?,
    ))
}

/// `SERVICE ambackupd`, our OPTIONS line, the command line.
pub fn ambackupd_body(
    ours: &Features,
    server: &str,
    config: &str,
    cmd: Command<'_>,
) -> Result<Vec<u8>, RequestError> {
    let mut args = options_line(ours, server, config)?;
    match cmd {
        Command::ListDle => args.extend_from_slice(b"LISTDLE"),
        Command::Check => args.extend_from_slice(b"CHECK"),
        Command::Backup(disk) => {
            if disk.is_empty() || disk.iter().any(|b| b.is_ascii_whitespace() || *b == 0) {
                return Err(RequestError::BadDiskName(
                    String::from_utf8_lossy(disk).into_owned(),
                ));
            }
            args.extend_from_slice(b"BACKUP ");
            args.extend_from_slice(disk);
        }
    }
    args.push(b'\n');
    Ok(proto::request::request_body(SERVICE, &args))
}

/// The server's features from a noop REP (`OPTIONS features=<hex>;`), if it sent valid ones.
pub fn noop_features(rep: &[u8]) -> Option<Features> {
    rep.split(|&b| b == b'\n')
        .find(|l| l.starts_with(b"OPTIONS "))
        .and_then(proto::options::reply_features)
        .and_then(Result::ok)
}

fn lines(body: &[u8]) -> impl Iterator<Item = &[u8]> {
    body.split(|&b| b == b'\n').filter(|l| !l.is_empty())
}

fn text(line: &[u8]) -> String {
    String::from_utf8_lossy(line).into_owned()
}

/// The `ERROR ...` lines of a REP (ambackupd's refusals, spec §14.3), as printed.
pub fn error_lines(body: &[u8]) -> Vec<String> {
    lines(body)
        .filter(|l| l.starts_with(b"ERROR"))
        .map(text)
        .collect()
}

/// A DLE of the LISTDLE reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listed {
    /// `diskname`: what `BACKUP` names.
    pub disk: String,
    /// `message` (`DLE <disk>`): what `list` prints.
    pub message: String,
}

/// What LISTDLE answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ListReply {
    /// The host's DLEs.
    Dles(Vec<Listed>),
    /// The server refused (`ERROR ...` lines, printed as they are).
    Errors(Vec<String>),
    /// The JSON did not parse (3.5.1 cuts replies with non-ASCII disk names short, spec
    /// §14.3): the parser's complaint.
    Malformed(String),
}

/// Reads a LISTDLE REP: `ERROR` lines, or a JSON array of message objects whose
/// `diskname` and `message` matter (key order varies).
pub fn parse_list(body: &[u8]) -> ListReply {
    if body.starts_with(b"ERROR") {
        return ListReply::Errors(error_lines(body));
    }
    let value: serde_json::Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => return ListReply::Malformed(e.to_string()),
    };
    let Some(items) = value.as_array() else {
        return ListReply::Malformed("the reply is not a JSON array".into());
    };
    let mut dles = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let field = |k: &str| item.get(k).and_then(|v| v.as_str()).map(str::to_string);
        let Some(disk) = field("diskname") else {
            return ListReply::Malformed(format!("entry {i} has no \"diskname\" string"));
        };
        let message = field("message").unwrap_or_else(|| format!("DLE {disk}"));
        dles.push(Listed { disk, message });
    }
    ListReply::Dles(dles)
}

/// Rewrites the server's `GOPTIONS` line into the `OPTIONS` line of a request to the local
/// service: `GOPTIONS` becomes `OPTIONS`; with `drop`, that feature is removed from the
/// `features=` value (`None` when the line has no valid one).
fn local_options(line: &[u8], drop: Option<Feature>) -> Option<Vec<u8>> {
    let rest = line.strip_prefix(b"GOPTIONS")?;
    let mut out = b"OPTIONS".to_vec();
    let Some(drop) = drop else {
        out.extend_from_slice(rest);
        return Some(out);
    };
    let at = memchr::memmem::find(rest, b"features=")? + b"features=".len();
    let end = memchr::memchr(b';', &rest[at..]).map_or(rest.len(), |e| at + e);
    let features = Features::parse(&rest[at..end]).ok()?.without(drop);
    out.extend_from_slice(&rest[..at]);
    out.extend_from_slice(features.to_hex().as_bytes());
    out.extend_from_slice(&rest[end..]);
    Some(out)
}

/// What CHECK answered (spec §14.3).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckReply {
    /// The server's `ERROR` lines (printed; the real ambackup then still runs selfcheck).
    pub errors: Vec<String>,
    /// The request for the local selfcheck (`OPTIONS` line without feature
    /// `fe_selfcheck_message`, so the answer is in the legacy `OK`/`ERROR` form, and the
    /// DLEs); `None` when the reply had no `GOPTIONS` line.
    pub selfcheck: Option<Vec<u8>>,
}

/// Reads a CHECK REP.
pub fn parse_check(body: &[u8]) -> CheckReply {
    let mut errors = Vec::new();
    let mut request = Vec::new();
    let mut options = false;
    for line in lines(body) {
        if line.starts_with(b"ERROR") {
            errors.push(text(line));
        } else if line.starts_with(b"GOPTIONS") {
            match local_options(line, Some(Feature::SELFCHECK_MESSAGE)) {
                Some(l) => {
                    request.extend_from_slice(&l);
                    options = true;
                }
                None => errors.push(format!(
                    "ERROR the server's GOPTIONS line has no valid features: {}",
                    text(line)
                )),
            }
            request.push(b'\n');
        } else {
            request.extend_from_slice(line);
            request.push(b'\n');
        }
    }
    CheckReply {
        errors,
        selfcheck: options.then_some(request),
    }
}

/// What the local selfcheck's reply means for `check` (ambackup.pl's `run_selfcheck`).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct SelfcheckReport {
    /// The lines to print (`OK` and `OPTIONS` lines only when verbose).
    pub lines: Vec<String>,
    /// How many `ERROR` lines.
    pub errors: usize,
}

/// Reads the local selfcheck's (legacy) reply.
pub fn selfcheck_report(rep: &[u8], verbose: bool) -> SelfcheckReport {
    let mut r = SelfcheckReport::default();
    for line in lines(rep) {
        if !verbose && (line.starts_with(b"OK") || line.starts_with(b"OPTIONS")) {
            continue;
        }
        if line.starts_with(b"ERROR") {
            r.errors += 1;
        }
        r.lines.push(text(line));
    }
    r
}

/// A BACKUP REP the dump can go ahead on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackupReply {
    /// The streams the server named, with their handles on this connection.
    pub streams: Vec<(Stream, u32)>,
    /// The sendbackup request for the local service: the `OPTIONS` line (from `GOPTIONS`)
    /// and the DLE.
    pub request: Vec<u8>,
}

impl BackupReply {
    /// The handle of `stream`, if the server named it.
    pub fn handle(&self, stream: Stream) -> Option<u32> {
        self.streams
            .iter()
            .find(|(s, _)| *s == stream)
            .map(|(_, h)| *h)
    }
}

/// Why a BACKUP REP gives no dump.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BackupRefused {
    /// The server's `ERROR` lines.
    #[error("{}", .0.join("\n"))]
    Errors(Vec<String>),
    /// The REP does not say what we need.
    #[error("ERROR bad BACKUP reply from the server: {0}")]
    Malformed(String),
}

fn parse_connect(line: &[u8]) -> Result<Vec<(Stream, u32)>, String> {
    let mut words = line.split(|&b| b == b' ').filter(|w| !w.is_empty()).skip(1);
    let mut streams: Vec<(Stream, u32)> = Vec::new();
    while let Some(name) = words.next() {
        let stream = Stream::ALL
            .into_iter()
            .find(|s| s.name().as_bytes() == name)
            .ok_or_else(|| format!("unknown stream {:?} in the CONNECT line", text(name)))?;
        let handle = words
            .next()
            .and_then(|w| std::str::from_utf8(w).ok())
            .and_then(|w| w.parse::<u32>().ok())
            .filter(|h| !proto::tcp::is_control_handle(*h))
            .ok_or_else(|| format!("stream {stream} has no valid handle in the CONNECT line"))?;
        if streams.iter().any(|(s, h)| *s == stream || *h == handle) {
            return Err(format!(
                "stream {stream} or its handle twice in the CONNECT line"
            ));
        }
        streams.push((stream, handle));
    }
    for needed in [Stream::Data, Stream::Mesg] {
        if !streams.iter().any(|(s, _)| *s == needed) {
            return Err(format!("no {needed} stream in the CONNECT line"));
        }
    }
    Ok(streams)
}

/// Reads a BACKUP REP (spec §14.3): `CONNECT ...`, `GOPTIONS ...`, the DLE; or `ERROR` lines.
pub fn parse_backup(body: &[u8]) -> Result<BackupReply, BackupRefused> {
    let errors = error_lines(body);
    if !errors.is_empty() {
        return Err(BackupRefused::Errors(errors));
    }
    let mut streams = None;
    let mut request = Vec::new();
    let mut options = false;
    for line in lines(body) {
        if line.starts_with(b"CONNECT ") {
            streams = Some(parse_connect(line).map_err(BackupRefused::Malformed)?);
        } else if line.starts_with(b"GOPTIONS") {
            request.extend(local_options(line, None).unwrap_or_default());
            request.push(b'\n');
            options = true;
        } else {
            request.extend_from_slice(line);
            request.push(b'\n');
        }
    }
    let streams = streams.ok_or_else(|| BackupRefused::Malformed("no CONNECT line".into()))?;
    if !options {
        return Err(BackupRefused::Malformed("no GOPTIONS line".into()));
    }
    Ok(BackupReply { streams, request })
}

/// How the server ended one DLE's backup (its MESG lines, spec §14.4).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// `backup done: <disk>`.
    Done,
    /// `backup failed: ...`, `backup strange ...`, or no verdict before `MESG END`: the
    /// line (or a description).
    Failed(String),
}

/// The server's MESG stream of one backup, split into lines.
#[derive(Debug, Default)]
pub struct ServerMesg {
    partial: Vec<u8>,
    ended: bool,
    verdict: Option<Outcome>,
}

/// The server sent a line longer than [`MAX_MESG_LINE`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the server sent a MESG line longer than {MAX_MESG_LINE} bytes")]
pub struct LineTooLong;

impl ServerMesg {
    /// A stream with nothing read yet.
    pub fn new() -> ServerMesg {
        ServerMesg::default()
    }

    /// Bytes from the server's MESG stream; returns the complete lines to print (every line
    /// before `MESG END`). What follows `MESG END` is ignored.
    pub fn push(&mut self, mut chunk: &[u8]) -> Result<Vec<String>, LineTooLong> {
        let mut out = Vec::new();
        while !self.ended && !chunk.is_empty() {
            match memchr::memchr(b'\n', chunk) {
                Some(nl) => {
                    self.partial.extend_from_slice(&chunk[..nl]);
                    chunk = &chunk[nl + 1..];
                    let line = std::mem::take(&mut self.partial);
                    if line.len() > MAX_MESG_LINE {
                        return Err(LineTooLong);
                    }
                    self.line(&line, &mut out);
                }
                None => {
                    if self.partial.len() + chunk.len() > MAX_MESG_LINE {
                        return Err(LineTooLong);
                    }
                    self.partial.extend_from_slice(chunk);
                    chunk = &[];
                }
            }
        }
        Ok(out)
    }

    fn line(&mut self, line: &[u8], out: &mut Vec<String>) {
        if line == MESG_END {
            self.ended = true;
            return;
        }
        if self.verdict.is_none() {
            if line.starts_with(b"backup done:") {
                self.verdict = Some(Outcome::Done);
            } else if line.starts_with(b"backup failed:") || line.starts_with(b"backup strange") {
                self.verdict = Some(Outcome::Failed(text(line)));
            }
        }
        out.push(text(line));
    }

    /// Whether `MESG END` was read.
    pub fn ended(&self) -> bool {
        self.ended
    }

    /// The verdict so far: done only after `backup done:`.
    pub fn outcome(&self) -> Outcome {
        match &self.verdict {
            Some(o) => o.clone(),
            None if self.ended => Outcome::Failed("the server ended MESG without a verdict".into()),
            None => Outcome::Failed("the server closed the connection without a verdict".into()),
        }
    }
}

#[cfg(test)]
mod tests;
