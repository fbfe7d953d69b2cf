//! Faults going keeps working through: running as PID 1, a RUNDIR it cannot write, running
//! out of fds, a thousand services crash-looping at once, an inotify queue that overflows.

use std::fs;
use std::time::{Duration, Instant};

use crate::harness::*;

fn cpu_ticks(pid: i32) -> u64 {
    let f = stat_fields(pid);
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

#[test]
#[ignore = "needs root"]
fn as_pid_1_going_reaps_orphans_and_stops_cleanly() {
    let probe = std::process::Command::new("unshare")
        .args(["-pf", "--mount-proc", "true"])
        .output()
        .expect("unshare(1), from util-linux");
    assert!(
        probe.status.success(),
        "this machine makes no pid namespace (unshare -pf): {}",
        String::from_utf8_lossy(&probe.stderr)
    );
    let dir = TempDir::new();
    fs::create_dir(dir.0.join("conf")).unwrap();
    fs::write(
        dir.0.join("conf/s"),
        "cmd=/bin/sh -c '(sleep 1001 &); (sleep 1001 &); exec sleep 1000'\n",
    )
    .unwrap();
    let unshare = std::process::Command::new("unshare")
        .args(["-pf", "--mount-proc", BIN, "-f", "-c", "off", "-d"])
        .arg(dir.0.join("conf"))
        .arg("-r")
        .arg(dir.0.join("run"))
        .stdout(std::process::Stdio::null())
        .stderr(fs::File::create(dir.0.join("stderr")).unwrap())
        .spawn()
        .unwrap();
    /// Ends the namespace however the test ends: its PID 1 killed, everything in it goes.
    struct Namespace(std::process::Child);
    impl Drop for Namespace {
        fn drop(&mut self) {
            for (pid, _) in children_of(self.0.id() as i32) {
                // SAFETY: kill has no memory effects; the pid is unshare's child.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
            let _ = self.0.wait();
        }
    }
    let mut unshare = Namespace(unshare);
    let log = || fs::read_to_string(dir.0.join("stderr")).unwrap_or_default();
    wait_until("going, PID 1 of its namespace, to start s", || {
        log().contains("going[1]: s[2]: started")
    });
    let going = children_of(unshare.0.id() as i32)[0].0;
    assert_eq!(
        status_field(going, "NSpid").split_whitespace().last(),
        Some("1")
    );
    let others = || {
        children_of(going)
            .into_iter()
            .filter(|c| proc_file(c.0, "cmdline") != "sleep\x001000\x00")
            .map(|c| c.0)
            .collect::<Vec<_>>()
    };
    // The orphans end when the test has seen them reparented (a machine slow enough
    // could otherwise see them neither alive nor gone).
    let orphan = |p: &i32| proc_file(*p, "cmdline") == "sleep\x001001\x00";
    wait_until("the orphans to be reparented to going", || {
        let o = others();
        o.len() == 2 && o.iter().all(orphan)
    });
    for pid in others() {
        // SAFETY: kill has no memory effects; going reaps the orphan, not the test.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
    }
    wait_until("the orphans to be reaped", || others().is_empty());
    // SAFETY: kill has no memory effects.
    unsafe { libc::kill(going, libc::SIGTERM) };
    assert_eq!(unshare.0.wait().unwrap().code(), Some(0), "{}", log());
    assert!(log().contains("going[1]: going: all services stopped, exiting"));
}

#[test]
fn a_rundir_going_cannot_write_is_logged_once_and_supervision_goes_on() {
    let mut g = Going::start(&[("a", "cmd=sleep 1000\n")]);
    g.started("a");
    g.next_msg("reload: 1 started");
    // A directory where the state file's temporary goes: every write fails.
    // A non-empty directory where the state file goes: a file cannot be renamed over it.
    let blocker = g.dir.0.join("run/state");
    wait_until("the blocking directory", || {
        let _ = fs::remove_file(&blocker);
        fs::create_dir(&blocker).is_ok()
    });
    fs::write(blocker.join("keep"), "").unwrap();
    g.write("b", "cmd=sleep 1000\n");
    g.started("b");
    g.rewind(); // the first failed write may come before b's start or after it
    let l = g.next_msg("unable to write");
    assert!(
        l.msg
            .ends_with("a restart of going would not adopt the services"),
        "{}",
        l.msg
    );
    assert_eq!(l.pri, ERR);
    g.write("c", "cmd=sleep 1000\n");
    g.started("c");
    assert_eq!(
        g.lines
            .iter()
            .filter(|l| l.msg.contains("unable to write"))
            .count(),
        1,
        "{}",
        g.dump()
    );
    fs::remove_dir_all(&blocker).unwrap();
    g.write("d", "cmd=sleep 1000\n");
    g.next_msg("state is written again");
}

fn set_soft_nofile(pid: i32, soft: u64) {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: prlimit reads `new` and writes `old`, both valid.
    unsafe {
        assert_eq!(
            libc::prlimit(pid, libc::RLIMIT_NOFILE, std::ptr::null(), &mut r),
            0
        );
        r.rlim_cur = soft.min(r.rlim_max);
        assert_eq!(
            libc::prlimit(pid, libc::RLIMIT_NOFILE, &r, std::ptr::null_mut()),
            0
        );
    }
}

#[test]
fn out_of_fds_going_retries_and_recovers_when_the_limit_is_lifted() {
    let mut g = Going::start(&[]);
    g.next_msg("reload: 0 started");
    // Lowered from outside, as an admin's prlimit(1) would.
    set_soft_nofile(g.pid(), 40);
    g.pause();
    for i in 0..40 {
        g.write(&format!("s{i}"), &format!("cmd=sleep {}\n", 6000 + i));
    }
    g.signal(libc::SIGCONT);
    g.next_msg("used up its file descriptors");
    // The control socket is out of reach or answers; either way the loop does not spin.
    let _ = run(&["status", "-r", path_str(&g.dir.0.join("run"))]);
    let before = cpu_ticks(g.pid());
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        cpu_ticks(g.pid()) - before < 25,
        "going spins while out of fds"
    );
    assert!(alive(g.pid()));
    set_soft_nofile(g.pid(), 4096);
    wait_until("all 40 services to run", || {
        (0..40).all(|i| running(&format!("sleep {}", 6000 + i)).len() == 1)
    });
}

#[test]
fn a_thousand_crash_loopers_leave_going_responsive() {
    let dir_files: Vec<(String, String)> = (0..1000)
        .map(|i| (format!("c{i}"), "cmd=/bin/false\nlog=null\n".to_string()))
        .collect();
    let g = Going::with(Setup {
        files: dir_files,
        ..Setup::default()
    });
    // 2000 messages in a burst: past going's queue they go to stderr, so ask going itself.
    let run_dir = g.dir.0.join("run");
    wait_until("going to answer", || {
        run(&["status", "-r", path_str(&run_dir), "c999"]).0 != 69
    });
    let t0 = Instant::now();
    let cpu0 = cpu_ticks(g.pid());
    // Asked while they crash and restart: answered, never held up (the other tests
    // running meanwhile share the machine: the bound says blocked, not slow).
    for _ in 0..4 {
        let asked = Instant::now();
        let (code, out, _) = run(&["status", "-r", path_str(&g.dir.0.join("run")), "c1"]);
        assert!(code == 0 || code == 3, "{out}");
        assert!(
            asked.elapsed() < Duration::from_secs(5),
            "status took {:?}",
            asked.elapsed()
        );
        std::thread::sleep(Duration::from_millis(400));
    }
    // The backoff bounds the work: going is mostly idle while they wait.
    let ticks = cpu_ticks(g.pid()) - cpu0;
    let wall = t0.elapsed().as_secs_f64() * 100.0;
    assert!(
        (ticks as f64) < wall * 0.6,
        "going used {ticks} ticks in {wall:.0}"
    );
}

#[test]
fn an_overflowing_inotify_queue_means_one_rescan() {
    let max: usize = fs::read_to_string("/proc/sys/fs/inotify/max_queued_events")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let mut g = Going::start(&[]);
    g.next_msg("reload: 0 started");
    g.pause();
    // Two events each (created, closed after writing): past the queue's bound.
    for i in 0..max / 2 + 100 {
        fs::write(g.conf().join(format!("junk{i}.tmp")), "").unwrap();
    }
    g.write("web", "cmd=sleep 1000\n");
    g.signal(libc::SIGCONT);
    g.started("web");
    g.next_msg("reload: 1 started, 0 stopped, 0 restarted, 0 invalid");
}

#[test]
#[ignore = "needs root"]
fn when_fork_fails_going_retries_with_backoff_and_recovers() {
    // As another user with room for few processes; alone, as others run as nobody too.
    let _alone = alone();
    // going runs as nobody, with room for itself and a couple of services at most.
    // Owned by its effective uid: /proc/PID itself says it, without opening a file there
    // (another test watches who opens a /proc file).
    let nobody_procs = processes()
        .iter()
        .filter(|(p, _)| {
            use std::os::unix::fs::MetadataExt;
            fs::metadata(format!("/proc/{p}")).is_ok_and(|m| m.uid() == 65534)
        })
        .count();
    let dir = TempDir::new();
    let conf = dir.0.join("conf");
    fs::create_dir(&conf).unwrap();
    for i in 0..6 {
        fs::write(
            conf.join(format!("s{i}")),
            format!("cmd=sleep {}\nlog=null\n", 8000 + i),
        )
        .unwrap();
        std::os::unix::fs::chown(conf.join(format!("s{i}")), Some(65534), Some(65534)).unwrap();
    }
    for d in [&dir.0, &conf] {
        std::os::unix::fs::chown(d, Some(65534), Some(65534)).unwrap();
    }
    let limit = (nobody_procs + 3) as u64;
    let stderr = dir.0.join("stderr");
    let mut going = std::process::Command::new(BIN);
    going.args([
        "-f",
        "-c",
        "off",
        "-d",
        path_str(&conf),
        "-r",
        path_str(&dir.0.join("run")),
    ]);
    going.stderr(fs::File::create(&stderr).unwrap());
    // SAFETY: only async-signal-safe calls in the child.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut going, move || {
            // The hard limit stays: raising it would need CAP_SYS_RESOURCE.
            let mut r = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            libc::getrlimit(libc::RLIMIT_NPROC, &mut r);
            r.rlim_cur = limit.min(r.rlim_max);
            libc::setrlimit(libc::RLIMIT_NPROC, &r);
            libc::setgroups(0, std::ptr::null());
            libc::setgid(65534);
            libc::setuid(65534);
            Ok(())
        });
    }
    going.stdout(std::process::Stdio::null());
    // Stopped with SIGTERM however the test ends, so that nothing of it lingers.
    let mut going = Stopped(going.spawn().unwrap());
    let log = || fs::read_to_string(&stderr).unwrap_or_default();
    wait_until("a failed fork", || {
        log().contains("unable to fork: Resource temporarily unavailable")
    });
    wait_until("its quarantine", || {
        log().contains("failed 1 time in a row, next start in 1s")
    });
    assert!(
        going.0.try_wait().unwrap().is_none(),
        "going is still there:\n{}",
        log()
    );
    // The limit is lifted (by a process of the same user, as root may not here).
    let lift = "--nproc=10000".to_string();
    let mut prlimit = std::process::Command::new("prlimit");
    prlimit.args(["--pid", &going.0.id().to_string(), &lift]);
    // SAFETY: as above.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut prlimit, || {
            libc::setgroups(0, std::ptr::null());
            libc::setgid(65534);
            libc::setuid(65534);
            Ok(())
        });
    }
    assert!(prlimit.status().unwrap().success());
    wait_until("all six services to run", || {
        (0..6).all(|i| running(&format!("sleep {}", 8000 + i)).len() == 1)
    });
    // SAFETY: kill has no memory effects.
    unsafe { libc::kill(going.0.id() as i32, libc::SIGTERM) };
    assert_eq!(going.0.wait().unwrap().code(), Some(0), "{}", log());
}
