//! Configuration reached through symbolic links, laid out as deployment tools do: a CONFDIR
//! that is a link switched atomically to another directory, service files that are links
//! to files kept elsewhere, chains of links. A change anywhere on the way is noticed like
//! any other change, without a SIGHUP.

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::harness::*;

/// A directory going accepts: its own, nobody else's to write.
fn dir(p: PathBuf) -> PathBuf {
    fs::create_dir_all(&p).unwrap();
    fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
    p
}

fn file(p: &Path, text: &str) {
    fs::write(p, text).unwrap();
    fs::set_permissions(p, fs::Permissions::from_mode(0o644)).unwrap();
}

fn sleep(n: u32) -> String {
    format!("cmd=sleep {n}\n")
}

/// `ln -sfn TO LINK.tmp && mv -T LINK.tmp LINK`: the link is replaced in one step.
fn repoint(link: &Path, to: impl AsRef<Path>) {
    let tmp = link.with_extension("tmp");
    symlink(to, &tmp).unwrap();
    fs::rename(&tmp, link).unwrap();
}

/// Makes `change`, waits for the reload it causes to end with `summary`, and returns what
/// going logged meanwhile. (A restarted service starts after that, once the old one ended.)
fn after(g: &mut Going, change: impl FnOnce(&mut Going), summary: &str) -> Vec<String> {
    let mark = g.lines.len();
    change(g);
    g.next(summary, |l| l.msg == summary);
    g.lines[mark..].iter().map(|l| l.msg.clone()).collect()
}

/// The pid of `name[PID]: started` among `lines`, once it runs `sleep` (a service stopped
/// before then takes its stop_timeout to go).
fn started(lines: &[String], name: &str) -> i32 {
    let prefix = format!("{name}[");
    let pid = (lines.iter())
        .find_map(|l| l.strip_prefix(&prefix)?.strip_suffix("]: started"))
        .unwrap_or_else(|| panic!("{name} did not start: {lines:#?}"))
        .parse()
        .unwrap();
    wait_until(&format!("{name} to exec sleep"), || {
        proc_file(pid, "comm").trim() == "sleep"
    });
    pid
}

fn stopping(lines: &[String], name: &str, pid: i32) {
    let line = format!("{name}[{pid}]: stopping");
    assert!(lines.contains(&line), "no {line:?} in {lines:#?}");
}

fn runs(pid: i32, cmdline: &str) {
    wait_until(&format!("{pid} to run {cmdline}"), || {
        proc_file(pid, "cmdline").replace('\0', " ").trim_end() == cmdline
    });
}

const ONE_STARTED: &str = "reload: 1 started, 0 stopped, 0 restarted, 0 invalid";
const RESTARTED: &str = "reload: 0 started, 0 stopped, 1 restarted, 0 invalid";

#[test]
fn a_confdir_that_is_a_link_follows_each_switch() {
    let mut g = Going::with(Setup {
        conf_link: Some("a"),
        files: vec![("one".into(), sleep(1000))],
        ..Setup::default()
    });
    let a = dir(g.dir.0.join("a"));
    let one = g.exec_of("one", "sleep");
    g.next_msg(ONE_STARTED);
    let b = dir(g.dir.0.join("b"));
    file(&b.join("two"), &sleep(1000));
    let conf = g.conf();

    // To b: its service starts, a's stops.
    let lines = after(
        &mut g,
        |_| repoint(&conf, "b"),
        "reload: 1 started, 1 stopped, 0 restarted, 0 invalid",
    );
    let two = started(&lines, "two");
    stopping(&lines, "one", one);
    // b is watched now.
    let lines = after(
        &mut g,
        |_| file(&b.join("three"), &sleep(1000)),
        ONE_STARTED,
    );
    let three = started(&lines, "three");

    // And back to a, watched again.
    let lines = after(
        &mut g,
        |_| repoint(&conf, "a"),
        "reload: 1 started, 2 stopped, 0 restarted, 0 invalid",
    );
    let one = started(&lines, "one");
    stopping(&lines, "two", two);
    stopping(&lines, "three", three);
    let lines = after(&mut g, |_| file(&a.join("four"), &sleep(1000)), ONE_STARTED);
    started(&lines, "four");
    assert!(alive(one));
    wait_until("b's services to be gone", || !alive(two) && !alive(three));
}

#[test]
fn a_service_file_that_is_a_link_restarts_when_its_target_changes() {
    let mut g = Going::start(&[]);
    g.next_msg("reload: 0 started");
    let srv = dir(g.dir.0.join("srv"));
    let target = srv.join("web.conf");
    file(&target, &sleep(1001));
    let web = g.conf().join("web");
    let lines = after(&mut g, |_| repoint(&web, &target), ONE_STARTED);
    let pid = started(&lines, "web");
    runs(pid, "sleep 1001");

    // Edited in place.
    let lines = after(
        &mut g,
        |_| fs::write(&target, sleep(1002)).unwrap(),
        RESTARTED,
    );
    stopping(&lines, "web", pid);
    let pid = g.started("web");
    runs(pid, "sleep 1002");

    // Replaced by an editor's write to a temporary and rename.
    let lines = after(
        &mut g,
        |_| {
            file(&srv.join(".web.conf.swp"), &sleep(1003));
            fs::rename(srv.join(".web.conf.swp"), &target).unwrap();
        },
        RESTARTED,
    );
    stopping(&lines, "web", pid);
    let pid = g.started("web");
    runs(pid, "sleep 1003");

    // And again in place: the watch holds after the rename.
    let lines = after(
        &mut g,
        |_| fs::write(&target, sleep(1004)).unwrap(),
        RESTARTED,
    );
    stopping(&lines, "web", pid);
    runs(g.started("web"), "sleep 1004");
}

#[test]
fn a_service_file_reached_through_a_chain_of_links() {
    let mut g = Going::start(&[]);
    g.next_msg("reload: 0 started");
    let (one, two) = (dir(g.dir.0.join("srv/1")), dir(g.dir.0.join("srv/2")));
    file(&one.join("web.conf"), &sleep(1001));
    file(&two.join("web.conf"), &sleep(1002));
    // conf/web -> ../links/web -> ../srv/current/web.conf, srv/current -> 1
    let links = dir(g.dir.0.join("links"));
    symlink("1", g.dir.0.join("srv/current")).unwrap();
    symlink("../srv/current/web.conf", links.join("web")).unwrap();
    let web = g.conf().join("web");
    let lines = after(&mut g, |_| repoint(&web, "../links/web"), ONE_STARTED);
    let pid = started(&lines, "web");
    runs(pid, "sleep 1001");

    // The last link of the chain re-pointed.
    let current = g.dir.0.join("srv/current");
    let lines = after(&mut g, |_| repoint(&current, "2"), RESTARTED);
    stopping(&lines, "web", pid);
    let pid = g.started("web");
    runs(pid, "sleep 1002");

    // The file at the end edited.
    let lines = after(
        &mut g,
        |_| fs::write(two.join("web.conf"), sleep(1003)).unwrap(),
        RESTARTED,
    );
    stopping(&lines, "web", pid);
    let pid = g.started("web");
    runs(pid, "sleep 1003");

    // The link in the middle re-pointed, straight to a file.
    file(&one.join("other.conf"), &sleep(1004));
    let lines = after(
        &mut g,
        |_| repoint(&links.join("web"), one.join("other.conf")),
        RESTARTED,
    );
    stopping(&lines, "web", pid);
    runs(g.started("web"), "sleep 1004");
}

#[test]
fn a_confdir_reached_through_a_chain_of_links() {
    // conf -> current -> releases/N, as a deployment tool that keeps releases does.
    let mut g = Going::with(Setup {
        conf_link: Some("first"),
        files: vec![("one".into(), sleep(1000))],
        ..Setup::default()
    });
    let one = g.exec_of("one", "sleep");
    g.next_msg(ONE_STARTED);
    let r2 = dir(g.dir.0.join("releases/2"));
    let r3 = dir(g.dir.0.join("releases/3"));
    file(&r2.join("two"), &sleep(1000));
    file(&r3.join("three"), &sleep(1000));
    let current = g.dir.0.join("current");
    symlink("releases/2", &current).unwrap();
    let conf = g.conf();
    let lines = after(
        &mut g,
        |_| repoint(&conf, "current"),
        "reload: 1 started, 1 stopped, 0 restarted, 0 invalid",
    );
    stopping(&lines, "one", one);
    let two = started(&lines, "two");

    // A release later, the link in the middle switches.
    let lines = after(
        &mut g,
        |_| repoint(&current, "releases/3"),
        "reload: 1 started, 1 stopped, 0 restarted, 0 invalid",
    );
    stopping(&lines, "two", two);
    started(&lines, "three");
    let lines = after(
        &mut g,
        |_| file(&r3.join("four"), &sleep(1000)),
        ONE_STARTED,
    );
    started(&lines, "four");
}

#[test]
fn past_the_inotify_watch_limit_going_says_so_once_and_sighup_still_reloads() {
    // going in a user namespace of its own that allows it one watch: CONFDIR's.
    let tools = TempDir::new();
    let wrapper = tools.0.join("going");
    fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nexec unshare --user --map-root-user sh -c \
             'echo 1 >/proc/sys/user/max_inotify_watches && exec \"$0\" \"$@\"' {BIN} \"$@\"\n"
        ),
    )
    .unwrap();
    fs::set_permissions(&wrapper, fs::Permissions::from_mode(0o755)).unwrap();
    let mut g = Going::with(Setup {
        binary: Some(wrapper),
        ..Setup::default()
    });
    g.next_msg("reload: 0 started");
    let srv = dir(g.dir.0.join("srv"));
    let target = srv.join("web.conf");
    file(&target, &sleep(1001));
    let web = g.conf().join("web");
    let lines = after(&mut g, |_| repoint(&web, &target), ONE_STARTED);
    let warning = format!(
        "going: unable to watch {}: inotify watch limit reached \
         (fs.inotify.max_user_watches); a change there takes a SIGHUP",
        srv.display()
    );
    assert!(lines.contains(&warning), "no {warning:?} in {lines:#?}");
    let pid = started(&lines, "web");

    // Not seen, but a SIGHUP reads it; the warning is not repeated.
    fs::write(&target, sleep(1002)).unwrap();
    let lines = after(&mut g, |g| g.signal(libc::SIGHUP), RESTARTED);
    stopping(&lines, "web", pid);
    runs(g.started("web"), "sleep 1002");
    assert!(
        !lines.iter().any(|l| l.contains("unable to watch")),
        "{lines:#?}"
    );
    // CONFDIR itself is still watched.
    let lines = after(&mut g, |g| g.write("other", &sleep(1000)), ONE_STARTED);
    started(&lines, "other");
}
