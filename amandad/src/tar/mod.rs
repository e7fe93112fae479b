//! The tar machinery the services use: how GNU tar is run for a DLE and what its files hold.
//!
//! - [`gnutar`]: the two dumptype forms (`GNUTAR`, amgtar), the amgtar properties, the tar
//!   command lines, and the choice between the privileged helper and plain tar;
//! - [`runtar`]: the rules of the setuid-root helper `amandad-runtar` (its binary is
//!   `src/bin/amandad-runtar.rs`; why and how: `src/services/README.md`);
//! - [`listed`], [`amandates`]: the incremental state (`--listed-incremental` files, the
//!   amandates file), named and written like the real client's;
//! - [`exinclude`]: the exclude and include lists tar reads;
//! - [`regex`]: POSIX regexes through the C library, as Amanda compiles them;
//! - [`estimate`]: the size of a level-0 archive computed from a walk of the tree, without
//!   running tar.
//!
//! What this module must not do: speak the Amanda protocol or decide what a request means
//! (that is `crate::services`, which calls in here), or start any process but tar.

pub mod amandates;
pub mod estimate;
pub mod exinclude;
pub mod gnutar;
pub mod listed;
pub mod regex;
pub mod runtar;
