//! The peer's name and amandad's forward-confirmed reverse DNS check (spec §4.1 steps 1-2).
//!
//! The name is what `getnameinfo` gives (the numeric address when reverse DNS fails); the
//! check then resolves that name with a canonical name and requires the name to be a
//! case-insensitive prefix of the canonical name and one of its addresses to be the peer's.
//! The error texts are amandad's. Lookups block, so results are cached per address for a
//! minute: a busy night asks the resolver once per server, not once per request.
//!
//! What this module must not do: decide what a failure means (the UDP path drops the
//! datagram silently, the bsdtcp path sends a refusal frame; that is the loop's call).

use std::collections::HashMap;
use std::ffi::{CStr, CString};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

/// How long a lookup result is reused.
const TTL: Duration = Duration::from_secs(60);

/// The result of resolving one peer address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerName {
    /// The name amandad uses for the peer (reverse DNS or the numeric address).
    pub name: String,
    /// `Err(text)` when the forward-confirmed check fails, with amandad's text (the port in
    /// the text is the one of the lookup that filled the cache).
    pub check: Result<(), String>,
}

/// A per-address cache of [`PeerName`]s.
#[derive(Debug, Default)]
pub struct Resolver {
    cache: HashMap<IpAddr, (Instant, PeerName)>,
    /// Skip the forward check (settings `dns_check = false`).
    pub skip_check: bool,
}

impl Resolver {
    /// A resolver; `dns_check` false skips the forward confirmation.
    pub fn new(dns_check: bool) -> Resolver {
        Resolver {
            cache: HashMap::new(),
            skip_check: !dns_check,
        }
    }

    /// The name and check result for `peer`, from the cache when fresh.
    pub fn lookup(&mut self, now: Instant, peer: SocketAddr) -> PeerName {
        let ip = unmap(peer.ip());
        if let Some((at, name)) = self.cache.get(&ip)
            && now.saturating_duration_since(*at) < TTL
        {
            return name.clone();
        }
        let peer = SocketAddr::new(ip, peer.port());
        let name = reverse_name(peer);
        let check = if self.skip_check {
            Ok(())
        } else {
            forward_confirm(&name, peer)
        };
        let result = PeerName { name, check };
        if self.cache.len() > 4096 {
            self.cache.clear();
        }
        self.cache.insert(ip, (now, result.clone()));
        result
    }
}

/// IPv4-mapped IPv6 addresses are compared as IPv4, as Amanda un-maps them.
pub fn unmap(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

/// `getnameinfo` without `NI_NAMEREQD`: the host name, or the numeric address.
pub fn reverse_name(peer: SocketAddr) -> String {
    let storage = socket2::SockAddr::from(peer);
    let mut host = [0 as libc::c_char; 1025];
    // SAFETY: storage holds a valid sockaddr of the given length; host is a writable buffer
    // of the given size; no service buffer is requested.
    let rc = unsafe {
        libc::getnameinfo(
            storage.as_ptr().cast(),
            storage.len(),
            host.as_mut_ptr(),
            host.len() as libc::socklen_t,
            std::ptr::null_mut(),
            0,
            0,
        )
    };
    if rc != 0 {
        return peer.ip().to_string();
    }
    // SAFETY: on success getnameinfo wrote a NUL-terminated string into host.
    unsafe { CStr::from_ptr(host.as_ptr()) }
        .to_string_lossy()
        .into_owned()
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
    fn loopback_is_localhost_and_confirms() {
        let peer: SocketAddr = "127.0.0.1:516".parse().unwrap();
        assert_eq!(reverse_name(peer), "localhost");
        assert_eq!(forward_confirm("localhost", peer), Ok(()));
    }

    #[test]
    fn a_name_that_does_not_resolve_to_the_peer_is_refused_with_amandas_text() {
        let peer: SocketAddr = "127.0.0.3:700".parse().unwrap();
        assert_eq!(
            forward_confirm("localhost", peer),
            Err("localhost doesn't resolve to 127.0.0.3:700".to_string())
        );
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

    #[test]
    fn cache_serves_repeat_lookups() {
        let mut r = Resolver::new(true);
        let now = Instant::now();
        let peer: SocketAddr = "127.0.0.1:600".parse().unwrap();
        let a = r.lookup(now, peer);
        let b = r.lookup(now, "127.0.0.1:601".parse().unwrap());
        assert_eq!(a, b);
        assert_eq!(a.name, "localhost");
    }
}
