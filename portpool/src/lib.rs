//! `portpool`: planning for Amanda's port ranges, on top of the allocator.
//!
//! The allocator itself (the sans-IO `PoolCore`, the daemons' `Pool`/`Lease`, host-wide
//! locks, `/etc/services`) is the small `portpool-alloc` crate, which the daemons link
//! without this crate's command-line machinery. This crate is what an administrator runs
//! before a night:
//!
//! - [`sim`]: `portpool --simulate`, a seeded virtual-time night that drives the
//!   allocator's core under the Amanda 2.4, Amanda 3.5 and portpool policies;
//! - [`site`], [`check`], [`rules`]: the port settings of a site, their lint, and the
//!   firewall rules they need; [`conf_adapter`] reads a site from Amanda's configuration.
//!
//! What this crate must NOT do: speak the Amanda protocol (that is `proto`), parse the
//! Amanda configuration language (that is `conf`; [`conf_adapter`] only maps its types), or
//! allocate ports itself (that is `portpool-alloc`).

pub mod check;
pub mod conf_adapter;
pub mod fuzz;
pub mod rules;
pub mod sim;
pub mod site;
