//! Services' output: the read end of each service process's stdout+stderr pipe, cut into
//! lines for syslog. A line starting with `<N>` (N = 0…7, sd-daemon(3)) has priority N;
//! others are info. Lines longer than [`LINE_MAX`] are split; invalid UTF-8 and control
//! characters are passed on escaped as `\xNN`.
//!
//! Invariant: memory is bounded — at most one partial line of [`LINE_MAX`] bytes per pipe —
//! and one wake-up reads at most [`READ_MAX`] bytes from a pipe, so a service that writes
//! as fast as it can does not hold up the loop.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Read};
use std::os::fd::OwnedFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};

use crate::sys::Pid;

/// The longest line sent as one message; longer ones are split.
pub const LINE_MAX: usize = 1024;
/// The most read from one pipe per wake-up.
const READ_MAX: usize = 64 * 1024;

/// One line of a service's output.
pub struct Line {
    pub severity: u8,
    pub text: String,
}

struct Pipe {
    file: File,
    /// The pipe's inode, kept in the state file.
    ino: u64,
    name: String,
    partial: Vec<u8>,
    /// The `<N>` of the line being assembled, kept for its continuation after a split.
    severity: Option<u8>,
}

#[derive(Default)]
pub struct Outputs {
    pipes: BTreeMap<Pid, Pipe>,
}

impl Outputs {
    pub fn add(&mut self, pid: Pid, name: &str, fd: OwnedFd) {
        let file = File::from(fd);
        let pipe = Pipe {
            ino: file.metadata().map_or(0, |m| m.ino()),
            file,
            name: name.to_string(),
            partial: Vec::new(),
            severity: None,
        };
        self.pipes.insert(pid, pipe);
    }

    /// The inode of the pipe of `pid`; 0 when it has none.
    pub fn ino(&self, pid: Pid) -> u64 {
        self.pipes.get(&pid).map_or(0, |p| p.ino)
    }

    pub fn fd(&self, pid: Pid) -> Option<std::os::fd::RawFd> {
        use std::os::fd::AsRawFd;
        self.pipes.get(&pid).map(|p| p.file.as_raw_fd())
    }

    /// Reads what `pid` wrote (at most one round), handing each whole line to `emit`.
    /// True while the pipe stays open; false once it is done (end of file, or `last`: the
    /// process has exited, so what is left is read and a partial line flushed); the
    /// caller then `close`s it.
    pub fn read(&mut self, pid: Pid, last: bool, emit: &mut impl FnMut(&str, Line)) -> bool {
        let Some(p) = self.pipes.get_mut(&pid) else {
            return false;
        };
        let mut buf = [0u8; 4096];
        let mut total = 0;
        let open = loop {
            match p.file.read(&mut buf) {
                Ok(0) => break false,
                Ok(n) => {
                    total += n;
                    p.feed(&buf[..n], emit);
                    // After an exit, whatever the pipe holds still belongs to the process.
                    if total >= READ_MAX && !last {
                        break true;
                    }
                    if total >= 16 * READ_MAX {
                        break false; // left-behind writers keep it full: stop here
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break !last,
                Err(_) => break false,
            }
        };
        if !open && !p.partial.is_empty() {
            let rest = std::mem::take(&mut p.partial);
            p.line(&rest, emit);
        }
        open
    }

    /// Forgets the pipe of `pid`, closing it (after the caller took it out of epoll).
    pub fn close(&mut self, pid: Pid) {
        self.pipes.remove(&pid);
    }
}

impl Pipe {
    fn feed(&mut self, mut data: &[u8], emit: &mut impl FnMut(&str, Line)) {
        while let Some(nl) = data.iter().position(|&b| b == b'\n') {
            let (head, rest) = (&data[..nl], &data[nl + 1..]);
            data = rest;
            if self.partial.is_empty() {
                self.line(head, emit);
            } else {
                let mut line = std::mem::take(&mut self.partial);
                line.extend_from_slice(head);
                self.line(&line, emit);
            }
            self.severity = None;
        }
        self.partial.extend_from_slice(data);
        // A line still growing past the limit goes out in pieces; they keep its priority.
        while self.partial.len() > LINE_MAX {
            let rest = self.partial.split_off(char_cut(&self.partial, LINE_MAX));
            let head = std::mem::replace(&mut self.partial, rest);
            self.line(&head, emit);
        }
    }

    fn line(&mut self, raw: &[u8], emit: &mut impl FnMut(&str, Line)) {
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        let (severity, mut body) = match raw {
            [b'<', d @ b'0'..=b'7', b'>', rest @ ..] if self.severity.is_none() => (d - b'0', rest),
            _ => (self.severity.unwrap_or(6), raw),
        };
        self.severity = Some(severity);
        loop {
            let cut = char_cut(body, LINE_MAX);
            emit(
                &self.name,
                Line {
                    severity,
                    text: escape(&body[..cut]),
                },
            );
            body = &body[cut..];
            if body.is_empty() {
                break;
            }
        }
    }
}

/// Where to cut `b` to at most `max` bytes without splitting a UTF-8 character.
fn char_cut(b: &[u8], max: usize) -> usize {
    if b.len() <= max {
        return b.len();
    }
    let mut cut = max;
    while cut > max - 3 && (b[cut] & 0xC0) == 0x80 {
        cut -= 1;
    }
    cut
}

/// Text as syslog should get it: valid UTF-8 passes, except control characters (tab
/// aside); those and invalid bytes become `\xNN`.
pub fn escape(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            if (c.is_control() && c != '\t' && (c as u32) < 0x100) || c == '\u{7f}' {
                let _ = write!(out, "\\x{:02x}", c as u32);
            } else {
                out.push(c);
            }
        }
        for b in chunk.invalid() {
            let _ = write!(out, "\\x{b:02x}");
        }
    }
    out
}

/// The device of pipes (pipefs), to tell a pipe from a named FIFO of the same inode number.
pub fn pipe_dev() -> Option<u64> {
    let (r, _w) = crate::sys::pipe().ok()?;
    File::from(r).metadata().ok().map(|m| m.dev())
}

/// The output pipe of a process a killed going left running, opened again for reading
/// through /proc: its stdout or stderr, if that still is the pipe (on pipefs, `dev`) of
/// inode `ino`, so that a pipe or FIFO the service set up itself is never read. While no
/// going read it, the service's writes failed with EPIPE; from now on they are read again.
pub fn reopen(pid: Pid, dev: u64, ino: u64) -> Option<OwnedFd> {
    let ours = |m: &fs::Metadata| m.file_type().is_fifo() && m.dev() == dev && m.ino() == ino;
    [1, 2].into_iter().find_map(|fd| {
        let path = format!("/proc/{pid}/fd/{fd}");
        if !fs::metadata(&path).is_ok_and(|m| ours(&m)) {
            return None;
        }
        let file = fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&path)
            .ok()?;
        // checked again on what was opened: the fd may have been replaced meanwhile
        file.metadata().is_ok_and(|m| ours(&m)).then(|| file.into())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn run(writes: &[&[u8]]) -> Vec<(u8, String)> {
        let (r, w) = crate::sys::pipe().unwrap();
        let mut w = File::from(w);
        let mut outs = Outputs::default();
        outs.add(1, "web", r);
        let mut got = Vec::new();
        let mut emit = |name: &str, l: Line| {
            assert_eq!(name, "web");
            got.push((l.severity, l.text));
        };
        for data in writes {
            w.write_all(data).unwrap();
            assert!(outs.read(1, false, &mut emit));
        }
        drop(w);
        assert!(!outs.read(1, true, &mut emit));
        outs.close(1);
        got
    }

    #[test]
    fn lines_priorities_and_partial_lines() {
        let got = run(&[
            b"one\ntw",
            b"o\r\n<3>bad thing\n<9>not a prio\n",
            b"last words",
        ]);
        let want = [
            (6, "one"),
            (6, "two"),
            (3, "bad thing"),
            (6, "<9>not a prio"),
            (6, "last words"),
        ];
        assert_eq!(got, want.map(|(s, t)| (s, t.to_string())));
    }

    #[test]
    fn long_lines_are_split_and_keep_their_priority() {
        let mut long = b"<4>".to_vec();
        long.extend(std::iter::repeat_n(b'a', LINE_MAX + 10));
        long.push(b'\n');
        let got = run(&[&long]);
        assert_eq!(got.len(), 2);
        assert_eq!((got[0].0, got[0].1.len()), (4, LINE_MAX));
        assert_eq!((got[1].0, got[1].1.len()), (4, 10));
        // A multi-byte character is never cut in two.
        let mut wide = "é".repeat(LINE_MAX).into_bytes();
        wide.push(b'\n');
        let got = run(&[&wide]);
        assert!(
            got.iter().all(|l| !l.1.contains("\\x")),
            "{:?}",
            &got[0].1[..20]
        );
    }

    #[test]
    fn invalid_utf8_and_controls_are_escaped() {
        assert_eq!(
            escape(b"caf\xc3\xa9 \xff\x1b[31m\tend"),
            "café \\xff\\x1b[31m\tend"
        );
    }
}
