//! RUNDIR is going's own and private: one that another user owns or may write, or that is
//! a symbolic link, is refused before anything is created in it; inside it nothing is
//! followed through a symbolic link, and what is read is a regular file of bounded size.

use std::fs;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;

use crate::harness::*;

/// Runs going on `dir`/conf and `dir`/run until it exits (it is expected to refuse):
/// exit code and stderr.
fn refused(dir: &Path) -> (i32, String) {
    let out = Command::new(BIN)
        .args(["-f", "-d", path_str(&dir.join("conf")), "-r"])
        .arg(dir.join("run"))
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn setup() -> TempDir {
    let dir = TempDir::new();
    fs::create_dir(dir.0.join("conf")).unwrap();
    fs::write(dir.0.join("conf/web"), "cmd=sleep 1000\n").unwrap();
    dir
}

#[test]
#[ignore = "needs root"]
fn a_rundir_another_user_owns_is_refused_and_left_untouched() {
    let dir = setup();
    let run = dir.0.join("run");
    fs::create_dir(&run).unwrap();
    fs::set_permissions(&run, fs::Permissions::from_mode(0o700)).unwrap();
    std::os::unix::fs::chown(&run, Some(65534), Some(65534)).unwrap();
    let (code, err) = refused(&dir.0);
    assert_eq!(code, 78, "{err}");
    assert_eq!(
        err,
        format!(
            "going: {} is owned by uid 65534, not by going's uid 0: refused\n",
            run.display()
        )
    );
    assert_eq!(fs::read_dir(&run).unwrap().count(), 0, "nothing made in it");
}

#[test]
fn a_rundir_others_may_write_or_a_symbolic_link_is_refused() {
    let dir = setup();
    let run = dir.0.join("run");
    fs::create_dir(&run).unwrap();
    fs::set_permissions(&run, fs::Permissions::from_mode(0o777)).unwrap();
    let (code, err) = refused(&dir.0);
    assert_eq!(code, 78, "{err}");
    assert!(
        err.ends_with("is writable by group or others (mode 0777): refused\n"),
        "{err}"
    );
    fs::remove_dir(&run).unwrap();
    let elsewhere = dir.0.join("elsewhere");
    fs::create_dir(&elsewhere).unwrap();
    fs::set_permissions(&elsewhere, fs::Permissions::from_mode(0o700)).unwrap();
    symlink(&elsewhere, &run).unwrap();
    let (code, err) = refused(&dir.0);
    assert_eq!(code, 78, "{err}");
    assert!(err.ends_with("is a symbolic link: refused\n"), "{err}");
    assert_eq!(fs::read_dir(&elsewhere).unwrap().count(), 0);
}

#[test]
fn links_in_rundir_are_never_followed() {
    let mut g = Going::start(&[("web", "cmd=sleep 7301\nlog=null\n")]);
    let web = g.exec_of("web", "sleep");
    let rundir = g.dir.0.join("run");
    wait_until("the state file", || rundir.join("state").exists());
    g.kill9();
    // What an attacker with a way into RUNDIR would leave: links to files going must not
    // write, where going makes its temporary files and its lock.
    let victim = g.dir.0.join("victim");
    fs::write(&victim, "precious\n").unwrap();
    let before = fs::metadata(&victim).unwrap();
    symlink(&victim, rundir.join(".state.new")).unwrap();
    fs::create_dir(rundir.join("down")).unwrap();
    fs::set_permissions(rundir.join("down"), fs::Permissions::from_mode(0o700)).unwrap();
    symlink(&victim, rundir.join("down/.web.new")).unwrap();
    fs::remove_file(rundir.join("lock")).unwrap();
    symlink(g.dir.0.join("made-by-going"), rundir.join("lock")).unwrap();
    let (code, err) = refused(&g.dir.0);
    assert_eq!(code, 73, "{err}");
    assert!(
        err.contains("lock: Too many levels of symbolic links"),
        "{err}"
    );
    assert!(!g.dir.0.join("made-by-going").exists());
    fs::remove_file(rundir.join("lock")).unwrap();
    g.start_again();
    g.next_msg(&format!("web[{web}]: adopted"));
    let (code, out, _) = run(&["stop", "-r", path_str(&rundir), "web"]);
    assert_eq!(code, 0, "{out}");
    g.next_msg(&format!("web[{web}]: stopped"));
    let mark = fs::read_to_string(rundir.join("down/web")).unwrap();
    assert!(mark.starts_with("v2 "), "{mark}");
    assert!(fs::symlink_metadata(rundir.join("state"))
        .unwrap()
        .is_file());
    let after = fs::metadata(&victim).unwrap();
    assert_eq!(fs::read_to_string(&victim).unwrap(), "precious\n");
    assert_eq!((after.ino(), after.mtime()), (before.ino(), before.mtime()));
}

#[test]
fn a_fifo_or_a_link_to_dev_zero_in_rundir_blocks_nothing() {
    let dir = setup();
    fs::write(dir.0.join("conf/db"), "cmd=sleep 1000\n").unwrap();
    let run = dir.0.join("run");
    fs::create_dir_all(run.join("down")).unwrap();
    for d in [&run, &run.join("down")] {
        fs::set_permissions(d, fs::Permissions::from_mode(0o700)).unwrap();
    }
    let fifo = std::ffi::CString::new(path_str(&run.join("down/web"))).unwrap();
    // SAFETY: mkfifo reads a valid C string.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
    symlink("/dev/zero", run.join("down/db")).unwrap();
    symlink("/dev/zero", run.join("state")).unwrap();
    // going was started on this dir before: its files are kept as they are.
    let mut g = Going::with(Setup {
        dir: Some(dir),
        ..Setup::default()
    });
    g.started("web");
    g.rewind();
    g.started("db");
    g.rewind();
    let l = g.next_msg("not adopting anything");
    assert!(l.msg.ends_with("state: a symbolic link"), "{}", l.msg);
    assert_eq!(g.stop(), 0);
}
