//! `/etc/services` on this host, read once: Amanda's rule for the client's listening ports
//! is never to bind a port that it gives to a service whose name lacks "amanda" (spec
//! §5.3). The parser and the rule are `portpool_alloc::services`; this module only reads the
//! file. What it must not do: fail a dump because the file is missing or unreadable (then
//! nothing is skipped, as with glibc).

use std::sync::OnceLock;

use portpool_alloc::services::{DEFAULT_PATH, Services};
use proto::ports::Transport;

fn services() -> &'static Services {
    static DB: OnceLock<Services> = OnceLock::new();
    DB.get_or_init(|| {
        let text = std::fs::read_to_string(DEFAULT_PATH).unwrap_or_default();
        Services::parse_lenient(DEFAULT_PATH, &text).0
    })
}

/// True if /etc/services assigns TCP `port` to a service that is not Amanda's.
pub fn reserved_elsewhere(port: u16) -> bool {
    services().foreign_owner(port, Transport::Tcp).is_some()
}
