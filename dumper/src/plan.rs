//! From amanda.conf and the disklist to what the dumper will do: one [`DleSpec`] per DLE,
//! with the protocol-level [`Dle`] built from its dumptype the way the real server builds it,
//! the auth and client port to use, and the scheduling knobs.
//!
//! `CONFIG` is found as Amanda finds it: a name means `/etc/amanda/<name>/amanda.conf`, a
//! path (containing `/`, or an existing `*.conf` file) means that amanda.conf, and the
//! disklist is its `diskfile`, relative to the config directory.
//!
//! What this module must not do: touch the network, or decide levels (see `levels`). A DLE
//! the dumper cannot serve (`STAR`, DIRECTTCP, an auth other than bsd/bsdudp/bsdtcp, the
//! compression and encryption combinations Amanda refuses, a server filter program that is
//! not an absolute path) is kept with a [`DleSpec::unsupported`] reason, so that the
//! report shows it as FAILED instead of silently skipping it.

use std::path::{Path, PathBuf};

use conf::loader::ConfigLocation;
use conf::model::{AuthSetting, Program};
use conf::value::{
    Compress as ConfCompress, DataPath as ConfDataPath, Encrypt as ConfEncrypt, Strategy,
};
use conf::{Config, DiskEntry, Disklist};
use portpool_alloc::Services;
use proto::Auth;
use proto::dataphase::{FilterChain, Stage};
use proto::dle::{
    Application, Compress, DataPath, Dle, Encrypt, Estimate, ExecuteWhere, FileList, Property,
    Script,
};

/// One DLE as the dumper will handle it.
#[derive(Clone, Debug)]
pub struct DleSpec {
    /// Position in the disklist (also the DLE's id everywhere in the dumper).
    pub id: usize,
    /// The client host, as written in the disklist.
    pub host: String,
    /// The disk name.
    pub disk: Vec<u8>,
    /// The auth (bsdtcp when unsupported, for display only).
    pub auth: Auth,
    /// The client's amanda port (UDP for bsd/bsdudp, TCP for bsdtcp).
    pub client_port: u16,
    /// What the request says about the DLE (no levels yet).
    pub dle: Dle,
    /// The dumptype's first estimate kind is `server`: no sendsize for this DLE.
    pub estimate_server: bool,
    /// `dumpcycle` in days (0: a full every run).
    pub dumpcycle_days: u32,
    /// `strategy`.
    pub strategy: Strategy,
    /// `skip-full`.
    pub skip_full: bool,
    /// `skip-incr`.
    pub skip_incr: bool,
    /// `priority` (higher first).
    pub priority: i32,
    /// `retry-dump`: how many times a retryable failure is retried.
    pub retry_dump: u32,
    /// The dumptype's name.
    pub dumptype: String,
    /// Where the disklist line is (`file:line:column`).
    pub location: String,
    /// Why the dumper cannot dump this DLE, if it cannot.
    pub unsupported: Option<String>,
    /// auth ssl: the dumptype's ssl settings with the global `ssl-dir`.
    pub ssl: Option<std::sync::Arc<conf::SslSettings>>,
    /// `dialin yes`: reached only over connections the client opens (issue 14).
    pub dialin: bool,
}

impl DleSpec {
    /// `host:disk` for messages (disk lossily decoded).
    pub fn label(&self) -> String {
        format!("{}:{}", self.host, String::from_utf8_lossy(&self.disk))
    }
}

/// A client host and its DLEs.
#[derive(Clone, Debug)]
pub struct HostSpec {
    /// The name as written in the disklist.
    pub name: String,
    /// `maxdumps` of the host (the value of its last DLE, as Amanda takes it).
    pub maxdumps: u32,
    /// Its DLEs' ids, in disklist order.
    pub dles: Vec<usize>,
}

/// A holding disk the dumper may write to.
#[derive(Clone, Debug)]
pub struct Holding {
    /// Its name in amanda.conf.
    pub name: String,
    /// `directory`.
    pub dir: PathBuf,
    /// `use` in KiB: > 0 at most this much, <= 0 all but that much of the free space.
    pub use_kib: i64,
}

/// Everything the dumper read from the configuration.
#[derive(Clone, Debug)]
pub struct Plan {
    /// The resolved amanda.conf.
    pub config: Config,
    /// The configuration's name (the directory name when given as a path).
    pub config_name: String,
    /// Where amanda.conf is.
    pub conf_path: PathBuf,
    /// The DLEs, in disklist order (ignored DLEs are left out).
    pub dles: Vec<DleSpec>,
    /// The hosts, in order of first appearance.
    pub hosts: Vec<HostSpec>,
    /// The holding disks to use, in configuration order.
    pub holding: Vec<Holding>,
    /// Configuration warnings (unknown keywords, dumptype options we ignore, ...).
    pub warnings: Vec<String>,
}

/// The configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// amanda.conf or the disklist has errors (each names file:line:column).
    #[error("{0}")]
    Conf(String),
    /// Nothing to write dumps to.
    #[error(
        "{conf}: no holding disk: define one (`define holdingdisk hd1 {{ directory \"/var/lib/amanda/holding\" }}`) and select it with `holdingdisk \"hd1\"`"
    )]
    NoHolding {
        /// amanda.conf.
        conf: String,
    },
}

/// Where a `CONFIG` argument points: a name under /etc/amanda, a config directory or an
/// amanda.conf file.
pub fn locate(arg: &str) -> ConfigLocation {
    let p = Path::new(arg);
    if !arg.contains('/') && arg.ends_with(".conf") && p.is_file() {
        return ConfigLocation::resolve(&format!("./{arg}"));
    }
    ConfigLocation::resolve(arg)
}

/// Reads amanda.conf and its disklist.
pub fn load(arg: &str) -> Result<Plan, PlanError> {
    let location = locate(arg);
    let services =
        portpool_alloc::pool::load_services(Path::new(portpool_alloc::services::DEFAULT_PATH))
            .unwrap_or_else(|_| Services::empty());
    load_at(&location, &services)
}

/// The configuration `name` under `config_root` (ambackupd: a name a client sent, already
/// checked to be a plain directory name).
pub fn load_in(config_root: &Path, name: &str) -> Result<Plan, PlanError> {
    let location = ConfigLocation::resolve_in(config_root, name);
    let services =
        portpool_alloc::pool::load_services(Path::new(portpool_alloc::services::DEFAULT_PATH))
            .unwrap_or_else(|_| Services::empty());
    load_at(&location, &services)
}

/// [`load`] for a resolved location and a services database.
pub fn load_at(location: &ConfigLocation, services: &Services) -> Result<Plan, PlanError> {
    let loaded = Config::load(location).map_err(|e| PlanError::Conf(e.to_string()))?;
    let mut warnings: Vec<String> = loaded.warnings.iter().map(|w| w.to_string()).collect();
    let config = loaded.value;
    let disklist = Disklist::load(&config).map_err(|e| PlanError::Conf(e.to_string()))?;
    warnings.extend(disklist.warnings.iter().map(|w| w.to_string()));
    let disklist = disklist.value;
    let config_name = location.name.clone().unwrap_or_else(|| {
        location
            .dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .filter(|n| !n.is_empty() && n != ".")
            .unwrap_or_else(|| "amanda".to_owned())
    });
    let conf_display = location.file.display().to_string();

    let holding_of = |h: &std::sync::Arc<conf::HoldingDisk>| Holding {
        name: h.name.clone(),
        dir: config.path(&h.directory),
        use_kib: h.use_kib,
    };
    let mut holding: Vec<Holding> = config.holdingdisks.iter().map(holding_of).collect();
    if holding.is_empty() && !config.holdingdisk_defs.is_empty() {
        warnings.push(format!(
            "{conf_display}: holding disks are defined but none is selected with `holdingdisk \"name\"`; using all of them"
        ));
        holding = config.holdingdisk_defs.iter().map(holding_of).collect();
    }
    holding.retain(|h| !h.dir.as_os_str().is_empty());
    if holding.is_empty() {
        return Err(PlanError::NoHolding { conf: conf_display });
    }

    let mut dles = Vec::new();
    for entry in &disklist.entries {
        let dt = &entry.dumptype;
        if dt.ignore || dt.strategy == Strategy::Skip {
            continue;
        }
        let id = dles.len();
        let mut spec = spec_of(id, entry, services, &mut warnings);
        if spec.auth == Auth::Ssl {
            spec.ssl = Some(std::sync::Arc::new(config.ssl_for(dt)));
        }
        dles.push(spec);
    }
    let mut hosts: Vec<HostSpec> = Vec::new();
    for d in &dles {
        match hosts
            .iter_mut()
            .find(|h| h.name.eq_ignore_ascii_case(&d.host))
        {
            Some(h) => h.dles.push(d.id),
            None => hosts.push(HostSpec {
                name: d.host.clone(),
                maxdumps: 1,
                dles: vec![d.id],
            }),
        }
    }
    for h in &mut hosts {
        h.maxdumps = disklist.host_maxdumps(&h.name).unwrap_or(1).max(1);
    }
    Ok(Plan {
        conf_path: location.file.clone(),
        config,
        config_name,
        dles,
        hosts,
        holding,
        warnings,
    })
}

/// The client port of a DLE: `client_port` if numeric, else that service name (default
/// `amanda`) in /etc/services for the auth's protocol, else 10080 (Amanda 3.5.1 would use
/// a garbage port there, harness gotcha 2; we warn instead).
fn client_port(text: &str, auth: Auth, services: &Services, warn: &mut Vec<String>) -> u16 {
    let t = text.trim();
    if let Ok(p) = t.parse::<u16>()
        && p != 0
    {
        return p;
    }
    let name = if t.is_empty() { "amanda" } else { t };
    match services.port_of(name, auth.transport()) {
        Some(p) => p,
        None => {
            warn.push(format!(
                "service {name}/{} is not in {}; using port 10080 (set client_port \"10080\" in the dumptype to silence this)",
                auth.transport(),
                if services.path.is_empty() {
                    "/etc/services"
                } else {
                    &services.path
                }
            ));
            10080
        }
    }
}

fn properties(p: &conf::value::Properties) -> Vec<Property> {
    p.0.iter()
        .filter(|(_, v)| v.visible)
        .map(|(name, v)| Property {
            name: name.as_str().into(),
            priority: v.priority,
            values: v.values.iter().map(|s| s.as_str().into()).collect(),
        })
        .collect()
}

/// The DLE's `<exclude>`/`<include>`: absent, as Amanda writes it, when there is no pattern
/// and no list file (`optional` alone says nothing).
fn file_list(e: &FileList) -> Option<FileList> {
    (!(e.files.is_empty() && e.lists.is_empty())).then(|| e.clone())
}

/// Builds the DLE of a disklist entry.
fn spec_of(id: usize, e: &DiskEntry, services: &Services, warn: &mut Vec<String>) -> DleSpec {
    let dt = &e.dumptype;
    let mut unsupported: Option<String> = None;
    let mut refuse = |why: String| {
        if unsupported.is_none() {
            unsupported = Some(why);
        }
    };
    let auth = match dt.auth {
        AuthSetting::Known(a) => a,
        ref other => {
            refuse(format!(
                "auth \"{other}\" is not supported by dumper (use bsd, bsdudp, bsdtcp or ssl)"
            ));
            Auth::Bsdtcp
        }
    };
    if dt.dialin && !matches!(auth, Auth::Bsdtcp | Auth::Ssl) {
        refuse(format!(
            "dialin yes works with auth bsdtcp or ssl (this dumptype says auth {auth})"
        ));
    }
    let (program, application) = match dt.program {
        Program::Gnutar => ("GNUTAR", None),
        Program::Dump => ("DUMP", None),
        Program::Star => {
            refuse("program \"STAR\" is not supported by dumper".into());
            ("STAR", None)
        }
        Program::Application => match &dt.application {
            Some(a) if !a.plugin.is_empty() => (
                "APPLICATION",
                Some(Application {
                    plugin: a.plugin.as_str().into(),
                    properties: properties(&a.properties),
                    client_name: (!a.client_name.is_empty()).then(|| a.client_name.as_str().into()),
                }),
            ),
            _ => {
                refuse(format!(
                    "dumptype {}: program \"APPLICATION\" needs an application with a plugin",
                    dt.name
                ));
                ("APPLICATION", None)
            }
        },
    };
    let compress = match dt.compress {
        ConfCompress::None => Compress::None,
        ConfCompress::ClientFast => Compress::Fast,
        ConfCompress::ClientBest => Compress::Best,
        ConfCompress::ClientCustom => Compress::Custom(dt.client_custom_compress.as_str().into()),
        ConfCompress::ServerFast => Compress::ServerFast,
        ConfCompress::ServerBest => Compress::ServerBest,
        ConfCompress::ServerCustom => {
            Compress::ServerCustom(dt.server_custom_compress.as_str().into())
        }
    };
    // The decrypt options go with the program (Amanda's default `-d`).
    let encrypt = match dt.encrypt {
        ConfEncrypt::None => Encrypt::None,
        ConfEncrypt::Client => Encrypt::Custom {
            program: dt.client_encrypt.as_str().into(),
            decrypt_option: Some(dt.client_decrypt_option.as_str().into()),
        },
        ConfEncrypt::Server => Encrypt::ServerCustom {
            program: dt.server_encrypt.as_str().into(),
            decrypt_option: Some(dt.server_decrypt_option.as_str().into()),
        },
    };
    // The combinations and empty programs Amanda refuses (issue 12), and programs the
    // server runs that are not absolute paths (never looked up in PATH).
    match FilterChain::of(&compress, &encrypt) {
        Err(e) => refuse(format!("dumptype {}: {e}", dt.name)),
        Ok(chain) => {
            for stage in &chain.server {
                let program = match stage {
                    Stage::CustomCompress(p) => p,
                    Stage::Encrypt { program, .. } => program,
                    Stage::Gzip(_) => continue,
                };
                if !program.starts_with(b"/") {
                    refuse(format!(
                        "dumptype {}: server filter program {:?} is not an absolute path",
                        dt.name,
                        String::from_utf8_lossy(program)
                    ));
                }
            }
        }
    }
    if dt.data_path == ConfDataPath::Directtcp {
        refuse(format!(
            "dumptype {}: data-path DIRECTTCP is not supported by dumper",
            dt.name
        ));
    }
    let estimates = dt.estimate.clone();
    let scripts: Vec<Script> = dt
        .scripts
        .iter()
        .filter(|s| {
            if s.execute_where == ExecuteWhere::Server {
                warn.push(format!(
                    "{}: script {} runs on the server, which dumper does not do; ignored",
                    e.location, s.name
                ));
                false
            } else {
                true
            }
        })
        .map(|s| Script {
            plugin: s.plugin.as_str().into(),
            execute_where: ExecuteWhere::Client,
            execute_on: s.execute_on.iter().map(|x| (*x).into()).collect(),
            properties: properties(&s.properties),
            client_name: (!s.client_name.is_empty()).then(|| s.client_name.as_str().into()),
        })
        .collect();
    let dle = Dle {
        program: program.into(),
        application,
        estimates: estimates.clone(),
        disk: Some(e.disk.clone().into()),
        device: e.device.clone().map(Into::into),
        levels: Vec::new(),
        spindle: e.spindle,
        auth: Some(auth.name().into()),
        compress,
        encrypt,
        record: dt.record,
        index: dt.index,
        kencrypt: false,
        data_path: Some(DataPath::Amanda),
        exclude: file_list(&dt.exclude),
        include: file_list(&dt.include),
        properties: properties(&dt.properties),
        scripts,
        dumpdate: None,
    };
    let port = client_port(&dt.client_port, auth, services, warn);
    DleSpec {
        id,
        host: e.host.clone(),
        disk: e.disk.clone(),
        auth,
        client_port: port,
        estimate_server: estimates.first() == Some(&Estimate::Server),
        dle,
        dumpcycle_days: dt.dumpcycle,
        strategy: dt.strategy,
        skip_full: dt.skip_full,
        skip_incr: dt.skip_incr,
        priority: dt.priority,
        retry_dump: u32::try_from(dt.retry_dump.max(0)).unwrap_or(0),
        dumptype: dt.name.clone(),
        location: e.location.to_string(),
        unsupported,
        ssl: None,
        dialin: dt.dialin,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn write_config(dir: &Path, dumptype_extra: &str, disklist: &str) -> PathBuf {
        fs::create_dir_all(dir.join("holding")).unwrap();
        let conf = format!(
            r#"org "t"
dumpuser "backup"
inparallel 3
define holdingdisk hd1 {{
    directory "{holding}"
}}
holdingdisk "hd1"
define application-tool app_amgtar {{
    plugin "amgtar"
    property "ATIME-PRESERVE" "no"
}}
define dumptype dt {{
    auth "bsd"
    client_port "10123"
    program "APPLICATION"
    application "app_amgtar"
    compress none
    index yes
    maxdumps 2
{dumptype_extra}
}}
"#,
            holding = dir.join("holding").display()
        );
        fs::write(dir.join("amanda.conf"), conf).unwrap();
        fs::write(dir.join("disklist"), disklist).unwrap();
        dir.join("amanda.conf")
    }

    #[test]
    fn application_dle_is_built_like_the_real_server() {
        let t = tempfile::tempdir().unwrap();
        let conf = write_config(t.path(), "", "localhost /data dt\nlocalhost \"/x y\" dt\n");
        let plan = load(conf.to_str().unwrap()).unwrap();
        assert_eq!(plan.dles.len(), 2);
        let d = &plan.dles[0];
        assert_eq!(d.auth, Auth::Bsd);
        assert_eq!(d.client_port, 10123);
        assert!(d.unsupported.is_none());
        let xml = d.dle.to_xml(
            proto::dle::XmlLayout::Sendbackup,
            &proto::features::Features::amanda_3_5_1(),
        );
        let xml = String::from_utf8(xml).unwrap();
        assert!(xml.contains("<program>APPLICATION</program>"), "{xml}");
        assert!(xml.contains("<plugin>amgtar</plugin>"), "{xml}");
        assert!(xml.contains("<name>atime-preserve</name>"), "{xml}");
        assert_eq!(plan.hosts.len(), 1);
        assert_eq!(plan.hosts[0].maxdumps, 2);
        assert_eq!(plan.hosts[0].dles, vec![0, 1]);
        assert_eq!(plan.dles[1].disk, b"/x y");
        assert_eq!(plan.holding.len(), 1);
    }

    // issue 12: server compression and encryption are served; what Amanda refuses is
    // refused with the dumptype named.
    #[test]
    fn server_filters_are_planned_and_amandas_refusals_kept() {
        let t = tempfile::tempdir().unwrap();
        let conf = write_config(
            t.path(),
            "    compress server custom\n    server_custom_compress \"/usr/bin/zstd\"\n    encrypt server\n    server_encrypt \"/usr/sbin/amcrypt-ossl\"",
            "localhost /data dt\n",
        );
        let plan = load(conf.to_str().unwrap()).unwrap();
        let d = &plan.dles[0];
        assert!(d.unsupported.is_none(), "{:?}", d.unsupported);
        assert_eq!(
            d.dle.compress,
            Compress::ServerCustom("/usr/bin/zstd".into())
        );
        assert_eq!(
            d.dle.encrypt,
            Encrypt::ServerCustom {
                program: "/usr/sbin/amcrypt-ossl".into(),
                decrypt_option: Some("-d".into()),
            }
        );

        // Why the DLE of dumptype `lines` is not served.
        let refusal = |lines: &str| {
            let conf = write_config(t.path(), lines, "localhost /data dt\n");
            load(conf.to_str().unwrap()).unwrap().dles[0]
                .unsupported
                .clone()
                .unwrap()
        };
        let why = refusal(
            "    compress server fast\n    encrypt client\n    client_encrypt \"/usr/sbin/amcrypt-ossl\"",
        );
        assert!(why.contains("dumptype dt"), "{why}");
        assert!(
            why.contains("Client encryption with server compression is not supported"),
            "{why}"
        );

        let why = refusal("    encrypt server\n    server_encrypt \"amcrypt-ossl\"");
        assert!(why.contains("not an absolute path"), "{why}");
    }

    #[test]
    fn config_errors_name_the_file_and_line() {
        let t = tempfile::tempdir().unwrap();
        let conf = write_config(t.path(), "", "localhost /data nosuchtype\n");
        let err = load(conf.to_str().unwrap()).unwrap_err().to_string();
        assert!(err.contains("disklist"), "{err}");
    }
}
