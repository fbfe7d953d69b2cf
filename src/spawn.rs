//! What a service's process is started with, worked out before the fork: the candidates
//! for execve (the command's first word looked up in `PATH` as execvp would), argv, the
//! environment, the resource limits, and the root and working directories, all as C
//! strings. Pure: no system call but reading the `env_file`, so it is unit-tested.
//!
//! Invariant: everything the child needs exists before `fork`, so that the child only
//! makes system calls on memory prepared here (src/sys.rs); any value that cannot become a
//! C string is an error here, never in the child.

use std::ffi::{c_int, CString};
use std::fmt;
use std::io;

use crate::config::{self, PassEnv, Ready, Settings};
use crate::log::Errno;
use crate::service::Launch;

/// Why a service could not be started, before its process existed.
#[derive(Debug)]
pub enum SpawnError {
    /// A value holds a NUL byte (it came from an `env_file`: the file's keys refuse it).
    Nul(String),
    /// The `env_file` could not be read, or has a bad line: its own message.
    EnvFile(String),
    /// The service's cgroup could not be made ready: what failed, on what.
    Cgroup(String),
    /// A system call failed: what going was doing, and the error. `nofile` is going's own
    /// limit on open files, to say what ran out.
    Unable {
        what: &'static str,
        err: io::Error,
        nofile: u64,
    },
}

impl fmt::Display for SpawnError {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            SpawnError::Nul(what) => {
                write!(f, "unable to start: {what} contains a NUL character")
            }
            SpawnError::EnvFile(e) => write!(f, "env_file {e}"),
            SpawnError::Cgroup(e) => f.write_str(e),
            SpawnError::Unable { what, err, nofile } => match err.raw_os_error() {
                Some(libc::EMFILE) => write!(
                    f,
                    "unable to {what}: going has used up its file descriptors (limit {nofile})"
                ),
                Some(libc::ENFILE) => write!(
                    f,
                    "unable to {what}: the system has run out of file descriptors"
                ),
                _ => write!(f, "unable to {what}: {}", Errno(err)),
            },
        }
    }
}

/// The C strings and limits of one start.
#[derive(Debug)]
pub struct Plan {
    /// Candidates for execve, tried in order.
    pub paths: Vec<CString>,
    pub argv: Vec<CString>,
    pub envp: Vec<CString>,
    /// going's original limit on open files first (it raises its own), then the service's.
    pub limits: Vec<(c_int, libc::rlimit)>,
    pub chroot: Option<CString>,
    pub cwd: CString,
}

fn cstr(v: &str, what: &str) -> Result<CString, SpawnError> {
    CString::new(v).map_err(|_| SpawnError::Nul(what.to_string()))
}

/// Where a service's readiness goes, for the plan of its start.
pub struct Readiness<'a> {
    /// NOTIFY_SOCKET, for `ready=notify`.
    pub notify: Option<&'a str>,
}

impl Plan {
    /// The plan of `launch` of the service `name`: the service's command, or its finish
    /// hook's with the exit code and signal appended and GOING_SERVICE set.
    pub fn new(
        name: &str,
        s: &Settings,
        launch: Launch,
        nofile: libc::rlimit,
        ready: &Readiness,
    ) -> Result<Plan, SpawnError> {
        let mut env = environment(s)?;
        let (words, what) = match launch {
            Launch::Service => {
                if let (Some(Ready::Notify), Some(socket)) = (s.life().ready, ready.notify) {
                    put(&mut env, "NOTIFY_SOCKET", socket);
                }
                (s.cmd.clone(), "cmd")
            }
            Launch::Finish { code, signal } => {
                put(&mut env, "GOING_SERVICE", name);
                let mut words = s.life().finish.clone();
                words.extend([code.to_string(), signal.to_string()]);
                (words, "finish")
            }
        };
        let word = &words[0];
        let paths = if word.contains('/') {
            vec![cstr(word, what)?]
        } else {
            (config::PATH.split(':'))
                .map(|dir| cstr(&format!("{dir}/{word}"), what))
                .collect::<Result<_, _>>()?
        };
        let argv = (words.iter())
            .map(|w| cstr(w, what))
            .collect::<Result<_, _>>()?;
        let envp = (env.iter())
            .map(|(k, v)| cstr(&format!("{k}={v}"), k))
            .collect::<Result<_, _>>()?;
        let mut limits = vec![(libc::RLIMIT_NOFILE as c_int, nofile)];
        limits.extend(s.limits.iter().map(|&(r, soft, hard)| {
            let limit = libc::rlimit {
                rlim_cur: soft as _,
                rlim_max: hard as _,
            };
            (r, limit)
        }));
        let path = |p: &std::path::Path, what| cstr(p.to_str().unwrap_or_default(), what);
        Ok(Plan {
            paths,
            argv,
            envp,
            limits,
            chroot: s.chroot.as_deref().map(|p| path(p, "chroot")).transpose()?,
            cwd: path(&s.cwd, "cwd")?,
        })
    }
}

/// A service's environment: `PATH`, what `pass_env=` passes of going's, the user's `HOME`,
/// `USER` and `LOGNAME`, the `env_file` (read now, at each start), then `env=`; a later
/// value of a name wins, in the place of its first.
pub fn environment(s: &Settings) -> Result<Vec<(String, String)>, SpawnError> {
    let mut env = vec![("PATH".to_string(), config::PATH.to_string())];
    if let Some(pass) = &s.life().pass_env {
        env.extend(passed(pass, std::env::vars_os()));
    }
    env.extend(s.user_env.iter().cloned());
    if let Some(file) = &s.env_file {
        env.extend(config::read_env_file(file).map_err(SpawnError::EnvFile)?);
    }
    env.extend(s.env.iter().cloned());
    // By name, so that a large passed environment costs n log n, not n².
    let mut at: std::collections::BTreeMap<String, usize> = Default::default();
    let mut out: Vec<(String, String)> = Vec::with_capacity(env.len());
    for (k, v) in env {
        match at.get(&k) {
            Some(&i) => out[i].1 = v,
            None => {
                at.insert(k.clone(), out.len());
                out.push((k, v));
            }
        }
    }
    Ok(out)
}

/// `k=v` in `env`, in the place of an earlier `k` if there is one.
fn put(env: &mut Vec<(String, String)>, k: &str, v: &str) {
    match env.iter_mut().find(|e| e.0 == k) {
        Some(e) => e.1 = v.to_string(),
        None => env.push((k.to_string(), v.to_string())),
    }
}

/// What `pass` takes of `vars` (going's environment). A variable that is not text, or
/// whose name no `env=` could set, is skipped: it could not be passed as it is.
fn passed(
    pass: &PassEnv,
    vars: impl Iterator<Item = (std::ffi::OsString, std::ffi::OsString)>,
) -> Vec<(String, String)> {
    let text = |(k, v): (std::ffi::OsString, std::ffi::OsString)| {
        Some((k.into_string().ok()?, v.into_string().ok()?))
    };
    let wanted = |k: &str| match pass {
        PassEnv::Names(names) => names.iter().any(|n| n == k),
        PassEnv::All => !config::goings_own(k) && config::env_name(k),
    };
    vars.filter_map(text).filter(|(k, _)| wanted(k)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::ffi::OsStrExt;
    use std::path::Path;

    fn settings(text: &str) -> Settings {
        *config::parse(Path::new("t"), text.as_bytes()).unwrap()
    }

    const NOTIFY: Readiness = Readiness {
        notify: Some("@going/run/notify"),
    };

    fn plan(s: &Settings, launch: Launch) -> Result<Plan, SpawnError> {
        Plan::new("web", s, launch, NOFILE, &NOTIFY)
    }

    const NOFILE: libc::rlimit = libc::rlimit {
        rlim_cur: 1024,
        rlim_max: 4096,
    };

    #[test]
    fn a_bare_word_is_looked_up_in_path_and_a_path_is_taken_as_it_is() {
        let p = plan(&settings("cmd=nginx -g 'daemon off;'"), Launch::Service).unwrap();
        let paths: Vec<_> = p.paths.iter().map(|c| c.to_str().unwrap()).collect();
        assert_eq!(paths[0], "/usr/local/sbin/nginx");
        assert_eq!(paths.last().unwrap(), &"/bin/nginx");
        assert_eq!(paths.len(), config::PATH.split(':').count());
        let argv: Vec<_> = p.argv.iter().map(|c| c.to_str().unwrap()).collect();
        assert_eq!(argv, ["nginx", "-g", "daemon off;"]);
        let p = plan(&settings("cmd=./bin/web"), Launch::Service).unwrap();
        assert_eq!(p.paths, [CString::new("./bin/web").unwrap()]);
        assert_eq!(p.cwd.to_str().unwrap(), "/");
        assert!(p.chroot.is_none());
    }

    #[test]
    fn limits_put_goings_original_open_files_first() {
        let s = settings("cmd=/x\nlimit_nofile=10:20\nlimit_core=0");
        let p = plan(&s, Launch::Service).unwrap();
        let l: Vec<_> = p
            .limits
            .iter()
            .map(|(r, l)| (*r, l.rlim_cur, l.rlim_max))
            .collect();
        let (nofile, core) = (libc::RLIMIT_NOFILE as c_int, libc::RLIMIT_CORE as c_int);
        assert_eq!(l, [(nofile, 1024, 4096), (nofile, 10, 20), (core, 0, 0)]);
    }

    #[test]
    fn environment_later_wins_in_the_place_of_the_first() {
        let dir = std::env::temp_dir().join(format!("going-spawn-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("env");
        std::fs::write(&file, "TOKEN=file\nPATH=/opt/bin\n").unwrap();
        let text = format!(
            "cmd=/x\nuser=root\nenv=A=1\nenv=TOKEN=key\nenv=A=2\nenv_file={}",
            file.display()
        );
        let env = environment(&settings(&text)).unwrap();
        let names: Vec<&str> = env.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(names, ["PATH", "HOME", "USER", "LOGNAME", "TOKEN", "A"]);
        let get = |k: &str| env.iter().find(|e| e.0 == k).unwrap().1.as_str();
        assert_eq!(
            (get("PATH"), get("TOKEN"), get("A")),
            ("/opt/bin", "key", "2")
        );
        std::fs::remove_file(&file).unwrap();
        let err = plan(&settings(&text), Launch::Service)
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("env_file ") && err.ends_with("No such file or directory"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn pass_env_takes_named_variables_or_all_but_goings_own() {
        let os = |k: &str, v: &str| (k.into(), v.into());
        let vars = || {
            let bad = std::ffi::OsString::from(std::ffi::OsStr::from_bytes(b"\xff"));
            vec![
                os("DATABASE_URL", "postgres://db"),
                os("TERM", "xterm"),
                os("GOING_UPGRADE", "v=2"),
                os("NOTIFY_SOCKET", "/run/systemd/notify"),
                os("LISTEN_FDS", "2"),
                os("BAD-NAME", "x"),
                ("BINARY".into(), bad),
            ]
            .into_iter()
        };
        let names = |v: Vec<(String, String)>| v.into_iter().map(|e| e.0).collect::<Vec<_>>();
        let named = PassEnv::Names(vec!["TERM".into(), "UNSET".into()]);
        assert_eq!(names(passed(&named, vars())), ["TERM"]);
        assert_eq!(
            names(passed(&PassEnv::All, vars())),
            ["DATABASE_URL", "TERM"]
        );
    }

    #[test]
    fn passed_variables_come_after_path_and_before_the_files_own() {
        // No other test of this binary reads or sets this variable.
        std::env::set_var("TEST_PASSED_TO_SERVICE", "from-going");
        let text = "cmd=/x\npass_env=TEST_PASSED_TO_SERVICE PATH\nenv=TEST_PASSED_TO_SERVICE=file";
        let env = environment(&settings(text)).unwrap();
        let get = |k: &str| env.iter().find(|e| e.0 == k).map(|e| e.1.clone());
        assert_eq!(
            get("TEST_PASSED_TO_SERVICE").as_deref(),
            Some("file"),
            "env= wins"
        );
        assert_eq!(
            get("PATH"),
            std::env::var("PATH").ok(),
            "passed PATH wins over going's"
        );
        let env = environment(&settings("cmd=/x\npass_env=TEST_PASSED_TO_SERVICE")).unwrap();
        assert!(env.contains(&("TEST_PASSED_TO_SERVICE".into(), "from-going".into())));
        assert_eq!(
            environment(&settings("cmd=/x")).unwrap().len(),
            1,
            "PATH only"
        );
    }

    #[test]
    fn a_finish_hook_gets_the_exit_and_the_services_name_and_notify_its_socket() {
        let s = settings("cmd=/srv/web\nfinish=/srv/after-web --quiet\nready=notify\nenv=A=1");
        let p = plan(
            &s,
            Launch::Finish {
                code: 256,
                signal: 9,
            },
        )
        .unwrap();
        let argv: Vec<_> = p.argv.iter().map(|c| c.to_str().unwrap()).collect();
        assert_eq!(argv, ["/srv/after-web", "--quiet", "256", "9"]);
        let env: Vec<_> = p.envp.iter().map(|c| c.to_str().unwrap()).collect();
        assert!(
            env.contains(&"GOING_SERVICE=web") && env.contains(&"A=1"),
            "{env:?}"
        );
        assert!(
            !env.iter().any(|e| e.starts_with("NOTIFY_SOCKET=")),
            "{env:?}"
        );
        let p = plan(&s, Launch::Service).unwrap();
        let env: Vec<_> = p.envp.iter().map(|c| c.to_str().unwrap()).collect();
        assert!(env.contains(&"NOTIFY_SOCKET=@going/run/notify"), "{env:?}");
        assert!(
            !env.iter().any(|e| e.starts_with("GOING_SERVICE=")),
            "{env:?}"
        );
        // No readiness asked: no socket named, whatever going has.
        let p = plan(&settings("cmd=/srv/web"), Launch::Service).unwrap();
        assert!(!p
            .envp
            .iter()
            .any(|e| e.to_str().unwrap().starts_with("NOTIFY")));
    }

    #[test]
    fn what_ran_out_is_said() {
        let e = |errno| SpawnError::Unable {
            what: "fork",
            err: io::Error::from_raw_os_error(errno),
            nofile: 1024,
        };
        assert_eq!(
            e(libc::EMFILE).to_string(),
            "unable to fork: going has used up its file descriptors (limit 1024)"
        );
        assert_eq!(
            e(libc::EAGAIN).to_string(),
            "unable to fork: Resource temporarily unavailable"
        );
    }
}
