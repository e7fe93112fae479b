//! The services amandad offers (noop, selfcheck, sendsize, sendbackup), seen from the event
//! loop.
//!
//! The loop (`crate::server`) owns every socket, pipe and timer. A service turns the REQ's
//! argument text (everything after the `SERVICE` line: the `OPTIONS` line and the DLEs) into
//! one of three kinds of work, [`Start`]:
//! - [`Start::Reply`]: the REP body is ready at once (noop; request errors).
//! - [`Start::Job`]: blocking work (selfcheck's checks, sendsize's estimates) that the loop
//!   runs on its bounded worker pool; the job may publish cumulative partial output, which
//!   the loop turns into PREPs when the server asked for them.
//! - [`Start::Backup`]: sendbackup. The REP (with the `CONNECT` line in the service's stream
//!   labels 150..153, which the loop rewrites to stream ids) goes out at once; when the server
//!   ACKs, the loop calls [`BackupRun::spawn`] and relays the dump's output.
//!
//! What this module must not do: touch the network, block the event loop (anything that
//! walks a file system or waits for a process belongs in a `Job` or in the spawned dump), or
//! write to stdout/stderr (under inetd they are the socket).

pub mod context;

pub use context::ServiceContext;

/// A service name amandad knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ServiceKind {
    Noop,
    Selfcheck,
    Sendsize,
    Sendbackup,
}

impl ServiceKind {
    /// Every service amandad implements, in the order `amdump` enables them.
    pub const ALL: [ServiceKind; 4] = [
        ServiceKind::Noop,
        ServiceKind::Selfcheck,
        ServiceKind::Sendsize,
        ServiceKind::Sendbackup,
    ];

    /// The wire name (`SERVICE <name>`).
    pub const fn name(self) -> &'static str {
        match self {
            ServiceKind::Noop => "noop",
            ServiceKind::Selfcheck => "selfcheck",
            ServiceKind::Sendsize => "sendsize",
            ServiceKind::Sendbackup => "sendbackup",
        }
    }

    /// Looks a wire name up.
    pub fn from_name(name: &str) -> Option<ServiceKind> {
        ServiceKind::ALL.into_iter().find(|s| s.name() == name)
    }
}

/// Cumulative partial output of a job: every call passes everything produced so far.
pub type Partial<'a> = &'a mut dyn FnMut(&[u8]);

/// Blocking work for the worker pool. Returns the whole REP body.
pub type Job = Box<dyn FnOnce(Partial<'_>) -> Vec<u8> + Send>;

/// What a REQ turns into.
pub enum Start {
    /// The REP body, ready now.
    Reply(Vec<u8>),
    /// Run on the worker pool; the result is the REP body.
    Job(Job),
    /// A backup: send the REP, then run the dump after the ACK.
    Backup(Box<backup::BackupPlan>),
}

// The services.
pub mod backup;
pub mod noop;
pub mod selfcheck;
pub mod sendsize;

// What they are made of: how tar is run and what it says (tar, runtar, messages, regex),
// the state files (listed, amandates), the lists (exinclude), the level-0 estimate without
// tar (estimate), request parsing (request), our features, fuzz entry points.
pub mod amandates;
pub mod estimate;
pub mod exinclude;
pub mod features;
pub mod fuzz;
pub mod listed;
pub mod messages;
pub mod regex;
pub mod request;
pub mod runtar;
pub mod tar;
pub mod util;

/// Work worth doing once at start-up, off the event loop (it runs `tar --version` and caches
/// the answer that amgtar's SPARSE rule, the native estimate and selfcheck need).
pub fn warm_up(ctx: &ServiceContext) {
    let _ = tar::version_line(&ctx.gnutar_path);
}

/// Dispatches a request that passed every security check. `args` is the REQ body after the
/// `SERVICE` line. Never panics and never blocks: errors in the request become `ERROR ...`
/// lines in a [`Start::Reply`], as the real services print them.
pub fn start(ctx: &ServiceContext, kind: ServiceKind, args: &[u8]) -> Start {
    match kind {
        ServiceKind::Noop => Start::Reply(noop::reply(ctx)),
        ServiceKind::Selfcheck => selfcheck::start(ctx, args),
        ServiceKind::Sendsize => sendsize::start(ctx, args),
        ServiceKind::Sendbackup => backup::start(ctx, args),
    }
}
