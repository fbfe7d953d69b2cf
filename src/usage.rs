//! What a service costs, measured only when asked (`going status`): how many processes it
//! has, the memory they hold and the CPU time they used. Nothing runs on a timer and
//! nothing is kept between requests, so an idle going pays nothing for it.
//!
//! Invariant: one request reads /proc once, whatever the number of services: one readdir
//! pass and one read of /proc/PID/stat per process, into stack buffers ([`groups`]).
//!
//! What the figures mean (going(8) says the same):
//! - processes: the live processes of the service's process group; a zombie is not one.
//! - memory: RSS summed over those processes, labelled `rss`. A page that several of them
//!   map (a library, a forking server's copy-on-write pages) counts once for each, as in
//!   ps. PSS (/proc/PID/smaps_rollup) would share such pages out, but costs a walk of the
//!   process's page tables, about 10 µs per MB resident (0.7 ms for 50 MB, 20 ms for 2 GB,
//!   measured) in going's only thread with the service's mmap lock held; RSS comes in the
//!   stat line that is read anyway.
//! - cpu: user and system time of those processes, with that of the children they have
//!   waited for (cutime, cstime: a shell script's commands) and of their zombies not yet
//!   reaped: the CPU the service's process tree used since the service started. Not in
//!   it: earlier runs of the service, processes that left the group (setsid), and
//!   orphans that going reaps as subreaper (their time goes to going's own cutime).
//!
//! A service with a cgroup (src/cgroup.rs) is measured by its cgroup instead: the
//! processes of its `cgroup.procs` take the place of the process group (so a helper that
//! left the session counts), and the memory is the cgroup's own `memory.current` where the
//! memory controller is enabled for it (labelled `cgroup`: page cache and kernel memory
//! charged to it included), else the RSS of those processes as above ([`members`]).

use std::fmt;
use std::io;
use std::time::Duration;

use crate::sys::{self, Pid};

/// What a service's processes cost now.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    pub processes: u32,
    /// Bytes, of the kind `memory_kind` says.
    pub memory: u64,
    pub memory_kind: MemoryKind,
    pub cpu_ms: u64,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum MemoryKind {
    /// Resident set sizes, summed over the processes.
    #[default]
    Rss,
    /// The cgroup's `memory.current`: what the kernel charges to it.
    Cgroup,
}

impl MemoryKind {
    /// The label shown beside the figure, and the value of `memory_kind` in the JSON.
    pub fn label(self) -> &'static str {
        match self {
            MemoryKind::Rss => "rss",
            MemoryKind::Cgroup => "cgroup",
        }
    }
}

impl Usage {
    /// The CPU time, for [`crate::log::Age`]: `1.2s`, `3m2s`.
    pub fn cpu(&self) -> Duration {
        Duration::from_millis(self.cpu_ms)
    }
}

/// The usage of each process group of `pgids` (the services' main pids: each runs in a
/// session of its own), in the same order, from one pass over /proc. A group with no
/// process left reads all zeros, and so does a pgid below 2, which is no service's (0 is
/// the kernel threads'); Err only when /proc cannot be read at all.
pub fn groups(pgids: &[Pid]) -> io::Result<Vec<Usage>> {
    let mut tally = vec![Tally::default(); pgids.len()];
    if pgids.iter().all(|&g| g <= 1) {
        return Ok(tally.into_iter().map(|t| t.usage(1, 1)).collect()); // nothing runs
    }
    sys::each_pid(|pid| {
        let Some(s) = stat(pid).filter(|s| s.pgrp > 1) else {
            return; // gone since readdir (it costs nothing any more), or no service's
        };
        // A scan of the groups for each process: next to the read of its stat file it
        // costs nothing, and it needs no sort (3 kB of code) or map.
        for (t, _) in tally.iter_mut().zip(pgids).filter(|(_, &g)| g == s.pgrp) {
            t.add(&s);
        }
    })?;
    let (page, hz) = (sys::page_size(), sys::clock_ticks());
    Ok(tally.into_iter().map(|t| t.usage(page, hz)).collect())
}

/// The usage of the processes `pids` (a service's cgroup's), read one by one; `memory`,
/// the cgroup's `memory.current` where there is one, takes the place of their RSS.
pub fn members(pids: &[Pid], memory: Option<u64>) -> Usage {
    let mut t = Tally::default();
    for s in pids.iter().filter_map(|&p| stat(p)) {
        t.add(&s);
    }
    let mut u = t.usage(sys::page_size(), sys::clock_ticks());
    if let Some(m) = memory {
        (u.memory, u.memory_kind) = (m, MemoryKind::Cgroup);
    }
    u
}

/// Sums in the units of /proc, made into a [`Usage`] once at the end.
#[derive(Clone, Copy, Default)]
struct Tally {
    processes: u32,
    pages: u64,
    ticks: u64,
}

impl Tally {
    fn add(&mut self, s: &Stat) {
        // A zombie's CPU time is still its own until its parent reaps it, and then is
        // that parent's cutime: counted once either way. It holds no memory.
        self.processes += !s.zombie as u32;
        self.pages += s.pages;
        self.ticks += s.ticks;
    }

    fn usage(self, page: u64, hz: u64) -> Usage {
        Usage {
            processes: self.processes,
            memory: self.pages * page,
            memory_kind: MemoryKind::Rss,
            cpu_ms: self.ticks * 1000 / hz,
        }
    }
}

/// The figures of one process, from /proc/PID/stat.
#[derive(Debug, PartialEq, Eq)]
struct Stat {
    pgrp: Pid,
    zombie: bool,
    /// utime + stime + cutime + cstime.
    ticks: u64,
    /// RSS.
    pages: u64,
}

fn stat(pid: Pid) -> Option<Stat> {
    // The fields read end before 600 bytes, whatever their values.
    let mut buf = [0u8; 1024];
    parse(sys::read_proc(pid, "stat", &mut buf)?)
}

/// A /proc/PID/stat line (proc(5)): fields 5 (pgrp), 14–17 (times) and 24 (rss).
fn parse(line: &[u8]) -> Option<Stat> {
    // The command name (field 2) may hold spaces and parentheses: count after the last ')'.
    let close = line.iter().rposition(|&b| b == b')')?;
    let rest = std::str::from_utf8(line.get(close + 2..)?).ok()?;
    let mut fields = rest.split(' ');
    let state = fields.next()?;
    if state == "X" {
        return None; // dead: not even a zombie
    }
    let mut next = |skip: usize| -> Option<u64> { fields.nth(skip)?.parse().ok() };
    let pgrp = Pid::try_from(next(1)?).ok()?;
    let ticks = next(8)? + next(0)? + next(0)? + next(0)?;
    let pages = next(6)?;
    Some(Stat {
        pgrp,
        zombie: state == "Z",
        ticks,
        pages,
    })
}

/// A size in bytes as people read it: `812K`, `12.3M`, `1.5G` (units of 1024, as ps and
/// top count them); at most six characters below a petabyte.
pub struct Size(pub u64);

impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        const K: u64 = 1024;
        let b = self.0;
        let kilo = b / K + (b % K >= K / 2) as u64;
        if kilo < 1000 {
            return write!(f, "{kilo}K");
        }
        let mut unit = K * K;
        for c in ['M', 'G', 'T'] {
            let tenths = b / unit * 10 + (b % unit * 10 + unit / 2) / unit;
            if tenths < 10_000 {
                return write!(f, "{}.{}{c}", tenths / 10, tenths % 10);
            }
            unit *= K;
        }
        write!(f, "{}P", b / unit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader};
    use std::os::unix::process::CommandExt;
    use std::process::{Child, Command, Stdio};

    const MB: u64 = 1 << 20;

    #[test]
    fn sizes_as_people_read_them() {
        let s = |b: u64| Size(b).to_string();
        assert_eq!(s(0), "0K");
        assert_eq!(s(4096), "4K");
        assert_eq!(s(812 * 1024 + 100), "812K");
        assert_eq!(s(999 * 1024), "999K");
        assert_eq!(s(1000 * 1024), "1.0M");
        assert_eq!(s(12 * MB + 3 * MB / 10 + 1), "12.3M");
        assert_eq!(s(999 * MB + 95 * MB / 100), "999.9M");
        assert_eq!(s(999 * MB + 97 * MB / 100), "1.0G");
        assert_eq!(s(3 * 1024 * MB / 2), "1.5G");
        assert_eq!(s(5 << 40), "5.0T");
        assert_eq!(s(u64::MAX), "16383P");
    }

    #[test]
    fn stat_lines_are_read_after_the_last_parenthesis() {
        // pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt
        // utime stime cutime cstime priority nice threads itreal starttime vsize rss …
        let line = b"42 (a) (b \xff) S 1 40 40 0 -1 4194560 100 0 0 0 \
                     7 3 20 10 20 0 1 0 123456 10000000 2500 18446744073709551615 1 1 0 0 0 0\n";
        let want = Stat {
            pgrp: 40,
            zombie: false,
            ticks: 40,
            pages: 2500,
        };
        assert_eq!(parse(line), Some(want));
        let zombie = b"43 (sh) Z 42 40 40 0 -1 4194564 0 0 0 0 30 1 0 0 20 0 1 0 5 0 0";
        let z = parse(zombie).unwrap();
        assert!(z.zombie && z.ticks == 31 && z.pages == 0);
        let mut t = Tally::default();
        t.add(&parse(line).unwrap());
        t.add(&z);
        assert_eq!(
            t.usage(4096, 100),
            Usage {
                processes: 1, // the zombie's CPU time counts, the zombie does not
                memory: 2500 * 4096,
                memory_kind: MemoryKind::Rss,
                cpu_ms: 710,
            }
        );
        assert_eq!(parse(b"44 (x) X 1 44"), None);
        assert_eq!(parse(b"45 (cut short) S 1 45 45 0"), None);
    }

    /// `script` under sh, in a process group of its own, once it has printed `ready`;
    /// the whole group is killed when this is dropped.
    struct Group(Child);

    impl Group {
        fn start(script: &str) -> Group {
            let mut child = Command::new("sh")
                .args(["-c", script])
                .process_group(0)
                .stdout(Stdio::piped())
                .spawn()
                .unwrap();
            let mut line = String::new();
            let out = child.stdout.as_mut().unwrap();
            BufReader::new(out).read_line(&mut line).unwrap();
            let group = Group(child);
            assert_eq!(line, "ready\n", "{script}"); // python3 missing fails here
            group
        }

        fn pgid(&self) -> Pid {
            self.0.id() as Pid
        }
    }

    impl Drop for Group {
        fn drop(&mut self) {
            // The test is over: should the group be gone already, there is nothing to do.
            let _ = sys::kill_group(self.pgid(), libc::SIGKILL);
            let _ = self.0.wait();
        }
    }

    const HOLD: &str = "import time; time.sleep(600)";

    #[test]
    fn a_service_holding_50_mb_shows_them() {
        let g = Group::start(&format!(
            "exec python3 -c \"x = b'x' * (50 << 20); print('ready', flush=True); {HOLD}\""
        ));
        let u = groups(&[g.pgid()]).unwrap()[0];
        assert_eq!(u.processes, 1);
        assert_eq!(u.memory_kind, MemoryKind::Rss);
        assert!(u.memory >= 50 * MB && u.memory < 200 * MB, "{u:?}");
    }

    #[test]
    fn cpu_burnt_by_the_service_and_by_the_children_it_waited_for() {
        let burn = "import time\nwhile time.process_time() < 0.25: pass";
        // Burnt by the process itself.
        let itself = Group::start(&format!(
            "exec python3 -c \"{burn}\nprint('ready', flush=True)\n{HOLD}\""
        ));
        // Burnt by a child that the service's shell has waited for: its cutime.
        let child = Group::start(&format!(
            "python3 -c \"{burn}\" && echo ready && exec sleep 600"
        ));
        let u = groups(&[itself.pgid(), child.pgid()]).unwrap();
        assert!(u[0].cpu_ms >= 200 && u[0].cpu_ms < 10_000, "{:?}", u[0]);
        assert!(u[1].cpu_ms >= 200 && u[1].cpu_ms < 10_000, "{:?}", u[1]);
        assert_eq!((u[0].processes, u[1].processes), (1, 1));
        assert_eq!(
            crate::log::Age(u[0].cpu()).to_string().chars().last(),
            Some('s')
        );
    }

    #[test]
    fn one_scan_counts_the_processes_of_every_group() {
        let four = Group::start("sleep 600 & sleep 600 & sleep 600 & echo ready; wait");
        let one = Group::start("echo ready; exec sleep 600");
        let pgids = [four.pgid(), one.pgid(), four.pgid(), i32::MAX, 0, 1];
        let u = groups(&pgids).unwrap();
        let counts: Vec<u32> = u.iter().map(|u| u.processes).collect();
        assert_eq!(counts, [4, 1, 4, 0, 0, 0]);
        assert!(u[0].memory > u[1].memory && u[1].memory > 0, "{u:?}");
        assert_eq!((u[3], u[4]), (Usage::default(), Usage::default()));
    }
}
