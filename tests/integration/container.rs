//! going as a container's init: the container's environment passed on, a going that is
//! not root, an essential service whose end ends going, and the example Dockerfile run as
//! PID 1 of a new pid namespace.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};

use crate::harness::*;

/// The first line of `name`'s own output.
fn said(g: &mut Going, name: &str) -> String {
    let prefix = format!("{name}[");
    g.next(&format!("a line of {name}"), |l| l.tag.starts_with(&prefix))
        .msg
}

#[test]
fn pass_env_passes_what_it_names_or_all_but_goings_own_and_env_wins() {
    let show = "cmd=/bin/sh -c 'echo \"db=${DATABASE_URL-unset} t=${TOKEN-unset} n=${NOTIFY_SOCKET-unset} g=${GOING_EXTRA-unset} x=${NOT_SET-unset}\"; exec sleep 1000'\n";
    let mut g = Going::with(Setup {
        files: vec![
            ("plain".into(), show.into()),
            (
                "named".into(),
                format!("{show}pass_env=DATABASE_URL NOT_SET\n"),
            ),
            ("all".into(), format!("{show}pass_env=*\n")),
            ("wins".into(), format!("{show}pass_env=*\nenv=TOKEN=file\n")),
        ],
        env: [
            ("DATABASE_URL", "postgres://db/app"),
            ("TOKEN", "from-runtime"),
            ("NOTIFY_SOCKET", "/run/systemd/notify"),
            ("GOING_EXTRA", "1"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .into(),
        ..Setup::default()
    });
    let unset = "n=unset g=unset x=unset";
    for (name, want) in [
        ("plain", format!("db=unset t=unset {unset}")),
        ("named", format!("db=postgres://db/app t=unset {unset}")),
        (
            "all",
            format!("db=postgres://db/app t=from-runtime {unset}"),
        ),
        ("wins", format!("db=postgres://db/app t=file {unset}")),
    ] {
        g.rewind();
        assert_eq!(said(&mut g, name), want, "{name}");
    }
}

#[test]
fn an_essential_service_that_exits_ends_going_with_its_status_after_the_others() {
    for (cmd, code) in [
        ("/bin/sh -c 'exit 3'", 3),
        ("/bin/sh -c 'kill -KILL $$'", 137),
        ("/nonexistent/app", 127),
    ] {
        let mut g = Going::start(&[
            ("app", &format!("cmd={cmd}\nessential=yes\nafter=helper\n")),
            ("helper", "cmd=sleep 1000\n"),
        ]);
        let helper = g.started("helper");
        g.next_msg("going: app is essential and ");
        g.next_msg(&format!("helper[{helper}]: stopped"));
        assert_eq!(g.wait_exit(), code, "{cmd}:\n{}", g.dump());
        assert!(!alive(helper));
    }
}

#[test]
fn an_essential_service_stopped_or_changed_by_the_admin_ends_nothing() {
    let mut g = Going::start(&[("app", "cmd=sleep 1000\nessential=yes\n")]);
    let app = g.started("app");
    let (code, out, _) = cmd(&g, "restart", &["app"]);
    assert_eq!(code, 0, "{out}");
    g.next_msg(&format!("app[{app}]: stopped"));
    let again = g.started("app");
    g.write("app", "cmd=sleep 1001\nessential=yes\n");
    g.next_msg(&format!("app[{again}]: stopped"));
    g.started("app");
    assert_eq!(cmd(&g, "stop", &["app"]).0, 0);
    g.next_msg("app[");
    assert!(g.child.try_wait().unwrap().is_none(), "going runs on");
    assert_eq!(g.stop(), 0, "stopped by SIGTERM: 0, as ever");
}

/// Runs as uid/gid `id` (no groups) before exec.
fn as_user(cmd: &mut Command, id: u32) {
    // SAFETY: setgroups, setgid and setuid are async-signal-safe.
    unsafe {
        cmd.pre_exec(move || {
            for r in [
                libc::setgroups(0, std::ptr::null()),
                libc::setgid(id),
                libc::setuid(id),
            ] {
                if r != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
}

/// A directory nobody but root may write, that uid `id` may read and enter.
fn open_dir(p: &Path) {
    fs::set_permissions(p, fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
#[ignore = "needs root"]
fn a_going_that_is_not_root_takes_roots_files_and_refuses_ones_others_may_write() {
    const ID: u32 = 64123;
    let dir = TempDir::new();
    open_dir(&dir.0);
    let conf = dir.0.join("conf");
    fs::create_dir(&conf).unwrap();
    open_dir(&conf);
    fs::write(conf.join("web"), "cmd=sleep 1000\n").unwrap();
    fs::write(conf.join("loose"), "cmd=sleep 1000\n").unwrap();
    fs::set_permissions(conf.join("loose"), fs::Permissions::from_mode(0o664)).unwrap();
    fs::write(conf.join("boss"), "cmd=sleep 1000\nuser=0\n").unwrap();
    fs::set_permissions(conf.join("web"), fs::Permissions::from_mode(0o644)).unwrap();
    fs::set_permissions(conf.join("boss"), fs::Permissions::from_mode(0o644)).unwrap();
    let xdg = dir.0.join("xdg");
    fs::create_dir(&xdg).unwrap();
    std::os::unix::fs::chown(&xdg, Some(ID), Some(ID)).unwrap();
    fs::set_permissions(&xdg, fs::Permissions::from_mode(0o700)).unwrap();
    // Without -r: $XDG_RUNTIME_DIR/going.
    let mut going = Command::new(BIN);
    going
        .args(["-f", "-d"])
        .arg(&conf)
        .env("XDG_RUNTIME_DIR", &xdg)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(fs::File::create(dir.0.join("stderr")).unwrap());
    as_user(&mut going, ID);
    let going = Stopped(spawn(&mut going));
    let log = || fs::read_to_string(dir.0.join("stderr")).unwrap_or_default();
    wait_until("the reload", || log().contains("reload: 1 started"));
    let log = log();
    assert!(log.contains("]: web["), "{log}");
    assert!(
        log.contains(&format!(
            "loose: {}: writable by group or others (mode 0664): refused",
            conf.join("loose").display()
        )),
        "{log}"
    );
    assert!(
        log.contains(&format!(
            "boss: {}:2: user=0 needs going to run as root (it runs as uid {ID})",
            conf.join("boss").display()
        )),
        "{log}"
    );
    assert!(
        xdg.join("going/control").exists(),
        "RUNDIR: $XDG_RUNTIME_DIR/going"
    );
    // Its own user may control it.
    let mut status = Command::new(BIN);
    status.arg("status").env("XDG_RUNTIME_DIR", &xdg);
    as_user(&mut status, ID);
    let out = status.output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("web"),
        "{out:?}"
    );
    // Root believes no going of another user's (one could forge its socket): ask as its
    // user, as going(8) says.
    let (code, _, err) = run(&["status", "-r", path_str(&xdg.join("going")), "web"]);
    assert_eq!(code, 78, "{err}");
    drop(going);
}

#[test]
#[ignore = "needs root"]
fn a_non_root_default_rundir_someone_else_made_first_is_refused() {
    // A uid no test or account uses, so that /tmp/going-UID is this test's alone.
    const ID: u32 = 64124;
    let squatted = std::path::PathBuf::from(format!("/tmp/going-{ID}"));
    let _ = fs::remove_dir_all(&squatted);
    fs::create_dir(&squatted).unwrap(); // root's, as another user's would be
    let dir = TempDir::new();
    open_dir(&dir.0);
    fs::create_dir(dir.0.join("conf")).unwrap();
    open_dir(&dir.0.join("conf"));
    let mut going = Command::new(BIN);
    going
        .args(["-f", "-d"])
        .arg(dir.0.join("conf"))
        .env_remove("XDG_RUNTIME_DIR");
    as_user(&mut going, ID);
    let out = going.output().unwrap();
    fs::remove_dir(&squatted).unwrap();
    assert_eq!(out.status.code(), Some(78), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(&format!(
            "{} is owned by uid 0, not by going's uid {ID}: refused",
            squatted.display()
        )),
        "{out:?}"
    );
}

/// What examples/container/Dockerfile says: the entrypoint, the health check, the user's
/// uid, the environment, and where the service files go.
struct Image {
    entrypoint: Vec<String>,
    healthcheck: Vec<String>,
    uid: u32,
    env: Vec<(String, String)>,
    copy: (String, String),
    /// Whether a RUN line takes group and others' write permission off the service files.
    chmod: bool,
}

/// `["a", "b"]`, the exec form, as words (no commas or quotes inside words here).
fn exec_form(s: &str) -> Vec<String> {
    let inner = s.trim().strip_prefix('[').and_then(|s| s.strip_suffix(']'));
    (inner.expect("the exec form, [\"…\"]").split(','))
        .map(|w| w.trim().trim_matches('"').to_string())
        .collect()
}

fn image() -> Image {
    let text = fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/container/Dockerfile"
    ))
    .unwrap();
    let (mut entrypoint, mut healthcheck, mut user, mut env, mut copy) =
        (vec![], vec![], String::new(), vec![], None);
    let mut uids = std::collections::BTreeMap::new();
    let mut chmod = false;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let (word, rest) = line.split_once(' ').unwrap_or((line, ""));
        match word {
            "ENTRYPOINT" => entrypoint = exec_form(rest),
            "HEALTHCHECK" => healthcheck = exec_form(rest.split_once("CMD").unwrap().1),
            "USER" => user = rest.trim().to_string(),
            "ENV" => {
                let (k, v) = rest.trim().split_once('=').unwrap();
                env.push((k.to_string(), v.to_string()));
            }
            "COPY" if !rest.starts_with("--from") && rest.contains("going.d") => {
                let (src, dst) = rest.trim().split_once(' ').unwrap();
                copy = Some((src.to_string(), dst.to_string()));
            }
            "RUN" if rest.trim() == "chmod -R go-w /etc/going.d" => chmod = true,
            "RUN" if rest.contains("adduser") => {
                // adduser -D -u UID NAME
                let w: Vec<&str> = rest.split_whitespace().collect();
                let at = w.iter().position(|x| *x == "-u").unwrap();
                uids.insert(w[at + 2].to_string(), w[at + 1].parse::<u32>().unwrap());
            }
            _ => {}
        }
    }
    Image {
        entrypoint,
        healthcheck,
        uid: uids[&user],
        env,
        copy: copy.expect("a COPY of the service files"),
        chmod,
    }
}

#[test]
fn the_readme_shows_the_example_dockerfile_as_it_is() {
    let root = env!("CARGO_MANIFEST_DIR");
    let file = fs::read_to_string(format!("{root}/examples/container/Dockerfile")).unwrap();
    let readme = fs::read_to_string(format!("{root}/README.md")).unwrap();
    let shown = (readme.split("```dockerfile\n").nth(1))
        .and_then(|b| b.split("```").next())
        .expect("a dockerfile block in README.md");
    let code = |t: &str| -> Vec<String> {
        (t.lines())
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .map(String::from)
            .collect()
    };
    assert_eq!(code(shown), code(&file));
}

#[test]
#[ignore = "needs root"]
fn the_example_image_runs_as_pid_1_and_ends_with_its_essential_service() {
    let img = image();
    assert_eq!(img.entrypoint, ["/usr/sbin/going", "-f"]);
    assert_eq!(img.copy.1, "/etc/going.d/", "the default CONFDIR");
    assert_eq!(img.healthcheck[..2], ["/usr/sbin/going", "status"]);
    assert!(img.uid != 0, "a non-root image");
    // COPY: root's files with the checkout's modes, group-writable under umask 002;
    // then what the Dockerfile does about that.
    let dir = TempDir::new();
    open_dir(&dir.0);
    let conf = dir.0.join("going.d");
    fs::create_dir(&conf).unwrap();
    open_dir(&conf);
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join(&img.copy.0);
    for f in fs::read_dir(&example).unwrap().flatten() {
        let to = conf.join(f.file_name());
        fs::copy(f.path(), &to).unwrap();
        let mode = if img.chmod { 0o644 } else { 0o664 };
        fs::set_permissions(&to, fs::Permissions::from_mode(mode)).unwrap();
    }
    let log = dir.0.join("container.log");
    // The runtime's part: namespaces, a private /tmp, the image's /srv/www, its user, an
    // environment of its ENV lines and a `docker run -e`; then the entrypoint as PID 1.
    let mut env = vec!["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into()];
    env.extend(img.env.iter().map(|(k, v)| format!("{k}={v}")));
    env.push("APP_ENV=staging".into());
    // The binary is the image's (in /srv): a checkout under /tmp is hidden by the new /tmp.
    let entry = [&["/srv/going".to_string()][..], &img.entrypoint[1..]].concat();
    // The image's files on a tmpfs of its own (/srv), before /tmp becomes one too.
    let script = format!(
        "mount -t tmpfs tmpfs /srv && mkdir /srv/www /srv/going.d && \
         echo served > /srv/www/index.html && cp -p {conf}/* /srv/going.d/ && \
         cp {BIN} /srv/going && \
         mount -t tmpfs tmpfs /tmp && \
         exec setpriv --reuid={uid} --regid={uid} --clear-groups env -i {env} {entry} -d /srv/going.d",
        uid = img.uid,
        env = env.join(" "),
        entry = entry.join(" "),
        conf = conf.display(),
    );
    let mut runtime = Command::new("unshare");
    runtime
        .args([
            "--pid",
            "--fork",
            "--kill-child",
            "--net",
            "--mount",
            "--mount-proc",
        ])
        .args(["/bin/sh", "-c"])
        .arg(&script)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(fs::File::create(&log).unwrap());
    let mut container = Runtime(spawn(&mut runtime));
    let read = || fs::read_to_string(&log).unwrap_or_default();
    wait_until("the worker with the run's environment", || {
        read().contains("]: worker up for staging")
    });
    let going = wait_until_some("going as PID 1", || {
        (children_of(container.pid()).into_iter())
            .find(|c| proc_file(c.0, "comm").trim() == "going")
            .map(|c| c.0)
    });
    assert!(
        status_field(going, "NSpid").ends_with("\t1"),
        "PID 1 of its namespace"
    );
    let httpd = wait_until_some("busybox httpd", || {
        (children_of(going).into_iter())
            .find(|c| proc_file(c.0, "cmdline").starts_with("busybox\0httpd"))
            .map(|c| c.0)
    });
    // The HEALTHCHECK, run inside as the image's user: healthy.
    // As docker runs it: the image's environment, not this test's (XDG_RUNTIME_DIR!).
    let mut check = Command::new("nsenter");
    check
        .env_clear()
        .envs(img.env.iter().map(|(k, v)| (k, v)))
        .env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        )
        .args(["-t", &going.to_string(), "--pid", "--mount", "--net", "--"])
        .args([
            "setpriv",
            &format!("--reuid={}", img.uid),
            &format!("--regid={}", img.uid),
        ])
        .args(["--clear-groups", "/srv/going"])
        .args(&img.healthcheck[1..]);
    let out = check.output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}\n{}", read());
    // The essential service dies: the container ends with its status, the rest stopped.
    // SAFETY: kill has no memory effects; httpd is alive, a child of the container's going.
    unsafe { libc::kill(httpd, libc::SIGKILL) };
    let status = wait_until_some("the container to end", || container.0.try_wait().unwrap());
    let read = read();
    assert_eq!(status.code(), Some(137), "{read}");
    assert!(
        read.contains("going: web is essential and killed by SIGKILL: stopping every service, then exiting 137"),
        "{read}"
    );
    assert!(read.contains("]: worker["), "{read}");
    assert!(read.contains("stopped: killed by SIGTERM"), "{read}");
}

/// The container runtime (unshare), killed if the test ends before it does: it does not
/// pass SIGTERM on, and --kill-child takes the namespace's PID 1 with it.
struct Runtime(std::process::Child);

impl Runtime {
    fn pid(&self) -> i32 {
        self.0.id() as i32
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill(); // not reaped yet: its pid is its own
            let _ = self.0.wait();
        }
    }
}
