//! What amandad does with a packet that belongs to no running exchange (spec §3.2's
//! new-request path), as a pure function: accept it as a request for a service, answer it
//! with a NAK (the real amandad's texts), or ignore it.
//!
//! The order of the checks is amandad's, so the same bad request gets the same NAK:
//! an unknown service or auth on the command line; an amanda-client.conf error; the wire
//! security checks and `.amandahosts`; not a REQ (ignored); a malformed REQ; a service that
//! is not enabled. (Amanda's step 8, an identical request already running, needs the exchange
//! table and is the loop's.) The peer-name check comes before all of this, in the loop,
//! because its failure is not a NAK on UDP.
//!
//! What this module must not do: I/O of any kind; `.amandahosts` is consulted through
//! [`HostsCheck`].

use std::net::IpAddr;

use proto::pkt::PacketType;
use proto::security::{self, Admission, Peer, PortRule};

use crate::services::{Service, implemented};

/// The `.amandahosts` check: `Ok` when `user` on `host` (address `addr`) may run `service`,
/// else the refusal text (amandad's, it becomes the NAK).
pub trait HostsCheck {
    fn check(&self, host: &str, addr: IpAddr, user: &str, service: &str) -> Result<(), String>;
}

/// The daemon-wide facts the intake judges by.
pub struct Policy<'a> {
    /// Rule 1: a problem with the command line, answered to every request.
    pub global_error: Option<&'a str>,
    /// Rule 2: the first amanda-client.conf error, and whether there were more.
    pub conf_error: Option<(&'a str, bool)>,
    /// The services the command line enabled.
    pub enabled: &'a [Service],
    /// The `.amandahosts` check.
    pub hosts: &'a dyn HostsCheck,
    /// Whether the source port must be reserved (every auth but ssl).
    pub port_rule: PortRule,
}

/// The verdict on a packet: start the service for the user with its arguments, answer with
/// a NAK on the packet's own handle, or say nothing (a packet that is not a REQ: amandad
/// logs and forgets it).
pub type Verdict<'a> = Admission<'a, Service>;

/// Judges one packet that matched no running exchange. `peer` is the sender as the security
/// checks see it (resolved name and source port), `addr` its address.
pub fn judge<'a>(
    policy: &Policy<'_>,
    peer: Peer<'_>,
    addr: IpAddr,
    ptype: PacketType,
    body: &'a [u8],
) -> Verdict<'a> {
    // amandad sends these two as `ERROR %s`, without the newline its other NAKs have.
    if let Some(text) = policy.global_error {
        return Verdict::Nak(format!("ERROR {text}").into_bytes());
    }
    if let Some((first, more)) = policy.conf_error {
        let text = if more {
            format!("{first} (additional errors not displayed)")
        } else {
            first.to_string()
        };
        return Verdict::Nak(format!("ERROR {text}").into_bytes());
    }
    security::admit(
        ptype,
        peer,
        policy.port_rule,
        body,
        |user, service| policy.hosts.check(peer.name, addr, user, service),
        |name| {
            let name = String::from_utf8_lossy(name);
            match implemented(name.as_bytes()) {
                Some(kind) if policy.enabled.contains(&kind) => Ok(kind),
                _ => Err(security::nak_body(
                    format!("{name}: invalid service, add '{name}' as argument to amandad")
                        .as_bytes(),
                )),
            }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::services::IMPLEMENTED;

    struct Allow(bool);

    impl HostsCheck for Allow {
        fn check(&self, host: &str, _: IpAddr, user: &str, service: &str) -> Result<(), String> {
            if self.0 {
                Ok(())
            } else {
                Err(format!(
                    "user {user} from {host} is not allowed to execute the service {service}: Please add the line \"{host} {user} amdump\" to /var/backups/.amandahosts on the client"
                ))
            }
        }
    }

    const NOOP: &[u8] = b"SECURITY USER backup\nSERVICE noop\nOPTIONS features=ff;\n";

    fn judge_with<'a>(
        allow: bool,
        enabled: &[Service],
        port: u16,
        ptype: PacketType,
        body: &'a [u8],
    ) -> Verdict<'a> {
        let hosts = Allow(allow);
        let policy = Policy {
            global_error: None,
            conf_error: None,
            enabled,
            hosts: &hosts,
            port_rule: PortRule::Reserved,
        };
        let peer = Peer {
            name: "localhost",
            port,
        };
        judge(&policy, peer, "127.0.0.1".parse().unwrap(), ptype, body)
    }

    fn nak(v: Verdict<'_>) -> String {
        match v {
            Verdict::Nak(b) => String::from_utf8(b).unwrap(),
            other => panic!("expected a NAK, got {other:?}"),
        }
    }

    #[test]
    fn a_good_noop_is_accepted_with_its_arguments() {
        let v = judge_with(true, &IMPLEMENTED, 850, PacketType::Req, NOOP);
        assert_eq!(
            v,
            Verdict::Accept {
                service: Service::Noop,
                user: "backup".into(),
                args: b"OPTIONS features=ff;\n"
            }
        );
    }

    #[test]
    fn unreserved_port_gets_the_real_nak() {
        let v = judge_with(true, &IMPLEMENTED, 40000, PacketType::Req, NOOP);
        assert_eq!(nak(v), "ERROR host localhost: port 40000 not secure\n");
    }

    #[test]
    fn amandahosts_refusal_gets_the_real_nak() {
        let v = judge_with(false, &IMPLEMENTED, 850, PacketType::Req, NOOP);
        assert_eq!(
            nak(v),
            "ERROR user backup from localhost is not allowed to execute the service noop: Please add the line \"localhost backup amdump\" to /var/backups/.amandahosts on the client\n"
        );
    }

    #[test]
    fn unknown_service_gets_the_real_nak() {
        let body = b"SECURITY USER backup\nSERVICE frobnicate\nOPTIONS features=ff;\n";
        let v = judge_with(true, &IMPLEMENTED, 850, PacketType::Req, body);
        assert_eq!(
            nak(v),
            "ERROR frobnicate: invalid service, add 'frobnicate' as argument to amandad\n"
        );
    }

    #[test]
    fn disabled_service_gets_the_same_nak() {
        let v = judge_with(true, &[Service::Sendsize], 850, PacketType::Req, NOOP);
        assert_eq!(
            nak(v),
            "ERROR noop: invalid service, add 'noop' as argument to amandad\n"
        );
    }

    #[test]
    fn missing_security_line_gets_the_real_nak() {
        let v = judge_with(
            true,
            &IMPLEMENTED,
            850,
            PacketType::Req,
            b"SERVICE noop\nOPTIONS x;\n",
        );
        assert_eq!(nak(v), "ERROR no bsd SECURITY for P_REQ\n");
    }

    #[test]
    fn a_req_with_nothing_after_the_service_is_invalid() {
        let v = judge_with(
            true,
            &IMPLEMENTED,
            850,
            PacketType::Req,
            b"SECURITY USER backup\nSERVICE noop\n",
        );
        assert_eq!(nak(v), "ERROR invalid REQ\n");
    }

    #[test]
    fn stray_acks_are_ignored() {
        let v = judge_with(true, &IMPLEMENTED, 850, PacketType::Ack, b"");
        assert_eq!(v, Verdict::Ignore(PacketType::Ack));
    }

    #[test]
    fn command_line_and_config_errors_come_first() {
        let hosts = Allow(false);
        let peer = Peer {
            name: "localhost",
            port: 40000,
        };
        let ip = "127.0.0.1".parse().unwrap();
        let policy = Policy {
            global_error: Some("invalid 'frob' service as argument to amandad"),
            conf_error: Some(("amanda-client.conf:3: bad", true)),
            enabled: &IMPLEMENTED,
            hosts: &hosts,
            port_rule: PortRule::Reserved,
        };
        assert_eq!(
            nak(judge(&policy, peer, ip, PacketType::Req, NOOP)),
            "ERROR invalid 'frob' service as argument to amandad"
        );
        let policy = Policy {
            global_error: None,
            ..policy
        };
        assert_eq!(
            nak(judge(&policy, peer, ip, PacketType::Req, NOOP)),
            "ERROR amanda-client.conf:3: bad (additional errors not displayed)"
        );
    }
}
