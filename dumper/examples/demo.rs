//! The README's main job (`sudo scripts/demo`), on one machine, in a minute: it creates a
//! sample tree, starts **our** amandad standalone on a free 127.0.0.1 port (auth bsdtcp),
//! writes an embedded default configuration (amanda.conf + disklist) into a temporary
//! directory, runs `dumper run` (a full), changes the tree and runs again (a level 1),
//! restores with `dumper restore` into a fresh directory, checks that the restored tree is
//! identical to the sample (names, types, modes, owners, sizes, mtimes, symlink targets,
//! contents; the deleted file must be gone), prints both reports, and cleans up.
//!
//! An example of the dumper crate, not a subcommand of the production binary (issue 11):
//! `cargo run --release -p dumper --example demo`, or `scripts/demo`, which builds the
//! release binaries first. It builds nothing itself: it drives the `dumper` and `amandad`
//! binaries of the same target directory (`--bindir`, by default the directory above the
//! one this example is in). It needs root, like a real server (reserved ports; our amandad
//! switches to the Amanda user `backup`). What it must not do: touch anything outside its
//! temporary directory and the loopback interface.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Back up a sample tree through our amandad on loopback, restore it, verify it.
#[derive(clap::Parser, Debug)]
#[command(name = "demo")]
struct DemoOptions {
    /// Keep the demo directory.
    #[arg(long)]
    keep: bool,
    /// Where the release binaries `dumper` and `amandad` are (default: the directory above
    /// this example's, i.e. target/release).
    #[arg(long, value_name = "DIR")]
    bindir: Option<PathBuf>,
    /// Our amandad (default: `amandad` in the bindir).
    #[arg(long)]
    amandad: Option<PathBuf>,
}

fn main() -> std::process::ExitCode {
    use clap::Parser;
    let o = DemoOptions::parse();
    match demo(&o) {
        Ok(0) => std::process::ExitCode::SUCCESS,
        Ok(_) => std::process::ExitCode::FAILURE,
        Err(e) => {
            eprintln!("demo: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

struct Cleanup {
    dir: PathBuf,
    child: Option<Child>,
    keep: bool,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Some(c) = &mut self.child {
            let _ = c.kill();
            let _ = c.wait();
        }
        if self.keep {
            eprintln!("demo: kept {}", self.dir.display());
        } else {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

fn step(s: &str) {
    println!("\n==> {s}");
}

fn free_port() -> anyhow::Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

fn make_tree(root: &Path) -> anyhow::Result<()> {
    fs::create_dir_all(root.join("docs/nested deeper"))?;
    fs::create_dir_all(root.join("empty dir"))?;
    fs::write(root.join("README.txt"), b"amanda-rs demo tree\n")?;
    fs::write(
        root.join("docs/notes with spaces.txt"),
        b"spaces in the name\n",
    )?;
    fs::write(
        root.join("docs/nested deeper/h\u{e9}llo.txt"),
        "UTF-8 name \u{2713}\n",
    )?;
    fs::write(
        root.join("to-be-deleted.txt"),
        b"this file is deleted before the level 1\n",
    )?;
    let numbers: String = (1..=50_000).map(|i| format!("{i}\n")).collect();
    fs::write(root.join("numbers.txt"), numbers)?;
    let random = testkit::Noise::new(testkit::Noise::SEED).low_bytes(4 * 1024 * 1024);
    fs::write(root.join("random.bin"), random)?;
    symlink("README.txt", root.join("link-to-readme"))?;
    // World-readable: the client reads as the Amanda user unless its tar helper is installed
    // setuid root; a read-only mode still shows that modes come back.
    fs::set_permissions(
        root.join("docs/notes with spaces.txt"),
        fs::Permissions::from_mode(0o444),
    )?;
    Ok(())
}

fn change_tree(root: &Path) -> anyhow::Result<()> {
    fs::remove_file(root.join("to-be-deleted.txt"))?;
    fs::write(
        root.join("added after the full.txt"),
        b"new in the level 1\n",
    )?;
    let mut f = fs::OpenOptions::new()
        .append(true)
        .open(root.join("README.txt"))?;
    writeln!(f, "changed after the full")?;
    Ok(())
}

type Manifest = BTreeMap<
    PathBuf,
    (
        char,
        u32,
        u32,
        u32,
        u64,
        i64,
        Option<PathBuf>,
        Option<Vec<u8>>,
    ),
>;

fn manifest(root: &Path) -> anyhow::Result<Manifest> {
    let mut out = BTreeMap::new();
    fn walk(root: &Path, dir: &Path, out: &mut Manifest) -> anyhow::Result<()> {
        let mut names: Vec<PathBuf> = fs::read_dir(dir)?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .collect();
        names.sort();
        for p in names {
            let md = fs::symlink_metadata(&p)?;
            let ft = md.file_type();
            let kind = if ft.is_dir() {
                'd'
            } else if ft.is_symlink() {
                'l'
            } else {
                'f'
            };
            let rel = p.strip_prefix(root)?.to_path_buf();
            out.insert(
                rel,
                (
                    kind,
                    md.mode() & 0o7777,
                    md.uid(),
                    md.gid(),
                    if kind == 'f' { md.size() } else { 0 },
                    if kind == 'd' { 0 } else { md.mtime() },
                    (kind == 'l').then(|| fs::read_link(&p)).transpose()?,
                    (kind == 'f').then(|| fs::read(&p)).transpose()?,
                ),
            );
            if kind == 'd' {
                walk(root, &p, out)?;
            }
        }
        Ok(())
    }
    walk(root, root, &mut out)?;
    Ok(out)
}

fn compare(a: &Path, b: &Path) -> anyhow::Result<Vec<String>> {
    let (ma, mb) = (manifest(a)?, manifest(b)?);
    let mut problems = Vec::new();
    for (p, ea) in &ma {
        match mb.get(p) {
            None => problems.push(format!("missing: {}", p.display())),
            Some(eb) if eb != ea => problems.push(format!("differs: {}", p.display())),
            _ => {}
        }
    }
    for p in mb.keys() {
        if !ma.contains_key(p) {
            problems.push(format!("extra: {}", p.display()));
        }
    }
    Ok(problems)
}

/// Runs the demo; returns the exit status.
fn demo(o: &DemoOptions) -> anyhow::Result<i32> {
    if !dumper::privs::is_root() {
        anyhow::bail!(
            "the demo needs root, like a real server: reserved source ports, and our amandad switches to the Amanda user (run it with sudo)"
        );
    }
    let bindir = match &o.bindir {
        Some(d) => d.clone(),
        None => {
            // target/release/examples/demo: the binaries are one directory up.
            let me = std::env::current_exe()?;
            me.parent()
                .and_then(Path::parent)
                .map(Path::to_path_buf)
                .ok_or_else(|| anyhow::anyhow!("cannot find the directory of {}", me.display()))?
        }
    };
    let dumper = bindir.join("dumper");
    let amandad = o.amandad.clone().unwrap_or_else(|| bindir.join("amandad"));
    for bin in [&dumper, &amandad] {
        if !bin.exists() {
            anyhow::bail!(
                "{} is missing: build the release binaries first (cargo build --release --workspace --bins)",
                bin.display()
            );
        }
    }
    let (uid, gid) = dumper::privs::lookup("backup")?;
    let dir = std::env::temp_dir().join(format!("dumper-demo-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir)?;
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o755))?;
    let mut guard = Cleanup {
        dir: dir.clone(),
        child: None,
        keep: o.keep,
    };
    let data = dir.join("data");
    let work = dir.join("work");
    let config = work.join("config");
    for d in [&config, &work.join("holding"), &work.join("state")] {
        fs::create_dir_all(d)?;
    }

    step(&format!("sample tree in {}", data.display()));
    make_tree(&data)?;
    let expected = dir.join("expected");

    let port = free_port()?;
    step(&format!("our amandad (auth bsdtcp) on 127.0.0.1:{port}"));
    let hosts = work.join("amandahosts");
    fs::write(
        &hosts,
        b"localhost backup amdump\n127.0.0.1 backup amdump\n",
    )?;
    fs::set_permissions(&hosts, fs::Permissions::from_mode(0o600))?;
    std::os::unix::fs::chown(&hosts, Some(uid), Some(gid))?;
    let log = work.join("amandad.log");
    let child = Command::new(&amandad)
        .args(["-auth=bsdtcp", "amdump", "--log"])
        .arg(&log)
        .arg("--listen")
        .arg(format!("tcp:127.0.0.1:{port}"))
        .env("AMANDA_RS_AMANDAHOSTS_PATH", &hosts)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    guard.child = Some(child);
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let t0 = Instant::now();
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        if t0.elapsed() > Duration::from_secs(10) {
            anyhow::bail!(
                "our amandad does not listen on {addr}; see {}",
                log.display()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }

    step(&format!(
        "embedded default configuration in {}",
        config.display()
    ));
    let w = work.display();
    let conf = format!(
        r#"# amanda-rs demo configuration (written by the demo, dumper/examples/demo.rs)
org "dumper-demo"
dumpuser "backup"
inparallel 2
netusage 1000000 Kbps
dumpcycle 7 days
etimeout 120
dtimeout 600
ctimeout 30
infofile "{w}/state/curinfo"
logdir "{w}/state/log"
indexdir "{w}/state/index"
define holdingdisk hd1 {{
    directory "{w}/holding"
    use 2048 mbytes
}}
holdingdisk "hd1"
define dumptype demo {{
    auth "bsdtcp"
    client_port "{port}"
    program "GNUTAR"
    compress none
    estimate client
    index yes
    record yes
    maxdumps 2
}}
"#
    );
    fs::write(config.join("amanda.conf"), conf)?;
    fs::write(
        config.join("disklist"),
        format!("localhost \"{}\" demo\n", data.display()),
    )?;
    let chown = |p: &Path| {
        Command::new("chown")
            .args(["-R", "backup:backup"])
            .arg(p)
            .status()
    };
    chown(&work)?;
    let conf_path = config.join("amanda.conf");
    let settings_env = [("AMANDA_RS_RUN_DIR", work.join("run"))];

    let run = |what: &str| -> anyhow::Result<i32> {
        step(&format!("dumper run ({what})"));
        let out = Command::new(&dumper)
            .arg("run")
            .arg(&conf_path)
            .args(["--progress", "plain"])
            .envs(settings_env.iter().cloned())
            .stdin(Stdio::null())
            .output()?;
        print!("{}", String::from_utf8_lossy(&out.stdout));
        let err = String::from_utf8_lossy(&out.stderr);
        if !err.trim().is_empty() {
            println!("--- progress (standard error) ---\n{}", err.trim_end());
        }
        Ok(out.status.code().unwrap_or(1))
    };
    let first = run("the first run: a full")?;
    if first != 0 {
        println!(
            "\ndemo: FAILED (dumper run exited {first}; amandad log {})",
            log.display()
        );
        guard.keep = true;
        return Ok(1);
    }
    step("changing the sample tree (a file deleted, one added, one changed)");
    std::thread::sleep(Duration::from_millis(1100));
    change_tree(&data)?;
    let second = run("the second run: level 1")?;
    if second != 0 {
        println!("\ndemo: FAILED (dumper run exited {second})");
        guard.keep = true;
        return Ok(1);
    }
    let _ = fs::remove_dir_all(&expected);

    let restored = dir.join("restored");
    step(&format!("dumper restore into {}", restored.display()));
    let out = Command::new(&dumper)
        .arg("restore")
        .arg(&conf_path)
        .args(["--host", "localhost", "--disk"])
        .arg(&data)
        .arg("--into")
        .arg(&restored)
        .output()?;
    print!("{}", String::from_utf8_lossy(&out.stdout));
    if !out.status.success() {
        println!(
            "\ndemo: FAILED (dumper restore: {})",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        guard.keep = true;
        return Ok(1);
    }

    step("comparing the restored tree with the sample tree");
    let problems = compare(&data, &restored)?;
    if problems.is_empty() {
        let n = manifest(&data)?.len();
        println!(
            "identical: {n} entries (names, types, modes, owners, sizes, mtimes, links, contents); the deleted file is gone"
        );
        println!("\ndemo: OK");
        Ok(0)
    } else {
        for p in &problems {
            println!("  {p}");
        }
        println!("\ndemo: FAILED ({} difference(s))", problems.len());
        guard.keep = true;
        Ok(1)
    }
}
