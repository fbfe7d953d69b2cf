//! Keeping RUNDIR/state current: what the table says changed among the live processes is
//! appended, or written as a new snapshot once the changes since the last one outnumber
//! the live processes (src/state.rs has the format).
//!
//! Invariants: a process's start time is read from /proc once, and forgotten with it; one
//! that could not be read (out of fds, say) is tried again at the next change, and until
//! then its process is missing from the file. A failed write makes the next one a
//! snapshot, and is logged once, not at every change.

use std::collections::BTreeMap;
use std::io;

use crate::fingerprint::Fingerprint;
use crate::log::{Errno, Level, Logger};
use crate::output::Outputs;
use crate::rundir::RunDir;
use crate::service::{self, Table};
use crate::state::{self, Change, Entry};

use crate::sys::{self, Pid};
use std::time::Instant;

pub struct Journal {
    /// This boot's id, stamped on every snapshot.
    boot: Option<String>,
    /// Start times of live service processes (clock ticks since boot).
    starts: BTreeMap<Pid, u64>,
    /// Live processes whose start time could not be read yet.
    unread: Vec<Pid>,
    /// Changes appended since the last snapshot; None: the next write is a snapshot.
    appended: Option<usize>,
    /// The last failure to write, logged once.
    error: Option<String>,
}

impl Journal {
    pub fn new(boot: Option<String>) -> Journal {
        Journal {
            boot,
            starts: BTreeMap::new(),
            unread: Vec::new(),
            appended: None,
            error: None,
        }
    }

    pub fn boot(&self) -> Option<&str> {
        self.boot.as_deref()
    }

    /// An adopted process, whose start time the state file gave and /proc confirmed.
    pub fn knows(&mut self, pid: Pid, start: u64) {
        self.starts.insert(pid, start);
    }

    pub fn start_of(&self, pid: Pid) -> Option<u64> {
        self.starts.get(&pid).copied()
    }

    /// Tells the file what the table says changed; `snapshot` writes one whatever changed
    /// (before an upgrade's exec). `start_of` reads a process's start time (from /proc).
    pub fn save(
        &mut self,
        table: &mut Table,
        rundir: &RunDir,
        outputs: &Outputs,
        log: &mut Logger,
        snapshot: bool,
        start_of: impl Fn(Pid) -> Option<u64>,
    ) {
        let mut changes = table.take_changes();
        if changes.is_empty() && !snapshot {
            return;
        }
        if snapshot {
            self.appended = None;
        }
        changes.extend(self.unread.drain(..).map(service::Change::Began));
        self.learn_starts(table, &changes, start_of);
        let starts = &self.starts;
        let entry = |pid: Pid| {
            let live = table.live_entry(pid)?;
            Some(Entry {
                name: live.name.to_string(),
                pid,
                pgid: live.pgid,
                start: *starts.get(&pid)?,
                fingerprint: Fingerprint::V2(live.fingerprint),
                pipe: outputs.ino(pid),
                ready: live.ready,
            })
        };
        let done = |(name, fp, ok): (&str, u64, bool)| Change::Done {
            name: name.to_string(),
            fp,
            ok,
        };
        let (now, clock) = (Instant::now(), sys::monotonic_ms());
        let group = |d: service::Drain| {
            Change::Draining(state::Group {
                name: d.name.to_string(),
                pgid: d.pgid,
                kill_at: sys::deadline_ms(d.kill_at, now, clock),
            })
        };
        let write_snapshot = || {
            let entries = table.live().filter_map(|l| entry(l.pid)).map(Change::Live);
            let entries = entries.chain(table.done().map(done));
            let entries = entries.chain(table.drains().map(group));
            state::write(rundir, self.boot.as_deref(), entries, table.len()).map(|()| 0)
        };
        let appended = self.appended.map(|n| n + changes.len());
        let written = match appended.filter(|&n| n <= 2 * table.len() + 64) {
            Some(n) => {
                let changes = changes.iter().filter_map(|c| match c {
                    service::Change::Began(pid) => entry(*pid).map(Change::Live),
                    service::Change::Ready(pid) => Some(Change::Ready(*pid)),
                    service::Change::Ended(pid) => Some(Change::Ended(*pid)),
                    service::Change::Done(name) => table.done().find(|d| d.0 == name).map(done),
                    service::Change::Undone(name) => Some(Change::Undone(name.clone())),
                    service::Change::Draining(name) => table.drain_of(name).map(group),
                    service::Change::Drained(pgid) => Some(Change::Drained(*pgid)),
                });
                match state::append(rundir, changes) {
                    Ok(()) => Ok(n),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => write_snapshot(),
                    Err(e) => Err(e),
                }
            }
            None => write_snapshot(),
        };
        self.appended = written.as_ref().ok().copied();
        self.report(written.map(drop), rundir, log);
    }

    /// Start times of the processes that began, forgotten for those that ended.
    fn learn_starts(
        &mut self,
        table: &Table,
        changes: &[service::Change],
        start_of: impl Fn(Pid) -> Option<u64>,
    ) {
        for c in changes {
            let pid = match *c {
                service::Change::Ended(pid) => {
                    self.starts.remove(&pid);
                    continue;
                }
                service::Change::Began(pid) => pid,
                _ => continue,
            };
            if table.live_entry(pid).is_some() && !self.starts.contains_key(&pid) {
                match start_of(pid) {
                    Some(start) => {
                        self.starts.insert(pid, start);
                    }
                    None => self.unread.push(pid),
                }
            }
        }
    }

    /// A failure is logged once, and the recovery from it.
    fn report(&mut self, done: io::Result<()>, rundir: &RunDir, log: &mut Logger) {
        let path = rundir.path().join("state");
        match done {
            Ok(_) if self.error.take().is_some() => log.log(
                Level::Notice,
                format_args!("going: {} is written again", path.display()),
            ),
            Ok(_) => {}
            Err(e) => {
                let msg = format!("unable to write {}: {}", path.display(), Errno(&e));
                if self.error.as_ref() != Some(&msg) {
                    log.log(
                        Level::Err,
                        format_args!(
                            "going: {msg}; a restart of going would not adopt the services"
                        ),
                    );
                    self.error = Some(msg);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{parse, Parsed};
    use crate::service::Effects;
    use crate::spawn::SpawnError;
    use std::path::Path;
    use std::time::Instant;

    /// Effects that start processes of made-up pids.
    struct Pids(Pid);

    impl Effects for Pids {
        fn spawn(
            &mut self,
            _: &str,
            _: &crate::config::Settings,
            _: crate::service::Launch,
        ) -> Result<Pid, SpawnError> {
            self.0 += 1;
            Ok(self.0)
        }
        fn mark_down(&mut self, _: &str, _: Option<u64>) {}
        fn signal(&mut self, _: &str, _: Pid, _: crate::service::To, _: libc::c_int) {}
        fn kill(&mut self, _: &str, _: Pid, _: bool) {}
        fn group_alive(&mut self, _: &str, _: Pid) -> bool {
            false
        }
        fn gone(&mut self, _: Pid) -> bool {
            false
        }
        fn log(&mut self, _: Level, _: std::fmt::Arguments) {}
    }

    fn scan(names: &[&str]) -> BTreeMap<String, Parsed> {
        (names.iter())
            .map(|n| (n.to_string(), parse(Path::new(n), b"cmd=/x")))
            .collect()
    }

    #[test]
    fn appends_changes_then_compacts_and_a_start_time_unread_is_tried_again() {
        let dir = std::env::temp_dir().join(format!("going-journal-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let rundir = RunDir::open(&dir).unwrap();
        let (mut table, mut fx, now) = (Table::default(), Pids(100), Instant::now());
        let mut log = Logger::new(None);
        let outputs = Outputs::default();
        let mut j = Journal::new(Some("boot".into()));
        table.reconcile(scan(&["a", "b"]), &[], &mut fx, now);
        // b's start time cannot be read yet: it is left out, and tried again later.
        j.save(&mut table, &rundir, &outputs, &mut log, false, |pid| {
            (pid == 101).then_some(7)
        });
        let read = |boot| state::read(&rundir, boot).unwrap().entries;
        let pids = |e: Vec<Entry>| {
            let mut p: Vec<Pid> = e.iter().map(|e| e.pid).collect();
            p.sort();
            p
        };
        assert_eq!(pids(read(Some("boot"))), [101]);
        assert!(
            state::read(&rundir, Some("other")).is_err(),
            "stamped with the boot"
        );
        // a exits and restarts: appended, then b's start time is readable at that change.
        table.exited(
            101,
            crate::sys::Exit::Code(0),
            &mut fx,
            now + crate::service::MIN_RUN,
        );
        j.save(&mut table, &rundir, &outputs, &mut log, false, |_| Some(9));
        assert_eq!(pids(read(None)), [102, 103]);
        let text = std::fs::read_to_string(dir.join("state")).unwrap();
        assert_eq!(
            text.lines().count(),
            5,
            "a snapshot of 2 lines, 3 appended: {text}"
        );
        // Many restarts: the file is compacted into a snapshot again.
        let mut pid = 103;
        for i in 0..100 {
            let at = now + crate::service::MIN_RUN * (i + 2);
            table.exited(pid, crate::sys::Exit::Code(0), &mut fx, at);
            pid = fx.0;
            j.save(&mut table, &rundir, &outputs, &mut log, false, |_| Some(9));
        }
        let text = std::fs::read_to_string(dir.join("state")).unwrap();
        assert!(
            text.lines().count() <= 2 * 2 + 64 + 3,
            "{} lines",
            text.lines().count()
        );
        assert_eq!(pids(read(None)), [102, pid]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
