//! What the selfcheck, sendsize and sendbackup requests have in common: the `OPTIONS` line,
//! the choice between XML and legacy DLE lines, the host name, and the checks of a DLE
//! that the real services make before doing anything (auth, what we do not implement).
//!
//! What this module must not do: touch the file system, or word an error differently from
//! the real client (the texts here are the real services').

use std::path::Path;

use proto::dataphase::{FilterChain, Stage};
use proto::dle::{DataPath, Dle};
use proto::features::Features;
use proto::options::Options;
use proto::request::ServiceInput;

use crate::services::ServiceContext;
use crate::services::features::advertised;

/// The parsed head of a request.
#[derive(Debug)]
pub struct Head {
    /// `ERROR [...]` lines the real `parse_g_options` prints for a bad OPTIONS line; they
    /// come first in the reply.
    pub diagnostics: Vec<u8>,
    /// The options.
    pub options: Options,
    /// The server's features (the 2.4.2p2 default set when it sent none).
    pub server: Features,
    /// `hostname=`, or this host's name.
    pub hostname: Vec<u8>,
    /// The rest of the input.
    pub input: ServiceInput,
}

/// Splits `args` and reads its OPTIONS line; `None` when there is none (each service has
/// its own text for that).
pub fn head(ctx: &ServiceContext, args: &[u8]) -> Option<Head> {
    let mut input = ServiceInput::split(args, &advertised());
    let parsed = input.options.take()?;
    let diagnostics = parsed
        .diagnostics
        .iter()
        .flat_map(|d| d.error_line())
        .collect();
    let server = parsed.options.effective_features();
    let hostname = parsed
        .options
        .hostname
        .as_ref()
        .map(|h| h.to_vec())
        .unwrap_or_else(|| ctx.local_hostname());
    Some(Head {
        diagnostics,
        options: parsed.options,
        server,
        hostname,
        input,
    })
}

/// The auth check of selfcheck and sendbackup (spec §4.1 step 6): `Some((ours, theirs))`
/// when the DLE names another auth than the one amandad serves.
pub fn auth_mismatch<'a>(ctx: &'a ServiceContext, dle: &'a Dle) -> Option<(&'a str, &'a [u8])> {
    let theirs = dle.auth.as_ref()?;
    (!theirs.as_bytes().eq_ignore_ascii_case(ctx.auth.as_bytes()))
        .then_some((ctx.auth.as_str(), theirs.as_bytes()))
}

/// Why we refuse a DLE outright: what it asks of the client that amanda-rs does not do
/// (and does not advertise, so a real server refuses such dumptypes before sending them).
pub fn unsupported_request(dle: &Dle) -> Option<String> {
    if dle.kencrypt {
        return Some("kencrypt is not supported by this client (amanda-rs)".into());
    }
    if matches!(dle.data_path, Some(DataPath::DirectTcp(_))) {
        return Some("data-path DIRECTTCP is not supported by this client (amanda-rs)".into());
    }
    None
}

/// Why the client filters of a DLE cannot run here: a program that is not an absolute path,
/// or (settings `amandad.filter_programs`) not one the admin allows. The server chooses
/// these programs and amandad runs them as the Amanda user, with the backup on stdin.
pub fn filter_refusal(ctx: &ServiceContext, chain: &FilterChain) -> Option<String> {
    use std::os::unix::ffi::OsStrExt;
    for stage in &chain.client {
        let (key, program) = match stage {
            Stage::CustomCompress(p) => ("client_custom_compress", p),
            Stage::Encrypt { program, .. } => ("client_encrypt", program),
            Stage::Gzip(_) => continue,
        };
        let path = Path::new(std::ffi::OsStr::from_bytes(program.as_bytes()));
        if !path.is_absolute() {
            return Some(format!(
                "{key} {}: not an absolute path (filter programs are named by their full path)",
                path.display()
            ));
        }
        if !ctx.filter_programs.is_empty() && !ctx.filter_programs.iter().any(|p| p == path) {
            return Some(format!(
                "{key} {} is not one of this client's amandad.filter_programs",
                path.display()
            ));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::services::context::tests::test_context;

    #[test]
    fn options_diagnostics_are_kept_as_error_lines() {
        let ctx = test_context();
        let h = head(
            &ctx,
            b"OPTIONS features=ffffffff9efefbfffffffffffffff3fffbf71f;frob=1;hostname=h;\n",
        )
        .unwrap();
        assert_eq!(h.diagnostics, b"ERROR [unknown option \"frob=1\"]\n");
        assert_eq!(h.hostname, b"h");
        assert!(head(&ctx, b"GNUTAR /x 0 OPTIONS |;\n").is_none());
    }

    #[test]
    fn auth_is_compared_case_insensitively() {
        let ctx = test_context();
        let mut dle = Dle::default();
        assert!(auth_mismatch(&ctx, &dle).is_none());
        dle.auth = Some("BSDTCP".into());
        assert!(auth_mismatch(&ctx, &dle).is_none());
        dle.auth = Some("bsd".into());
        assert_eq!(
            auth_mismatch(&ctx, &dle),
            Some(("bsdtcp", b"bsd".as_slice()))
        );
    }

    #[test]
    fn filter_programs_must_be_absolute_and_allowed() {
        // issue 12: the server names the programs; the client admin may restrict them.
        use proto::dle::{Compress, Encrypt};
        let chain = |c: &str, e: &str| {
            FilterChain::of(
                &Compress::Custom(c.into()),
                &Encrypt::Custom {
                    program: e.into(),
                    decrypt_option: None,
                },
            )
            .unwrap()
        };
        let allowed = ["/usr/bin/zstd", "/usr/sbin/amcrypt-ossl"];
        // (amandad.filter_programs, compressor, encryptor, the refusal)
        let cases: [(&[&str], &str, &str, Option<&str>); 4] = [
            (&[], "/usr/bin/zstd", "/bin/sh", None),
            (
                &[],
                "zstd",
                "/x",
                Some(
                    "client_custom_compress zstd: not an absolute path (filter programs are named by their full path)",
                ),
            ),
            (&allowed, "/usr/bin/zstd", "/usr/sbin/amcrypt-ossl", None),
            (
                &allowed,
                "/usr/bin/zstd",
                "/bin/sh",
                Some("client_encrypt /bin/sh is not one of this client's amandad.filter_programs"),
            ),
        ];
        for (programs, compress, encrypt, refusal) in cases {
            let mut inner = crate::services::context::tests::test_inner(Path::new("/tmp"));
            inner.filter_programs = programs.iter().map(Into::into).collect();
            let ctx = ServiceContext::new(inner);
            assert_eq!(
                filter_refusal(&ctx, &chain(compress, encrypt)).as_deref(),
                refusal,
                "{programs:?} {compress} {encrypt}"
            );
        }
    }

    #[test]
    fn client_side_filters_are_accepted_and_kencrypt_refused() {
        // issue 12: client compression and encryption are implemented.
        use proto::dle::{Compress, Encrypt};
        let mut dle = Dle {
            compress: Compress::Fast,
            encrypt: Encrypt::Custom {
                program: "/usr/sbin/amcrypt-ossl".into(),
                decrypt_option: None,
            },
            ..Dle::default()
        };
        assert!(unsupported_request(&dle).is_none());
        dle.kencrypt = true;
        assert!(unsupported_request(&dle).unwrap().contains("kencrypt"));
    }
}
