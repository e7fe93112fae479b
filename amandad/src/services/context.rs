//! What every service needs to know about the daemon it runs in, resolved once at start-up
//! from amanda-client.conf and amanda-rs's own settings (the daemon fills it in).

use std::path::PathBuf;
use std::sync::Arc;

/// Read-only facts for services. Cheap to clone (jobs carry a clone to the worker pool).
#[derive(Clone, Debug)]
pub struct ServiceContext {
    inner: Arc<ContextInner>,
}

/// The fields of a [`ServiceContext`].
#[derive(Clone, Debug)]
pub struct ContextInner {
    /// The auth amandad serves (`bsd`, `bsdudp` or `bsdtcp`): a DLE that names another auth
    /// is refused, as the real selfcheck and sendbackup do.
    pub auth: String,
    /// The server's name as amandad resolved it (`AMANDA_AUTHENTICATED_PEER`).
    pub peer_name: String,
    /// The feature string amandad advertises, lowercase hex (what services put in their
    /// `OPTIONS features=` lines).
    pub features_hex: String,
    /// GNU tar.
    pub gnutar_path: PathBuf,
    /// The privileged helper that runs tar as root (`amandad-runtar`), when installed; tar runs
    /// as the Amanda user otherwise.
    pub runtar_path: Option<PathBuf>,
    /// Where the `--listed-incremental` state files live (amanda-client.conf
    /// `gnutar_list_dir`; Debian: /var/lib/amanda/gnutar-lists).
    pub gnutar_list_dir: PathBuf,
    /// The amandates file (amanda-client.conf `amandates`; Debian: /var/lib/amanda/amandates).
    pub amandates: PathBuf,
    /// A private directory for temporary files (exclude/include lists).
    pub tmp_dir: PathBuf,
    /// The client configuration name (amanda-client.conf `conf`), if any.
    pub config_name: Option<String>,
}

impl ServiceContext {
    /// Wraps the fields.
    pub fn new(inner: ContextInner) -> ServiceContext {
        ServiceContext {
            inner: Arc::new(inner),
        }
    }
}

impl std::ops::Deref for ServiceContext {
    type Target = ContextInner;

    fn deref(&self) -> &ContextInner {
        &self.inner
    }
}
