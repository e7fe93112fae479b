//! `dumper`: the server side of amanda-rs, amdump-style, for a nightly cron job.
//!
//! `dumper run CONFIG` reads amanda.conf and its disklist, asks every client for `noop` and
//! size estimates, picks levels with a simple documented policy ([`levels`]), then dumps
//! with `inparallel` workers, at most `maxdumps` per client and within `netusage`, into
//! holding-disk files that Amanda's own tools can read, and records everything in a SQLite
//! catalog ([`catalog`]). With a changer, the [`taper`] writes finished dumps to vtapes while
//! the night runs, and [`amcatalog`] keeps Amanda's own catalog (tapelist, trace log,
//! curinfo) so that Amanda's restore tools find them. `dumper check` does amcheck's job,
//! `dumper restore` extracts a level chain from the holding disk and the volumes, `dumper
//! flush` does amflush's. `dumper listen` is the server-side listener clients connect to
//! ([`listen`]: ambackup's `ambackupd` service, issue 14).
//!
//! Layout, after quinn and sozu: the scheduler ([`driver`], with the holding disks'
//! accounting) is a sans-IO state machine with virtual-time tests; the shells do the I/O:
//! [`run`] (the driver loop), [`dump`] (one dump on a worker thread, with a small mio
//! loop), [`net`] (ports leased from `portpool`, the UDP and framed-TCP transports around
//! `proto`'s exchange state machine), [`holding`] (the writer thread and its bounded
//! buffers). Why a DLE was not dumped is a type ([`failure`]), after rustls's errors; the
//! catalog rows are made from the reports in [`catalog`].
//!
//! What this crate must not do: speak the wire format itself (that is `proto`), parse the
//! configuration language (that is `conf`), or pick ports (that is `portpool`).

pub mod amcatalog;
pub mod catalog;
pub mod check;
pub mod check_ports;
pub mod clock;
pub mod driver;
pub mod dump;
pub mod estimate;
pub mod failure;
pub mod features;
pub mod fuzz;
pub mod holding;
pub mod index;
pub mod interrupt;
pub mod levels;
pub mod listen;
pub mod net;
pub mod plan;
pub mod privs;
pub mod progress;
pub mod report;
pub mod request;
pub mod restore;
pub mod run;
pub mod taper;
pub mod tarscan;
