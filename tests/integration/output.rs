//! Services' output in syslog: tag, pid, priority, long and partial lines, escaping,
//! `log=null`, and a flooding service that must not hold up the others.

use std::fs;
use std::time::{Duration, Instant};

use crate::harness::*;

#[test]
fn output_lines_reach_syslog_with_the_services_tag_pid_and_priority() {
    let long = "x".repeat(1500);
    let script = format!(
        "echo hello; echo '<3>disk on fire' >&2; echo '<7>debugging'; printf 'caf\\303\\251 \\377\\n'; echo {long}; printf 'no newline'; sleep 0.2; exit 4"
    );
    let mut g = Going::start(&[("talk", &format!("cmd=/bin/sh -c \"{script}\"\n"))]);
    let pid = g.started("talk");
    let tag = format!("talk[{pid}]");
    assert_eq!(g.next_output(&tag, "hello").pri, INFO);
    assert_eq!(g.next_output(&tag, "disk on fire").pri, ERR);
    assert_eq!(g.next_output(&tag, "debugging").pri, 3 * 8 + 7);
    g.next_output(&tag, "café \\xff");
    g.next_output(&tag, &"x".repeat(1024));
    g.next_output(&tag, &"x".repeat(1500 - 1024));
    // The partial last line is flushed when the service exits, before its exit is logged.
    g.next_output(&tag, "no newline");
    g.next_msg(&format!("talk[{pid}]: exited 4 after"));
}

#[test]
fn log_null_sends_output_to_dev_null() {
    let mut g = Going::start(&[(
        "quiet",
        "cmd=/bin/sh -c 'echo secret; exec sleep 1000'\nlog=null\n",
    )]);
    let pid = g.exec_of("quiet", "sleep");
    for fd in 0..3 {
        assert_eq!(
            fs::read_link(format!("/proc/{pid}/fd/{fd}"))
                .unwrap()
                .to_str(),
            Some("/dev/null")
        );
    }
    g.signal(libc::SIGHUP);
    g.next_msg("reload:");
    assert!(
        !g.lines.iter().any(|l| l.msg.contains("secret")),
        "{}",
        g.dump()
    );
}

#[test]
fn a_flooding_service_does_not_hold_up_the_others() {
    // It loads the machine (yes through going, as fast as it reads), and measures how
    // soon going restarts a service: alone.
    let _alone = alone();
    let mut g = Going::start(&[
        ("flood", "cmd=yes flooding\n"),
        ("victim", "cmd=sleep 1000\n"),
    ]);
    let victim = g.started("victim");
    let before: Vec<i32> = children_of(g.pid()).into_iter().map(|c| c.0).collect();
    let t0 = Instant::now();
    // SAFETY: kill has no memory effects.
    unsafe { libc::kill(victim, libc::SIGKILL) };
    let fresh = || {
        children_of(g.pid()).into_iter().any(|(p, zombie)| {
            !zombie && !before.contains(&p) && proc_file(p, "cmdline").starts_with("sleep")
        })
    };
    wait_until("the victim to be back", fresh);
    // A run under 5 s: it waits out a quarantine of 1 s, a deadline the flood must not
    // push back.
    let took = t0.elapsed();
    assert!(
        took < Duration::from_secs(3),
        "victim back after {took:?} (due after 1s) while another service floods"
    );
    // going's memory stays bounded meanwhile.
    let rss: u64 = status_field(g.pid(), "VmRSS")
        .trim_end_matches(" kB")
        .trim()
        .parse()
        .unwrap();
    assert!(rss < 16 * 1024, "going's VmRSS grew to {rss} kB");
}

#[test]
fn a_slow_syslog_drops_lines_and_says_how_many() {
    let dir = TempDir::new();
    fs::create_dir(dir.0.join("conf")).unwrap();
    fs::write(
        dir.0.join("conf/flood"),
        "cmd=/bin/sh -c 'yes flooding | head -n 20000; exec sleep 1000'\n",
    )
    .unwrap();
    // A syslogd that reads nothing at first: its queue fills.
    let sock = std::os::unix::net::UnixDatagram::bind(dir.0.join("log")).unwrap();
    let mut child = going_in(std::path::Path::new(BIN), &dir.0)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Let the flood happen against the full queue, then read everything.
    wait_until("the flood to be over", || {
        children_of(child.id() as i32)
            .iter()
            .any(|(p, _)| proc_file(*p, "comm").trim() == "sleep")
    });
    sock.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut buf = [0u8; 2048];
    let deadline = Instant::now() + DEADLINE;
    let report = loop {
        assert!(Instant::now() < deadline, "no report of dropped lines");
        let n = sock.recv(&mut buf).unwrap();
        let m = String::from_utf8_lossy(&buf[..n]).into_owned();
        if m.contains("of output dropped") {
            break m;
        }
    };
    assert!(
        report.contains("flood: ")
            && report.contains("lines of output dropped: syslog was not keeping up"),
        "{report}"
    );
    // SAFETY: kill has no memory effects.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let _ = child.wait();
}

/// Bytes waiting in the pipe or FIFO whose read end is `fd`.
fn unread(fd: &fs::File) -> usize {
    use std::os::fd::AsRawFd;
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one int.
    unsafe { libc::ioctl(fd.as_raw_fd(), libc::FIONREAD, &mut n) };
    n as usize
}

#[test]
fn a_stderr_nobody_reads_never_blocks_going() {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let dir = TempDir::new();
    let conf = dir.0.join("conf");
    fs::create_dir(&conf).unwrap();
    let flood = "cmd=/bin/sh -c 'yes flooding | head -n 20000; exec sleep 1000'\n";
    fs::write(conf.join("flood"), flood).unwrap();
    fs::write(conf.join("crashy"), "cmd=/bin/sh -c 'exit 1'\n").unwrap();
    let fifo = dir.0.join("fifo");
    let c = std::ffi::CString::new(path_str(&fifo)).unwrap();
    // SAFETY: mkfifo reads a valid C string.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    // Open for reading, so that going's end can be opened, and read nothing for now.
    let mut reader = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&fifo)
        .unwrap();
    let writer = fs::OpenOptions::new().write(true).open(&fifo).unwrap();
    let run_dir = dir.0.join("run");
    // Should the test fail half-way, going still stops, and its services with it.
    let mut going = Stopped(
        std::process::Command::new(BIN)
            .args([
                "-f",
                "-c",
                "off",
                "-d",
                path_str(&conf),
                "-r",
                path_str(&run_dir),
            ])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(writer)
            .spawn()
            .unwrap(),
    );
    let pid = going.pid();
    let status = |args: &[&str]| {
        let mut all = vec!["status", "-r", path_str(&run_dir)];
        all.extend_from_slice(args);
        let t0 = Instant::now();
        let (code, out, err) = run(&all);
        (code, out + &err, t0.elapsed())
    };
    let flooded = || {
        children_of(pid)
            .iter()
            .any(|(p, _)| proc_file(*p, "comm").trim() == "sleep")
    };
    wait_until("the FIFO to fill up", || unread(&reader) >= 60_000);
    wait_until("the flood to be over", flooded);
    // fd 2's open file description is shared with whoever started going: left blocking.
    let flags = proc_file(pid, "fdinfo/2");
    let flags = flags
        .lines()
        .find_map(|l| l.strip_prefix("flags:"))
        .unwrap();
    assert_eq!(
        i32::from_str_radix(flags.trim(), 8).unwrap() & libc::O_NONBLOCK,
        0
    );

    let (code, out, took) = status(&[]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("flood") && out.contains("crashy"), "{out}");
    // Blocked, it would never answer; other tests share the machine meanwhile.
    assert!(took < Duration::from_secs(3), "going status took {took:?}");
    wait_until("the crash-looper to be restarted twice", || {
        let (_, out, _) = status(&["crashy"]);
        let n = out.lines().find_map(|l| l.trim().strip_prefix("restarts"));
        n.is_some_and(|n| n.trim().parse::<u32>().unwrap() >= 2)
    });

    // Someone reads again: what waited comes out, then how much did not.
    let mut got = String::new();
    let mut buf = vec![0u8; 1 << 16];
    wait_until("the report of dropped lines", || {
        while let Ok(n) = reader.read(&mut buf) {
            if n == 0 {
                break;
            }
            got.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
        got.contains("flood: ") && got.contains("dropped: standard error was not keeping up")
    });
    let report = got
        .lines()
        .find(|l| l.contains("lines of output dropped"))
        .unwrap();
    assert!(
        report.starts_with(&format!("going[{pid}]: flood: "))
            && report.ends_with(" lines of output dropped: standard error was not keeping up"),
        "{report}"
    );

    // Nobody reads again, the FIFO fills again, and SIGTERM still ends going at once.
    let (code, out, _) = run(&["restart", "-r", path_str(&run_dir), "flood"]);
    assert_eq!(code, 0, "{out}");
    wait_until("the FIFO to fill up again", || unread(&reader) >= 60_000);
    let t0 = Instant::now();
    // SAFETY: kill has no memory effects.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let deadline = t0 + DEADLINE;
    let code = loop {
        if let Some(s) = going.0.try_wait().unwrap() {
            break s.code();
        }
        assert!(Instant::now() < deadline, "going did not exit on SIGTERM");
        std::thread::sleep(Duration::from_millis(5));
    };
    assert_eq!(code, Some(0));
}
