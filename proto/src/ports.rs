//! Port ranges and transports: the vocabulary every crate speaks about ports.
//!
//! A [`PortRange`] is what `reserved-udp-port 850,859` says in amanda.conf: an inclusive,
//! non-empty interval of port numbers, none of them 0. This module parses and prints ranges;
//! it must not decide which ports of a range are usable (that is portpool's job, with
//! /etc/services and the pool's state).

use std::fmt;
use std::str::FromStr;

/// A transport: UDP for the bsd/bsdudp control packets, TCP for bsdtcp control connections
/// and for data connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Transport {
    Udp,
    Tcp,
}

impl Transport {
    /// The name `/etc/services` and firewall rules use: `udp` or `tcp`.
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
        }
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An inclusive, non-empty range of ports `lo..=hi` with `lo >= 1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PortRange {
    lo: u16,
    hi: u16,
}

/// Why a text is not a port range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RangeError {
    #[error("port range {text:?}: expected LO,HI or LO-HI (for example 850,859)")]
    Syntax { text: String },
    #[error("port range {text:?}: {what} is not a port number between 1 and 65535")]
    BadPort { text: String, what: String },
    #[error("port range {lo},{hi}: the first port is larger than the last")]
    Reversed { lo: u16, hi: u16 },
    #[error("port range: port 0 is not a port (use 1 or more)")]
    Zero,
}

impl PortRange {
    /// The range `lo..=hi`; port 0 and reversed bounds are errors.
    pub fn new(lo: u16, hi: u16) -> Result<Self, RangeError> {
        if lo == 0 {
            return Err(RangeError::Zero);
        }
        if lo > hi {
            return Err(RangeError::Reversed { lo, hi });
        }
        Ok(PortRange { lo, hi })
    }

    /// `lo..=hi` in a constant (the built-in defaults); a range that is not one fails to
    /// compile.
    pub const fn from_const(lo: u16, hi: u16) -> Self {
        assert!(lo >= 1 && lo <= hi, "not a port range");
        PortRange { lo, hi }
    }

    /// A range of `len` ports starting at `lo`, clipped to 65535. `None` for `len == 0`
    /// or `lo == 0`.
    pub fn starting_at(lo: u16, len: u32) -> Option<Self> {
        if len == 0 || lo == 0 {
            return None;
        }
        let hi = (u32::from(lo) + len - 1).min(u32::from(u16::MAX));
        PortRange::new(lo, u16::try_from(hi).ok()?).ok()
    }

    pub const fn lo(self) -> u16 {
        self.lo
    }

    pub const fn hi(self) -> u16 {
        self.hi
    }

    /// Number of ports in the range (1..=65535).
    pub fn len(self) -> u32 {
        u32::from(self.hi) - u32::from(self.lo) + 1
    }

    /// Always false: a range has at least one port. Present for clippy's `len` rule.
    pub fn is_empty(self) -> bool {
        false
    }

    pub fn contains(self, port: u16) -> bool {
        (self.lo..=self.hi).contains(&port)
    }

    /// True when `other` lies entirely inside `self`.
    pub fn covers(self, other: PortRange) -> bool {
        self.lo <= other.lo && other.hi <= self.hi
    }

    /// The ports both ranges contain, if any.
    pub fn intersect(self, other: PortRange) -> Option<PortRange> {
        let lo = self.lo.max(other.lo);
        let hi = self.hi.min(other.hi);
        PortRange::new(lo, hi).ok()
    }

    /// Every port, ascending.
    pub fn ports(self) -> impl DoubleEndedIterator<Item = u16> + Clone {
        self.lo..=self.hi
    }

    /// Zero-based index of `port` in the range.
    pub fn index_of(self, port: u16) -> Option<usize> {
        self.contains(port).then(|| usize::from(port - self.lo))
    }

    /// The port at zero-based `index`.
    pub fn port_at(self, index: usize) -> Option<u16> {
        let port = u32::from(self.lo).checked_add(u32::try_from(index).ok()?)?;
        let port = u16::try_from(port).ok()?;
        self.contains(port).then_some(port)
    }

    /// True when every port is below 1024 (binding needs privilege on Linux by default).
    pub fn is_reserved(self) -> bool {
        self.hi < 1024
    }

    /// Amanda's own notation, as written in amanda.conf: `850,859`.
    pub fn amanda_notation(self) -> String {
        format!("{},{}", self.lo, self.hi)
    }
}

impl fmt::Display for PortRange {
    /// `850-859` (or `850` for a single port), the notation of nftables and of messages.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.lo == self.hi {
            write!(f, "{}", self.lo)
        } else {
            write!(f, "{}-{}", self.lo, self.hi)
        }
    }
}

impl FromStr for PortRange {
    type Err = RangeError;

    /// Accepts `850,859`, `850-859`, `850:859` and a single `850`, with blanks around the
    /// numbers.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let syntax = || RangeError::Syntax {
            text: text.to_owned(),
        };
        let trimmed = text.trim();
        if trimmed.is_empty() {
            return Err(syntax());
        }
        let mut parts = trimmed.splitn(2, [',', '-', ':']);
        let lo_text = parts.next().ok_or_else(syntax)?.trim();
        let hi_text = parts.next().map(str::trim).unwrap_or(lo_text);
        let number = |what: &str| -> Result<u16, RangeError> {
            if what.is_empty() || !what.bytes().all(|b| b.is_ascii_digit()) {
                return Err(RangeError::BadPort {
                    text: text.to_owned(),
                    what: what.to_owned(),
                });
            }
            what.parse::<u16>().map_err(|_| RangeError::BadPort {
                text: text.to_owned(),
                what: what.to_owned(),
            })
        };
        PortRange::new(number(lo_text)?, number(hi_text)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_amanda_and_dash_notation() {
        let r: PortRange = "850,859".parse().unwrap();
        assert_eq!((r.lo(), r.hi(), r.len()), (850, 859, 10));
        assert_eq!("850-859".parse::<PortRange>().unwrap(), r);
        assert_eq!(" 850 : 859 ".parse::<PortRange>().unwrap(), r);
        assert_eq!("10080".parse::<PortRange>().unwrap().len(), 1);
        assert_eq!(r.to_string(), "850-859");
        assert_eq!(r.amanda_notation(), "850,859");
    }

    #[test]
    fn rejects_reversed_zero_and_garbage() {
        assert_eq!(
            "859,850".parse::<PortRange>(),
            Err(RangeError::Reversed { lo: 859, hi: 850 })
        );
        assert_eq!("0,10".parse::<PortRange>(), Err(RangeError::Zero));
        assert!("70000,70001".parse::<PortRange>().is_err());
        assert!("".parse::<PortRange>().is_err());
        assert!("a,b".parse::<PortRange>().is_err());
        assert!("+1,2".parse::<PortRange>().is_err());
    }

    #[test]
    fn index_and_intersection_agree_with_contains() {
        let r = PortRange::new(850, 859).unwrap();
        assert_eq!(r.index_of(853), Some(3));
        assert_eq!(r.port_at(3), Some(853));
        assert_eq!(r.port_at(10), None);
        let s = PortRange::new(840, 855).unwrap();
        assert_eq!(r.intersect(s), Some(PortRange::new(850, 855).unwrap()));
        assert!(PortRange::new(1, 10).unwrap().intersect(r).is_none());
        assert!(PortRange::new(840, 860).unwrap().covers(r));
        assert_eq!(PortRange::starting_at(65535, 10).unwrap().len(), 1);
    }
}
