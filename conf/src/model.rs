//! The typed definitions shared by amanda.conf, amanda-client.conf and the disklist:
//! dumptypes, applications, scripts, holding disks, interfaces, tapetypes, changers.
//!
//! Each struct holds what the daemons need with Amanda's defaults applied (see
//! [`crate::defaults`]), plus the explicitly set [`Params`] with their locations, so
//! anything not typed here is still reachable and every value can say where it came from.
//!
//! What this module must not do: parse.

use std::sync::Arc;
use std::time::Duration;

use crate::defaults as D;
use crate::resolve::{BlockKind, DumptypeBase, NamedVec, Params, RawDef, Scope};
use crate::source::Location;
use crate::value::{
    Compress, DataPath, Encrypt, Estimate, ExecuteWhere, FileList, HoldingPolicy, PartCacheType,
    Properties, Strategy, Value,
};

/// An `auth` as the configuration says it: one amanda-rs implements ([`proto::Auth`]), or
/// any other word (`krb5`, `ssh`, `local`, ... or a typo) kept as written, so that messages
/// quote what the user wrote. Compared case-insensitively (Amanda writes `BSDTCP` as the
/// dumptype default and `bsdtcp` in amanda-client.conf).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum AuthSetting {
    /// An auth amanda-rs implements.
    Known(proto::Auth),
    /// Anything else, as written.
    Other(String),
}

impl AuthSetting {
    /// Reads an `auth` string (any case).
    pub fn parse(s: &str) -> AuthSetting {
        match proto::Auth::from_name(s) {
            Some(a) => AuthSetting::Known(a),
            None => AuthSetting::Other(s.to_string()),
        }
    }
    /// The lower-case name of a known auth, or the text as written.
    pub fn as_str(&self) -> &str {
        match self {
            AuthSetting::Known(a) => a.name(),
            AuthSetting::Other(s) => s,
        }
    }
    /// The auth, when amanda-rs implements it.
    pub fn known(&self) -> Option<proto::Auth> {
        match self {
            AuthSetting::Known(a) => Some(*a),
            AuthSetting::Other(_) => None,
        }
    }
}

impl std::fmt::Display for AuthSetting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A dumptype's `program`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum Program {
    Dump,
    Gnutar,
    Star,
    /// Use the dumptype's `application`.
    Application,
}

/// Definitions of one kind by name (case-insensitive), in definition order.
#[derive(Clone, Debug)]
pub struct Named<T>(NamedVec<Arc<T>>);

impl<T> Default for Named<T> {
    fn default() -> Self {
        Named(NamedVec::default())
    }
}

impl<T> Named<T> {
    /// The definition named `name` (any case).
    pub fn get(&self, name: &str) -> Option<&Arc<T>> {
        self.0.get(name)
    }
    /// All definitions in order.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<T>> {
        self.0.items.iter()
    }
    /// How many.
    pub fn len(&self) -> usize {
        self.0.items.len()
    }
    /// None.
    pub fn is_empty(&self) -> bool {
        self.0.items.is_empty()
    }
    pub(crate) fn push(&mut self, name: &str, item: Arc<T>) {
        self.0.push(name, item);
    }
}

/// Typed reads of [`Params`] with defaults.
pub(crate) struct Get<'p>(pub &'p Params);

impl Get<'_> {
    pub fn int(&self, k: &'static str, d: i64) -> i64 {
        match self.0.raw(k) {
            Some(Value::Int(v)) => *v,
            _ => d,
        }
    }
    pub fn u32(&self, k: &'static str, d: i64) -> u32 {
        u32::try_from(self.int(k, d).max(0)).unwrap_or(u32::MAX)
    }
    pub fn i32(&self, k: &'static str, d: i64) -> i32 {
        i32::try_from(self.int(k, d)).unwrap_or(if d < 0 { i32::MIN } else { i32::MAX })
    }
    pub fn real(&self, k: &'static str, d: f64) -> f64 {
        match self.0.raw(k) {
            Some(Value::Real(v)) => *v,
            _ => d,
        }
    }
    pub fn str(&self, k: &'static str, d: &str) -> String {
        match self.0.raw(k) {
            Some(Value::Str(v)) => v.clone(),
            _ => d.to_string(),
        }
    }
    pub fn bool(&self, k: &'static str, d: bool) -> bool {
        match self.0.raw(k) {
            Some(Value::Bool(v)) => *v,
            _ => d,
        }
    }
    pub fn props(&self, k: &'static str) -> Properties {
        match self.0.raw(k) {
            Some(Value::Properties(p)) => p.clone(),
            _ => Properties::default(),
        }
    }
    pub fn secs(&self, k: &'static str, d: i64) -> Duration {
        Duration::from_secs(u64::try_from(self.int(k, d)).unwrap_or(0))
    }
}

/// `define application` (or `application-tool`): the plugin amandad runs for a DLE.
#[derive(Clone, Debug, PartialEq)]
pub struct Application {
    /// Name (inline ones are named like Amanda: `custom(DUMPTYPE:<dumptype>).<n>`).
    pub name: String,
    /// Where it is defined.
    pub location: Location,
    /// `comment`.
    pub comment: String,
    /// `plugin`, e.g. "amgtar" (default "").
    pub plugin: String,
    /// `property` lines (visible by default).
    pub properties: Properties,
    /// `client_name`.
    pub client_name: String,
    /// Explicit parameters.
    pub params: Params,
}

impl Application {
    pub(crate) fn build(raw: &RawDef) -> Application {
        let g = Get(&raw.params);
        Application {
            name: raw.name.clone(),
            location: raw.location.clone(),
            comment: g.str("comment", ""),
            plugin: g.str("plugin", ""),
            properties: g.props("property"),
            client_name: g.str("client_name", ""),
            params: raw.params.clone(),
        }
    }
}

/// `define script` (or `script-tool`).
#[derive(Clone, Debug, PartialEq)]
pub struct Script {
    /// Name.
    pub name: String,
    /// Where it is defined.
    pub location: Location,
    /// `comment`.
    pub comment: String,
    /// `plugin`.
    pub plugin: String,
    /// `property` lines.
    pub properties: Properties,
    /// `execute_on` events (e.g. "pre-dle-backup").
    pub execute_on: Vec<&'static str>,
    /// `execute_where` (default client).
    pub execute_where: ExecuteWhere,
    /// `order` (default 5000).
    pub order: i32,
    /// `single_execution`.
    pub single_execution: bool,
    /// `client_name`.
    pub client_name: String,
    /// Explicit parameters.
    pub params: Params,
}

impl Script {
    pub(crate) fn build(raw: &RawDef) -> Script {
        let g = Get(&raw.params);
        Script {
            name: raw.name.clone(),
            location: raw.location.clone(),
            comment: g.str("comment", ""),
            plugin: g.str("plugin", ""),
            properties: g.props("property"),
            execute_on: match raw.params.raw("execute_on") {
                Some(Value::ExecuteOn(v)) => v.clone(),
                _ => Vec::new(),
            },
            execute_where: match raw.params.raw("execute_where") {
                Some(Value::ExecuteWhere(w)) => *w,
                _ => ExecuteWhere::Client,
            },
            order: g.i32("order", D::SCRIPT_ORDER),
            single_execution: g.bool("single_execution", false),
            client_name: g.str("client_name", ""),
            params: raw.params.clone(),
        }
    }
}

/// A dumptype: how to back up a DLE.
#[derive(Clone, Debug, PartialEq)]
pub struct Dumptype {
    /// Name (inline disklist ones: `custom(<host>:<disk>).<n>`).
    pub name: String,
    /// Where it is defined.
    pub location: Location,
    /// `comment`.
    pub comment: String,
    /// `auth` (default bsdtcp).
    pub auth: AuthSetting,
    /// `program` (default DUMP).
    pub program: Program,
    /// `application`, resolved.
    pub application: Option<Arc<Application>>,
    /// `script`s, resolved, sorted by `order` (stable).
    pub scripts: Vec<Arc<Script>>,
    /// `compress` (default client fast).
    pub compress: Compress,
    /// `client_custom_compress`.
    pub client_custom_compress: String,
    /// `server_custom_compress`.
    pub server_custom_compress: String,
    /// `encrypt` (default none).
    pub encrypt: Encrypt,
    /// `client_encrypt`.
    pub client_encrypt: String,
    /// `server_encrypt`.
    pub server_encrypt: String,
    /// `client_decrypt_option` (default "-d").
    pub client_decrypt_option: String,
    /// `server_decrypt_option` (default "-d").
    pub server_decrypt_option: String,
    /// `estimate` methods in order (default client).
    pub estimate: Vec<Estimate>,
    /// `exclude`.
    pub exclude: FileList,
    /// `include`.
    pub include: FileList,
    /// `index` (default yes).
    pub index: bool,
    /// `record` (default yes).
    pub record: bool,
    /// `priority`: low 0, medium 1 (default), high 2.
    pub priority: i32,
    /// `maxdumps`: concurrent dumps on one client (default: the global `maxdumps`
    /// in force at the `define`).
    pub maxdumps: u32,
    /// `dumpcycle` days (default: the global one at the `define`).
    pub dumpcycle: u32,
    /// `holdingdisk` policy (default auto).
    pub holdingdisk: HoldingPolicy,
    /// `strategy` (default standard).
    pub strategy: Strategy,
    /// `client_port`: service name or port number; "" = the `amanda` service.
    pub client_port: String,
    /// `client_username`.
    pub client_username: String,
    /// `amandad_path`.
    pub amandad_path: String,
    /// `ssh_keys`.
    pub ssh_keys: String,
    /// `kencrypt`.
    pub kencrypt: bool,
    /// `ignore`.
    pub ignore: bool,
    /// `skip_incr`.
    pub skip_incr: bool,
    /// `skip_full`.
    pub skip_full: bool,
    /// `starttime` hhmm (0 = none).
    pub starttime: i64,
    /// `comprate` (full, incremental).
    pub comprate: (f64, f64),
    /// `maxpromoteday`.
    pub maxpromoteday: i32,
    /// `bumpsize` KiB.
    pub bumpsize_kib: i64,
    /// `bumppercent`.
    pub bumppercent: i32,
    /// `bumpdays`.
    pub bumpdays: i32,
    /// `bumpmult`.
    pub bumpmult: f64,
    /// `property` lines (hidden by default).
    pub properties: Properties,
    /// `data_path`.
    pub data_path: DataPath,
    /// `allow_split`.
    pub allow_split: bool,
    /// `max_warnings`.
    pub max_warnings: i32,
    /// `retry_dump`.
    pub retry_dump: i32,
    /// auth ssl: the `ssl-*` dumptype parameters (`dir` is set from the global `ssl-dir`
    /// by [`crate::Config::ssl_for`]).
    pub ssl: crate::ssl::SslSettings,
    /// `tag`s.
    pub tags: Vec<String>,
    /// `dialin` (amanda-rs extension, issue 14; default no): the host is reached only over
    /// connections it opened itself (`amandad --dial-out`), never by connecting to it.
    pub dialin: bool,
    /// Explicit parameters (with inherited ones), with their locations.
    pub params: Params,
}

impl Dumptype {
    pub(crate) fn build(raw: &RawDef, base: DumptypeBase, scope: &dyn Scope) -> Dumptype {
        let p = &raw.params;
        let g = Get(p);
        let application = match p.raw("application") {
            Some(Value::Application(n)) if !n.is_empty() => scope
                .find(BlockKind::Application, n)
                .map(|a| Arc::new(Application::build(a))),
            _ => None,
        };
        let mut scripts: Vec<Arc<Script>> = match p.raw("script") {
            Some(Value::Scripts(names)) => names
                .iter()
                .filter_map(|n| scope.find(BlockKind::Script, n))
                .map(|s| Arc::new(Script::build(s)))
                .collect(),
            _ => Vec::new(),
        };
        scripts.sort_by_key(|s| s.order);
        let exinc = |k| match p.raw(k) {
            Some(Value::ExInclude(e)) => e.clone(),
            _ => FileList::default(),
        };
        Dumptype {
            name: raw.name.clone(),
            location: raw.location.clone(),
            comment: g.str("comment", ""),
            auth: AuthSetting::parse(&g.str("auth", D::AUTH)),
            program: match g.str("program", D::PROGRAM).as_str() {
                "GNUTAR" => Program::Gnutar,
                "STAR" => Program::Star,
                "APPLICATION" => Program::Application,
                _ => Program::Dump,
            },
            application,
            scripts,
            compress: match p.raw("compress") {
                Some(Value::Compress(c)) => *c,
                _ => Compress::ClientFast,
            },
            client_custom_compress: g.str("client_custom_compress", ""),
            server_custom_compress: g.str("server_custom_compress", ""),
            encrypt: match p.raw("encrypt") {
                Some(Value::Encrypt(e)) => *e,
                _ => Encrypt::None,
            },
            client_encrypt: g.str("client_encrypt", ""),
            server_encrypt: g.str("server_encrypt", ""),
            client_decrypt_option: g.str("client_decrypt_option", "-d"),
            server_decrypt_option: g.str("server_decrypt_option", "-d"),
            estimate: match p.raw("estimate") {
                Some(Value::Estimates(e)) => e.clone(),
                _ => vec![Estimate::Client],
            },
            exclude: exinc("exclude"),
            include: exinc("include"),
            index: g.bool("index", D::INDEX),
            record: g.bool("record", D::RECORD),
            priority: match p.raw("priority") {
                Some(Value::Priority(v)) => *v,
                _ => 1,
            },
            maxdumps: g.u32("maxdumps", base.maxdumps),
            dumpcycle: g.u32("dumpcycle", base.dumpcycle),
            holdingdisk: match p.raw("holdingdisk") {
                Some(Value::Holding(h)) => *h,
                _ => HoldingPolicy::Auto,
            },
            strategy: match p.raw("strategy") {
                Some(Value::Strategy(s)) => *s,
                _ => Strategy::Standard,
            },
            client_port: g.str("client_port", D::CLIENT_PORT),
            client_username: g.str("client_username", ""),
            amandad_path: g.str("amandad_path", ""),
            ssh_keys: g.str("ssh_keys", ""),
            kencrypt: g.bool("kencrypt", false),
            ignore: g.bool("ignore", false),
            skip_incr: g.bool("skip_incr", false),
            skip_full: g.bool("skip_full", false),
            starttime: match p.raw("starttime") {
                Some(Value::Time(t)) => *t,
                _ => 0,
            },
            comprate: match p.raw("comprate") {
                Some(Value::Rate(a, b)) => (*a, *b),
                _ => D::COMPRATE,
            },
            maxpromoteday: g.i32("maxpromoteday", D::MAXPROMOTEDAY),
            bumpsize_kib: g.int("bumpsize", base.bumpsize),
            bumppercent: g.i32("bumppercent", base.bumppercent),
            bumpdays: g.i32("bumpdays", base.bumpdays),
            bumpmult: g.real("bumpmult", base.bumpmult),
            properties: g.props("property"),
            data_path: match p.raw("data_path") {
                Some(Value::DataPath(d)) => *d,
                _ => DataPath::Amanda,
            },
            allow_split: g.bool("allow_split", true),
            max_warnings: g.i32("max_warnings", D::MAX_WARNINGS),
            retry_dump: g.i32("retry_dump", D::RETRY_DUMP),
            ssl: crate::ssl::SslSettings::from_params(p),
            tags: match p.raw("tag") {
                Some(Value::StrList(t)) => t.clone(),
                _ => Vec::new(),
            },
            dialin: g.bool("dialin", false),
            params: p.clone(),
        }
    }

    /// Where `keyword` was set for this dumptype (possibly in a parent), if it was.
    pub fn origin(&self, keyword: &str) -> Option<&Location> {
        self.params.location(keyword)
    }
}

/// A holding disk.
#[derive(Clone, Debug, PartialEq)]
pub struct HoldingDisk {
    /// Name.
    pub name: String,
    /// Where it is defined.
    pub location: Location,
    /// `comment`.
    pub comment: String,
    /// `directory`.
    pub directory: String,
    /// `use` in KiB, rounded down to 32 KiB; 0 = all the space, negative = all but that.
    pub use_kib: i64,
    /// `chunksize` in KiB (0 in the file means unlimited and reads as a huge value).
    pub chunksize_kib: i64,
    /// Explicit parameters.
    pub params: Params,
}

impl HoldingDisk {
    pub(crate) fn build(raw: &RawDef) -> HoldingDisk {
        let g = Get(&raw.params);
        HoldingDisk {
            name: raw.name.clone(),
            location: raw.location.clone(),
            comment: g.str("comment", ""),
            directory: g.str("directory", ""),
            use_kib: g.int("use", D::HOLDING_USE_KIB),
            chunksize_kib: g.int("chunksize", D::HOLDING_CHUNKSIZE_KIB),
            params: raw.params.clone(),
        }
    }
}

/// A network interface (bandwidth limit) of the disklist.
#[derive(Clone, Debug, PartialEq)]
pub struct Interface {
    /// Name (`default` is created from `netusage` unless defined).
    pub name: String,
    /// Where it is defined.
    pub location: Location,
    /// `comment`.
    pub comment: String,
    /// `use` in KiB/s.
    pub use_kibps: i64,
    /// `src_ip`.
    pub src_ip: Option<String>,
    /// Explicit parameters.
    pub params: Params,
}

impl Interface {
    pub(crate) fn build(raw: &RawDef) -> Interface {
        let g = Get(&raw.params);
        Interface {
            name: raw.name.clone(),
            location: raw.location.clone(),
            comment: g.str("comment", ""),
            use_kibps: g.int("use", D::INTERFACE_USE_KIBPS),
            src_ip: match raw.params.raw("src_ip") {
                Some(Value::Str(s)) => Some(s.clone()),
                _ => None,
            },
            params: raw.params.clone(),
        }
    }
}

/// A tapetype.
#[derive(Clone, Debug, PartialEq)]
pub struct Tapetype {
    /// Name.
    pub name: String,
    /// Where it is defined.
    pub location: Location,
    /// `comment`.
    pub comment: String,
    /// `length` KiB.
    pub length_kib: i64,
    /// `filemark` KiB.
    pub filemark_kib: i64,
    /// `speed`.
    pub speed: i64,
    /// `blocksize` KiB.
    pub blocksize_kib: i64,
    /// `readblocksize` KiB (at least `blocksize`).
    pub readblocksize_kib: i64,
    /// `part_size` KiB.
    pub part_size_kib: i64,
    /// `part_cache_type`.
    pub part_cache_type: PartCacheType,
    /// Explicit parameters.
    pub params: Params,
}

impl Tapetype {
    pub(crate) fn build(raw: &RawDef) -> Tapetype {
        let g = Get(&raw.params);
        let blocksize = g.int("blocksize", D::TAPE_BLOCKSIZE_KIB);
        Tapetype {
            name: raw.name.clone(),
            location: raw.location.clone(),
            comment: g.str("comment", ""),
            length_kib: g.int("length", D::TAPE_LENGTH_KIB),
            filemark_kib: g.int("filemark", D::TAPE_FILEMARK_KIB),
            speed: g.int("speed", D::TAPE_SPEED),
            blocksize_kib: blocksize,
            readblocksize_kib: g.int("readblocksize", D::TAPE_BLOCKSIZE_KIB).max(blocksize),
            part_size_kib: g.int("part_size", 0),
            part_cache_type: match raw.params.raw("part_cache_type") {
                Some(Value::PartCacheType(t)) => *t,
                _ => PartCacheType::None,
            },
            params: raw.params.clone(),
        }
    }
}

/// A changer definition.
#[derive(Clone, Debug, PartialEq)]
pub struct Changer {
    /// Name.
    pub name: String,
    /// Where it is defined.
    pub location: Location,
    /// `comment`.
    pub comment: String,
    /// `tpchanger`.
    pub tpchanger: String,
    /// `tapedev`.
    pub tapedev: String,
    /// `changerdev`.
    pub changerdev: String,
    /// `changerfile`.
    pub changerfile: String,
    /// `property`.
    pub properties: Properties,
    /// `device_property`.
    pub device_properties: Properties,
    /// Explicit parameters.
    pub params: Params,
}

impl Changer {
    pub(crate) fn build(raw: &RawDef) -> Changer {
        let g = Get(&raw.params);
        Changer {
            name: raw.name.clone(),
            location: raw.location.clone(),
            comment: g.str("comment", ""),
            tpchanger: g.str("tpchanger", ""),
            tapedev: g.str("tapedev", ""),
            changerdev: g.str("changerdev", ""),
            changerfile: g.str("changerfile", ""),
            properties: g.props("property"),
            device_properties: g.props("device_property"),
            params: raw.params.clone(),
        }
    }
}

/// Any other definition (device, interactivity, taperscan, policy, storage): name and
/// explicit parameters.
#[derive(Clone, Debug, PartialEq)]
pub struct Section {
    /// Name.
    pub name: String,
    /// Where it is defined.
    pub location: Location,
    /// Explicit parameters.
    pub params: Params,
}

impl Section {
    pub(crate) fn build(raw: &RawDef) -> Section {
        Section {
            name: raw.name.clone(),
            location: raw.location.clone(),
            params: raw.params.clone(),
        }
    }
}
