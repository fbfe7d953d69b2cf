//! going, run for real: command line, service files, clean spawning, supervision,
//! quarantine, reload, stopping and logging.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::time::{Duration, Instant};

use crate::harness::*;

const SLEEP: &str = "cmd=sleep 1000\n";

// ---- command line ----

#[test]
fn help_version_and_usage_errors() {
    let (code, out, _) = run(&["--help"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("usage: going [-d CONFDIR] [-r RUNDIR] [-l SOCKET | -f]"),
        "{out}"
    );
    assert_eq!(run(&["-h"]).0, 0);
    let (code, out, _) = run(&["-V"]);
    assert_eq!(
        (code, out.trim()),
        (0, concat!("going ", env!("CARGO_PKG_VERSION")))
    );
    assert_eq!(run(&["--version"]).0, 0);
    for bad in [
        &["-x"][..],
        &["-d"],
        &["frobnicate"],
        &["-f", "-l", "/x"],
        &["-d", "/x", "extra"],
        &["check", "-r", "/x"],
    ] {
        let (code, _, err) = run(bad);
        assert_eq!(code, 64, "{bad:?}");
        assert!(err.contains("usage:"), "{bad:?}: {err}");
    }
}

#[test]
fn check_reports_every_problem_with_file_and_line() {
    let dir = TempDir::new();
    let d = |n: &str| dir.0.join(n);
    fs::write(d("web"), "# ok\ncmd=/usr/sbin/nginx -g 'daemon off;'\n").unwrap();
    let (code, out, err) = run(&["check", "-d", path_str(&dir.0)]);
    assert_eq!((code, err.as_str()), (0, ""), "{out}");
    assert!(out.contains("1 services, 0 invalid"), "{out}");

    fs::write(d("typo"), "cmd=/bin/true\ncmdd=x\n").unwrap();
    fs::write(d("empty"), "").unwrap();
    fs::write(d("quote"), "cmd=/bin/sh -c 'oops\r\n").unwrap();
    fs::write(d("big"), "#".repeat(65 * 1024)).unwrap();
    fs::write(d("binary"), b"cmd=/bin/\xff\n").unwrap();
    // Ignored names are never read, however broken.
    for ignored in [".typo.swp", "typo~", "typo.dpkg-new", "typo.disabled"] {
        fs::write(d(ignored), "garbage\n").unwrap();
    }
    // A FIFO with a service name must not block going check (nor going).
    let fifo = std::ffi::CString::new(path_str(&d("fifo"))).unwrap();
    // SAFETY: mkfifo reads a valid C string.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
    let (code, _, err) = run(&["check", "-d", path_str(&dir.0)]);
    assert_eq!(code, 1);
    let p = |n: &str| path_str(&d(n)).to_string();
    for want in [
        format!("{}:2: unknown key \"cmdd\"", p("typo")),
        format!("{}:1: missing cmd=", p("empty")),
        format!("{}:1: unbalanced ' in cmd", p("quote")),
        format!("{}: larger than 64 KiB", p("big")),
        format!("{}:1: invalid UTF-8", p("binary")),
        format!("{}: not a regular file", p("fifo")),
    ] {
        assert!(
            err.lines().any(|l| l == want),
            "missing {want:?} in:\n{err}"
        );
    }
    assert_eq!(err.lines().count(), 6, "{err}");
    let (code, _, err) = run(&["check", "-d", "/nonexistent/going.d"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("unable to read /nonexistent/going.d: No such file or directory"),
        "{err}"
    );
}

#[test]
fn a_second_instance_on_the_same_rundir_is_refused() {
    let mut g = Going::start(&[]);
    g.next_msg("reload: 0 started");
    let run_dir = g.dir.0.join("run");
    let (code, _, err) = run(&["-f", "-d", path_str(&g.conf()), "-r", path_str(&run_dir)]);
    assert_eq!(code, 75, "{err}");
    assert!(err.contains("is in use by another going"), "{err}");
    assert_eq!(g.stop(), 0);
}

#[test]
fn a_second_instance_on_the_same_confdir_is_refused_and_named() {
    let mut g = Going::start(&[("web", SLEEP)]);
    g.started("web");
    let other_run = g.dir.0.join("other-run");
    let (code, _, err) = run(&["-f", "-d", path_str(&g.conf()), "-r", path_str(&other_run)]);
    assert_eq!(code, 75, "{err}");
    assert!(
        err.contains(&format!(
            "{} is supervised by another going (pid {}: {BIN} -d",
            g.conf().display(),
            g.pid()
        )),
        "{err}"
    );
    assert_eq!(g.stop(), 0);
}

/// A process of nobody's (uid 65534) holding an exclusive flock(2) on `path`, as any user
/// who may read a directory can: once it holds it. It took the lock itself (before it
/// became nobody), and holds it alone: the lock is gone with it.
fn squatter(path: &std::path::Path) -> Stopped {
    let mut cmd = std::process::Command::new("sleep");
    cmd.arg("1000");
    let child = Stopped(spawn(squatting(&mut cmd, path)));
    let ino = fs::metadata(path).unwrap().ino();
    wait_until("the squatter's lock", || {
        fs::read_to_string("/proc/locks")
            .unwrap()
            .lines()
            .any(|l| l.contains(&format!(":{ino} ")))
    });
    child
}

/// A `sleep` of nobody's that holds the flock(2) on `path` which a shell took and left to
/// it, ending: /proc/locks names a process that is gone, as it does for a lock a going
/// that died left to a child it had just forked. Killed when dropped.
struct Orphaned {
    /// The shell's, which took the lock.
    taker: i32,
    /// The sleep's, which holds it.
    holder: i32,
}

impl Orphaned {
    fn new(path: &std::path::Path) -> Orphaned {
        use std::io::BufRead;
        let mut cmd = std::process::Command::new("sh");
        cmd.args(["-c", "sleep 1000 & echo $!"])
            .stdout(std::process::Stdio::piped());
        let mut sh = spawn(squatting(&mut cmd, path));
        let mut line = String::new();
        let out = sh.stdout.take().unwrap();
        std::io::BufReader::new(out).read_line(&mut line).unwrap();
        assert!(sh.wait().unwrap().success());
        Orphaned {
            taker: sh.id() as i32,
            holder: line.trim().parse().unwrap(),
        }
    }
}

impl Drop for Orphaned {
    fn drop(&mut self) {
        // SAFETY: kill has no memory effects; the pid is the sleep's, which nobody reaps
        // but init, and which is killed here only.
        unsafe { libc::kill(self.holder, libc::SIGKILL) };
    }
}

/// `cmd`, made to lock `path` (a directory) before it becomes nobody and execs, its lock
/// inherited by what it runs.
fn squatting<'a>(
    cmd: &'a mut std::process::Command,
    path: &std::path::Path,
) -> &'a mut std::process::Command {
    let c = std::ffi::CString::new(path_str(path)).unwrap();
    cmd.stdin(std::process::Stdio::null());
    // SAFETY: open, flock, setgroups, setgid and setuid are async-signal-safe; `c` was
    // made before the fork.
    unsafe {
        cmd.pre_exec(move || {
            let fd = libc::open(c.as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY);
            if fd < 0
                || libc::flock(fd, libc::LOCK_EX) < 0
                || libc::setgroups(0, std::ptr::null()) < 0
                || libc::setgid(65534) < 0
                || libc::setuid(65534) < 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        })
    }
}

#[test]
#[ignore = "needs root"]
fn a_lock_on_confdir_held_by_another_user_keeps_no_going_off() {
    // A turn before a process of nobody's is made: a test that counts them runs alone.
    let _turn = turn();
    let dir = TempDir::new();
    let conf = dir.0.join("conf");
    fs::create_dir(&conf).unwrap();
    fs::set_permissions(&dir.0, fs::Permissions::from_mode(0o755)).unwrap();
    fs::set_permissions(&conf, fs::Permissions::from_mode(0o755)).unwrap();
    let squatter = squatter(&conf);
    let mut g = Going::with(Setup {
        files: vec![("web".into(), SLEEP.into())],
        dir: Some(dir),
        ..Setup::default()
    });
    // It runs, and says what keeps other goings off instead.
    let l = g.next_msg("its lock is held by no going but");
    assert!(
        l.msg
            .contains(&format!("(pid {}, uid 65534: sleep 1000)", squatter.pid())),
        "{}",
        l.msg
    );
    assert!(
        l.msg
            .ends_with("/conf/.going.lock keeps other goings off instead"),
        "{}",
        l.msg
    );
    g.started("web");
    let lock = fs::metadata(g.conf().join(".going.lock")).unwrap();
    assert_eq!(
        lock.mode() & 0o777,
        0o600,
        "nobody else can open it to lock it"
    );
    // A second going on the same CONFDIR is still refused, and named.
    let other_run = g.dir.0.join("other-run");
    let (code, _, err) = run(&["-f", "-d", path_str(&g.conf()), "-r", path_str(&other_run)]);
    assert_eq!(code, 75, "{err}");
    assert!(
        err.contains(&format!(
            "{} is supervised by another going (pid {}: {BIN} -d",
            g.conf().display(),
            g.pid()
        )),
        "{err}"
    );
    // Across an upgrade too: the lock file is handed over.
    let bin = TempDir::new();
    drop(squatter);
    assert_eq!(g.stop(), 0);
    // The file stays: a going started now takes both locks, and a second one is refused
    // by either.
    let binary = bin.0.join("going");
    fs::copy(BIN, &binary).unwrap();
    g.start_again_with(&binary);
    g.next_msg("going 0.1.0 started");
    g.next_msg("reload: 1 started");
    let l = g.upgrade();
    assert!(l.msg.starts_with("going: upgrading: exec"), "{}", l.msg);
    g.next_msg("reload: 0 started");
    let (code, _, err) = run(&["-f", "-d", path_str(&g.conf()), "-r", path_str(&other_run)]);
    assert_eq!(code, 75, "{err}");
    assert!(err.contains("is supervised by another going (pid"), "{err}");
    assert_eq!(g.stop(), 0);
}

#[test]
#[ignore = "needs root"]
fn a_lock_of_another_user_whose_taker_is_gone_is_not_waited_for() {
    // A turn before a process of nobody's is made: a test that counts them runs alone.
    let _turn = turn();
    let dir = TempDir::new();
    let conf = dir.0.join("conf");
    fs::create_dir(&conf).unwrap();
    fs::set_permissions(&dir.0, fs::Permissions::from_mode(0o755)).unwrap();
    fs::set_permissions(&conf, fs::Permissions::from_mode(0o755)).unwrap();
    let squatter = Orphaned::new(&conf);
    // A lock whose taker is gone is not waited for, nor is every process looked at to
    // find who holds it (which took a minute on a machine of 10,000 processes).
    let mut g = Going::with(Setup {
        files: vec![("web".into(), SLEEP.into())],
        dir: Some(dir),
        ..Setup::default()
    });
    // Waiting, going would sleep in epoll at its start, before it makes its control
    // socket; past its start, it sleeps in epoll with the socket made.
    let control = g.dir.0.join("run/control");
    let wchan = format!("/proc/{}/wchan", g.pid());
    wait_until("going past its start, or waiting in it", || {
        control.exists() || fs::read_to_string(&wchan).is_ok_and(|w| w.contains("poll"))
    });
    assert!(control.exists(), "going waits for another user's lock");
    let l = g.next_msg("its lock is held by no going but");
    assert!(
        l.msg.contains(&format!(
            "(taken by pid {}, held since by another process)",
            squatter.taker
        )),
        "{}",
        l.msg
    );
    g.started("web");
    assert_eq!(g.stop(), 0);
}

#[test]
fn a_confdir_refused_while_another_going_holds_it_is_taken_once_it_lets_go() {
    let mut g = Going::with(Setup {
        conf_link: Some("a"),
        files: vec![("a1".into(), "cmd=sleep 1101\nlog=null\n".into())],
        ..Setup::default()
    });
    g.started("a1");
    let b = g.dir.0.join("b");
    fs::create_dir(&b).unwrap();
    fs::write(b.join("b1"), "cmd=sleep 1102\nlog=null\n").unwrap();
    // Another going supervises b.
    let other = TempDir::new();
    let mut cmd = std::process::Command::new(BIN);
    cmd.args([
        "-f",
        "-d",
        path_str(&b),
        "-r",
        path_str(&other.0.join("run")),
    ]);
    let other_going = Stopped(spawn(cmd.stderr(std::process::Stdio::null())));
    wait_until("the other going to run b1", || {
        running("sleep 1102").len() == 1
    });
    // The link is pointed at b: refused, said once, and the services left as they are.
    let next = g.dir.0.join("next");
    std::os::unix::fs::symlink("b", &next).unwrap();
    fs::rename(&next, g.conf()).unwrap();
    g.next_msg("is supervised by another going");
    assert_eq!(running("sleep 1101").len(), 1);
    // Once the other going is gone, b is taken, without another word from anyone.
    drop(other_going);
    g.started("b1");
    g.next_msg("reload: 1 started, 1 stopped");
    let refusals = g
        .lines
        .iter()
        .filter(|l| l.msg.contains("supervised by"))
        .count();
    assert_eq!(refusals, 1, "said once: {}", g.dump());
    assert_eq!(g.stop(), 0);
}

// ---- clean spawning ----

/// A dirty inheritance for going: an extra fd without close-on-exec, ignored and blocked
/// signals, a lowered fd limit, umask 077 and a cwd that is not /.
fn dirty() -> std::io::Result<()> {
    // SAFETY: only async-signal-safe calls, on the child's own state.
    unsafe {
        let fd = libc::open(c"/dev/null".as_ptr(), libc::O_RDONLY);
        libc::dup2(fd, 9);
        libc::signal(libc::SIGUSR1, libc::SIG_IGN);
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGUSR2);
        libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        let mut r: libc::rlimit = std::mem::zeroed();
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut r);
        r.rlim_cur = 512.min(r.rlim_max);
        libc::setrlimit(libc::RLIMIT_NOFILE, &r);
        libc::umask(0o077);
        libc::chdir(c"/tmp".as_ptr());
    }
    Ok(())
}

#[test]
fn a_service_starts_clean() {
    let mut g = Going::with(Setup {
        files: vec![("clean".into(), SLEEP.into())],
        pre_exec: Some(dirty),
        env: vec![("GOING_LEAK".into(), "secret".into())],
        ..Setup::default()
    });
    let pid = g.exec_of("clean", "sleep");
    let stat = stat_fields(pid);
    // Fields 5 (pgrp), 6 (session), 7 (tty_nr), counted from the state at index 0.
    assert_eq!(stat[2], pid.to_string(), "process group");
    assert_eq!(stat[3], pid.to_string(), "session");
    assert_eq!(stat[4], "0", "controlling terminal");
    let fds: Vec<(String, String)> = fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                fs::read_link(e.path()).unwrap().display().to_string(),
            )
        })
        .collect();
    let mut names: Vec<&str> = fds.iter().map(|f| f.0.as_str()).collect();
    names.sort();
    assert_eq!(names, ["0", "1", "2"], "{fds:?}");
    let target = |fd: &str| fds.iter().find(|f| f.0 == fd).unwrap().1.clone();
    assert_eq!(target("0"), "/dev/null");
    assert!(target("1").starts_with("pipe:"), "{fds:?}");
    assert_eq!(
        target("1"),
        target("2"),
        "stdout and stderr share the output pipe"
    );
    assert_eq!(status_field(pid, "SigBlk"), "0000000000000000");
    assert_eq!(status_field(pid, "SigIgn"), "0000000000000000");
    assert_eq!(status_field(pid, "Umask"), "0022");
    // going blocks one signal, SIGCHLD: read from a signalfd.
    assert_eq!(
        status_field(g.pid(), "SigBlk"),
        "0000000000010000",
        "going's own mask"
    );
    assert_eq!(
        proc_file(pid, "environ"),
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\0"
    );
    assert_eq!(
        fs::read_link(format!("/proc/{pid}/cwd"))
            .unwrap()
            .display()
            .to_string(),
        "/"
    );
    let limits = proc_file(pid, "limits");
    let nofile = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    assert_eq!(
        nofile.split_whitespace().nth(3),
        Some("512"),
        "services get going's original limit: {nofile}"
    );
    // going itself raised its own soft limit.
    let own = proc_file(g.pid(), "limits");
    let own = own
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap()
        .split_whitespace()
        .collect::<Vec<_>>();
    assert_eq!(own[3], own[4], "going's soft limit is its hard limit");
}

#[test]
fn a_failed_exec_is_logged_with_its_reason_and_quarantined() {
    let dir = TempDir::new();
    let noexec = dir.0.join("noexec");
    fs::write(&noexec, "#!/bin/sh\n").unwrap();
    fs::set_permissions(&noexec, fs::Permissions::from_mode(0o644)).unwrap();
    let mut g = Going::start(&[
        ("missing", "cmd=/nonexistent/bin/web --flag\n"),
        ("notinpath", "cmd=no-such-program-going-test\n"),
        ("denied", &format!("cmd={}\n", noexec.display())),
    ]);
    let l = g.next_msg("missing: unable to exec");
    assert_eq!(
        l.msg,
        "missing: unable to exec /nonexistent/bin/web: No such file or directory"
    );
    assert_eq!(l.pri, ERR);
    let l = g.next_msg("missing: failed");
    assert_eq!(l.msg, "missing: failed 1 time in a row, next start in 1s");
    assert_eq!(l.pri, WARNING);
    g.rewind();
    let l = g.next_msg("notinpath: unable to exec");
    assert_eq!(
        l.msg,
        "notinpath: unable to exec no-such-program-going-test: No such file or directory"
    );
    g.rewind();
    let l = g.next_msg("denied: unable to exec");
    assert_eq!(
        l.msg,
        format!(
            "denied: unable to exec {}: Permission denied",
            noexec.display()
        )
    );
    // The next start waits out the quarantine, then fails again and doubles it.
    g.rewind();
    let first = g.next_msg("missing: failed 1 time").at;
    let second = g
        .next_msg("missing: failed 2 times in a row, next start in 2s")
        .at;
    assert!(
        second - first >= Duration::from_millis(900),
        "restarted after {:?}",
        second - first
    );
}

// ---- supervision ----

#[test]
fn a_crashing_service_backs_off_and_every_exit_is_logged() {
    let mut g = Going::start(&[
        ("crash", "cmd=/bin/sh -c 'exit 3'\n"),
        ("segv", "cmd=/bin/sh -c 'kill -SEGV $$'\n"),
    ]);
    let pid = g.started("crash");
    let l = g.next_msg(&format!("crash[{pid}]: exited 3 after"));
    assert_eq!(l.pri, WARNING);
    let t1 = g
        .next_msg("crash: failed 1 time in a row, next start in 1s")
        .at;
    let pid2 = g.started("crash");
    assert_ne!(pid, pid2);
    let t2 = g
        .next_msg("crash: failed 2 times in a row, next start in 2s")
        .at;
    assert!(t2 - t1 >= Duration::from_millis(900), "{:?}", t2 - t1);
    g.started("crash");
    let t3 = g
        .next_msg("crash: failed 3 times in a row, next start in 4s")
        .at;
    assert!(t3 - t2 >= Duration::from_millis(1900), "{:?}", t3 - t2);
    g.rewind();
    let l = g.next_msg("segv[");
    let l = if l.msg.ends_with("started") {
        g.next_msg("segv[")
    } else {
        l
    };
    assert!(l.msg.contains("]: killed by SIGSEGV"), "{}", l.msg);
}

#[test]
fn a_service_that_ran_five_seconds_is_restarted_at_once() {
    let mut g = Going::start(&[("web", SLEEP)]);
    let pid = g.started("web");
    let since = g.lines.last().unwrap().at;
    // Wait out the 5 s a run needs to count as a success.
    wait_until("5 s of run time", || {
        since.elapsed() >= Duration::from_millis(5200)
    });
    // SAFETY: kill has no memory effects.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    let l = g.next_msg(&format!("web[{pid}]: killed by SIGKILL after"));
    assert_eq!(l.pri, WARNING);
    let again = g.next("the next line for web", |l| l.msg.starts_with("web"));
    assert!(
        again.msg.ends_with("]: started"),
        "restarted without quarantine: {}",
        again.msg
    );
}

#[test]
fn orphans_are_reaped() {
    let mut g = Going::start(&[(
        "forker",
        "cmd=/bin/sh -c '(sleep 1002 &); (sleep 1002 &); exec sleep 1000'\n",
    )]);
    let pid = g.exec_of("forker", "sleep");
    // The orphaned sleeps are reparented to going (a subreaper), which must reap them
    // once they end: here when the test has seen them under going (a machine slow
    // enough could otherwise see them neither there nor gone).
    let others = || {
        children_of(g.pid())
            .into_iter()
            .filter(|c| c.0 != pid)
            .map(|c| c.0)
            .collect::<Vec<_>>()
    };
    let orphan = |p: &i32| proc_file(*p, "cmdline") == "sleep\x001002\x00";
    wait_until("orphans reparented to going", || {
        let o = others();
        o.len() == 2 && o.iter().all(orphan)
    });
    for orphan in others() {
        // SAFETY: kill has no memory effects; going reaps the orphan, not the test.
        assert_eq!(unsafe { libc::kill(orphan, libc::SIGKILL) }, 0);
    }
    wait_until("no orphan or zombie left under going", || {
        others().is_empty()
    });
    assert!(alive(pid));
}

#[test]
fn with_hundreds_of_fds_held_a_service_gets_three_and_each_exit_is_seen() {
    // 140 output pipes and 140 pidfds: going holds more fds than it keeps below 256.
    let files: Vec<(String, String)> = (0..140)
        .map(|i| (format!("s{i}"), format!("cmd=sleep {}\n", 7100 + i)))
        .collect();
    let mut g = Going::with(Setup {
        files,
        ..Setup::default()
    });
    g.next_msg("reload: 140 started");
    let held = || {
        fs::read_dir(format!("/proc/{}/fd", g.pid()))
            .unwrap()
            .count()
    };
    assert!(held() > 280, "{} fds", held());
    let fds = |pid: i32| {
        let mut names: Vec<String> = fs::read_dir(format!("/proc/{pid}/fd"))
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    };
    // Its comm is the new one before its exec has closed the close-on-exec fds: the
    // exec-error pipe goes a moment after. A leak would stay, and time out here.
    let three = |pid: i32| wait_until("fds 0, 1 and 2 alone", || fds(pid) == ["0", "1", "2"]);
    let mut pids = Vec::new();
    for i in [0, 70, 139] {
        g.rewind();
        let pid = g.exec_of(&format!("s{i}"), "sleep");
        three(pid);
        pids.push((i, pid));
    }
    // Each killed one is reaped and started again, and only it.
    for (i, pid) in pids {
        // SAFETY: kill has no memory effects; the pid is a service's, checked above.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        g.next_msg(&format!("s{i}[{pid}]: killed by SIGKILL"));
        let again = g.exec_of(&format!("s{i}"), "sleep");
        three(again);
        assert_eq!(running(&format!("sleep {}", 7100 + i)), [again]);
    }
    // One file more, one changed, one removed: one reload each, the others untouched.
    g.write("extra", "cmd=sleep 7300\n");
    g.next_msg("reload: 1 started, 0 stopped, 0 restarted, 0 invalid");
    g.write("s5", "cmd=sleep 7305\n");
    g.next_msg("reload: 0 started, 0 stopped, 1 restarted, 0 invalid");
    fs::remove_file(g.conf().join("s6")).unwrap();
    g.next_msg("reload: 0 started, 1 stopped, 0 restarted, 0 invalid");
    assert_eq!(running("sleep 7106").len(), 0);
    assert_eq!(running("sleep 7107").len(), 1);
}

// ---- reload ----

#[test]
fn files_added_changed_renamed_and_broken() {
    let mut g = Going::start(&[("keep", SLEEP), ("edit", SLEEP)]);
    let keep = g.started("keep");
    g.rewind();
    let edit = g.started("edit");
    g.next_msg("reload: 2 started, 0 stopped, 0 restarted, 0 invalid");

    g.write("new", SLEEP);
    let new = g.started("new");
    assert_eq!(
        g.next_msg("reload:").msg,
        "reload: 1 started, 0 stopped, 0 restarted, 0 invalid"
    );

    g.write("edit", "cmd=sleep 999\n");
    g.next_msg(&format!("edit[{edit}]: stopping"));
    g.next_msg(&format!("edit[{edit}]: stopped: killed by SIGTERM"));
    let edit2 = g.started("edit");
    wait_until("the new command", || {
        proc_file(edit2, "cmdline") == "sleep\0999\0"
    });
    g.rewind();
    g.next_msg("reload: 0 started, 0 stopped, 1 restarted, 0 invalid");

    // A comment changes nothing: nothing restarts.
    g.write("keep", "# just a comment\ncmd=sleep 1000\n");
    g.next_msg("reload: 0 started, 0 stopped, 0 restarted, 0 invalid");

    // A broken edit of a running service: reported, and the service keeps running.
    g.write("keep", "cmd=sleep 1000\nbogus=1\n");
    let l = g.next_msg("unknown key");
    assert_eq!(
        l.msg,
        format!(
            "keep: {}:2: unknown key \"bogus\"",
            g.conf().join("keep").display()
        )
    );
    assert_eq!(l.pri, ERR);
    g.next_msg("reload: 0 started, 0 stopped, 0 restarted, 1 invalid");
    assert!(alive(keep));

    // Renaming to an ignored name stops it.
    fs::rename(g.conf().join("new"), g.conf().join("new.disabled")).unwrap();
    g.next_msg(&format!("new[{new}]: stopping"));
    g.next_msg("reload: 0 started, 1 stopped, 0 restarted, 1 invalid");
    wait_until("the renamed service to be gone", || !alive(new));
    assert!(alive(keep));
    let lines = g.collect_for(Duration::ZERO);
    assert!(
        !lines
            .iter()
            .any(|l| l.msg.contains(&format!("keep[{keep}]: stopping"))),
        "{}",
        g.dump()
    );
}

#[test]
fn a_burst_of_files_is_one_reload() {
    let mut g = Going::start(&[]);
    g.next_msg("reload: 0 started");
    // Hold going still while ten files land, so the events are all queued together.
    g.pause();
    for i in 0..10 {
        g.write(&format!("svc{i}"), SLEEP);
    }
    g.signal(libc::SIGCONT);
    // All ten in one reload: split among several, no reload would say 10.
    g.next_msg("reload: 10 started, 0 stopped, 0 restarted, 0 invalid");
    let reloads: Vec<&str> = (g.lines.iter())
        .filter_map(|l| l.msg.strip_prefix("reload: "))
        .collect();
    assert_eq!(
        reloads,
        [
            "0 started, 0 stopped, 0 restarted, 0 invalid",
            "10 started, 0 stopped, 0 restarted, 0 invalid"
        ],
        "{}",
        g.dump()
    );
}

#[test]
fn sighup_reloads() {
    let mut g = Going::start(&[("web", SLEEP)]);
    g.next_msg("reload: 1 started");
    g.signal(libc::SIGHUP);
    let l = g.next_msg("reload:");
    assert_eq!(
        l.msg,
        "reload: 0 started, 0 stopped, 0 restarted, 0 invalid"
    );
    assert_eq!(l.pri, NOTICE);
}

#[test]
fn a_vanished_confdir_stops_nothing_and_is_picked_up_again() {
    let mut g = Going::start(&[("web", SLEEP)]);
    let web = g.started("web");
    g.next_msg("reload: 1 started");
    // Twice: the watch moves from the directory to its parent and back each time.
    for round in 0..2 {
        // Gone at once: files removed one by one would each be a removal going acts on.
        let away = g.dir.0.join("conf.away");
        fs::rename(g.conf(), &away).unwrap();
        fs::remove_dir_all(&away).unwrap();
        let l = g.next_msg("reload: unable to read");
        assert!(
            l.msg
                .ends_with("No such file or directory; 1 services left as they are"),
            "{}",
            l.msg
        );
        assert!(alive(web));
        // Back whole, as it went: an empty directory would say there are no services.
        let other = format!("other{round}");
        let back = g.dir.0.join("conf.back");
        fs::create_dir(&back).unwrap();
        fs::write(back.join("web"), SLEEP).unwrap();
        fs::write(back.join(&other), SLEEP).unwrap();
        fs::rename(&back, g.conf()).unwrap();
        let pid = g.started(&other);
        assert!(alive(web));
        fs::remove_file(g.conf().join(&other)).unwrap();
        g.next_msg("reload: 0 started, 1 stopped");
        // Out of the table once its process is gone, not before.
        g.next_msg(&format!("{other}[{pid}]: stopped"));
    }
}

// ---- stopping ----

#[test]
fn a_service_that_ignores_sigterm_is_killed_with_its_group() {
    let mut g = Going::start(&[(
        "stubborn",
        "cmd=/bin/sh -c 'trap \"\" TERM; sleep 1000 & while :; do sleep 1; done'\nstop_timeout=1\n",
    )]);
    let pid = g.started("stubborn");
    wait_until("the group to have its children", || {
        group_members(pid).len() >= 2
    });
    let t0 = Instant::now();
    fs::remove_file(g.conf().join("stubborn")).unwrap();
    g.next_msg(&format!("stubborn[{pid}]: stopping"));
    let l = g.next_msg("stubborn: still running 1s after SIGTERM, sending SIGKILL");
    assert!(l.at - t0 >= Duration::from_millis(900), "{:?}", l.at - t0);
    g.next_msg(&format!("stubborn[{pid}]: stopped: killed by SIGKILL"));
    wait_until("the whole group to be gone", || {
        group_members(pid).is_empty()
    });
}

#[test]
fn sigterm_stops_every_service_and_exits_zero() {
    let mut g = Going::start(&[
        ("a", SLEEP),
        ("b", "cmd=/bin/sh -c 'sleep 1000 & sleep 1000 & wait'\n"),
        ("crash", "cmd=/bin/false\n"),
    ]);
    let a = g.started("a");
    let b = g.started("b");
    wait_until("b's children", || group_members(b).len() >= 3);
    assert_eq!(g.stop(), 0);
    g.rewind();
    g.next_msg("going: stopping 3 services");
    g.next_msg("going: all services stopped, exiting");
    assert!(
        group_members(a).is_empty() && group_members(b).is_empty(),
        "{:?} {:?}",
        group_members(a),
        group_members(b)
    );
    for sig in [libc::SIGINT, libc::SIGQUIT] {
        let mut g = Going::start(&[("a", SLEEP)]);
        let a = g.started("a");
        g.signal(sig);
        assert_eq!(g.wait_exit(), 0);
        assert!(group_members(a).is_empty());
    }
}

// ---- logging ----

#[test]
fn log_lines_are_daemon_facility_tagged_going_with_pid() {
    let mut g = Going::start(&[("web", SLEEP)]);
    let l = g.next_msg("started on");
    assert_eq!(l.tag, format!("going[{}]", g.pid()));
    assert_eq!(l.pri, NOTICE);
    assert_eq!(
        l.msg,
        format!(
            "going {} started on {}; cgroups: {}",
            env!("CARGO_PKG_VERSION"),
            g.conf().display(),
            match &g.cgroup {
                Some(cg) => cg.path.join("going").display().to_string(),
                None => "off (-c off)".into(),
            }
        )
    );
    g.started("web");
    assert_eq!(g.lines.last().unwrap().pri, INFO);
}

#[test]
fn without_syslog_going_logs_to_stderr_and_reconnects_later() {
    let mut g = Going::with(Setup {
        files: vec![("web".into(), SLEEP.into())],
        bind_log: false,
        ..Setup::default()
    });
    wait_until("stderr to show the start", || {
        g.stderr().contains("reload: 1 started")
    });
    assert!(
        g.stderr().contains(&format!("going[{}]: web[", g.pid())),
        "{}",
        g.stderr()
    );
    // syslogd appears: the next message reaches it.
    let sock = std::os::unix::net::UnixDatagram::bind(g.dir.0.join("log")).unwrap();
    sock.set_read_timeout(Some(DEADLINE)).unwrap();
    g.signal(libc::SIGHUP);
    let mut buf = [0u8; 4096];
    let n = sock.recv(&mut buf).unwrap();
    let msg = String::from_utf8_lossy(&buf[..n]);
    assert!(msg.contains("reload: 0 started"), "{msg}");
    // syslogd restarts (a new socket at the same path): going connects anew. Shut first:
    // a test forking beside this one holds a copy of the socket until its exec.
    sock.shutdown(std::net::Shutdown::Read).unwrap();
    drop(sock);
    fs::remove_file(g.dir.0.join("log")).unwrap();
    let sock = std::os::unix::net::UnixDatagram::bind(g.dir.0.join("log")).unwrap();
    sock.set_read_timeout(Some(DEADLINE)).unwrap();
    g.signal(libc::SIGHUP);
    let n = (sock.recv(&mut buf)).unwrap_or_else(|e| panic!("{e}; stderr:\n{}", g.stderr()));
    assert!(String::from_utf8_lossy(&buf[..n]).contains("reload: 0 started"));
    assert_eq!(g.stop(), 0);
}

#[test]
fn a_stalled_syslog_never_blocks_going() {
    let dir = TempDir::new();
    fs::create_dir(dir.0.join("conf")).unwrap();
    for i in 0..300 {
        fs::write(dir.0.join("conf").join(format!("s{i}")), SLEEP).unwrap();
    }
    // A syslogd that never reads: its queue fills after a few datagrams.
    let _stalled = std::os::unix::net::UnixDatagram::bind(dir.0.join("log")).unwrap();
    let stderr = dir.0.join("stderr");
    let mut child = going_in(std::path::Path::new(BIN), &dir.0)
        .stderr(fs::File::create(&stderr).unwrap())
        .spawn()
        .unwrap();
    let pid = child.id() as i32;
    let read = || fs::read_to_string(&stderr).unwrap_or_default();
    // Messages past what waits in going's queue come out on stderr instead.
    wait_until("the overflow on stderr", || read().contains("]: started"));
    // SAFETY: kill has no memory effects.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let deadline = Instant::now() + DEADLINE;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "going blocked:\n{}", read());
        std::thread::sleep(Duration::from_millis(10));
    };
    assert_eq!(status.code(), Some(0));
    assert!(
        read().contains("going: all services stopped, exiting"),
        "{}",
        read()
    );
}
