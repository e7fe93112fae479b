//! Dropping root. amandad's network-facing loop never runs as root: started as root
//! (standalone, or a superserver line that says `root`), it binds what it needs and then
//! becomes the Amanda user for good, supplementary groups included (Debian's `backup` is in
//! `disk` and `tape`). Reading files the Amanda user cannot read is the job of the setuid
//! helper `amandad-runtar`, which runs only GNU tar in create mode.
//!
//! What this module must not do: keep a way back to root (saved set-user-ID included).

use nix::unistd::{Gid, Uid, User, getegid, geteuid, initgroups, setgid, setuid};

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
}

/// The user and group ids amandad runs as after [`drop_to`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Identity {
    pub uid: Uid,
    pub gid: Gid,
}

/// If running as root, becomes `user` (uid, gid, supplementary groups) permanently.
/// Otherwise does nothing. Returns the identity the process runs as afterwards.
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
    let name = std::ffi::CString::new(user).map_err(|_| PrivError::NoSuchUser(user.to_string()))?;
    let switch = |what: &'static str| {
        move |source| PrivError::Switch {
            user: user.to_string(),
            what,
            source,
        }
    };
    initgroups(&name, entry.gid).map_err(switch("initgroups"))?;
    setgid(entry.gid).map_err(switch("setgid"))?;
    // setuid as root sets the real, effective and saved ids alike: no way back.
    setuid(entry.uid).map_err(switch("setuid"))?;
    if setuid(Uid::from_raw(0)).is_ok() {
        return Err(PrivError::StillRoot(user.to_string()));
    }
    Ok(Identity {
        uid: entry.uid,
        gid: entry.gid,
    })
}

/// Looks up a user's home directory (where `.amandahosts` lives).
pub fn home_of(user: &str) -> Option<std::path::PathBuf> {
    User::from_name(user).ok().flatten().map(|u| u.dir)
}
