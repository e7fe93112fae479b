//! noop and sendsize for one estimate group (a host, reached with one auth and port), as
//! the planner does it (spec §6.4, §6.6): a `noop` to learn the client's features, then,
//! if some DLE needs a client estimate, one `sendsize` for all of them. On bsdtcp both
//! requests share one connection (handles 1 and 2); on bsd/bsdudp one reserved UDP port is
//! held for both exchanges.
//!
//! What this module must not do: decide levels or schedule; an estimate error is returned
//! per DLE and the driver fails that DLE.

use std::time::Duration;

use conf::server::Etimeout;
use proto::exchange::InitiatorConfig;
use proto::features::Features;
use proto::options::reply_features;
use proto::sendsize::{EstimateResult, ReplyLine, SendsizeReply};

use crate::failure::EstimateFailure;
use crate::net::control::{Control, Link};
use crate::net::{self, WaitEvent};
use crate::request::{self, ReqContext, SizeRequest};
use proto::Auth;

/// What every estimate shares.
pub struct EstimateContext {
    /// Who we are to the clients, the port pools, the retries.
    pub link: Link,
    /// `ctimeout` (noop).
    pub ctimeout: Duration,
    /// `etimeout`.
    pub etimeout: Etimeout,
    /// The run timestamp.
    pub timestamp: String,
}

/// Estimated bytes of a DLE (`None`: unknown, or a server estimate), or why not.
pub type Estimate = Result<Option<u64>, EstimateFailure>;

/// One DLE of a group.
#[derive(Clone, Debug)]
pub struct EstimateDle {
    /// The DLE id.
    pub id: usize,
    /// The DLE.
    pub dle: proto::dle::Dle,
    /// The level to estimate.
    pub level: i32,
    /// Its legacy dumpdate.
    pub dumpdate: String,
    /// Whether the client is asked (false: `estimate server`).
    pub client: bool,
}

/// A group to estimate.
#[derive(Clone, Debug)]
pub struct EstimateGroup {
    /// The host.
    pub host: String,
    /// The auth.
    pub auth: Auth,
    /// The client port.
    pub port: u16,
    /// auth ssl: the settings (of the group's first DLE).
    pub ssl: Option<std::sync::Arc<conf::SslSettings>>,
    /// The host's maxdumps.
    pub maxdumps: u32,
    /// The DLEs.
    pub dles: Vec<EstimateDle>,
}

/// What came back.
#[derive(Clone, Debug)]
pub struct GroupResult {
    /// The client's features (from its noop reply), if it answered.
    pub features: Option<Features>,
    /// Per DLE: its estimate, or why there is none.
    pub results: Vec<(usize, Estimate)>,
    /// Notes for the report (a NAKed noop from an old client, ...).
    pub notes: Vec<String>,
}

fn all_failed(g: &EstimateGroup, why: EstimateFailure) -> GroupResult {
    GroupResult {
        features: None,
        results: g.dles.iter().map(|d| (d.id, Err(why.clone()))).collect(),
        notes: Vec::new(),
    }
}

/// The report's note for REQs that had to be sent again.
pub fn resent_note(host: &str, what: &str, resent: u32) -> String {
    format!(
        "{host}: {what}: {resent} REQ(s) sent again (lost or late packets; the protocol's retransmissions covered them)"
    )
}

/// The features in a noop REP.
pub fn noop_features(body: &[u8]) -> Option<Features> {
    body.split(|&b| b == b'\n')
        .filter(|l| l.starts_with(b"OPTIONS "))
        .find_map(|l| reply_features(l).and_then(Result::ok))
}

/// noop, then sendsize for the DLEs that want a client estimate.
pub fn estimate_group(
    ctx: &EstimateContext,
    g: &EstimateGroup,
    waits: &mut dyn FnMut(WaitEvent),
) -> GroupResult {
    let link = &ctx.link;
    let dest = match net::resolve_for(link, &g.host, g.port) {
        Ok(d) => d,
        Err(e) => return all_failed(g, EstimateFailure::Resolve(e)),
    };
    let mut conn = Control::for_dle(g.auth, &g.host, g.ssl.as_ref());
    let mut notes = Vec::new();
    let cfg = InitiatorConfig {
        rep_wait: ctx.ctimeout,
        ..link.initiator.clone()
    };
    let noop = conn.noop(link, dest, cfg, waits);
    let mut resent = noop.resent;
    let features = match noop.outcome {
        Ok(body) => match noop_features(&body) {
            Some(f) => f,
            None => {
                notes.push(format!(
                    "{}: noop reply without features; assuming an Amanda 2.4.2 client",
                    g.host
                ));
                Features::default_2_4_2p2()
            }
        },
        Err(failure) => {
            return all_failed(
                g,
                EstimateFailure::Noop {
                    host: g.host.clone(),
                    auth: g.auth,
                    port: g.port,
                    failure,
                },
            );
        }
    };
    let asked: Vec<&EstimateDle> = g.dles.iter().filter(|d| d.client).collect();
    let mut results: Vec<(usize, Estimate)> = g
        .dles
        .iter()
        .filter(|d| !d.client)
        .map(|d| (d.id, Ok(None)))
        .collect();
    if asked.is_empty() {
        conn.finish();
        return GroupResult {
            features: Some(features),
            results,
            notes,
        };
    }
    let rctx = ReqContext {
        ours: &link.ours,
        client: &features,
        maxdumps: g.maxdumps,
        hostname: &g.host,
        config: &link.config_name,
        timestamp: Some(&ctx.timestamp),
    };
    let reqs: Vec<SizeRequest<'_>> = asked
        .iter()
        .map(|d| SizeRequest {
            dle: &d.dle,
            levels: vec![d.level],
            dumpdates: vec![d.dumpdate.clone()],
        })
        .collect();
    let req = match request::sendsize(&rctx, &reqs) {
        Ok(r) => r,
        Err(e) => {
            results.extend(
                asked
                    .iter()
                    .map(|d| (d.id, Err(EstimateFailure::Request(e.clone())))),
            );
            conn.finish();
            return GroupResult {
                features: Some(features),
                results,
                notes,
            };
        }
    };
    let rep_wait = match ctx.etimeout {
        Etimeout::PerDisk(d) => d.saturating_mul(asked.len().max(1) as u32),
        Etimeout::PerHost(d) => d,
    };
    conn.next_request();
    let cfg = InitiatorConfig {
        rep_wait,
        ..link.initiator.clone()
    };
    let sendsize = conn.exchange(link, dest, cfg, req, waits);
    resent += sendsize.resent;
    conn.finish();
    if resent > 0 {
        notes.push(resent_note(&g.host, "noop and sendsize", resent));
    }
    match sendsize.outcome {
        Ok(body) => {
            results.extend(read_estimates(&g.host, &body, &asked));
        }
        Err(failure) => {
            let why = EstimateFailure::Sendsize {
                host: g.host.clone(),
                failure,
            };
            results.extend(asked.iter().map(|d| (d.id, Err(why.clone()))));
        }
    }
    GroupResult {
        features: Some(features),
        results,
        notes,
    }
}

/// The estimates of `asked` in a sendsize REP body (sizes in KiB there, bytes here).
pub fn read_estimates(host: &str, body: &[u8], asked: &[&EstimateDle]) -> Vec<(usize, Estimate)> {
    let reply = match SendsizeReply::parse(body) {
        Ok(r) => r,
        Err(error) => {
            let why = EstimateFailure::BadReply {
                host: host.to_owned(),
                error,
            };
            return asked.iter().map(|d| (d.id, Err(why.clone()))).collect();
        }
    };
    let host_errors: Vec<String> = reply
        .lines
        .iter()
        .filter_map(|l| match l {
            ReplyLine::HostError(t) => Some(String::from_utf8_lossy(t).into_owned()),
            _ => None,
        })
        .collect();
    asked
        .iter()
        .map(|d| {
            let disk = d.dle.disk.as_deref().unwrap_or_default();
            let lines: Vec<_> = reply.estimates().filter(|e| e.disk == disk).collect();
            let at_level = lines.iter().find(|e| e.level == d.level);
            let error = lines.iter().find_map(|e| match &e.result {
                EstimateResult::Error(m) => Some(String::from_utf8_lossy(m).into_owned()),
                _ => None,
            });
            let r = match (at_level.map(|e| &e.result), error) {
                (_, Some(m)) => Err(EstimateFailure::Client(m)),
                (Some(EstimateResult::Size(kb)), _) if *kb >= 0 => {
                    Ok(Some((*kb as u64).saturating_mul(1024)))
                }
                (Some(EstimateResult::Size(-1)), _) => Ok(None),
                (Some(EstimateResult::Size(_)), _) => {
                    Err(EstimateFailure::CannotEstimate { level: d.level })
                }
                (Some(_), _) => Ok(None),
                (None, _) if !host_errors.is_empty() => Err(EstimateFailure::Host {
                    host: host.to_owned(),
                    errors: host_errors.clone(),
                }),
                (None, _) => Err(EstimateFailure::Missing {
                    host: host.to_owned(),
                    level: d.level,
                }),
            };
            (d.id, r)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ed(id: usize, disk: &str, level: i32) -> EstimateDle {
        EstimateDle {
            id,
            dle: proto::dle::Dle {
                program: "GNUTAR".into(),
                disk: Some(disk.into()),
                ..proto::dle::Dle::default()
            },
            level,
            dumpdate: "1970:1:1:0:0:0".into(),
            client: true,
        }
    }

    #[test]
    fn estimates_are_read_per_disk_and_level_like_the_bsdtcp_trace() {
        let body = b"OPTIONS features=ffffffff9efefbfffffffffffffff3fffbf71f;\n/tmp/amanda-harness/data/plain 0 SIZE 560\n\"/tmp/amanda-harness/data/dle with space \xc3\xa9\" 0 SIZE 10\n/missing 0 ERROR \"can not stat\"\n";
        let a = ed(0, "/tmp/amanda-harness/data/plain", 0);
        let b = ed(1, "/tmp/amanda-harness/data/dle with space \u{e9}", 0);
        let c = ed(2, "/missing", 0);
        let d = ed(3, "/absent", 1);
        let r = read_estimates("localhost", body, &[&a, &b, &c, &d]);
        let error = |i: usize| r[i].1.as_ref().err().map(ToString::to_string);
        assert_eq!(r[0].1.as_ref().ok(), Some(&Some(560 * 1024)));
        assert_eq!(r[1].1.as_ref().ok(), Some(&Some(10 * 1024)));
        assert_eq!(error(2).as_deref(), Some("[can not stat]"));
        assert_eq!(
            error(3).as_deref(),
            Some("[localhost: no estimate for level 1 in the sendsize reply]")
        );
    }

    #[test]
    fn noop_features_come_from_the_options_line() {
        let f = noop_features(b"OPTIONS features=ffffffff9efefbfffffffffffffff3fffbf71f;\n");
        assert_eq!(f, Some(Features::amanda_3_5_1()));
        assert_eq!(noop_features(b"garbage\n"), None);
    }
}
