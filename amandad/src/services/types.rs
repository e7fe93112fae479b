//! The types a service and the event loop share: which service a REQ names
//! ([`Service`], proto's, and the subset amandad implements) and what it turns into ([`Start`]: a reply, a job for the worker pool,
//! or a backup). The dispatch itself is `super::start`.
//!
//! What this module must not do: hold behaviour (parsing, I/O); it only names things.

use super::backup::BackupPlan;

pub use proto::request::Service;

/// The services amandad implements, in the order `amdump` enables them.
pub const IMPLEMENTED: [Service; 4] = [
    Service::Noop,
    Service::Selfcheck,
    Service::Sendsize,
    Service::Sendbackup,
];

/// The service a wire name names, if amandad implements it.
pub fn implemented(name: &[u8]) -> Option<Service> {
    Service::from_name(name).filter(|s| IMPLEMENTED.contains(s))
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
    Backup(Box<BackupPlan>),
}
