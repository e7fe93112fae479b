//! The data phase of a dump (sendbackup, spec §4.2-§4.5, §6.7, §11) as sans-IO state
//! machines: [`Sender`] is the client's side (amandad), [`Receiver`] the server's (the
//! dumper), and [`FilterChain`] says which compression and encryption stages run where and
//! how each is undone.
//!
//! Both machines are driven like the exchange's (after quinn-proto): `on_*(now, ..)` for
//! input, `poll_event()` for what to do, `poll_timeout()` / `handle_timeout(now)` for the one
//! timer. The daemons keep the sockets, pipes, processes and files; every rule about the
//! streams (which exist, when DATA may flow, how each ends, the bounds, the CRC and size
//! accounting) is written here once. See `LIFECYCLE.md` beside this file.
//!
//! What this module must not do: read a clock, a socket, a pipe or a file, or run a filter.

mod chain;
mod receiver;
mod sender;

pub use chain::{ChainError, FilterChain, GzipLevel, Stage};
pub use receiver::{
    DataDisposition, Liveness, MESG_GRACE_FACTOR, ReceiveError, Received, Receiver, ReceiverConfig,
    ReceiverEvent,
};
pub use sender::{SendError, Sender, SenderConfig, SenderEvent};

use crate::sendbackup::Stream;

/// Streams by name, comma-separated, for the error texts.
fn names(streams: &[Stream]) -> String {
    streams
        .iter()
        .map(|s| s.name())
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests;
