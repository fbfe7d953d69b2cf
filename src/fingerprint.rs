//! The settings fingerprint: a 64-bit hash of what a service file says, saved in
//! RUNDIR/state, in RUNDIR/down and in the handover of an upgrade, so that a going started
//! later — perhaps a newer binary — can tell whether a running process still has the
//! settings of its file.
//!
//! It is a format that outlives a binary, so it is written on purpose: version 2 is FNV-1a
//! over one `key=value` record per setting that differs from its default, in a fixed
//! order, every free-form value length-prefixed. A key left at its default contributes
//! nothing, so a binary that knows more keys agrees with an older one about every file
//! that does not use them. Version 1, going 0.1.0's, hashed the `Debug` text of its
//! `Settings`; it is computed here as that release did, for what it started.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use crate::config::Settings;

/// A fingerprint as stored, with the version of its encoding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fingerprint {
    /// going 0.1.0: FNV-1a of the `Debug` text of its `Settings`.
    V1(u64),
    /// The stable encoding of [`of`].
    V2(u64),
}

impl Fingerprint {
    /// Whether `settings` are the ones this fingerprint was taken of.
    pub fn matches(self, settings: &Settings) -> bool {
        match self {
            Fingerprint::V1(fp) => legacy(settings) == Some(fp),
            Fingerprint::V2(fp) => of(settings) == fp,
        }
    }
}

/// FNV-1a, 64 bits: small, and the same on every machine and in every release.
#[derive(Clone, Copy)]
pub struct Fnv(pub u64);

impl Default for Fnv {
    fn default() -> Fnv {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv {
    pub fn bytes(mut self, bytes: &[u8]) -> Fnv {
        for &b in bytes {
            self.0 = (self.0 ^ b as u64).wrapping_mul(0x100_0000_01b3);
        }
        self
    }
}

/// The records of one fingerprint, as text before it is hashed (kept as text so that a
/// test can show what differs).
#[derive(Default)]
struct Records(String);

impl Records {
    /// A record whose value is free text: length-prefixed, so no value can fake another.
    fn text(&mut self, key: &str, values: &[&str]) {
        let _ = write!(self.0, "{key}=");
        for v in values {
            let _ = write!(self.0, "{}:{v};", v.len());
        }
        self.0.push('\n');
    }

    /// A record whose value is numbers and never contains a newline.
    fn plain(&mut self, key: &str, value: std::fmt::Arguments) {
        let _ = writeln!(self.0, "{key}={value}");
    }
}

/// The records of `s`: one per setting that differs from its default, in this order. A
/// new key adds a record here, written only when the key is not at its default.
fn records(s: &Settings) -> String {
    let d = Settings::default();
    let mut r = Records::default();
    let words: Vec<&str> = s.cmd.iter().map(String::as_str).collect();
    r.text("cmd", &words);
    if let Some(c) = &s.creds {
        let uid = c.uid.map_or("-".to_string(), |u| u.to_string());
        let groups: Vec<String> = c.groups.iter().map(u32::to_string).collect();
        r.plain(
            "creds",
            format_args!("{uid},{},{}", c.gid, groups.join(",")),
        );
    }
    for (key, vars) in [("user_env", &s.user_env[..]), ("env", &s.env[..])] {
        if !vars.is_empty() {
            let flat: Vec<&str> = vars.iter().flat_map(|(k, v)| [&k[..], &v[..]]).collect();
            r.text(key, &flat);
        }
    }
    let path = |p: &PathBuf| p.to_string_lossy().into_owned();
    if let Some(p) = &s.env_file {
        r.text("env_file", &[&path(p)]);
    }
    if s.cwd != d.cwd {
        r.text("cwd", &[&path(&s.cwd)]);
    }
    if let Some(p) = &s.chroot {
        r.text("chroot", &[&path(p)]);
    }
    if s.umask != d.umask {
        r.plain("umask", format_args!("{:o}", s.umask));
    }
    if let Some(n) = s.nice {
        r.plain("nice", format_args!("{n}"));
    }
    for (res, soft, hard) in &s.limits {
        r.plain("limit", format_args!("{res},{soft},{hard}"));
    }
    if s.log != d.log {
        r.plain("log", format_args!("{}", s.log as u8));
    }
    if s.stop_signal != d.stop_signal {
        r.plain("stop_signal", format_args!("{}", s.stop_signal));
    }
    if s.stop_timeout != d.stop_timeout {
        r.plain(
            "stop_timeout",
            format_args!("{}", s.stop_timeout.as_millis()),
        );
    }
    life(&mut r, s.life());
    // The cgroup limits (memory_max, …) are no part of it: they are written in place, to a
    // process adopted as to one running, so no difference in them is a reason to restart.
    r.0
}

/// The records of the lifecycle keys (readiness, order, restart policy, finish hook),
/// each only where it is not at its default.
fn life(r: &mut Records, l: &crate::config::Life) {
    use crate::config::{PassEnv, Ready, Restart};
    match l.ready {
        Some(Ready::Fd(n)) => r.plain("ready", format_args!("fd:{n}")),
        Some(Ready::Notify) => r.plain("ready", format_args!("notify")),
        None => {}
    }
    if let Some(t) = l.ready_timeout {
        r.plain("ready_timeout", format_args!("{}", t.as_millis()));
    }
    if !l.after.is_empty() {
        let names: Vec<&str> = l.after.iter().map(String::as_str).collect();
        r.text("after", &names);
    }
    match l.restart {
        Restart::Always => {}
        Restart::OnFailure => r.plain("restart", format_args!("on-failure")),
        Restart::Never => r.plain("restart", format_args!("never")),
    }
    if !l.ok_exit.is_empty() {
        let codes: Vec<String> = l.ok_exit.iter().map(u8::to_string).collect();
        r.plain("ok_exit", format_args!("{}", codes.join(",")));
    }
    if !l.finish.is_empty() {
        let words: Vec<&str> = l.finish.iter().map(String::as_str).collect();
        r.text("finish", &words);
    }
    if l.essential {
        r.plain("essential", format_args!("yes"));
    }
    match &l.pass_env {
        Some(PassEnv::All) => r.plain("pass_env", format_args!("*")),
        Some(PassEnv::Names(names)) => {
            let names: Vec<&str> = names.iter().map(String::as_str).collect();
            r.text("pass_env", &names);
        }
        None => {}
    }
}

/// The fingerprint of `s`, version 2.
pub fn of(s: &Settings) -> u64 {
    Fnv::default().bytes(records(s).as_bytes()).0
}

/// What going 0.1.0 would have computed for a file with these settings: None when the
/// file uses a key that release did not know (it could not have started it).
pub fn legacy(s: &Settings) -> Option<u64> {
    // A file with a key that 0.1.0 did not know is none it could have started (but the
    // cgroup limits, written in place to what it started).
    if s.life.is_some() {
        return None;
    }
    // The fields are read by `Debug` alone: its text is what 0.1.0 hashed.
    #[allow(dead_code)]
    #[derive(Debug)]
    struct Settings<'a> {
        cmd: &'a Vec<String>,
        creds: Option<Creds<'a>>,
        user_env: &'a [(String, String)],
        env: &'a Vec<(String, String)>,
        env_file: &'a Option<PathBuf>,
        cwd: &'a PathBuf,
        chroot: &'a Option<PathBuf>,
        umask: u32,
        nice: Option<i32>,
        limits: &'a Vec<(i32, u64, u64)>,
        log: bool,
        stop_signal: i32,
        stop_timeout: Duration,
    }
    #[allow(dead_code)]
    #[derive(Debug)]
    struct Creds<'a> {
        uid: Option<u32>,
        gid: u32,
        groups: &'a Vec<u32>,
    }
    let v1 = Settings {
        cmd: &s.cmd,
        creds: s.creds.as_ref().map(|c| Creds {
            uid: c.uid,
            gid: c.gid,
            groups: &c.groups,
        }),
        user_env: &s.user_env[..],
        env: &s.env,
        env_file: &s.env_file,
        cwd: &s.cwd,
        chroot: &s.chroot,
        umask: s.umask,
        nice: s.nice,
        limits: &s.limits,
        log: s.log,
        stop_signal: s.stop_signal,
        stop_timeout: s.stop_timeout,
    };
    Some(Fnv::default().bytes(format!("{v1:?}").as_bytes()).0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn settings(text: &str) -> Settings {
        *crate::config::parse(Path::new("t"), text.as_bytes()).unwrap()
    }

    /// Pinned: these numbers are in state files and handovers on machines now. A change
    /// here restarts every service of everyone who upgrades.
    #[test]
    fn fingerprints_are_pinned() {
        let plain = settings("cmd=sleep 1000\n");
        assert_eq!(records(&plain), "cmd=5:sleep;4:1000;\n");
        assert_eq!(of(&plain), 0xa318_9d03_a20f_5c9f, "{:#x}", of(&plain));
        let full = settings(
            "cmd=/bin/sh -c 'echo a; exec sleep 9'\nuser=0\ngroup=0\nenv=A=1\nenv_file=/e\n\
             cwd=/srv\nchroot=/j\numask=027\nnice=5\nlimit_nofile=10:20\nlog=null\n\
             stop_signal=INT\nstop_timeout=3\n",
        );
        assert_eq!(of(&full), 0xc8a7_9ced_bd75_d6ed, "{:#x}", of(&full));
        // going 0.1.0's numbers for the same files, as its binary computed them.
        assert_eq!(
            legacy(&plain),
            Some(0x214c_fed3_4f7a_d0a7),
            "{:#x?}",
            legacy(&plain)
        );
        assert_eq!(
            legacy(&full),
            Some(0x23fb_2971_9f83_59b2),
            "{:#x?}",
            legacy(&full)
        );
        // The cgroup limits are written in place: none of them makes another fingerprint,
        // of either version, so none restarts what runs, adopted or not.
        let limited = settings(
            "cmd=sleep 1000
memory_max=100M
cpu_max=50%
pids_max=64
",
        );
        assert_eq!(of(&limited), of(&plain));
        assert_eq!(legacy(&limited), legacy(&plain));
    }

    #[test]
    fn a_default_contributes_nothing_and_any_change_counts() {
        let plain = settings("cmd=sleep 1000\n");
        let spelled = settings("cmd=sleep 1000\numask=022\ncwd=/\nlog=syslog\nstop_timeout=10\n");
        assert_eq!(of(&plain), of(&spelled));
        for other in [
            "cmd=sleep 1001",
            "cmd=sleep 1000\nenv=A=1",
            "cmd=sleep 1000\numask=077",
            "cmd=sleep 1000\nstop_timeout=3",
            "cmd=sleep 1000\nlog=null",
            "cmd='sleep 1000'",
        ] {
            assert_ne!(of(&plain), of(&settings(other)), "{other}");
        }
        // Length prefixes: words cannot be shifted from one into the next.
        assert_ne!(of(&settings("cmd=a 'b;1:c'")), of(&settings("cmd=a b c")));
    }

    #[test]
    fn lifecycle_keys_count_only_off_their_defaults() {
        let plain = settings("cmd=sleep 1000\n");
        let spelled = settings("cmd=sleep 1000\nrestart=always\nessential=no\n");
        assert_eq!(of(&plain), of(&spelled));
        assert_eq!(legacy(&spelled), None, "0.1.0 knew no restart= key");
        let mut seen = std::collections::BTreeSet::new();
        for other in [
            "ready=notify",
            "ready=fd:3",
            "ready=fd:4",
            "ready_timeout=5",
            "after=db",
            "after=db web",
            "restart=never",
            "restart=on-failure",
            "ok_exit=3",
            "finish=/bin/true",
            "essential=yes",
            "pass_env=*",
            "pass_env=TERM",
            "pass_env=TERM LANG",
        ] {
            let fp = of(&settings(&format!("cmd=sleep 1000\n{other}\n")));
            assert_ne!(fp, of(&plain), "{other}");
            assert!(seen.insert(fp), "{other}: the same as another");
        }
        // Where the key is in the file is no setting.
        assert_eq!(
            of(&settings("cmd=sleep 1000\nafter=db\n")),
            of(&settings("# db first\n\ncmd=sleep 1000\nafter=db\n"))
        );
    }

    #[test]
    fn versions_are_told_apart() {
        let s = settings("cmd=sleep 1000\n");
        assert!(Fingerprint::V2(of(&s)).matches(&s));
        assert!(Fingerprint::V1(legacy(&s).unwrap()).matches(&s));
        assert!(!Fingerprint::V1(of(&s)).matches(&s));
        assert!(!Fingerprint::V2(legacy(&s).unwrap()).matches(&s));
    }
}
