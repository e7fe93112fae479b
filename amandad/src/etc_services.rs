//! Amanda's rule for the client's listening ports: never bind a port that /etc/services
//! gives to a service whose name lacks "amanda" (spec §5.3), using portpool's parser.

use std::sync::OnceLock;

use portpool::services::Services;
use proto::ports::Transport;

fn services() -> &'static Services {
    static DB: OnceLock<Services> = OnceLock::new();
    DB.get_or_init(|| {
        let text = std::fs::read_to_string(portpool::services::DEFAULT_PATH).unwrap_or_default();
        Services::parse_lenient(portpool::services::DEFAULT_PATH, &text).0
    })
}

/// True if /etc/services assigns TCP `port` to a service that is not Amanda's.
pub fn reserved_elsewhere(port: u16) -> bool {
    services().foreign_owner(port, Transport::Tcp).is_some()
}
