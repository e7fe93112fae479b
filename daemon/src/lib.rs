//! The plumbing every amanda-rs network daemon needs, whichever side it serves: amandad on
//! the client and `dumper listen` on the server both run under a superserver or standalone,
//! name their peers and bound what unauthenticated peers may hold.
//!
//! - [`logging`]: records to a file or syslog (under inetd fds 0-2 are the socket);
//! - [`resolve`]: the peer's name and amandad's forward-confirmed reverse DNS check, off the
//!   event loop;
//! - [`limits`]: admission of unauthenticated connections and the input budget;
//! - [`proxy`]: the blocking CONNECT handshake with an HTTP proxy, for every outbound
//!   connection of either daemon (issue 14).
//!
//! What this crate must not do: know about Amanda services, dumps or either daemon's loop.

pub mod limits;
pub mod logging;
pub mod proxy;
pub mod resolve;
