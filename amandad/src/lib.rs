//! `amandad`: the Amanda client daemon of amanda-rs, a drop-in replacement for Amanda 3.5.1's
//! amandad under inetd, xinetd, systemd or standalone, for auth `bsd`, `bsdudp` and `bsdtcp`.
//!
//! One synchronous mio event loop (`server`) carries every exchange, stream, pipe and timer;
//! the protocol itself lives in the sans-IO `proto` crate, the configuration in `conf`, the
//! work of each service in `services`, and how GNU tar is run for them in `tar`. Blocking
//! work (estimates, checks) runs on a small bounded worker pool, never on the loop.
//!
//! What this crate must not do: write to file descriptors 0-2 when started by a superserver
//! (they are the socket), run its network-facing loop as root, or start a thread per request.

pub mod ambackup;
pub mod args;
pub mod config;
pub mod dialout;
pub mod etc_services;
pub mod fuzz;
pub mod intake;
pub mod launch;
pub use daemon::logging;
pub mod privs;
pub use daemon::proxy;
pub use daemon::resolve;
pub mod server;
pub mod services;
pub mod tar;
