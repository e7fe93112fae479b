//! The default value of every typed parameter, and where it comes from.
//!
//! Amanda's defaults live in common-src/conffile.c (init_defaults,
//! init_*_defaults); configure flags change some of them. The values here are those of
//! Debian 12's `amanda-server`/`amanda-client` 1:3.5.1-11+deb12u2, verified on this
//! machine with `amgetconf CFG <param>` and `amgetconf --client <param>` against a config
//! that sets nothing, and with `amadmin x version` for the build flags:
//! `--with-udpportrange=840,860 --with-tcpportrange=50000,50100 --with-user=backup
//! --with-gnutar-listdir=/var/lib/amanda/gnutar-lists --with-amandates=/var/lib/amanda/amandates
//! --with-index-server=localhost`, `DEFAULT_CONFIG="DailySet1"`, `DEFAULT_TAPE_DEVICE=""`,
//! `CONFIG_DIR="/etc/amanda"`, `GNUTAR="/bin/tar"`, `AMANDA_DEBUG_DAYS=4`.
//!
//! What this module must not do: hold amanda-rs's own settings (see [`crate::settings`]).

use proto::ports::PortRange;

/// `reserved-udp-port`: 840,860. Debian builds with `--with-udpportrange=840,860`;
/// Amanda's own default is 512,1023. (amgetconf: `840,860`.)
pub const RESERVED_UDP_PORT: PortRange = PortRange::from_const(840, 860);
/// `reserved-tcp-port`: 512,1023. Debian leaves `LOW_TCPPORTRANGE` unset, so Amanda's
/// default `512, IPPORT_RESERVED-1` applies. (amgetconf: `512,1023`.)
pub const RESERVED_TCP_PORT: PortRange = PortRange::from_const(512, 1023);
/// `unreserved-tcp-port`: 50000,50100. Debian builds with `--with-tcpportrange=50000,50100`;
/// Amanda's own default is 1024,65535. (amgetconf: `50000,50100`.)
pub const UNRESERVED_TCP_PORT: PortRange = PortRange::from_const(50000, 50100);
/// `auth` (amanda-client.conf and every dumptype): `bsdtcp` (conffile.c; the dumptype
/// default is spelled `BSDTCP`). amandad's own default `-auth` is bsdtcp too.
pub const AUTH: &str = "bsdtcp";
/// `inparallel`: 10 (conffile.c).
pub const INPARALLEL: i64 = 10;
/// `maxdumps` (global, and a dumptype's default): 1.
pub const MAXDUMPS: i64 = 1;
/// `netusage`: 80000 KiB/s.
pub const NETUSAGE_KIBPS: i64 = 80000;
/// `etimeout`: 300 s per disk.
pub const ETIMEOUT: i64 = 300;
/// `dtimeout`: 1800 s.
pub const DTIMEOUT: i64 = 1800;
/// `ctimeout`: 30 s.
pub const CTIMEOUT: i64 = 30;
/// `connect-tries`: 3.
pub const CONNECT_TRIES: i64 = 3;
/// `req-tries`: 3.
pub const REQ_TRIES: i64 = 3;
/// `rep-tries`: 5.
pub const REP_TRIES: i64 = 5;
/// `dumpcycle`: 10 days.
pub const DUMPCYCLE: i64 = 10;
/// `runspercycle`: 0 (= dumpcycle).
pub const RUNSPERCYCLE: i64 = 0;
/// `tapecycle`: 15.
pub const TAPECYCLE: i64 = 15;
/// `runtapes`: 1.
pub const RUNTAPES: i64 = 1;
/// `bumppercent`: 0.
pub const BUMPPERCENT: i64 = 0;
/// `bumpsize`: 10 MiB (10240 KiB).
pub const BUMPSIZE_KIB: i64 = 10 * 1024;
/// `bumpdays`: 2.
pub const BUMPDAYS: i64 = 2;
/// `bumpmult`: 1.5.
pub const BUMPMULT: f64 = 1.5;
/// `dumporder`: "ttt".
pub const DUMPORDER: &str = "ttt";
/// `dumpuser`: "backup" (`CLIENT_LOGIN`, `--with-user=backup`).
pub const DUMPUSER: &str = "backup";
/// `org`: "DailySet1" (`DEFAULT_CONFIG`).
pub const ORG: &str = "DailySet1";
/// `infofile`: "/etc/amanda/curinfo". Upstream says "/usr/adm/amanda/curinfo"; Debian's
/// build prints this (amgetconf).
pub const INFOFILE: &str = "/etc/amanda/curinfo";
/// `logdir`: "/etc/amanda" (Debian; upstream "/usr/adm/amanda").
pub const LOGDIR: &str = "/etc/amanda";
/// `indexdir`: "/etc/amanda/index" (Debian; upstream "/usr/adm/amanda/index").
pub const INDEXDIR: &str = "/etc/amanda/index";
/// `diskfile`: "disklist" (relative to the config directory).
pub const DISKFILE: &str = "disklist";
/// `tapelist`: "tapelist" (relative to the config directory).
pub const TAPELIST: &str = "tapelist";
/// `tapetype`: "DEFAULT_TAPE" (a tapetype Amanda creates if none is named).
pub const TAPETYPE: &str = "DEFAULT_TAPE";
/// `displayunit`: "K".
pub const DISPLAYUNIT: &str = "K";
/// amanda-client.conf `conf`: "DailySet1" (`DEFAULT_CONFIG`).
pub const CLIENT_CONF: &str = "DailySet1";
/// amanda-client.conf `index_server`: "localhost" (`--with-index-server=localhost`).
pub const INDEX_SERVER: &str = "localhost";
/// amanda-client.conf `tape_server`: "localhost" (`DEFAULT_TAPE_SERVER`).
pub const TAPE_SERVER: &str = "localhost";
/// amanda-client.conf `amdump_server`: "localhost" (`DEFAULT_SERVER`).
pub const AMDUMP_SERVER: &str = "localhost";
/// amanda-client.conf `tapedev`: "" (`DEFAULT_TAPE_DEVICE`).
pub const TAPEDEV: &str = "";
/// amanda-client.conf `gnutar_list_dir`: "/var/lib/amanda/gnutar-lists"
/// (`--with-gnutar-listdir`).
pub const GNUTAR_LIST_DIR: &str = "/var/lib/amanda/gnutar-lists";
/// amanda-client.conf `amandates`: "/var/lib/amanda/amandates" (`--with-amandates`).
pub const AMANDATES: &str = "/var/lib/amanda/amandates";
/// `debug_days`: 4 (`AMANDA_DEBUG_DAYS`).
pub const DEBUG_DAYS: i64 = 4;
/// `client_port`: "" (the `amanda` service from /etc/services; see harness gotcha 2:
/// Debian lists only `amanda 10080/tcp`, so UDP needs a numeric port).
pub const CLIENT_PORT: &str = "";
/// A dumptype's `program`: "DUMP".
pub const PROGRAM: &str = "DUMP";
/// A dumptype's `index`: yes (conffile.c init_dumptype_defaults; amgetconf says `yes`,
/// although the example configs' comments say no).
pub const INDEX: bool = true;
/// A dumptype's `record`: yes.
pub const RECORD: bool = true;
/// A dumptype's `maxpromoteday`: 10000.
pub const MAXPROMOTEDAY: i64 = 10000;
/// A dumptype's `max_warnings`: 20.
pub const MAX_WARNINGS: i64 = 20;
/// A dumptype's `retry_dump`: 2.
pub const RETRY_DUMP: i64 = 2;
/// A dumptype's `comprate`: 0.50, 0.50.
pub const COMPRATE: (f64, f64) = (0.5, 0.5);
/// A holding disk's `use`: 0 KiB (= all the space).
pub const HOLDING_USE_KIB: i64 = 0;
/// A holding disk's `chunksize`: 1 GiB (1048576 KiB).
pub const HOLDING_CHUNKSIZE_KIB: i64 = 1024 * 1024;
/// An interface's `use`: 80000 KiB/s (the `default` interface takes `netusage`).
pub const INTERFACE_USE_KIBPS: i64 = 80000;
/// A script's `order`: 5000.
pub const SCRIPT_ORDER: i64 = 5000;
/// A tapetype's `length`: 2000 KiB.
pub const TAPE_LENGTH_KIB: i64 = 2000;
/// A tapetype's `filemark`: 1 KiB.
pub const TAPE_FILEMARK_KIB: i64 = 1;
/// A tapetype's `speed`: 200.
pub const TAPE_SPEED: i64 = 200;
/// A tapetype's `blocksize`: 32 KiB (`DISK_BLOCK_KB`).
pub const TAPE_BLOCKSIZE_KIB: i64 = 32;
