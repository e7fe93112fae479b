//! amanda.conf, resolved: [`Config`], what the server side (planner, dumper, portpool)
//! needs without re-parsing.
//!
//! What this module must not do: read the disklist (see [`crate::disklist`]) or check port
//! capacity (see [`crate::ports`]).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::defaults as D;
use crate::diag::{Errors, Loaded, Sink};
use crate::fs::{FileSystem, MemFs, RealFs};
use crate::loader::{ConfigLocation, Document, resolve_relative};
use crate::model::{
    Application, Changer, Dumptype, Get, HoldingDisk, Interface, Named, Script, Section, Tapetype,
};
use crate::resolve::{self, BlockKind, Defs, DumptypeBase, OverlayScope, Params, RawDef};
use crate::source::{Location, SourceMap};
use crate::value::{Autolabel, Labelstr, NoYesAll, TaperAlgo, Value};
use proto::ports::PortRange;

/// `etimeout`: per disk, or (negative in the file) per host.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Etimeout {
    /// Each disk of a host gets this long for its estimate.
    PerDisk(Duration),
    /// A host's estimates together get this long.
    PerHost(Duration),
}

/// A resolved amanda.conf.
#[derive(Clone, Debug)]
pub struct Config {
    /// Where it was read from (`None` for [`Config::parse_str`]).
    pub location: Option<ConfigLocation>,
    /// `org` (default "DailySet1").
    pub org: String,
    /// `mailto`.
    pub mailto: String,
    /// `dumpuser` (default "backup").
    pub dumpuser: String,
    /// `inparallel`: dumper processes (default 10).
    pub inparallel: u32,
    /// Global `maxdumps` (default 1), the default of dumptypes defined after it.
    pub maxdumps: u32,
    /// `netusage` KiB/s (default 80000).
    pub netusage_kibps: u32,
    /// `etimeout` (default 300 s per disk).
    pub etimeout: Etimeout,
    /// `dtimeout` (default 1800 s).
    pub dtimeout: Duration,
    /// `ctimeout` (default 30 s).
    pub ctimeout: Duration,
    /// `connect-tries` (default 3).
    pub connect_tries: u32,
    /// `req-tries` (default 3).
    pub req_tries: u32,
    /// `rep-tries` (default 5).
    pub rep_tries: u32,
    /// `reserved-udp-port` (Debian default 840,860).
    pub reserved_udp_port: PortRange,
    /// `reserved-tcp-port` (default 512,1023).
    pub reserved_tcp_port: PortRange,
    /// `unreserved-tcp-port` (Debian default 50000,50100).
    pub unreserved_tcp_port: PortRange,
    /// `ssl-dir` (default /etc/amanda/ssl) and where it was set.
    pub ssl_dir: (String, Option<String>),
    /// `dumpcycle` days (default 10).
    pub dumpcycle: u32,
    /// `runspercycle` (default 0).
    pub runspercycle: i32,
    /// `tapecycle` (default 15).
    pub tapecycle: u32,
    /// `runtapes` (default 1).
    pub runtapes: u32,
    /// `dumporder` (default "ttt").
    pub dumporder: String,
    /// `taperalgo` (default first).
    pub taperalgo: TaperAlgo,
    /// `autoflush` (default no).
    pub autoflush: NoYesAll,
    /// `infofile` as written (see [`Config::path`]).
    pub infofile: String,
    /// `logdir` as written.
    pub logdir: String,
    /// `indexdir` as written.
    pub indexdir: String,
    /// `tapelist` as written (default "tapelist").
    pub tapelist: String,
    /// `diskfile` as written (default "disklist").
    pub diskfile: String,
    /// `tapetype` (default "DEFAULT_TAPE").
    pub tapetype: String,
    /// `tpchanger`.
    pub tpchanger: String,
    /// `tapedev`.
    pub tapedev: String,
    /// `labelstr` (`None`: not set, any label is ours).
    pub labelstr: Option<Labelstr>,
    /// `autolabel` (no template: volumes are never labelled automatically).
    pub autolabel: Autolabel,
    /// `taperflush`: percent of a volume the holding disk must hold at the end of a run
    /// before a new volume is started for it (default 0).
    pub taperflush: u32,
    /// `flush-threshold-dumped`: percent of a volume that must be dumped to the holding
    /// disk before a new volume is started (default 0).
    pub flush_threshold_dumped: u32,
    /// `flush-threshold-scheduled`: the same, counting what is still to be dumped tonight
    /// (default 0).
    pub flush_threshold_scheduled: u32,
    /// The holding disks selected with `holdingdisk "name"` (or the old `holdingdisk NAME {}`),
    /// in order. Only these are used.
    pub holdingdisks: Vec<Arc<HoldingDisk>>,
    /// Every defined holding disk, selected or not.
    pub holdingdisk_defs: Named<HoldingDisk>,
    /// Dumptypes, including Amanda's predefined ones.
    pub dumptypes: Named<Dumptype>,
    /// Tapetypes.
    pub tapetypes: Named<Tapetype>,
    /// Interfaces, including `default`.
    pub interfaces: Named<Interface>,
    /// Applications.
    pub applications: Named<Application>,
    /// Scripts.
    pub scripts: Named<Script>,
    /// Changers.
    pub changers: Named<Changer>,
    /// Devices, interactivities, taperscans, policies and storages, by kind name.
    pub other_sections: Vec<(&'static str, Arc<Section>)>,
    /// Every global parameter set explicitly, with its location.
    pub params: Params,
    pub(crate) defs: Defs,
}

impl Config {
    /// The ssl settings of dumptype `dt`, with the global `ssl-dir` (auth ssl reads it at
    /// connection time, so where it stands in the file does not matter).
    pub fn ssl_for(&self, dt: &Dumptype) -> crate::ssl::SslSettings {
        dt.ssl.with_dir(&self.ssl_dir.0, self.ssl_dir.1.clone())
    }

    /// Reads the configuration at `location` from the file system.
    pub fn load(location: &ConfigLocation) -> Result<Loaded<Config>, Errors> {
        Self::load_with(&RealFs, location)
    }

    /// Reads the configuration at `location` through `fs`.
    pub fn load_with(
        fs: &dyn FileSystem,
        location: &ConfigLocation,
    ) -> Result<Loaded<Config>, Errors> {
        let mut sink = Sink::default();
        let doc = Document::load(
            fs,
            &location.file,
            Some(&location.dir),
            false,
            SourceMap::new(),
            &mut sink,
        );
        let mut cfg = Self::resolve(&doc, &mut sink);
        cfg.location = Some(location.clone());
        sink.finish(cfg)
    }

    /// Parses amanda.conf text named `name` (used in messages). `includefile`s are read from
    /// `fs` relative to `config_dir`.
    pub fn parse_with(
        fs: &dyn FileSystem,
        name: &str,
        text: &[u8],
        config_dir: Option<&Path>,
    ) -> Result<Loaded<Config>, Errors> {
        Document::parse_text(fs, name, text, config_dir, Self::resolve)
    }

    /// Parses amanda.conf text with no `includefile` support (an include is an error).
    pub fn parse_str(name: &str, text: &str) -> Result<Loaded<Config>, Errors> {
        Self::parse_with(&MemFs::new(), name, text.as_bytes(), None)
    }

    /// Stage 2 over a loaded document.
    fn resolve(doc: &Document, sink: &mut Sink) -> Config {
        let raw = resolve::walk(doc, false, sink);
        Self::from_raw(raw)
    }

    fn from_raw(mut raw: resolve::Raw) -> Config {
        let g = Get(&raw.globals);
        let netusage = g.int("netusage", D::NETUSAGE_KIBPS);
        // The implicit `default` interface (conffile.c: update_derived_values).
        if raw.defs.get(BlockKind::Interface, "default").is_none() {
            let mut params = Params::default();
            if let Some(p) = raw.globals.get("netusage") {
                params.set("use", p.clone());
            }
            let _ = raw.defs.insert(
                BlockKind::Interface,
                RawDef {
                    name: "default".into(),
                    location: builtin(),
                    params,
                    base: None,
                    builtin: true,
                },
            );
        }
        let tapetype = g.str("tapetype", D::TAPETYPE);
        if raw.defs.get(BlockKind::Tapetype, &tapetype).is_none() {
            let _ = raw.defs.insert(
                BlockKind::Tapetype,
                RawDef {
                    name: tapetype.clone(),
                    location: builtin(),
                    params: Params::default(),
                    base: None,
                    builtin: true,
                },
            );
        }
        let scope = OverlayScope {
            base: &raw.defs,
            extra: Defs::default(),
            anon: 0,
        };
        let mut dumptypes = Named::default();
        for d in raw.defs.all(BlockKind::Dumptype) {
            let base = d
                .base
                .unwrap_or_else(|| DumptypeBase::from_globals(&Params::default()));
            dumptypes.push(&d.name, Arc::new(Dumptype::build(d, base, &scope)));
        }
        let defs = &raw.defs;
        let named = |kind| NamedBuilder { defs, kind };
        let holdingdisk_defs = named(BlockKind::Holdingdisk).build(HoldingDisk::build);
        let holdingdisks = raw
            .holding
            .iter()
            .filter_map(|(n, _)| holdingdisk_defs.get(n).cloned())
            .collect();
        let mut interfaces: Named<Interface> = Named::default();
        for d in raw.defs.all(BlockKind::Interface) {
            let mut i = Interface::build(d);
            if d.builtin && i.name == "default" {
                i.use_kibps = netusage;
                i.comment = "implicit from NETUSAGE".into();
            }
            interfaces.push(&d.name, Arc::new(i));
        }
        let mut other_sections = Vec::new();
        for kind in [
            BlockKind::Device,
            BlockKind::Interactivity,
            BlockKind::Taperscan,
            BlockKind::Policy,
            BlockKind::Storage,
        ] {
            for d in raw.defs.all(kind) {
                other_sections.push((kind.name(), Arc::new(Section::build(d))));
            }
        }
        let etimeout = g.int("etimeout", D::ETIMEOUT);
        let range = |k, d| match raw.globals.raw(k) {
            Some(Value::PortRange(r)) => *r,
            _ => d,
        };
        Config {
            location: None,
            org: g.str("org", D::ORG),
            mailto: g.str("mailto", ""),
            dumpuser: g.str("dumpuser", D::DUMPUSER),
            inparallel: g.u32("inparallel", D::INPARALLEL),
            maxdumps: g.u32("maxdumps", D::MAXDUMPS),
            netusage_kibps: u32::try_from(netusage.max(0)).unwrap_or(u32::MAX),
            etimeout: if etimeout < 0 {
                Etimeout::PerHost(Duration::from_secs(etimeout.unsigned_abs()))
            } else {
                Etimeout::PerDisk(Duration::from_secs(etimeout.unsigned_abs()))
            },
            dtimeout: g.secs("dtimeout", D::DTIMEOUT),
            ctimeout: g.secs("ctimeout", D::CTIMEOUT),
            connect_tries: g.u32("connect_tries", D::CONNECT_TRIES),
            req_tries: g.u32("req_tries", D::REQ_TRIES),
            rep_tries: g.u32("rep_tries", D::REP_TRIES),
            reserved_udp_port: range("reserved_udp_port", D::RESERVED_UDP_PORT),
            reserved_tcp_port: range("reserved_tcp_port", D::RESERVED_TCP_PORT),
            unreserved_tcp_port: range("unreserved_tcp_port", D::UNRESERVED_TCP_PORT),
            ssl_dir: (
                g.str("ssl_dir", crate::ssl::DEFAULT_SSL_DIR),
                raw.globals.location("ssl_dir").map(ToString::to_string),
            ),
            dumpcycle: g.u32("dumpcycle", D::DUMPCYCLE),
            runspercycle: g.i32("runspercycle", D::RUNSPERCYCLE),
            tapecycle: g.u32("tapecycle", D::TAPECYCLE),
            runtapes: g.u32("runtapes", D::RUNTAPES),
            dumporder: g.str("dumporder", D::DUMPORDER),
            taperalgo: match raw.globals.raw("taperalgo") {
                Some(Value::TaperAlgo(t)) => *t,
                _ => TaperAlgo::First,
            },
            autoflush: match raw.globals.raw("autoflush") {
                Some(Value::NoYesAll(v)) => *v,
                _ => NoYesAll::No,
            },
            infofile: g.str("infofile", D::INFOFILE),
            logdir: g.str("logdir", D::LOGDIR),
            indexdir: g.str("indexdir", D::INDEXDIR),
            tapelist: g.str("tapelist", D::TAPELIST),
            diskfile: g.str("diskfile", D::DISKFILE),
            tapetype,
            tpchanger: g.str("tpchanger", ""),
            tapedev: g.str("tapedev", ""),
            labelstr: match raw.globals.raw("labelstr") {
                Some(Value::Labelstr(l)) => Some(l.clone()),
                _ => None,
            },
            autolabel: match raw.globals.raw("autolabel") {
                Some(Value::Autolabel(a)) => a.clone(),
                _ => Autolabel::default(),
            },
            taperflush: g.u32("taperflush", 0),
            flush_threshold_dumped: g.u32("flush_threshold_dumped", 0),
            flush_threshold_scheduled: g.u32("flush_threshold_scheduled", 0),
            holdingdisks,
            holdingdisk_defs,
            dumptypes,
            tapetypes: named(BlockKind::Tapetype).build(Tapetype::build),
            interfaces,
            applications: named(BlockKind::Application).build(Application::build),
            scripts: named(BlockKind::Script).build(Script::build),
            changers: named(BlockKind::Changer).build(Changer::build),
            other_sections,
            params: raw.globals.clone(),
            defs: raw.defs.clone(),
        }
    }

    /// Where the global `keyword` was set, if it was (else its default applies).
    pub fn origin(&self, keyword: &str) -> Option<&Location> {
        self.params.location(keyword)
    }

    /// A dumptype by name (any case).
    pub fn dumptype(&self, name: &str) -> Option<&Arc<Dumptype>> {
        self.dumptypes.get(name)
    }

    /// A path from the configuration (`diskfile`, `infofile`, ...) made absolute against the
    /// config directory, like Amanda's config_dir_relative.
    pub fn path(&self, value: &str) -> PathBuf {
        resolve_relative(self.location.as_ref().map(|l| l.dir.as_path()), value)
    }

    /// The selected tapetype (Amanda makes an empty one with the defaults when the name is
    /// not defined).
    pub fn tapetype_def(&self) -> Option<&Arc<Tapetype>> {
        self.tapetypes.get(&self.tapetype)
    }

    /// The disklist file.
    pub fn diskfile_path(&self) -> PathBuf {
        self.path(&self.diskfile)
    }

    /// The global values dumptypes read in a disklist default to.
    pub(crate) fn dumptype_base(&self) -> DumptypeBase {
        DumptypeBase::from_globals(&self.params)
    }
}

struct NamedBuilder<'d> {
    defs: &'d Defs,
    kind: BlockKind,
}

impl NamedBuilder<'_> {
    fn build<T>(&self, f: impl Fn(&RawDef) -> T) -> Named<T> {
        let mut n = Named::default();
        for d in self.defs.all(self.kind) {
            n.push(&d.name, Arc::new(f(d)));
        }
        n
    }
}

fn builtin() -> Location {
    Location {
        file: std::sync::Arc::from("<built-in>"),
        line: 0,
        column: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{AuthSetting, Program};
    use crate::value::{Compress, Estimate};

    fn cfg(text: &str) -> Config {
        match Config::parse_str("amanda.conf", text) {
            Ok(l) => l.value,
            Err(e) => panic!("{e}"),
        }
    }

    fn errs(text: &str) -> Vec<String> {
        Config::parse_str("amanda.conf", text)
            .err()
            .map(|e| e.messages())
            .unwrap_or_default()
    }

    #[test]
    fn empty_config_has_debian_defaults() {
        let c = cfg("");
        assert_eq!(c.reserved_udp_port, PortRange::new(840, 860).unwrap());
        assert_eq!(c.reserved_tcp_port, PortRange::new(512, 1023).unwrap());
        assert_eq!(c.unreserved_tcp_port, PortRange::new(50000, 50100).unwrap());
        assert_eq!(c.inparallel, 10);
        assert_eq!(c.netusage_kibps, 80000);
        assert_eq!(c.etimeout, Etimeout::PerDisk(Duration::from_secs(300)));
        assert_eq!((c.connect_tries, c.req_tries, c.rep_tries), (3, 3, 5));
        assert_eq!(c.infofile, "/etc/amanda/curinfo");
        assert_eq!(c.dumpuser, "backup");
        assert_eq!(c.interfaces.get("default").unwrap().use_kibps, 80000);
        let nc = c.dumptype("no-compress").unwrap();
        assert_eq!(nc.compress, Compress::None);
        assert_eq!(nc.auth, AuthSetting::Known(proto::Auth::Bsdtcp));
        assert!(c.origin("inparallel").is_none());
    }

    #[test]
    fn inheritance_merges_parents_in_order_and_later_lines_win() {
        let c = cfg(concat!(
            "define dumptype global {\n  index no\n  auth \"bsd\"\n  property \"a\" \"1\"\n}\n",
            "define dumptype child {\n  \"global\"\n  auth \"bsdtcp\"\n  property append \"a\" \"2\"\n}\n",
            "define dumptype grandchild {\n  child\n  compress client best\n}\n",
        ));
        let g = c.dumptype("GrandChild").unwrap();
        assert!(!g.index);
        assert_eq!(g.auth, AuthSetting::Known(proto::Auth::Bsdtcp));
        assert_eq!(g.compress, Compress::ClientBest);
        assert_eq!(g.properties.get("a").unwrap().values, ["1", "2"]);
        assert_eq!(g.origin("index").unwrap().line, 2);
    }

    #[test]
    fn dumptype_defaults_snapshot_globals_at_the_define() {
        let c = cfg("define dumptype a {\n}\nmaxdumps 4\ndefine dumptype b {\n}\n");
        assert_eq!(c.dumptype("a").unwrap().maxdumps, 1);
        assert_eq!(c.dumptype("b").unwrap().maxdumps, 4);
    }

    #[test]
    fn holdingdisk_needs_define_and_selection() {
        let c = cfg(
            "define holdingdisk hd1 {\n directory \"/h\"\n use 500 mbytes\n chunksize 1 mbyte\n}\nholdingdisk \"hd1\"\ndefine holdingdisk hd2 {\n directory \"/x\"\n}\n",
        );
        assert_eq!(c.holdingdisks.len(), 1);
        assert_eq!(c.holdingdisks[0].use_kib, 512000);
        assert_eq!(c.holdingdisks[0].chunksize_kib, 1024);
        assert_eq!(c.holdingdisk_defs.len(), 2);
        let old = cfg("holdingdisk hd1 {\n directory \"/d\"\n use -100 Mb\n chunksize 0\n}\n");
        assert_eq!(old.holdingdisks[0].use_kib, -102400);
        assert_eq!(old.holdingdisks[0].chunksize_kib, i64::MAX / 1024 - 64);
        assert_eq!(
            errs("holdingdisk \"nope\"\n"),
            ["amanda.conf:1:13: holdingdisk \"nope\" is not defined"]
        );
    }

    #[test]
    fn applications_resolve_by_name_and_inline() {
        let c = cfg(concat!(
            "define application-tool app_amgtar {\n plugin \"amgtar\"\n property \"ATIME-PRESERVE\" \"no\"\n}\n",
            "define dumptype d {\n program \"APPLICATION\"\n application \"app_amgtar\"\n estimate client calcsize\n}\n",
            "define dumptype e {\n program \"APPLICATION\"\n application {\n  plugin \"amstar\"\n }\n}\n",
        ));
        let d = c.dumptype("d").unwrap();
        assert_eq!(d.program, Program::Application);
        let app = d.application.as_ref().unwrap();
        assert_eq!(app.plugin, "amgtar");
        assert_eq!(app.properties.first("atime_preserve"), Some("no"));
        assert_eq!(d.estimate, [Estimate::Client, Estimate::Calcsize]);
        let e = c.dumptype("e").unwrap();
        assert_eq!(e.application.as_ref().unwrap().plugin, "amstar");
        assert_eq!(e.application.as_ref().unwrap().name, "custom(DUMPTYPE:e).1");
    }

    #[test]
    fn unknown_keywords_warn_with_location_and_bad_references_fail() {
        let l = Config::parse_str(
            "amanda.conf",
            "fooparam 12 { x\ndefine dumptype d {\n  barparam \"x\"\n  length 5\n}\n",
        );
        // `{ x` is a syntax error (the block must start a new line)
        assert!(l.is_err());
        let l = Config::parse_str(
            "amanda.conf",
            "fooparam 12\ndefine dumptype d {\n  barparam \"x\"\n  length 5\n}\nauth \"bsd\"\n",
        )
        .unwrap();
        let w: Vec<String> = l.warnings.iter().map(|w| w.to_string()).collect();
        assert_eq!(
            w,
            [
                "amanda.conf:1:1: warning: unknown keyword \"fooparam\" in amanda.conf, ignored",
                "amanda.conf:3:3: warning: unknown keyword \"barparam\" in a dumptype block, ignored",
                "amanda.conf:4:3: warning: keyword \"length\" is not valid in a dumptype block, ignored",
                "amanda.conf:6:1: warning: keyword \"auth\" is not valid in amanda.conf, ignored",
            ]
        );
        assert_eq!(
            errs("define dumptype d {\n  nosuchparent\n}\n"),
            [
                "amanda.conf:2:3: dumptype \"nosuchparent\" is not defined (a bare name in a dumptype block inherits from an earlier definition)"
            ]
        );
        assert_eq!(
            errs("define dumptype d {\n  application \"nope\"\n}\n"),
            ["amanda.conf:2:15: application \"nope\" is not defined"]
        );
    }

    #[test]
    fn taper_settings_resolve() {
        let c = cfg(concat!(
            "tapecycle 3 tapes\nruntapes 2\ntaperflush 10\nflush-threshold-dumped 20\n",
            "flush_threshold_scheduled 30\nlabelstr \"^vt-[0-9]+$\"\n",
            "autolabel \"vt-%%\" empty\ntapetype \"T\"\n",
            "define tapetype T {\n length 100 mbytes\n part-size 10 mbytes\n}\n",
        ));
        assert_eq!((c.tapecycle, c.runtapes, c.taperflush), (3, 2, 10));
        assert_eq!(
            (c.flush_threshold_dumped, c.flush_threshold_scheduled),
            (20, 30)
        );
        assert_eq!(c.labelstr, Some(Labelstr::Regex("^vt-[0-9]+$".into())));
        assert_eq!(c.autolabel.template.as_deref(), Some("vt-%%"));
        assert_eq!(c.autolabel.when, ["empty"]);
        let t = c.tapetype_def().unwrap();
        assert_eq!((t.length_kib, t.part_size_kib), (102_400, 10_240));
        assert_eq!(
            errs("taperflush -1\n"),
            ["amanda.conf:1:12: taperflush must be nonnegative, found -1"]
        );
    }

    #[test]
    fn redefinitions_are_errors() {
        assert_eq!(
            errs("define dumptype d {\n}\ndefine dumptype D {\n}\n"),
            ["amanda.conf:3:17: dumptype \"D\" is already defined at amanda.conf:1:1"]
        );
        assert_eq!(
            errs("define dumptype no-hold {\n}\n"),
            ["amanda.conf:1:17: dumptype NO-HOLD is defined by default and cannot be redefined"]
        );
    }
}
