//! The taper (issue 15): `dumper run` writes its dumps to chg-disk vtapes in Amanda's
//! format with Amanda's catalog beside its own, so that the real Amanda 3.5.1 tools find
//! and restore them (`amadmin find`, `amfetchdump`, `amrecover` through the real
//! amindexd and amidxtaped); volumes are reused after `tapecycle` but never the one with
//! the only full of a DLE; a holding disk too small for the night and a slow taper lose
//! nothing and `dumper flush` finishes the job; volumes that are not ours, labels that do
//! not match `labelstr`, a full volume and a changer with no usable slot keep the dumps on
//! the holding disk, say why, and set amdump's tape bit (16).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::MutexGuard;
use std::time::Duration;

use crate::util::ours::OurAmandad;
use crate::util::vtapes::{VtOpts, VtapeConf, random_tree};
use crate::util::{self, Inetd, Launch, Scratch, start_ours};
use crate::{require_root, require_tool};

const TAPE_BIT: i32 = 16;

/// [`util::lock_amdump_machine`], with amrecover allowed to reach amindexd and amidxtaped.
fn lock() -> MutexGuard<'static, ()> {
    let g = util::lock_amdump_machine();
    util::ensure_amandahosts_line("localhost root amindexd amidxtaped");
    util::ensure_amandahosts_line("localhost backup amindexd amidxtaped");
    g
}

/// The start of the night tests: the machine lock, our amandad (bsdtcp, under inetd), and
/// a scratch directory `tp-<tag>-data` for the DLEs.
fn night(tag: &str) -> (MutexGuard<'static, ()>, OurAmandad, Scratch) {
    let g = lock();
    let ours = start_ours("bsdtcp", Launch::Inetd);
    (g, ours, Scratch::new(&format!("tp-{tag}-data")))
}

/// [`night`] with one DLE `d`, a [`random_tree`] of `files` files of `size` bytes from
/// `seed`, and the options of a changer for it.
fn one_dle_night(
    tag: &str,
    files: usize,
    size: usize,
    seed: u64,
) -> (
    MutexGuard<'static, ()>,
    OurAmandad,
    Scratch,
    PathBuf,
    VtOpts,
) {
    let (g, ours, data) = night(tag);
    let dle = data.join("d");
    random_tree(&dle, files, size, seed);
    let o = VtOpts::new("bsdtcp", ours.port, &[&dle]);
    (g, ours, data, dle, o)
}

/// The real amandad under inetd with the server-side restore services too (amrecover
/// talks to amindexd and amidxtaped through it).
fn real_amandad_with_restore_services(port: u16) -> Inetd {
    let line = format!(
        "127.0.0.1:{port}\tstream\ttcp\tnowait.1000\t{u}.{u}\t/usr/lib/amanda/amandad\tamandad -auth=bsdtcp amdump amindexd amidxtaped",
        u = util::AMANDA_USER
    );
    Inetd::start(&line, port)
}

/// A small DLE as vtape-run.sh makes it: alpha.txt, bravo.txt, sub/old.txt.
fn small_dle(root: &Path) {
    fs::create_dir_all(root.join("sub")).expect("mkdir");
    let alpha: String = (1..=100).map(|i| format!("alpha {i}\n")).collect();
    fs::write(root.join("alpha.txt"), alpha).expect("write");
    fs::write(root.join("bravo.txt"), "bravo\n").expect("write");
    fs::write(root.join("sub/old.txt"), "to be removed before night 2\n").expect("write");
    util::set_mtime(&root.join("alpha.txt"), 1_700_000_000);
}

fn change_for_night_2(root: &Path) {
    std::thread::sleep(Duration::from_millis(1100));
    fs::write(root.join("bravo.txt"), "bravo, changed for night 2\n").expect("write");
    fs::write(root.join("sub/new.txt"), "new in night 2\n").expect("write");
    fs::remove_file(root.join("sub/old.txt")).expect("rm");
}

/// Acceptance 1 (issue 15): two `dumper run`s (full, then level 1) with a chg-disk
/// changer; the real `amadmin find` lists both levels on their volumes (and `amreport`,
/// `amadmin info` read the trace log and curinfo), the real `amfetchdump` restores the
/// chain identical, and the real `amrecover` on the client,
/// through the real amindexd and amidxtaped, restores one file and one directory identical.
#[test]
fn two_nights_on_vtapes_are_found_and_restored_by_the_real_amanda_tools() {
    require_root!();
    require_tool!("/usr/lib/amanda/amandad");
    require_tool!("/usr/sbin/amrecover");
    require_tool!(util::INETD);
    let _g = lock();
    let port = util::free_port();
    let _amandad = real_amandad_with_restore_services(port);
    let data = Scratch::new("tp-real-data");
    let dle = data.join("dle");
    small_dle(&dle);
    let o = VtOpts::new("bsdtcp", port, &[&dle]);
    let c = VtapeConf::new("tp-real", &o, true);

    let (code, out) = c.run(&[]);
    assert_eq!(code, 0, "night 1:\n{out}");
    assert!(
        out.contains("TAPER: 1 dump(s) written to 1 volume(s)"),
        "{out}"
    );
    assert!(
        c.holding_files().is_empty(),
        "the holding file goes once taped"
    );
    change_for_night_2(&dle);
    let (code, out) = c.run(&[]);
    assert_eq!(code, 0, "night 2:\n{out}");
    let vols = c.volumes();
    let l1 = format!("{}-01", c.name);
    let l2 = format!("{}-02", c.name);
    assert_eq!(
        vols.values().cloned().collect::<Vec<_>>(),
        [l1.clone(), l2.clone()]
    );

    // amadmin find: both levels, on their volumes, OK.
    let (s, find) = c.amanda("amadmin", &[&c.name, "find"]);
    assert!(s.success(), "amadmin find: {find}");
    let row = |lv: &str, label: &str| {
        find.lines().any(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            w.len() >= 10
                && w[3] == dle.display().to_string()
                && w[4] == lv
                && w[7] == label
                && w[8] == "1"
                && w[9] == "1/1"
                && w.get(10) == Some(&"OK")
        })
    };
    assert!(row("0", &l1) && row("1", &l2), "amadmin find:\n{find}");

    // amreport reads tonight's trace log, amadmin info the curinfo.
    let report = c.work.join("amreport.txt");
    let (s, said) = c.amanda("amreport", &[&c.name, "-f", &report.display().to_string()]);
    let text = fs::read_to_string(&report).unwrap_or_default();
    assert!(
        s.success() && text.contains(&format!("These dumps were to tape {l2}.")),
        "amreport: {said}\n{text}"
    );
    let (s, info) = c.amanda("amadmin", &[&c.name, "info"]);
    assert!(
        s.success() && info.contains(&l1) && info.contains(&l2),
        "amadmin info:\n{info}"
    );

    // amfetchdump: the chain, level 0 then level 1, identical to the tree.
    let into = data.join("fetched");
    fs::create_dir_all(&into).expect("mkdir");
    for level in [0, 1] {
        util::extract_tar(&c.fetch(&dle, level), &into);
    }
    util::assert_same_tree(&dle, &into, false);

    // amrecover on the client: one file (only in the full, on volume 01) and one
    // directory (in both levels).
    let rec = data.join("amrecover");
    fs::create_dir_all(&rec).expect("mkdir");
    let script = format!(
        "sethost localhost\nsetdisk {}\nhistory\nadd alpha.txt\nadd sub\nlist\nextract\nY\nY\nY\nY\nY\nY\nquit\n",
        dle.display()
    );
    // amrecover reads its commands from a file, as from a pipe.
    let script_file = data.join("amrecover.in");
    fs::write(&script_file, script).expect("write");
    let mut cmd = Command::new("bash");
    cmd.arg("-c")
        .arg(r#"exec amrecover "$@" < "$IN""#)
        .arg("amrecover")
        .args(["-C", &c.name, "-s", "localhost", "-t", "localhost"])
        .args(["-o", "auth=bsdtcp", "-o", &format!("client_port={port}")])
        .env("IN", &script_file)
        .current_dir(&rec);
    let (_, said) = util::run_with_timeout(&mut cmd, Duration::from_secs(240));
    assert!(
        said.contains(&l1) && said.contains(&l2),
        "amrecover:\n{said}"
    );
    let same = |rel: &str| {
        let a = fs::read(dle.join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"));
        let b = fs::read(rec.join(rel))
            .unwrap_or_else(|e| panic!("amrecover did not restore {rel} ({e}):\n{said}"));
        assert_eq!(a, b, "{rel} differs");
    };
    same("alpha.txt");
    util::assert_same_tree(&dle.join("sub"), &rec.join("sub"), false);
    assert!(!rec.join("bravo.txt").exists(), "only what was added");
}

/// Acceptance 2 (issue 15): tapecycle 3 over 6 nights with 4 slots. One DLE gets a full
/// only on night 1 (dumpcycle 7 days), the other every night (dumpcycle 0): the oldest
/// volume that may be reused is reused, and volume 01, which holds the only full of the
/// first DLE, never is; the report names what was overwritten and why 01 was kept.
#[test]
fn tapecycle_3_over_6_nights_reuses_the_oldest_volume_but_never_the_only_full() {
    require_root!();
    let (_g, ours, data) = night("cycle");
    let (a, b) = (data.join("a"), data.join("b"));
    random_tree(&a, 3, 20_000, 1);
    random_tree(&b, 3, 20_000, 2);
    let mut o = VtOpts::new("bsdtcp", ours.port, &[&a]);
    o.slots = 4;
    o.dumptypes = "define dumptype vt-daily-full {\n    vt\n    dumpcycle 0\n}\n".into();
    o.dles
        .push(("localhost".into(), b.clone(), "vt-daily-full".into()));
    let c = VtapeConf::new("tp-cycle", &o, false);
    let label = |n: u32| format!("{}-{n:02}", c.name);
    let mut written = Vec::new();
    let mut reports = Vec::new();
    for night in 1..=6 {
        fs::write(a.join("night.txt"), format!("night {night}\n")).expect("write");
        std::thread::sleep(Duration::from_millis(1100));
        let (code, out) = c.run(&[]);
        assert_eq!(code, 0, "night {night}:\n{out}\n{}", ours.log());
        let vol = out
            .lines()
            .find_map(|l| {
                l.trim()
                    .strip_prefix("TAPER: 2 dump(s) written to 1 volume(s)")
            })
            .and_then(|l| l.split("volumes: ").nth(1))
            .unwrap_or_else(|| panic!("night {night} taped both DLEs to one volume:\n{out}"))
            .trim()
            .to_owned();
        written.push(vol);
        reports.push(out);
    }
    let want: Vec<String> = [1, 2, 3, 4, 2, 3].iter().map(|&n| label(n)).collect();
    assert_eq!(written, want, "volumes per night");
    let n5 = &reports[4];
    assert!(
        n5.contains(&format!("volume {} (slot 2", label(2)))
            && n5.contains("reused: overwritten localhost:")
            && n5.contains(&format!("{} level 1 of", a.display())),
        "night 5 names what it overwrote:\n{n5}"
    );
    assert!(
        n5.contains(&format!("volume {} (written", label(1)))
            && n5.contains("is kept: it holds the only full dump of localhost:"),
        "night 5 says why 01 was kept:\n{n5}"
    );
    // The full of `a` is still on volume 01, and the chain restores from the volumes. (Its
    // file number there depends on which of night 1's two dumps ended first.)
    let into = data.join("restored-a");
    let said = c.restore(&a, &into);
    // Its file number on the volume depends on which of the night's two dumps was taped
    // first.
    let full = format!("from volume {}:", label(1));
    assert!(
        said.lines()
            .any(|l| l.contains("level 0 of") && l.contains(&full)),
        "{said}"
    );
    util::assert_same_tree(&a, &into, false);
}

/// Acceptance 3 (issue 15): a holding disk that holds two of the night's four dumps and a
/// taper slower than the dumps: the dumps wait for holding space instead of failing, the
/// volume fills after two, the other two stay on the holding disk (tape bit), nothing is
/// lost, and `dumper flush` writes them to the next volume; every DLE then restores from
/// the volumes.
#[test]
fn a_small_holding_disk_and_a_slow_taper_lose_nothing_and_flush_finishes_the_job() {
    require_root!();
    let (_g, ours, data) = night("small");
    let dles: Vec<PathBuf> = (0..4).map(|i| data.join(format!("d{i}"))).collect();
    for (i, d) in dles.iter().enumerate() {
        random_tree(d, 1, 1024 * 1024, 10 + i as u64);
    }
    let refs: Vec<&Path> = dles.iter().map(PathBuf::as_path).collect();
    let mut o = VtOpts::new("bsdtcp", ours.port, &refs);
    o.holding_use_kb = 2600;
    o.length_kb = 3 * 1024;
    o.slots = 2;
    let c = VtapeConf::new("tp-small", &o, false);
    let slow = [("AMANDA_RS_TAPER__RATE_LIMIT_KIBPS", "2048")];
    let (code, out) = c.run(&slow);
    assert_eq!(code, TAPE_BIT, "only the tape bit:\n{out}\n{}", ours.log());
    assert!(
        out.contains("DLEs dumped                 4"),
        "every DLE dumped:\n{out}"
    );
    assert!(
        out.contains("waited") && out.contains("waiting for the taper to free space"),
        "dumps waited for holding space:\n{out}"
    );
    assert!(
        out.contains("TAPER: 2 dump(s) written to 1 volume(s)")
            && out.contains("2 left on the holding disk")
            && out.contains("not taped, kept on the holding disk")
            && out.contains("runtapes 1"),
        "{out}"
    );
    assert_eq!(c.holding_files().len(), 2);

    let (s, out) = c.dumper("flush", &[], &[]);
    assert_eq!(s.code(), Some(0), "dumper flush:\n{out}");
    assert!(
        out.contains("TAPER: 2 dump(s) written to 1 volume(s)"),
        "{out}"
    );
    assert!(
        c.holding_files().is_empty(),
        "flushed: {:?}",
        c.holding_files()
    );
    assert_eq!(c.volumes().len(), 2);
    for d in &dles {
        let into = data.join(format!("r-{}", d.file_name().unwrap().to_string_lossy()));
        let said = c.restore(d, &into);
        assert!(said.contains("from volume"), "{said}");
        util::assert_same_tree(d, &into, false);
    }
    let (s, out) = c.dumper("flush", &[], &[]);
    assert!(s.success() && out.contains("Nothing to flush"), "{out}");
}

/// Item 4 (issue 15): what the taper cannot use keeps the night's dumps on the holding
/// disk, the report says why, and the exit status has amdump's tape bit; a flush after the
/// admin fixed it writes them all.
#[test]
fn bad_volumes_keep_the_dumps_on_holding_say_why_and_set_the_tape_bit() {
    require_root!();
    let (_g, ours, data, dle, mut o) = one_dle_night("bad", 2, 30_000, 7);
    o.slots = 1;
    let c = VtapeConf::new("tp-bad", &o, false);
    let slot1 = c.work.join("vtapes/slot1");
    let mut kept = 0;
    let mut night = |why: &str, c: &VtapeConf| {
        fs::write(dle.join("stamp"), why).expect("write");
        std::thread::sleep(Duration::from_millis(1100));
        let (code, out) = c.run(&[]);
        assert_eq!(
            code,
            TAPE_BIT,
            "{why}: only the tape bit:\n{out}\n{}",
            ours.log()
        );
        assert!(out.contains(why), "the report says {why:?}:\n{out}");
        assert!(out.contains("kept on the holding disk"), "{out}");
        kept += 1;
        assert_eq!(
            c.holding_files().len(),
            kept,
            "{why}: the dump stays on holding"
        );
    };

    // A slot holding something that is not an Amanda volume.
    fs::create_dir_all(&slot1).expect("mkdir");
    fs::write(slot1.join("notes.txt"), "not a vtape").expect("write");
    util::chown_amanda(&slot1);
    let (st, said) = c.dumper("check", &["--server-only"], &[]);
    assert!(
        !st.success() && said.contains("taper: changer vtl") && said.contains("is not ours"),
        "dumper check says why before the night:\n{said}"
    );
    night("is not ours", &c);
    assert_eq!(
        fs::read(slot1.join("notes.txt")).unwrap(),
        b"not a vtape",
        "untouched"
    );

    // An Amanda volume whose label does not match labelstr.
    fs::remove_file(slot1.join("notes.txt")).expect("rm");
    let mut label = b"AMANDA: TAPESTART DATE 20200101000000 TAPE other-01\n\x0c\n".to_vec();
    label.resize(32768, 0);
    fs::write(slot1.join("00000.other-01"), &label).expect("write");
    util::chown_amanda(&slot1);
    night("which does not match labelstr", &c);

    // A volume too small for the dump.
    fs::remove_file(slot1.join("00000.other-01")).expect("rm");
    let mut small = o.clone();
    small.length_kb = 64;
    c.write(&small);
    night("is larger than a volume", &c);

    // A changer with no slot at all.
    c.write(&VtOpts {
        slots: 0,
        ..o.clone()
    });
    fs::remove_dir_all(c.work.join("vtapes")).expect("rm");
    fs::create_dir_all(c.work.join("vtapes")).expect("mkdir");
    util::chown_amanda(&c.work.join("vtapes"));
    night("the changer has no slot", &c);

    // Fixed: one usable slot; the flush writes the four dumps.
    c.write(&o);
    let (st, said) = c.dumper("check", &["--server-only"], &[]);
    assert!(
        st.success() && said.contains("the next volume is a new volume"),
        "dumper check:\n{said}"
    );
    let (s, out) = c.dumper("flush", &[], &[]);
    assert_eq!(s.code(), Some(0), "dumper flush:\n{out}");
    assert!(
        out.contains("TAPER: 4 dump(s) written to 1 volume(s)"),
        "{out}"
    );
    assert!(c.holding_files().is_empty());
    let into = data.join("restored");
    c.restore(&dle, &into);
    util::assert_same_tree(&dle, &into, false);
}

/// Item 1 (issue 15): a single vfs device (`tapedev "file:DIR"`, no changer) takes the
/// night; the second night reuses it (tapecycle 1) only because a newer full sits on it.
#[test]
fn a_single_file_device_takes_the_night_and_is_reused_after_tapecycle() {
    require_root!();
    let (_g, ours, data, dle, mut o) = one_dle_night("single", 2, 40_000, 3);
    o.single = true;
    o.tapecycle = 1;
    o.dumptypes = "define dumptype vt-full {\n    vt\n    dumpcycle 0\n}\n".into();
    o.dles[0].2 = "vt-full".into();
    let c = VtapeConf::new("tp-single", &o, false);
    let dev = c.work.join("vtapes/single");
    for night in 1..=2 {
        std::thread::sleep(Duration::from_millis(1100));
        let (code, out) = c.run(&[]);
        assert_eq!(code, 0, "night {night}:\n{out}\n{}", ours.log());
        assert!(
            out.contains("TAPER: 1 dump(s) written to 1 volume(s)"),
            "{out}"
        );
        let files: Vec<String> = fs::read_dir(&dev)
            .expect("device")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(files.len(), 2, "label and one dump: {files:?}");
        if night == 2 {
            assert!(out.contains("reused: overwritten localhost:"), "{out}");
        }
    }
    let into = data.join("restored");
    assert!(c.restore(&dle, &into).contains("from volume"));
    util::assert_same_tree(&dle, &into, false);
}

/// Item 1 (issue 15): `part-size` splits a dump into parts, a volume that fills mid-dump
/// is followed by the next one (`runtapes 3`), and the real amfetchdump reassembles the
/// parts from three volumes into the dump, identical.
#[test]
fn a_dump_split_in_parts_across_volumes_is_restored_by_the_real_amfetchdump() {
    require_root!();
    require_tool!("/usr/sbin/amfetchdump");
    let (_g, ours, data, dle, mut o) = one_dle_night("parts", 3, 100_000, 5);
    o.part_size_kb = 64;
    o.length_kb = 256;
    o.runtapes = 3;
    o.slots = 3;
    let c = VtapeConf::new("tp-parts", &o, true);
    let (code, out) = c.run(&[]);
    assert_eq!(code, 0, "{out}\n{}", ours.log());
    assert!(
        out.contains("TAPER: 1 dump(s) written to 3 volume(s)"),
        "{out}"
    );
    let log = fs::read_dir(c.work.join("state/log"))
        .expect("logdir")
        .flatten()
        .find(|e| e.file_name().to_string_lossy().starts_with("log.2"))
        .map(|e| fs::read_to_string(e.path()).expect("log"))
        .expect("a trace log");
    let parts = log.lines().filter(|l| l.starts_with("PART taper")).count();
    assert_eq!(parts, 5, "{log}");
    assert!(log.contains(" 5 0 "), "DONE taper says 5 parts: {log}");
    let into = data.join("fetched");
    fs::create_dir_all(&into).expect("mkdir");
    util::extract_tar(&c.fetch(&dle, 0), &into);
    util::assert_same_tree(&dle, &into, false);
    let mine = data.join("restored");
    c.restore(&dle, &mine);
    util::assert_same_tree(&dle, &mine, false);
}
