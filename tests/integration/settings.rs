//! The per-service settings of going.d(5), each checked from /proc of the running service.
//! Tests that need root (users, groups, chroot, raised limits) skip cleanly without it.

use std::fs;
use std::path::Path;

use crate::harness::*;

/// Starts going with one service `svc` and waits until it has exec'd `comm`.
fn service(file: &str, comm: &str) -> (Going, i32) {
    let mut g = Going::start(&[("svc", file)]);
    let pid = g.exec_of("svc", comm);
    (g, pid)
}

fn environ(pid: i32) -> Vec<String> {
    proc_file(pid, "environ")
        .split('\0')
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect()
}

fn limit(pid: i32, name: &str) -> (String, String) {
    let limits = proc_file(pid, "limits");
    let line = limits
        .lines()
        .find(|l| l.starts_with(name))
        .unwrap()
        .to_string();
    let f: Vec<&str> = line[name.len()..].split_whitespace().collect();
    (f[0].to_string(), f[1].to_string())
}

#[test]
#[ignore = "needs root"]
fn user_sets_uid_gid_groups_and_environment() {
    let (_g, pid) = service("cmd=sleep 1000\nuser=daemon\n", "sleep");
    assert_eq!(status_field(pid, "Uid"), "1\t1\t1\t1");
    assert_eq!(status_field(pid, "Gid"), "1\t1\t1\t1");
    assert_eq!(status_field(pid, "Groups"), "1");
    let env = environ(pid);
    for want in ["HOME=/usr/sbin", "USER=daemon", "LOGNAME=daemon"] {
        assert!(env.iter().any(|e| e == want), "{want} not in {env:?}");
    }
    assert!(env.iter().any(|e| e.starts_with("PATH=")));
}

#[test]
#[ignore = "needs root"]
fn a_bare_uid_gets_no_supplementary_groups_and_group_overrides() {
    let (_g, pid) = service("cmd=sleep 1000\nuser=65534\ngroup=daemon\n", "sleep");
    assert_eq!(status_field(pid, "Uid"), "65534\t65534\t65534\t65534");
    assert_eq!(status_field(pid, "Gid"), "1\t1\t1\t1");
    assert_eq!(status_field(pid, "Groups"), "1");
    let (_g, pid) = service("cmd=sleep 1000\ngroup=daemon\n", "sleep");
    assert_eq!(
        status_field(pid, "Uid"),
        "0\t0\t0\t0",
        "only a group: going's uid"
    );
    assert_eq!(status_field(pid, "Gid"), "1\t1\t1\t1");
}

#[test]
#[ignore = "needs root"]
fn a_named_user_gets_its_supplementary_groups() {
    // Any user of this machine that /etc/group lists as a member somewhere.
    let groups = fs::read_to_string("/etc/group").unwrap();
    let passwd = fs::read_to_string("/etc/passwd").unwrap();
    let member = groups.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        let user = f
            .get(3)?
            .split(',')
            .find(|u| passwd.lines().any(|p| p.starts_with(&format!("{u}:"))))?;
        Some((user.to_string(), f[2].to_string()))
    });
    let (user, gid) = member.expect("a user that /etc/group lists as a member of a group");
    let (_g, pid) = service(&format!("cmd=sleep 1000\nuser={user}\n"), "sleep");
    let have = status_field(pid, "Groups");
    assert!(
        have.split_whitespace().any(|g| g == gid),
        "{user} should be in {gid}: {have}"
    );
}

#[test]
fn env_and_env_file_later_wins_and_the_file_is_read_at_each_start() {
    let dir = TempDir::new();
    let env_file = dir.0.join("svc.env");
    fs::write(&env_file, "# secrets\nTOKEN=one\nSHARED=from-file\n").unwrap();
    let file = format!(
        "cmd=sleep 1000\nenv=A=1\nenv=SHARED=from-key\nenv=A=2\nenv_file={}\n",
        env_file.display()
    );
    let (mut g, pid) = service(&file, "sleep");
    let env = environ(pid);
    for want in ["A=2", "SHARED=from-key", "TOKEN=one"] {
        assert!(env.iter().any(|e| e == want), "{want} not in {env:?}");
    }
    assert_eq!(
        env.iter().filter(|e| e.starts_with("A=")).count(),
        1,
        "{env:?}"
    );
    // The file changes; the next start reads it.
    fs::write(&env_file, "TOKEN=two\n").unwrap();
    // SAFETY: kill has no memory effects.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    let pid2 = g.exec_of("svc", "sleep");
    assert!(
        environ(pid2).iter().any(|e| e == "TOKEN=two"),
        "{:?}",
        environ(pid2)
    );
    // A missing env_file is a failed start, reported and retried.
    fs::remove_file(&env_file).unwrap();
    unsafe { libc::kill(pid2, libc::SIGKILL) };
    let l = g.next_msg("svc: env_file");
    assert_eq!(
        l.msg,
        format!(
            "svc: env_file {}: unable to stat: No such file or directory",
            env_file.display()
        )
    );
    assert_eq!(l.pri, ERR);
    g.next_msg("svc: failed 3 times in a row, next start in 4s");
}

#[test]
fn cwd_umask_nice_and_limits() {
    let dir = TempDir::new();
    let file = format!(
        "cmd=sleep 1000\ncwd={}\numask=027\nnice=5\nlimit_nofile=100:200\nlimit_core=0\nlimit_cpu=1000:2000\nlimit_fsize=unlimited\n",
        dir.0.display()
    );
    let (_g, pid) = service(&file, "sleep");
    assert_eq!(fs::read_link(format!("/proc/{pid}/cwd")).unwrap(), dir.0);
    assert_eq!(status_field(pid, "Umask"), "0027");
    assert_eq!(stat_fields(pid)[16], "5", "nice (field 19 of stat)");
    assert_eq!(limit(pid, "Max open files"), ("100".into(), "200".into()));
    assert_eq!(limit(pid, "Max core file size"), ("0".into(), "0".into()));
    assert_eq!(limit(pid, "Max cpu time"), ("1000".into(), "2000".into()));
    assert_eq!(
        limit(pid, "Max file size"),
        ("unlimited".into(), "unlimited".into())
    );
}

#[test]
#[ignore = "needs root"]
fn chroot_with_cwd_inside() {
    // A jail holding sleep and the libraries it needs.
    let jail = TempDir::new();
    let sleep = fs::canonicalize("/bin/sleep").unwrap();
    let ldd = std::process::Command::new("ldd")
        .arg(&sleep)
        .output()
        .unwrap();
    let mut files = vec![sleep.clone()];
    for word in String::from_utf8_lossy(&ldd.stdout).split_whitespace() {
        if word.starts_with('/') {
            files.push(word.into());
        }
    }
    for f in &files {
        let to = jail.0.join(f.strip_prefix("/").unwrap());
        fs::create_dir_all(to.parent().unwrap()).unwrap();
        fs::copy(f, &to).unwrap();
    }
    fs::create_dir(jail.0.join("work")).unwrap();
    let file = format!(
        "cmd={} 1000\nchroot={}\ncwd=/work\n",
        sleep.display(),
        jail.0.display()
    );
    let (_g, pid) = service(&file, "sleep");
    assert_eq!(fs::read_link(format!("/proc/{pid}/root")).unwrap(), jail.0);
    assert_eq!(
        fs::read_link(format!("/proc/{pid}/cwd")).unwrap(),
        jail.0.join("work")
    );
}

#[test]
fn stop_signal_and_stop_timeout() {
    let mut g = Going::start(&[
        ("int", "cmd=sleep 1000\nstop_signal=INT\n"),
        (
            "deaf",
            "cmd=/bin/sh -c 'trap \"\" TERM; while :; do sleep 0.2; done'\nstop_timeout=1\n",
        ),
    ]);
    let int = g.started("int");
    g.rewind();
    let deaf = g.started("deaf");
    wait_until("deaf to run its loop", || group_members(deaf).len() >= 2);
    let t0 = std::time::Instant::now();
    fs::remove_file(g.conf().join("int")).unwrap();
    fs::remove_file(g.conf().join("deaf")).unwrap();
    g.next_msg(&format!("int[{int}]: stopped: killed by SIGINT"));
    g.rewind();
    let l = g.next_msg("deaf: still running 1s after SIGTERM, sending SIGKILL");
    assert!(l.at - t0 >= std::time::Duration::from_millis(900));
    wait_until("deaf's group to be gone", || group_members(deaf).is_empty());
}

#[test]
#[ignore = "needs root"]
fn failures_in_the_child_are_reported_like_a_failed_exec() {
    let mut g = Going::start(&[
        ("jail", "cmd=/bin/sleep 1000\nchroot=/nonexistent/jail\n"),
        ("limit", "cmd=/bin/sleep 1000\nlimit_nofile=2000000000\n"),
        ("nocwd", "cmd=/bin/sleep 1000\nuser=nobody\ncwd=/root\n"),
    ]);
    let l = g.next_msg("jail: unable");
    assert_eq!(
        l.msg,
        "jail: unable to chroot to /nonexistent/jail: No such file or directory"
    );
    assert_eq!(l.pri, ERR);
    g.next_msg("jail: failed 1 time in a row, next start in 1s");
    g.rewind();
    let l = g.next_msg("limit: unable");
    assert_eq!(
        l.msg,
        "limit: unable to set limit_nofile: Operation not permitted"
    );
    g.rewind();
    // The cwd is entered as the user, who may not enter /root.
    let l = g.next_msg("nocwd: unable");
    assert_eq!(
        l.msg,
        "nocwd: unable to change directory to /root: Permission denied"
    );
}

#[test]
fn bad_settings_are_reported_with_file_and_line_and_disturb_nothing() {
    let mut g = Going::start(&[("ok", "cmd=sleep 1000\n")]);
    let ok = g.started("ok");
    g.write("typo", "cmd=sleep 1000\nuser=ngnix\numask=8\n");
    let path = g.conf().join("typo");
    let l = g.next_msg("no such user");
    assert_eq!(
        l.msg,
        format!("typo: {}:2: no such user \"ngnix\"", path.display())
    );
    let l = g.next_msg("umask");
    assert_eq!(
        l.msg,
        format!(
            "typo: {}:3: umask must be octal, 000 to 777, not \"8\"",
            path.display()
        )
    );
    g.next_msg("reload: 0 started, 0 stopped, 0 restarted, 1 invalid");
    assert!(alive(ok));
    let (code, _, err) = run(&["check", "-d", path_str(&g.conf())]);
    assert_eq!(code, 1);
    assert!(
        err.contains(&format!("{}:2: no such user \"ngnix\"", path.display())),
        "{err}"
    );
    // Changing only the stop settings restarts nothing.
    g.write("ok", "cmd=sleep 1000\nstop_timeout=3\n");
    g.next_msg("reload: 0 started, 0 stopped, 0 restarted, 1 invalid");
    assert!(alive(ok));
    assert!(Path::new(&format!("/proc/{ok}")).exists());
}
