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

pub mod changer;
pub mod flush;
pub mod night;
pub mod planner;
pub mod sched;
pub mod store;
pub mod volume;
pub mod writer;
