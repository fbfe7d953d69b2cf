//! What going accepts from disk: only files and a CONFDIR that are going's own and nobody
//! else's to change (as sshd's StrictModes), and any malformed input gives an error that
//! names the file, never a hang or a crash.

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;

use crate::harness::*;

fn chmod(p: &Path, mode: u32) {
    fs::set_permissions(p, fs::Permissions::from_mode(mode)).unwrap();
}

fn check(dir: &Path) -> (i32, String) {
    let (code, out, err) = run(&["check", "-d", path_str(dir)]);
    (code, out + &err)
}

#[test]
fn a_file_others_may_write_is_refused_and_the_running_copy_kept() {
    let mut g = Going::start(&[("web", "cmd=sleep 1000\n")]);
    let web = g.started("web");
    let path = g.conf().join("web");
    fs::write(&path, "cmd=sleep 999\n").unwrap();
    chmod(&path, 0o664);
    let l = g.next_msg("refused");
    assert_eq!(
        l.msg,
        format!(
            "web: {}: writable by group or others (mode 0664): refused",
            path.display()
        )
    );
    g.next_msg("reload: 0 started, 0 stopped, 0 restarted, 1 invalid");
    assert!(alive(web));
    let (code, out) = check(&g.conf());
    assert_eq!(code, 1);
    assert!(
        out.contains("writable by group or others (mode 0664): refused"),
        "{out}"
    );
    // A symlink is judged by its target.
    let target = g.dir.0.join("elsewhere");
    fs::write(&target, "cmd=sleep 1000\n").unwrap();
    chmod(&target, 0o666);
    // In place of the file at once (a removal seen alone would stop the service).
    let tmp = g.dir.0.join("web.link");
    symlink(&target, &tmp).unwrap();
    fs::rename(&tmp, &path).unwrap();
    g.next_msg("mode 0666): refused");
    chmod(&target, 0o644);
    g.signal(libc::SIGHUP);
    g.next_msg("reload: 0 started, 0 stopped, 0 restarted, 0 invalid");
    assert!(alive(web), "the same settings as before: untouched");
}

#[test]
fn a_confdir_others_may_write_is_refused_as_a_whole() {
    let mut g = Going::start(&[("web", "cmd=sleep 1000\n")]);
    let web = g.started("web");
    g.next_msg("reload: 1 started");
    chmod(&g.conf(), 0o777);
    g.write("new", "cmd=sleep 1000\n");
    let l = g.next_msg("reload: ");
    assert_eq!(
        l.msg,
        format!("reload: {} is writable by group or others (mode 0777): refused; 1 services left as they are", g.conf().display())
    );
    assert!(alive(web));
    chmod(&g.conf(), 0o755);
    g.signal(libc::SIGHUP);
    g.started("new");
}

#[test]
#[ignore = "needs root"]
fn files_of_another_user_are_refused() {
    let dir = TempDir::new();
    let path = dir.0.join("web");
    fs::write(&path, "cmd=sleep 1000\n").unwrap();
    std::os::unix::fs::chown(&path, Some(65534), None).unwrap();
    let (code, out) = check(&dir.0);
    assert_eq!(code, 1);
    assert!(
        out.contains(&format!(
            "{}: owned by uid 65534, not by going's uid 0: refused",
            path.display()
        )),
        "{out}"
    );
}

#[test]
fn malformed_files_are_errors_that_name_the_file_and_block_nothing() {
    let dir = TempDir::new();
    let d = |n: &str| dir.0.join(n);
    let fifo = std::ffi::CString::new(path_str(&d("fifo"))).unwrap();
    // SAFETY: mkfifo reads a valid C string.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
    symlink("/dev/zero", d("zero")).unwrap();
    fs::create_dir(d("directory")).unwrap();
    fs::File::create(d("sparse"))
        .unwrap()
        .set_len(1 << 30)
        .unwrap();
    fs::write(d("nul"), b"cmd=/bin/echo a\0b\n").unwrap();
    fs::write(d("utf8"), b"cmd=/bin/\xc3\x28\n").unwrap();
    fs::write(
        d("longline"),
        format!("cmd=/bin/echo {}\n", "x".repeat(1 << 20)),
    )
    .unwrap();
    fs::write(d("crlf"), "# windows\r\ncmd=/bin/true\r\n").unwrap();
    fs::write(d("emptycmd"), "cmd=\n").unwrap();
    fs::write(d("quote"), "cmd=/bin/sh -c 'echo\n").unwrap();
    for ignored in ["with space", "caf\u{e9}", "tab\there", "dot.ted"] {
        fs::write(d(ignored), "garbage without equals\n").unwrap();
    }
    let (code, out) = check(&dir.0);
    assert_eq!(code, 1);
    let p = |n: &str| path_str(&d(n)).to_string();
    for want in [
        format!("{}: not a regular file", p("fifo")),
        format!("{}: not a regular file", p("zero")),
        format!("{}: not a regular file", p("directory")),
        format!("{}: larger than 64 KiB", p("sparse")),
        format!("{}:1: cmd contains a NUL character", p("nul")),
        format!("{}:1: invalid UTF-8", p("utf8")),
        format!("{}: larger than 64 KiB", p("longline")),
        format!("{}:1: cmd is empty", p("emptycmd")),
        format!("{}:1: unbalanced ' in cmd", p("quote")),
    ] {
        assert!(
            out.lines().any(|l| l == want),
            "missing {want:?} in:\n{out}"
        );
    }
    assert!(
        out.contains("10 services, 9 invalid"),
        "crlf is valid, odd names are not services:\n{out}"
    );
    // going itself reads them all without blocking, and starts the valid one.
    let conf = dir.0.clone();
    let mut g = Going::start(&[]);
    g.next_msg("reload: 0 started"); // going is up: its SIGHUP handler is in place
    fs::remove_dir(g.conf()).unwrap();
    fs::rename(&conf, g.conf()).unwrap();
    std::mem::forget(dir);
    g.signal(libc::SIGHUP);
    g.started("crlf");
    g.next_msg("reload: 1 started, 0 stopped, 0 restarted, 9 invalid");
}

#[test]
fn ten_thousand_files_are_checked() {
    let dir = TempDir::new();
    for i in 0..10_000 {
        fs::write(dir.0.join(format!("svc{i}")), "cmd=sleep 1000\n").unwrap();
    }
    let (code, out) = check(&dir.0);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("10000 services, 0 invalid"), "{out}");
}

#[test]
fn control_characters_from_a_file_reach_no_terminal_and_no_log_raw() {
    const EVIL: &str = "\x1b[2J\x1b]0;pwned\x07";
    const SHOWN: &str = r"\x1b[2J\x1b]0;pwned\x07";
    let mut g = Going::start(&[]);
    g.next_msg("reload: 0 started");
    let env_file = g.dir.0.join("env");
    fs::write(&env_file, format!("{EVIL}=1\n")).unwrap();
    g.write("keys", &format!("cmd=/bin/true\n{EVIL}=1\nnice={EVIL}\n"));
    g.write(
        "envy",
        &format!("cmd=/bin/true\nenv_file={}\n", env_file.display()),
    );
    g.write("path", &format!("cmd=/nonexistent/{EVIL}\n"));
    let keys = g.conf().join("keys");
    let unknown = format!("{}:2: unknown key \"{SHOWN}\"", keys.display());
    let nice = format!(
        "{}:3: nice must be a number from -20 to 19, not \"{SHOWN}\"",
        keys.display()
    );
    // going check
    let (code, out) = check(&g.conf());
    assert_eq!(code, 1);
    assert!(out.lines().any(|l| l == unknown), "{out}");
    assert!(out.lines().any(|l| l == nice), "{out}");
    assert!(!out.contains('\x1b') && !out.contains('\x07'), "{out:?}");
    // the log: the file's problems, the env_file's, the command's path
    g.next_msg(&unknown);
    g.rewind();
    g.next_msg(&format!(
        "envy: env_file {}:1: invalid environment variable name \"{SHOWN}\"",
        env_file.display()
    ));
    g.rewind();
    g.next_msg(&format!(
        "path: unable to exec /nonexistent/{SHOWN}: No such file"
    ));
    // going status and reload
    let run_dir = g.dir.0.join("run");
    let (_, out, err) = run(&["status", "-r", path_str(&run_dir), "keys", "path"]);
    assert!(out.contains(&unknown) && out.contains(SHOWN), "{out}");
    let (_, out2, err2) = run(&["status", "-r", path_str(&run_dir)]);
    let (_, out3, err3) = run(&["reload", "-r", path_str(&run_dir)]);
    assert!(err3.contains(&unknown), "{err3}");
    let all = [out, err, out2, err2, out3, err3].concat();
    assert!(!all.contains('\x1b') && !all.contains('\x07'), "{all:?}");
    assert!(
        g.lines.iter().all(|l| !l.msg.contains('\x1b')),
        "{}",
        g.dump()
    );
}

#[test]
fn a_file_on_a_pseudo_filesystem_is_refused_unopened() {
    // A harmless proc file (a regular file, root's, not writable by others: only its
    // filesystem tells it apart), of a process of the test's own, watched for any open.
    struct Sleeper(std::process::Child);
    impl Drop for Sleeper {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let sleeper = Sleeper(
        std::process::Command::new("sleep")
            .arg("1000")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    // A file of its own that no process-listing tool reads (ps and top read `status`).
    let target = format!("/proc/{}/timerslack_ns", sleeper.0.id());
    let mut ino = inotify::Inotify::init().unwrap();
    let mask = inotify::WatchMask::OPEN | inotify::WatchMask::ACCESS;
    ino.watches().add(&target, mask).unwrap();
    let mut g = Going::start(&[]);
    g.next_msg("reload: 0 started");
    let link = g.conf().join("status");
    symlink(&target, &link).unwrap();
    g.write("envy", &format!("cmd=/bin/true\nenv_file={target}\n"));
    let refused = |p: &str| format!("{p}: on a pseudo filesystem (proc): refused");
    let l = g.next_msg(&refused(path_str(&link)));
    assert_eq!(l.msg, format!("status: {}", refused(path_str(&link))));
    g.rewind();
    g.next_msg(&format!("envy: env_file {}", refused(&target)));
    let (code, out) = check(&g.conf());
    assert_eq!(code, 1);
    let about = |l: &&str| l.starts_with(path_str(&link));
    assert_eq!(
        out.lines().filter(about).collect::<Vec<_>>(),
        [refused(path_str(&link))],
        "{out}"
    );
    // Neither going nor going check opened it, let alone read it.
    let mut buf = [0u8; 1024];
    match ino.read_events(&mut buf) {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        other => panic!(
            "{target} was opened: {:?}",
            other.map(|evs| evs.map(|e| e.mask).collect::<Vec<_>>())
        ),
    }
}
