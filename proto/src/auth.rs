//! The security drivers ("auths") amanda-rs speaks, and what each means for the transport:
//! one vocabulary for amandad's `-auth=`, the dumptype's `auth`, the DLE's `<auth>` and the
//! port planning.
//!
//! What this module must not do: know how a driver authenticates (see `security`, and the
//! daemons); it names them and says which transport and connections they use.

use std::fmt;
use std::str::FromStr;

use crate::ports::Transport;

/// A security driver amanda-rs implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Auth {
    /// UDP control packets from a reserved port, one TCP data connection per stream.
    Bsd,
    /// UDP control packets from a reserved port, one multiplexed TCP data connection.
    Bsdudp,
    /// Control and every stream multiplexed on one TCP connection from a reserved port.
    Bsdtcp,
    /// bsdtcp's multiplexing inside TLS on one TCP connection from an unreserved port,
    /// authenticated by certificates of the Amanda CA (spec §13).
    Ssl,
}

impl Auth {
    /// Every auth, in the order of the docs.
    pub const ALL: [Auth; 4] = [Auth::Bsd, Auth::Bsdudp, Auth::Bsdtcp, Auth::Ssl];

    /// The lower-case name, as in `-auth=`, `auth "..."`, `<auth>` and `auth=`.
    pub const fn name(self) -> &'static str {
        match self {
            Auth::Bsd => "bsd",
            Auth::Bsdudp => "bsdudp",
            Auth::Bsdtcp => "bsdtcp",
            Auth::Ssl => "ssl",
        }
    }

    /// The auth named `name`, in any case (Amanda compares case-insensitively).
    pub fn from_name(name: &str) -> Option<Auth> {
        Auth::ALL
            .into_iter()
            .find(|a| a.name().eq_ignore_ascii_case(name))
    }

    /// The transport of the control packets (and so which reserved range the server's
    /// source port comes from): UDP for bsd and bsdudp, TCP for bsdtcp and ssl.
    pub const fn transport(self) -> Transport {
        match self {
            Auth::Bsd | Auth::Bsdudp => Transport::Udp,
            Auth::Bsdtcp | Auth::Ssl => Transport::Tcp,
        }
    }

    /// Whether the initiator must send from a reserved port (and the client checks it):
    /// every auth but ssl, whose initiator connects from its `unreserved-tcp-port` range
    /// (spec §13.1).
    pub const fn reserved_source_port(self) -> bool {
        !matches!(self, Auth::Ssl)
    }

    /// Whether control packets and streams share one TCP connection (bsdtcp, ssl).
    pub const fn is_stream(self) -> bool {
        matches!(self, Auth::Bsdtcp | Auth::Ssl)
    }

    /// Whether control packets are UDP datagrams.
    pub const fn is_udp(self) -> bool {
        matches!(self.transport(), Transport::Udp)
    }

    /// Data connections per dump, each to a port of the client's unreserved range
    /// (spec §5.5): bsd one per stream (DATA, MESG, INDEX, STATE), bsdudp one, bsdtcp and
    /// ssl none (the streams share the control connection).
    pub const fn data_connections(self) -> u32 {
        match self {
            Auth::Bsd => 4,
            Auth::Bsdudp => 1,
            Auth::Bsdtcp | Auth::Ssl => 0,
        }
    }
}

impl fmt::Display for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An auth name amanda-rs does not implement.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("auth {0:?} is not one of bsd, bsdudp, bsdtcp, ssl")]
pub struct UnknownAuth(pub String);

impl FromStr for Auth {
    type Err = UnknownAuth;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Auth::from_name(s.trim()).ok_or_else(|| UnknownAuth(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_in_any_case_and_say_their_transport() {
        for a in Auth::ALL {
            assert_eq!(Auth::from_name(&a.name().to_uppercase()), Some(a));
            assert_eq!(a.to_string().parse::<Auth>(), Ok(a));
        }
        assert_eq!(Auth::Bsdtcp.transport(), Transport::Tcp);
        assert!(Auth::Bsdudp.is_udp());
        assert_eq!(Auth::from_name("SSL"), Some(Auth::Ssl));
        assert_eq!(Auth::Ssl.transport(), Transport::Tcp);
        assert!(!Auth::Ssl.reserved_source_port() && Auth::Bsdtcp.reserved_source_port());
        assert_eq!(Auth::Ssl.data_connections(), 0);
        assert_eq!("krb5".parse::<Auth>(), Err(UnknownAuth("krb5".into())));
    }
}
