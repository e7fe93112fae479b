//! The types a service and the event loop share: which service a REQ names
//! ([`ServiceKind`]) and what it turns into ([`Start`]: a reply, a job for the worker pool,
//! or a backup). The dispatch itself is `super::start`.
//!
//! What this module must not do: hold behaviour (parsing, I/O); it only names things.

use super::backup::BackupPlan;

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
    Backup(Box<BackupPlan>),
}
