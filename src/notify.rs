//! Readiness, as services say it: systemd's sd_notify datagrams (`ready=notify`) on a
//! socket of going's, and s6's notification fd (`ready=fd:N`), a pipe the service writes a
//! line to. This module owns the socket and reads both; which service a message is for and
//! what it changes is the service table's business.
//!
//! Invariant: nothing a sender writes is believed beyond what the kernel vouches for. A
//! message counts only with the sender's credentials (SCM_CREDENTIALS, filled in by the
//! kernel) and a process group read from /proc while the sender still exists; a datagram is
//! taken whole or not at all; what is kept of it is bounded (flags and an escaped, cut
//! STATUS text); file descriptors sent along are never kept; and one call reads at most
//! [`BATCH`] datagrams, so a flood cannot hold the loop.
//!
//! The socket lives in the abstract namespace (`NOTIFY_SOCKET=@going/run/going/notify`):
//! RUNDIR is private (0700, root's), so services running as other users could reach no
//! socket inside it, and a chroot= service could reach no path outside its root, while an
//! abstract name needs neither. Its price: it is reachable only from going's network
//! namespace, anybody there may send to it (as to systemd's /run/systemd/notify, mode 0777
//! — hence the credential check), and anybody may take the name before going does: then
//! [`Notify::autobind`] has the kernel pick a free name, as s6-notify-fd-from-socket does.
//! A socket at a path ([`Addr::Path`], mode 0666) is there for a directory every service
//! can reach, should one be wanted.
//!
//! `MAINPID=` is not supported: services do not daemonize, and a process that could name
//! another as the service's main process could make going signal a process not its own.
#![allow(dead_code)] // The lifecycle issue (readiness, order, one-shots) wires this in.

use std::fmt;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};

use crate::fingerprint::Fnv;
use crate::sys::{self, Pid};

/// The longest datagram read, as systemd's (PIPE_BUF): a longer one is dropped whole.
pub const DATAGRAM_MAX: usize = 4096;
/// The most kept of a STATUS= text, in bytes once escaped.
pub const STATUS_MAX: usize = 256;
/// Datagrams read per call of [`Notify::drain`]: epoll (level-triggered) wakes the loop
/// again for the rest.
pub const BATCH: usize = 64;

/// Where the socket is bound.
pub enum Addr {
    /// A name in the abstract namespace, without its leading `@`.
    Abstract(String),
    /// A path: `bind` for bind(2) (it may reach the directory through an open fd), `public`
    /// for the services' NOTIFY_SOCKET. Created mode 0666: every user must be able to send.
    Path { bind: PathBuf, public: PathBuf },
}

/// The abstract name of the notify socket of the going whose RUNDIR is `rundir`: stable
/// across restarts of going, so that services it adopts after a `kill -9` reach the next
/// one. `going` + RUNDIR + `/notify` where that is a plain absolute path and fits (107
/// bytes), else `going/` + a hash of RUNDIR + `/notify`.
pub fn abstract_name(rundir: &Path) -> String {
    let plain = (rundir.to_str())
        .filter(|p| p.starts_with('/') && !p.chars().any(char::is_control))
        .map(|p| format!("going{}/notify", p.trim_end_matches('/')))
        .filter(|name| name.len() < 108);
    plain.unwrap_or_else(|| {
        let hash = Fnv::default().bytes(rundir.as_os_str().as_bytes()).0;
        format!("going/{hash:016x}/notify")
    })
}

/// What a message says, as far as going listens.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Fields {
    /// `READY=1`: start-up is complete (or, after `RELOADING=1`, the reload is).
    pub ready: bool,
    /// `STATUS=…`, escaped and cut to [`STATUS_MAX`]; the last one of the message wins.
    /// `Some("")` clears the text shown.
    pub status: Option<String>,
    /// `STOPPING=1`: the service is shutting down by itself.
    pub stopping: bool,
    /// `RELOADING=1`: the service reloads its configuration until it sends `READY=1`.
    pub reloading: bool,
}

/// Why a datagram does not parse.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Malformed {
    Empty,
    /// A NUL before its last byte (as systemd, one trailing NUL is allowed).
    Nul,
}

/// Reads an sd_notify message: newline-separated `KEY=VALUE` assignments, exact as
/// systemd matches them (`READY=1`, not `READY=1 `). Other assignments (`MAINPID=`,
/// `WATCHDOG=1`, `ERRNO=`, `BARRIER=1`, `MONOTONIC_USEC=` …) are ignored.
pub fn parse(bytes: &[u8]) -> Result<Fields, Malformed> {
    let bytes = bytes.strip_suffix(b"\0").unwrap_or(bytes);
    if bytes.is_empty() {
        return Err(Malformed::Empty);
    }
    if bytes.contains(&0) {
        return Err(Malformed::Nul);
    }
    let mut f = Fields::default();
    for line in bytes.split(|&b| b == b'\n') {
        match line {
            b"READY=1" => f.ready = true,
            b"STOPPING=1" => f.stopping = true,
            b"RELOADING=1" => f.reloading = true,
            _ => {
                if let Some(text) = line.strip_prefix(b"STATUS=") {
                    f.status = Some(status_text(text));
                }
            }
        }
    }
    Ok(f)
}

/// A STATUS= value as `going status` may show it: control characters escaped (as in
/// services' log lines), cut to [`STATUS_MAX`] bytes with `…` where it was cut.
fn status_text(raw: &[u8]) -> String {
    let mut text = crate::output::escape(raw);
    if text.len() > STATUS_MAX {
        let mut cut = STATUS_MAX - '…'.len_utf8();
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push('…');
    }
    text
}

/// Who sent a message, as the kernel says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sender {
    pub pid: Pid,
    pub uid: u32,
    pub gid: u32,
}

/// A message with its sender.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    pub sender: Sender,
    /// The sender's process group, read from /proc right after the datagram was.
    pub group: Pid,
    pub fields: Fields,
}

impl Message {
    /// Whether the sender is a process of the service whose process group is `pgid` (going
    /// starts every service in a session of its own, so its group is its main pid). A
    /// process that left the group (setsid, setpgid) is not the service's any more.
    pub fn is_from(&self, pgid: Pid) -> bool {
        self.group == pgid
    }
}

/// Why a datagram was dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Why {
    /// Longer than [`DATAGRAM_MAX`].
    Oversize,
    Malformed(Malformed),
    /// No credentials, or a pid of 0: a sender in a pid namespace going cannot see.
    Anonymous,
    /// The sender was gone (reaped) before its process group could be read: nothing says
    /// whose it was. A sender that waits for the answer (`sd_notify_barrier`,
    /// `systemd-notify` without `--no-block`) is never gone in time; SCM_PIDFD (Linux 6.5)
    /// would close the race for the others.
    Gone,
    /// Not from a process of any service that listens.
    Foreign,
}

/// A dropped datagram: why, and who sent it where that is known, for the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dropped {
    pub why: Why,
    pub sender: Option<Sender>,
}

impl fmt::Display for Dropped {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self.sender {
            Some(s) => write!(f, "a message from pid {} (uid {}): ", s.pid, s.uid)?,
            None => write!(f, "a message: ")?,
        }
        match self.why {
            Why::Oversize => write!(f, "longer than {DATAGRAM_MAX} bytes"),
            Why::Malformed(Malformed::Empty) => write!(f, "empty"),
            Why::Malformed(Malformed::Nul) => write!(f, "holds a NUL byte"),
            Why::Anonymous => write!(f, "no credentials"),
            Why::Gone => write!(f, "its sender was gone before it could be checked"),
            Why::Foreign => write!(f, "not from a process of a service that listens"),
        }
    }
}

/// Dropped datagrams, by reason, since going started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub oversize: u64,
    pub malformed: u64,
    pub anonymous: u64,
    pub gone: u64,
    pub foreign: u64,
}

impl Counts {
    fn add(&mut self, why: Why) {
        let n = match why {
            Why::Oversize => &mut self.oversize,
            Why::Malformed(_) => &mut self.malformed,
            Why::Anonymous => &mut self.anonymous,
            Why::Gone => &mut self.gone,
            Why::Foreign => &mut self.foreign,
        };
        *n += 1;
    }

    pub fn total(&self) -> u64 {
        self.oversize + self.malformed + self.anonymous + self.gone + self.foreign
    }
}

/// going's sd_notify socket: datagram, non-blocking, close-on-exec, SO_PASSCRED.
pub struct Notify {
    socket: UnixDatagram,
    name: String,
    pub dropped: Counts,
}

impl Notify {
    /// Binds the socket at `addr`. A stale socket at a path is replaced (the directory is
    /// going's). EADDRINUSE on an abstract name: another process holds it.
    pub fn bind(addr: &Addr) -> io::Result<Notify> {
        let socket = socket()?;
        let name = match addr {
            Addr::Abstract(name) => {
                let path: Vec<u8> = [&[0][..], name.as_bytes()].concat();
                sys::bind_unix(socket.as_raw_fd(), &path)?;
                format!("@{name}")
            }
            Addr::Path { bind, public } => {
                let public = public.to_str().ok_or(io::ErrorKind::InvalidInput)?;
                match std::fs::remove_file(bind) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                    _ => {}
                }
                // Created no wider than the umask allows, then opened up: never more open
                // than meant, and no process-wide umask to change.
                sys::bind_unix(socket.as_raw_fd(), bind.as_os_str().as_bytes())?;
                std::fs::set_permissions(bind, std::fs::Permissions::from_mode(0o666))?;
                public.to_string()
            }
        };
        Ok(Notify {
            socket,
            name,
            dropped: Counts::default(),
        })
    }

    /// Binds a fresh abstract name that the kernel picks (five hex digits, never taken).
    pub fn autobind() -> io::Result<Notify> {
        let socket = socket()?;
        sys::bind_unix(socket.as_raw_fd(), &[])?;
        Notify::from_socket(socket, None)
    }

    /// The socket a going that exec'd this one handed over (an upgrade): its queued
    /// messages are kept. An abstract name is read back from the socket; a path socket's
    /// NOTIFY_SOCKET must be given (the bound path may be one through /proc/self/fd).
    pub fn from_fd(fd: OwnedFd, public: Option<String>) -> io::Result<Notify> {
        let socket = UnixDatagram::from(fd);
        socket.set_nonblocking(true)?;
        sys::pass_credentials(socket.as_raw_fd())?;
        Notify::from_socket(socket, public)
    }

    fn from_socket(socket: UnixDatagram, public: Option<String>) -> io::Result<Notify> {
        let name = match public {
            Some(name) => name,
            None => {
                let addr = socket.local_addr()?;
                let name = addr.as_abstract_name().ok_or(io::ErrorKind::InvalidInput)?;
                let name = std::str::from_utf8(name).map_err(|_| io::ErrorKind::InvalidData)?;
                format!("@{name}")
            }
        };
        Ok(Notify {
            socket,
            name,
            dropped: Counts::default(),
        })
    }

    /// The value of NOTIFY_SOCKET for the services: `@NAME` (abstract) or a path.
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn fd(&self) -> RawFd {
        self.socket.as_raw_fd()
    }

    /// Reads one datagram: None when none waits, else the message or why it was dropped
    /// (counted). An error is the socket's (never the sender's): the loop logs it.
    pub fn recv(&mut self) -> io::Result<Option<Result<Message, Dropped>>> {
        let mut buf = [0u8; DATAGRAM_MAX];
        let d = loop {
            match sys::recv_with_creds(self.fd(), &mut buf) {
                Ok(d) => break d,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
                Err(e) => return Err(e),
            }
        };
        // The sender's group first, while it most likely still exists.
        let sender = (d.creds)
            .filter(|c| c.0 > 0)
            .map(|(pid, uid, gid)| Sender { pid, uid, gid });
        let group = sender.and_then(|s| sys::process_group(s.pid));
        let judged = match sender {
            _ if d.truncated => Err(Why::Oversize),
            None => Err(Why::Anonymous),
            Some(sender) => match parse(&buf[..d.len]) {
                Err(m) => Err(Why::Malformed(m)),
                Ok(fields) => (group.map(|group| Message {
                    sender,
                    group,
                    fields,
                }))
                .ok_or(Why::Gone),
            },
        };
        Ok(Some(judged.map_err(|why| self.drop_one(why, sender))))
    }

    /// Reads what waits, [`BATCH`] datagrams at most, handing each message to `deliver`,
    /// which says whether it was of a service that listens; dropped ones go to `dropped`.
    /// An error of the socket ends the round.
    pub fn drain(
        &mut self,
        mut deliver: impl FnMut(Message) -> bool,
        mut dropped: impl FnMut(Dropped),
    ) -> io::Result<()> {
        for _ in 0..BATCH {
            match self.recv()? {
                None => break,
                Some(Err(d)) => dropped(d),
                Some(Ok(m)) => {
                    let sender = m.sender;
                    if !deliver(m) {
                        dropped(self.drop_one(Why::Foreign, Some(sender)));
                    }
                }
            }
        }
        Ok(())
    }

    fn drop_one(&mut self, why: Why, sender: Option<Sender>) -> Dropped {
        self.dropped.add(why);
        Dropped { why, sender }
    }
}

/// A datagram socket, non-blocking and close-on-exec (std's), receiving credentials.
fn socket() -> io::Result<UnixDatagram> {
    let socket = UnixDatagram::unbound()?;
    socket.set_nonblocking(true)?;
    sys::pass_credentials(socket.as_raw_fd())?;
    Ok(socket)
}

/// What the read end of a `ready=fd:N` pipe says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FdReady {
    /// A newline came: the service is ready. Close the read end: as s6-supervise does,
    /// going reads no more (a later write fails with EPIPE, as it would under s6).
    Ready,
    /// Nothing, or no newline yet: wait for the next wakeup.
    NotYet,
    /// End of file (or an error) before a newline: every process holding the write end
    /// closed it. As s6-supervise, going stops listening — close the read end — and the
    /// service stays up but not ready: it is not killed for it (ready_timeout may).
    Closed,
}

/// Reads the read end of a service's readiness pipe (non-blocking): ready at the first
/// newline, whatever came before it (s6's rule: "a line"). At most 64 kB (a pipe's size)
/// per call, so a service writing without end cannot hold the loop.
///
/// The pipe is made as the output pipe is ([`sys::pipe`]: both ends close-on-exec,
/// only the read end non-blocking); the child puts the write end at fd N, and going closes
/// its own copy of the write end right after the fork, or it would never see end of file.
pub fn read_ready_fd(mut pipe: impl Read) -> FdReady {
    let mut buf = [0u8; 1024];
    for _ in 0..64 {
        match pipe.read(&mut buf) {
            Ok(0) => return FdReady::Closed,
            Ok(n) if buf[..n].contains(&b'\n') => return FdReady::Ready,
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return FdReady::NotYet,
            Err(_) => return FdReady::Closed,
        }
    }
    FdReady::NotYet
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader, Write};
    use std::os::unix::process::CommandExt;
    use std::process::{Child, Command, Stdio};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::{Duration, Instant};

    const DEADLINE: Duration = Duration::from_secs(20);

    /// Sends each hex-encoded payload to the socket named by argv[1], prints its pid, then
    /// waits for the end of its stdin (so that it exists while its messages are checked).
    const SENDER: &str = r#"
import os, socket, sys
addr = sys.argv[1].encode()
if addr.startswith(b"@"):
    addr = b"\0" + addr[1:]
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
for payload in sys.argv[2:]:
    s.sendto(bytes.fromhex(payload), addr)
print(os.getpid(), flush=True)
sys.stdin.read()
"#;

    /// The python3 the tests run: Debian's where it is (a python under /root would not run
    /// as another user). Missing python3 fails the tests; it does not skip them.
    fn python() -> Command {
        let exe = if Path::new("/usr/bin/python3").exists() {
            "/usr/bin/python3"
        } else {
            "python3"
        };
        Command::new(exe)
    }

    fn unique(tag: &str) -> String {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::SeqCst);
        format!("going-test/{}/{tag}-{n}/notify", std::process::id())
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Starts the sender in a process group of its own (as going starts a service).
    fn send(to: &str, payloads: &[&[u8]], stdin: Stdio) -> Child {
        let mut cmd = python();
        cmd.arg("-c").arg(SENDER).arg(to);
        cmd.args(payloads.iter().map(|p| hex(p)));
        cmd.stdin(stdin).stdout(Stdio::piped()).process_group(0);
        cmd.spawn().expect("python3 is needed by these tests")
    }

    /// Waits (epoll, with a deadline) until the socket has something to read.
    fn readable(fd: RawFd) {
        let epoll = sys::Epoll::new().unwrap();
        epoll.add(fd, 1).unwrap();
        let mut events = [sys::NO_EVENT; 1];
        let n = epoll
            .wait(&mut events, DEADLINE.as_millis() as i32)
            .unwrap();
        assert_eq!(n, 1, "nothing came within {DEADLINE:?}");
    }

    /// The next datagram, waited for.
    fn next(notify: &mut Notify) -> Result<Message, Dropped> {
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Some(r) = notify.recv().unwrap() {
                return r;
            }
            assert!(Instant::now() < deadline, "no datagram within {DEADLINE:?}");
            readable(notify.fd());
        }
    }

    fn finish(mut child: Child) {
        drop(child.stdin.take());
        assert!(child.wait().unwrap().success());
    }

    #[test]
    fn messages_are_parsed_as_systemd_does() {
        let f = parse(b"READY=1\nSTATUS=Ready to accept connections").unwrap();
        assert_eq!(
            f,
            Fields {
                ready: true,
                status: Some("Ready to accept connections".into()),
                stopping: false,
                reloading: false,
            }
        );
        // A trailing newline or NUL is fine; MAINPID and the rest are ignored.
        let f = parse(b"MAINPID=1\nSTOPPING=1\nWATCHDOG=1\n\0").unwrap();
        assert!(f.stopping && !f.ready && !f.reloading && f.status.is_none());
        let f = parse(b"RELOADING=1\nMONOTONIC_USEC=123\n").unwrap();
        assert!(f.reloading && !f.ready);
        // Exact matches only, as systemd.
        for near in [
            &b"READY=1 "[..],
            b"READY=0",
            b"ready=1",
            b" READY=1",
            b"READY=1\r",
        ] {
            assert_eq!(parse(near).unwrap(), Fields::default(), "{near:?}");
        }
        // The last STATUS wins; an empty one clears.
        let f = parse(b"STATUS=one\nSTATUS=two").unwrap();
        assert_eq!(f.status.as_deref(), Some("two"));
        assert_eq!(parse(b"STATUS=").unwrap().status.as_deref(), Some(""));
        assert_eq!(parse(b""), Err(Malformed::Empty));
        assert_eq!(parse(b"\0"), Err(Malformed::Empty));
        assert_eq!(parse(b"READY=1\0STATUS=x"), Err(Malformed::Nul));
    }

    #[test]
    fn status_is_escaped_and_bounded() {
        let f = parse(b"STATUS=\x1b[31mred\x7f \xff caf\xc3\xa9\tok").unwrap();
        assert_eq!(
            f.status.as_deref(),
            Some("\\x1b[31mred\\x7f \\xff café\tok")
        );
        let long = [&b"STATUS="[..], "é".repeat(500).as_bytes()].concat();
        let status = parse(&long).unwrap().status.unwrap();
        assert!(status.len() <= STATUS_MAX, "{}", status.len());
        assert!(status.ends_with("é…"), "{status}");
        let exact = [&b"STATUS="[..], &[b'x'; STATUS_MAX]].concat();
        assert_eq!(parse(&exact).unwrap().status.unwrap().len(), STATUS_MAX);
    }

    #[test]
    fn abstract_names_are_stable_and_fit() {
        assert_eq!(
            abstract_name(Path::new("/run/going")),
            "going/run/going/notify"
        );
        assert_eq!(
            abstract_name(Path::new("/run/going/")),
            "going/run/going/notify"
        );
        let long = PathBuf::from(format!("/{}", "d".repeat(120)));
        let hashed = abstract_name(&long);
        assert_eq!(hashed, abstract_name(&long));
        assert!(
            hashed.starts_with("going/") && hashed.len() == 29,
            "{hashed}"
        );
        assert_ne!(hashed, abstract_name(&long.join("x")));
        for odd in ["run/going", "/run/go\ning"] {
            assert!(abstract_name(Path::new(odd)).len() == 29, "{odd}");
        }
        let fits = PathBuf::from(format!("/{}", "d".repeat(94)));
        assert_eq!(abstract_name(&fits).len(), 107);
    }

    #[test]
    fn ready_and_status_come_with_the_senders_credentials() {
        let name = unique("ready");
        let mut notify = Notify::bind(&Addr::Abstract(name.clone())).unwrap();
        assert_eq!(notify.name(), format!("@{name}"));
        let mut child = send(
            notify.name(),
            &[b"READY=1\nSTATUS=Ready to accept connections\n"],
            Stdio::piped(),
        );
        let m = next(&mut notify).unwrap();
        let pid = child.id() as Pid;
        assert_eq!(m.sender.pid, pid);
        assert_eq!((m.sender.uid, m.sender.gid), (sys::geteuid(), egid()));
        assert!(m.is_from(pid), "group {} for pid {pid}", m.group);
        assert!(m.fields.ready);
        assert_eq!(
            m.fields.status.as_deref(),
            Some("Ready to accept connections")
        );
        let mut line = String::new();
        BufReader::new(child.stdout.as_mut().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), pid.to_string());
        finish(child);
        assert_eq!(notify.dropped, Counts::default());
    }

    /// The tests' own gid, from /proc: sys has no getegid, and only this test needs it.
    fn egid() -> u32 {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let line = status.lines().find(|l| l.starts_with("Gid:")).unwrap();
        line.split_whitespace().nth(2).unwrap().parse().unwrap()
    }

    #[test]
    fn a_process_of_the_group_is_the_services_and_others_are_foreign() {
        let mut notify = Notify::bind(&Addr::Abstract(unique("group"))).unwrap();
        // The service: a shell whose child, in its group, sends.
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(r#""$0" -c "$1" "$2" "$3"; exit $?"#)
            .arg(python().get_program())
            .arg(SENDER)
            .arg(notify.name())
            .arg(hex(b"READY=1"));
        let service = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .process_group(0)
            .spawn()
            .unwrap();
        let pgid = service.id() as Pid;
        let m = next(&mut notify).unwrap();
        assert_ne!(
            m.sender.pid, pgid,
            "sent by the shell's child, not the shell"
        );
        assert!(m.is_from(pgid) && m.fields.ready);
        // A forged READY=1 from another group.
        let outsider = send(notify.name(), &[b"READY=1"], Stdio::piped());
        let mut delivered = Vec::new();
        let mut dropped = Vec::new();
        readable(notify.fd());
        notify
            .drain(
                |m| {
                    let ours = m.is_from(pgid);
                    delivered.push(m);
                    ours
                },
                |d| dropped.push(d),
            )
            .unwrap();
        assert_eq!(delivered.len(), 1);
        assert_eq!(delivered[0].sender.pid, outsider.id() as Pid);
        assert_eq!(
            dropped,
            [Dropped {
                why: Why::Foreign,
                sender: Some(delivered[0].sender)
            }]
        );
        assert_eq!(notify.dropped.foreign, 1);
        assert!(dropped[0]
            .to_string()
            .ends_with("not from a process of a service that listens"));
        finish(outsider);
        finish(service);
    }

    #[test]
    fn garbage_and_oversize_datagrams_are_dropped_and_what_follows_is_read() {
        let mut notify = Notify::bind(&Addr::Abstract(unique("garbage"))).unwrap();
        let big = [&b"READY=1\n"[..], &[b'x'; DATAGRAM_MAX]].concat();
        let child = send(
            notify.name(),
            &[b"READY=1\0junk", b"", &big, b"\xff\xfe", b"STOPPING=1"],
            Stdio::piped(),
        );
        let pid = child.id() as Pid;
        let whys: Vec<_> = (0..3).map(|_| next(&mut notify).unwrap_err()).collect();
        assert_eq!(
            whys.iter().map(|d| d.why).collect::<Vec<_>>(),
            [
                Why::Malformed(Malformed::Nul),
                Why::Malformed(Malformed::Empty),
                Why::Oversize
            ]
        );
        assert!(whys.iter().all(|d| d.sender.unwrap().pid == pid));
        // Bytes that mean nothing are a message that says nothing.
        assert_eq!(next(&mut notify).unwrap().fields, Fields::default());
        assert!(next(&mut notify).unwrap().fields.stopping);
        assert_eq!(notify.dropped.malformed, 2);
        assert_eq!(notify.dropped.oversize, 1);
        assert_eq!(notify.dropped.total(), 3);
        finish(child);
    }

    #[test]
    fn a_sender_reaped_before_the_check_is_dropped_and_a_zombie_counts() {
        let mut notify = Notify::bind(&Addr::Abstract(unique("gone"))).unwrap();
        // Reaped: its pid names nothing any more.
        let mut gone = send(notify.name(), &[b"READY=1"], Stdio::null());
        assert!(gone.wait().unwrap().success());
        let d = next(&mut notify).unwrap_err();
        assert_eq!(d.why, Why::Gone);
        assert_eq!(d.sender.unwrap().pid, gone.id() as Pid);
        assert_eq!(notify.dropped.gone, 1);
        // Exited, not reaped: a zombie still names its group.
        let mut zombie = send(notify.name(), &[b"READY=1"], Stdio::null());
        let pidfd = sys::pidfd_open(zombie.id() as Pid).unwrap();
        readable(pidfd.as_raw_fd());
        let m = next(&mut notify).unwrap();
        assert!(m.is_from(zombie.id() as Pid) && m.fields.ready);
        assert!(zombie.wait().unwrap().success());
    }

    #[test]
    fn a_sender_named_with_parentheses_and_half_a_character_is_known() {
        // The kernel cuts a process's name at 15 bytes, perhaps inside a UTF-8 character.
        const NAMED: &str = r#"
import ctypes, os, socket, sys
ctypes.CDLL(None).prctl(15, b"x) (y \xc3", 0, 0, 0)
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.sendto(b"READY=1", b"\0" + sys.argv[1][1:].encode())
sys.stdin.read()
"#;
        let mut notify = Notify::bind(&Addr::Abstract(unique("named"))).unwrap();
        let child = python()
            .args(["-c", NAMED, notify.name()])
            .stdin(Stdio::piped())
            .process_group(0)
            .spawn()
            .expect("python3 is needed by these tests");
        let m = next(&mut notify).unwrap();
        let comm = std::fs::read(format!("/proc/{}/comm", child.id())).unwrap();
        assert_eq!(comm, b"x) (y \xc3\n");
        assert!(m.is_from(child.id() as Pid));
        finish(child);
    }

    #[test]
    fn fds_sent_along_are_never_kept() {
        // As sd_notify_barrier: a pipe's write end goes along; its reader sees end of file
        // once going has read the message and holds no copy.
        const BARRIER: &str = r#"
import array, os, socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
r, w = os.pipe()
fds = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [w, w]))]
s.sendmsg([b"READY=1\nBARRIER=1"], fds, 0, b"\0" + sys.argv[1][1:].encode())
os.close(w)
print("eof" if os.read(r, 1) == b"" else "data", flush=True)
sys.stdin.read()
"#;
        let mut notify = Notify::bind(&Addr::Abstract(unique("fds"))).unwrap();
        let mut child = python()
            .args(["-c", BARRIER, notify.name()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .process_group(0)
            .spawn()
            .expect("python3 is needed by these tests");
        let m = next(&mut notify).unwrap();
        assert!(m.fields.ready && m.is_from(child.id() as Pid));
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        assert_eq!(rx.recv_timeout(DEADLINE).unwrap().trim(), "eof");
        finish(child);
    }

    #[test]
    fn an_autobound_name_is_the_kernels() {
        let mut notify = Notify::autobind().unwrap();
        let name = notify.name().to_string();
        assert!(
            name.len() == 6 && name[1..].bytes().all(|b| b.is_ascii_hexdigit()),
            "{name}"
        );
        let child = send(&name, &[b"READY=1"], Stdio::piped());
        assert!(next(&mut notify).unwrap().fields.ready);
        finish(child);
        // Taken names are refused; a socket handed over keeps its name and its messages.
        let taken = Notify::bind(&Addr::Abstract(name[1..].to_string()))
            .err()
            .unwrap();
        assert_eq!(taken.raw_os_error(), Some(libc::EADDRINUSE));
        let child = send(&name, &[b"STATUS=queued"], Stdio::piped());
        let line = &mut String::new();
        let mut child = child;
        let mut out = BufReader::new(child.stdout.as_mut().unwrap());
        out.read_line(line).unwrap();
        let fd = OwnedFd::from(notify.socket);
        let mut notify = Notify::from_fd(fd, None).unwrap();
        assert_eq!(notify.name(), name);
        let m = next(&mut notify).unwrap();
        assert_eq!(m.fields.status.as_deref(), Some("queued"));
        finish(child);
    }

    fn temp_dir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("going-notify-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        dir
    }

    #[test]
    fn a_path_socket_is_open_to_every_user_and_replaces_a_stale_one() {
        let dir = temp_dir("path");
        let path = dir.join("notify");
        std::fs::write(&path, "stale").unwrap();
        let addr = Addr::Path {
            bind: path.clone(),
            public: path.clone(),
        };
        let mut notify = Notify::bind(&addr).unwrap();
        assert_eq!(notify.name(), path.to_str().unwrap());
        let meta = std::fs::symlink_metadata(&path).unwrap();
        use std::os::unix::fs::FileTypeExt;
        assert!(meta.file_type().is_socket());
        assert_eq!(meta.permissions().mode() & 0o7777, 0o666);
        let child = send(notify.name(), &[b"READY=1"], Stdio::piped());
        assert!(next(&mut notify).unwrap().fields.ready);
        finish(child);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    #[ignore = "needs root"]
    fn a_service_of_another_user_reaches_the_socket_and_is_known_by_its_uid() {
        let dir = temp_dir("user");
        let path = dir.join("notify");
        let addr = Addr::Path {
            bind: path.clone(),
            public: path.clone(),
        };
        let mut by_path = Notify::bind(&addr).unwrap();
        let mut by_name = Notify::bind(&Addr::Abstract(unique("user"))).unwrap();
        for notify in [&mut by_path, &mut by_name] {
            let mut cmd = python();
            cmd.args(["-c", SENDER, notify.name(), &hex(b"READY=1")]);
            let child = cmd
                .uid(65534)
                .gid(65534)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .process_group(0)
                .current_dir("/")
                .spawn()
                .unwrap();
            let m = next(notify).unwrap();
            assert_eq!((m.sender.uid, m.sender.gid), (65534, 65534));
            assert!(m.is_from(child.id() as Pid) && m.fields.ready);
            finish(child);
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_readiness_fd_is_ready_at_the_first_newline() {
        let (r, w) = sys::pipe().unwrap();
        let (r, mut w) = (std::fs::File::from(r), std::fs::File::from(w));
        assert_eq!(read_ready_fd(&r), FdReady::NotYet);
        w.write_all(b"starting").unwrap();
        assert_eq!(read_ready_fd(&r), FdReady::NotYet);
        w.write_all(b"...ready\nand more").unwrap();
        assert_eq!(read_ready_fd(&r), FdReady::Ready);
        // s6's own: a bare newline.
        let (r, w) = sys::pipe().unwrap();
        let (r, mut w) = (std::fs::File::from(r), std::fs::File::from(w));
        w.write_all(b"\n").unwrap();
        drop(w);
        assert_eq!(read_ready_fd(&r), FdReady::Ready);
    }

    #[test]
    fn a_readiness_fd_closed_without_a_newline_is_closed() {
        let (r, w) = sys::pipe().unwrap();
        let (r, mut w) = (std::fs::File::from(r), std::fs::File::from(w));
        w.write_all(b"almost").unwrap();
        drop(w);
        assert_eq!(read_ready_fd(&r), FdReady::Closed);
        // A writer that never stops is read a pipe's worth at a time.
        let endless = std::io::repeat(b'x');
        assert_eq!(read_ready_fd(endless), FdReady::NotYet);
        struct Broken;
        impl Read for Broken {
            fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
                Err(io::Error::from_raw_os_error(libc::EIO))
            }
        }
        assert_eq!(read_ready_fd(Broken), FdReady::Closed);
    }
}
