//! The selfcheck reply (spec §6.5): the `MESSAGE JSON` form 3.5 clients send to 3.5 servers,
//! the legacy `OK`/`ERROR [..]`/`OPTIONS` line form, and a reader like amcheck's.
//!
//! The JSON form is not a JSON document: `MESSAGE JSON\n`, then message objects separated by
//! `,\n`, no brackets, and no newline after the last `}`. Each object is written by
//! Amanda's `sprint_message` with a fixed layout (two-space indent for `{`/`}`, four for
//! keys, `"key" : "value"`): source file and line, severity, process, running_on,
//! component, module, code, optional errno fields, the message arguments in order,
//! `message`, optional `hint`. [`JsonMessage::encode`] reproduces that byte for byte,
//! including its string escaping (`\\ \" \b \f \n \r \t \v`, `\u00XX` for other control
//! bytes, bytes >= 0x80 as is) and its quirk of writing `hint` unescaped.
//!
//! The messages the real 3.5.1 client sends are constructors here ([`JsonMessage::build`]
//! with the code table of 3.5.1, and named helpers), with the source file and line numbers of
//! the Debian 3.5.1 binaries (read from their machine code; Debian's `selfcheck.c` is one
//! line longer than upstream's from `check_space` on).
//!
//! What this module must not do: run checks (the daemon does), or invent message texts.

use std::fmt;

use crate::features::{Features, FeaturesError};
use crate::options::reply_features;
use crate::quote::{ByteString, is_space, quote_string, split_quoted_line, until_nul};

/// The version our messages report: the client we are compatible with.
pub const AMANDA_VERSION: &str = "3.5.1";

/// Message severity (Amanda's `MSG_*` values).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    /// `success` (1).
    Success,
    /// `info` (2).
    Info,
    /// `message` (4).
    Message,
    /// `warning` (8).
    Warning,
    /// `error` (16).
    Error,
    /// `critical` (32); also what amcheck makes of an unknown severity name.
    Critical,
}

impl Severity {
    /// The JSON name.
    pub const fn name(self) -> &'static str {
        match self {
            Severity::Success => "success",
            Severity::Info => "info",
            Severity::Message => "message",
            Severity::Warning => "warning",
            Severity::Error => "error",
            Severity::Critical => "critical",
        }
    }

    /// Amanda's numeric value.
    pub const fn value(self) -> u8 {
        match self {
            Severity::Success => 1,
            Severity::Info => 2,
            Severity::Message => 4,
            Severity::Warning => 8,
            Severity::Error => 16,
            Severity::Critical => 32,
        }
    }

    /// Reads a name like amcheck: anything unknown is `critical`.
    pub fn from_name(name: &[u8]) -> Severity {
        match name {
            b"success" => Severity::Success,
            b"info" => Severity::Info,
            b"message" => Severity::Message,
            b"warning" => Severity::Warning,
            b"error" => Severity::Error,
            _ => Severity::Critical,
        }
    }

    /// Whether amcheck counts it as a problem (`severity > MSG_INFO`).
    pub const fn is_problem(self) -> bool {
        self.value() > Severity::Info.value()
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Who writes a message: `process`, `component`, `module` of `sprint_message`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Origin {
    /// `process`, e.g. `selfcheck`.
    pub process: &'static str,
    /// `component`, e.g. `amanda`.
    pub component: &'static str,
    /// `module`, e.g. `amanda`.
    pub module: &'static str,
}

impl Origin {
    /// The selfcheck service itself.
    pub const SELFCHECK: Origin = Origin {
        process: "selfcheck",
        component: "amanda",
        module: "amanda",
    };
    /// The amgtar application (its messages are relayed by selfcheck).
    pub const AMGTAR: Origin = Origin {
        process: "amgtar",
        component: "application",
        module: "amgtar",
    };
}

/// The `running_on` value of every client message.
pub const RUNNING_ON_CLIENT: &str = "amanda-client";

/// One message object.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct JsonMessage {
    /// `source_filename`, e.g. `selfcheck.c`.
    pub source_filename: ByteString,
    /// `source_line`.
    pub source_line: i32,
    /// `severity`.
    pub severity: Severity,
    /// `process`.
    pub process: ByteString,
    /// `running_on`.
    pub running_on: ByteString,
    /// `component`.
    pub component: ByteString,
    /// `module`.
    pub module: ByteString,
    /// `code`, e.g. 3600000.
    pub code: i32,
    /// `merrno` (written when non-zero).
    pub merrno: Option<i32>,
    /// `errnocode`, e.g. `ENOENT`.
    pub errnocode: Option<ByteString>,
    /// `errnostr`, e.g. `No such file or directory`.
    pub errnostr: Option<ByteString>,
    /// The arguments, in order.
    pub args: Vec<(ByteString, ByteString)>,
    /// `message`.
    pub message: ByteString,
    /// The message with its arguments quoted, for the legacy `OK`/`ERROR` lines (`None`:
    /// same as `message`).
    pub quoted_message: Option<ByteString>,
    /// `hint`.
    pub hint: Option<ByteString>,
}

/// Amanda's `ammessage_encode_json`.
pub fn json_escape(s: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    for &b in until_nul(s) {
        match b {
            b'\\' | b'"' => {
                out.push(b'\\');
                out.push(b);
            }
            0x08 => out.extend_from_slice(b"\\b"),
            0x0c => out.extend_from_slice(b"\\f"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            0x0b => out.extend_from_slice(b"\\v"),
            b if b < 0x20 => {
                let hex = |n: u8| if n <= 9 { b'0' + n } else { b'A' + n - 10 };
                out.extend_from_slice(b"\\u00");
                out.push(hex(b >> 4));
                out.push(hex(b & 0x0f));
            }
            b => out.push(b),
        }
    }
    out
}

/// A glibc errno number's Amanda code name (`errcode[]`) and `strerror` text, for the
/// numbers Amanda names; `None` for others (Amanda writes `UNKNOWN`).
pub fn errno_names(errno: i32) -> Option<(&'static str, &'static str)> {
    ERRNO
        .iter()
        .find(|(n, _, _)| *n == errno)
        .map(|&(_, code, text)| (code, text))
}

/// (errno, Amanda's `errcode` name, glibc `strerror`), generated from 3.5.1's
/// `init_errcode` (later names win, as there) and this machine's glibc.
const ERRNO: &[(i32, &str, &str)] = &[
    (1, "EPERM", "Operation not permitted"),
    (2, "ENOENT", "No such file or directory"),
    (3, "ESRCH", "No such process"),
    (4, "EINTR", "Interrupted system call"),
    (5, "EIO", "Input/output error"),
    (6, "ENXIO", "No such device or address"),
    (7, "E2BIG", "Argument list too long"),
    (8, "ENOEXEC", "Exec format error"),
    (9, "EBADF", "Bad file descriptor"),
    (10, "ECHILD", "No child processes"),
    (11, "EWOULDBLOCK", "Resource temporarily unavailable"),
    (12, "ENOMEM", "Cannot allocate memory"),
    (13, "EACCES", "Permission denied"),
    (14, "EFAULT", "Bad address"),
    (15, "ENOTBLK", "Block device required"),
    (16, "EBUSY", "Device or resource busy"),
    (17, "EEXIST", "File exists"),
    (18, "EXDEV", "Invalid cross-device link"),
    (19, "ENODEV", "No such device"),
    (20, "ENOTDIR", "Not a directory"),
    (21, "EISDIR", "Is a directory"),
    (22, "EINVAL", "Invalid argument"),
    (23, "ENFILE", "Too many open files in system"),
    (24, "EMFILE", "Too many open files"),
    (25, "ENOTTY", "Inappropriate ioctl for device"),
    (26, "ETXTBSY", "Text file busy"),
    (27, "EFBIG", "File too large"),
    (28, "ENOSPC", "No space left on device"),
    (29, "ESPIPE", "Illegal seek"),
    (30, "EROFS", "Read-only file system"),
    (31, "EMLINK", "Too many links"),
    (32, "EPIPE", "Broken pipe"),
    (33, "EDOM", "Numerical argument out of domain"),
    (34, "ERANGE", "Numerical result out of range"),
    (35, "EDEADLOCK", "Resource deadlock avoided"),
    (36, "ENAMETOOLONG", "File name too long"),
    (37, "ENOLCK", "No locks available"),
    (38, "ENOSYS", "Function not implemented"),
    (39, "ENOTEMPTY", "Directory not empty"),
    (40, "ELOOP", "Too many levels of symbolic links"),
    (42, "ENOMSG", "No message of desired type"),
    (43, "EIDRM", "Identifier removed"),
    (44, "ECHRNG", "Channel number out of range"),
    (45, "EL2NSYNC", "Level 2 not synchronized"),
    (46, "EL3HLT", "Level 3 halted"),
    (47, "EL3RST", "Level 3 reset"),
    (48, "ELNRNG", "Link number out of range"),
    (49, "EUNATCH", "Protocol driver not attached"),
    (50, "ENOCSI", "No CSI structure available"),
    (51, "EL2HLT", "Level 2 halted"),
    (52, "EBADE", "Invalid exchange"),
    (53, "EBADR", "Invalid request descriptor"),
    (54, "EXFULL", "Exchange full"),
    (55, "ENOANO", "No anode"),
    (56, "EBADRQC", "Invalid request code"),
    (57, "EBADSLT", "Invalid slot"),
    (59, "EBFONT", "Bad font file format"),
    (60, "ENOSTR", "Device not a stream"),
    (61, "ENODATA", "No data available"),
    (62, "ETIME", "Timer expired"),
    (63, "ENOSR", "Out of streams resources"),
    (64, "ENONET", "Machine is not on the network"),
    (65, "ENOPKG", "Package not installed"),
    (66, "EREMOTE", "Object is remote"),
    (67, "ENOLINK", "Link has been severed"),
    (68, "EADV", "Advertise error"),
    (69, "ESRMNT", "Srmount error"),
    (70, "ECOMM", "Communication error on send"),
    (71, "EPROTO", "Protocol error"),
    (72, "EMULTIHOP", "Multihop attempted"),
    (73, "EDOTDOT", "RFS specific error"),
    (74, "EBADMSG", "Bad message"),
    (75, "EOVERFLOW", "Value too large for defined data type"),
    (76, "ENOTUNIQ", "Name not unique on network"),
    (77, "EBADFD", "File descriptor in bad state"),
    (78, "EREMCHG", "Remote address changed"),
    (79, "ELIBACC", "Can not access a needed shared library"),
    (80, "ELIBBAD", "Accessing a corrupted shared library"),
    (81, "ELIBSCN", ".lib section in a.out corrupted"),
    (
        82,
        "ELIBMAX",
        "Attempting to link in too many shared libraries",
    ),
    (83, "ELIBEXEC", "Cannot exec a shared library directly"),
    (
        84,
        "EILSEQ",
        "Invalid or incomplete multibyte or wide character",
    ),
    (
        85,
        "ERESTART",
        "Interrupted system call should be restarted",
    ),
    (86, "ESTRPIPE", "Streams pipe error"),
    (87, "EUSERS", "Too many users"),
    (88, "ENOTSOCK", "Socket operation on non-socket"),
    (89, "EDESTADDRREQ", "Destination address required"),
    (90, "EMSGSIZE", "Message too long"),
    (91, "EPROTOTYPE", "Protocol wrong type for socket"),
    (92, "ENOPROTOOPT", "Protocol not available"),
    (93, "EPROTONOSUPPORT", "Protocol not supported"),
    (94, "ESOCKTNOSUPPORT", "Socket type not supported"),
    (95, "EOPNOTSUPP", "Operation not supported"),
    (96, "EPFNOSUPPORT", "Protocol family not supported"),
    (
        97,
        "EAFNOSUPPORT",
        "Address family not supported by protocol",
    ),
    (98, "EADDRINUSE", "Address already in use"),
    (99, "EADDRNOTAVAIL", "Cannot assign requested address"),
    (100, "ENETDOWN", "Network is down"),
    (101, "ENETUNREACH", "Network is unreachable"),
    (102, "ENETRESET", "Network dropped connection on reset"),
    (103, "ECONNABORTED", "Software caused connection abort"),
    (104, "ECONNRESET", "Connection reset by peer"),
    (105, "ENOBUFS", "No buffer space available"),
    (106, "EISCONN", "Transport endpoint is already connected"),
    (107, "ENOTCONN", "Transport endpoint is not connected"),
    (
        108,
        "ESHUTDOWN",
        "Cannot send after transport endpoint shutdown",
    ),
    (109, "ETOOMANYREFS", "Too many references: cannot splice"),
    (110, "ETIMEDOUT", "Connection timed out"),
    (111, "ECONNREFUSED", "Connection refused"),
    (112, "EHOSTDOWN", "Host is down"),
    (113, "EHOSTUNREACH", "No route to host"),
    (114, "EALREADY", "Operation already in progress"),
    (115, "EINPROGRESS", "Operation now in progress"),
    (116, "ESTALE", "Stale file handle"),
    (117, "EUCLEAN", "Structure needs cleaning"),
    (118, "ENOTNAM", "Not a XENIX named type file"),
    (119, "ENAVAIL", "No XENIX semaphores available"),
    (120, "EISNAM", "Is a named type file"),
    (121, "EREMOTEIO", "Remote I/O error"),
    (122, "EDQUOT", "Disk quota exceeded"),
    (123, "ENOMEDIUM", "No medium found"),
    (124, "EMEDIUMTYPE", "Wrong medium type"),
    (125, "ECANCELED", "Operation canceled"),
    (126, "ENOKEY", "Required key not available"),
    (127, "EKEYEXPIRED", "Key has expired"),
    (128, "EKEYREVOKED", "Key has been revoked"),
    (129, "EKEYREJECTED", "Key was rejected by service"),
    (130, "EOWNERDEAD", "Owner died"),
    (131, "ENOTRECOVERABLE", "State not recoverable"),
    (132, "ERFKILL", "Operation not possible due to RF-kill"),
];

/// (code, template) from 3.5.1's `ammessage.c` for the selfcheck and amgtar codes.
const TEMPLATES: &[(i32, &str)] = &[
    (3600000, "version '%{version}"),
    (3600001, "distro %{distro}"),
    (3600002, "platform %{platform}"),
    (3600003, "Multiple OPTIONS line in selfcheck input"),
    (
        3600004,
        "OPTIONS features=%{features};hostname=%{hostname};",
    ),
    (3600005, "%{errstr}"),
    (3600006, "Missing OPTIONS line in selfcheck input"),
    (3600007, "FORMAT ERROR IN REQUEST PACKET %{err_extra}"),
    (3600008, "FORMAT ERROR IN REQUEST PACKET"),
    (3600009, "samba support only one exclude file"),
    (3600010, "samba does not support exclude list"),
    (3600011, "samba does not support include file"),
    (3600012, "samba does not support include list"),
    (3600013, "DUMP does not support exclude file"),
    (3600014, "DUMP does not support exclude list"),
    (3600015, "DUMP does not support include file"),
    (3600016, "DUMP does not support include list"),
    (
        3600017,
        "client configured for auth=%{auth} while server requested '%{auth-requested}'",
    ),
    (
        3600018,
        "The auth in ~/.ssh/authorized_keys should be \"--auth=ssh\", or use another auth for the DLE",
    ),
    (
        3600019,
        "The auth in the inetd/xinetd configuration must be the same as the DLE",
    ),
    (
        3600020,
        "%{device}: Can't use CALCSIZE for samba estimate, use CLIENT",
    ),
    (
        3600021,
        "%{device}: cannot parse for share/subdir disk entry",
    ),
    (
        3600022,
        "%{device}: subdirectory specified but samba is not v2 or better",
    ),
    (3600023, "%{device}: cannot find password"),
    (3600024, "%{device}: password field not 'user%%pass'"),
    (3600025, "%{device}: cannot make share name"),
    (3600026, "%{device}: Cannot access /dev/null: %{errnostr}"),
    (3600027, "%{device}: password write failed: %{errnostr}"),
    (3600028, "%{device}: Can't fdopen ferr: %{errnostr}"),
    (3600029, "%{device}: samba access error:"),
    (
        3600030,
        "%{device}: This client is not configured for samba",
    ),
    (
        3600031,
        "%{device}: The DUMP program cannot handle samba shares, use the amsamba application",
    ),
    (
        3600032,
        "%{device}: Application '%{application}': %{errstr}",
    ),
    (
        3600033,
        "%{device}: Application '%{application}': can't run 'support' command",
    ),
    (
        3600034,
        "%{device}: Application '%{application}': doesn't support amanda data-path",
    ),
    (
        3600035,
        "%{device}: Application '%{application}': doesn't support directtcp data-path",
    ),
    (
        3600036,
        "%{device}: Application '%{application}': doesn't support calcsize estimate",
    ),
    (
        3600037,
        "%{device}: Application '%{application}': doesn't support include-file",
    ),
    (
        3600038,
        "%{device}: Application '%{application}': doesn't support include-list",
    ),
    (
        3600039,
        "%{device}: Application '%{application}': doesn't support optional include",
    ),
    (
        3600040,
        "%{device}: Application '%{application}': doesn't support exclude-file",
    ),
    (
        3600041,
        "%{device}: Application '%{application}': doesn't support exclude-list",
    ),
    (
        3600042,
        "%{device}: Application '%{application}': doesn't support optional exclude",
    ),
    (
        3600043,
        "%{device}: Application '%{application}': can't create pipe: %{errnostr}",
    ),
    (
        3600044,
        "%{device}: Application '%{application}': fork failed: %{errnostr}",
    ),
    (3600045, "%{device}: Can't execute '%{cmd}': %{errnostr}"),
    (3600046, "%{device}: Can't fdopen app_stderr: %{errnostr}"),
    (
        3600047,
        "%{device}: Application '%{application}': %{errstr}",
    ),
    (3600048, "%{device}: waitpid failed: %{errnostr}"),
    (
        3600049,
        "%{device}: Application '%{application}': exited with signal %{signal}",
    ),
    (
        3600050,
        "%{device}: Application '%{application}': exited with status %{exit_status}",
    ),
    (
        3600051,
        "%{hostname}: Could not %{type} %{disk} (%{device}): %{errnostr}",
    ),
    (3600052, "%{disk}"),
    (3600053, "%{amdevice}"),
    (3600054, "%{device}"),
    (3600055, "%{device}: Can't fdopen app_stdout: %{errnostr}"),
    (3600056, "%{ok_line}"),
    (3600057, "%{error_line}"),
    (3600058, "%{errstr}"),
    (3600059, "%{filename} is not a file"),
    (3600060, "can not stat '%{filename}': %{errnostr}"),
    (3600061, "%{dirname} is not a directory"),
    (3600062, "can not stat '%{dirname}': %{errnostr}"),
    (
        3600063,
        "can not %{noun} '%{filename}': %{errnostr} (ruid:%{ruid} euid:%{euid})",
    ),
    (
        3600064,
        "%{filename} %{adjective} (ruid:%{ruid} euid:%{euid})",
    ),
    (3600065, "%{filename} is not owned by root"),
    (3600066, "%{filename} is not SUID root"),
    (3600067, "can not stat '%{filename}': %{errnostr}"),
    (
        3600068,
        "cannot get filesystem usage for '%{dirname}: %{errnostr}",
    ),
    (
        3600069,
        "dir '%{dirname}' needs %{size:required}, has nothing available",
    ),
    (
        3600070,
        "dir '%{dirname}' needs %{size:required}, only has %{size:avail} available",
    ),
    (
        3600071,
        "dir '%{dirname}' has more than %{size:avail} available",
    ),
    (3600072, "DUMP program not available"),
    (3600073, "RESTORE program not available"),
    (3600074, "VDUMP program not available"),
    (3600075, "VRESTORE program not available"),
    (3600076, "XFSDUMP program not available"),
    (3600077, "XFSRESTORE program not available"),
    (3600078, "VXDUMP program not available"),
    (3600079, "VXRESTORE program not available"),
    (3600080, "GNUTAR program not available"),
    (3600081, "SMBCLIENT program not available"),
    (3600082, "/etc/amandapass is world readable!"),
    (3600083, "/etc/amandapass is readable, but not by all"),
    (3600084, "unable to stat /etc/amandapass: %{errnostr}"),
    (3600085, "unable to open /etc/amandapass: %{errnostr}"),
    (
        3600086,
        "dump will not be able to create the /etc/dumpdates file: %{errnostr}",
    ),
    (3600087, "%{device}: samba access error: %{errmsg}"),
    (
        3600088,
        "file/dir '%{filename}' (%{security_orig}) is not owned by root",
    ),
    (
        3600089,
        "file/dir '%{filename}' (%{security_orig}) is writable by everyone",
    ),
    (
        3600090,
        "file/dir '%{filename}' (%{security_orig}) is writable by the group",
    ),
    (
        3600091,
        "Can't find real path for '%{filename}': %{errnostr}",
    ),
    (
        3600092,
        "security file '%{security_file}' do not allow to run '%{filename}' as root for %{pname}:%{type}",
    ),
    (3600093, "security_file_check_path: prefix is not set"),
    (3600094, "security_file_check_path: path is not set"),
    (
        3600095,
        "Can't open security_file (%{security_file}): %{errnostr}",
    ),
    (
        3600096,
        "security file '%{security_file}' do not allow to run '%{path}' as root for '%{prefix}'",
    ),
    (
        3600097,
        "Can't get realpath of the security file '%{security_file}': %{errnostr}",
    ),
    (
        3600098,
        "can not stat '%{filename}' (%{security_orig}): %{errnostr}",
    ),
    (3700000, "%{disk}"),
    (3700001, "amgtar version %{version}"),
    (3700002, "amgtar gtar-version %{gtar-version}"),
    (3700003, "Can't get %{gtar-path} version"),
    (3700004, "amgtar"),
    (3700005, "GNUTAR program not available"),
    (3700006, "No GNUTAR-LISTDIR"),
    (3700007, "bad ONE-FILE-SYSTEM property value '%{value}'"),
    (3700008, "bad SPARSE property value '%{value}'"),
    (3700009, "bad ATIME-PRESERVE property value '%{value}'"),
    (3700010, "bad CHECK-DEVICE property value '%{value}'"),
    (3700011, "bad NO-UNQUOTE property value '%{value}'"),
    (3700012, "Can't open disk '%{diskname}': %{errnostr}"),
    (3700013, "Cannot stat the disk '%{diskname}': %{errnostr}"),
    (3700014, "Invalid '%{command-options}' COMMAND-OPTIONS"),
    (3700015, "bad DAR property value '%{property_value}'"),
];

/// (code, source file, line, severity) of every call site, from the Debian 3.5.1 binaries
/// where they show it, else from the 3.5.1 sources. Codes with two sites list the first.
const SITES: &[(i32, &str, i32, Severity)] = &[
    (3600000, "selfcheck.c", 207, Severity::Info),
    (3600001, "selfcheck.c", 1695, Severity::Info),
    (3600002, "selfcheck.c", 1699, Severity::Info),
    (3600003, "selfcheck.c", 193, Severity::Error),
    (3600004, "selfcheck.c", 213, Severity::Info),
    (3600005, "selfcheck.c", 229, Severity::Error),
    (3600006, "selfcheck.c", 367, Severity::Error),
    (3600007, "selfcheck.c", 424, Severity::Error),
    (3600008, "selfcheck.c", 429, Severity::Error),
    (3600009, "selfcheck.c", 454, Severity::Error),
    (3600010, "selfcheck.c", 462, Severity::Error),
    (3600011, "selfcheck.c", 469, Severity::Error),
    (3600012, "selfcheck.c", 477, Severity::Error),
    (3600013, "selfcheck.c", 516, Severity::Error),
    (3600014, "selfcheck.c", 523, Severity::Error),
    (3600015, "selfcheck.c", 530, Severity::Error),
    (3600016, "selfcheck.c", 537, Severity::Error),
    (3600017, "selfcheck.c", 606, Severity::Error),
    (3600018, "selfcheck.c", 614, Severity::Error),
    (3600019, "selfcheck.c", 621, Severity::Error),
    (3600020, "selfcheck.c", 671, Severity::Error),
    (3600021, "selfcheck.c", 700, Severity::Error),
    (3600022, "selfcheck.c", 709, Severity::Error),
    (3600023, "selfcheck.c", 718, Severity::Error),
    (3600024, "selfcheck.c", 728, Severity::Error),
    (3600025, "selfcheck.c", 740, Severity::Error),
    (3600026, "selfcheck.c", 750, Severity::Error),
    (3600027, "selfcheck.c", 787, Severity::Error),
    (3600028, "selfcheck.c", 803, Severity::Error),
    (3600030, "selfcheck.c", 857, Severity::Error),
    (3600031, "selfcheck.c", 871, Severity::Error),
    (3600032, "selfcheck.c", 916, Severity::Error),
    (3600033, "selfcheck.c", 926, Severity::Error),
    (3600034, "selfcheck.c", 938, Severity::Error),
    (3600036, "selfcheck.c", 958, Severity::Error),
    (3600037, "selfcheck.c", 968, Severity::Error),
    (3600038, "selfcheck.c", 978, Severity::Error),
    (3600039, "selfcheck.c", 987, Severity::Error),
    (3600040, "selfcheck.c", 997, Severity::Error),
    (3600041, "selfcheck.c", 1007, Severity::Error),
    (3600042, "selfcheck.c", 1016, Severity::Error),
    (3600043, "selfcheck.c", 1027, Severity::Error),
    (3600044, "selfcheck.c", 1052, Severity::Error),
    (3600045, "selfcheck.c", 1156, Severity::Error),
    (3600046, "selfcheck.c", 1190, Severity::Error),
    (3600047, "selfcheck.c", 1240, Severity::Error),
    (3600048, "selfcheck.c", 1266, Severity::Error),
    (3600049, "selfcheck.c", 1276, Severity::Error),
    (3600050, "selfcheck.c", 1288, Severity::Error),
    (3600051, "selfcheck.c", 1323, Severity::Error),
    (3600052, "selfcheck.c", 1355, Severity::Info),
    (3600053, "selfcheck.c", 1362, Severity::Info),
    (3600054, "selfcheck.c", 1370, Severity::Info),
    (3600055, "selfcheck.c", 1179, Severity::Error),
    (3600056, "selfcheck.c", 1211, Severity::Info),
    (3600057, "selfcheck.c", 1219, Severity::Error),
    (3600058, "selfcheck.c", 1227, Severity::Error),
    (3600059, "client_util.c", 1889, Severity::Error),
    (3600060, "client_util.c", 1894, Severity::Error),
    (3600061, "client_util.c", 1914, Severity::Error),
    (3600062, "client_util.c", 1920, Severity::Error),
    (3600063, "client_util.c", 1862, Severity::Error),
    (3600064, "client_util.c", 1870, Severity::Info),
    (3600065, "client_util.c", 1942, Severity::Error),
    (3600066, "client_util.c", 1947, Severity::Error),
    (3600067, "client_util.c", 1735, Severity::Error),
    (3600068, "selfcheck.c", 1633, Severity::Error),
    (3600069, "selfcheck.c", 1646, Severity::Error),
    (3600070, "selfcheck.c", 1655, Severity::Error),
    (3600071, "selfcheck.c", 1665, Severity::Info),
    (3600072, "selfcheck.c", 1431, Severity::Error),
    (3600073, "selfcheck.c", 1441, Severity::Error),
    (3600074, "selfcheck.c", 1451, Severity::Error),
    (3600075, "selfcheck.c", 1461, Severity::Error),
    (3600076, "selfcheck.c", 1471, Severity::Error),
    (3600077, "selfcheck.c", 1481, Severity::Error),
    (3600078, "selfcheck.c", 1491, Severity::Error),
    (3600079, "selfcheck.c", 1501, Severity::Error),
    (3600080, "selfcheck.c", 1511, Severity::Error),
    (3600081, "selfcheck.c", 1550, Severity::Error),
    (3600082, "selfcheck.c", 1558, Severity::Error),
    (3600083, "selfcheck.c", 1562, Severity::Info),
    (3600084, "selfcheck.c", 1567, Severity::Error),
    (3600085, "selfcheck.c", 1574, Severity::Error),
    (3600086, "selfcheck.c", 1596, Severity::Error),
    (3600087, "selfcheck.c", 846, Severity::Error),
    (3600088, "client_util.c", 1710, Severity::Error),
    (3600089, "client_util.c", 1715, Severity::Error),
    (3600090, "client_util.c", 1720, Severity::Error),
    (3600091, "client_util.c", 1681, Severity::Error),
    (3700000, "amgtar.c", 965, Severity::Info),
    (3700001, "amgtar.c", 972, Severity::Info),
    (3700002, "amgtar.c", 1029, Severity::Info),
    (3700003, "amgtar.c", 1036, Severity::Error),
    (3700004, "amgtar.c", 995, Severity::Info),
    (3700005, "amgtar.c", 1052, Severity::Error),
    (3700006, "amgtar.c", 1063, Severity::Error),
    (3700007, "amgtar.c", 619, Severity::Error),
    (3700008, "amgtar.c", 634, Severity::Error),
    (3700009, "amgtar.c", 649, Severity::Error),
    (3700010, "amgtar.c", 664, Severity::Error),
    (3700011, "amgtar.c", 679, Severity::Error),
    (3700012, "amgtar.c", 887, Severity::Error),
    (3700013, "amgtar.c", 914, Severity::Error),
    (3700014, "amgtar.c", 1002, Severity::Error),
    (3700015, "amgtar.c", 694, Severity::Error),
];

/// Renders a message template: `%{key}` is the argument `key` (quoted with
/// `quote_string` when `quoted`), `%{errnostr}`/`%{errnocode}` the errno fields,
/// `%{size:key}` the argument as `<n> KB` (the client's display unit), `%%` a `%`;
/// an unknown key gives `NONE`, as in Amanda.
fn render(
    template: &str,
    args: &[(ByteString, ByteString)],
    errnocode: Option<&[u8]>,
    errnostr: Option<&[u8]>,
    quoted: bool,
) -> Vec<u8> {
    let t = template.as_bytes();
    let mut out = Vec::with_capacity(t.len() + 32);
    let mut i = 0;
    while let Some(&c) = t.get(i) {
        if c == b'%' && t.get(i + 1) == Some(&b'%') {
            out.push(b'%');
            i += 2;
            continue;
        }
        if c == b'%' && t.get(i + 1) == Some(&b'{') {
            let rest = &t[i + 2..];
            let Some(end) = rest.iter().position(|&b| b == b'}') else {
                out.extend_from_slice(&t[i..]);
                break;
            };
            let key = &rest[..end];
            i += 2 + end + 1;
            match key {
                b"errnostr" => out.extend_from_slice(errnostr.unwrap_or_default()),
                b"errnocode" => out.extend_from_slice(errnocode.unwrap_or_default()),
                _ => {
                    let (format, name) = match key.iter().position(|&b| b == b':') {
                        Some(p) => (Some(&key[..p]), &key[p + 1..]),
                        None => (None, key),
                    };
                    match args.iter().find(|(k, _)| k.as_bytes() == name) {
                        None => out.extend_from_slice(b"NONE"),
                        Some((_, v)) => match format {
                            Some(b"size") => {
                                let n = crate::quote::parse_c_int(v).unwrap_or(0);
                                out.extend_from_slice(format!("{n} KB").as_bytes());
                            }
                            Some(_) => out.extend_from_slice(b"BAD-FORMAT"),
                            None if quoted => out.extend_from_slice(&quote_string(v)),
                            None => out.extend_from_slice(v),
                        },
                    }
                }
            }
            continue;
        }
        out.push(c);
        i += 1;
    }
    out
}

impl JsonMessage {
    /// A message of `origin` outside the table of known codes: no errno, no hint, the
    /// arguments and text as given.
    pub fn custom(
        origin: Origin,
        code: i32,
        severity: Severity,
        source_filename: &str,
        args: &[(&str, &[u8])],
        message: &[u8],
    ) -> JsonMessage {
        JsonMessage {
            source_filename: source_filename.into(),
            source_line: 0,
            severity,
            process: origin.process.into(),
            running_on: RUNNING_ON_CLIENT.into(),
            component: origin.component.into(),
            module: origin.module.into(),
            code,
            merrno: None,
            errnocode: None,
            errnostr: None,
            args: args
                .iter()
                .map(|(k, v)| ((*k).into(), (*v).into()))
                .collect(),
            message: message.into(),
            quoted_message: None,
            hint: None,
        }
    }

    /// Builds message `code` as the 3.5.1 client does (`build_message`): source file, line
    /// and severity from the 3.5.1 table, `origin`'s process/component/module, the
    /// arguments in order, `errno` giving `merrno`/`errnocode`/`errnostr`, and the text from
    /// the 3.5.1 template. `None` for a code not in the table.
    pub fn build(
        origin: Origin,
        code: i32,
        args: &[(&str, &[u8])],
        errno: Option<i32>,
    ) -> Option<JsonMessage> {
        let &(_, file, line, severity) = SITES.iter().find(|(c, ..)| *c == code)?;
        let template = TEMPLATES
            .iter()
            .find(|(c, _)| *c == code)
            .map(|(_, t)| *t)?;
        let args: Vec<(ByteString, ByteString)> = args
            .iter()
            .map(|(k, v)| (ByteString::from(*k), ByteString::from(*v)))
            .collect();
        let (errnocode, errnostr) = match errno {
            Some(n) => {
                let (c, s) = errno_names(n).unwrap_or(("UNKNOWN", "Unknown error"));
                (Some(ByteString::from(c)), Some(ByteString::from(s)))
            }
            None => (None, None),
        };
        let message = render(
            template,
            &args,
            errnocode.as_deref(),
            errnostr.as_deref(),
            false,
        );
        let quoted = render(
            template,
            &args,
            errnocode.as_deref(),
            errnostr.as_deref(),
            true,
        );
        let quoted_message = (quoted != message).then(|| quoted.into());
        Some(JsonMessage {
            source_line: line,
            merrno: errno.filter(|&n| n != 0),
            errnocode,
            errnostr,
            args,
            quoted_message,
            ..JsonMessage::custom(origin, code, severity, file, &[], &message)
        })
    }

    /// The same message with another source line (for codes with several call sites).
    #[must_use]
    pub fn at_line(mut self, line: i32) -> JsonMessage {
        self.source_line = line;
        self
    }

    /// How selfcheck re-prints a message it read from an application (amgtar): its
    /// `parse_json_message` keeps `errnocode`/`errnostr` but turns `merrno` into an ordinary
    /// argument placed before the others.
    #[must_use]
    pub fn relayed(mut self) -> JsonMessage {
        if let Some(n) = self.merrno.take() {
            self.args.insert(0, ("merrno".into(), n.to_string().into()));
        }
        self
    }

    /// The argument `key`, if present.
    pub fn arg(&self, key: &str) -> Option<&ByteString> {
        self.args.iter().find(|(k, _)| *k == key).map(|(_, v)| v)
    }

    /// One object in `sprint_message`'s layout, from `  {` to `  }` (no separator).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(512);
        let field = |out: &mut Vec<u8>, key: &[u8], value: &[u8]| {
            out.extend_from_slice(b"    \"");
            out.extend_from_slice(key);
            out.extend_from_slice(b"\" : \"");
            out.extend_from_slice(value);
            out.extend_from_slice(b"\",\n");
        };
        out.extend_from_slice(b"  {\n");
        field(
            &mut out,
            b"source_filename",
            &json_escape(&self.source_filename),
        );
        field(
            &mut out,
            b"source_line",
            self.source_line.to_string().as_bytes(),
        );
        field(&mut out, b"severity", self.severity.name().as_bytes());
        field(&mut out, b"process", &json_escape(&self.process));
        field(&mut out, b"running_on", &json_escape(&self.running_on));
        field(&mut out, b"component", &json_escape(&self.component));
        field(&mut out, b"module", &json_escape(&self.module));
        field(&mut out, b"code", self.code.to_string().as_bytes());
        if let Some(n) = self.merrno.filter(|&n| n != 0) {
            field(&mut out, b"merrno", n.to_string().as_bytes());
        }
        if let Some(c) = &self.errnocode {
            field(&mut out, b"errnocode", c);
        }
        if let Some(s) = &self.errnostr {
            field(&mut out, b"errnostr", &json_escape(s));
        }
        for (k, v) in &self.args {
            field(&mut out, &json_escape(k), &json_escape(v));
        }
        out.extend_from_slice(b"    \"message\" : \"");
        out.extend_from_slice(&json_escape(&self.message));
        out.push(b'"');
        if let Some(h) = &self.hint {
            // 3.5.1 writes the hint without escaping it.
            out.extend_from_slice(b",\n    \"hint\" : \"");
            out.extend_from_slice(h);
            out.push(b'"');
        }
        out.extend_from_slice(b"\n  }");
        out
    }

    /// The legacy line for a server without `fe_selfcheck_message`: the `OPTIONS` message
    /// (3600004) as is, `OK <quoted message>` for info, `ERROR [<quoted message>]` for
    /// errors, the plain message for anything else; each with `\n`.
    pub fn legacy_line(&self) -> Vec<u8> {
        let quoted = self.quoted_message.as_ref().unwrap_or(&self.message);
        let mut out = Vec::with_capacity(quoted.len() + 10);
        if self.code == 3_600_004 {
            out.extend_from_slice(quoted);
        } else if self.severity == Severity::Info {
            out.extend_from_slice(b"OK ");
            out.extend_from_slice(quoted);
        } else if self.severity == Severity::Error {
            out.extend_from_slice(b"ERROR [");
            out.extend_from_slice(quoted);
            out.push(b']');
        } else {
            out.extend_from_slice(&self.message);
        }
        out.push(b'\n');
        out
    }
}

/// Writes a selfcheck reply incrementally, as the service prints it: the JSON header line
/// (when the server has `fe_selfcheck_message`), then each message, separated like
/// `sprint_message` does; or the legacy lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplyWriter {
    json: bool,
    first: bool,
}

impl ReplyWriter {
    /// Chooses the form from the **server's** features (`fe_selfcheck_message`).
    pub fn new(server: &Features) -> ReplyWriter {
        ReplyWriter {
            json: server.has(crate::features::Feature::SELFCHECK_MESSAGE),
            first: true,
        }
    }

    /// Whether the JSON form is used.
    pub fn is_json(&self) -> bool {
        self.json
    }

    /// The bytes to write first: `MESSAGE JSON\n` or nothing.
    pub fn header(&self) -> &'static [u8] {
        if self.json { b"MESSAGE JSON\n" } else { b"" }
    }

    /// The bytes for the next message.
    pub fn message(&mut self, m: &JsonMessage) -> Vec<u8> {
        if !self.json {
            return m.legacy_line();
        }
        let mut out = Vec::new();
        if !std::mem::replace(&mut self.first, false) {
            out.extend_from_slice(b",\n");
        }
        out.extend_from_slice(&m.encode());
        out
    }
}

/// A whole JSON reply body: `MESSAGE JSON\n` + objects separated by `,\n`.
pub fn encode_json_reply(messages: &[JsonMessage]) -> Vec<u8> {
    let mut w = ReplyWriter {
        json: true,
        first: true,
    };
    let mut out = w.header().to_vec();
    for m in messages {
        out.extend_from_slice(&w.message(m));
    }
    out
}

/// Why a JSON reply could not be read back exactly.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("selfcheck JSON reply: {what} at byte {offset}")]
pub struct JsonError {
    /// What was expected.
    pub what: &'static str,
    /// Where.
    pub offset: usize,
}

/// Reads a `MESSAGE JSON` body back into [`JsonMessage`]s, exactly (key order kept; the
/// errno fields are recognised only in `sprint_message`'s position, right after `code`).
/// For the server's purposes [`read_reply`] is the lenient reader.
pub fn parse_json_reply(body: &[u8]) -> Result<Vec<JsonMessage>, JsonError> {
    let body = until_nul(body);
    let Some(mut rest) = body.strip_prefix(b"MESSAGE JSON\n") else {
        return Err(JsonError {
            what: "\"MESSAGE JSON\" line",
            offset: 0,
        });
    };
    let mut out = Vec::new();
    let err = |what, rest: &[u8]| JsonError {
        what,
        offset: body.len() - rest.len(),
    };
    loop {
        rest = trim_ws(rest);
        if rest.is_empty() {
            break;
        }
        rest = rest.strip_prefix(b"{").ok_or_else(|| err("'{'", rest))?;
        let mut pairs: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        loop {
            rest = trim_ws(rest);
            if let Some(r) = rest.strip_prefix(b"}") {
                rest = r;
                break;
            }
            if !pairs.is_empty() {
                rest = trim_ws(
                    rest.strip_prefix(b",")
                        .ok_or_else(|| err("',' or '}'", rest))?,
                );
            }
            let (k, r) = json_string(rest).ok_or_else(|| err("a key string", rest))?;
            let r = trim_ws(r).strip_prefix(b":").ok_or_else(|| err("':'", r))?;
            let (v, r) = json_string(trim_ws(r)).ok_or_else(|| err("a value string", r))?;
            pairs.push((k, v));
            rest = r;
        }
        out.push(message_from_pairs(pairs).ok_or_else(|| err("the fields of a message", rest))?);
        rest = trim_ws(rest);
        if let Some(r) = rest.strip_prefix(b",") {
            rest = r;
        }
    }
    Ok(out)
}

fn trim_ws(s: &[u8]) -> &[u8] {
    let n = s.iter().position(|&b| !is_space(b)).unwrap_or(s.len());
    &s[n..]
}

/// A JSON string at the start of `s`, decoded (the inverse of [`json_escape`]).
fn json_string(s: &[u8]) -> Option<(Vec<u8>, &[u8])> {
    let mut i = 1;
    if s.first() != Some(&b'"') {
        return None;
    }
    let mut out = Vec::new();
    loop {
        let c = *s.get(i)?;
        i += 1;
        match c {
            b'"' => return Some((out, &s[i..])),
            b'\\' => {
                let e = *s.get(i)?;
                i += 1;
                match e {
                    b'u' => {
                        let hex = std::str::from_utf8(s.get(i..i + 4)?).ok()?;
                        let v = u32::from_str_radix(hex, 16).ok()?;
                        i += 4;
                        let ch = char::from_u32(v)?;
                        let mut buf = [0u8; 4];
                        out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
                    }
                    other => out.push(crate::quote::c_control_escape(other).unwrap_or(other)),
                }
            }
            other => out.push(other),
        }
    }
}

fn message_from_pairs(pairs: Vec<(Vec<u8>, Vec<u8>)>) -> Option<JsonMessage> {
    let mut it = pairs.into_iter().peekable();
    let mut take = |key: &str| -> Option<Vec<u8>> {
        let (k, v) = it.next()?;
        (k == key.as_bytes()).then_some(v)
    };
    let source_filename = take("source_filename")?;
    let source_line = std::str::from_utf8(&take("source_line")?)
        .ok()?
        .parse()
        .ok()?;
    let severity = Severity::from_name(&take("severity")?);
    let process = take("process")?;
    let running_on = take("running_on")?;
    let component = take("component")?;
    let module = take("module")?;
    let code = std::str::from_utf8(&take("code")?).ok()?.parse().ok()?;
    let mut m = JsonMessage {
        source_filename: source_filename.into(),
        source_line,
        severity,
        process: process.into(),
        running_on: running_on.into(),
        component: component.into(),
        module: module.into(),
        code,
        merrno: None,
        errnocode: None,
        errnostr: None,
        args: Vec::new(),
        message: ByteString::new(),
        quoted_message: None,
        hint: None,
    };
    if it.peek().is_some_and(|(k, _)| k == b"merrno") {
        let (_, v) = it.next()?;
        // A zero merrno is never written; read it as absent.
        m.merrno = Some(std::str::from_utf8(&v).ok()?.parse().ok()?).filter(|&n: &i32| n != 0);
    }
    if it.peek().is_some_and(|(k, _)| k == b"errnocode") {
        m.errnocode = it.next().map(|(_, v)| v.into());
    }
    if it.peek().is_some_and(|(k, _)| k == b"errnostr") {
        m.errnostr = it.next().map(|(_, v)| v.into());
    }
    let mut message = None;
    for (k, v) in it {
        if message.is_some() {
            if k == b"hint" && m.hint.is_none() {
                m.hint = Some(v.into());
                continue;
            }
            return None;
        }
        if k == b"message" {
            message = Some(v);
        } else {
            m.args.push((k.into(), v.into()));
        }
    }
    m.message = message?.into();
    Some(m)
}

/// One result as amcheck sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckResult {
    /// The severity (`OK` lines are info, `ERROR` and unknown lines are errors).
    pub severity: Severity,
    /// The message code (JSON form only).
    pub code: Option<i32>,
    /// The text: the JSON `message`, the text after `OK `/`ERROR `, or the whole odd line.
    pub message: ByteString,
}

/// A selfcheck reply as amcheck reads it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SelfcheckReply {
    /// The client's features, from an `OPTIONS ` line (last one wins).
    pub features: Option<Result<Features, FeaturesError>>,
    /// Whether the reply was in the JSON form.
    pub json: bool,
    /// The results, in order.
    pub results: Vec<CheckResult>,
}

impl SelfcheckReply {
    /// The results amcheck counts as errors (`severity > info`).
    pub fn problems(&self) -> impl Iterator<Item = &CheckResult> {
        self.results.iter().filter(|r| r.severity.is_problem())
    }
}

/// Reads a selfcheck REP like amcheck's `handle_result`: lines (a newline inside double
/// quotes does not end one); `OPTIONS ` gives the features; `MESSAGE JSON` hands the rest of
/// the body to a lenient JSON reader (Amanda's `parse_json_message`: per object, the
/// `severity`, `code` and `message` strings; escapes other than `\" \\ \/` are kept as
/// written, as Amanda does); `OK ` is info; `ERROR ` and any other line are errors.
pub fn read_reply(body: &[u8]) -> SelfcheckReply {
    let body = until_nul(body);
    let mut reply = SelfcheckReply::default();
    let mut rest = body;
    while !rest.is_empty() {
        let (line, next) = split_quoted_line(rest);
        rest = next;
        if line.starts_with(b"OPTIONS ") {
            if let Some(f) = reply_features(line) {
                reply.features = Some(f);
            }
            continue;
        }
        if line.starts_with(b"MESSAGE JSON") {
            reply.json = true;
            reply.results.extend(lenient_json(rest));
            break;
        }
        if let Some(text) = line.strip_prefix(b"OK ") {
            reply.results.push(CheckResult {
                severity: Severity::Info,
                code: None,
                message: text.into(),
            });
        } else if let Some(text) = line.strip_prefix(b"ERROR ") {
            let start = text
                .iter()
                .position(|&b| b == b'\n' || !is_space(b))
                .unwrap_or(text.len());
            reply.results.push(CheckResult {
                severity: Severity::Error,
                code: None,
                message: text[start..].into(),
            });
        } else {
            reply.results.push(CheckResult {
                severity: Severity::Error,
                code: None,
                message: line.into(),
            });
        }
    }
    reply
}

/// Amanda's `parse_json_message`, reduced to what amcheck uses.
fn lenient_json(s: &[u8]) -> Vec<CheckResult> {
    let mut results = Vec::new();
    let mut depth = 0usize;
    let mut current: Option<CheckResult> = None;
    let mut key: Option<Vec<u8>> = None;
    let mut i = 0;
    while let Some(&c) = s.get(i) {
        match c {
            b'{' | b'[' => {
                if depth == 0 && c == b'{' {
                    current = Some(CheckResult {
                        severity: Severity::Critical,
                        code: None,
                        message: ByteString::new(),
                    });
                }
                depth += 1;
                key = None;
            }
            b'}' | b']' => {
                depth = depth.saturating_sub(1);
                if depth == 0
                    && let Some(r) = current.take()
                {
                    results.push(r);
                }
                key = None;
            }
            b'"' => {
                let mut out = Vec::new();
                i += 1;
                let mut closed = false;
                while let Some(&ch) = s.get(i) {
                    if ch == b'"' {
                        closed = true;
                        break;
                    }
                    if ch == b'\\' {
                        i += 1;
                        match s.get(i) {
                            Some(&e @ (b'"' | b'/' | b'\\')) => out.push(e),
                            Some(&e @ (b'b' | b'f' | b'r' | b'n' | b't')) => {
                                out.push(b'\\');
                                out.push(e);
                            }
                            _ => {}
                        }
                    } else {
                        out.push(ch);
                    }
                    i += 1;
                }
                if !closed {
                    break;
                }
                if depth == 1 {
                    match key.take() {
                        None => key = Some(out),
                        Some(k) => {
                            if let Some(r) = current.as_mut() {
                                match k.as_slice() {
                                    b"severity" => r.severity = Severity::from_name(&out),
                                    b"code" => r.code = crate::quote::parse_c_i32(&out),
                                    b"message" => r.message = out.into(),
                                    _ => {}
                                }
                            }
                        }
                    }
                }
            }
            _ => {}
        }
        i += 1;
    }
    results
}

/// Constructors for the messages the real 3.5.1 selfcheck (and amgtar) send, with their
/// arguments in the real order. `hostname` is the `hostname=` of the request.
pub mod msg {
    use super::{AMANDA_VERSION, JsonMessage, Origin};

    fn build(origin: Origin, code: i32, args: &[(&str, &[u8])], errno: Option<i32>) -> JsonMessage {
        // Every code used here is in the table; the fallback keeps this total.
        JsonMessage::build(origin, code, args, errno).unwrap_or_else(|| {
            JsonMessage::custom(
                origin,
                code,
                super::Severity::Error,
                "selfcheck.c",
                &[],
                b"NONE",
            )
        })
    }

    /// 3600000 `version '3.5.1` (sic: one quote).
    pub fn version(hostname: &[u8]) -> JsonMessage {
        build(
            Origin::SELFCHECK,
            3_600_000,
            &[
                ("version", AMANDA_VERSION.as_bytes()),
                ("hostname", hostname),
            ],
            None,
        )
    }

    /// 3600001 `distro <distro>`.
    pub fn distro(distro: &[u8], hostname: &[u8]) -> JsonMessage {
        build(
            Origin::SELFCHECK,
            3_600_001,
            &[("distro", distro), ("hostname", hostname)],
            None,
        )
    }

    /// 3600002 `platform <platform>`.
    pub fn platform(platform: &[u8], hostname: &[u8]) -> JsonMessage {
        build(
            Origin::SELFCHECK,
            3_600_002,
            &[("platform", platform), ("hostname", hostname)],
            None,
        )
    }

    /// 3600003 `Multiple OPTIONS line in selfcheck input` (then the service exits).
    pub fn multiple_options() -> JsonMessage {
        build(Origin::SELFCHECK, 3_600_003, &[], None)
    }

    /// 3600004 `OPTIONS features=<hex>;hostname=<host>;` (legacy form: the OPTIONS line).
    pub fn options(features_hex: &[u8], hostname: &[u8]) -> JsonMessage {
        build(
            Origin::SELFCHECK,
            3_600_004,
            &[("features", features_hex), ("hostname", hostname)],
            None,
        )
    }

    /// 3600005 a configuration error text.
    pub fn config_errors(errstr: &[u8], hostname: &[u8]) -> JsonMessage {
        build(
            Origin::SELFCHECK,
            3_600_005,
            &[("errstr", errstr), ("hostname", hostname)],
            None,
        )
    }

    /// 3600006 `Missing OPTIONS line in selfcheck input`.
    pub fn missing_options(hostname: &[u8]) -> JsonMessage {
        build(
            Origin::SELFCHECK,
            3_600_006,
            &[("hostname", hostname)],
            None,
        )
    }

    /// 3600007 `FORMAT ERROR IN REQUEST PACKET <detail>`, or 3600008 without detail.
    pub fn format_error(detail: Option<&[u8]>, hostname: &[u8]) -> JsonMessage {
        match detail {
            Some(d) => build(
                Origin::SELFCHECK,
                3_600_007,
                &[("err_extra", d), ("hostname", hostname)],
                None,
            ),
            None => build(
                Origin::SELFCHECK,
                3_600_008,
                &[("hostname", hostname)],
                None,
            ),
        }
    }

    /// 3600017 `client configured for auth=<ours> while server requested '<theirs>'`.
    pub fn auth_mismatch(
        ours: &[u8],
        requested: &[u8],
        hostname: &[u8],
        device: &[u8],
        disk: &[u8],
    ) -> JsonMessage {
        build(
            Origin::SELFCHECK,
            3_600_017,
            &[
                ("auth", ours),
                ("auth-requested", requested),
                ("hostname", hostname),
                ("device", device),
                ("disk", disk),
            ],
            None,
        )
    }

    /// 3600051 `<host>: Could not <type> <disk> (<device>): <strerror>` (`type` is
    /// `access` or `open`).
    pub fn could_not_access(
        errno: i32,
        kind: &[u8],
        hostname: &[u8],
        device: &[u8],
        disk: &[u8],
    ) -> JsonMessage {
        build(
            Origin::SELFCHECK,
            3_600_051,
            &[
                ("type", kind),
                ("hostname", hostname),
                ("device", device),
                ("disk", disk),
            ],
            Some(errno),
        )
    }

    /// 3600052 (`<disk>`), the success line of a legacy DLE check.
    pub fn disk_ok(hostname: &[u8], device: &[u8], disk: &[u8]) -> JsonMessage {
        build(
            Origin::SELFCHECK,
            3_600_052,
            &[("hostname", hostname), ("device", device), ("disk", disk)],
            None,
        )
    }

    /// 3600053 (`<device>`), printed after [`disk_ok`] when there is a device.
    pub fn amdevice_ok(hostname: &[u8], device: &[u8], disk: &[u8]) -> JsonMessage {
        build(
            Origin::SELFCHECK,
            3_600_053,
            &[
                ("amdevice", device),
                ("hostname", hostname),
                ("device", device),
                ("disk", disk),
            ],
            None,
        )
    }

    /// 3600064 `<file> <adjective> (ruid:<r> euid:<e>)` on success, 3600063
    /// `can not <noun> '<file>': <strerror> (ruid:<r> euid:<e>)` on failure
    /// (`check_access_message`; `noun`/`adjective` are e.g. `execute`/`executable`,
    /// `read/write`/`read/writable`, `access`/`accessible`, `find`/`exists`).
    pub fn access(
        origin: Origin,
        filename: &[u8],
        noun: &str,
        adjective: &str,
        errno: Option<i32>,
        ruid: u32,
        euid: u32,
    ) -> JsonMessage {
        let (r, e) = (ruid.to_string(), euid.to_string());
        match errno {
            None => build(
                origin,
                3_600_064,
                &[
                    ("noun", noun.as_bytes()),
                    ("adjective", adjective.as_bytes()),
                    ("filename", filename),
                    ("ruid", r.as_bytes()),
                    ("euid", e.as_bytes()),
                ],
                None,
            ),
            Some(n) => build(
                origin,
                3_600_063,
                &[
                    ("noun", noun.as_bytes()),
                    ("filename", filename),
                    ("ruid", r.as_bytes()),
                    ("euid", e.as_bytes()),
                ],
                Some(n),
            ),
        }
    }

    /// 3600059 `<file> is not a file`.
    pub fn not_a_file(origin: Origin, filename: &[u8]) -> JsonMessage {
        build(origin, 3_600_059, &[("filename", filename)], None)
    }

    /// 3600060 `can not stat '<file>': <strerror>`.
    pub fn cannot_stat_file(origin: Origin, filename: &[u8], errno: i32) -> JsonMessage {
        build(origin, 3_600_060, &[("filename", filename)], Some(errno))
    }

    /// 3600061 `<dir> is not a directory`.
    pub fn not_a_directory(origin: Origin, dirname: &[u8]) -> JsonMessage {
        build(origin, 3_600_061, &[("dirname", dirname)], None)
    }

    /// 3600062 `can not stat '<dir>': <strerror>` (the "missing DLE" error of the traces;
    /// relay it with [`JsonMessage::relayed`] when it comes from amgtar).
    pub fn cannot_stat_dir(origin: Origin, dirname: &[u8], errno: i32) -> JsonMessage {
        build(origin, 3_600_062, &[("dirname", dirname)], Some(errno))
    }

    /// 3600065 `<file> is not owned by root`.
    pub fn not_owned_by_root(origin: Origin, filename: &[u8]) -> JsonMessage {
        build(origin, 3_600_065, &[("filename", filename)], None)
    }

    /// 3600066 `<file> is not SUID root`.
    pub fn not_suid_root(origin: Origin, filename: &[u8]) -> JsonMessage {
        build(origin, 3_600_066, &[("filename", filename)], None)
    }

    /// 3600068..3600071: free space of a directory (`kb_avail`, `None` when
    /// `get_fs_usage` failed with `errno`): nothing available, less than `required`, or
    /// `dir '<dir>' has more than <n> KB available`.
    pub fn space(
        dirname: &[u8],
        kb_avail: Result<i64, i32>,
        required_kb: i64,
        hostname: &[u8],
    ) -> JsonMessage {
        let req = required_kb.to_string();
        match kb_avail {
            Err(errno) => build(
                Origin::SELFCHECK,
                3_600_068,
                &[("dirname", dirname), ("hostname", hostname)],
                Some(errno),
            ),
            Ok(avail) if avail <= 0 => build(
                Origin::SELFCHECK,
                3_600_069,
                &[
                    ("required", req.as_bytes()),
                    ("dirname", dirname),
                    ("hostname", hostname),
                ],
                None,
            ),
            Ok(avail) if avail < required_kb => {
                let a = avail.to_string();
                build(
                    Origin::SELFCHECK,
                    3_600_070,
                    &[
                        ("required", req.as_bytes()),
                        ("avail", a.as_bytes()),
                        ("dirname", dirname),
                        ("hostname", hostname),
                    ],
                    None,
                )
            }
            Ok(avail) => {
                let a = avail.to_string();
                build(
                    Origin::SELFCHECK,
                    3_600_071,
                    &[
                        ("avail", a.as_bytes()),
                        ("dirname", dirname),
                        ("hostname", hostname),
                    ],
                    None,
                )
            }
        }
    }

    /// 3600080 `GNUTAR program not available`.
    pub fn gnutar_not_available(hostname: &[u8]) -> JsonMessage {
        build(
            Origin::SELFCHECK,
            3_600_080,
            &[("hostname", hostname)],
            None,
        )
    }

    /// 3700000 amgtar: `<disk>`.
    pub fn amgtar_disk(disk: &[u8], device: &[u8], hostname: &[u8]) -> JsonMessage {
        build(
            Origin::AMGTAR,
            3_700_000,
            &[("disk", disk), ("device", device), ("hostname", hostname)],
            None,
        )
    }

    /// 3700001 amgtar: `amgtar version 3.5.1`.
    pub fn amgtar_version(disk: &[u8], device: &[u8], hostname: &[u8]) -> JsonMessage {
        build(
            Origin::AMGTAR,
            3_700_001,
            &[
                ("version", AMANDA_VERSION.as_bytes()),
                ("disk", disk),
                ("device", device),
                ("hostname", hostname),
            ],
            None,
        )
    }

    /// 3700002 amgtar: `amgtar gtar-version <v>`.
    pub fn amgtar_gtar_version(
        version: &[u8],
        disk: &[u8],
        device: &[u8],
        hostname: &[u8],
    ) -> JsonMessage {
        build(
            Origin::AMGTAR,
            3_700_002,
            &[
                ("gtar-version", version),
                ("disk", disk),
                ("device", device),
                ("hostname", hostname),
            ],
            None,
        )
    }

    /// 3700003 amgtar: `Can't get <path> version`.
    pub fn amgtar_cannot_get_version(
        path: &[u8],
        disk: &[u8],
        device: &[u8],
        hostname: &[u8],
    ) -> JsonMessage {
        build(
            Origin::AMGTAR,
            3_700_003,
            &[
                ("gtar-path", path),
                ("disk", disk),
                ("device", device),
                ("hostname", hostname),
            ],
            None,
        )
    }

    /// 3700004 amgtar: `amgtar` (the application answered).
    pub fn amgtar_ok(disk: &[u8], device: &[u8], hostname: &[u8]) -> JsonMessage {
        build(
            Origin::AMGTAR,
            3_700_004,
            &[("disk", disk), ("device", device), ("hostname", hostname)],
            None,
        )
    }

    /// 3700005 amgtar: `GNUTAR program not available`.
    pub fn amgtar_no_gnutar(disk: &[u8], device: &[u8], hostname: &[u8]) -> JsonMessage {
        build(
            Origin::AMGTAR,
            3_700_005,
            &[("disk", disk), ("device", device), ("hostname", hostname)],
            None,
        )
    }

    /// 3700006 amgtar: `No GNUTAR-LISTDIR`.
    pub fn amgtar_no_listdir(disk: &[u8], device: &[u8], hostname: &[u8]) -> JsonMessage {
        build(
            Origin::AMGTAR,
            3_700_006,
            &[("disk", disk), ("device", device), ("hostname", hostname)],
            None,
        )
    }
}

#[cfg(test)]
mod tests;
