//! Port-range capacity: does the configured range hold the ports the dumpers need?
//!
//! This is the arithmetic behind the "random" nightly failures of spec §5.6: with auth bsd
//! or bsdudp every dumper process binds one UDP port from `reserved-udp-port` at its first
//! request and keeps it until it exits, so a run needs as many ports as dumpers that talk
//! bsd/bsdudp (at most `inparallel`, at most the number of such DLEs). Dumpers that find no
//! port wait (15 s rescans for 30 minutes, then `connect-tries` more times) and their DLEs
//! fail. With bsdtcp each dump in progress holds one reserved TCP source port for its
//! control connection: at most `inparallel`, at most the sum over hosts of
//! min(host `maxdumps`, host DLEs). bsd data streams (DATA, MESG, INDEX) use unreserved
//! ports. The usable range is the amanda.conf range intersected with
//! `/etc/amanda-security.conf`'s (ambind refuses the rest; a partial overlap makes binds
//! fail intermittently).
//!
//! [`PortInputs`] exposes everything the arithmetic uses so portpool can add what needs
//! the system (/etc/services exclusions, bindability).
//!
//! What this module must not do: look at /etc/services or bind sockets (portpool's job).

use std::fmt;

use crate::disklist::Disklist;
use crate::model::Auth;
use crate::security::SecurityConf;
use crate::server::Config;
use crate::source::Location;
use crate::value::PortRange;

/// A configured value and where it was set (`None`: the default).
#[derive(Clone, Debug, PartialEq)]
pub struct Sourced<T> {
    /// The value.
    pub value: T,
    /// Where it was set, if it was.
    pub origin: Option<Location>,
}

/// How a dumptype uses ports.
#[derive(Clone, Debug, PartialEq)]
pub struct DumptypeUse {
    /// The dumptype.
    pub name: String,
    /// Its auth.
    pub auth: Auth,
    /// Its maxdumps.
    pub maxdumps: u32,
    /// Where it is defined.
    pub location: Location,
}

/// How one client host uses ports.
#[derive(Clone, Debug, PartialEq)]
pub struct HostUse {
    /// The host as written in the disklist.
    pub host: String,
    /// Its DLEs.
    pub dles: u32,
    /// DLEs with auth bsd or bsdudp.
    pub udp_dles: u32,
    /// DLEs with auth bsdtcp.
    pub tcp_dles: u32,
    /// DLEs with auth bsd (three data streams each).
    pub bsd_dles: u32,
    /// The host's maxdumps (that of its last DLE, as Amanda does).
    pub maxdumps: u32,
}

/// Everything the capacity arithmetic uses.
#[derive(Clone, Debug, PartialEq)]
pub struct PortInputs {
    /// `reserved-udp-port`.
    pub reserved_udp_port: Sourced<PortRange>,
    /// `reserved-tcp-port`.
    pub reserved_tcp_port: Sourced<PortRange>,
    /// `unreserved-tcp-port`.
    pub unreserved_tcp_port: Sourced<PortRange>,
    /// `inparallel`.
    pub inparallel: Sourced<u32>,
    /// Global `maxdumps`.
    pub maxdumps: Sourced<u32>,
    /// The security file's `udp_port_range`, if known.
    pub security_udp: Option<(PortRange, Location)>,
    /// The security file's `tcp_port_range`, if known.
    pub security_tcp: Option<(PortRange, Location)>,
    /// Every dumptype (without a disklist, all are assumed in use).
    pub dumptypes: Vec<DumptypeUse>,
    /// Every host of the disklist (empty without one).
    pub hosts: Vec<HostUse>,
    /// Whether `hosts` comes from a disklist.
    pub have_disklist: bool,
}

impl PortInputs {
    /// Collects the inputs from a configuration, optionally its disklist and the security
    /// file.
    pub fn new(
        config: &Config,
        disklist: Option<&Disklist>,
        security: Option<&SecurityConf>,
    ) -> Self {
        fn s<T>(config: &Config, v: T, k: &str) -> Sourced<T> {
            Sourced {
                value: v,
                origin: config.origin(k).cloned(),
            }
        }
        let dumptypes = config
            .dumptypes
            .iter()
            .filter(|d| !d.location.file.starts_with('<'))
            .map(|d| DumptypeUse {
                name: d.name.clone(),
                auth: d.auth.clone(),
                maxdumps: d.maxdumps,
                location: d.location.clone(),
            })
            .collect();
        let hosts = disklist
            .map(|dl| {
                dl.hosts()
                    .into_iter()
                    .map(|h| {
                        let es: Vec<_> = dl.host_entries(h).collect();
                        let count = |f: &dyn Fn(&Auth) -> bool| {
                            u32::try_from(es.iter().filter(|e| f(&e.dumptype.auth)).count())
                                .unwrap_or(u32::MAX)
                        };
                        HostUse {
                            host: h.to_string(),
                            dles: u32::try_from(es.len()).unwrap_or(u32::MAX),
                            udp_dles: count(&|a| a.uses_reserved_udp()),
                            tcp_dles: count(&|a| a.uses_reserved_tcp()),
                            bsd_dles: count(&|a| *a == Auth::Bsd),
                            maxdumps: dl.host_maxdumps(h).unwrap_or(1),
                        }
                    })
                    .collect()
            })
            .unwrap_or_default();
        PortInputs {
            reserved_udp_port: s(config, config.reserved_udp_port, "reserved_udp_port"),
            reserved_tcp_port: s(config, config.reserved_tcp_port, "reserved_tcp_port"),
            unreserved_tcp_port: s(config, config.unreserved_tcp_port, "unreserved_tcp_port"),
            inparallel: s(config, config.inparallel, "inparallel"),
            maxdumps: s(config, config.maxdumps, "maxdumps"),
            security_udp: security
                .and_then(|c| c.udp_port_range.as_ref())
                .map(|e| (e.value, e.location.clone())),
            security_tcp: security
                .and_then(|c| c.tcp_port_range.as_ref())
                .map(|e| (e.value, e.location.clone())),
            dumptypes,
            hosts,
            have_disklist: disklist.is_some(),
        }
    }
}

/// Which range a finding is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resource {
    /// `reserved-udp-port` (bsd, bsdudp).
    ReservedUdp,
    /// `reserved-tcp-port` (bsdtcp).
    ReservedTcp,
    /// `unreserved-tcp-port` (bsd/bsdudp data streams).
    UnreservedTcp,
}

/// A capacity problem, with the numbers.
#[derive(Clone, Debug, PartialEq)]
pub struct Finding {
    /// Which range.
    pub resource: Resource,
    /// Usable ports.
    pub available: u32,
    /// Ports needed at the worst moment.
    pub needed: u32,
    /// Where the range is set (`None`: the default).
    pub origin: Option<Location>,
    /// The explanation, with advice.
    pub message: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.origin {
            Some(l) => write!(f, "{l}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

fn widen(range: PortRange, needed: u32, max: u16) -> Option<PortRange> {
    let needed = u16::try_from(needed).ok()?;
    let hi = range.low.checked_add(needed - 1)?;
    if hi <= max {
        return PortRange::new(range.low, hi);
    }
    PortRange::new(max.checked_sub(needed - 1)?, max)
}

/// Checks every range against what the configuration needs.
pub fn check(inputs: &PortInputs) -> Vec<Finding> {
    let mut out = Vec::new();
    let inparallel = inputs.inparallel.value;
    let auths_of = |pred: &dyn Fn(&Auth) -> bool| -> Vec<String> {
        let mut v: Vec<String> = inputs
            .dumptypes
            .iter()
            .filter(|d| pred(&d.auth))
            .map(|d| d.auth.to_string())
            .collect();
        v.sort();
        v.dedup();
        v
    };

    // UDP: one port per dumper that ever talks bsd/bsdudp.
    let udp_auths = auths_of(&|a| a.uses_reserved_udp());
    let (udp_need, udp_why) = if inputs.have_disklist {
        let dles: u32 = inputs.hosts.iter().map(|h| h.udp_dles).sum();
        (inparallel.min(dles), dles)
    } else if udp_auths.is_empty() {
        (0, 0)
    } else {
        (inparallel, inparallel)
    };
    range_finding(
        &mut out,
        inputs,
        Resource::ReservedUdp,
        "reserved-udp-port",
        &inputs.reserved_udp_port,
        inputs.security_udp.as_ref(),
        "udp_port_range",
        1023,
        udp_need,
        udp_why,
        "dumpers",
        &udp_auths,
    );

    // TCP: one reserved source port per bsdtcp dump in progress.
    let tcp_auths = auths_of(&|a| a.uses_reserved_tcp());
    let (tcp_need, tcp_why) = if inputs.have_disklist {
        let conc: u32 = inputs
            .hosts
            .iter()
            .map(|h| h.maxdumps.min(h.tcp_dles))
            .sum();
        let dles: u32 = inputs.hosts.iter().map(|h| h.tcp_dles).sum();
        (inparallel.min(conc), dles)
    } else if tcp_auths.is_empty() {
        (0, 0)
    } else {
        (inparallel, inparallel)
    };
    range_finding(
        &mut out,
        inputs,
        Resource::ReservedTcp,
        "reserved-tcp-port",
        &inputs.reserved_tcp_port,
        inputs.security_tcp.as_ref(),
        "tcp_port_range",
        1023,
        tcp_need,
        tcp_why,
        "concurrent dumps",
        &tcp_auths,
    );

    // Unreserved: bsd dumps open up to 3 data connections, bsdudp 1.
    if inputs.have_disklist {
        let bsd: u32 = inputs.hosts.iter().map(|h| h.bsd_dles).sum();
        let udp: u32 = inputs.hosts.iter().map(|h| h.udp_dles).sum();
        let bsd_conc = inparallel.min(bsd);
        let bsdudp_conc = inparallel.saturating_sub(bsd_conc).min(udp - bsd.min(udp));
        let need = bsd_conc.saturating_mul(3).saturating_add(bsdudp_conc);
        let r = inputs.unreserved_tcp_port.value;
        if need > r.len() {
            out.push(Finding {
                resource: Resource::UnreservedTcp,
                available: r.len(),
                needed: need,
                origin: inputs.unreserved_tcp_port.origin.clone(),
                message: format!(
                    "unreserved-tcp-port {r} gives {} ports but {bsd_conc} bsd dumps (3 streams each) and {bsdudp_conc} bsdudp dumps need {need}: widen it or lower inparallel",
                    r.len()
                ),
            });
        }
    }
    out
}

#[allow(clippy::too_many_arguments)]
fn range_finding(
    out: &mut Vec<Finding>,
    inputs: &PortInputs,
    resource: Resource,
    keyword: &str,
    range: &Sourced<PortRange>,
    security: Option<&(PortRange, Location)>,
    security_key: &str,
    max: u16,
    need: u32,
    why: u32,
    unit: &str,
    auths: &[String],
) {
    if need == 0 {
        return;
    }
    let r = range.value;
    let (usable, label) = match security {
        Some((s, sloc)) => {
            if r.intersect(s) != Some(r) {
                let outside = match r.intersect(s) {
                    Some(i) => r.len() - i.len(),
                    None => r.len(),
                };
                out.push(Finding {
                    resource,
                    available: r.intersect(s).map(|i| i.len()).unwrap_or(0),
                    needed: need,
                    origin: range.origin.clone(),
                    message: format!(
                        "{keyword} {r} reaches outside {security_key} {s} ({sloc}): ambind refuses {outside} of its ports, so binds fail intermittently; keep {keyword} inside {s}"
                    ),
                });
            }
            (
                r.intersect(s),
                format!("{keyword} {r} within {security_key} {s}"),
            )
        }
        None => (Some(r), format!("{keyword} {r}")),
    };
    let available = usable.map(|u| u.len()).unwrap_or(0);
    if available >= need {
        return;
    }
    let auth = if auths.is_empty() {
        String::new()
    } else {
        format!(" with auth {}", auths.join("/"))
    };
    let who = if need == inputs.inparallel.value {
        format!(
            "inparallel {} {unit}{auth} need {need}",
            inputs.inparallel.value
        )
    } else {
        format!(
            "{why} DLEs{auth} (inparallel {}) need {need}",
            inputs.inparallel.value
        )
    };
    let advice = match usable.and_then(|u| widen(u, need, max)) {
        Some(w) => format!("widen to {w} or lower inparallel"),
        None => "lower inparallel".to_string(),
    };
    out.push(Finding {
        resource,
        available,
        needed: need,
        origin: range.origin.clone(),
        message: format!(
            "{label} gives {available} ports but {who}: {} dumps would wait or fail; {advice}",
            need - available
        ),
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str) -> Config {
        Config::parse_str("amanda.conf", text).unwrap().value
    }

    #[test]
    fn udp_range_smaller_than_inparallel_is_reported_with_numbers() {
        let c = config(
            "inparallel 20\nreserved-udp-port 850,859\ndefine dumptype d {\n auth \"bsd\"\n}\n",
        );
        let f = check(&PortInputs::new(&c, None, None));
        assert_eq!(f.len(), 1);
        assert_eq!(
            f[0].to_string(),
            "amanda.conf:2:1: reserved-udp-port 850,859 gives 10 ports but inparallel 20 dumpers with auth bsd need 20: 10 dumps would wait or fail; widen to 850,869 or lower inparallel"
        );
        assert_eq!((f[0].available, f[0].needed), (10, 20));
    }

    #[test]
    fn bsdtcp_only_config_needs_no_udp_and_fits_the_default_tcp_range() {
        let c = config("inparallel 20\nreserved-udp-port 850,851\ndefine dumptype d {\n}\n");
        assert!(check(&PortInputs::new(&c, None, None)).is_empty());
    }

    #[test]
    fn disklist_bounds_the_need_and_the_security_file_narrows_the_range() {
        let c = config(
            "inparallel 6\nreserved-udp-port 850,852\ndefine dumptype d {\n auth \"bsd\"\n maxdumps 6\n}\n",
        );
        let dl = Disklist::parse(
            &c,
            "disklist",
            b"localhost /a d\nlocalhost /b d\nlocalhost /c d\nlocalhost /d d\n",
        )
        .unwrap()
        .value;
        let f = check(&PortInputs::new(&c, Some(&dl), None));
        assert_eq!(
            f[0].message,
            "reserved-udp-port 850,852 gives 3 ports but 4 DLEs with auth bsd (inparallel 6) need 4: 1 dumps would wait or fail; widen to 850,853 or lower inparallel"
        );
        let sec = SecurityConf::parse("/etc/amanda-security.conf", b"udp_port_range=840,851\n")
            .unwrap()
            .value;
        let f = check(&PortInputs::new(&c, Some(&dl), Some(&sec)));
        assert_eq!(f.len(), 2);
        assert!(
            f[0].message
                .contains("reaches outside udp_port_range 840,851"),
            "{}",
            f[0]
        );
        assert!(
            f[1].message.starts_with(
                "reserved-udp-port 850,852 within udp_port_range 840,851 gives 2 ports"
            ),
            "{}",
            f[1]
        );
    }

    #[test]
    fn widening_stays_below_1024() {
        assert_eq!(
            widen(
                PortRange {
                    low: 1000,
                    high: 1010
                },
                50,
                1023
            ),
            Some(PortRange {
                low: 974,
                high: 1023
            })
        );
        assert_eq!(widen(PortRange { low: 1, high: 2 }, 2000, 1023), None);
    }
}
