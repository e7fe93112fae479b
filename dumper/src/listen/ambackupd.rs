//! The `ambackupd` service, sans-IO (spec §14): the request's command, which DLEs of the
//! configuration the peer may list, check or back up, and the REP bodies, byte for byte
//! as Amanda 3.5.1's ambackupd writes them where a real `ambackup` reads them.
//!
//! - LISTDLE: a JSON array of message objects, one per APPLICATION DLE of the peer host
//!   (`"message": "DLE <disk>"`). Unlike 3.5.1 (which counts the reply's length in
//!   characters and cuts it short, spec §14.3), the body is the whole UTF-8 text.
//! - CHECK: `GOPTIONS ...` and the DLEs in selfcheck form, no newline between them.
//! - BACKUP: `CONNECT DATA .. MESG .. INDEX .. [STATE ..]`, `GOPTIONS ...` and the DLE with
//!   its level (chosen by the dumper's level policy, see `backup`).
//! - Refusals: `ERROR <text>` lines and an empty line, in a REP, with 3.5.1's texts (typos
//!   included: ambackup users match them).
//!
//! The peer is the name amandad computed for the connection (reverse DNS for bsdtcp): that
//! name is looked up in the disklist of the configuration the request names.
//!
//! What this module must not do: I/O (the plan is loaded by the caller), or choose levels.

use proto::dle::{Level, XmlLayout};
use proto::features::{Feature, Features};
use proto::options::Options;
use proto::sendbackup::Stream;
use proto::tcp::StreamHandles;

use crate::plan::{DleSpec, Plan};

/// What the client asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// `LISTDLE`: the peer's DLEs.
    ListDle,
    /// `CHECK`: the peer's DLEs for its local selfcheck.
    Check,
    /// `BACKUP <disk>`: one DLE.
    Backup(Vec<u8>),
}

/// A request to ambackupd.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// The client's features (`features=`; Amanda 2.4.2p2's when absent).
    pub features: Features,
    /// `config=`, checked to be a plain name.
    pub config: Option<String>,
    /// The command.
    pub command: Command,
}

/// Why ambackupd refuses; `Display` is the text after `ERROR ` (3.5.1's, sic).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// No second line.
    #[error("No command specified in REQ packet")]
    NoCommand,
    /// A command ambackupd does not know.
    #[error("Invalid command '{0}' specified in REQ packet")]
    InvalidCommand(String),
    /// No `config=` (or one that is not a plain name).
    #[error("no config")]
    NoConfig,
    /// amanda.conf or the disklist could not be read (the details go to the log).
    #[error("configuration errors; aborting connection")]
    ConfigErrors,
    /// The peer host is not in the disklist.
    #[error("No host '{0}'")]
    NoHost(String),
    /// The peer host has no APPLICATION DLE.
    #[error("No dle for host '{0}'")]
    NoDle(String),
    /// The peer host has no DLE of that name.
    #[error("No '{disk}' dle for host '{peer}'")]
    NoSuchDle {
        /// The disk asked for.
        disk: String,
        /// The peer host.
        peer: String,
    },
    /// A GNUTAR or DUMP DLE: ambackup runs applications only.
    #[error(
        "ambackup works only with application, it doesn't works with GNUTAR or DUMP\nERROR Use the 'amgtar' application instead og the 'GNUTAR' program"
    )]
    NotApplication,
    /// The level policy skips the DLE now (`skip-full`, `skip-incr`).
    #[error("Skipping because of {0}")]
    Skipping(&'static str),
    /// The client lacks XML DLEs or the application API.
    #[error("ambackupd wortks only with newer amanda client")]
    OldClient,
    /// Ours: the server could not do it (the text says what).
    #[error("{0}")]
    Server(String),
}

/// The REP body of a refusal: `ERROR <text>` lines, then an empty line.
pub fn error_reply(r: &Refusal) -> Vec<u8> {
    let mut out = Vec::new();
    for line in r.to_string().split('\n') {
        let line = line.strip_prefix("ERROR ").unwrap_or(line);
        out.extend_from_slice(b"ERROR ");
        out.extend_from_slice(line.as_bytes());
        out.push(b'\n');
    }
    out.push(b'\n');
    out
}

/// Whether `name` can name a configuration directory: not empty, no `/`, not `.` or
/// `..`, no control byte, at most 255 bytes. The name comes from the peer and becomes a
/// path under the config directory.
pub fn valid_config_name(name: &[u8]) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && name != b"."
        && name != b".."
        && !name.iter().any(|&b| b == b'/' || b < b' ' || b == 0x7f)
}

/// Parses what follows `SERVICE ambackupd`: the OPTIONS line, then the command line, of
/// which ambackupd keeps the first two blank-separated words (so a disk name with a blank
/// is cut there, as the real ambackup sends it unquoted).
pub fn parse_request(args: &[u8]) -> Result<Request, Refusal> {
    let mut lines = args.split(|&b| b == b'\n');
    let options = lines
        .next()
        .and_then(Options::parse_line)
        .map(|p| p.options)
        .unwrap_or_default();
    let command_line = lines.next().unwrap_or_default();
    let mut words = command_line
        .split(|&b| b == b' ' || b == b'\t')
        .filter(|w| !w.is_empty());
    let command = match (words.next(), words.next()) {
        (None, _) => return Err(Refusal::NoCommand),
        (Some(b"LISTDLE"), _) => Command::ListDle,
        (Some(b"CHECK"), _) => Command::Check,
        (Some(b"BACKUP"), Some(disk)) => Command::Backup(disk.to_vec()),
        (Some(other), _) => {
            return Err(Refusal::InvalidCommand(
                String::from_utf8_lossy(other).into_owned(),
            ));
        }
    };
    let config = options
        .config
        .as_deref()
        .filter(|c| valid_config_name(c))
        .map(|c| String::from_utf8_lossy(c).into_owned());
    Ok(Request {
        features: options.effective_features(),
        config,
        command,
    })
}

/// A DLE ambackupd serves: `program "APPLICATION"`.
fn is_application(d: &DleSpec) -> bool {
    d.dle.program.as_bytes() == b"APPLICATION" && d.dle.application.is_some()
}

/// The DLEs of `peer` in the disklist, in order.
fn host_dles<'p>(plan: &'p Plan, peer: &str) -> Result<Vec<&'p DleSpec>, Refusal> {
    let host = plan
        .hosts
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case(peer))
        .ok_or_else(|| Refusal::NoHost(peer.to_owned()))?;
    Ok(host.dles.iter().filter_map(|&i| plan.dles.get(i)).collect())
}

/// The APPLICATION DLEs of `peer` (LISTDLE, CHECK).
pub fn application_dles<'p>(plan: &'p Plan, peer: &str) -> Result<Vec<&'p DleSpec>, Refusal> {
    let dles: Vec<&DleSpec> = host_dles(plan, peer)?
        .into_iter()
        .filter(|d| is_application(d))
        .collect();
    if dles.is_empty() {
        return Err(Refusal::NoDle(peer.to_owned()));
    }
    Ok(dles)
}

/// The DLE `disk` of `peer` (BACKUP).
pub fn backup_dle<'p>(plan: &'p Plan, peer: &str, disk: &[u8]) -> Result<&'p DleSpec, Refusal> {
    let d = host_dles(plan, peer)?
        .into_iter()
        .find(|d| d.disk == disk)
        .ok_or_else(|| Refusal::NoSuchDle {
            disk: String::from_utf8_lossy(disk).into_owned(),
            peer: peer.to_owned(),
        })?;
    if !is_application(d) {
        return Err(Refusal::NotApplication);
    }
    if let Some(why) = &d.unsupported {
        return Err(Refusal::Server(format!("{}: {why}", d.label())));
    }
    Ok(d)
}

/// Whether the client can run what ambackupd sends: XML DLEs and applications.
pub fn check_client(client: &Features) -> Result<(), Refusal> {
    if client.has(Feature::REQ_XML) && client.has(Feature::PROGRAM_APPLICATION_API) {
        Ok(())
    } else {
        Err(Refusal::OldClient)
    }
}

/// The LISTDLE reply: a pretty-printed JSON array of message objects (3-space indent, as
/// Perl's JSON module writes it), the whole UTF-8 text. A disk name that is not UTF-8 is
/// shown with U+FFFD.
pub fn listdle_reply(peer: &str, dles: &[&DleSpec]) -> Vec<u8> {
    let items: Vec<serde_json::Value> = dles
        .iter()
        .map(|d| {
            let disk = String::from_utf8_lossy(&d.disk);
            serde_json::json!({
                "source_filename": file!(),
                "source_line": line!().to_string(),
                "severity": "info",
                "code": "5000000",
                "message": format!("DLE {disk}"),
                "host": peer,
                "diskname": disk,
                "device": d.dle.device.as_ref().map(|x| String::from_utf8_lossy(x).into_owned()),
                "process": "ambackupd",
                "running_on": "amanda-server",
                "component": "amanda",
                "module": "amanda",
            })
        })
        .collect();
    let mut out = Vec::new();
    let fmt = serde_json::ser::PrettyFormatter::with_indent(b"   ");
    let mut ser = serde_json::Serializer::with_formatter(&mut out, fmt);
    // Serialising values built above into a Vec cannot fail.
    let _ = serde::Serialize::serialize(&items, &mut ser);
    out.push(b'\n');
    out
}

/// `GOPTIONS features=<ours>;maxdumps=<n>;hostname=<peer>;config=<cfg>` and a newline.
pub fn goptions(ours: &Features, maxdumps: u32, peer: &str, config: &str) -> Vec<u8> {
    format!(
        "GOPTIONS features={};maxdumps={maxdumps};hostname={peer};config={config}\n",
        ours.to_hex()
    )
    .into_bytes()
}

/// The DLE texts, each without its final newline, joined without a separator.
fn joined(texts: impl Iterator<Item = Vec<u8>>) -> Vec<u8> {
    let mut out = Vec::new();
    for mut t in texts {
        if t.last() == Some(&b'\n') {
            t.pop();
        }
        out.extend_from_slice(&t);
    }
    out
}

/// The CHECK reply.
pub fn check_reply(goptions: &[u8], dles: &[&DleSpec], client: &Features) -> Vec<u8> {
    let mut out = goptions.to_vec();
    out.extend(joined(
        dles.iter()
            .map(|d| d.dle.to_xml(XmlLayout::AmbackupdCheck, client)),
    ));
    out
}

/// The streams of a BACKUP and their handles, in CONNECT order: DATA, MESG, INDEX, and
/// STATE when both the client and we (`ours`, what our noop told ambackup) have
/// `fe_sendbackup_stream_state`: ambackup gives amservice one `--stream` per stream our
/// noop features promise, and amservice gives up on a CONNECT naming another.
pub fn backup_streams(client: &Features, ours: &Features) -> Vec<(u32, Stream)> {
    let mut kinds = vec![Stream::Data, Stream::Mesg, Stream::Index];
    if client.has(Feature::SENDBACKUP_STREAM_STATE) && ours.has(Feature::SENDBACKUP_STREAM_STATE) {
        kinds.push(Stream::State);
    }
    StreamHandles::new().zip(kinds).collect()
}

/// The BACKUP reply: the CONNECT line of `streams`, GOPTIONS and the DLE at `level`.
pub fn backup_reply(
    streams: &[(u32, Stream)],
    goptions: &[u8],
    spec: &DleSpec,
    level: i32,
    client: &Features,
) -> Vec<u8> {
    let mut out = b"CONNECT".to_vec();
    for (handle, stream) in streams {
        out.extend_from_slice(format!(" {stream} {handle}").as_bytes());
    }
    out.push(b'\n');
    out.extend_from_slice(goptions);
    let mut dle = spec.dle.clone();
    dle.levels = vec![Level::new(level)];
    out.extend(joined(std::iter::once(
        dle.to_xml(XmlLayout::AmbackupdBackup, client),
    )));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    /// A config like the harness's ambackup-run.sh (spec §14.6's trace).
    fn plan(dir: &Path, disklist: &str) -> Plan {
        std::fs::write(
            dir.join("amanda.conf"),
            format!(
                "org \"t\"\ninfofile \"{d}/curinfo\"\nindexdir \"{d}/index\"\nlogdir \"{d}/log\"\n\
define holdingdisk hd1 {{\n directory \"{d}/holding\"\n}}\nholdingdisk \"hd1\"\n\
define application-tool app_amgtar {{\n plugin \"amgtar\"\n property \"ATIME-PRESERVE\" \"no\"\n}}\n\
define dumptype ambackup {{\n auth \"bsdtcp\"\n program \"APPLICATION\"\n application \"app_amgtar\"\n compress none\n index yes\n record yes\n}}\n\
define dumptype ambackup-gnutar {{\n auth \"bsdtcp\"\n program \"GNUTAR\"\n compress none\n index yes\n}}\n",
                d = dir.display()
            ),
        )
        .unwrap();
        std::fs::write(dir.join("disklist"), disklist).unwrap();
        crate::plan::load(&dir.join("amanda.conf").display().to_string()).unwrap()
    }

    const TWO: &str = "localhost /tmp/amanda-harness/data-ambackup/second_dle ambackup\n\
localhost /tmp/amanda-harness/data/plain ambackup\nlocalhost /g ambackup-gnutar\n";

    fn features() -> Features {
        Features::parse(b"ffffffff9efefbfffffffffffffff3fffbf71f").unwrap()
    }

    #[test]
    fn commands_are_read_as_ambackupd_reads_them() {
        let r = parse_request(b"OPTIONS features=ffffffff9efefbfffffffffffffff3fffbf71f;hostname=localhost;config=ab;\nBACKUP /tmp/dle with space\n").unwrap();
        assert_eq!(r.command, Command::Backup(b"/tmp/dle".to_vec()));
        assert_eq!(r.config.as_deref(), Some("ab"));
        assert_eq!(
            parse_request(b"OPTIONS config=ab;\n").unwrap_err(),
            Refusal::NoCommand
        );
        assert_eq!(
            parse_request(b"OPTIONS config=ab;\nFROB x\n").unwrap_err(),
            Refusal::InvalidCommand("FROB".into())
        );
        // A config name is a directory name, never a path.
        for bad in ["..", ".", ""] {
            let r = parse_request(format!("OPTIONS config={bad};\nLISTDLE\n").as_bytes());
            assert_eq!(r.unwrap().config, None, "{bad:?}");
        }
        let r = parse_request(b"OPTIONS config=../../etc;\nLISTDLE\n").unwrap();
        assert_eq!(r.config, None);
    }

    // issue 14: the real ambackupd's error replies, byte for byte (traces ambackup-errors/).
    #[test]
    fn refusals_are_the_real_error_replies() {
        let dir = tempfile::tempdir().unwrap();
        let p = plan(dir.path(), TWO);
        let e = backup_dle(&p, "localhost", b"/no/such/dle").unwrap_err();
        assert_eq!(
            error_reply(&e),
            b"ERROR No '/no/such/dle' dle for host 'localhost'\n\n"
        );
        let e = application_dles(&p, "elsewhere").unwrap_err();
        assert_eq!(error_reply(&e), b"ERROR No host 'elsewhere'\n\n");
        let e = backup_dle(&p, "localhost", b"/g").unwrap_err();
        let body = error_reply(&e);
        assert_eq!(body.len(), 149, "{}", String::from_utf8_lossy(&body));
        assert!(body.starts_with(b"ERROR ambackup works only with application, it doesn't works with GNUTAR or DUMP\nERROR Use the 'amgtar' application instead og the 'GNUTAR' program\n\n"));
        let p = plan(dir.path(), "localhost /g ambackup-gnutar\n");
        let e = application_dles(&p, "localhost").unwrap_err();
        assert_eq!(error_reply(&e), b"ERROR No dle for host 'localhost'\n\n");
    }

    #[test]
    fn check_and_backup_replies_match_the_trace() {
        let dir = tempfile::tempdir().unwrap();
        let p = plan(dir.path(), TWO);
        let f = features();
        let g = goptions(&f, 1, "localhost", "ab-bsdtcp-10063-10535");
        let dles = application_dles(&p, "LOCALHOST").unwrap();
        assert_eq!(dles.len(), 2);
        let body = check_reply(&g, &dles, &f);
        let dle = |disk: &str, middle: &str| {
            format!(
                "<dle>\n  <program>APPLICATION</program>\n  <backup-program>\n    <plugin>amgtar</plugin>\n    <property>\n      <name>atime-preserve</name>\n      <value>no</value>\n    </property>\n  </backup-program>\n{middle}  <disk>{disk}</disk>\n"
            )
        };
        let expected = format!(
            "GOPTIONS features=ffffffff9efefbfffffffffffffff3fffbf71f;maxdumps=1;hostname=localhost;config=ab-bsdtcp-10063-10535\n{}  <record>YES</record>\n  <index>YES</index>\n</dle>{}  <record>YES</record>\n  <index>YES</index>\n</dle>",
            dle(
                "/tmp/amanda-harness/data-ambackup/second_dle",
                "  <estimate>CLIENT </estimate>\n"
            ),
            dle(
                "/tmp/amanda-harness/data/plain",
                "  <estimate>CLIENT </estimate>\n"
            ),
        );
        assert_eq!(String::from_utf8_lossy(&body), expected);

        let streams = backup_streams(&f, &f);
        let body = backup_reply(&streams, &g, dles[0], 0, &f);
        let expected = format!(
            "CONNECT DATA 499999 MESG 499998 INDEX 499997 STATE 499996\nGOPTIONS features=ffffffff9efefbfffffffffffffff3fffbf71f;maxdumps=1;hostname=localhost;config=ab-bsdtcp-10063-10535\n{}  <level>0</level>\n  <record>YES</record>\n  <index>YES</index>\n</dle>",
            dle("/tmp/amanda-harness/data-ambackup/second_dle", "")
        );
        assert_eq!(String::from_utf8_lossy(&body), expected);
        // Without feature 117 on either side there is no STATE stream.
        let old = f.clone().without(Feature::SENDBACKUP_STREAM_STATE);
        assert_eq!(backup_streams(&old, &f).len(), 3);
        assert_eq!(backup_streams(&f, &old).len(), 3);
    }

    // issue 14: 3.5.1 cut a LISTDLE reply with non-ASCII names short (spec §14.3).
    #[test]
    fn a_listdle_reply_with_non_ascii_names_is_whole_json() {
        let dir = tempfile::tempdir().unwrap();
        let p = plan(
            dir.path(),
            "localhost \"/tmp/dle with space é\" ambackup\nlocalhost /b ambackup\n",
        );
        let dles = application_dles(&p, "localhost").unwrap();
        let body = listdle_reply("localhost", &dles);
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let messages: Vec<&str> = v
            .as_array()
            .unwrap()
            .iter()
            .map(|o| o["message"].as_str().unwrap())
            .collect();
        assert_eq!(messages, ["DLE /tmp/dle with space é", "DLE /b"]);
        assert_eq!(v[0]["host"], "localhost");
        assert_eq!(v[0]["device"], serde_json::Value::Null);
    }
}
