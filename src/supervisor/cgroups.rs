//! The services' cgroups as the supervisor keeps them (src/cgroup.rs makes and reads
//! them): one per service, made before its first start and kept while the service is in
//! the table; its limits written before each start and changed in place on a reload; its
//! `cgroup.events` watched, so that the loop learns when the service is empty; its
//! `memory.events` watched while a memory limit asks for the OOM killer's word; removed
//! once the service is gone.
//!
//! Invariants: a service has an entry here only while its processes are in its cgroup (an
//! adopted process found elsewhere is moved in, or its service goes without one until its
//! next start); each entry's open files are in epoll under its number's
//! [`Source::Cgroup`] and [`Source::Oom`] exactly while it is here; the controllers of the
//! services' cgroups are the union of what the limits written need.

use std::os::fd::{AsRawFd, RawFd};
use std::path::{Path, PathBuf};

use super::source::Source;
use crate::cgroup::{self, Available, Cgroups, Controller, Controllers, Group, Killed, Limits};
use crate::spawn::SpawnError;
use crate::sys::{self, Epoll, Pid};

/// One service's cgroup, watched; its name is the last part of its path.
struct Kept {
    group: Group,
    /// The number of its event sources.
    id: u32,
    /// The limits written to its files (None: the kernel's defaults), if known: a cgroup
    /// found, not made, holds what an earlier going wrote.
    written: Option<Option<Box<Limits>>>,
    /// Whether a child may be made in it by clone3(CLONE_INTO_CGROUP): made by this going
    /// and never killed through `cgroup.kill`. Linux (6.18 at least) kills every child
    /// made so in a cgroup once `cgroup.kill` was written to it; one that moves itself in
    /// is spared.
    clone_into: bool,
}

impl Kept {
    fn name(&self) -> &str {
        (self.group.path().file_name())
            .and_then(|n| n.to_str())
            .unwrap_or("")
    }

    fn limits(&self) -> &Limits {
        match &self.written {
            Some(Some(l)) => l,
            _ => &Limits::NONE,
        }
    }
}

/// going's subtree and its services' cgroups: a list, not a map, searched by name (a few
/// hundred at most; a map's nodes, half full, cost going twice the memory), of boxes (the
/// allocator serves many small blocks from pages it has, where one growing array takes a
/// new mapping of several of its size: 36 kB of VmPeak at 100 services).
#[allow(clippy::vec_box)] // the boxes are the point: see above
pub struct Groups {
    tree: Cgroups,
    kept: Vec<Box<Kept>>,
    next_id: u32,
}

impl Groups {
    pub fn new(tree: Cgroups) -> Groups {
        Groups {
            tree,
            kept: Vec::new(),
            next_id: 0,
        }
    }

    fn get(&self, name: &str) -> Option<&Kept> {
        self.kept.iter().find(|k| k.name() == name).map(|k| &**k)
    }

    fn get_mut(&mut self, name: &str) -> Option<&mut Kept> {
        self.kept
            .iter_mut()
            .find(|k| k.name() == name)
            .map(|k| &mut **k)
    }

    /// going's subtree, for the start-up line.
    pub fn path(&self) -> &Path {
        self.tree.path()
    }

    pub fn available(&self) -> &Available {
        self.tree.available()
    }

    /// The cgroups an earlier going left (after `kill -9`, or before an upgrade's exec),
    /// watched from now on; what could not be opened, said.
    pub fn found(&mut self, epoll: &Epoll) -> Vec<cgroup::Error> {
        let names = match self.tree.existing() {
            Ok(names) => names,
            Err(e) => return vec![e],
        };
        let mut problems = Vec::new();
        for name in names {
            if let Err(e) = self.ensure(&name, epoll) {
                problems.push(e);
            }
        }
        problems
    }

    fn index(&self, name: &str) -> Option<usize> {
        self.kept.iter().position(|k| k.name() == name)
    }

    /// The cgroup of `name`, made and watched if it is not yet: its index in `kept`.
    fn ensure(&mut self, name: &str, epoll: &Epoll) -> Result<usize, cgroup::Error> {
        if let Some(i) = self.index(name) {
            return Ok(i);
        }
        {
            let group = self.tree.group(name)?;
            let id = self.next_id;
            let token = Source::Cgroup(id).token();
            if let Err(e) = epoll.add_priority(group.events_fd(), token) {
                return Err(cgroup::Error::new("watch", group.events_path(), e));
            }
            self.next_id = self.next_id.wrapping_add(1);
            let written = group.fresh().then_some(None);
            let clone_into = group.fresh();
            let kept = Kept {
                group,
                id,
                written,
                clone_into,
            };
            self.kept.push(Box::new(kept));
        }
        Ok(self.kept.len() - 1)
    }

    /// Before a process of `name` starts: its cgroup made, the controllers its `limits`
    /// need handed down, the limits written; the cgroup's directory, and whether the child
    /// may be made in it (else it moves itself in).
    pub fn prepare(
        &mut self,
        name: &str,
        limits: &Limits,
        epoll: &Epoll,
    ) -> Result<(RawFd, bool), SpawnError> {
        let i = self.ensure(name, epoll).map_err(|e| match e.errno() {
            // Said as a fork or a pipe that ran out of them is.
            Some(libc::EMFILE | libc::ENFILE) => SpawnError::Unable {
                what: "open its cgroup",
                err: std::io::Error::from_raw_os_error(e.errno().unwrap_or(0)),
                nofile: sys::nofile_limit().rlim_cur,
            },
            _ => SpawnError::Cgroup(e.to_string()),
        })?;
        self.write_limits(i, limits, epoll)
            .map_err(SpawnError::Cgroup)?;
        let kept = &self.kept[i];
        Ok((kept.group.dir_fd(), kept.clone_into))
    }

    /// Writes `limits` to the cgroup `i` of `kept`, what differs from what it holds; the
    /// controllers they need enabled first, and those no service needs any more disabled
    /// after. Every failure is in the message.
    fn write_limits(&mut self, i: usize, limits: &Limits, epoll: &Epoll) -> Result<(), String> {
        let kept = &self.kept[i];
        let nothing = limits.is_empty() && self.tree.enabled().is_empty();
        if kept.written.is_some() && kept.limits() == limits || kept.written.is_none() && nothing {
            self.kept[i].written = Some(None);
            return Ok(());
        }
        let wanted = self.wanted(Some(i)).union(limits.controllers());
        let mut problems = Vec::new();
        if let Err(e) = self.tree.set_controllers(wanted) {
            problems.push(e.to_string());
        }
        let kept = &mut self.kept[i];
        let old = kept.written.as_ref().map(|_| kept.limits());
        problems.extend(kept.group.apply(old, limits).iter().map(|e| e.to_string()));
        kept.written = Some((!limits.is_empty()).then(|| Box::new(*limits)));
        let oom = limits.controllers().contains(Controller::Memory);
        self.watch_oom(i, oom, epoll);
        if let Err(e) = self.tree.set_controllers(self.wanted(None)) {
            problems.push(e.to_string());
        }
        match problems.is_empty() {
            true => Ok(()),
            false => Err(problems.join("; ")),
        }
    }

    /// The settings of `name` changed what its cgroup holds: written in place, if it has
    /// one (else at its next start). Err: the message.
    pub fn changed(&mut self, name: &str, limits: &Limits, epoll: &Epoll) -> Result<(), String> {
        match self.index(name) {
            Some(i) => self.write_limits(i, limits, epoll),
            None => Ok(()),
        }
    }

    /// The controllers the limits written need, but those of cgroup `except`.
    fn wanted(&self, except: Option<usize>) -> Controllers {
        (self.kept.iter().enumerate())
            .filter(|(i, _)| Some(*i) != except)
            .fold(Controllers::NONE, |c, (_, k)| {
                c.union(k.limits().controllers())
            })
    }

    /// Watches (or stops watching) the `memory.events` of cgroup `i`, for its OOM kills.
    fn watch_oom(&mut self, i: usize, on: bool, epoll: &Epoll) {
        let kept = &mut self.kept[i];
        if !on {
            if let Some(f) = kept.group.unwatch_oom() {
                epoll.delete(f.as_raw_fd());
            }
            return;
        }
        // Without it the kills are still counted, at the next look; a failure is no
        // reason not to start.
        if let Ok(Some(fd)) = kept.group.watch_oom() {
            if epoll
                .add_priority(fd, Source::Oom(kept.id).token())
                .is_err()
            {
                kept.group.unwatch_oom();
            }
        }
    }

    /// Whether a process of `name` is in its cgroup; None when it has none.
    pub fn populated(&self, name: &str) -> Option<Result<bool, cgroup::Error>> {
        self.get(name).map(|k| k.group.populated())
    }

    /// `sig` to every process of `name`'s cgroup but those of group `but`; None when it
    /// has none.
    pub fn signal(
        &self,
        name: &str,
        sig: libc::c_int,
        but: Option<Pid>,
    ) -> Option<Result<usize, cgroup::Error>> {
        self.get(name).map(|k| k.group.signal_each(sig, but))
    }

    /// SIGKILL to everything in `name`'s cgroup; None when it has none.
    pub fn kill(&mut self, name: &str) -> Option<Result<Killed, cgroup::Error>> {
        let i = self.index(name)?;
        let kept = &mut self.kept[i];
        let killed = kept.group.kill();
        if matches!(killed, Ok(Killed::All)) {
            kept.clone_into = false; // see `Kept::clone_into`
        }
        Some(killed)
    }

    /// The services that have a cgroup, but those `keep` says: none, mostly, so nothing
    /// is allocated for every service.
    pub fn names_but(&self, keep: impl Fn(&str) -> bool) -> Vec<String> {
        (self.kept.iter())
            .filter(|k| !keep(k.name()))
            .map(|k| k.name().to_string())
            .collect()
    }

    /// The service whose cgroup's events have number `id`.
    pub fn by_id(&self, id: u32) -> Option<&str> {
        self.kept.iter().find(|k| k.id == id).map(|k| k.name())
    }

    /// The OOM kills in `name`'s cgroup since the last look, with the memory limits that
    /// brought them (`memory_max=100M`); 0 when there were none.
    pub fn oom_kills(&mut self, name: &str) -> Result<(u64, String), cgroup::Error> {
        let Some(kept) = self.get_mut(name) else {
            return Ok((0, String::new()));
        };
        let n = kept.group.new_oom_kills()?;
        let limits = kept.limits();
        let shown: Vec<String> = [cgroup::Key::MemoryMax, cgroup::Key::MemoryHigh]
            .into_iter()
            .chain([cgroup::Key::MemorySwapMax])
            .filter_map(|k| limits.show(k))
            .collect();
        Ok((n, shown.join(" ")))
    }

    /// Where the cgroup of `name` is, and what its files say, for `going status`.
    pub fn usage(&self, name: &str) -> Option<(PathBuf, cgroup::Usage)> {
        let kept = self.get(name)?;
        Some((kept.group.path().to_path_buf(), kept.group.usage()))
    }

    /// The services whose cgroups hold processes, but none `adopted` says is theirs: what
    /// a run left, or a run whose main process is gone, to stop before they start.
    pub fn leftovers(&self, adopted: impl Fn(&str) -> bool) -> Vec<String> {
        (self.kept.iter())
            .filter(|k| !adopted(k.name()) && k.group.populated().unwrap_or(true))
            .map(|k| k.name().to_string())
            .collect()
    }

    /// The adopted process `pid` of `name` is its service's: in its cgroup, or moved there
    /// with the rest of its process group (it was started without one: by an older
    /// going, or with `-c off`). `leader`: `pid` is a live process; else it is a process
    /// group being stopped whose leader is gone, and what is left of it is moved. Err:
    /// why not, and the service goes on without a cgroup until its next start.
    pub fn adopt(
        &mut self,
        name: &str,
        pid: Pid,
        leader: bool,
        epoll: &Epoll,
    ) -> Result<bool, String> {
        let i = self.ensure(name, epoll).map_err(|e| e.to_string())?;
        let kept = &self.kept[i];
        let pids = kept.group.pids().map_err(|e| e.to_string())?;
        if leader && pids.contains(&pid) {
            return Ok(false);
        }
        let group = match leader {
            true => sys::process_group(pid).unwrap_or(pid),
            false => pid,
        };
        let mut moving = if leader { vec![pid] } else { Vec::new() };
        let members = sys::group_members(group).unwrap_or_default();
        moving.extend((members.into_iter()).filter(|p| *p != pid && !pids.contains(p)));
        if moving.is_empty() {
            return Ok(false);
        }
        for p in moving {
            match kept.group.attach(p) {
                Ok(()) => {}
                // Gone meanwhile: nothing to move.
                Err(e) if e.errno() == Some(libc::ESRCH) && (p != pid || !leader) => {}
                Err(e) => {
                    let msg = e.to_string();
                    self.forget(name, epoll);
                    return Err(msg);
                }
            }
        }
        Ok(true)
    }

    /// Stops watching the cgroup of `name` and forgets it, leaving it where it is.
    fn forget(&mut self, name: &str, epoll: &Epoll) -> Option<Kept> {
        let at = self.kept.iter().position(|k| k.name() == name)?;
        let mut kept = self.kept.swap_remove(at);
        epoll.delete(kept.group.events_fd());
        if let Some(f) = kept.group.unwatch_oom() {
            epoll.delete(f.as_raw_fd());
        }
        Some(*kept)
    }

    /// The service `name` is gone: its cgroup is removed, with the controllers only it
    /// needed. Ok(false): processes are still in it (a process stuck in the kernel), and
    /// it is left for a later going.
    pub fn remove(&mut self, name: &str, epoll: &Epoll) -> Result<bool, cgroup::Error> {
        if self.forget(name, epoll).is_none() {
            return Ok(true);
        }
        let removed = self.tree.remove(name)?;
        self.tree.set_controllers(self.wanted(None))?;
        Ok(removed)
    }

    /// Every service is gone and going exits: the cgroups it made for them go too, as far
    /// as they are empty.
    pub fn close(self) -> Result<(), cgroup::Error> {
        self.tree.close()
    }
}
