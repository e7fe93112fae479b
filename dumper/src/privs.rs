//! Running as the Amanda user with only the one privilege the protocol needs.
//!
//! Real clients accept requests only from source ports below 1024 (spec §4.1). Started as
//! root, the dumper keeps exactly `CAP_NET_BIND_SERVICE` and becomes the configured
//! `dumpuser` for everything else: `prctl(PR_SET_KEEPCAPS)`, `setgroups` (the user's
//! groups), `setgid`, `setuid`, then `capset` with that single capability effective and
//! permitted (and nothing inheritable, so `tar` and other children get nothing). Started as
//! another user, reserved binds need the capability on the binary
//! (`setcap cap_net_bind_service=ep /usr/bin/dumper`); portpool's error says so when it is
//! missing.
//!
//! This must happen before any thread is started: capabilities are per thread and threads
//! inherit the ones of their creator. What this module must not do: anything else.

use std::ffi::CString;

/// `CAP_NET_BIND_SERVICE`.
const CAP_NET_BIND_SERVICE: u32 = 10;
/// `_LINUX_CAPABILITY_VERSION_3`.
const CAPABILITY_VERSION_3: u32 = 0x2008_0522;

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// Why the switch failed.
#[derive(Debug, thiserror::Error)]
pub enum PrivError {
    /// The user does not exist.
    #[error("dumpuser {0:?} does not exist (set `dumpuser` in amanda.conf)")]
    NoUser(String),
    /// A system call failed.
    #[error("switching to dumpuser {user}: {call}: {source}")]
    Call {
        /// The user.
        user: String,
        /// Which call.
        call: &'static str,
        /// The error.
        source: std::io::Error,
    },
}

/// Whether the effective user is root.
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// The user and group ids of `user`.
pub fn lookup(user: &str) -> Result<(u32, u32), PrivError> {
    match nix::unistd::User::from_name(user) {
        Ok(Some(u)) => Ok((u.uid.as_raw(), u.gid.as_raw())),
        _ => Err(PrivError::NoUser(user.to_owned())),
    }
}

/// Becomes `user`, keeping only `CAP_NET_BIND_SERVICE`. Call as root, before any thread.
pub fn drop_to(user: &str) -> Result<(), PrivError> {
    let u = match nix::unistd::User::from_name(user) {
        Ok(Some(u)) => u,
        _ => return Err(PrivError::NoUser(user.to_owned())),
    };
    let err = |call: &'static str, e: nix::errno::Errno| PrivError::Call {
        user: user.to_owned(),
        call,
        source: std::io::Error::from(e),
    };
    // SAFETY: prctl with PR_SET_KEEPCAPS takes plain integer arguments.
    let rc = unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, 1 as libc::c_ulong, 0, 0, 0) };
    if rc != 0 {
        return Err(err("prctl(PR_SET_KEEPCAPS)", nix::errno::Errno::last()));
    }
    let name = CString::new(user).map_err(|_| PrivError::NoUser(user.to_owned()))?;
    let groups = nix::unistd::getgrouplist(&name, u.gid).map_err(|e| err("getgrouplist", e))?;
    nix::unistd::setgroups(&groups).map_err(|e| err("setgroups", e))?;
    nix::unistd::setgid(u.gid).map_err(|e| err("setgid", e))?;
    nix::unistd::setuid(u.uid).map_err(|e| err("setuid", e))?;
    let mut header = CapHeader {
        version: CAPABILITY_VERSION_3,
        pid: 0,
    };
    let mut data = [CapData::default(); 2];
    data[0].effective = 1 << CAP_NET_BIND_SERVICE;
    data[0].permitted = 1 << CAP_NET_BIND_SERVICE;
    // SAFETY: capset reads one header and, for version 3, two data structs; both point
    // at properly laid out #[repr(C)] values that live across the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_capset,
            &mut header as *mut CapHeader,
            data.as_mut_ptr(),
        )
    };
    if rc != 0 {
        return Err(err(
            "capset(CAP_NET_BIND_SERVICE)",
            nix::errno::Errno::last(),
        ));
    }
    // SAFETY: as above.
    unsafe {
        libc::prctl(libc::PR_SET_KEEPCAPS, 0 as libc::c_ulong, 0, 0, 0);
    }
    // Files we create are the dumpuser's and not world-writable.
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o027));
    Ok(())
}

/// Whether this thread can bind ports below 1024 (root or `CAP_NET_BIND_SERVICE`).
pub fn can_bind_reserved() -> bool {
    if is_root() {
        return true;
    }
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        })
        .is_some_and(|caps| caps & (1 << CAP_NET_BIND_SERVICE) != 0)
}
