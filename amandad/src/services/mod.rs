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
pub mod types;

pub use context::ServiceContext;
pub use types::{IMPLEMENTED, Job, Partial, Service, Start, implemented};

// The services.
pub mod backup;
pub mod noop;
pub mod selfcheck;
pub mod sendsize;

// What they share: what tar says (messages), request parsing (request), our features, small
// system helpers (util). How tar is run, and its state files, are `crate::tar`.
pub mod features;
pub mod messages;
pub mod request;
pub mod util;

/// Work worth doing once at start-up, off the event loop (it runs `tar --version` and caches
/// the answer that amgtar's SPARSE rule, the native estimate and selfcheck need).
pub fn warm_up(ctx: &ServiceContext) {
    let _ = crate::tar::gnutar::version_line(&ctx.tar.gnutar_path);
}

/// Dispatches a request that passed every security check. `args` is the REQ body after the
/// `SERVICE` line. Never panics and never blocks: errors in the request become `ERROR ...`
/// lines in a [`Start::Reply`], as the real services print them.
pub fn start(ctx: &ServiceContext, kind: Service, args: &[u8]) -> Start {
    match kind {
        Service::Noop => Start::Reply(noop::reply(ctx)),
        Service::Selfcheck => selfcheck::start(ctx, args),
        Service::Sendsize => sendsize::start(ctx, args),
        Service::Sendbackup => backup::start(ctx, args),
        // The intake admits only what `types::implemented` names.
        other => Start::Reply(format!("ERROR amandad does not serve {other}\n").into_bytes()),
    }
}
