//! The dumper's holding files (issue 10): DLEs whose Amanda file names collide (`/x/a/b`,
//! `/x/a_b`, `/x/a:b` of one host) are all dumped, in parallel, on two nights, and restore
//! identically; and runs killed with SIGKILL at random points never leave a file that looks
//! complete but is not, while the next run adopts or sweeps what they left and says so.

use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::fs;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use proto::crc::Crc32c;
use proto::header::{DumpHeader, HEADER_SIZE};

use crate::require_root;
use crate::util::fake_amandad::{FakeAmandad, Script};
use crate::util::{self, Dt, DumperConf, Program, Scratch, disklist};

fn lock() -> std::sync::MutexGuard<'static, ()> {
    util::MACHINE_LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

fn fill(dir: &Path, tag: &str) {
    fs::create_dir_all(dir.join("sub")).expect("mkdir");
    fs::write(dir.join("which.txt"), format!("I am {tag}\n")).expect("write");
    fs::write(dir.join("sub/data.bin"), tag.repeat(5000)).expect("write");
}

// issue 10: in one night two of these three failed ("cannot create ...: Resource
// temporarily unavailable"); run one after the other, the second replaced the first's file.
// Once against the fake client running GNU tar with a state file per DLE, once against our
// amandad, which gives colliding disks their own incremental chains.
#[test]
fn dles_whose_names_sanitise_alike_are_all_dumped_and_restore_identically_on_two_nights() {
    require_root!();
    let _guard = lock();
    let data = Scratch::new("dn-data");
    let fake = FakeAmandad::start(
        HashMap::new(),
        Script::GnuTar {
            state: data.join("client-state"),
        },
    );
    colliding_names_two_nights(&data, "dn-names", fake.port);
}

/// The same with our amandad as the client (issue 10): its `gnutar_list_dir` state of the
/// three DLEs must not collide either.
#[test]
fn dles_whose_names_sanitise_alike_through_our_amandad_keep_their_own_incremental_state() {
    require_root!();
    let _guard = lock();
    let data = Scratch::new("dn-ours");
    let ours = util::start_ours("bsdtcp", util::Launch::Standalone);
    colliding_names_two_nights(&data, "dn-names-ours", ours.port);
}

fn colliding_names_two_nights(data: &Scratch, config: &str, port: u16) {
    let dles = [data.join("x/a/b"), data.join("x/a_b"), data.join("x/a:b")];
    for (i, d) in dles.iter().enumerate() {
        fill(d, &format!("dle {i}"));
    }
    let disklist = disklist("127.0.0.1", &dles, "gt");
    let conf = DumperConf::new(
        config,
        "inparallel 3",
        &[Dt {
            name: "gt",
            auth: "bsdtcp",
            port,
            program: Program::Gnutar,
            extra: "    maxdumps 3",
        }],
        &disklist,
    );
    for night in 0..2 {
        if night == 1 {
            for (i, d) in dles.iter().enumerate() {
                fs::write(d.join(format!("night-2-{i}.txt")), format!("new {i}\n")).expect("write");
            }
            std::thread::sleep(Duration::from_millis(1100));
        }
        let (status, out) = conf.run();
        assert!(
            status.success(),
            "night {night}: dumper run failed ({status}):\n{out}"
        );
        assert!(
            out.contains("its holding files are") && out.contains("~2.<level>"),
            "the report says which DLEs got suffixed names:\n{out}"
        );
        let (files, tmp) = conf.holding_files();
        assert!(tmp.is_empty(), "{tmp:?}");
        let level = format!(".{night}");
        let tonight: HashSet<&PathBuf> = files
            .iter()
            .filter(|f| f.to_string_lossy().ends_with(&level))
            .collect();
        assert_eq!(
            tonight.len(),
            3,
            "night {night}: three holding files: {files:?}\n{out}"
        );
        for (i, d) in dles.iter().enumerate() {
            let into = data.join(format!("restored-{night}-{i}"));
            let said = conf.restore("127.0.0.1", d, &into);
            if night == 1 {
                assert!(
                    said.contains("level 1"),
                    "the chain has the level 1: {said}"
                );
            }
            util::assert_same_tree(d, &into, night == 0);
        }
    }
}

/// The catalog's holding files of successful dumps.
fn recorded(conf: &DumperConf) -> HashSet<PathBuf> {
    let db = conf.work.join("state/curinfo.dumper.sqlite");
    let mut out = HashSet::new();
    if db.exists() {
        let c = rusqlite::Connection::open(&db).expect("open the catalog");
        let mut stmt = c
            .prepare("SELECT holding_file FROM dumps WHERE status IN ('done', 'strange')")
            .expect("query");
        let rows = stmt
            .query_map([], |r| {
                Ok(match r.get_ref(0)? {
                    rusqlite::types::ValueRef::Blob(b) | rusqlite::types::ValueRef::Text(b) => {
                        Some(PathBuf::from(OsStr::from_bytes(b)))
                    }
                    _ => None,
                })
            })
            .expect("rows");
        out.extend(rows.flatten().flatten());
    }
    // Files SQLite made as root go back to the Amanda user, who runs the dumper.
    util::chown_amanda(&conf.work.join("state"));
    out
}

/// Checks a file that looks complete (no `.tmp`), independently of the dumper's own check:
/// a dump-file header with a SERVER-CRC, and exactly that payload.
fn check_complete(path: &Path) -> Result<(), String> {
    let mut f = fs::File::open(path).map_err(|e| e.to_string())?;
    let mut bytes = Vec::new();
    f.read_to_end(&mut bytes).map_err(|e| e.to_string())?;
    if bytes.len() < HEADER_SIZE {
        return Err(format!("{} bytes", bytes.len()));
    }
    let h = DumpHeader::parse(&bytes[..HEADER_SIZE]).map_err(|e| e.to_string())?;
    let want = h.server_crc.ok_or("no SERVER-CRC in the header")?;
    let mut crc = Crc32c::new();
    crc.update(&bytes[HEADER_SIZE..]);
    if crc.value() != want {
        return Err(format!("payload {} but header {want}", crc.value()));
    }
    Ok(())
}

fn tmp_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "tmp") {
                out.push(p);
            }
        }
    }
    out
}

/// What a killed run left: (holding `.tmp`s, index `.tmp`s, finished files no row names).
fn leftovers(conf: &DumperConf) -> (usize, usize, Vec<PathBuf>) {
    let (files, tmp) = conf.holding_files();
    for f in &files {
        if let Err(e) = check_complete(f) {
            panic!("{} looks complete but is not: {e}", f.display());
        }
    }
    let known = recorded(conf);
    for f in &known {
        assert!(
            f.exists(),
            "the catalog names {} which is gone",
            f.display()
        );
    }
    let unrecorded = files.into_iter().filter(|f| !known.contains(f)).collect();
    (
        tmp.len(),
        tmp_files(&conf.work.join("state/index")).len(),
        unrecorded,
    )
}

// issue 10: a crash between the rename and the catalog update left a complete file that
// nothing adopted or swept.
#[test]
fn sigkill_at_random_points_never_leaves_a_false_complete_file_and_the_next_run_cleans_up() {
    require_root!();
    let _guard = lock();
    let seed: u64 = std::env::var("AMANDA_RS_KILL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
                | 1
        });
    eprintln!("kill test: seed {seed} (AMANDA_RS_KILL_SEED={seed} replays it)");
    let mut noise = util::Noise::new(seed);
    let mut rand = move |n: u64| noise.below(n);
    // A slow client (1 MiB in 32 frames, 15 ms apart) widens the window of each dump.
    let fake = FakeAmandad::start(
        HashMap::new(),
        Script::Good {
            bytes: 1 << 20,
            delay: Duration::from_millis(15),
        },
    );
    let conf = DumperConf::for_fake(
        "dk-kill",
        "inparallel 3",
        fake.port,
        3,
        &["/k1", "/k2", "/k3"],
    );
    let started = Instant::now();
    let (mut swept_tmp, mut swept_index, mut adopted, mut cleanups) = (0, 0, 0, 0);
    for i in 0..20 {
        let mut child = conf.spawn_run();
        // Mostly while the dumps run and end (they end about 0.6 s in).
        let after = Duration::from_millis(100 + rand(1000));
        std::thread::sleep(after);
        let pid = libc::pid_t::try_from(child.id()).expect("pid");
        // SAFETY: kill(2) of our own child (it may have exited already; then it is a zombie
        // until the wait below, and the signal does nothing).
        unsafe { libc::kill(pid, libc::SIGKILL) };
        let _ = child.wait();
        let (tmp, index_tmp, unrecorded) = leftovers(&conf);
        eprintln!(
            "kill {i} after {after:?}: {tmp} holding .tmp, {index_tmp} index .tmp, {} unrecorded complete file(s)",
            unrecorded.len()
        );
        if tmp == 0 && index_tmp == 0 && unrecorded.is_empty() {
            continue;
        }
        let (status, out) = conf.run();
        assert!(
            status.success(),
            "the run after kill {i} failed ({status}):\n{out}"
        );
        // The report of that run says what it cleaned up.
        if tmp > 0 {
            assert!(
                out.contains(&format!("removed {tmp} partial dump file(s)")),
                "{out}"
            );
        }
        if index_tmp > 0 {
            assert!(
                out.contains(&format!("removed {index_tmp} partial index file(s)")),
                "{out}"
            );
        }
        if !unrecorded.is_empty() {
            assert!(
                out.contains(&format!(
                    "adopted {} complete dump file(s)",
                    unrecorded.len()
                )),
                "{out}"
            );
        }
        let (t, it, u) = leftovers(&conf);
        assert!(
            t == 0 && it == 0 && u.is_empty(),
            "nothing is left after the clean-up run: {t} {it} {u:?}\n{out}"
        );
        swept_tmp += tmp;
        swept_index += index_tmp;
        adopted += unrecorded.len();
        cleanups += 1;
    }
    eprintln!(
        "kill test (seed {seed}): 20 kills in {:.1}s; {cleanups} clean-up runs removed {swept_tmp} partial holding file(s) and {swept_index} partial index file(s), adopted {adopted} complete unrecorded file(s)",
        started.elapsed().as_secs_f64()
    );

    // The narrowest window, made exactly: the files were renamed, the catalog still says
    // `running` (what a kill between the rename and the update leaves).
    let (status, out) = conf.run();
    assert!(status.success(), "{out}");
    let db = conf.work.join("state/curinfo.dumper.sqlite");
    let changed = rusqlite::Connection::open(&db)
        .and_then(|c| {
            c.execute(
                "UPDATE dumps SET status = 'running', holding_file = NULL, bytes = NULL
                 WHERE run_id = (SELECT MAX(id) FROM runs)",
                [],
            )
        })
        .expect("edit the catalog");
    util::chown_amanda(&conf.work.join("state"));
    assert_eq!(changed, 3);
    let (_, _, unrecorded) = leftovers(&conf);
    assert_eq!(unrecorded.len(), 3, "{unrecorded:?}");
    let (status, out) = conf.run();
    assert!(status.success(), "{out}");
    assert!(
        out.contains("adopted 3 complete dump file(s) an interrupted run had not recorded"),
        "{out}"
    );
    let (t, it, u) = leftovers(&conf);
    assert!(t == 0 && it == 0 && u.is_empty(), "{t} {it} {u:?}\n{out}");
}
