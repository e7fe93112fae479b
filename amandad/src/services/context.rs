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
    /// Where tar and its helper are, and where its state and temporary files go.
    pub tar: crate::tar::TarPaths,
    /// The client configuration name (amanda-client.conf `conf`), if any.
    pub config_name: Option<String>,
    /// The compression and encryption programs a DLE may name (settings
    /// `amandad.filter_programs`); empty: any absolute path, as Amanda.
    pub filter_programs: Vec<PathBuf>,
}

impl ServiceContext {
    /// Wraps the fields.
    pub fn new(inner: ContextInner) -> ServiceContext {
        ServiceContext {
            inner: Arc::new(inner),
        }
    }
}

impl ContextInner {
    /// Debian's paths for everything, with `auth`, the hostname and our features filled in;
    /// the daemon overrides what amanda-client.conf says.
    pub fn debian_defaults(auth: &str) -> ContextInner {
        ContextInner {
            auth: auth.to_owned(),
            peer_name: String::new(),
            features_hex: crate::services::features::advertised_hex(),
            tar: crate::tar::TarPaths::debian(),
            config_name: None,
            filter_programs: Vec::new(),
        }
    }

    /// /etc/amanda-security.conf: which tar paths the privileged helper, and amgtar's
    /// GNUTAR-PATH property, may use.
    pub fn security_file(&self) -> &'static std::path::Path {
        std::path::Path::new(conf::security::PATH)
    }

    /// This host's name, for requests without `hostname=` (the real services call
    /// `gethostname()`).
    pub fn local_hostname(&self) -> Vec<u8> {
        nix::unistd::gethostname()
            .map(|h| h.as_encoded_bytes().to_vec())
            .unwrap_or_else(|_| b"localhost".to_vec())
    }
}

/// Where the real client's applications live (`APPLICATION_DIR` on Debian). Only printed:
/// it is the dump header's `RECOVER_CMD`, read by the server-side restore tools.
pub const APPLICATION_DIR: &str = "/usr/lib/amanda/application";

/// Directories whose free space selfcheck reports, as Debian's client does
/// (`AMANDA_TMPDIR`, `AMANDA_DBGDIR`, /var/lib for Debian's dumpdates, /etc).
pub const SPACE_CHECK_DIRS: [&str; 4] = ["/tmp/amanda", "/var/log/amanda", "/var/lib", "/etc"];

impl std::ops::Deref for ServiceContext {
    type Target = ContextInner;

    fn deref(&self) -> &ContextInner {
        &self.inner
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A context whose state directories live in a fresh temporary directory (kept alive
    /// for the whole test run), so tests never touch /var/lib/amanda.
    pub(crate) fn test_context() -> ServiceContext {
        ServiceContext::new(test_inner(&scratch_dir()))
    }

    /// A context rooted at `root` (gnutar-lists, amandates, tmp below it).
    pub(crate) fn test_inner(root: &std::path::Path) -> ContextInner {
        let mut c = ContextInner::debian_defaults("bsdtcp");
        c.tar = crate::tar::TarPaths::below(root);
        for d in [&c.tar.gnutar_list_dir, &c.tar.tmp_dir] {
            let _ = std::fs::create_dir_all(d);
        }
        c
    }

    /// A fresh directory (first, keep it alive) holding a context's state and a DLE
    /// directory `data/` that `fill` populates; then the context, `data` and its disk name.
    pub(crate) fn test_dle(
        fill: impl FnOnce(&std::path::Path),
    ) -> (tempfile::TempDir, ServiceContext, PathBuf, String) {
        let root = tempfile::tempdir().unwrap();
        let ctx = ServiceContext::new(test_inner(root.path()));
        let data = root.path().join("data");
        fill(&data);
        let disk = data.display().to_string();
        (root, ctx, data, disk)
    }

    fn scratch_dir() -> PathBuf {
        let dir = tempfile::Builder::new()
            .prefix("amandad-services-")
            .tempdir()
            .expect("tempdir");
        // Leaked on purpose: contexts outlive the test that made them in worker threads.
        dir.keep()
    }
}
