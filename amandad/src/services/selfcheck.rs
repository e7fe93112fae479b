//! selfcheck (spec §6.5): amcheck's questions to the client, answered with the real client's
//! messages (client-src/selfcheck.c, and amgtar.c amgtar_selfcheck for application DLEs).
//!
//! For every DLE: the auth check, whether the disk exists (legacy GNUTAR: `access(F_OK)` of
//! the directory) or, for amgtar, the application's own checks (tar present and executable
//! and its version, the listed-incremental directory read/writable, the directory
//! readable); then the host-wide checks: the privileged helper and tar, the list
//! directory or amandates, /dev/null, free space. The reply is `MESSAGE JSON` objects when
//! the server has feature 113 (every 3.5 server), else `OK`/`ERROR [...]` lines; both come
//! from `proto::selfcheck`, with the real message codes, texts and argument orders.
//!
//! Where we differ on purpose:
//! * the privileged helper is `amandad-runtar`; when it is missing or not setuid root the
//!   check is a *warning* (tar then runs as the Amanda user), not an error;
//! * the amgtar directory check runs as the Amanda user; when that is refused and the helper
//!   is usable, the helper itself probes the directory as root (tar `--no-recursion`), which
//!   is what the backup will do;
//! * client compression with gzip is in-process, so `/bin/gzip` is not checked; a custom
//!   compressor or an encryption program is checked instead (absolute, a file, executable
//!   by the Amanda user), which the real client does not do (issue 12);
//! * kencrypt, DUMP and applications other than amgtar are errors (we do not implement
//!   them, and do not advertise them);
//! * host-specific values (uids, free space, versions of tar) are ours.
//!
//! Over bsd and bsdudp the whole reply must fit in one datagram (65,503 bytes); the JSON
//! form takes about 3 KB per amgtar DLE, so a host with a few dozen DLEs does not fit. The
//! real amandad cuts such a reply and amcheck then reports "0 problems found" for DLEs
//! nobody saw; never sending it (our first version) left amcheck waiting for a timeout.
//! [`fit_datagram`] sends what fits, errors first, and says in the reply itself, as an
//! error amcheck shows, how many DLEs are left out and that auth bsdtcp has no such limit.
//!
//! What this module must not do: block the event loop (the checks run as a job), or report
//! a check we did not make, or as checked a DLE whose results were left out.

use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use proto::dataphase::{FilterChain, Stage};
use proto::dle::{Dle, Estimate};
use proto::selfcheck::{JsonMessage, Origin, ReplyWriter, Severity, msg};

use crate::services::context::SPACE_CHECK_DIRS;
use crate::services::request::head;
use crate::services::util::{euid_access, lossy, uids};
use crate::services::{ServiceContext, Start};
use crate::tar::exinclude::{self, ListPlace};
use crate::tar::gnutar::{self, Launch, PropProblem, TarSetup};

/// Starts a selfcheck: every check runs in the returned job.
pub fn start(ctx: &ServiceContext, args: &[u8]) -> Start {
    let ctx = ctx.clone();
    let args = args.to_vec();
    Start::Job(Box::new(move |_partial| Check::new(ctx).run(&args)))
}

/// What the host-wide checks must cover (selfcheck.c's `need_*` flags).
#[derive(Debug, Default)]
struct Needs {
    runtar: bool,
    gnutar: bool,
    amandates: bool,
    global: bool,
}

/// One piece of the reply, in the order the checks made it.
#[derive(Clone, Debug)]
enum Item {
    /// Request diagnostics, already in their wire form.
    Raw(Vec<u8>),
    /// A message about the host (`None`) or about DLE number `n`.
    Msg(Option<usize>, Box<JsonMessage>),
}

struct Check {
    ctx: ServiceContext,
    /// The reply's form; `None` until the request's OPTIONS are read.
    writer: Option<ReplyWriter>,
    items: Vec<Item>,
    /// The DLE being checked, if any.
    dle: Option<usize>,
    dles: usize,
    hostname: Vec<u8>,
    needs: Needs,
}

/// A message not in proto's 3.5.1 table (our own checks), in the same shape.
fn custom(
    origin: Origin,
    code: i32,
    severity: Severity,
    file: &str,
    args: &[(&str, &[u8])],
    text: String,
) -> JsonMessage {
    JsonMessage::custom(origin, code, severity, file, args, text.as_bytes())
}

fn build(origin: Origin, code: i32, args: &[(&str, &[u8])], errno: Option<i32>) -> JsonMessage {
    JsonMessage::build(origin, code, args, errno).unwrap_or_else(|| {
        custom(
            origin,
            code,
            Severity::Error,
            "selfcheck.c",
            args,
            format!("message {code}"),
        )
    })
}

/// `m` as a warning that ends with what it means for the backup (`consequence`).
fn warning(mut m: JsonMessage, consequence: &str) -> JsonMessage {
    m.severity = Severity::Warning;
    m.message = format!("{}: {consequence}", lossy(&m.message))
        .into_bytes()
        .into();
    m
}

/// `get_platform_and_distro`, computed once.
fn platform_and_distro() -> &'static (String, String) {
    static P: OnceLock<(String, String)> = OnceLock::new();
    P.get_or_init(|| {
        let first_line = |args: &[&str]| -> Option<String> {
            let out = std::process::Command::new(args[0])
                .args(&args[1..])
                .env_clear()
                .stderr(std::process::Stdio::null())
                .output()
                .ok()?;
            let line = lossy(out.stdout.split(|b| *b == b'\n').next()?);
            let line = line
                .strip_prefix('"')
                .and_then(|l| l.strip_suffix('"'))
                .map(str::to_owned)
                .unwrap_or(line);
            (!line.is_empty()).then_some(line)
        };
        let first_file_line = |p: &str| {
            std::fs::read(p)
                .ok()
                .map(|b| lossy(b.split(|c| *c == b'\n').next().unwrap_or_default()))
        };
        let (platform, distro) = if Path::new("/usr/bin/lsb_release").exists() {
            (
                first_line(&["/usr/bin/lsb_release", "--description", "-s"]),
                first_line(&["/usr/bin/lsb_release", "--id", "-s"]),
            )
        } else if let Some(l) = first_file_line("/etc/redhat-release") {
            (Some(l), Some("RPM".to_owned()))
        } else if let Some(l) = first_file_line("/etc/debian_version") {
            (Some(l), Some("Debian".to_owned()))
        } else {
            (None, None)
        };
        (
            platform.unwrap_or_else(|| "Unknown".into()),
            distro.unwrap_or_else(|| "Unknown".into()),
        )
    })
}

/// `check_access_message`'s noun and adjective for a mode.
fn noun_adjective(mode: libc::c_int) -> (&'static str, &'static str) {
    if mode == libc::F_OK {
        ("find", "exists")
    } else if mode & libc::X_OK == libc::X_OK {
        ("execute", "executable")
    } else if mode & (libc::W_OK | libc::R_OK) == (libc::W_OK | libc::R_OK) {
        ("read/write", "read/writable")
    } else {
        ("access", "accessible")
    }
}

fn access_message(origin: Origin, path: &Path, mode: libc::c_int) -> JsonMessage {
    let (noun, adjective) = noun_adjective(mode);
    let (r, e) = uids();
    msg::access(
        origin,
        path.as_os_str().as_bytes(),
        noun,
        adjective,
        euid_access(path, mode).err(),
        r,
        e,
    )
}

/// The errors of building a DLE's exclude/include lists, as `origin` reports them.
fn list_errors(origin: Origin, lists: &exinclude::ExInclude, disk: &[u8]) -> Vec<JsonMessage> {
    lists
        .messages
        .iter()
        .filter(|m| !m.info)
        .map(|m| {
            custom(
                origin,
                m.code,
                Severity::Error,
                "client_util.c",
                &[("disk", disk)],
                m.text.clone(),
            )
        })
        .collect()
}

/// `check_file_message`.
fn file_message(origin: Origin, path: &Path, mode: libc::c_int) -> JsonMessage {
    path_message(origin, path, mode, false)
}

/// `check_dir_message`.
fn dir_message(origin: Origin, path: &Path, mode: libc::c_int) -> JsonMessage {
    path_message(origin, path, mode, true)
}

/// What the two checks share: stat `path`, check its type, then its access (a directory's
/// as `path/.`).
fn path_message(origin: Origin, path: &Path, mode: libc::c_int, dir: bool) -> JsonMessage {
    let name = path.as_os_str().as_bytes();
    match std::fs::metadata(path) {
        Err(e) => {
            let errno = e.raw_os_error().unwrap_or(libc::EIO);
            if dir {
                msg::cannot_stat_dir(origin, name, errno)
            } else {
                msg::cannot_stat_file(origin, name, errno)
            }
        }
        Ok(m) if dir && !m.is_dir() => msg::not_a_directory(origin, name),
        Ok(m) if !dir && !m.is_file() => msg::not_a_file(origin, name),
        Ok(_) if dir => access_message(origin, &path.join("."), mode),
        Ok(_) => access_message(origin, path, mode),
    }
}

impl Check {
    fn new(ctx: ServiceContext) -> Check {
        Check {
            ctx,
            writer: None,
            items: Vec::new(),
            dle: None,
            dles: 0,
            hostname: Vec::new(),
            needs: Needs::default(),
        }
    }

    fn emit(&mut self, m: &JsonMessage) {
        self.items.push(Item::Msg(self.dle, Box::new(m.clone())));
    }

    fn run(mut self, args: &[u8]) -> Vec<u8> {
        let h = match head(&self.ctx, args) {
            Some(h) => h,
            None => return b"ERROR [Missing OPTIONS line in selfcheck input]\n".to_vec(),
        };
        self.items.push(Item::Raw(h.diagnostics.clone()));
        self.writer = Some(ReplyWriter::new(&h.server));
        self.check(&h);
        let (Some(writer), Some(limit)) = (self.writer.clone(), self.datagram_limit()) else {
            return render(self.writer.clone(), &self.items);
        };
        let auth = self.ctx.auth.clone();
        fit_datagram(writer, &self.items, self.dles, limit, &auth)
    }

    /// The most a reply body may have over bsd/bsdudp (one datagram with its header line).
    fn datagram_limit(&self) -> Option<usize> {
        (self.ctx.auth != "bsdtcp").then_some(MAX_UDP_BODY)
    }

    fn check(&mut self, h: &crate::services::request::Head) {
        self.hostname = h.hostname.clone();
        let host = self.hostname.clone();
        let (platform, distro) = platform_and_distro();
        self.emit(&msg::version(&host));
        self.emit(&msg::distro(distro.as_bytes(), &host));
        self.emit(&msg::platform(platform.as_bytes(), &host));
        self.emit(&msg::options(self.ctx.features_hex.as_bytes(), &host));
        if h.input.extra_options_lines > 0 {
            self.emit(&msg::multiple_options());
            return;
        }
        if let Some(xml) = &h.input.xml {
            let dles = match proto::dle::xml::parse_dles(xml) {
                Ok(d) => d,
                Err(e) => {
                    self.emit(&msg::format_error(
                        Some(e.amanda_message().as_bytes()),
                        &host,
                    ));
                    return;
                }
            };
            for (i, dle) in dles.iter().enumerate() {
                self.dle = Some(i);
                self.dles = i + 1;
                self.check_options(dle);
                self.check_disk(dle);
            }
        } else {
            for (i, line) in h.input.legacy_lines.iter().enumerate() {
                self.dle = Some(i);
                self.dles = i + 1;
                match proto::dle::legacy::LegacyLine::parse_selfcheck(line, &h.server) {
                    Ok(l) => {
                        for d in &l.diagnostics {
                            self.items.push(Item::Raw(d.error_line()));
                        }
                        if l.options.is_none() {
                            // "check all since no option"
                            self.needs.runtar = true;
                            self.needs.gnutar = true;
                            self.needs.global = true;
                        }
                        self.check_options(&l.dle);
                        self.check_disk(&l.dle);
                    }
                    Err(_) => {
                        self.dle = None;
                        self.emit(&msg::format_error(None, &host));
                        return;
                    }
                }
            }
        }
        self.dle = None;
        self.check_security_file();
        self.check_overall();
    }

    fn names(dle: &Dle) -> (Vec<u8>, Vec<u8>) {
        let disk = dle.disk.as_ref().map(|d| d.to_vec()).unwrap_or_default();
        let device = dle
            .effective_device()
            .map(|d| d.to_vec())
            .unwrap_or_else(|| disk.clone());
        (disk, device)
    }

    /// selfcheck.c check_options.
    fn check_options(&mut self, dle: &Dle) {
        let (disk, device) = Self::names(dle);
        let host = self.hostname.clone();
        let dev_args: [(&str, &[u8]); 3] =
            [("hostname", &host), ("device", &device), ("disk", &disk)];
        if dle.program == "GNUTAR" {
            self.needs.gnutar = true;
            if device.starts_with(b"//") {
                // Samba shares: the real client checks smbclient; we have no Samba support,
                // which check_disk reports.
            } else {
                let dir = gnutar::amname_to_dirname(&device);
                let place = ListPlace {
                    tmp_dir: &self.ctx.tar.tmp_dir,
                    prog: "selfcheck",
                    disk: &disk,
                    dir: &dir,
                };
                let lists = exinclude::build(
                    dle.exclude.as_ref().unwrap_or(&Default::default()),
                    dle.include.as_ref().unwrap_or(&Default::default()),
                    &place,
                );
                for m in list_errors(Origin::SELFCHECK, &lists, &disk) {
                    self.emit(&m);
                }
                self.needs.runtar = true;
            }
        }
        if dle.program == "DUMP" {
            self.emit(&build(
                Origin::SELFCHECK,
                3_600_072,
                &[("hostname", &host)],
                None,
            ));
        }
        let mut unsupported: Option<String> = dle
            .kencrypt
            .then(|| "kencrypt is not supported by this client (amanda-rs)".into());
        // issue 12: the programs the dump will start, as the Amanda user starts them.
        match FilterChain::of(&dle.compress, &dle.encrypt) {
            Err(e) => unsupported = Some(e.to_string()),
            Ok(chain) => match crate::services::request::filter_refusal(&self.ctx, &chain) {
                Some(why) => unsupported = Some(why),
                None => {
                    for stage in &chain.client {
                        if let Stage::CustomCompress(p) | Stage::Encrypt { program: p, .. } = stage
                        {
                            let path = Path::new(std::ffi::OsStr::from_bytes(p.as_bytes()));
                            self.emit(&file_message(Origin::SELFCHECK, path, libc::X_OK));
                        }
                    }
                }
            },
        }
        if let Some(why) = unsupported {
            let app = dle
                .application
                .as_ref()
                .map(|a| a.plugin.to_vec())
                .unwrap_or_else(|| dle.program.to_vec());
            self.emit(&build(
                Origin::SELFCHECK,
                3_600_058,
                &[
                    ("application", &app),
                    ("errstr", why.as_bytes()),
                    dev_args[0],
                    dev_args[1],
                    dev_args[2],
                ],
                None,
            ));
        }
        if let Some((ours, theirs)) = crate::services::request::auth_mismatch(&self.ctx, dle) {
            let theirs = theirs.to_vec();
            self.emit(&msg::auth_mismatch(
                ours.as_bytes(),
                &theirs,
                &host,
                &device,
                &disk,
            ));
            let code = if theirs == b"ssh" {
                3_600_018
            } else {
                3_600_019
            };
            self.emit(&build(Origin::SELFCHECK, code, &dev_args, None));
        }
    }

    /// selfcheck.c check_disk.
    fn check_disk(&mut self, dle: &Dle) {
        let (disk, device) = Self::names(dle);
        let host = self.hostname.clone();
        let dev_args: [(&str, &[u8]); 3] =
            [("hostname", &host), ("device", &device), ("disk", &disk)];
        if dle.disk.is_none() {
            return;
        }
        self.needs.global = true;
        if dle.first_estimate() == Estimate::Calcsize && device.starts_with(b"//") {
            self.emit(&build(Origin::SELFCHECK, 3_600_020, &dev_args, None));
            return;
        }
        if dle.program == "APPLICATION" {
            match &dle.application {
                Some(app) if app.plugin == "amgtar" => self.check_amgtar(dle),
                Some(app) => {
                    let plugin = app.plugin.to_vec();
                    self.emit(&build(
                        Origin::SELFCHECK,
                        3_600_033,
                        &[
                            ("application", &plugin),
                            dev_args[0],
                            dev_args[1],
                            dev_args[2],
                        ],
                        None,
                    ));
                }
                None => {}
            }
            return;
        }
        let mut errors = 0;
        if dle.program == "GNUTAR" {
            if device.starts_with(b"//") {
                self.emit(&build(Origin::SELFCHECK, 3_600_030, &dev_args, None));
                return;
            }
            let dir = gnutar::amname_to_dirname(&device);
            if let Err(errno) = euid_access(&dir, libc::F_OK) {
                self.emit(&msg::could_not_access(
                    errno, b"access", &host, &device, &disk,
                ));
                errors += 1;
            }
        } else if dle.program == "DUMP" {
            return;
        }
        if errors == 0 {
            self.emit(&msg::disk_ok(&host, &device, &disk));
            self.emit(&msg::amdevice_ok(&host, &device, &disk));
            self.emit(&build(Origin::SELFCHECK, 3_600_054, &dev_args, None));
        }
    }

    /// amgtar's selfcheck, relayed as the real selfcheck relays it.
    fn check_amgtar(&mut self, dle: &Dle) {
        let (disk, _) = Self::names(dle);
        let host = self.hostname.clone();
        let setup = match TarSetup::new(&self.ctx, dle, &host) {
            Ok(s) => s,
            Err(e) => {
                self.emit(&custom(
                    Origin::AMGTAR,
                    3_600_058,
                    Severity::Error,
                    "selfcheck.c",
                    &[],
                    e.to_string(),
                ));
                return;
            }
        };
        let device = setup.device.clone();
        let ident: [(&str, &[u8]); 3] = [("disk", &disk), ("device", &device), ("hostname", &host)];
        // getopt's complaints reach selfcheck on amgtar's stderr, printed before its JSON.
        for p in &setup.props.problems {
            if let PropProblem::Getopt(text) = p {
                self.emit(&build(
                    Origin::SELFCHECK,
                    3_600_047,
                    &[
                        ("application", b"amgtar"),
                        ("errstr", text.as_bytes()),
                        ("hostname", &host),
                        ("device", &device),
                        ("disk", &disk),
                    ],
                    None,
                ));
            }
        }
        let mut relayed: Vec<JsonMessage> = Vec::new();
        for p in &setup.props.problems {
            if let PropProblem::BadValue { code, value, .. } = p {
                let key = if *code == 3_700_015 {
                    "property_value"
                } else {
                    "value"
                };
                relayed.push(build(
                    Origin::AMGTAR,
                    *code,
                    &[(key, value.as_bytes()), ident[0], ident[1], ident[2]],
                    None,
                ));
            }
        }
        relayed.push(msg::amgtar_disk(&disk, &device, &host));
        relayed.push(msg::amgtar_version(&disk, &device, &host));
        let place = ListPlace {
            tmp_dir: &self.ctx.tar.tmp_dir,
            prog: "amgtar",
            disk: &disk,
            dir: &setup.directory,
        };
        let lists = exinclude::build(&setup.exclude, &setup.include, &place);
        relayed.extend(list_errors(Origin::AMGTAR, &lists, &disk));
        drop(lists);
        relayed.push(msg::amgtar_ok(&disk, &device, &host));
        if let Some(bad) = setup
            .props
            .command_options
            .iter()
            .find(|o| !gnutar::command_option_allowed(o))
        {
            relayed.push(build(
                Origin::AMGTAR,
                3_700_014,
                &[
                    ident[0],
                    ident[1],
                    ident[2],
                    ("command-options", bad.as_bytes()),
                ],
                None,
            ));
        }
        let not_allowed = setup.props.problems.iter().find_map(|p| match p {
            PropProblem::NotAllowed(t) if t.contains("GNUTAR_PATH") => Some(t.clone()),
            _ => None,
        });
        if let Some(t) = not_allowed {
            relayed.push(custom(
                Origin::AMGTAR,
                3_600_092,
                Severity::Error,
                "client_util.c",
                &[("filename", setup.tar.as_os_str().as_bytes())],
                t,
            ));
        } else {
            let m = file_message(Origin::AMGTAR, &setup.tar, libc::X_OK);
            let ok = m.severity == Severity::Info;
            relayed.push(m);
            if ok {
                match gnutar::version_line(&setup.tar) {
                    Some(line) => relayed.push(msg::amgtar_gtar_version(
                        gnutar::version_number(&line).as_bytes(),
                        &disk,
                        &device,
                        &host,
                    )),
                    None => relayed.push(msg::amgtar_cannot_get_version(
                        setup.tar.as_os_str().as_bytes(),
                        &disk,
                        &device,
                        &host,
                    )),
                }
            }
        }
        for p in &setup.props.problems {
            if let PropProblem::NotAllowed(t) = p
                && t.contains("GNUTAR-LISTDIR")
            {
                relayed.push(custom(
                    Origin::AMGTAR,
                    3_700_006,
                    Severity::Error,
                    "amgtar.c",
                    &ident,
                    t.clone(),
                ));
            }
        }
        match &setup.list_dir {
            Some(d) => relayed.push(dir_message(Origin::AMGTAR, d, libc::R_OK | libc::W_OK)),
            None => relayed.push(msg::amgtar_no_listdir(&disk, &device, &host)),
        }
        relayed.push(self.directory_as_root(&setup.directory));
        for m in relayed {
            self.emit(&m.relayed());
        }
    }

    /// amgtar checks the directory as root; we check it as ourselves, and let the helper
    /// probe it as root when we are refused and the helper is there.
    fn directory_as_root(&self, dir: &Path) -> JsonMessage {
        let m = dir_message(Origin::AMGTAR, dir, libc::R_OK);
        if m.code != 3_600_063 {
            return m;
        }
        let Launch::Helper(helper) = gnutar::launch(&self.ctx) else {
            return m;
        };
        let mut directory = std::ffi::OsString::from("--directory=");
        directory.push(dir);
        let ok = std::process::Command::new(&helper)
            .arg(&self.ctx.tar.gnutar_path)
            .args(["--create", "--file=/dev/null", "--no-recursion"])
            .arg(directory)
            .arg(".")
            .env_clear()
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            msg::access(
                Origin::AMGTAR,
                dir.join(".").as_os_str().as_bytes(),
                "access",
                "accessible",
                None,
                0,
                0,
            )
        } else {
            m
        }
    }

    /// check_security_file_permission_message: only when the file exists (it is optional
    /// for us: the helper has built-in defaults).
    fn check_security_file(&mut self) {
        let path = self.ctx.security_file();
        if std::fs::symlink_metadata(path).is_err() {
            return;
        }
        if let Err(e) = conf::security::load(path) {
            let text = e.messages().join("; ");
            self.emit(&custom(
                Origin::SELFCHECK,
                3_600_098,
                Severity::Error,
                "security-file.c",
                &[("security_file", path.as_os_str().as_bytes())],
                text,
            ));
        }
    }

    /// selfcheck.c check_overall.
    fn check_overall(&mut self) {
        if self.needs.runtar {
            self.check_helper();
        }
        if self.needs.gnutar {
            let tar = self.ctx.tar.gnutar_path.clone();
            self.emit(&file_message(Origin::SELFCHECK, &tar, libc::X_OK));
            match self.ctx.tar.list_dir().map(Path::to_path_buf) {
                Some(d) => self.emit(&dir_message(Origin::SELFCHECK, &d, libc::R_OK | libc::W_OK)),
                None => self.needs.amandates = true,
            }
        }
        if self.needs.amandates {
            let a = self.ctx.tar.amandates.clone();
            self.emit(&file_message(
                Origin::SELFCHECK,
                &a,
                libc::R_OK | libc::W_OK,
            ));
        }
        if self.needs.global {
            self.emit(&access_message(
                Origin::SELFCHECK,
                Path::new("/dev/null"),
                libc::R_OK | libc::W_OK,
            ));
            let host = self.hostname.clone();
            let mut dirs: Vec<PathBuf> = vec![self.ctx.tar.tmp_dir.clone()];
            dirs.extend(SPACE_CHECK_DIRS.iter().skip(1).map(PathBuf::from));
            for d in dirs {
                let avail = match nix::sys::statvfs::statvfs(&d) {
                    Ok(s) => Ok(
                        i64::try_from(s.blocks_available() / 1024 * s.fragment_size())
                            .unwrap_or(i64::MAX),
                    ),
                    Err(e) => Err(e as i32),
                };
                self.emit(&msg::space(d.as_os_str().as_bytes(), avail, 64, &host));
            }
        }
    }

    /// The helper's checks: executable, setuid root, and allowed to run our tar. A helper
    /// that is missing or not setuid is a warning: tar then runs as the Amanda user.
    fn check_helper(&mut self) {
        let user = crate::tar::runtar::AMANDA_USER;
        let consequence = format!("tar runs as {user} and backs up only what {user} can read");
        let Some(helper) = self.ctx.tar.runtar_path.clone() else {
            self.emit(&custom(
                Origin::SELFCHECK,
                3_600_060,
                Severity::Warning,
                "selfcheck.c",
                &[],
                format!("amandad-runtar is not installed: {consequence}"),
            ));
            return;
        };
        let bytes = helper.as_os_str().as_bytes().to_vec();
        match std::fs::metadata(&helper) {
            Err(e) => {
                let errno = e.raw_os_error().unwrap_or(libc::EIO);
                let m = msg::cannot_stat_file(Origin::SELFCHECK, &bytes, errno);
                self.emit(&warning(m, &consequence));
                return;
            }
            Ok(md) => {
                self.emit(&access_message(Origin::SELFCHECK, &helper, libc::X_OK));
                let problem = if md.uid() != 0 {
                    Some(msg::not_owned_by_root(Origin::SELFCHECK, &bytes))
                } else if md.permissions().mode() & 0o4000 == 0 {
                    Some(msg::not_suid_root(Origin::SELFCHECK, &bytes))
                } else {
                    None
                };
                if let Some(m) = problem {
                    self.emit(&warning(m, &consequence));
                    return;
                }
            }
        }
        let conf = gnutar::load_security(&self.ctx).unwrap_or_default();
        let policy = crate::tar::runtar::Policy::from_security_conf(&conf);
        if let Err(e) = crate::tar::runtar::check_tar(&self.ctx.tar.gnutar_path, &policy) {
            self.emit(&custom(
                Origin::SELFCHECK,
                3_600_092,
                Severity::Error,
                "selfcheck.c",
                &[("filename", self.ctx.tar.gnutar_path.as_os_str().as_bytes())],
                format!(
                    "amandad-runtar will not run {}: {e}",
                    self.ctx.tar.gnutar_path.display()
                ),
            ));
        }
    }
}

/// The largest reply body that fits in one datagram whatever its header line.
pub const MAX_UDP_BODY: usize = proto::udp::MAX_DGRAM - proto::udp::MAX_HEADER_LINE;

/// One message in the reply's form.
fn message_bytes(writer: &mut ReplyWriter, m: &JsonMessage) -> Vec<u8> {
    if writer.is_json() {
        return writer.message(m);
    }
    // Legacy servers count every line that is neither `OK` nor `ERROR` as an error: our
    // warnings (the real client has none) go out as `OK` lines there.
    if m.severity == Severity::Warning {
        let mut info = m.clone();
        info.severity = Severity::Info;
        return info.legacy_line();
    }
    m.legacy_line()
}

/// The reply with every item, in order.
fn render(writer: Option<ReplyWriter>, items: &[Item]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut writer = writer;
    let mut header_done = false;
    for item in items {
        match item {
            Item::Raw(b) => out.extend_from_slice(b),
            Item::Msg(_, m) => {
                let Some(w) = writer.as_mut() else { continue };
                if !header_done {
                    out.extend_from_slice(w.header());
                    header_done = true;
                }
                out.extend(message_bytes(w, m));
            }
        }
    }
    if !header_done && let Some(w) = &writer {
        out.extend_from_slice(w.header());
    }
    out
}

/// The reply cut to `limit` bytes when it is longer: the messages about the host up to the
/// first DLE's (version, OPTIONS), a notice, every error, the other host-wide checks, then
/// whole DLEs as long as they fit. The notice, an error, says how many of the `dles` DLEs
/// are left out (not every message of theirs is in the reply): amcheck shows it and counts
/// a problem, so no DLE passes as checked that was not reported.
fn fit_datagram(
    writer: ReplyWriter,
    items: &[Item],
    dles: usize,
    limit: usize,
    auth: &str,
) -> Vec<u8> {
    let whole = render(Some(writer.clone()), items);
    if whole.len() <= limit {
        return whole;
    }
    // Sizes in the reply's form (a JSON message after the first also carries ",\n").
    let size = |item: &Item| -> usize {
        match item {
            Item::Raw(b) => b.len(),
            Item::Msg(_, m) if writer.is_json() => m.encode().len() + 2,
            Item::Msg(_, m) => message_bytes(&mut writer.clone(), m).len(),
        }
    };
    let first_dle = items
        .iter()
        .position(|i| matches!(i, Item::Msg(Some(_), _)))
        .unwrap_or(items.len());
    let is_error = |item: &Item| match item {
        Item::Raw(_) => true,
        Item::Msg(_, m) => m.severity == Severity::Error,
    };
    let notice = |left_out: usize| {
        custom(
            Origin::SELFCHECK,
            3_600_099,
            Severity::Error,
            "selfcheck.c",
            &[],
            format!(
                "the selfcheck reply for {dles} DLEs is {} bytes, more than one UDP datagram of auth {auth} holds ({} bytes): the results of {left_out} DLEs are left out and count as not checked; auth bsdtcp has no such limit",
                whole.len(),
                proto::udp::MAX_DGRAM
            ),
        )
    };
    // Room for the notice with the widest count it can have.
    let mut used = writer.header().len() + size(&Item::Msg(None, Box::new(notice(dles))));
    let mut keep = vec![false; items.len()];
    let take = |i: usize, used: &mut usize, keep: &mut Vec<bool>| -> bool {
        let n = size(&items[i]);
        if *used + n > limit {
            return false;
        }
        *used += n;
        keep[i] = true;
        true
    };
    let errors: Vec<usize> = (first_dle..items.len())
        .filter(|&i| is_error(&items[i]))
        .collect();
    let host: Vec<usize> = (first_dle..items.len())
        .filter(|&i| matches!(items[i], Item::Msg(None, _)) && !is_error(&items[i]))
        .collect();
    for &i in (0..first_dle)
        .collect::<Vec<_>>()
        .iter()
        .chain(&errors)
        .chain(&host)
    {
        take(i, &mut used, &mut keep);
    }
    // Whole DLEs, in order, while they fit.
    let group = |i: usize| match &items[i] {
        Item::Msg(Some(g), _) => Some(*g),
        _ => None,
    };
    let mut full = true;
    for g in 0..dles {
        let members: Vec<usize> = (0..items.len()).filter(|&i| group(i) == Some(g)).collect();
        let need: usize = members
            .iter()
            .filter(|&&i| !keep[i])
            .map(|&i| size(&items[i]))
            .sum();
        if full && used + need <= limit {
            used += need;
            for i in members {
                keep[i] = true;
            }
        } else {
            full = false;
        }
    }
    let left_out = (0..dles)
        .filter(|&g| (0..items.len()).any(|i| group(i) == Some(g) && !keep[i]))
        .count();
    let mut kept: Vec<Item> = Vec::new();
    let mut order: Vec<usize> = (0..first_dle).collect();
    order.extend(&errors);
    order.extend(&host);
    order.extend((first_dle..items.len()).filter(|&i| group(i).is_some() && !is_error(&items[i])));
    for (n, i) in order.into_iter().enumerate() {
        if n == first_dle {
            kept.push(Item::Msg(None, Box::new(notice(left_out))));
        }
        if keep[i] {
            kept.push(items[i].clone());
        }
    }
    if first_dle >= items.len() {
        kept.push(Item::Msg(None, Box::new(notice(left_out))));
    }
    render(Some(writer), &kept)
}

#[cfg(test)]
mod tests;
