//! The keyword tables of Amanda 3.5.1: which parameters each kind of block accepts and how
//! each one's value is read.
//!
//! Facts from common-src/conffile.c (client_var, server_var, dumptype_var, holding_var,
//! tapetype_var, interface_var, application_var, pp_script_var, device_config_var,
//! changer_config_var, interactivity_var, taperscan_var, policy_var, storage_var): the
//! names, the reader each uses (int, int64, size, str, ident, bool, ...), the unit of the
//! numbers (plain or kilobytes) and the validation applied after reading. Keywords are
//! matched case-insensitively with `-` and `_` equivalent; the tables use the canonical
//! lower-case spelling with `_`.
//!
//! What this module must not do: read values (see [`crate::value`]).

/// The unit a number is stored in, which decides what a unit suffix does.
///
/// Fact (conffile.c: get_multiplier): for a kilobyte parameter `b`/`bytes` divides by 1024,
/// `k` multiplies by 1, `m` by 1024 ...; for a plain one `k` multiplies by 1024, `m` by
/// 1024², and so on. `days`, `tapes`, `bps` are ×1 and `weeks` ×7 in both.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    /// Plain number (counts, seconds, days, bytes).
    None,
    /// Kilobytes (KiB), or KiB/s for bandwidths.
    K,
}

/// Which kind of port range, for validation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PortClass {
    /// 1..=1023 (`reserved-udp-port`, `reserved-tcp-port`).
    Reserved,
    /// 1024..=65535 (`unreserved-tcp-port`).
    Unreserved,
}

/// How a parameter's value is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum Kind {
    /// A 32-bit integer with an optional unit.
    Int(Unit),
    /// A 64-bit integer with an optional unit.
    Int64(Unit),
    /// A byte size (ssize_t) with an optional unit.
    Size(Unit),
    Real,
    /// A quoted string.
    Str,
    /// A word or a quoted string.
    Ident,
    /// yes/no/true/false/on/off/y/n/t/f/0/1; no value = yes.
    Bool,
    /// A boolean or `all`.
    NoYesAll,
    /// An hhmm time (starttime).
    Time,
    Compress,
    Encrypt,
    Holding,
    EstimateList,
    Strategy,
    TaperAlgo,
    SendAmreportOn,
    DataPath,
    Priority,
    Rate,
    ExInclude,
    Property,
    Application,
    Scripts,
    ExecuteOn,
    ExecuteWhere,
    IntOrStr,
    Autolabel,
    Labelstr,
    PartCacheType,
    HostLimit,
    StrList,
    StorageList,
    DumpSelection,
    VaultList,
    PortRange(PortClass),
    /// The global `holdingdisk` selection (or legacy definition).
    HoldingdiskSel,
    Interactivity,
    Taperscan,
    Policy,
}

/// A check applied after reading (conffile.c validate_*).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum Check {
    None,
    NonNegative,
    Positive,
    NonZero,
    RunsPerCycle,
    BumpPercent,
    BumpMult,
    DisplayUnit,
    Reserve,
    /// holdingdisk `use`: rounded down to a multiple of 32 KiB.
    Use,
    /// holdingdisk `chunksize`: 0 = unlimited, negative refused, rounded to 32 KiB, >= 64 KiB.
    Chunksize,
    Blocksize,
    Debug,
    Program,
    NoSpaceDquote,
    DumpLimit,
}

/// One parameter definition.
#[derive(Clone, Copy, Debug)]
pub struct Def {
    /// Canonical name: lower case, `_` for `-`.
    pub name: &'static str,
    /// How its value is read.
    pub kind: Kind,
    /// The check applied after reading.
    pub check: Check,
    /// Amanda 3.5 warns that it is deprecated.
    pub deprecated: bool,
}

const fn d(name: &'static str, kind: Kind) -> Def {
    Def {
        name,
        kind,
        check: Check::None,
        deprecated: false,
    }
}
const fn c(name: &'static str, kind: Kind, check: Check) -> Def {
    Def {
        name,
        kind,
        check,
        deprecated: false,
    }
}
const fn dep(name: &'static str, kind: Kind) -> Def {
    Def {
        name,
        kind,
        check: Check::None,
        deprecated: true,
    }
}

use Check as C;
use Kind as K;

const INT: Kind = K::Int(Unit::None);
const INTK: Kind = K::Int(Unit::K);
const I64K: Kind = K::Int64(Unit::K);

/// Parameters amanda.conf and amanda-client.conf both take: the connection retries, the
/// debug levels and the port ranges.
const COMMON: &[Def] = &[
    c("connect_tries", INT, C::Positive),
    c("rep_tries", INT, C::Positive),
    c("req_tries", INT, C::Positive),
    d("debug_days", INT),
    c("debug_amandad", INT, C::Debug),
    c("debug_recovery", INT, C::Debug),
    c("debug_amidxtaped", INT, C::Debug),
    c("debug_amindexd", INT, C::Debug),
    c("debug_amrecover", INT, C::Debug),
    c("debug_auth", INT, C::Debug),
    c("debug_event", INT, C::Debug),
    c("debug_holding", INT, C::Debug),
    c("debug_protocol", INT, C::Debug),
    c("debug_planner", INT, C::Debug),
    c("debug_driver", INT, C::Debug),
    c("debug_dumper", INT, C::Debug),
    c("debug_chunker", INT, C::Debug),
    c("debug_taper", INT, C::Debug),
    c("debug_selfcheck", INT, C::Debug),
    c("debug_sendsize", INT, C::Debug),
    c("debug_sendbackup", INT, C::Debug),
    d("reserved_udp_port", K::PortRange(PortClass::Reserved)),
    d("reserved_tcp_port", K::PortRange(PortClass::Reserved)),
    d("unreserved_tcp_port", K::PortRange(PortClass::Unreserved)),
];

/// `own` followed by [`COMMON`], as one table (`N` is their total length).
const fn with_common<const N: usize>(own: &[Def]) -> [Def; N] {
    assert!(own.len() + COMMON.len() == N);
    let mut out = [d("", K::Str); N];
    let mut i = 0;
    while i < N {
        out[i] = if i < own.len() {
            own[i]
        } else {
            COMMON[i - own.len()]
        };
        i += 1;
    }
    out
}

/// amanda.conf top-level parameters (server_var) besides [`COMMON`].
const SERVER_OWN: &[Def] = &[
    d("org", K::Str),
    d("mailto", K::Str),
    d("dumpuser", K::Str),
    d("printer", K::Str),
    d("mailer", K::Str),
    d("tapedev", K::Str),
    d("device_property", K::Property),
    d("property", K::Property),
    d("tpchanger", K::Str),
    d("changerdev", K::Str),
    d("changerfile", K::Str),
    c("labelstr", K::Labelstr, C::NoSpaceDquote),
    d("tapelist", K::Str),
    d("diskfile", K::Str),
    d("infofile", K::Str),
    d("logdir", K::Str),
    d("indexdir", K::Str),
    d("tapetype", K::Ident),
    d("holdingdisk", K::HoldingdiskSel),
    c("dumpcycle", INT, C::NonNegative),
    c("runspercycle", INT, C::RunsPerCycle),
    c("runtapes", INT, C::NonNegative),
    c("tapecycle", INT, C::Positive),
    c("bumpdays", INT, C::NonNegative),
    c("bumpsize", I64K, C::Positive),
    c("bumppercent", INT, C::BumpPercent),
    c("bumpmult", K::Real, C::BumpMult),
    c("netusage", INTK, C::Positive),
    c("inparallel", INT, C::Positive),
    d("dumporder", K::Str),
    c("maxdumps", INT, C::Positive),
    c("max_dle_by_volume", INT, C::Positive),
    c("etimeout", INT, C::NonZero),
    c("dtimeout", INT, C::Positive),
    c("ctimeout", INT, C::Positive),
    d("device_output_buffer_size", K::Size(Unit::None)),
    d("columnspec", K::Str),
    d("taperalgo", K::TaperAlgo),
    d("taper_parallel_write", INT),
    d("send_amreport_on", K::SendAmreportOn),
    c("flush_threshold_dumped", INT, C::NonNegative),
    c("flush_threshold_scheduled", INT, C::NonNegative),
    c("taperflush", INT, C::NonNegative),
    c("displayunit", K::Str, C::DisplayUnit),
    d("autoflush", K::NoYesAll),
    c("reserve", INT, C::Reserve),
    d("maxdumpsize", I64K),
    d("krb5keytab", K::Str),
    d("krb5principal", K::Str),
    dep("label_new_tapes", K::Str),
    c("autolabel", K::Autolabel, C::NoSpaceDquote),
    c("meta_autolabel", K::Str, C::NoSpaceDquote),
    d("eject_volume", K::Bool),
    d("tmpdir", K::Str),
    dep("usetimestamps", K::Bool),
    dep("amrecover_do_fsf", K::Bool),
    d("amrecover_changer", K::Str),
    dep("amrecover_check_label", K::Bool),
    d("recovery_limit", K::HostLimit),
    d("interactivity", K::Interactivity),
    d("taperscan", K::Taperscan),
    d("report_use_media", K::Bool),
    d("report_next_media", K::Bool),
    d("report_format", K::StrList),
    d("active_storage", K::StorageList),
    d("storage", K::StorageList),
    d("vault_storage", K::StorageList),
    d("command_file", K::Str),
    c("rest_api_port", INT, C::Positive),
    d("rest_ssl_cert", K::Str),
    d("rest_ssl_key", K::Str),
    d("ssl_dir", K::Str),
    d("compress_index", K::Bool),
    d("sort_index", K::Bool),
];

/// amanda-client.conf top-level parameters (client_var) besides [`COMMON`].
const CLIENT_OWN: &[Def] = &[
    d("conf", K::Str),
    d("amdump_server", K::Str),
    d("index_server", K::Str),
    d("tape_server", K::Str),
    d("tapedev", K::Str),
    d("auth", K::Str),
    d("ssh_keys", K::Str),
    d("amandad_path", K::Str),
    d("client_username", K::Str),
    d("client_port", K::IntOrStr),
    c("ctimeout", INT, C::Positive),
    d("ssl_dir", K::Str),
    d("ssl_check_fingerprint", K::Bool),
    d("ssl_fingerprint_file", K::Str),
    d("ssl_cert_file", K::Str),
    d("ssl_key_file", K::Str),
    d("ssl_ca_cert_file", K::Str),
    d("ssl_cipher_list", K::Str),
    d("ssl_check_host", K::Bool),
    d("ssl_check_certificate_host", K::Bool),
    d("gnutar_list_dir", K::Str),
    d("amandates", K::Str),
    d("mailer", K::Str),
    d("krb5keytab", K::Str),
    d("krb5principal", K::Str),
    d("property", K::Property),
    d("application", K::Application),
    d("script", K::Scripts),
    d("hostname", K::Str),
];

/// amanda.conf top-level parameters (server_var).
pub static SERVER: &[Def] = &with_common::<{ SERVER_OWN.len() + COMMON.len() }>(SERVER_OWN);

/// amanda-client.conf top-level parameters (client_var).
pub static CLIENT: &[Def] = &with_common::<{ CLIENT_OWN.len() + COMMON.len() }>(CLIENT_OWN);

/// `define tapetype` parameters.
pub static TAPETYPE: &[Def] = &[
    d("comment", K::Str),
    d("lbl_templ", K::Str),
    c("blocksize", K::Size(Unit::K), C::Blocksize),
    c("readblocksize", K::Size(Unit::K), C::Blocksize),
    c("length", I64K, C::NonNegative),
    d("filemark", I64K),
    c("speed", INT, C::NonNegative),
    c("part_size", I64K, C::NonNegative),
    d("part_cache_type", K::PartCacheType),
    d("part_cache_dir", K::Str),
    c("part_cache_max_size", I64K, C::NonNegative),
];

/// `define dumptype` parameters (and inline disklist blocks).
pub static DUMPTYPE: &[Def] = &[
    d("comment", K::Str),
    d("auth", K::Str),
    c("bumpdays", INT, C::NonNegative),
    c("bumpmult", K::Real, C::BumpMult),
    c("bumpsize", I64K, C::Positive),
    c("bumppercent", INT, C::BumpPercent),
    d("comprate", K::Rate),
    d("compress", K::Compress),
    d("encrypt", K::Encrypt),
    c("dumpcycle", INT, C::NonNegative),
    d("exclude", K::ExInclude),
    d("include", K::ExInclude),
    d("ignore", K::Bool),
    d("holdingdisk", K::Holding),
    d("index", K::Bool),
    d("kencrypt", K::Bool),
    c("maxdumps", INT, C::Positive),
    c("maxpromoteday", INT, C::NonNegative),
    d("priority", K::Priority),
    c("program", K::Str, C::Program),
    d("property", K::Property),
    d("record", K::Bool),
    d("skip_full", K::Bool),
    d("skip_incr", K::Bool),
    d("starttime", K::Time),
    d("strategy", K::Strategy),
    Def {
        name: "tape_splitsize",
        kind: I64K,
        check: C::NonNegative,
        deprecated: true,
    },
    dep("split_diskbuffer", K::Str),
    d("estimate", K::EstimateList),
    d("server_encrypt", K::Str),
    d("client_encrypt", K::Str),
    d("amandad_path", K::Str),
    d("client_username", K::Str),
    d("client_port", K::IntOrStr),
    d("ssh_keys", K::Str),
    d("server_custom_compress", K::Str),
    d("client_custom_compress", K::Str),
    dep("fallback_splitsize", I64K),
    d("server_decrypt_option", K::Str),
    d("client_decrypt_option", K::Str),
    d("application", K::Application),
    d("script", K::Scripts),
    d("data_path", K::DataPath),
    d("allow_split", K::Bool),
    c("max_warnings", INT, C::NonNegative),
    d("recovery_limit", K::HostLimit),
    c("dump_limit", K::HostLimit, C::DumpLimit),
    c("retry_dump", INT, C::Positive),
    d("tag", K::StrList),
    d("ssl_fingerprint_file", K::Str),
    d("ssl_cert_file", K::Str),
    d("ssl_key_file", K::Str),
    d("ssl_ca_cert_file", K::Str),
    d("ssl_cipher_list", K::Str),
    d("ssl_check_host", K::Bool),
    d("ssl_check_certificate_host", K::Bool),
    d("ssl_check_fingerprint", K::Bool),
    // amanda-rs extension (issue 14): the host dials in (`amandad --dial-out`).
    d("dialin", K::Bool),
];

/// `define holdingdisk` parameters.
pub static HOLDINGDISK: &[Def] = &[
    d("directory", K::Str),
    d("comment", K::Str),
    c("use", I64K, C::Use),
    c("chunksize", I64K, C::Chunksize),
];

/// `define interface` parameters.
pub static INTERFACE: &[Def] = &[
    d("comment", K::Str),
    c("use", INTK, C::Positive),
    d("src_ip", K::Str),
];

/// `define application` (or `application-tool`) parameters.
pub static APPLICATION: &[Def] = &[
    d("comment", K::Str),
    d("plugin", K::Str),
    d("property", K::Property),
    d("client_name", K::Str),
];

/// `define script` (or `script-tool`) parameters.
pub static SCRIPT: &[Def] = &[
    d("comment", K::Str),
    d("plugin", K::Str),
    d("property", K::Property),
    d("execute_on", K::ExecuteOn),
    d("execute_where", K::ExecuteWhere),
    d("order", INT),
    d("single_execution", K::Bool),
    d("client_name", K::Str),
];

/// `define device` parameters.
pub static DEVICE: &[Def] = &[
    d("comment", K::Str),
    d("device_property", K::Property),
    d("tapedev", K::Str),
];

/// `define changer` parameters.
pub static CHANGER: &[Def] = &[
    d("comment", K::Str),
    d("tapedev", K::Str),
    d("tpchanger", K::Str),
    d("changerdev", K::Str),
    d("changerfile", K::Str),
    d("property", K::Property),
    d("device_property", K::Property),
];

/// `define interactivity` parameters.
pub static INTERACTIVITY: &[Def] = &[
    d("comment", K::Str),
    d("plugin", K::Str),
    d("property", K::Property),
];

/// `define taperscan` parameters.
pub static TAPERSCAN: &[Def] = &[
    d("comment", K::Str),
    d("plugin", K::Str),
    d("property", K::Property),
];

/// `define policy` parameters.
pub static POLICY: &[Def] = &[
    d("comment", K::Str),
    d("retention_tapes", INT),
    d("retention_days", INT),
    d("retention_recover", INT),
    d("retention_full", INT),
];

/// `define storage` parameters.
pub static STORAGE: &[Def] = &[
    d("comment", K::Str),
    d("policy", K::Policy),
    d("tapedev", K::Str),
    d("tpchanger", K::Str),
    c("labelstr", K::Labelstr, C::NoSpaceDquote),
    c("autolabel", K::Autolabel, C::NoSpaceDquote),
    c("meta_autolabel", K::Str, C::NoSpaceDquote),
    c("tapepool", K::Str, C::NoSpaceDquote),
    d("runtapes", INT),
    d("taperscan", K::Str),
    d("tapetype", K::Str),
    d("max_dle_by_volume", INT),
    d("taperalgo", K::TaperAlgo),
    d("taper_parallel_write", INT),
    d("eject_volume", K::Bool),
    d("erase_volume", K::Bool),
    d("device_output_buffer_size", K::Size(Unit::None)),
    d("autoflush", K::NoYesAll),
    c("flush_threshold_dumped", INT, C::NonNegative),
    c("flush_threshold_scheduled", INT, C::NonNegative),
    c("taperflush", INT, C::NonNegative),
    d("report_use_media", K::Bool),
    d("report_next_media", K::Bool),
    d("interactivity", K::Interactivity),
    d("set_no_reuse", K::Bool),
    d("dump_selection", K::DumpSelection),
    d("erase_on_failure", K::Bool),
    d("erase_on_full", K::Bool),
    d("vault", K::VaultList),
];

/// Keywords Amanda 3.5 refuses outright because they were removed (conffile.c:
/// handle_invalid_keyword). amanda-rs only warns: they change nothing it does.
pub static REMOVED: &[&str] = &["rawtapedev", "tapebufs", "file_pad"];

/// Folds a keyword to its canonical form: ASCII lower case, `-` as `_`.
/// Returns `None` for words longer than any keyword (no allocation for those).
pub fn fold(word: &str) -> Option<String> {
    if word.len() > 40 {
        return None;
    }
    Some(
        word.bytes()
            .map(|b| {
                if b == b'-' {
                    '_'
                } else {
                    b.to_ascii_lowercase() as char
                }
            })
            .collect(),
    )
}

/// Whether `word` spells `canonical` (case-insensitive, `-` = `_`), without allocating.
pub fn is(word: &str, canonical: &str) -> bool {
    word.len() == canonical.len()
        && word.bytes().zip(canonical.bytes()).all(|(a, b)| {
            (if a == b'-' {
                b'_'
            } else {
                a.to_ascii_lowercase()
            }) == b
        })
}

/// Looks a keyword up in a table.
pub fn lookup(table: &'static [Def], word: &str) -> Option<&'static Def> {
    table.iter().find(|def| is(word, def.name))
}

/// Whether `word` is a parameter keyword anywhere in Amanda 3.5.1.
pub fn known_anywhere(word: &str) -> bool {
    [
        SERVER,
        CLIENT,
        TAPETYPE,
        DUMPTYPE,
        HOLDINGDISK,
        INTERFACE,
        APPLICATION,
        SCRIPT,
        DEVICE,
        CHANGER,
        INTERACTIVITY,
        TAPERSCAN,
        POLICY,
        STORAGE,
    ]
    .iter()
    .any(|t| lookup(t, word).is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keywords_fold_case_and_dashes() {
        assert!(is("Reserved-UDP-Port", "reserved_udp_port"));
        assert!(is("client_port", "client_port"));
        assert!(!is("client_portx", "client_port"));
        assert_eq!(
            lookup(SERVER, "reserved-udp-port").map(|d| d.kind),
            Some(Kind::PortRange(PortClass::Reserved))
        );
        assert_eq!(
            fold("Application-Tool").as_deref(),
            Some("application_tool")
        );
    }

    #[test]
    fn tables_have_no_duplicate_names() {
        for t in [
            SERVER,
            CLIENT,
            TAPETYPE,
            DUMPTYPE,
            HOLDINGDISK,
            INTERFACE,
            APPLICATION,
            SCRIPT,
            DEVICE,
            CHANGER,
            INTERACTIVITY,
            TAPERSCAN,
            POLICY,
            STORAGE,
        ] {
            for (i, a) in t.iter().enumerate() {
                assert!(
                    t.iter().skip(i + 1).all(|b| b.name != a.name),
                    "{} twice",
                    a.name
                );
                assert!(!a.name.contains('-') && a.name == a.name.to_lowercase());
            }
        }
    }
}
