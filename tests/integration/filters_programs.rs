//! The `filters` crate against the real programs Amanda runs for compression and
//! encryption (issue 12): our gzip members read back by the real `gzip -dc` (what Debian's
//! `amrestore` runs), the real gzip's output read by our gunzip, `/usr/bin/zstd` as a custom
//! compressor (no argument; `-d` to restore), Debian's `/usr/sbin/amcrypt-ossl` and
//! `/usr/sbin/amgpgcrypt` as encryption programs (no argument; `-d` to decrypt) with the
//! passphrase and key set up by `util::crypt`, programs chained pipe to pipe, and bad
//! programs with the real restore tools behind them.

use std::io::{Read, Write};
use std::num::NonZeroUsize;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};

use filters::{
    FilterCommand, FilterError, FilterIo, FilterReport, GunzipError, GunzipReader, GzipPool,
    GzipWriter, Level, RunFailure,
};

use crate::util;
use crate::util::crypt::{self, GpgLock};
use crate::{require_root, require_tool};

/// Tar-like data: compressible text with some binary parts, several gzip members long.
fn sample(n: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(n);
    let mut x = 7u32;
    while v.len() < n {
        x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
        match (x >> 16) % 11 {
            0 => v.extend_from_slice(&x.to_le_bytes()),
            k => v.extend_from_slice(
                [
                    "usr/",
                    "share/",
                    "doc/",
                    "amanda",
                    "\n",
                    " ",
                    "0000644",
                    "\0",
                    "copyright",
                    "README",
                ][k as usize - 1]
                    .as_bytes(),
            ),
        }
    }
    v.truncate(n);
    v
}

fn ours(level: Level, data: &[u8]) -> Vec<u8> {
    let pool = GzipPool::new(NonZeroUsize::new(2).expect("2"));
    let mut w = GzipWriter::new(&pool, level, Vec::new()).expect("pool");
    w.write_all(data).expect("compress");
    w.finish().expect("finish")
}

/// `prog args... < input`, the way amrestore runs its filters; stdout and success.
fn real(prog: &str, args: &[&str], input: &[u8]) -> (Vec<u8>, bool, String) {
    let out = util::pipe_through(Command::new(prog).args(args).stderr(Stdio::piped()), input);
    (
        out.stdout,
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The output of the real `gzip args... < input`, which must succeed.
fn gzip_ok(args: &[&str], input: &[u8]) -> Vec<u8> {
    let (out, ok, err) = real("/bin/gzip", args, input);
    assert!(ok, "gzip {}: {err}", args.join(" "));
    out
}

fn gunzip_ours(data: &[u8]) -> Result<Vec<u8>, std::io::Error> {
    let mut out = Vec::new();
    GunzipReader::new(data).read_to_end(&mut out)?;
    Ok(out)
}

fn run(cmd: FilterCommand, input: &[u8]) -> Result<(Vec<u8>, FilterReport), RunFailure> {
    cmd.run_on(input)
}

/// `cmd` run as the Amanda user, as the client runs its encryption programs.
fn as_backup(cmd: FilterCommand) -> FilterCommand {
    let (uid, gid, _) = crypt::backup_user();
    cmd.user(uid, gid)
}

/// [`run`], for a filter that must succeed.
fn run_ok(cmd: FilterCommand, input: &[u8]) -> (Vec<u8>, FilterReport) {
    run(cmd, input).unwrap_or_else(|f| panic!("{f}"))
}

#[test]
fn our_gzip_members_read_back_with_the_real_gzip_dc() {
    require_tool!("/bin/gzip");
    let data = sample(3 * filters::MEMBER_SIZE + 4321);
    for level in [Level::Fast, Level::Best] {
        let gz = ours(level, &data);
        let (out, ok, err) = real("/bin/gzip", &["-dc"], &gz);
        assert!(ok, "gzip -dc refused our {level:?} output: {err}");
        assert_eq!(out, data, "{level:?}");
        // `gzip -t` agrees, and lists nothing odd.
        let (_, ok, err) = real("/bin/gzip", &["-t"], &gz);
        assert!(ok && err.is_empty(), "gzip -t: {err}");
    }
    // Two streams of ours, concatenated, read as one.
    let a = ours(Level::Fast, b"first stream\n");
    let b = ours(Level::Best, &data[..100_000]);
    let out = gzip_ok(&["-dc"], &[a, b].concat());
    assert_eq!(out, [&b"first stream\n"[..], &data[..100_000]].concat());
    // An empty stream is a valid (empty) gzip file.
    assert!(gzip_ok(&["-dc"], &ours(Level::Fast, b"")).is_empty());
}

#[test]
fn our_fast_output_is_no_larger_than_the_real_gzip_fast() {
    // The issue allows 5% more than `gzip --fast`; libdeflate level 1 is smaller.
    require_tool!("/bin/gzip");
    let data = sample(4 << 20);
    let real_gz = gzip_ok(&["--fast", "-c"], &data);
    let ours = ours(Level::Fast, &data);
    assert!(
        ours.len() as f64 <= real_gz.len() as f64 * 1.05,
        "ours {} bytes, gzip --fast {}",
        ours.len(),
        real_gz.len()
    );
}

#[test]
fn the_real_gzips_output_reads_back_with_our_gunzip() {
    require_tool!("/bin/gzip");
    let data = sample(2 << 20);
    let fast = gzip_ok(&["--fast", "-c"], &data);
    let best = gzip_ok(&["--best", "-c"], &data[..5000]);
    assert_eq!(gunzip_ours(&fast).expect("gzip --fast"), data);
    let both = [fast.clone(), best].concat();
    assert_eq!(
        gunzip_ours(&both).expect("concatenated"),
        [&data[..], &data[..5000]].concat()
    );
    // A file gzip made from a named file carries FNAME in its header.
    let dir = tempfile::tempdir().expect("tempdir");
    let named = dir.path().join("share.tar");
    std::fs::write(&named, &data[..7000]).expect("write");
    let st = Command::new("/bin/gzip")
        .args(["-1", "-N"])
        .arg(&named)
        .status()
        .expect("gzip");
    assert!(st.success());
    let gz = std::fs::read(dir.path().join("share.tar.gz")).expect("read .gz");
    assert_ne!(gz[3] & 0x08, 0, "gzip -N wrote no name");
    assert_eq!(gunzip_ours(&gz).expect("named member"), &data[..7000]);
}

#[test]
fn zstd_as_a_custom_compressor_round_trips_without_arguments() {
    require_tool!("/usr/bin/zstd");
    let data = sample(3 << 20);
    let cmd = FilterCommand::compress("/usr/bin/zstd");
    assert!(cmd.args().is_empty());
    let (z, r) = run_ok(cmd, &data);
    assert_eq!(&z[..4], &[0x28, 0xb5, 0x2f, 0xfd], "not zstd's magic");
    assert!(z.len() < data.len() / 2);
    assert!(r.stderr.is_empty(), "{:?}", r.stderr);
    assert_eq!(r.bytes_in, data.len() as u64);
    let (back, _) = run_ok(FilterCommand::uncompress("/usr/bin/zstd"), &z);
    assert_eq!(back, data);
}

#[test]
fn garbage_from_a_compressor_fails_the_real_restore_with_its_exit_status() {
    require_tool!("/usr/bin/zstd");
    // A "compressor" that reads its input and writes garbage.
    let dir = tempfile::tempdir().expect("tempdir");
    let prog = dir.path().join("bad-compress");
    std::fs::write(
        &prog,
        "#!/bin/sh\ncat > /dev/null\necho this is not compressed\n",
    )
    .expect("write");
    std::fs::set_permissions(&prog, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let (garbage, _) = run_ok(FilterCommand::compress(&prog), &sample(10_000));
    let f = run(FilterCommand::uncompress("/usr/bin/zstd"), &garbage).unwrap_err();
    match &f.error {
        FilterError::Exit { program, code, .. } => {
            assert_eq!(program, Path::new("/usr/bin/zstd"));
            assert_eq!(*code, 1);
        }
        other => panic!("{other:?}"),
    }
    assert!(!f.stderr.is_empty(), "zstd said nothing on stderr");
    // The same garbage where gzip data is expected: our gunzip names it.
    let e = gunzip_ours(&garbage).unwrap_err();
    let inner = e.get_ref().and_then(|i| i.downcast_ref::<GunzipError>());
    assert!(
        matches!(inner, Some(GunzipError::NotGzip { offset: 0, .. })),
        "{e}"
    );
    // And a missing custom program is a start error naming it.
    let e = FilterCommand::compress("/usr/bin/zstd-is-not-installed")
        .spawn()
        .unwrap_err();
    assert!(
        matches!(&e, FilterError::Start { source, .. } if source.raw_os_error() == Some(libc::ENOENT))
    );
    assert!(
        e.to_string().contains("/usr/bin/zstd-is-not-installed"),
        "{e}"
    );
}

#[test]
fn programs_chain_pipe_to_pipe_without_the_caller_in_between() {
    // compress | encrypt, as the client runs them: zstd's stdout is cat's stdin directly.
    require_tool!("/usr/bin/zstd");
    let data = sample(2 << 20);
    let mut zstd = FilterCommand::compress("/usr/bin/zstd")
        .spawn()
        .expect("zstd");
    let between = zstd.take_stdout().expect("zstd stdout");
    let second = FilterCommand::encrypt("/bin/cat").stdin(FilterIo::Fd(between));
    let mut zin = std::fs::File::from(zstd.take_stdin().expect("zstd stdin"));
    let input = data.clone();
    let feeder = std::thread::spawn(move || zin.write_all(&input));
    let (z, _) = run_with_stdin_already_set(second);
    feeder.join().expect("feeder").expect("write to zstd");
    assert_eq!(zstd.wait().expect("wait"), filters::ExitOutcome::Code(0));
    let (back, _) = run_ok(FilterCommand::uncompress("/usr/bin/zstd"), &z);
    assert_eq!(back, data);
}

/// Spawns a command whose stdin is already set, and collects its stdout.
fn run_with_stdin_already_set(cmd: FilterCommand) -> (Vec<u8>, filters::ExitOutcome) {
    let mut f = cmd.spawn().expect("spawn");
    let mut out = Vec::new();
    std::fs::File::from(f.take_stdout().expect("stdout"))
        .read_to_end(&mut out)
        .expect("read");
    let o = f.wait().expect("wait");
    (out, o)
}

/// amcrypt-ossl's output size for `n` bytes: NUL-padded to a multiple of 96, plus
/// `Salted__` and 8 salt bytes (spec §11.4).
fn ossl_len(n: usize) -> usize {
    16 + n.div_ceil(96).max(1) * 96
}

#[test]
fn amcrypt_ossl_encrypts_without_arguments_and_decrypts_with_its_option() {
    require_root!();
    require_tool!("/usr/sbin/amcrypt-ossl");
    require_tool!("/usr/bin/openssl");
    crypt::am_passphrase();
    let data = sample(1_000_000);
    let (enc, r) = run_ok(
        as_backup(FilterCommand::encrypt("/usr/sbin/amcrypt-ossl")),
        &data,
    );
    assert_eq!(&enc[..8], b"Salted__");
    assert_eq!(enc.len(), ossl_len(data.len()));
    // OpenSSL 3's warnings come through as stderr lines for the daemon's messages
    // (the real client turns each into `sendbackup: error [...]`, spec §11.3).
    let lines: Vec<&str> = r.stderr.iter().map(|l| l.text.as_str()).collect();
    assert!(
        lines.contains(&"*** WARNING : deprecated key derivation used."),
        "{lines:?}"
    );
    let (dec, _) = run_ok(
        as_backup(FilterCommand::decrypt("/usr/sbin/amcrypt-ossl", "-d")),
        &enc,
    );
    // The NUL padding stays, as with amrestore.
    assert_eq!(&dec[..data.len()], &data[..]);
    assert!(dec[data.len()..].iter().all(|b| *b == 0));
}

#[test]
fn client_fast_then_amcrypt_ossl_restores_through_gunzip_despite_the_padding() {
    require_root!();
    require_tool!("/usr/sbin/amcrypt-ossl");
    require_tool!("/bin/gzip");
    crypt::am_passphrase();
    let data = sample(2_500_000);
    let gz = ours(Level::Fast, &data);
    let (enc, _) = run_ok(
        as_backup(FilterCommand::encrypt("/usr/sbin/amcrypt-ossl")),
        &gz,
    );
    let (dec, _) = run_ok(
        as_backup(FilterCommand::decrypt("/usr/sbin/amcrypt-ossl", "-d")),
        &enc,
    );
    assert!(dec.len() > gz.len(), "no padding?");
    assert_eq!(gunzip_ours(&dec).expect("our gunzip skips the NULs"), data);
    assert_eq!(gzip_ok(&["-dc"], &dec), data);
}

#[test]
fn amgpgcrypt_round_trips_with_a_key_set_up_non_interactively() {
    require_root!();
    require_tool!("/usr/sbin/amgpgcrypt");
    require_tool!("/usr/bin/gpg");
    require_tool!("/usr/bin/gpg-agent");
    crypt::amgpgcrypt_keys();
    let _gpg = GpgLock::take();
    let (_, _, home) = crypt::backup_user();
    let data = sample(1_500_000);
    let (enc, _) = run_ok(
        as_backup(FilterCommand::encrypt("/usr/sbin/amgpgcrypt")),
        &data,
    );
    // An OpenPGP message (a public-key encrypted session key packet first), not the data.
    assert!(
        !enc.is_empty() && enc[0] & 0x80 != 0,
        "not OpenPGP: {:02x?}",
        &enc[..enc.len().min(4)]
    );
    assert!(
        !enc.windows(16).any(|w| w == &data[..16]),
        "the data shows through"
    );
    crypt::stop_gpg_agent(&home);
    let (dec, r) = run_ok(
        as_backup(FilterCommand::decrypt("/usr/sbin/amgpgcrypt", "-d")),
        &enc,
    );
    // amgpgcrypt exits 0 even when gpg fails, so the data is the only proof.
    assert_eq!(dec.len(), data.len(), "stderr: {:?}", r.stderr);
    assert_eq!(dec, data);
    crypt::stop_gpg_agent(&home);
}
