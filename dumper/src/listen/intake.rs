//! What `dumper listen` does with the first packet of a connection (issue 14), as a pure
//! function: accept it as a request for one of the listener's services, or answer it with
//! the NAK the real amandad sends (spec §3.2, §3.4, §4.1).
//!
//! The order is amandad's: the wire checks (`proto::security::check_received`: reserved
//! source port for bsdtcp, SERVICE and SECURITY lines), then `.amandahosts` for
//! (peer, user, service), then the body's split, then whether the listener serves that
//! service. So the same bad request gets the same NAK from us as from the real amandad
//! running ambackupd on an Amanda server.
//!
//! What this module must not do: I/O (`.amandahosts` is consulted through the caller's
//! closure), or know what a service does once accepted.

use conf::amandahosts::Refusal;
use std::net::IpAddr;

use proto::pkt::PacketType;
use proto::security::{self, Admission, Peer, PortRule};

pub use proto::request::Service;

/// The services the listener serves (of proto's vocabulary); the dispatch on them is in
/// `listen::conn`.
pub const SERVED: [Service; 3] = [Service::Noop, Service::Ambackupd, Service::Amdialin];

/// The service a SERVICE line names, if the listener serves it.
pub fn served(name: &[u8]) -> Option<Service> {
    Service::from_name(name).filter(|s| SERVED.contains(s))
}

/// The `.amandahosts` check: (peer name, address, remote user, service) -> `Err` with the
/// refusal (its text is the NAK amandad sends).
pub type HostsCheck<'a> = &'a dyn Fn(&str, IpAddr, &str, &str) -> Result<(), Refusal>;

/// The `.amandahosts` check of `hosts` as amandad makes it (a `localhost` line also
/// matches the loopback address), the refusal as its text.
pub fn check_hosts(
    hosts: &conf::AmandaHosts,
    host: &str,
    addr: IpAddr,
    user: &str,
    service: &str,
) -> Result<(), Refusal> {
    hosts.check(
        host,
        conf::amandahosts::is_amanda_loopback(&addr),
        user,
        service,
    )
}

/// The verdict on a connection's packet: run the service for the user with its arguments,
/// answer with a NAK on the packet's handle then close, or (not a REQ) ignore it as amandad
/// does.
pub type Verdict<'a> = Admission<'a, Service>;

/// Judges a packet. `peer` is the sender as amandad names it (reverse DNS, or the address)
/// with its source port; `rule` whether that port must be reserved (bsdtcp: yes); `hosts`
/// is the `.amandahosts` check for (peer name, address, user, service), `Err` carrying the
/// refusal text.
pub fn judge<'a>(
    peer: Peer<'_>,
    addr: IpAddr,
    rule: PortRule,
    hosts: HostsCheck<'_>,
    ptype: PacketType,
    body: &'a [u8],
) -> Verdict<'a> {
    security::admit(
        ptype,
        peer,
        rule,
        body,
        |user, service| hosts(peer.name, addr, user, service).map_err(|r| r.to_string()),
        |name| served(name).ok_or_else(|| proto::request::nak_invalid_service(name)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    const LOCAL: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

    fn judged(port: u16, hosts_line: &str, body: &[u8]) -> Verdict<'static> {
        let h = conf::amandahosts::AmandaHosts::parse(
            "/var/backups/.amandahosts",
            hosts_line.as_bytes(),
            "backup",
        );
        let check = move |host: &str, addr: IpAddr, user: &str, service: &str| {
            check_hosts(&h, host, addr, user, service)
        };
        let peer = Peer {
            name: "localhost",
            port,
        };
        let body: &'static [u8] = Box::leak(body.to_vec().into_boxed_slice());
        judge(
            peer,
            LOCAL,
            PortRule::Reserved,
            &check,
            PacketType::Req,
            body,
        )
    }

    const LIST: &[u8] = b"SECURITY USER backup\nSERVICE ambackupd\nOPTIONS features=ff;hostname=localhost;config=c;\nLISTDLE\n";

    #[test]
    fn an_allowed_request_is_accepted_with_its_arguments() {
        let v = judged(516, "localhost backup noop ambackupd\n", LIST);
        assert_eq!(
            v,
            Verdict::Accept {
                service: Service::Ambackupd,
                user: "backup".into(),
                args: b"OPTIONS features=ff;hostname=localhost;config=c;\nLISTDLE\n",
            }
        );
    }

    // issue 14: the real amandad's texts (traces ambackup-errors/, spec §14.1).
    #[test]
    fn refusals_carry_the_real_amandads_nak_texts() {
        let v = judged(516, "localhost backup\n", LIST);
        assert_eq!(
            v,
            Verdict::Nak(
                b"ERROR user backup from localhost is not allowed to execute the service ambackupd: /var/backups/.amandahosts: invalid service ambackupd\n".to_vec()
            )
        );
        let v = judged(40000, "localhost backup ambackupd\n", LIST);
        assert_eq!(
            v,
            Verdict::Nak(b"ERROR host localhost: port 40000 not secure\n".to_vec())
        );
        let v = judged(
            516,
            "localhost backup sendsize\n",
            b"SECURITY USER backup\nSERVICE sendsize\nOPTIONS features=ff;\n",
        );
        assert_eq!(
            v,
            Verdict::Nak(
                b"ERROR sendsize: invalid service, add 'sendsize' as argument to amandad\n"
                    .to_vec()
            )
        );
    }
}
