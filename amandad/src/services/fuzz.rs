//! Fuzz entry points of the services, reachable from stable Rust.
//!
//! Each `pub fn name(data: &[u8])` must never panic and checks the invariants of what it
//! drives: the privileged helper's argument check (the security boundary), tar's stderr
//! state machine, the amandates parser, and the request parsing of sendbackup and sendsize
//! (which runs no tar: a sendsize job is built, not run). The cargo-fuzz crate in
//! `<repo>/fuzz` calls them; the test below replays `<repo>/fuzz/corpus/<name>/`.
//!
//! What this module must not do: hold parsing logic of its own.

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;

use crate::services::messages::{
    BackupMessages, Classifier, MAX_LINE, StreamOutput, Table, UserRules,
};
use crate::services::runtar::{self, Arg};

/// A fuzz target: its name (corpus directory and cargo-fuzz binary) and entry point.
pub type Target = (&'static str, fn(&[u8]));

/// Every target.
pub const TARGETS: &[Target] = &[
    ("amandad_runtar_args", runtar_args),
    ("amandad_tar_stderr", tar_stderr),
    ("amandad_amandates", amandates),
    ("amandad_requests", requests),
];

/// The helper's argument check: argv is `data` split at NUL bytes. An accepted invocation
/// has exactly one `--create`, only allow-listed options, and an archive of `-` or
/// `/dev/null`.
pub fn runtar_args(data: &[u8]) {
    let argv: Vec<OsString> = data
        .split(|b| *b == 0)
        .map(|a| OsString::from_vec(a.to_vec()))
        .collect();
    if let Ok(req) = runtar::parse_args(&argv) {
        let mut creates = 0;
        for a in &req.args {
            if let Arg::Opt { name, value } = a {
                assert!(runtar::ALLOWED.contains(name), "{name} accepted");
                if *name == "--create" {
                    creates += 1;
                }
                if *name == "--file" {
                    let v = value.as_ref().map(|v| v.as_encoded_bytes());
                    assert!(
                        v == Some(b"-") || v == Some(b"/dev/null"),
                        "archive {v:?} accepted"
                    );
                }
            }
        }
        assert_eq!(creates, 1);
    }
}

/// tar's stderr in chunks of varying size: never panics, never buffers more than a line.
pub fn tar_stderr(data: &[u8]) {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let Ok(classifier) = Classifier::new(Table::Amgtar, &UserRules::default()) else {
        return;
    };
    let mut m = BackupMessages::new(classifier, first & 1 == 1);
    let mut out = StreamOutput::default();
    let chunk = usize::from(first >> 1).max(1);
    for c in rest.chunks(chunk) {
        m.push(c, &mut out);
        // Output grows only with input: each byte yields at most a prefix and a newline.
        assert!(out.mesg.len() + out.index.len() <= 3 * rest.len() + 64);
        out = StreamOutput::default();
    }
    m.finish(&mut out);
    assert!(out.mesg.len() <= MAX_LINE + 64);
}

/// The amandates parser: never panics; formatting is a fixed point.
pub fn amandates(data: &[u8]) {
    let a = crate::services::amandates::Amandates::parse(data);
    let f = a.format();
    assert_eq!(crate::services::amandates::Amandates::parse(&f).format(), f);
}

/// sendbackup and sendsize request handling on arbitrary bodies: never panics.
pub fn requests(data: &[u8]) {
    let ctx = fuzz_context();
    let _ = crate::services::backup::start(ctx, data);
    let _ = crate::services::sendsize::start(ctx, data);
}

fn fuzz_context() -> &'static crate::services::ServiceContext {
    static CTX: std::sync::OnceLock<crate::services::ServiceContext> = std::sync::OnceLock::new();
    CTX.get_or_init(|| {
        let mut inner = crate::services::context::ContextInner::debian_defaults("bsdtcp");
        let dir = std::env::temp_dir().join("amandad-rs-fuzz");
        inner.gnutar_list_dir = dir.join("lists");
        inner.amandates = dir.join("amandates");
        inner.tmp_dir = dir.join("tmp");
        inner.runtar_path = None;
        crate::services::ServiceContext::new(inner)
    })
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    fn fuzz_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join("fuzz")
    }

    #[test]
    fn every_target_has_a_cargo_fuzz_binary() {
        for (name, _) in super::TARGETS {
            let file = fuzz_dir().join("fuzz_targets").join(format!("{name}.rs"));
            assert!(file.is_file(), "{} is missing", file.display());
        }
    }

    #[test]
    fn committed_corpora_replay_without_panics() {
        for (name, f) in super::TARGETS {
            let dir = fuzz_dir().join("corpus").join(name);
            let entries: Vec<_> = std::fs::read_dir(&dir)
                .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
                .filter_map(Result::ok)
                .collect();
            assert!(!entries.is_empty(), "{} is empty", dir.display());
            for e in entries {
                let data = std::fs::read(e.path()).unwrap();
                f(&data);
            }
        }
    }
}
