//! `proto`: the Amanda 3.5 network protocol, as values.
//!
//! Everything amanda-rs says on the wire is parsed and produced here: UDP datagrams
//! (auth `bsd`, `bsdudp`), TCP frames (`bsdtcp`, multiplexed data connections),
//! request and reply bodies, the DLE in both its legacy and XML forms, MESG stream lines,
//! the 32 KiB dump-file header, the features bitmask, Amanda's string quoting, and the
//! REQ/ACK/REP/ACK exchange state machines of both sides.
//!
//! What this crate must not do: touch a socket, a file, a clock or a random number
//! generator. Parsers take bytes and return typed values or typed errors; state machines
//! take events and `now` and return actions. The daemons (`amandad`, `dumper`) are the thin
//! I/O shells around it. The reference is `shared/spec/amanda-protocol.md` (cited as
//! "spec §N" in the docs here).

pub mod auth;
pub mod civil;
pub mod ports;

pub mod crc;
pub mod dataphase;
pub mod dialin;
pub mod frame;
pub mod heartbeat;
pub mod pkt;
pub mod proxy;
pub mod security;
pub mod tcp;
pub mod udp;

pub mod dle;
pub mod features;
pub mod header;
pub mod mesg;
pub mod options;
pub mod quote;
pub mod request;
pub mod selfcheck;
pub mod sendbackup;
pub mod sendsize;

pub mod exchange;

pub mod fuzz;

pub use auth::Auth;
pub use ports::{PortRange, Transport};
pub use sendbackup::Stream;
