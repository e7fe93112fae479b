//! Fuzz entry points of amandad (the services and the tar machinery), reachable from stable
//! Rust.
//!
//! Each `pub fn name(data: &[u8])` must never panic and checks the invariants of what it
//! drives: the privileged helper's argument check (the security boundary), tar's stderr
//! state machine, the amandates parser, and the request parsing of sendbackup and sendsize
//! (which runs no tar: a sendsize job is built, not run). The cargo-fuzz crate in
//! `<repo>/fuzz` calls them; the integration test `fuzz_corpora` replays
//! `<repo>/fuzz/corpus/<name>/` through [`TARGETS`].
//!
//! The helper's oracle does not trust the helper's view of the command line: it asks
//! [`tar_model`], an independent model of GNU tar's own parsing, what tar would do with an
//! accepted argv.
//!
//! What this module must not do: hold parsing logic of its own (beyond that second opinion).

use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};

use crate::services::messages::{
    BackupMessages, Classifier, MAX_LINE, StreamOutput, Table, UserRules,
};
use crate::tar::runtar;

pub mod tar_model;

/// Every target: (name of the corpus directory and cargo-fuzz binary, entry point).
pub const TARGETS: &[proto::fuzz::Target] = &[
    ("amandad_runtar_args", runtar_args),
    ("amandad_tar_stderr", tar_stderr),
    ("amandad_amandates", amandates),
    ("amandad_requests", requests),
];

/// The helper's argument check: argv is `data` split at NUL bytes. Whatever the helper
/// accepts, GNU tar (as [`tar_model`] reads it) must only archive: create mode first, only
/// harmless options with values tar reads harmlessly, the archive on stdout or /dev/null.
pub fn runtar_args(data: &[u8]) {
    let argv: Vec<OsString> = data
        .split(|b| *b == 0)
        .map(|a| OsString::from_vec(a.to_vec()))
        .collect();
    if runtar::parse_args(&argv).is_ok() {
        let tar_args: Vec<&[u8]> = argv[1..].iter().map(|a| a.as_bytes()).collect();
        if let Err(why) = tar_model::verdict(&tar_args) {
            panic!("the helper accepted {argv:?}, but {why}");
        }
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
    let a = crate::tar::amandates::Amandates::parse(data);
    let f = a.format();
    assert_eq!(crate::tar::amandates::Amandates::parse(&f).format(), f);
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
        inner.tar = crate::tar::TarPaths::below(&std::env::temp_dir().join("amandad-rs-fuzz"));
        crate::services::ServiceContext::new(inner)
    })
}

#[cfg(test)]
mod tests {
    use std::ffi::OsString;
    use std::os::unix::ffi::{OsStrExt, OsStringExt};
    use std::path::{Path, PathBuf};

    use super::tar_model;
    use crate::tar::runtar;
    use tar_model::Event::{Operand, Opt};

    fn fuzz_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join("fuzz")
    }

    fn words(list: &[&str]) -> Vec<Vec<u8>> {
        list.iter().map(|w| w.as_bytes().to_vec()).collect()
    }

    fn verdict(list: &[&str]) -> Result<(), String> {
        let w = words(list);
        let refs: Vec<&[u8]> = w.iter().map(Vec::as_slice).collect();
        tar_model::verdict(&refs)
    }

    fn parse(list: &[&str]) -> Result<Vec<tar_model::Event>, String> {
        let w = words(list);
        let refs: Vec<&[u8]> = w.iter().map(Vec::as_slice).collect();
        tar_model::parse(&refs)
    }

    #[test]
    fn the_model_reads_argv_like_tar() {
        // issue 10: the first word as old-style letters, their arguments in order
        assert_eq!(
            parse(&["I", "id > OUT", "--create", "--file", "/dev/null", "x"]).unwrap(),
            vec![
                Opt("use-compress-program", Some(b"id > OUT".to_vec())),
                Opt("create", None),
                Opt("file", Some(b"/dev/null".to_vec())),
                Operand(b"x".to_vec()),
            ]
        );
        // abbreviations, aliases, separate values that look like options
        assert_eq!(
            parse(&["--create", "--blocking", "--directory=/x", "--xf=s/a/b/"]).unwrap(),
            vec![
                Opt("create", None),
                Opt("blocking-factor", Some(b"--directory=/x".to_vec())),
                Opt("transform", Some(b"s/a/b/".to_vec())),
            ]
        );
        assert!(
            parse(&["--create", "--prese"])
                .unwrap_err()
                .contains("ambiguous")
        );
        assert!(parse(&["--create", "--bogus"]).is_err());
        assert!(parse(&["--create=1"]).is_err());
        // clusters, optional values, options among operands, --
        assert_eq!(
            parse(&["-cvIsh", ".", "--atime-preserve", "-", "--", "-x"]).unwrap(),
            vec![
                Opt("create", None),
                Opt("verbose", None),
                Opt("use-compress-program", Some(b"sh".to_vec())),
                Operand(b".".to_vec()),
                Opt("atime-preserve", None),
                Operand(b"-".to_vec()),
                Operand(b"-x".to_vec()),
            ]
        );
    }

    /// The attacks are the corpus's `issue10_*` entries
    /// (`named_runtar_corpus_entries_are_judged_as_named`); these are what amandad sends.
    #[test]
    fn the_verdict_passes_amandads_argv() {
        for good in [
            runtar::tests::GOOD,
            &[
                "--create",
                "--file=/dev/null",
                "--numeric-owner",
                "--directory=/x",
                "--one-file-system",
                "--incremental",
                "--newer=1970-01-01  0:00:00 GMT",
                "--sparse",
                "--ignore-failed-read",
                "--totals",
                ".",
            ],
            &[
                "--create",
                "--file=/dev/null",
                "--no-recursion",
                "--directory=/etc",
                ".",
            ],
        ] {
            assert_eq!(verdict(good), Ok(()), "{good:?}");
        }
    }

    /// The model's tables are tar 1.34's: every option `tar --help` lists is in them, with
    /// the same argument (checked when the installed tar is 1.34).
    #[test]
    fn the_models_option_table_is_the_installed_tars() {
        let help = std::process::Command::new("/usr/bin/tar")
            .arg("--help")
            .env_clear()
            .output();
        let version = std::process::Command::new("/usr/bin/tar")
            .arg("--version")
            .output();
        let (Ok(help), Ok(version)) = (help, version) else {
            crate::services::util::skip_unless_ci("no /usr/bin/tar");
            return;
        };
        if !String::from_utf8_lossy(&version.stdout).starts_with("tar (GNU tar) 1.34\n") {
            crate::services::util::skip_unless_ci("the installed tar is not GNU tar 1.34");
            return;
        }
        let help = String::from_utf8_lossy(&help.stdout);
        let mut listed = 0;
        for word in help.split(|c: char| c.is_whitespace() || c == ',') {
            let Some(spec) = word.strip_prefix("--") else {
                continue;
            };
            let name = spec.split(['=', '[']).next().unwrap_or_default();
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            {
                continue;
            }
            let takes = if spec.starts_with(&format!("{name}[=")) {
                tar_model::Takes::Optional
            } else if spec.starts_with(&format!("{name}=")) {
                tar_model::Takes::Required
            } else {
                tar_model::Takes::No
            };
            let known = tar_model::long_options().find(|o| o.name == name);
            // names mentioned in descriptions (e.g. "--sparse)") are options too
            if let Some(o) = known {
                listed += 1;
                if takes != tar_model::Takes::No {
                    assert_eq!(o.takes, takes, "--{name}");
                }
            } else {
                panic!("tar --help lists --{name}, the model does not know it");
            }
        }
        assert_eq!(
            tar_model::long_options()
                .filter(|o| help.contains(&format!("--{}", o.name)))
                .count(),
            tar_model::long_options().count()
        );
        assert!(listed > 150);
    }

    /// Words the helper knows, tar's dangerous ones, and their near misses.
    const TOKENS: &[&str] = &[
        "--create",
        "--file=-",
        "--file=/dev/null",
        "--file",
        "-",
        "/dev/null",
        "--directory=/etc",
        "--directory",
        "/etc",
        ".",
        "x",
        "I",
        "cIf",
        "touch /tmp/x",
        "--",
        "-I",
        "-Ish",
        "-cf",
        "--verbatim-files-from",
        "--null",
        "--no-null",
        "--files-from=/tmp/l",
        "--files-from",
        "--exclude-from=/tmp/x",
        "--exclude=-Ish",
        "--exclude",
        "--atime-preserve",
        "--atime-preserve=system",
        "--blocking-factor=20",
        "--blocking",
        "--to-com=sh",
        "--use-compress-program=sh",
        "--checkpoint-action=exec=sh",
        "--transform=s/a/b/",
        "--transform=s/a/b/e",
        "--newer=1970-01-01",
        "--newer=/etc/shadow",
        "--newer",
        "-N",
        "--listed-incremental=/var/lib/amanda/gnutar-lists/x",
        "--listed-incremental",
        "--totals",
        "--totals=USR1",
        "--sparse",
        "--one-file-system",
        "--exclude-tag=x",
        "--rsh-command=sh",
        "--file=h:/x",
        "--verbose",
        "-v",
        "--no-recursion",
        "--xform=s/a/b/",
    ];

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 4000, .. Default::default() })]
        /// Random command lines from [`TOKENS`]: whatever the helper accepts, the model of
        /// tar judges harmless (the fuzz target's oracle, run by `cargo test`).
        #[test]
        fn the_helper_accepts_nothing_tar_would_misuse(
            picks in proptest::collection::vec(0..TOKENS.len(), 0..9),
            create_first in proptest::bool::ANY,
        ) {
            let mut data = b"/usr/bin/tar".to_vec();
            if create_first {
                data.extend_from_slice(b"\0--create");
            }
            for p in picks {
                data.push(0);
                data.extend_from_slice(TOKENS[p].as_bytes());
            }
            super::runtar_args(&data);
        }
    }

    /// The named runtar corpus entries: `issue10_*` (attack vectors) are refused by the
    /// helper and judged unsafe by the model; `strict_*` are refused by the helper although
    /// tar would read them harmlessly; `amandad_*` (what amandad generates) pass both.
    #[test]
    fn named_runtar_corpus_entries_are_judged_as_named() {
        let dir = fuzz_dir().join("corpus/amandad_runtar_args");
        let mut seen = (0, 0);
        for e in std::fs::read_dir(&dir).unwrap().filter_map(Result::ok) {
            let name = e.file_name().to_string_lossy().into_owned();
            let data = std::fs::read(e.path()).unwrap();
            let argv: Vec<OsString> = data
                .split(|b| *b == 0)
                .map(|a| OsString::from_vec(a.to_vec()))
                .collect();
            let tar_args: Vec<&[u8]> = argv[1..].iter().map(|a| a.as_bytes()).collect();
            if name.starts_with("issue10_") {
                seen.0 += 1;
                assert!(runtar::parse_args(&argv).is_err(), "{name} accepted");
                assert!(tar_model::verdict(&tar_args).is_err(), "{name} judged safe");
            } else if name.starts_with("strict_") {
                assert!(runtar::parse_args(&argv).is_err(), "{name} accepted");
            } else if name.starts_with("amandad_") {
                seen.1 += 1;
                if let Err(e) = runtar::parse_args(&argv) {
                    panic!("{name} refused: {e}");
                }
                assert_eq!(tar_model::verdict(&tar_args), Ok(()), "{name}");
            }
        }
        assert!(seen.0 >= 18 && seen.1 >= 4, "{seen:?}");
    }
}
