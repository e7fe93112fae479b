//! `portpool`: Amanda's port ranges as a resource, leased with backpressure.
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
//! - [`sim`]: `portpool --simulate`, a seeded virtual-time night that drives the same core
//!   under the Amanda 2.4, Amanda 3.5 and portpool policies;
//! - [`site`], [`check`], [`rules`]: the port settings of a site, their lint, and the
//!   firewall rules they need.
//!
//! What this crate must NOT do: speak the Amanda protocol (that is `proto`), parse the
//! Amanda configuration language (that is `conf`; [`conf_adapter`] only maps its types).

pub mod binder;
pub mod check;
pub mod conf_adapter;
pub mod core;
pub mod fuzz;
pub mod pool;
pub mod registry;
pub mod rules;
pub mod services;
pub mod sim;
pub mod site;

pub use crate::core::{
    CoreConfig, Dest, Episode, Grant, Metrics, PoolCore, PoolEvent, Shortage, Ticket, Unusable,
};
pub use binder::{Binder, ModelBinder, ModelSocket, SocketBinder};
pub use pool::{ConnectError, Lease, LeaseError, Pool, PoolConfig, PoolError};
pub use proto::ports::{PortRange, Transport};
pub use registry::{HostLock, Registry};
pub use services::Services;
