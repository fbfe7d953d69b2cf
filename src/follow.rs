//! Followers of services' output, for `going log -f`: a bounded queue of lines for each
//! follower, and the bounded registry of followers, keyed by control client id, with the
//! services each follows. What reaches the socket is written by control.rs; nothing here
//! makes a system call but through the `Write` it is handed.
//!
//! Invariant: going never waits for a follower, and a follower costs going at most
//! [`BYTES`] + [`SLACK`] bytes of queue, for at most [`FOLLOWERS`] followers (66 kB in all).
//! A line that does not fit is dropped and counted, never waited for; the reader is told
//! how many it lost (`[going: 120 lines dropped]`) where they were lost, before the next
//! line it gets. With no follower, a line costs one test of an empty list.
//!
//! On the wire every line starts with its kind, which the client strips: a space for a
//! line of output (stdout; `web: ` follows it when more than one service is followed),
//! `!` for a message of going's (stderr), and `.` for the end of the stream, `.CODE TEXT`:
//! the client prints TEXT to stderr and leaves with CODE. A stream that stops without
//! its `.` line was cut (going was killed, say). Lines of output never hold a newline or
//! a control character: they come escaped by output.rs.

// The observability issue wires this into control.rs and the supervisor.
#![allow(dead_code)]

use std::io::{self, Write};

/// Followers at once; more are refused, so that they can never take every control slot
/// (control::CLIENTS): `going status` keeps its answer.
pub const FOLLOWERS: usize = 4;
/// Bytes of lines a follower's queue holds, beyond what its socket buffer took already
/// (some 200 kB by default): 16 lines of the longest (4 kB: 1024 bytes, escaped), or
/// some 200 of a usual 80.
pub const BYTES: usize = 16 * 1024;
/// Lines a follower's queue holds.
pub const LINES: usize = 512;
/// Room kept beyond [`BYTES`] for going's own lines (a service's file is gone, the end),
/// so that these are not lost to a queue full of output.
pub const SLACK: usize = 512;

/// The lines waiting for one follower, as they go on the wire, in one buffer: no
/// allocation per line, and its capacity (the memory held) never past BYTES + SLACK.
#[derive(Default)]
pub struct Queue {
    /// Whole lines, each with its `\n`; the first may have been written in part already.
    buf: Vec<u8>,
    /// How many `\n` the buffer holds.
    lines: usize,
    /// Lines dropped since the reader was last told.
    dropped: u64,
    /// Lines dropped over the follower's life.
    lost: u64,
    /// The `.` line is in: nothing more comes.
    ended: bool,
}

impl Queue {
    /// Queues a line of service `name` (`name` None: not shown); false when the queue is
    /// full or ended, and the line dropped (then counted, as lost to the reader).
    pub fn push(&mut self, name: Option<&str>, text: &str) -> bool {
        if self.ended {
            return false;
        }
        self.mark(false);
        let name = name.unwrap_or("").as_bytes();
        let sep: &[u8] = if name.is_empty() { b"" } else { b": " };
        if self.dropped > 0 || !self.append(&[b" ", name, sep, text.as_bytes(), b"\n"], false) {
            self.dropped += 1;
            self.lost += 1;
            return false;
        }
        true
    }

    /// Queues a message of going's (for stderr), in the room kept for them.
    pub fn notice(&mut self, text: &str) -> bool {
        if self.ended {
            return false;
        }
        self.mark(true);
        self.append(&[b"!", text.as_bytes(), b"\n"], true)
    }

    /// Ends the stream: the client leaves with `code` after printing `text`. The lines
    /// queued before go first; nothing is queued after.
    pub fn end(&mut self, code: u8, text: &str) {
        if self.ended {
            return;
        }
        self.mark(true);
        let mut head = [0u8; 8];
        let n = print_into(&mut head, format_args!(".{code} "));
        if !self.append(&[&head[..n], text.as_bytes(), b"\n"], true) {
            // No room even there (notices filled it): the end goes with less said.
            self.append(&[&head[..n - 1], b"\n"], true);
        }
        self.ended = true;
    }

    /// Puts the count of dropped lines where they were dropped, when there is room.
    fn mark(&mut self, slack: bool) {
        if self.dropped == 0 {
            return;
        }
        let mut text = [0u8; 64];
        let n = self.dropped;
        let s = if n == 1 { "" } else { "s" };
        let len = print_into(&mut text, format_args!(" [going: {n} line{s} dropped]\n"));
        if self.append(&[&text[..len]], slack) {
            self.dropped = 0;
        }
    }

    /// Appends one line made of `parts` if it fits: within BYTES and LINES, or with
    /// `slack` within BYTES + SLACK. The buffer grows by doubling, never past that.
    fn append(&mut self, parts: &[&[u8]], slack: bool) -> bool {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        let limit = if slack { BYTES + SLACK } else { BYTES };
        let need = self.buf.len() + len;
        if need > limit || (!slack && self.lines >= LINES) {
            return false;
        }
        if need > self.buf.capacity() {
            let want = need.max(self.buf.capacity() * 2).clamp(256, BYTES + SLACK);
            self.buf.reserve_exact(want - self.buf.len());
        }
        for p in parts {
            self.buf.extend_from_slice(p);
        }
        self.lines += 1;
        true
    }

    /// What is to be written now, the count of dropped lines put in first if it fits.
    pub fn pending(&mut self) -> &[u8] {
        self.mark(false);
        &self.buf
    }

    /// `n` bytes of `pending` were written.
    pub fn consume(&mut self, n: usize) {
        self.lines -= self.buf[..n].iter().filter(|&&b| b == b'\n').count();
        self.buf.drain(..n);
        if self.buf.is_empty() && self.buf.capacity() > 4096 {
            self.buf = Vec::new(); // a burst is over: its memory goes back
        }
    }

    /// Writes what is pending to `w` (a non-blocking socket) until it would block: true
    /// once all of it is written. An error is the reader gone: the caller closes.
    pub fn write_to(&mut self, w: &mut impl Write) -> io::Result<bool> {
        loop {
            let pending = self.pending();
            if pending.is_empty() {
                return Ok(true);
            }
            match w.write(pending) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.consume(n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) => return Err(e),
            }
        }
    }

    /// Ended, and all of it written: time to close.
    pub fn is_done(&self) -> bool {
        self.ended && self.buf.is_empty()
    }

    pub fn is_ended(&self) -> bool {
        self.ended
    }

    /// Lines dropped over the follower's life.
    pub fn lost(&self) -> u64 {
        self.lost
    }
}

/// Formats into a stack buffer: the length written (cut short should it not fit).
fn print_into(buf: &mut [u8], args: std::fmt::Arguments) -> usize {
    let mut w = &mut buf[..];
    let _ = w.write_fmt(args); // too long: cut, and the caller's buffers fit what it writes
    let left = w.len();
    buf.len() - left
}

/// One follower: a control client and what it follows.
pub struct Follower {
    pub id: u32,
    /// The services followed; a name leaves when its service's file goes away.
    names: Vec<String>,
    /// Lines are shown with their service's name: more than one was asked for.
    prefix: bool,
    pub queue: Queue,
}

/// Every follower, at most [`FOLLOWERS`].
#[derive(Default)]
pub struct Followers {
    list: Vec<Follower>,
}

/// The most followers are following already.
#[derive(Debug, PartialEq, Eq)]
pub struct Full;

impl Followers {
    /// The client `id` follows `names` from now on (each once, in the order asked).
    pub fn add(&mut self, id: u32, names: &[&str]) -> Result<(), Full> {
        debug_assert!(self.list.iter().all(|f| f.id != id));
        if self.list.len() >= FOLLOWERS {
            return Err(Full);
        }
        let mut unique: Vec<String> = Vec::with_capacity(names.len());
        for n in names {
            if !unique.iter().any(|u| u == n) {
                unique.push(n.to_string());
            }
        }
        self.list.push(Follower {
            id,
            prefix: unique.len() > 1,
            names: unique,
            queue: Queue::default(),
        });
        Ok(())
    }

    /// Forgets the client `id` (gone, or closed): false if it followed nothing.
    pub fn remove(&mut self, id: u32) -> bool {
        let before = self.list.len();
        self.list.retain(|f| f.id != id);
        self.list.len() < before
    }

    pub fn queue(&mut self, id: u32) -> Option<&mut Queue> {
        self.list
            .iter_mut()
            .find(|f| f.id == id)
            .map(|f| &mut f.queue)
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    pub fn len(&self) -> usize {
        self.list.len()
    }

    /// A line of output of service `name`: queued for each of its followers, then
    /// handed to `ready` with the follower's id, to be written now.
    pub fn line(&mut self, name: &str, text: &str, mut ready: impl FnMut(u32, &mut Queue)) {
        for f in &mut self.list {
            if f.names.iter().any(|n| n == name) {
                f.queue.push(f.prefix.then_some(name), text);
                ready(f.id, &mut f.queue);
            }
        }
    }

    /// Service `name` is gone with its file: its followers are told, and the stream of
    /// those who followed nothing else ends (code 0). Each is handed to `ready`.
    pub fn gone(&mut self, name: &str, mut ready: impl FnMut(u32, &mut Queue)) {
        for f in &mut self.list {
            let Some(at) = f.names.iter().position(|n| n == name) else {
                continue;
            };
            f.names.remove(at);
            let text = format!("going: {name}: its file is gone");
            if f.names.is_empty() {
                f.queue.end(0, &text);
            } else {
                f.queue.notice(&text);
            }
            ready(f.id, &mut f.queue);
        }
    }

    /// Ends every stream with `code` and `text` (going stops, or execs a new binary).
    pub fn end_all(&mut self, code: u8, text: &str, mut ready: impl FnMut(u32, &mut Queue)) {
        for f in &mut self.list {
            f.queue.end(code, text);
            ready(f.id, &mut f.queue);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::unix::net::UnixStream;

    /// What the queue holds, as text, all of it taken.
    fn take(q: &mut Queue) -> String {
        let s = String::from_utf8(q.pending().to_vec()).unwrap();
        q.consume(s.len());
        s
    }

    #[test]
    fn lines_go_out_with_their_kind_and_name() {
        let mut q = Queue::default();
        assert!(q.push(None, "one"));
        assert!(q.push(Some("web"), "two"));
        assert!(q.notice("going: web: its file is gone"));
        assert_eq!(
            take(&mut q),
            " one\n web: two\n!going: web: its file is gone\n"
        );
        q.end(0, "going: web: its file is gone");
        assert!(!q.is_done() && q.is_ended());
        assert_eq!(take(&mut q), ".0 going: web: its file is gone\n");
        assert!(q.is_done());
        assert!(!q.push(None, "after the end") && !q.notice("nor this"));
        assert_eq!(q.pending(), b"");
    }

    #[test]
    fn a_full_queue_drops_counts_and_says_so_where_lines_were_lost() {
        let mut q = Queue::default();
        let line = "x".repeat(99); // 101 bytes on the wire
        let mut kept = 0;
        for _ in 0..1000 {
            kept += q.push(None, &line) as usize;
        }
        assert_eq!(kept, BYTES / 101);
        assert!(q.buf.len() <= BYTES && q.buf.capacity() <= BYTES + SLACK);
        assert_eq!(q.lost(), 1000 - kept as u64);
        // The reader takes a little: the count goes in after what was kept, at once.
        let first = q.pending()[..101].to_vec();
        assert_eq!(first, format!(" {line}\n").into_bytes());
        q.consume(101);
        q.consume(50); // half a line: the rest stays whole
        let rest = take(&mut q);
        assert!(rest.starts_with(&line[49..]), "{}", &rest[..60]);
        let marker = format!(" [going: {} lines dropped]\n", 1000 - kept);
        assert!(rest.ends_with(&format!("{line}\n{marker}")), "{rest:.80}");
        assert_eq!(q.lines, 0);
        // Counted from zero again; one is one line.
        assert!(q.push(None, "next"));
        assert_eq!(take(&mut q), " next\n");
        for _ in 0..=LINES {
            q.push(None, "");
        }
        assert_eq!(q.lines, LINES);
        q.consume(2);
        assert_eq!(
            q.pending().rsplit(|&b| b == b'\n').nth(1),
            Some(&b" [going: 1 line dropped]"[..])
        );
        assert_eq!(q.lost(), 1000 - kept as u64 + 1);
    }

    #[test]
    fn the_count_comes_before_the_next_line_and_the_end_after_all() {
        let mut q = Queue::default();
        while q.push(None, "old") {}
        q.push(None, "lost");
        assert!(
            q.notice("going: web: its file is gone"),
            "notices have room kept"
        );
        q.end(0, "going: web: its file is gone");
        let all = take(&mut q);
        let tail: Vec<&str> = all.lines().rev().take(4).collect();
        assert_eq!(
            tail,
            [
                ".0 going: web: its file is gone",
                "!going: web: its file is gone",
                " [going: 2 lines dropped]",
                " old"
            ]
        );
        assert!(q.is_done());
    }

    #[test]
    fn a_follower_that_never_reads_never_blocks_and_is_told_what_it_lost() {
        let (mut reader, mut writer) = UnixStream::pair().unwrap();
        writer.set_nonblocking(true).unwrap();
        let mut q = Queue::default();
        let line = "y".repeat(80);
        let n = 20_000;
        for i in 0..n {
            q.push(None, &format!("{i:05} {line}"));
            assert!(q.write_to(&mut writer).is_ok());
            assert!(q.buf.capacity() <= BYTES + SLACK);
        }
        assert!(
            q.lost() > 0,
            "the socket and the queue hold less than 1.7 MB"
        );
        // The reader reads again: everything that was kept, then the count, arrives.
        reader.set_nonblocking(true).unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 65536];
        loop {
            let written = q.write_to(&mut writer).unwrap();
            let mut read = false;
            loop {
                match reader.read(&mut buf) {
                    Ok(k) if k > 0 => got.extend_from_slice(&buf[..k]),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    r => panic!("{r:?}"),
                }
                read = true;
            }
            if written && !read {
                break;
            }
        }
        let got = String::from_utf8(got).unwrap();
        let lines: Vec<&str> = got.lines().collect();
        let marker = format!(" [going: {} lines dropped]", q.lost());
        assert_eq!(lines.last(), Some(&&marker[..]));
        assert_eq!(lines.len() as u64 - 1 + q.lost(), n as u64);
        // What came is in order, and with no gap but the one reported.
        let numbers: Vec<u32> = lines[..lines.len() - 1]
            .iter()
            .map(|l| l[1..6].parse().unwrap())
            .collect();
        assert!(numbers.windows(2).all(|w| w[1] == w[0] + 1));
        assert_eq!(numbers[0], 0);
    }

    #[test]
    fn a_reader_gone_is_an_error() {
        let (reader, mut writer) = UnixStream::pair().unwrap();
        drop(reader);
        let mut q = Queue::default();
        q.push(None, "to nobody");
        assert!(q.write_to(&mut writer).is_err());
    }

    #[test]
    fn the_registry_is_bounded_and_routes_lines_by_name() {
        let mut f = Followers::default();
        assert_eq!(f.add(1, &["web"]), Ok(()));
        assert_eq!(f.add(2, &["web", "db", "web"]), Ok(()));
        assert_eq!(f.add(3, &["db"]), Ok(()));
        assert_eq!(f.add(4, &["cache"]), Ok(()));
        assert_eq!(f.add(5, &["web"]), Err(Full));
        assert_eq!(f.len(), FOLLOWERS);
        let mut woken = Vec::new();
        f.line("web", "GET /", |id, _| woken.push(id));
        f.line("db", "ready", |id, _| woken.push(id));
        f.line("nobody follows", "lost", |id, _| woken.push(id));
        assert_eq!(woken, [1, 2, 2, 3]);
        assert_eq!(take(f.queue(1).unwrap()), " GET /\n");
        assert_eq!(take(f.queue(2).unwrap()), " web: GET /\n db: ready\n");
        assert_eq!(take(f.queue(3).unwrap()), " ready\n");
        assert_eq!(take(f.queue(4).unwrap()), "");
        // A file goes: who followed only it is done, who followed more is told.
        woken.clear();
        f.gone("web", |id, _| woken.push(id));
        assert_eq!(woken, [1, 2]);
        assert_eq!(
            take(f.queue(1).unwrap()),
            ".0 going: web: its file is gone\n"
        );
        assert!(f.queue(1).unwrap().is_done());
        assert_eq!(take(f.queue(2).unwrap()), "!going: web: its file is gone\n");
        assert!(!f.queue(2).unwrap().is_ended());
        // Room again once one leaves.
        assert!(f.remove(1) && !f.remove(1));
        assert_eq!(f.add(5, &["web"]), Ok(()));
        woken.clear();
        f.end_all(0, "going: stopping", |id, _| woken.push(id));
        assert_eq!(woken, [2, 3, 4, 5]);
        assert_eq!(take(f.queue(5).unwrap()), ".0 going: stopping\n");
        assert!(f.queue(2).unwrap().is_ended());
    }
}
