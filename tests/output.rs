//! Services' output in syslog: tag, pid, priority, long and partial lines, escaping,
//! `log=null`, and a flooding service that must not hold up the others.

mod harness;

use std::fs;
use std::time::{Duration, Instant};

use harness::*;

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
    let mut g = Going::start(&[
        ("flood", "cmd=yes flooding\n"),
        ("victim", "cmd=sleep 1000\n"),
    ]);
    let victim = g.started("victim");
    let since = Instant::now();
    // Only a run of 5 s counts as a success that restarts at once.
    wait_until("5 s of run time", || {
        since.elapsed() >= Duration::from_millis(5300)
    });
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
    let took = t0.elapsed();
    assert!(
        took < Duration::from_secs(1),
        "victim back after {took:?} while another service floods"
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
