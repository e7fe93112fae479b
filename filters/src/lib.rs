//! The data stages of a dump, as engines: compression and encryption between the
//! application's output and the DATA stream (amandad, `compress client ...`, `encrypt
//! client`), between DATA and the holding disk (dumper, `compress server ...`, `encrypt
//! server`), and their reverse on restore (spec §11).
//!
//! - [`gzip`]: `compress fast|best` in-process: gzip members compressed by libdeflate on a
//!   bounded, shared pool of threads, pushed without blocking and taken in order, with a
//!   waker for event loops ([`GzipStream`]) and a blocking [`GzipWriter`];
//! - [`gunzip`]: the streaming, multi-member gzip decoder for restores ([`Gunzip`],
//!   [`GunzipReader`]);
//! - [`program`]: external programs (custom compress, encrypt, their restore commands),
//!   started as Amanda starts them, never through a shell, with a built environment, pipes
//!   as descriptors for a mio loop, and typed exit errors ([`FilterCommand`],
//!   [`RunningFilter`], [`FilterError`]);
//! - [`stderr`]: a program's stderr as bounded lines ([`StderrLines`]);
//! - [`fuzz`]: the fuzz entry point of the gunzip side.
//!
//! What this crate must not do: know the protocol. Which stages a dump runs, which CRC
//! covers which bytes, the MESG info lines and the dump header's fields belong to `proto`
//! (the sans-IO data phase), and sockets, event loops and files belong to the daemons.
//! Nothing here blocks an event loop: the methods meant for one never wait (the blocking
//! conveniences say so).

pub mod fuzz;
pub mod gunzip;
pub mod gzip;
pub mod program;
pub mod stderr;

pub use gunzip::{Gunzip, GunzipError, GunzipReader, Progress};
pub use gzip::{
    GzipError, GzipOptions, GzipOutput, GzipPool, GzipStream, GzipWriter, Level, MEMBER_SIZE,
    Waker, default_threads,
};
pub use program::{
    ExitOutcome, FilterCommand, FilterError, FilterIo, FilterReport, RunFailure, RunningFilter,
    filter_environment, read_stderr_lines, set_nonblocking,
};
pub use stderr::{StderrLine, StderrLines};
