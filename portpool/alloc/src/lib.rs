//! `portpool-alloc`: Amanda's port ranges as a resource, leased with backpressure.
//!
//! Amanda binds its control sockets inside small reserved ranges that firewalls let
//! through. The real Amanda treats a range as a place to scan, not as a resource: with
//! more dumpers than ports, requests retry blindly (UDP, 15 s × 120), fail at once (TCP),
//! or (Amanda 2.4) leave through ports the firewall drops. This crate makes the range a
//! pool of leases:
//!
//! - [`core::PoolCore`]: the sans-IO allocator (ports, FIFO of waiters, TIME_WAIT holds
//!   per destination, invariants), driven with `now`;
//! - [`Pool`]/[`Lease`]: the blocking, thread-safe shell for the daemons (real sockets via
//!   [`binder::SocketBinder`], host-wide leases via [`registry::Registry`]);
//! - [`services`]: `/etc/services` and Amanda's rule for the ports it gives to others.
//!
//! The ranges themselves are [`proto::ports::PortRange`]. The `portpool` crate builds the
//! planning on top (the simulated night drives the same [`core::PoolCore`], the site's lint,
//! the firewall rules, the command).
//!
//! What this crate must NOT do: speak the Amanda protocol (that is `proto`), read the
//! Amanda configuration (that is `conf`, through `portpool`), or carry command-line
//! machinery (no clap, anyhow or env_logger in its dependency tree: `amandad` and `dumper`
//! link it).

pub mod binder;
pub mod core;
pub mod pool;
pub mod registry;
pub mod services;

pub use crate::core::{
    CoreConfig, Dest, Episode, Grant, Metrics, PoolCore, PoolEvent, Shortage, Ticket, Unusable,
};
pub use binder::{Binder, ModelBinder, ModelSocket, SocketBinder};
pub use pool::{ConnectError, Lease, LeaseError, Pool, PoolConfig, PoolError};
pub use registry::{HostLock, Registry};
pub use services::Services;
