//! `amandad-runtar` against the Amanda user (issue 10): the helper installed setuid
//! root:backup 4750 in a scratch directory, real GNU tar behind it, and every command line run
//! as `backup` (with its groups, through runuser). Each attack vector must get the helper's
//! refusal line and must neither run a command nor create a file as root; the command lines
//! amandad really generates must still archive what only root can read.

use std::collections::BTreeSet;
use std::ffi::{OsStr, OsString};
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use amandad::tar::exinclude::{self, ListPlace};
use amandad::tar::gnutar::{AmgtarProps, Form, Mode, TarSetup};
use proto::dle::FileList;

use crate::util::{self, AMANDA_USER, RuntarInstall, Scratch};
use crate::{require_root, require_tool};

const TAR: &str = "/usr/bin/tar";
/// The helper's built-in list directory (this machine's amanda-security.conf names none).
const LIST_DIR: &str = "/var/lib/amanda/gnutar-lists";
const REFUSAL: &str = "amandad-runtar: error [";

/// What a helper run did.
struct Run {
    status: ExitStatus,
    stdout: Vec<u8>,
    stderr: String,
}

/// The names in a tar archive.
fn members(archive: &[u8]) -> Vec<String> {
    let out = util::pipe_through(
        Command::new(TAR)
            .args(["--list", "--file=-"])
            .stderr(Stdio::null()),
        archive,
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

fn chown_to(path: &Path, user: &str) {
    util::run_ok(
        Command::new("chown")
            .arg(format!("{user}:{user}"))
            .arg(path),
    );
}

/// The scratch world of the attacks: the helper copy, a tree with a file only root can
/// read, list files of the Amanda user's, and a marker path every payload aims at.
struct Lab {
    runtar: RuntarInstall,
    dir: Scratch,
    /// Owned by the Amanda user: its list files, FIFO, device node, symlink.
    own: PathBuf,
    tree: PathBuf,
    marker: PathBuf,
    /// A snapshot of the Amanda user's in the list directory, removed on drop.
    snapshot: PathBuf,
}

/// Checks what every test here needs (root, tar, runuser; returning from the test like the
/// `require_*` macros when one is missing), then makes a fresh [`Lab`].
macro_rules! lab {
    () => {{
        require_root!();
        require_tool!(TAR);
        require_tool!("/usr/sbin/runuser");
        Lab::new()
    }};
}

impl Lab {
    fn new() -> Lab {
        let runtar = util::install_runtar();
        let dir = Scratch::new("runtar-attacks");
        let own = dir.join("own");
        fs::create_dir(&own).expect("mkdir own");
        let tree = dir.join("tree");
        fs::create_dir_all(tree.join("sub")).expect("mkdir tree");
        fs::write(tree.join("a.c"), b"int a;\n").expect("write");
        fs::write(tree.join("b.o"), b"obj").expect("write");
        fs::write(tree.join("sub/x"), b"x").expect("write");
        fs::write(tree.join("secret"), b"root only\n").expect("write");
        fs::set_permissions(tree.join("secret"), fs::Permissions::from_mode(0o600)).expect("chmod");
        // the payloads' targets
        let marker = dir.join("pwned");
        let script = own.join("evil.sh");
        fs::write(&script, format!("#!/bin/sh\nid > {}\n", marker.display())).expect("script");
        fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).expect("chmod");
        let list = own.join("options.list");
        fs::write(
            &list,
            format!(
                "--directory=/etc\n--exclude-vcs-ignores\n-I touch {m}\n--checkpoint-action=exec=touch {m}\nhostname\n./a.c\n",
                m = marker.display()
            ),
        )
        .expect("list");
        fs::write(own.join("snap"), b"").expect("snap");
        fs::write(own.join("unreadable.list"), b"./a.c\n").expect("write");
        fs::set_permissions(
            own.join("unreadable.list"),
            fs::Permissions::from_mode(0o000),
        )
        .expect("chmod");
        nix_mkfifo(&own.join("fifo"));
        // a character device like /dev/null, owned by the Amanda user
        util::run_ok(
            Command::new("mknod")
                .arg(own.join("dev"))
                .args(["c", "1", "3"]),
        );
        symlink("/etc/shadow", own.join("link")).expect("symlink");
        util::chown_amanda(&own);
        // a list the Amanda user cannot read (root's, 0600)
        fs::write(dir.join("secret.list"), b"./a.c\n").expect("write");
        fs::set_permissions(dir.join("secret.list"), fs::Permissions::from_mode(0o600))
            .expect("chmod");
        // One name per lab: the tests of this module run at once in one process, and a
        // shared name let one lab's drop remove another's snapshot, which the next write
        // then made again as root.
        static LABS: AtomicU64 = AtomicU64::new(0);
        let snapshot = Path::new(LIST_DIR).join(format!(
            "runtar-attacks-{}-{}_0.new",
            std::process::id(),
            LABS.fetch_add(1, Ordering::Relaxed)
        ));
        fs::write(&snapshot, b"").expect("snapshot");
        chown_to(&snapshot, AMANDA_USER);
        Lab {
            runtar,
            dir,
            own,
            tree,
            marker,
            snapshot,
        }
    }

    fn helper(&self) -> &Path {
        self.runtar.path()
    }

    /// Runs the helper as `user` (runuser: the user's own groups), with exactly `env`; killed
    /// after 30 s (a helper that opens a FIFO would block forever).
    fn run_as(&self, user: &str, env: &[(String, String)], args: &[OsString]) -> Run {
        let mut cmd = Command::new("runuser");
        cmd.args(["-u", user, "--", "/usr/bin/env", "-i"]);
        for (k, v) in env {
            cmd.arg(format!("{k}={v}"));
        }
        cmd.arg(self.helper()).args(args).process_group(0);
        // runuser forks: on a timeout the whole group goes, tar included.
        let (status, stdout, stderr) = util::output_within(&mut cmd, Duration::from_secs(30));
        Run {
            status,
            stdout,
            stderr: String::from_utf8_lossy(&stderr).into_owned(),
        }
    }

    fn p(&self, rel: &str) -> String {
        self.dir.join(rel).display().to_string()
    }

    fn own(&self, rel: &str) -> String {
        self.own.join(rel).display().to_string()
    }

    /// Files owned by root below the lab and in the list directory.
    fn root_files(&self) -> BTreeSet<PathBuf> {
        let mut out = BTreeSet::new();
        let mut stack = vec![self.dir.path().to_path_buf(), PathBuf::from(LIST_DIR)];
        while let Some(d) = stack.pop() {
            let Ok(rd) = fs::read_dir(&d) else { continue };
            for e in rd.filter_map(Result::ok) {
                let p = e.path();
                let Ok(md) = fs::symlink_metadata(&p) else {
                    continue;
                };
                if md.uid() == 0 {
                    out.insert(p.clone());
                }
                if md.is_dir() && d != Path::new(LIST_DIR) {
                    stack.push(p);
                }
            }
        }
        out
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.snapshot);
    }
}

fn nix_mkfifo(path: &Path) {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).expect("path");
    // SAFETY: `c` is a valid C string.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo");
}

/// One attack: the helper's arguments (tar path first), extra environment, and the text
/// its refusal must contain.
struct Vector {
    name: &'static str,
    args: Vec<OsString>,
    env: Vec<(String, String)>,
    refusal: String,
}

fn vector(name: &'static str, args: &[&str], refusal: &str) -> Vector {
    Vector {
        name,
        args: args.iter().map(OsString::from).collect(),
        env: Vec::new(),
        refusal: refusal.to_owned(),
    }
}

fn vectors(lab: &Lab) -> Vec<Vector> {
    let m = lab.marker.display().to_string();
    let sh = format!("sh -c 'id > {m}'");
    let touch = format!("touch {m}");
    let evil = lab.own("evil.sh");
    let list = format!("--files-from={}", lab.own("options.list"));
    let tree = format!("--directory={}", lab.tree.display());
    let first_not_create = "the first tar argument must be --create";
    let mut v = vec![
        // the exact exploit of the issue: `I` is --use-compress-program, run through sh -c
        vector(
            "cluster_first_the_exploit",
            &[
                TAR,
                "I",
                &format!("id > {m}; cat >/dev/null"),
                "--create",
                "--file",
                "/dev/null",
                "--directory",
                "/etc",
                "hostname",
            ],
            first_not_create,
        ),
        vector(
            "cluster_cIf",
            &[TAR, "cIf", &touch, "/dev/null", "."],
            first_not_create,
        ),
        vector(
            "operand_first",
            &[
                TAR,
                "hostname",
                "--create",
                "--file=/dev/null",
                "--directory=/etc",
            ],
            first_not_create,
        ),
        vector(
            "short_I",
            &[
                TAR,
                "--create",
                "-I",
                &touch,
                "--file=/dev/null",
                "--directory=/etc",
                "hostname",
            ],
            "short option \"-I\" refused",
        ),
        vector(
            "short_I_attached",
            &[
                TAR,
                "--create",
                &format!("-I{touch}"),
                "--file=/dev/null",
                "--directory=/etc",
                "hostname",
            ],
            "short option",
        ),
        vector(
            "use_compress_program",
            &[
                TAR,
                "--create",
                &format!("--use-compress-program={sh}"),
                "--file=-",
                &tree,
                ".",
            ],
            "option \"--use-compress-program\" refused",
        ),
        vector(
            "to_command",
            &[
                TAR,
                "--create",
                "--file=-",
                &format!("--to-command={sh}"),
                &tree,
                ".",
            ],
            "option \"--to-command\" refused",
        ),
        vector(
            "checkpoint_action_exec",
            &[
                TAR,
                "--create",
                "--file=/dev/null",
                "--checkpoint=1",
                &format!("--checkpoint-action=exec={touch}"),
                &tree,
                ".",
            ],
            "option \"--checkpoint\" refused",
        ),
        vector(
            "info_script",
            &[
                TAR,
                "--create",
                "--file=/dev/null",
                &format!("--info-script={evil}"),
                "--multi-volume",
                "--tape-length=1",
                &tree,
                ".",
            ],
            "option \"--info-script\" refused",
        ),
        vector(
            "new_volume_script",
            &[
                TAR,
                "--create",
                "--file=/dev/null",
                &format!("--new-volume-script={evil}"),
                &tree,
                ".",
            ],
            "option \"--new-volume-script\" refused",
        ),
        vector(
            "rsh_command_remote_archive",
            &[
                TAR,
                "--create",
                &format!("--rsh-command={evil}"),
                "--file=localhost:/x",
                &tree,
                ".",
            ],
            "option \"--rsh-command\" refused",
        ),
        vector(
            "remote_archive",
            &[TAR, "--create", "--file=localhost:/x", &tree, "."],
            "the archive must be - or /dev/null",
        ),
        vector(
            "file_new_path",
            &[
                TAR,
                "--create",
                &format!("--file={}", lab.p("new.tar")),
                &tree,
                ".",
            ],
            "the archive must be - or /dev/null",
        ),
        vector(
            "second_file",
            &[
                TAR,
                "--create",
                "--file=-",
                &format!("--file={}", lab.p("new.tar")),
                &tree,
                ".",
            ],
            "the archive must be - or /dev/null",
        ),
        vector(
            "index_file",
            &[
                TAR,
                "--create",
                "--file=-",
                &format!("--index-file={}", lab.p("index")),
                &tree,
                ".",
            ],
            "option \"--index-file\" refused",
        ),
        vector(
            "volno_file",
            &[
                TAR,
                "--create",
                "--file=-",
                &format!("--volno-file={}", lab.p("volno")),
                &tree,
                ".",
            ],
            "option \"--volno-file\" refused",
        ),
        vector(
            "listed_incremental_new_file_in_list_dir",
            &[
                TAR,
                "--create",
                "--file=/dev/null",
                &format!(
                    "--listed-incremental={LIST_DIR}/runtar-attacks-{}-new",
                    std::process::id()
                ),
                &tree,
                ".",
            ],
            "can not open it: No such file or directory",
        ),
        vector(
            "listed_incremental_outside_list_dir",
            &[
                TAR,
                "--create",
                "--file=/dev/null",
                &format!("--listed-incremental={}", lab.own("snap")),
                &tree,
                ".",
            ],
            "not directly inside an allowed gnutar_list_dir",
        ),
        vector(
            "transform_e_flag",
            &[
                TAR,
                "--create",
                "--file=-",
                &format!("--transform=s|a|{touch}|e"),
                &tree,
                ".",
            ],
            "unknown transform flag 'e'",
        ),
        vector(
            "transform_e_in_second_expression",
            &[
                TAR,
                "--create",
                "--file=-",
                &format!("--transform=s/x/y/;s|a|{touch}|e"),
                &tree,
                ".",
            ],
            "unknown transform flag 'e'",
        ),
        vector(
            "list_with_option_lines",
            &[TAR, "--create", "--file=-", &tree, &list],
            "--files-from needs --verbatim-files-from before it",
        ),
        vector(
            "verbatim_after_the_list",
            &[
                TAR,
                "--create",
                "--file=-",
                &tree,
                &list,
                "--verbatim-files-from",
            ],
            "--files-from needs --verbatim-files-from before it",
        ),
        vector(
            "no_null_undoes_verbatim",
            &[
                TAR,
                "--create",
                "--file=-",
                &tree,
                "--verbatim-files-from",
                "--no-null",
                &list,
            ],
            "option \"--no-null\" refused",
        ),
        vector(
            "no_verbatim_files_from",
            &[
                TAR,
                "--create",
                "--file=-",
                &tree,
                "--verbatim-files-from",
                "--no-verbatim-files-from",
                &list,
            ],
            "option \"--no-verbatim-files-from\" refused",
        ),
        vector(
            "abbreviation_to_com",
            &[
                TAR,
                "--create",
                "--file=-",
                &format!("--to-com={sh}"),
                &tree,
                ".",
            ],
            "option \"--to-com\" refused",
        ),
        vector(
            "abbreviation_use",
            &[
                TAR,
                "--create",
                &format!("--use={touch}"),
                "--file=/dev/null",
                &tree,
                ".",
            ],
            "option \"--use\" refused",
        ),
        vector(
            "separate_value",
            &[
                TAR,
                "--create",
                "--directory",
                "/etc",
                "--file",
                "/dev/null",
                "hostname",
            ],
            "option --directory must be written --directory=VALUE",
        ),
        vector(
            "optional_value_then_short",
            &[
                TAR,
                "--create",
                "--file=/dev/null",
                "--atime-preserve",
                &format!("-I{touch}"),
                &tree,
                ".",
            ],
            "short option",
        ),
        vector(
            "option_after_operand",
            &[
                TAR,
                "--create",
                "--file=/dev/null",
                "--directory=/etc",
                "hostname",
                &format!("--use-compress-program={touch}"),
            ],
            "after an operand refused",
        ),
        vector(
            "dashdash_then_option",
            &[
                TAR,
                "--create",
                "--file=/dev/null",
                &tree,
                "--",
                &format!("-I{touch}"),
            ],
            "starts with -",
        ),
        vector(
            "symlinked_list",
            &[
                TAR,
                "--create",
                "--file=-",
                &tree,
                &format!("--exclude-from={}", lab.own("link")),
                ".",
            ],
            "is a symbolic link",
        ),
        vector(
            "fifo_list",
            &[
                TAR,
                "--create",
                "--file=-",
                &tree,
                "--verbatim-files-from",
                &format!("--files-from={}", lab.own("fifo")),
            ],
            "not a regular file",
        ),
        vector(
            "device_list",
            &[
                TAR,
                "--create",
                "--file=-",
                &tree,
                &format!("--exclude-from={}", lab.own("dev")),
            ],
            "not a regular file",
        ),
        // the Amanda user's own list, mode 0: root could read it, its owner cannot
        vector(
            "unreadable_list",
            &[
                TAR,
                "--create",
                "--file=-",
                &tree,
                &format!("--exclude-from={}", lab.own("unreadable.list")),
                ".",
            ],
            "can not open it: Permission denied",
        ),
        vector(
            "list_of_roots",
            &[
                TAR,
                "--create",
                "--file=-",
                &tree,
                &format!("--exclude-from={}", lab.p("secret.list")),
                ".",
            ],
            "owned by uid 0, not by the caller",
        ),
        // no existence oracle: an existing and a missing file below /root read the same
        vector(
            "list_below_root_existing",
            &[
                TAR,
                "--create",
                "--file=-",
                &tree,
                "--exclude-from=/root/.bashrc",
                ".",
            ],
            "can not open it: Permission denied",
        ),
        vector(
            "list_below_root_missing",
            &[
                TAR,
                "--create",
                "--file=-",
                &tree,
                "--exclude-from=/root/no-such-file",
                ".",
            ],
            "can not open it: Permission denied",
        ),
        vector(
            "newer_names_a_file",
            &[
                TAR,
                "--create",
                "--file=-",
                "--newer=/etc/shadow",
                &tree,
                ".",
            ],
            "must be a date, not a file name",
        ),
        vector(
            "exclude_tag_opens_a_device",
            &[
                TAR,
                "--create",
                "--file=-",
                "--exclude-tag=../../../../dev/null",
                &tree,
                ".",
            ],
            "option \"--exclude-tag\" refused",
        ),
        vector(
            "exclude_vcs_ignores",
            &[
                TAR,
                "--create",
                "--file=-",
                "--exclude-vcs-ignores",
                &tree,
                ".",
            ],
            "option \"--exclude-vcs-ignores\" refused",
        ),
        vector(
            "tar_not_allowed",
            &["/bin/sh", "--create", "--file=/dev/null", &tree, "."],
            "is not allowed by the security file",
        ),
    ];
    let mut env = vector(
        "tar_options_in_the_environment",
        &[TAR, "--create", "--file=/dev/null", &tree, "."],
        "environment variable TAR_OPTIONS refused",
    );
    env.env.push((
        "TAR_OPTIONS".into(),
        format!("--checkpoint=1 --checkpoint-action=exec={touch}"),
    ));
    v.push(env);
    v
}

// issue 10: as uid backup, `amandad-runtar /usr/bin/tar I 'id > OUT; ...' --create ...` ran
// `id` as root. Every vector below is run as the Amanda user against real GNU tar.
#[test]
fn runtar_refuses_every_attack_vector_as_the_amanda_user() {
    let lab = lab!();
    let before = lab.root_files();
    let vectors = vectors(&lab);
    assert!(vectors.len() >= 20);
    let mut failures = Vec::new();
    for v in &vectors {
        let run = lab.run_as(AMANDA_USER, &v.env, &v.args);
        let line = run
            .stderr
            .lines()
            .find(|l| l.starts_with(REFUSAL))
            .unwrap_or("");
        eprintln!("{:<42} {line}", v.name);
        if run.status.code() != Some(2) || !line.contains(&v.refusal) {
            failures.push(format!(
                "{}: status {:?}, want a refusal containing {:?}, stderr:\n{}",
                v.name, run.status, v.refusal, run.stderr
            ));
        }
        if !run.stdout.is_empty() {
            failures.push(format!(
                "{}: wrote {} bytes to stdout",
                v.name,
                run.stdout.len()
            ));
        }
        if lab.marker.exists() {
            failures.push(format!(
                "{}: the payload ran ({} exists)",
                v.name,
                lab.marker.display()
            ));
            let _ = fs::remove_file(&lab.marker);
        }
        let new: Vec<_> = lab.root_files().difference(&before).cloned().collect();
        if !new.is_empty() {
            failures.push(format!("{}: root created {new:?}", v.name));
            for p in new {
                let _ = fs::remove_file(p);
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn runtar_refuses_callers_other_than_root_and_the_amanda_user() {
    let lab = lab!();
    // nobody is not in the helper's group: it cannot even execute the 4750 helper
    let run = lab.run_as(
        "nobody",
        &[],
        &[TAR, "--create", "--file=/dev/null", "."].map(OsString::from),
    );
    assert!(!run.status.success(), "{}", run.stderr);
    assert!(!lab.marker.exists());
}

/// A helper argv: tar, then `args`.
fn argv(args: impl IntoIterator<Item = impl AsRef<OsStr>>) -> Vec<OsString> {
    let mut v = vec![OsString::from(TAR)];
    v.extend(args.into_iter().map(|a| a.as_ref().to_owned()));
    v
}

// issue 10: lines of a --files-from list read verbatim are names: tar runs (as root) and
// obeys none of them.
#[test]
fn runtar_list_lines_are_names_under_verbatim_files_from() {
    let lab = lab!();
    let run = lab.run_as(
        AMANDA_USER,
        &[],
        &argv([
            "--create".to_owned(),
            "--file=-".to_owned(),
            format!("--directory={}", lab.tree.display()),
            "--verbatim-files-from".to_owned(),
            format!("--files-from={}", lab.own("options.list")),
        ]),
    );
    assert!(!run.stderr.contains(REFUSAL), "{}", run.stderr);
    assert!(
        run.stderr.contains("--directory=/etc: Cannot stat"),
        "{}",
        run.stderr
    );
    assert_eq!(members(&run.stdout), vec!["./a.c"]);
    assert!(!lab.marker.exists());
}

/// The setup of one DLE of `lab`'s tree, as amandad's services build it.
fn setup(lab: &Lab, form: Form) -> TarSetup {
    TarSetup {
        form,
        tar: PathBuf::from(TAR),
        directory: lab.tree.clone(),
        disk: b"/tree".to_vec(),
        device: b"/tree".to_vec(),
        list_base: None,
        list_dir: Some(PathBuf::from(LIST_DIR)),
        props: AmgtarProps::default(),
        exclude: FileList {
            files: vec!["*.o".into()],
            ..FileList::default()
        },
        include: FileList {
            files: vec!["./*.c".into(), "./sub/x".into()],
            ..FileList::default()
        },
    }
}

// issue 10: what amandad generates (the GNUTAR program and amgtar, backups with an index,
// estimates, exclude and include lists, selfcheck's probe) passes the helper and archives a
// file only root can read.
#[test]
fn runtar_runs_the_command_lines_amandad_generates() {
    let lab = lab!();
    let tmp = lab.own.join("tmp");
    fs::create_dir(&tmp).expect("mkdir tmp");
    for form in [Form::Gnutar, Form::Amgtar] {
        let s = setup(&lab, form);
        let place = ListPlace {
            tmp_dir: &tmp,
            prog: "sendbackup",
            disk: &s.disk,
            dir: &s.directory,
        };
        let lists = exinclude::build(&s.exclude, &s.include, &place);
        assert!(lists.messages.is_empty(), "{:?}", lists.messages);
        for l in [&lists.exclude, &lists.include].into_iter().flatten() {
            chown_to(l.path(), AMANDA_USER);
        }
        let no_lists = exinclude::ExInclude::default();
        for (mode, with_lists) in [
            (Mode::Backup, false),
            (Mode::Backup, true),
            (Mode::Estimate, false),
            (Mode::Estimate, true),
        ] {
            fs::write(&lab.snapshot, b"").expect("reset snapshot");
            let l = if with_lists { &lists } else { &no_lists };
            let args = s.args(mode, Some(&lab.snapshot), None, l, mode == Mode::Backup);
            let what = format!("{form:?} {mode:?} lists={with_lists}: {args:?}");
            let run = lab.run_as(AMANDA_USER, &[], &argv(&args));
            assert!(run.status.success(), "{what}\n{}", run.stderr);
            assert!(
                run.stderr.contains("Total bytes written"),
                "{what}\n{}",
                run.stderr
            );
            if mode == Mode::Backup {
                let names = members(&run.stdout);
                if with_lists {
                    assert_eq!(names, vec!["./a.c", "./sub/x"], "{what}");
                } else {
                    assert!(names.contains(&"./secret".to_owned()), "{what}: {names:?}");
                }
            }
        }
        // the incremental state tar wrote through /dev/fd/N is the Amanda user's file
        let md = fs::metadata(&lab.snapshot).expect("snapshot");
        assert!(md.len() > 0 && md.uid() != 0);
    }
    // selfcheck's probe of a directory only root may enter
    let closed = lab.dir.join("closed");
    fs::create_dir(&closed).expect("mkdir");
    fs::set_permissions(&closed, fs::Permissions::from_mode(0o700)).expect("chmod");
    let run = lab.run_as(
        AMANDA_USER,
        &[],
        &argv([
            "--create".to_owned(),
            "--file=/dev/null".to_owned(),
            "--no-recursion".to_owned(),
            format!("--directory={}", closed.display()),
            ".".to_owned(),
        ]),
    );
    assert!(run.status.success(), "{}", run.stderr);
    assert!(!lab.marker.exists());
}
