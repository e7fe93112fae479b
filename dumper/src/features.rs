//! The feature set the dumper advertises to clients (spec §7), and why.
//!
//! The **server's** features (what we send in `OPTIONS features=`) decide what a real client
//! puts in its replies, so we advertise only what this crate handles:
//!
//! | bit | name | advertised | why |
//! |---|---|---|---|
//! | 39 | rep_options_features | yes | the client's features come back in sendsize/sendbackup REPs |
//! | 52 | partial_estimate | **no** | we do not use PREPs; without it the client sends one REP |
//! | 80 | req_xml | yes | a client with bit 80 gets `<dle>` XML (APPLICATION DLEs need it) |
//! | 101 | sendbackup_state | **no** | `sendbackup: state` lines would be dropped anyway |
//! | 102 | sendbackup_crc | yes | CRC lines: the dumper checks client-CRC against the DATA bytes |
//! | 109-112, 116 | sendbackup_retry* | **no** | we do not implement the client-requested RETRY |
//! | 113 | selfcheck_message | **no** | real clients then answer selfcheck with legacy `OK`/`ERROR` lines (spec §6.5) |
//! | 117 | sendbackup_stream_state | **no** | no STATE stream: the real amgtar writes one only when both sides have 117 |
//!
//! Everything else is the 3.5.1 set. The **client's** features (from its noop REP) decide the
//! requests: OPTIONS keys ([`proto::options::Options::for_request`]) and XML versus legacy
//! lines; see `request.rs`.

use proto::features::{Feature, Features};

/// The features `dumper` sends in every REQ's `OPTIONS features=`.
pub fn server_features() -> Features {
    Features::amanda_3_5_1()
        .without(Feature::PARTIAL_ESTIMATE)
        .without(Feature::SENDBACKUP_STATE)
        .without(Feature::SENDBACKUP_RETRY)
        .without(Feature::SENDBACKUP_RETRY_DELAY)
        .without(Feature::SENDBACKUP_RETRY_LEVEL)
        .without(Feature::SENDBACKUP_RETRY_MESSAGE)
        .without(Feature::SENDBACKUP_REP_RETRY)
        .without(Feature::SELFCHECK_MESSAGE)
        .without(Feature::SENDBACKUP_STREAM_STATE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advertised_set_asks_for_crc_and_features_but_no_state_stream() {
        let f = server_features();
        assert!(f.has(Feature::SENDBACKUP_CRC));
        assert!(f.has(Feature::REP_OPTIONS_FEATURES));
        assert!(f.has(Feature::REQ_XML));
        assert!(!f.has(Feature::SENDBACKUP_STREAM_STATE));
        assert!(!f.has(Feature::SELFCHECK_MESSAGE));
        assert!(!f.has(Feature::PARTIAL_ESTIMATE));
        // Still parses as a 3.5.1-sized set.
        assert_eq!(f.to_hex().len(), 38);
    }
}
