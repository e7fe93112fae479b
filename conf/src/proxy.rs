//! Which HTTP proxy, if any, an outbound connection goes through (issue 14): the `[proxy]`
//! settings of amanda-rs.toml and the conventional environment (`https_proxy`,
//! `HTTPS_PROXY`, `http_proxy`; `no_proxy`, `NO_PROXY`).
//!
//! Precedence, written once here and in the README:
//! - the proxy: `proxy.url` (the file, or `AMANDA_RS_PROXY__URL`) when set; `"direct"`
//!   there means no proxy whatever the environment says; else the first non-empty of
//!   `https_proxy`, `HTTPS_PROXY`, `http_proxy` (not `HTTP_PROXY`, which CGI lets a web
//!   request set); else none;
//! - the exceptions: `proxy.no_proxy` when set, else `no_proxy`, else `NO_PROXY`. They
//!   apply wherever the proxy came from. Entries are separated by commas or spaces: `*`
//!   (every host), a host name or domain (`example.com` and `.example.com` both match
//!   `example.com` and every name under it), an IP address (`198.18.1.2`, `::1`,
//!   `[::1]`), or a CIDR block (`198.18.0.0/15`, `fd00::/8`).
//!
//! What this module must not do: resolve names or open connections (the shells do), or
//! speak HTTP (that is `proto::proxy`).

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

use proto::proxy::{ProxyUrl, UrlError};
use serde::{Deserialize, Serialize};

/// The environment variables that name a proxy, in the order they are looked at.
pub const URL_VARS: [&str; 3] = ["https_proxy", "HTTPS_PROXY", "http_proxy"];
/// The environment variables that name exceptions, in the order they are looked at.
pub const NO_PROXY_VARS: [&str; 2] = ["no_proxy", "NO_PROXY"];

/// `[proxy]` in amanda-rs.toml.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ProxySettings {
    /// `http://[user:pass@]host:port`, `"direct"` (no proxy, the environment ignored), or
    /// empty (default: the environment decides).
    pub url: String,
    /// Hosts reached without the proxy (see the module docs; default empty: the
    /// environment's `no_proxy`/`NO_PROXY`).
    pub no_proxy: String,
    /// How long the proxy may take to answer a CONNECT, seconds (default 20, Amanda's
    /// connect timeout).
    pub answer_timeout_secs: u64,
    /// The proxy variables of the environment the settings were loaded with.
    #[serde(skip)]
    pub env: ProxyEnv,
}

impl Default for ProxySettings {
    fn default() -> Self {
        ProxySettings {
            url: String::new(),
            no_proxy: String::new(),
            answer_timeout_secs: 20,
            env: ProxyEnv::default(),
        }
    }
}

/// The proxy variables of an environment ([`URL_VARS`], [`NO_PROXY_VARS`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProxyEnv {
    vars: Vec<(&'static str, String)>,
}

impl ProxyEnv {
    /// Keeps the proxy variables of `env`.
    pub fn capture(env: &HashMap<String, String>) -> ProxyEnv {
        let vars = URL_VARS
            .iter()
            .chain(&NO_PROXY_VARS)
            .filter_map(|&k| env.get(k).map(|v| (k, v.clone())))
            .collect();
        ProxyEnv { vars }
    }

    /// The first of `names` that is set and not empty, with its name.
    fn first(&self, names: &[&'static str]) -> Option<(&'static str, &str)> {
        names.iter().find_map(|n| {
            self.vars
                .iter()
                .find(|(k, v)| k == n && !v.trim().is_empty())
                .map(|(k, v)| (*k, v.as_str()))
        })
    }
}

/// A proxy setting or variable that does not parse; `Display` names it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProxyConfigError {
    /// The URL.
    #[error("{origin} {url:?} {error}")]
    Url {
        /// `proxy.url` or the variable's name.
        origin: String,
        /// What it says.
        url: String,
        /// What is wrong.
        error: UrlError,
    },
    /// An exception entry.
    #[error("{origin}: {entry:?} is not `*`, a host name, an IP address or a CIDR block")]
    NoProxy {
        /// `proxy.no_proxy` or the variable's name.
        origin: String,
        /// The entry.
        entry: String,
    },
}

/// One `no_proxy` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Exception {
    /// A name and every name under it (lowercase, no leading dot).
    Domain(String),
    /// An address, or a block of them (`bits` leading bits).
    Net(IpAddr, u8),
}

/// The exceptions: hosts reached directly.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NoProxy {
    all: bool,
    entries: Vec<Exception>,
}

impl NoProxy {
    /// Parses a `no_proxy` value; `Err` is the first bad entry.
    pub fn parse(text: &str) -> Result<NoProxy, String> {
        let mut n = NoProxy::default();
        for e in text
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|e| !e.is_empty())
        {
            if e == "*" {
                n.all = true;
                continue;
            }
            let bare = e.strip_prefix('[').and_then(|v| v.strip_suffix(']'));
            if let Ok(ip) = bare.unwrap_or(e).parse::<IpAddr>() {
                n.entries.push(Exception::Net(ip, full_bits(ip)));
            } else if let Some((ip, bits)) = e.split_once('/') {
                let ip: IpAddr = ip.parse().map_err(|_| e.to_owned())?;
                let bits: u8 = bits
                    .parse()
                    .ok()
                    .filter(|&b| b <= full_bits(ip))
                    .ok_or_else(|| e.to_owned())?;
                n.entries.push(Exception::Net(ip, bits));
            } else {
                let name = e.strip_prefix("*.").unwrap_or(e);
                let name = name.strip_prefix('.').unwrap_or(name);
                if name.is_empty()
                    || !name
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
                {
                    return Err(e.to_owned());
                }
                n.entries.push(Exception::Domain(
                    name.trim_end_matches('.').to_ascii_lowercase(),
                ));
            }
        }
        Ok(n)
    }

    /// Whether `host` (a name, may be empty) or `ip` is an exception.
    pub fn matches(&self, host: &str, ip: Option<IpAddr>) -> bool {
        if self.all {
            return true;
        }
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        let host_ip = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .ok();
        self.entries.iter().any(|e| match e {
            Exception::Domain(d) => {
                !host.is_empty()
                    && (host == *d
                        || host
                            .strip_suffix(d.as_str())
                            .is_some_and(|head| head.ends_with('.')))
            }
            Exception::Net(net, bits) => [ip, host_ip]
                .into_iter()
                .flatten()
                .any(|a| in_block(a, *net, *bits)),
        })
    }
}

fn full_bits(ip: IpAddr) -> u8 {
    if ip.is_ipv4() { 32 } else { 128 }
}

fn in_block(a: IpAddr, net: IpAddr, bits: u8) -> bool {
    let (a, net, width) = match (a, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => (u128::from(a.to_bits()), u128::from(n.to_bits()), 32),
        (IpAddr::V6(a), IpAddr::V6(n)) => (a.to_bits(), n.to_bits(), 128),
        (IpAddr::V6(a), IpAddr::V4(n)) => match a.to_ipv4_mapped() {
            Some(a) => (u128::from(a.to_bits()), u128::from(n.to_bits()), 32),
            None => return false,
        },
        (IpAddr::V4(_), IpAddr::V6(_)) => return false,
    };
    let shift = width - u32::from(bits);
    bits == 0 || (a >> shift) == (net >> shift)
}

/// Where the proxy came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// `proxy.url` of the settings.
    Setting,
    /// An environment variable.
    Env(&'static str),
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Origin::Setting => f.write_str("proxy.url"),
            Origin::Env(v) => f.write_str(v),
        }
    }
}

/// The resolved choice: which proxy, from where, and the exceptions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProxyPolicy {
    /// The proxy and where it was set, if any.
    pub proxy: Option<(ProxyUrl, Origin)>,
    /// Hosts reached directly.
    pub no_proxy: NoProxy,
    /// How long a CONNECT answer may take.
    pub answer_timeout: Duration,
}

impl ProxyPolicy {
    /// No proxy at all.
    pub fn direct() -> ProxyPolicy {
        ProxyPolicy {
            proxy: None,
            no_proxy: NoProxy::default(),
            answer_timeout: Duration::from_secs(20),
        }
    }

    /// The proxy a connection to `host` (the configured name; may be empty) at `ip` goes
    /// through, with where it was set; `None`: directly.
    pub fn route(&self, host: &str, ip: Option<IpAddr>) -> Option<(&ProxyUrl, Origin)> {
        let (url, origin) = self.proxy.as_ref()?;
        (!self.no_proxy.matches(host, ip)).then_some((url, *origin))
    }
}

impl ProxySettings {
    /// The choice these settings and the captured environment make (see the module docs).
    pub fn policy(&self) -> Result<ProxyPolicy, ProxyConfigError> {
        let url = |origin: Origin, text: &str| {
            ProxyUrl::parse(text)
                .map(|u| (u, origin))
                .map_err(|error| ProxyConfigError::Url {
                    origin: origin.to_string(),
                    url: redact(text),
                    error,
                })
        };
        let proxy = match self.url.trim() {
            "" => self
                .env
                .first(&URL_VARS)
                .map(|(var, text)| url(Origin::Env(var), text))
                .transpose()?,
            d if d.eq_ignore_ascii_case("direct") => None,
            text => Some(url(Origin::Setting, text)?),
        };
        let (origin, text) = if self.no_proxy.trim().is_empty() {
            self.env.first(&NO_PROXY_VARS).unwrap_or(("", ""))
        } else {
            ("proxy.no_proxy", self.no_proxy.as_str())
        };
        let no_proxy = NoProxy::parse(text).map_err(|entry| ProxyConfigError::NoProxy {
            origin: origin.to_owned(),
            entry,
        })?;
        Ok(ProxyPolicy {
            proxy,
            no_proxy,
            answer_timeout: Duration::from_secs(self.answer_timeout_secs),
        })
    }
}

/// The URL with any password replaced by `***` (errors go to logs and reports).
fn redact(url: &str) -> String {
    match url.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.rsplit_once(':') {
            Some((head, _)) if !head.ends_with('/') => format!("{head}:***@{host}"),
            _ => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(url: &str, no_proxy: &str, env: &[(&str, &str)]) -> ProxySettings {
        let env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        ProxySettings {
            url: url.into(),
            no_proxy: no_proxy.into(),
            env: ProxyEnv::capture(&env),
            ..ProxySettings::default()
        }
    }

    fn origin_of(s: &ProxySettings) -> Option<String> {
        s.policy().unwrap().proxy.map(|(u, o)| format!("{o} {u}"))
    }

    #[test]
    fn the_setting_wins_over_the_environment_and_direct_ignores_it() {
        let env = [
            ("http_proxy", "http://h:1"),
            ("HTTPS_PROXY", "http://H:2"),
            ("https_proxy", "http://s:3"),
            ("HTTP_PROXY", "http://cgi:4"),
        ];
        assert_eq!(
            origin_of(&settings("", "", &env)).unwrap(),
            "https_proxy s:3"
        );
        assert_eq!(
            origin_of(&settings("", "", &env[..2])).unwrap(),
            "HTTPS_PROXY H:2"
        );
        assert_eq!(
            origin_of(&settings("", "", &env[..1])).unwrap(),
            "http_proxy h:1"
        );
        assert_eq!(
            origin_of(&settings("", "", &env[3..])),
            None,
            "HTTP_PROXY is never read"
        );
        assert_eq!(origin_of(&settings("", "", &[("https_proxy", " ")])), None);
        assert_eq!(
            origin_of(&settings("http://set:5", "", &env)).unwrap(),
            "proxy.url set:5"
        );
        assert_eq!(origin_of(&settings("DIRECT", "", &env)), None);
        assert_eq!(origin_of(&settings("", "", &[])), None);
    }

    #[test]
    fn bad_values_name_the_variable_or_setting_and_hide_the_password() {
        let e = settings("", "", &[("https_proxy", "socks5://proxy.corp:1080")])
            .policy()
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("https_proxy \"socks5://proxy.corp:1080\" must be http://host:port"),
            "{e}"
        );
        let e = settings("http://u:secret@p", "", &[])
            .policy()
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "proxy.url \"http://u:***@p\" has no port (write http://host:port)"
        );
        let e = settings("", "", &[("NO_PROXY", "a, 10.0.0.0/33")])
            .policy()
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "NO_PROXY: \"10.0.0.0/33\" is not `*`, a host name, an IP address or a CIDR block"
        );
        let e = settings("", "x/y", &[]).policy().unwrap_err().to_string();
        assert!(e.starts_with("proxy.no_proxy: \"x/y\""), "{e}");
    }

    #[test]
    fn no_proxy_takes_domains_addresses_blocks_and_star() {
        let s = settings(
            "http://p:1",
            "Example.COM, .corp.local *.lan 198.18.0.0/15 ::1 [fd00::5] 10.1.2.3",
            &[("no_proxy", "ignored-because-the-setting-is-set")],
        );
        let p = s.policy().unwrap();
        let via = |h: &str, ip: Option<&str>| p.route(h, ip.map(|i| i.parse().unwrap())).is_some();
        assert!(!via("example.com", None));
        assert!(!via("www.example.com.", None));
        assert!(via("badexample.com", None));
        assert!(!via("a.corp.local", None));
        assert!(!via("corp.local", None));
        assert!(!via("x.lan", None));
        assert!(!via("client", Some("198.19.255.1")));
        assert!(via("client", Some("198.20.0.1")));
        assert!(!via("::1", None));
        assert!(
            !via("c", Some("::ffff:198.18.1.2")),
            "v4-mapped addresses match v4 blocks"
        );
        assert!(!via("c", Some("fd00::5")));
        assert!(!via("10.1.2.3", None));
        assert!(via("ignored-because-the-setting-is-set", None));
        let star = settings("", "", &[("https_proxy", "http://p:1"), ("no_proxy", "*")]);
        assert_eq!(star.policy().unwrap().route("any", None), None);
        let env = settings("", "", &[("https_proxy", "http://p:1"), ("NO_PROXY", "c")]);
        assert!(env.policy().unwrap().route("c", None).is_none());
        assert!(env.policy().unwrap().route("d", None).is_some());
    }
}
