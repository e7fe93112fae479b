//! Running things: the workspace's binaries (built on first use), commands that must
//! succeed, commands with a time limit.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

/// A binary of the workspace (amandad, amandad-runtar, dumper, portpool), built for the
/// integration tests in the same profile and target directory.
pub fn workspace_bin(name: &str) -> PathBuf {
    static BUILD: std::sync::Once = std::sync::Once::new();
    // tests run from target/<profile>/deps/integration-*; the binaries sit in target/<profile>.
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>")
        .to_path_buf();
    BUILD.call_once(|| {
        // A test package cannot depend on another package's binaries, so build them here
        // (a no-op when they are up to date).
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let release = dir.file_name().is_some_and(|n| n == "release");
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "--quiet", "--workspace", "--bins"])
            .current_dir(env!("CARGO_MANIFEST_DIR"));
        if release {
            cmd.arg("--release");
        }
        if let Some(target) = dir.parent() {
            cmd.env("CARGO_TARGET_DIR", target);
        }
        let status = cmd.status().expect("run cargo build");
        assert!(status.success(), "cargo build --bins failed");
    });
    dir.join(name)
}

/// Runs a command, panicking with its output if it fails.
pub fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Runs `cmd`, killing it after `limit`. Returns its status and combined output.
pub fn run_with_timeout(cmd: &mut Command, limit: Duration) -> (ExitStatus, String) {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    let mut stdout = child.stdout.take().expect("stdout");
    let mut stderr = child.stderr.take().expect("stderr");
    let out_thread = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = stdout.read_to_end(&mut s);
        s
    });
    let err_thread = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = stderr.read_to_end(&mut s);
        s
    });
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let status = child.wait().expect("wait");
            let mut text =
                String::from_utf8_lossy(&out_thread.join().unwrap_or_default()).into_owned();
            text.push_str(&String::from_utf8_lossy(
                &err_thread.join().unwrap_or_default(),
            ));
            panic!("{cmd:?} did not finish within {limit:?} ({status}); output:\n{text}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut text = String::from_utf8_lossy(&out_thread.join().unwrap_or_default()).into_owned();
    text.push_str(&String::from_utf8_lossy(
        &err_thread.join().unwrap_or_default(),
    ));
    (status, text)
}
