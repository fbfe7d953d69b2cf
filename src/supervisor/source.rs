//! What woke the loop: each fd going watches is registered in epoll with the token of its
//! event source, and each token decodes to exactly one source.
//!
//! Invariant: the kind lives in the high 32 bits and the id (a pid, a client's number) in
//! the low 32, so no two sources share a token; a token that decodes to nothing is logged,
//! never guessed at.

use crate::sys::Pid;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// The self-pipe of the signal handlers.
    Signals,
    /// inotify on CONFDIR.
    Inotify,
    /// The syslog socket or standard error can take the messages that wait.
    Log,
    /// The control socket's listener: clients to accept.
    Control,
    /// A control client, by its number.
    Client(u32),
    /// The output pipe of a service process.
    Output(Pid),
    /// The exec-error pipe of a child that has not exec'd yet.
    ExecReport(Pid),
    /// The pidfd of an adopted process, which is not going's child.
    Pidfd(Pid),
    /// The sd_notify socket (`ready=notify`).
    Notify,
    /// The readiness pipe of a service process (`ready=fd:N`).
    ReadyFd(Pid),
    /// A client following services' output (`going log -f`), by its number.
    Follower(u32),
    /// The signalfd of SIGCHLD: a child that ended.
    Exits,
    /// The `cgroup.events` of a service's cgroup, by its number: populated or empty.
    Cgroup(u32),
    /// The `memory.events` of a service's cgroup, by its number: the OOM killer's kills.
    Oom(u32),
}

impl Source {
    pub fn token(self) -> u64 {
        let (kind, id) = match self {
            Source::Signals => (1, 0),
            Source::Inotify => (2, 0),
            Source::Log => (3, 0),
            Source::Control => (4, 0),
            Source::Client(id) => (5, id),
            Source::Output(pid) => (6, pid as u32),
            Source::ExecReport(pid) => (7, pid as u32),
            Source::Pidfd(pid) => (8, pid as u32),
            Source::Notify => (9, 0),
            Source::ReadyFd(pid) => (10, pid as u32),
            Source::Follower(id) => (11, id),
            Source::Exits => (12, 0),
            Source::Cgroup(id) => (13, id),
            Source::Oom(id) => (14, id),
        };
        (kind as u64) << 32 | id as u64
    }

    pub fn from_token(token: u64) -> Option<Source> {
        let (kind, id) = ((token >> 32) as u32, token as u32);
        let pid = id as Pid;
        Some(match (kind, id) {
            (1, 0) => Source::Signals,
            (2, 0) => Source::Inotify,
            (3, 0) => Source::Log,
            (4, 0) => Source::Control,
            (5, id) => Source::Client(id),
            (6, _) if pid > 0 => Source::Output(pid),
            (7, _) if pid > 0 => Source::ExecReport(pid),
            (8, _) if pid > 0 => Source::Pidfd(pid),
            (9, 0) => Source::Notify,
            (10, _) if pid > 0 => Source::ReadyFd(pid),
            (11, id) => Source::Follower(id),
            (12, 0) => Source::Exits,
            (13, id) => Source::Cgroup(id),
            (14, id) => Source::Oom(id),
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_source_round_trips_and_no_two_share_a_token() {
        let all = [
            Source::Signals,
            Source::Inotify,
            Source::Log,
            Source::Control,
            Source::Client(0),
            Source::Client(u32::MAX),
            Source::Output(1),
            Source::Output(Pid::MAX),
            Source::ExecReport(42),
            Source::Pidfd(42),
            Source::Notify,
            Source::ReadyFd(42),
            Source::Follower(0),
            Source::Follower(u32::MAX),
            Source::Exits,
            Source::Cgroup(0),
            Source::Cgroup(u32::MAX),
            Source::Oom(7),
        ];
        for s in all {
            assert_eq!(Source::from_token(s.token()), Some(s), "{s:?}");
        }
        let tokens: std::collections::BTreeSet<u64> = all.iter().map(|s| s.token()).collect();
        assert_eq!(tokens.len(), all.len());
        for junk in [
            0,
            1,
            12 << 32 | 1,
            15 << 32,
            1 << 32 | 5,
            6 << 32,
            9 << 32 | 1,
            u64::MAX,
        ] {
            assert_eq!(Source::from_token(junk), None, "{junk:#x}");
        }
    }
}
