//! The five packet types (spec §2.1), shared by the UDP and TCP encodings.

use std::fmt;

/// An Amanda packet type. The names are matched case-sensitively on UDP; on TCP the
/// numeric code is the first byte of a frame payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PacketType {
    /// Request, server to client.
    Req,
    /// Final reply, client to server.
    Rep,
    /// Partial reply, client to server (sendsize only in practice).
    Prep,
    /// Acknowledgement, both directions.
    Ack,
    /// Refusal, client to server; the body is `ERROR <message>\n`.
    Nak,
}

impl PacketType {
    /// Every type, in code order.
    pub const ALL: [PacketType; 5] = [
        PacketType::Req,
        PacketType::Rep,
        PacketType::Prep,
        PacketType::Ack,
        PacketType::Nak,
    ];

    /// The name used in UDP header lines.
    pub const fn name(self) -> &'static str {
        match self {
            PacketType::Req => "REQ",
            PacketType::Rep => "REP",
            PacketType::Prep => "PREP",
            PacketType::Ack => "ACK",
            PacketType::Nak => "NAK",
        }
    }

    /// The type byte used on TCP.
    pub const fn code(self) -> u8 {
        match self {
            PacketType::Req => 0,
            PacketType::Rep => 1,
            PacketType::Prep => 2,
            PacketType::Ack => 3,
            PacketType::Nak => 4,
        }
    }

    /// Parses a UDP type name (exact, case-sensitive).
    pub fn from_name(name: &[u8]) -> Option<PacketType> {
        PacketType::ALL
            .into_iter()
            .find(|t| t.name().as_bytes() == name)
    }

    /// Parses a TCP type byte.
    pub fn from_code(code: u8) -> Option<PacketType> {
        PacketType::ALL.into_iter().find(|t| t.code() == code)
    }
}

impl fmt::Display for PacketType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_codes_round_trip() {
        for t in PacketType::ALL {
            assert_eq!(PacketType::from_name(t.name().as_bytes()), Some(t));
            assert_eq!(PacketType::from_code(t.code()), Some(t));
        }
        assert_eq!(PacketType::from_name(b"req"), None);
        assert_eq!(PacketType::from_code(5), None);
    }
}
