//! The control socket, RUNDIR/control: the server side of `going status`, `stop` and the
//! other commands. A request is one line of words; the reply is the exit code on a line of
//! its own, then the text to print (lines starting with `!` go to stderr). A client may
//! be held past its time for an answer that comes later (`-w`), or taken over with its
//! connection, whose reply is then a stream (`log -f`, follow.rs).
//!
//! Invariant: no client can stall supervision or grow going's memory. Only root or going's
//! own uid is served (checked with SO_PEERCRED, not only the file mode); every socket is
//! non-blocking; a request is at most [`REQUEST_MAX`] bytes; a client has [`TIMEOUT`] to
//! send its request and take its reply, or until its held answer is due; at most
//! [`CLIENTS`] are served at once. Silent clients keep nobody out: a new client takes the slot of the oldest one
//! that has not asked anything yet, and waits in the listen backlog only while every slot
//! holds a client being answered.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::time::{Duration, Instant};

use crate::exit::EX_NOPERM;
use crate::sys::{self, Epoll};

pub const REQUEST_MAX: usize = 4096;
pub const TIMEOUT: Duration = Duration::from_secs(5);
pub const CLIENTS: usize = 16;

struct Client {
    stream: UnixStream,
    request: Vec<u8>,
    reply: Vec<u8>,
    sent: usize,
    stage: Stage,
    /// Not root nor going's uid: its request is read, then refused.
    refused: Option<u32>,
    /// When it is dropped.
    deadline: Instant,
}

/// Where a client is.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Its request is not whole yet.
    Asking,
    /// Its request was handed out: it waits for its answer. Whatever else it sends is
    /// ignored; its leaving is an [`Event::Gone`]. `eof`: it shut down its side (it may
    /// still read, as `nc -N` does), so epoll watches it only for hanging up.
    Held { eof: bool },
    /// Its reply is being sent; then it is closed.
    Replying,
}

pub struct Control {
    listener: UnixListener,
    clients: BTreeMap<u32, Client>,
    next: u32,
    /// Accepting stopped after an error, until then.
    paused_until: Option<Instant>,
    /// Whether epoll watches the listener: not while accepting is paused, nor while
    /// every slot holds a client being answered.
    listening: bool,
}

/// What the loop should do after an event on the control socket.
pub enum Event {
    Nothing,
    /// A client `id` asks this.
    Request(u32, String),
    /// The client `id` left before its answer came: it is closed.
    Gone(u32),
}

impl Control {
    /// Binds RUNDIR/control, replacing a stale socket (the RUNDIR lock is ours), or takes
    /// the listener a going that exec'd this one handed over.
    pub fn bind(path: &Path, inherited: Option<std::os::fd::OwnedFd>) -> io::Result<Control> {
        let listener = match inherited {
            Some(fd) => UnixListener::from(fd),
            None => {
                let _ = std::fs::remove_file(path);
                let listener = UnixListener::bind(path)?;
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
                listener
            }
        };
        listener.set_nonblocking(true)?;
        Ok(Control {
            listener,
            clients: BTreeMap::new(),
            next: 0,
            paused_until: None,
            listening: true,
        })
    }

    pub fn fd(&self) -> std::os::fd::RawFd {
        self.listener.as_raw_fd()
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        self.clients
            .values()
            .map(|c| c.deadline)
            .chain(self.paused_until)
            .min()
    }

    /// Accepts every waiting client; `token` makes a client's epoll token from its id.
    pub fn accept(&mut self, epoll: &Epoll, token: impl Fn(u32) -> u64, now: Instant) {
        loop {
            if self.clients.len() >= CLIENTS && self.silent().is_none() {
                // Every slot holds a client being answered, which takes no longer than
                // TIMEOUT: new ones wait in the backlog until `expire` sees a free slot.
                epoll.delete(self.listener.as_raw_fd());
                self.listening = false;
                return;
            }
            let stream = match self.listener.accept() {
                Ok((stream, _)) => stream,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    // Out of fds, say: the client stays queued and the listener readable,
                    // which would wake the loop at once, forever. Look again in a second.
                    epoll.delete(self.listener.as_raw_fd());
                    self.listening = false;
                    self.paused_until = Some(now + Duration::from_secs(1));
                    return;
                }
            };
            if self.clients.len() >= CLIENTS {
                // A new client is never refused for silent ones: the oldest makes room.
                if let Some(id) = self.silent() {
                    self.close(id, epoll);
                }
            }
            if stream.set_nonblocking(true).is_err() {
                continue; // dropped: closed at once
            }
            self.next = self.next.wrapping_add(1);
            let id = self.next;
            if epoll.add(stream.as_raw_fd(), token(id)).is_err() {
                continue;
            }
            let me = sys::geteuid();
            let refused = match sys::peer_uid(stream.as_raw_fd()) {
                Ok(uid) => (uid != 0 && uid != me).then_some(uid),
                Err(_) => Some(u32::MAX),
            };
            let client = Client {
                stream,
                request: Vec::new(),
                reply: Vec::new(),
                sent: 0,
                stage: Stage::Asking,
                refused,
                deadline: now + TIMEOUT,
            };
            self.clients.insert(id, client);
        }
    }

    /// The oldest client that has asked nothing whole yet, and has nothing unread that
    /// could make a request whole (it may have sent it as it was being accepted).
    fn silent(&self) -> Option<u32> {
        (self.clients.iter())
            .filter(|(_, c)| c.stage == Stage::Asking && sys::unread(c.stream.as_raw_fd()) == 0)
            .min_by_key(|(_, c)| c.deadline)
            .map(|(id, _)| *id)
    }

    /// The client `id` can be read from, or written to. A whole request comes back as an
    /// `Event::Request`, except from a client that may not ask: that one is answered here.
    pub fn ready(&mut self, id: u32, epoll: &Epoll, token: u64) -> Event {
        match self.read(id, epoll, token) {
            Event::Request(id, _) if self.clients[&id].refused.is_some() => {
                let uid = self.clients[&id].refused.unwrap();
                let msg = format!(
                    "{EX_NOPERM}\n!going: permission denied: uid {uid} may not control going\n"
                );
                self.reply(id, msg, epoll, token);
                Event::Nothing
            }
            event => event,
        }
    }

    fn read(&mut self, id: u32, epoll: &Epoll, token: u64) -> Event {
        let Some(c) = self.clients.get_mut(&id) else {
            return Event::Nothing;
        };
        match c.stage {
            Stage::Asking => {}
            Stage::Replying => {
                self.send(id, epoll);
                return Event::Nothing;
            }
            Stage::Held { eof } => return self.listen(id, eof, epoll, token),
        }
        let mut buf = [0u8; 1024];
        let mut eof = false;
        loop {
            match c.stream.read(&mut buf) {
                Ok(0) => {
                    eof = true;
                    break;
                }
                Ok(n) => c.request.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(_) => {
                    self.close(id, epoll);
                    return Event::Nothing;
                }
            }
            if c.request.len() > REQUEST_MAX {
                break;
            }
        }
        // A request ends at its newline or, from a client that shut down its side
        // (`nc -N`, socat), at the end of what it sent: that is a whole request too.
        let end = (c.request.iter().position(|&b| b == b'\n'))
            .or((eof && !c.request.is_empty()).then_some(c.request.len()));
        let whole = end.is_some() || c.request.len() > REQUEST_MAX;
        if whole {
            c.stage = Stage::Held { eof: false };
        }
        match end {
            Some(end) => match std::str::from_utf8(&c.request[..end]) {
                Ok(line) => Event::Request(id, line.to_string()),
                Err(_) => Event::Request(id, String::from("\u{fffd}")),
            },
            None if whole => Event::Request(id, String::from("\u{fffd}")),
            None if eof => {
                self.close(id, epoll); // gone before saying anything
                Event::Nothing
            }
            None => Event::Nothing,
        }
    }

    /// Keeps the client `id` connected until `until` (a command that waits for services),
    /// its answer to come by then.
    pub fn hold(&mut self, id: u32, until: Instant) {
        if let Some(c) = self.clients.get_mut(&id) {
            c.deadline = c.deadline.max(until);
        }
    }

    /// Hands over the connection of the client `id`, whose request was read, as it is
    /// (non-blocking, in epoll under its client token): a follower's, whose reply is a
    /// stream that follow.rs writes. Its place here is free again.
    pub fn take(&mut self, id: u32) -> Option<UnixStream> {
        self.clients.remove(&id).map(|c| c.stream)
    }

    /// The held client `id` woke the loop: it left (closed now), or sent more, which is
    /// read and ignored.
    /// `eof`: it shut down its side already, and epoll watches it for nothing but hanging
    /// up: this is that.
    fn listen(&mut self, id: u32, eof: bool, epoll: &Epoll, token: u64) -> Event {
        let c = self.clients.get_mut(&id).expect("a client of the table");
        let mut buf = [0u8; 256];
        // A bounded amount: a client that sends without end is closed.
        for _ in 0..16 {
            if eof {
                break;
            }
            match c.stream.read(&mut buf) {
                Ok(n) if n > 0 => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Event::Nothing,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Ok(_) => {
                    // Its side is shut down: it may still wait for the answer, or be gone,
                    // which epoll says (EPOLLHUP) once its input is no longer watched.
                    c.stage = Stage::Held { eof: true };
                    match epoll.set_output(c.stream.as_raw_fd(), false, token) {
                        Ok(()) => return Event::Nothing,
                        Err(_) => break,
                    }
                }
                Err(_) => break,
            }
        }
        self.close(id, epoll);
        Event::Gone(id)
    }

    /// Sends `text` to the client `id`, then closes the connection.
    pub fn reply(&mut self, id: u32, text: String, epoll: &Epoll, token: u64) {
        let Some(c) = self.clients.get_mut(&id) else {
            return;
        };
        c.stage = Stage::Replying;
        c.reply = text.into_bytes();
        if epoll.set_output(c.stream.as_raw_fd(), true, token).is_err() {
            return self.close(id, epoll);
        }
        self.send(id, epoll);
    }

    fn send(&mut self, id: u32, epoll: &Epoll) {
        let Some(c) = self.clients.get_mut(&id) else {
            return;
        };
        while c.sent < c.reply.len() {
            match c.stream.write(&c.reply[c.sent..]) {
                Ok(n) => c.sent += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(_) => break,
            }
        }
        self.close(id, epoll);
    }

    /// Drops every client whose time is up, and accepts again after a pause, or once a
    /// slot is free.
    pub fn expire(&mut self, now: Instant, epoll: &Epoll, token: u64) {
        if self.paused_until.is_some_and(|t| t <= now) {
            self.paused_until = None;
        }
        let late: Vec<u32> = (self.clients.iter())
            .filter(|(_, c)| c.deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in late {
            self.close(id, epoll);
        }
        if !self.listening && self.paused_until.is_none() && self.clients.len() < CLIENTS {
            self.listening = epoll.add(self.listener.as_raw_fd(), token).is_ok();
            if !self.listening {
                self.paused_until = Some(now + Duration::from_secs(1));
            }
        }
    }

    fn close(&mut self, id: u32, epoll: &Epoll) {
        if let Some(mut c) = self.clients.remove(&id) {
            epoll.delete(c.stream.as_raw_fd());
            before_close(&mut c.stream);
        }
    }
}

/// Closing with unread input would reset the connection, and the client could lose the
/// end of its reply: what it sent is read first (not more than a bounded amount).
pub fn before_close(stream: &mut UnixStream) {
    let mut buf = [0u8; 4096];
    for _ in 0..16 {
        if !matches!(stream.read(&mut buf), Ok(n) if n > 0) {
            break;
        }
    }
}
