//! Dropping root. amandad's network-facing loop never runs as root: started as root
//! (standalone, or a superserver line that says `root`), it binds what it needs and then
//! becomes the Amanda user for good, with the user's primary group as its only group. The
//! user's supplementary groups are dropped on purpose: Debian's `backup` is in `disk` and
//! `tape`, which would let the loop that parses network input read raw disks and tapes.
//! Reading files the Amanda user cannot read is the job of the setuid helper
//! `amandad-runtar`, which runs only GNU tar in create mode.
//!
//! What this module must not do: keep a way back to root (saved set-user-ID included), or
//! keep any group but the Amanda user's primary group.

use nix::unistd::{Gid, Uid, User, getegid, geteuid, getgroups, setgid, setgroups, setuid};

/// The Amanda user of Debian's packages.
pub const DEFAULT_USER: &str = "backup";

/// Why privileges could not be dropped.
#[derive(Debug, thiserror::Error)]
pub enum PrivError {
    #[error("user {0:?} does not exist (set --user or the `user` setting)")]
    NoSuchUser(String),
    #[error("looking up user {user:?}: {source}")]
    Lookup { user: String, source: nix::Error },
    #[error("becoming user {user:?}: {what} failed: {source}")]
    Switch {
        user: String,
        what: &'static str,
        source: nix::Error,
    },
    #[error("still able to become root after switching to {0:?}; refusing to run")]
    StillRoot(String),
    #[error(
        "still in groups {groups:?} besides {gid} after switching to {user:?}; refusing to run"
    )]
    ExtraGroups {
        user: String,
        gid: u32,
        groups: Vec<u32>,
    },
}

/// The user and group ids amandad runs as after [`drop_to`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Identity {
    pub uid: Uid,
    pub gid: Gid,
}

/// If running as root, becomes `user` (uid and primary gid, no supplementary groups)
/// permanently. Otherwise does nothing. Returns the identity the process runs as afterwards.
pub fn drop_to(user: &str) -> Result<Identity, PrivError> {
    if !geteuid().is_root() {
        return Ok(Identity {
            uid: geteuid(),
            gid: getegid(),
        });
    }
    let entry = User::from_name(user)
        .map_err(|source| PrivError::Lookup {
            user: user.to_string(),
            source,
        })?
        .ok_or_else(|| PrivError::NoSuchUser(user.to_string()))?;
    let switch = |what: &'static str| {
        move |source| PrivError::Switch {
            user: user.to_string(),
            what,
            source,
        }
    };
    // Only the primary group: not initgroups, which would add disk and tape (issue 10).
    setgroups(&[entry.gid]).map_err(switch("setgroups"))?;
    setgid(entry.gid).map_err(switch("setgid"))?;
    // setuid as root sets the real, effective and saved ids alike: no way back.
    setuid(entry.uid).map_err(switch("setuid"))?;
    if setuid(Uid::from_raw(0)).is_ok() {
        return Err(PrivError::StillRoot(user.to_string()));
    }
    let extra = extra_groups(entry.gid);
    if !extra.is_empty() {
        return Err(PrivError::ExtraGroups {
            user: user.to_string(),
            gid: entry.gid.as_raw(),
            groups: extra,
        });
    }
    Ok(Identity {
        uid: entry.uid,
        gid: entry.gid,
    })
}

/// The supplementary groups of this process other than `gid`.
pub fn extra_groups(gid: Gid) -> Vec<u32> {
    getgroups()
        .unwrap_or_default()
        .into_iter()
        .filter(|g| *g != gid)
        .map(Gid::as_raw)
        .collect()
}

/// Looks up a user's home directory (where `.amandahosts` lives).
pub fn home_of(user: &str) -> Option<std::path::PathBuf> {
    User::from_name(user).ok().flatten().map(|u| u.dir)
}
