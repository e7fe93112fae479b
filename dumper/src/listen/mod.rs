//! `dumper listen`: the server-side listener that clients connect to (issue 14), started
//! the way admins start amandad: under inetd (`--inetd`: fd 0 is the accepted connection,
//! one per process, inetd's `nowait`; or a listening socket, inetd's `wait`), by systemd
//! (`LISTEN_FDS`: a listening socket, or an accepted one with `Accept=yes`), or standalone
//! (`--listen ADDR:PORT`, `--port N`; default port 10080, `amanda`, which the real
//! `ambackup` contacts).
//!
//! Auth bsdtcp as the real amandad does it (spec §3, §4.1): the peer's name by
//! forward-confirmed reverse DNS (refusal frame when it fails), the REQ from a reserved
//! source port, `.amandahosts` of the listener's user with the service name, the real NAK
//! texts. Services: `noop`, `ambackupd` (spec §14; [`ambackupd`], [`backup`]) and
//! `amdialin` (issue 14; [`dialin`]: the HOLD and SESSION connections of `dialin yes`
//! clients, which need no reserved source port); any other gets amandad's "invalid service"
//! NAK. The dispatch is in [`conn`].
//!
//! Bounds: at most `max_connections` connections (one thread each); a connection beyond
//! it evicts the oldest that has not made an accepted request yet (amandad's
//! [`Admission`]: holding idle connections cannot lock clients out); a connection must send
//! its REQ within `req_timeout`; its first frame may be at most [`conn::MAX_REQ_BYTES`].
//! A BACKUP's data phase has the dumper's own bounds (`dtimeout`, INDEX cap, buffers).
//!
//! What this module must not do: speak a service (see [`conn`], [`ambackupd`]), or write
//! to fds 0-2 under inetd (they are the socket; logging goes to a file or syslog).

pub mod ambackupd;
pub mod backup;
pub mod conn;
pub mod control;
pub mod dialin;
pub mod intake;

use std::collections::HashMap;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use daemon::limits::{Admission, Admit};

use crate::privs;

/// The default port: `amanda` (10080), where the real ambackup connects.
pub const DEFAULT_PORT: u16 = 10080;

/// Where the listener's socket comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Sockets {
    /// fd 0 from inetd.
    Inetd,
    /// fd 3 from systemd (`LISTEN_FDS`).
    Systemd,
    /// Bind these addresses.
    Listen(Vec<SocketAddr>),
}

/// How to listen.
#[derive(Clone, Debug)]
pub struct ListenOptions {
    /// The socket.
    pub sockets: Sockets,
    /// amanda-rs settings (`user`, `amandahosts_path`, `dns_check`, `dumper.max_index_mib`).
    pub settings: conf::Settings,
    /// Where configurations are (`/etc/amanda`).
    pub config_dir: PathBuf,
    /// Connections at once.
    pub max_connections: usize,
    /// How long a connection may take to send its REQ.
    pub req_timeout: Duration,
    /// When root: become `settings.user` (default true).
    pub drop_privileges: bool,
    /// auth ssl with these settings (amanda-client.conf's `ssl-*`); `None`: bsdtcp.
    pub ssl: Option<conf::SslSettings>,
}

/// What systemd passed, if it passed anything to this process.
pub fn systemd_fds() -> Option<usize> {
    let pid: u32 = std::env::var("LISTEN_PID").ok()?.parse().ok()?;
    if pid != std::process::id() {
        return None;
    }
    std::env::var("LISTEN_FDS").ok()?.parse().ok()
}

/// Whether `fd` is a listening socket (`SO_ACCEPTCONN`).
fn is_listening(fd: RawFd) -> bool {
    let mut v: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `v`; a bad fd gives an error.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_ACCEPTCONN,
            (&raw mut v).cast(),
            &raw mut len,
        )
    };
    rc == 0 && v != 0
}

/// A socket handed over by inetd or systemd.
enum Inherited {
    Listener(TcpListener),
    Connection(TcpStream),
}

/// Whether `fd` is an open socket (before this process takes ownership of it).
fn is_socket(fd: RawFd) -> bool {
    // SAFETY: fstat writes into `st`; a closed fd gives an error.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::fstat(fd, &raw mut st) };
    rc == 0 && (st.st_mode & libc::S_IFMT) == libc::S_IFSOCK
}

fn inherit(fd: RawFd, from: &str) -> anyhow::Result<Inherited> {
    if !is_socket(fd) {
        anyhow::bail!("{from}: fd {fd} is not an open socket");
    }
    // SAFETY: the superserver gave this process the descriptor (checked open above);
    // nothing else owns it.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    Ok(if is_listening(fd) {
        Inherited::Listener(TcpListener::from(owned))
    } else {
        Inherited::Connection(TcpStream::from(owned))
    })
}

/// Runs the listener until it fails (standalone) or the one connection ended (inetd
/// `nowait`, systemd `Accept=yes`).
pub fn listen(opts: ListenOptions) -> anyhow::Result<()> {
    let mut listeners = Vec::new();
    let mut single = None;
    match &opts.sockets {
        Sockets::Inetd => match inherit(0, "--inetd")? {
            Inherited::Listener(l) => listeners.push(l),
            Inherited::Connection(c) => single = Some(c),
        },
        Sockets::Systemd => {
            let n = systemd_fds().unwrap_or(0);
            if n == 0 {
                anyhow::bail!(
                    "no socket from systemd (LISTEN_PID/LISTEN_FDS not for this process)"
                );
            }
            for fd in 3..3 + RawFd::try_from(n)? {
                match inherit(fd, "LISTEN_FDS")? {
                    Inherited::Listener(l) => listeners.push(l),
                    Inherited::Connection(c) => single = Some(c),
                }
            }
        }
        Sockets::Listen(addrs) => {
            for a in addrs {
                let l = TcpListener::bind(a)
                    .map_err(|e| anyhow::anyhow!("cannot listen on {a}: {e}"))?;
                listeners.push(l);
            }
        }
    }
    if opts.drop_privileges && privs::is_root() {
        privs::drop_to(&opts.settings.user)?;
    }
    let shared = Arc::new(shared_of(&opts)?);
    if let Some(sock) = single {
        let peer = sock.peer_addr()?;
        conn::serve(&shared, sock, peer, &|| {});
        return Ok(());
    }
    let table = Arc::new(Mutex::new(Table {
        admission: Admission::new(opts.max_connections, opts.req_timeout),
        socks: HashMap::new(),
        next_id: 0,
    }));
    let mut threads = Vec::new();
    for l in listeners {
        let shared = Arc::clone(&shared);
        let table = Arc::clone(&table);
        let t = std::thread::Builder::new()
            .name("listen-accept".into())
            .spawn(move || accept_loop(&l, &shared, &table))?;
        threads.push(t);
    }
    for t in threads {
        let _ = t.join();
    }
    Ok(())
}

/// Who the listener is to `.amandahosts`: its user (after the privilege drop), whose home
/// has the file unless `amandahosts_path` says otherwise.
fn shared_of(opts: &ListenOptions) -> anyhow::Result<conn::Shared> {
    let uid = nix::unistd::getuid();
    let user = nix::unistd::User::from_uid(uid)?
        .ok_or_else(|| anyhow::anyhow!("uid {uid} has no passwd entry"))?;
    let amandahosts = opts
        .settings
        .amandahosts_path
        .clone()
        .unwrap_or_else(|| user.dir.join(".amandahosts"));
    let tls = match &opts.ssl {
        None => None,
        Some(settings) => {
            let (config, id) =
                ssl::server_config(settings).map_err(|e| anyhow::anyhow!("auth ssl: {e}"))?;
            log::info!(
                "ssl: our certificate {} ({})",
                id.cert.subject(),
                ssl::config::file(settings, ssl::config::FileKind::Cert)
            );
            Some(conn::Tls {
                config,
                settings: Arc::new(settings.clone()),
            })
        }
    };
    Ok(conn::Shared {
        tls,
        tuning: crate::net::Tuning::from_settings(&opts.settings),
        config_dir: opts.config_dir.clone(),
        amandahosts,
        login: user.name,
        uid: uid.as_raw(),
        req_timeout: opts.req_timeout,
        dns_check: opts.settings.dns_check,
        max_index_bytes: opts.settings.dumper.max_index_bytes(),
        dialin: dialin::DialinShared::from_settings(&opts.settings),
    })
}

/// The connections of a standalone listener.
struct Table {
    admission: Admission,
    /// A handle on each connection's socket, to close an evicted one.
    socks: HashMap<u64, TcpStream>,
    next_id: u64,
}

fn lock(t: &Mutex<Table>) -> std::sync::MutexGuard<'_, Table> {
    t.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn accept_loop(l: &TcpListener, shared: &Arc<conn::Shared>, table: &Arc<Mutex<Table>>) {
    loop {
        let (sock, peer) = match l.accept() {
            Ok(x) => x,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                // Out of descriptors (EMFILE, ENFILE) or memory: make room, then retry.
                log::warn!("accept: {e}");
                let mut t = lock(table);
                if let Some(v) = t.admission.oldest_unauthenticated() {
                    t.admission.closed(v);
                    if let Some(s) = t.socks.remove(&v) {
                        let _ = s.shutdown(Shutdown::Both);
                    }
                }
                drop(t);
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
        };
        let id = {
            let mut t = lock(table);
            t.next_id += 1;
            let id = t.next_id;
            match t.admission.admit(Instant::now(), id) {
                Admit::Accept => {}
                Admit::Evict(v) => {
                    log::info!(
                        "{peer}: at {} connections; closing the oldest that has not made a request",
                        t.admission.cap()
                    );
                    if let Some(s) = t.socks.remove(&v) {
                        let _ = s.shutdown(Shutdown::Both);
                    }
                }
                Admit::Refuse => {
                    log::warn!(
                        "{peer}: refused: {} connections, all with requests under way",
                        t.admission.cap()
                    );
                    continue;
                }
            }
            match sock.try_clone() {
                Ok(c) => {
                    t.socks.insert(id, c);
                }
                Err(e) => {
                    log::warn!("{peer}: {e}");
                    t.admission.closed(id);
                    continue;
                }
            }
            id
        };
        let shared = Arc::clone(shared);
        let t2 = Arc::clone(table);
        let spawned = std::thread::Builder::new()
            .name(format!("listen-{id}"))
            .spawn(move || {
                let authenticated = || lock(&t2).admission.authenticated(id);
                conn::serve(&shared, sock, peer, &authenticated);
                let mut t = lock(&t2);
                t.admission.closed(id);
                t.socks.remove(&id);
            });
        if let Err(e) = spawned {
            log::warn!("{peer}: cannot start a thread: {e}");
            let mut t = lock(table);
            t.admission.closed(id);
            t.socks.remove(&id);
        }
    }
}
