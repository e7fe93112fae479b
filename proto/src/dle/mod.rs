//! The disk list entry (DLE) as servers send it to clients, in both encodings.
//!
//! * [`xml`]: the `<dle>` form of 3.x servers (spec §6.3), parsed with GMarkup's and
//!   `amxml.c`'s rules, and encoded byte-identically in each of the three layouts the real
//!   server uses (amcheck's selfcheck, planner's sendsize, dumper's sendbackup) plus the
//!   uncleaned sendbackup form embedded in dump-file headers.
//! * [`legacy`]: the one-line forms for clients without `fe_req_xml` (spec §6.2, §6.5,
//!   §6.6, §6.7.1) and the option string.
//!
//! [`Dle`] is the common model: what the server wants the client to do. Names, devices,
//! paths and property values are [`ByteString`]s.
//!
//! What this module must not do: decide policy (which DLEs, which levels), or touch files.

pub mod legacy;
pub mod xml;

pub use xml::{XmlError, XmlErrorKind, XmlLayout};

use crate::quote::ByteString;

/// One kind of size estimate (`<estimate>` tokens, legacy `CALCSIZE` prefix).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Estimate {
    /// `CLIENT`: the client runs its backup program in estimate mode.
    Client,
    /// `SERVER`: the server guesses from history.
    Server,
    /// `CALCSIZE`: the client runs `calcsize`.
    Calcsize,
}

impl Estimate {
    /// The keyword.
    pub const fn keyword(self) -> &'static str {
        match self {
            Estimate::Client => "CLIENT",
            Estimate::Server => "SERVER",
            Estimate::Calcsize => "CALCSIZE",
        }
    }
}

/// A requested dump level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Level {
    /// The level, 0 = full.
    pub level: i32,
    /// `<server>YES</server>`: the server can estimate this level itself (sendsize only,
    /// written when the client has `fe_xml_level_server`).
    pub server: bool,
}

impl Level {
    /// A level without the server flag.
    pub const fn new(level: i32) -> Level {
        Level {
            level,
            server: false,
        }
    }
}

/// Compression (`<compress>`, legacy `compress-fast` etc.).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub enum Compress {
    /// No compression (no element, no option).
    #[default]
    None,
    /// Client-side fast (`FAST`, `compress-fast`).
    Fast,
    /// Client-side best (`BEST`, `compress-best`).
    Best,
    /// Client-side custom program (`CUSTOM`, `comp-cust=`).
    Custom(ByteString),
    /// Server-side fast (`SERVER-FAST`, `srvcomp-fast`).
    ServerFast,
    /// Server-side best (`SERVER-BEST`, `srvcomp-best`).
    ServerBest,
    /// Server-side custom program (`SERVER-CUSTOM`, `srvcomp-cust=`).
    ServerCustom(ByteString),
}

/// Encryption (`<encrypt>`, legacy `encrypt-cust=` etc.).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub enum Encrypt {
    /// No encryption.
    #[default]
    None,
    /// The client encrypts with `program`.
    Custom {
        /// The encryption program.
        program: ByteString,
        /// Option that makes it decrypt.
        decrypt_option: Option<ByteString>,
    },
    /// The server encrypts (never sent to clients in XML; see [`XmlLayout::Sendbackup`]).
    ServerCustom {
        /// The encryption program.
        program: ByteString,
        /// Option that makes it decrypt.
        decrypt_option: Option<ByteString>,
    },
}

/// `<datapath>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum DataPath {
    /// `AMANDA`: data flows through the DATA stream.
    Amanda,
    /// `DIRECTTCP` with the `<directtcp>` addresses (empty for selfcheck/sendsize).
    DirectTcp(Vec<ByteString>),
}

/// `<exclude>` / `<include>`, legacy `exclude-file=` etc.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct FileList {
    /// `<file>` patterns.
    pub files: Vec<ByteString>,
    /// `<list>` files holding patterns.
    pub lists: Vec<ByteString>,
    /// `<optional>`: a missing list file is not an error.
    pub optional: bool,
}

impl FileList {
    /// Whether the list has no file, no list and is not optional.
    pub fn is_empty(&self) -> bool {
        self.files.is_empty() && self.lists.is_empty() && !self.optional
    }
}

/// A `<property>`: a name, a priority flag and zero or more values.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Property {
    /// The property name.
    pub name: ByteString,
    /// `<priority>yes</priority>`.
    pub priority: bool,
    /// The values, in order.
    pub values: Vec<ByteString>,
}

impl Property {
    /// A property with one value and no priority.
    pub fn new(name: impl Into<ByteString>, value: impl Into<ByteString>) -> Property {
        Property {
            name: name.into(),
            priority: false,
            values: vec![value.into()],
        }
    }
}

/// `<backup-program>`: the application (`amgtar`, ...) of an `APPLICATION` DLE.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Application {
    /// `<plugin>`.
    pub plugin: ByteString,
    /// Application properties, in order.
    pub properties: Vec<Property>,
    /// `<client_name>`.
    pub client_name: Option<ByteString>,
}

/// Where a script runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum ExecuteWhere {
    /// `CLIENT`.
    #[default]
    Client,
    /// `SERVER` (any other text is read as this).
    Server,
}

/// A `<script>`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Script {
    /// `<plugin>`.
    pub plugin: ByteString,
    /// `<execute_where>`.
    pub execute_where: ExecuteWhere,
    /// `<execute_on>` keywords (`PRE-DLE-BACKUP`, ...), in order; written comma-separated.
    pub execute_on: Vec<ByteString>,
    /// Script properties, in order.
    pub properties: Vec<Property>,
    /// `<client_name>`.
    pub client_name: Option<ByteString>,
}

/// A disk list entry, as the server sends it and the client reads it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Dle {
    /// `<program>`: `GNUTAR`, `DUMP` or `APPLICATION` (then see [`Dle::application`]).
    pub program: ByteString,
    /// `<backup-program>`.
    pub application: Option<Application>,
    /// The estimate kinds, in order (the client uses `CLIENT` when empty).
    pub estimates: Vec<Estimate>,
    /// `<disk>`: the DLE name.
    pub disk: Option<ByteString>,
    /// `<diskdevice>`: the device or directory, when it differs from the disk name.
    pub device: Option<ByteString>,
    /// `<level>`s: one for sendbackup, one per estimate for sendsize, none for selfcheck.
    pub levels: Vec<Level>,
    /// `<spindle>` (sendsize only); -1 = no spindle grouping.
    pub spindle: i32,
    /// `<auth>`.
    pub auth: Option<ByteString>,
    /// `<compress>`.
    pub compress: Compress,
    /// `<encrypt>`.
    pub encrypt: Encrypt,
    /// `<record>`: update the dump dates after a successful dump.
    pub record: bool,
    /// `<index>YES</index>`: produce an index.
    pub index: bool,
    /// `<kencrypt>YES</kencrypt>`.
    pub kencrypt: bool,
    /// `<datapath>`; `None` when absent (the client then uses `AMANDA`).
    pub data_path: Option<DataPath>,
    /// `<exclude>`; `Some` even when empty, if the element is there.
    pub exclude: Option<FileList>,
    /// `<include>`.
    pub include: Option<FileList>,
    /// DLE-level (dumptype) `<property>`s, in order.
    pub properties: Vec<Property>,
    /// `<script>`s, in order.
    pub scripts: Vec<Script>,
    /// `<dumpdate>` (clients only use it internally).
    pub dumpdate: Option<ByteString>,
}

impl Default for Dle {
    /// What `init_dle` gives: no program, `record` on, spindle 0, everything else off.
    fn default() -> Dle {
        Dle {
            program: ByteString::new(),
            application: None,
            estimates: Vec::new(),
            disk: None,
            device: None,
            levels: Vec::new(),
            spindle: 0,
            auth: None,
            compress: Compress::None,
            encrypt: Encrypt::None,
            record: true,
            index: false,
            kencrypt: false,
            data_path: None,
            exclude: None,
            include: None,
            properties: Vec::new(),
            scripts: Vec::new(),
            dumpdate: None,
        }
    }
}

impl Dle {
    /// Whether the program is `GNUTAR` or `DUMP` (the "legacy API"; everything else is sent
    /// as `APPLICATION`).
    pub fn is_legacy_program(&self) -> bool {
        self.program == "GNUTAR" || self.program == "DUMP"
    }

    /// The device the client backs up: [`Dle::device`], else the disk name.
    pub fn effective_device(&self) -> Option<&ByteString> {
        self.device.as_ref().or(self.disk.as_ref())
    }

    /// The first estimate kind (the one older clients use), `CLIENT` if none.
    pub fn first_estimate(&self) -> Estimate {
        self.estimates.first().copied().unwrap_or(Estimate::Client)
    }
}
