//! The taper: dumps finished on the holding disk go to volumes (chg-disk vtapes, or one
//! `file:` device) in Amanda's device format, while the night's other dumps run, and the
//! holding files are removed once their copies are synced; what cannot be written stays on
//! the holding disk for `dumper flush`.
//!
//! Layout, as for the dump driver: the decisions are sans-IO and tested without files or
//! clocks, the shells do the I/O.
//! - [`planner`]: which volume next (`tapecycle`, `labelstr`, `autolabel`, and never the
//!   volume holding the only full of a DLE), and the retention rule;
//! - [`sched`]: when to write (`flush-threshold-dumped`, `flush-threshold-scheduled`,
//!   `taperflush`, what to keep when no volume can be had);
//! - [`volume`]: the vtape format (label file, `SPLIT_FILE` parts);
//! - [`changer`]: the chg-disk shell (slots, `data` symlink);
//! - [`writer`]: the writer thread (`runtapes`, `part_size`, the tapetype's `length`);
//! - [`store`]: where the copies are, in the SQLite catalog;
//! - [`night`]: the taper's part of a run or a flush, feeding both catalogs;
//! - [`flush`]: `dumper flush`.
//!
//! What this module must not do: speak the network protocol, or schedule dumps.

use std::sync::Arc;

pub mod changer;
pub mod flush;
pub mod night;
pub mod planner;
pub mod sched;
pub mod store;
pub mod volume;
pub mod writer;

/// Why the taper cannot run (or `dumper check` says no volume can be used); `Display`
/// names the setting, the changer or the file.
#[derive(Clone, Debug, thiserror::Error)]
pub enum TaperError {
    /// The changer (`tpchanger`, `tapedev`) cannot be driven or read.
    #[error("{0}")]
    Changer(Arc<changer::ChangerError>),
    /// `labelstr` or `autolabel` is not usable.
    #[error("{0}")]
    Labels(#[from] writer::LabelsError),
    /// The tapelist cannot be read.
    #[error("{0}")]
    Tapelist(Arc<crate::amcatalog::tapelist::TapelistError>),
    /// No slot holds a volume tonight may use.
    #[error("changer {changer}: {reasons}")]
    NoVolume {
        /// The changer's name.
        changer: String,
        /// Why each candidate was refused.
        reasons: planner::NoVolume,
    },
    /// The catalog's taper tables.
    #[error("catalog {path}: {source}")]
    Catalog {
        /// The database file.
        path: String,
        /// SQLite's error.
        source: Arc<rusqlite::Error>,
    },
    /// The writer thread could not be started.
    #[error("cannot start the taper thread: {0}")]
    Thread(Arc<std::io::Error>),
}

impl From<changer::ChangerError> for TaperError {
    fn from(e: changer::ChangerError) -> TaperError {
        TaperError::Changer(Arc::new(e))
    }
}
