//! Amanda's name checks (spec §4.1 step 2), shared by amandad's bsd checks and both sides'
//! ssl checks: `check_name_give_sockaddr` (a name must resolve, with a canonical name it is
//! a prefix of, to the peer's address) and the canonical name of a host. The error texts
//! are Amanda's.
//!
//! These call `getaddrinfo`, which blocks: amandad calls them on its resolver and check
//! threads, never on the event loop. What this module must not do: cache (the callers do)
//! or decide what a failure means.

use std::ffi::{CStr, CString};
use std::net::{IpAddr, SocketAddr};

/// IPv4-mapped IPv6 addresses are compared as IPv4, as Amanda un-maps them.
pub fn unmap(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

/// Amanda's `check_name_give_sockaddr`: `name` must resolve, with a canonical name that it
/// is a prefix of, to an address equal to the peer's.
pub fn forward_confirm(name: &str, peer: SocketAddr) -> Result<(), String> {
    let (canon, addrs) = resolve(name)
        .map_err(|e| format!("check_name_give_sockaddr: resolve_hostname('{name}'): {e}"))?;
    let Some(canon) = canon else {
        return Err(format!(
            "check_name_give_sockaddr: resolve_hostname('{name}') did not return a canonical name"
        ));
    };
    let is_prefix = canon
        .as_bytes()
        .get(..name.len())
        .is_some_and(|p| p.eq_ignore_ascii_case(name.as_bytes()));
    if !is_prefix {
        return Err(format!(
            "{name} doesn't resolve to itself, it resolves to {canon}"
        ));
    }
    if addrs.iter().any(|a| unmap(*a) == unmap(peer.ip())) {
        Ok(())
    } else {
        Err(format!(
            "{name} doesn't resolve to {}:{}",
            peer.ip(),
            peer.port()
        ))
    }
}

/// The canonical name of `host` (what Amanda's initiator names the peer's fingerprint
/// directory after), or `host` itself when it has none.
pub fn canonical_name(host: &str) -> String {
    match resolve(host) {
        Ok((Some(c), _)) => c,
        _ => host.to_string(),
    }
}

/// `getaddrinfo(name, AI_CANONNAME | AI_ADDRCONFIG)`: the canonical name and the addresses.
fn resolve(name: &str) -> Result<(Option<String>, Vec<IpAddr>), String> {
    let cname = CString::new(name).map_err(|_| "name contains a NUL byte".to_string())?;
    // SAFETY: a zeroed addrinfo is a valid hints value.
    let mut hints: libc::addrinfo = unsafe { std::mem::zeroed() };
    hints.ai_flags = libc::AI_CANONNAME | libc::AI_ADDRCONFIG;
    hints.ai_family = libc::AF_UNSPEC;
    hints.ai_socktype = libc::SOCK_STREAM;
    let mut res: *mut libc::addrinfo = std::ptr::null_mut();
    // SAFETY: cname and hints are valid; res receives a list we free below.
    let rc = unsafe { libc::getaddrinfo(cname.as_ptr(), std::ptr::null(), &hints, &mut res) };
    if rc != 0 {
        // SAFETY: gai_strerror returns a static NUL-terminated string.
        let text = unsafe { CStr::from_ptr(libc::gai_strerror(rc)) };
        return Err(text.to_string_lossy().into_owned());
    }
    let mut canon = None;
    let mut addrs = Vec::new();
    let mut cur = res;
    while !cur.is_null() {
        // SAFETY: cur is a node of the list getaddrinfo returned and we have not freed it.
        let ai = unsafe { &*cur };
        if canon.is_none() && !ai.ai_canonname.is_null() {
            // SAFETY: ai_canonname is a NUL-terminated string owned by the list.
            canon = Some(
                unsafe { CStr::from_ptr(ai.ai_canonname) }
                    .to_string_lossy()
                    .into_owned(),
            );
        }
        if !ai.ai_addr.is_null() {
            // SAFETY: ai_addr points at ai_addrlen bytes of a sockaddr of family ai_family.
            let sa = unsafe {
                socket2::SockAddr::try_init(|storage, len| {
                    let n =
                        (ai.ai_addrlen as usize).min(std::mem::size_of::<libc::sockaddr_storage>());
                    std::ptr::copy_nonoverlapping(ai.ai_addr.cast::<u8>(), storage.cast::<u8>(), n);
                    *len = n as libc::socklen_t;
                    Ok(())
                })
            };
            if let Ok(((), sa)) = sa
                && let Some(sock) = sa.as_socket()
            {
                addrs.push(sock.ip());
            }
        }
        cur = ai.ai_next;
    }
    // SAFETY: res came from a successful getaddrinfo and is freed once.
    unsafe { libc::freeaddrinfo(res) };
    Ok((canon, addrs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_names_confirm_and_a_wrong_address_is_amandas_text() {
        let peer: SocketAddr = "127.0.0.1:50000".parse().unwrap();
        assert_eq!(forward_confirm("localhost", peer), Ok(()));
        assert_eq!(forward_confirm("127.0.0.1", peer), Ok(()));
        let other: SocketAddr = "127.0.0.2:10062".parse().unwrap();
        assert_eq!(
            forward_confirm("127.0.0.1", other),
            Err("127.0.0.1 doesn't resolve to 127.0.0.2:10062".into())
        );
        assert_eq!(canonical_name("127.0.0.1"), "127.0.0.1");
    }

    #[test]
    fn an_unknown_name_names_the_resolver_error() {
        let peer: SocketAddr = "127.0.0.1:700".parse().unwrap();
        let err = forward_confirm("no-such-host.invalid", peer).unwrap_err();
        assert!(
            err.starts_with("check_name_give_sockaddr: resolve_hostname('no-such-host.invalid'): "),
            "{err}"
        );
    }

    #[test]
    fn mapped_addresses_compare_as_ipv4() {
        assert_eq!(
            unmap("::ffff:127.0.0.1".parse().unwrap()),
            "127.0.0.1".parse::<IpAddr>().unwrap()
        );
    }
}
