//! Every `unsafe` in going lives here: fork and exec, signal dispositions, waitpid, kill,
//! epoll and a few start-up calls that std does not wrap. The rest of the program sees safe
//! functions returning `io::Result`.
//!
//! Invariant: between `clone3` (or `fork`) and `execve` the child makes only
//! async-signal-safe system calls on memory prepared before — no allocation, no logging,
//! no locks — on a stack of its own in going's frame while it shares going's memory and
//! fds, unshares the fds before it touches one, and reports a failure as 12 bytes on a
//! close-on-exec pipe, then `_exit`s. going keeps SIGCHLD blocked, and reads it through a
//! signalfd.

use std::ffi::{c_char, c_int, CString};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::ptr;

pub type Pid = libc::pid_t;

fn cvt(r: c_int) -> io::Result<c_int> {
    if r == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// The step of the child's set-up that failed, as reported on the exec-error pipe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    Session = 1,
    Stdio,
    /// `arg` is the resource.
    Limit,
    Nice,
    Chroot,
    Groups,
    Gid,
    Uid,
    Chdir,
    Exec,
    /// `arg` is the fd: the readiness pipe put at fd N (`ready=fd:N`).
    ReadyFd,
    /// Moving into the service's cgroup (writing to its `cgroup.procs`).
    Cgroup,
}

/// In the order of their numbers: a number, once given, is a step's for good (a child
/// reports it to a going that may be a newer binary).
const STEPS: [Step; 12] = [
    Step::Session,
    Step::Stdio,
    Step::Limit,
    Step::Nice,
    Step::Chroot,
    Step::Groups,
    Step::Gid,
    Step::Uid,
    Step::Chdir,
    Step::Exec,
    Step::ReadyFd,
    Step::Cgroup,
];

/// Why a child never became the service: which step failed, with which errno.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChildError {
    pub step: Step,
    pub errno: i32,
    /// What the step was about, where it needs saying (the resource of a limit).
    pub arg: i32,
}

impl ChildError {
    /// Decodes the 12 bytes a child writes before `_exit`.
    pub fn decode(b: [u8; 12]) -> Option<ChildError> {
        let word = |i: usize| i32::from_ne_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let step = *STEPS.get((word(0) as usize).checked_sub(1)?)?;
        Some(ChildError {
            step,
            errno: word(4),
            arg: word(8),
        })
    }
}

/// The identity a service runs as.
pub struct Creds<'a> {
    /// None keeps going's uid (root): only the group changes.
    pub uid: Option<u32>,
    pub gid: u32,
    pub groups: &'a [libc::gid_t],
}

/// Everything the child needs, built before the fork so that the child allocates nothing.
pub struct Spawn<'a> {
    /// Candidates for execve, tried in order as execvp does.
    pub paths: &'a [CString],
    pub argv: &'a [CString],
    pub envp: &'a [CString],
    /// Opened read-write on /dev/null; becomes fd 0.
    pub stdin: RawFd,
    /// The write end of the output pipe, or /dev/null; becomes fds 1 and 2.
    pub stdout: RawFd,
    /// Resource limits to set, in order: going's original RLIMIT_NOFILE (it raises its
    /// own), then the service's.
    pub limits: &'a [(c_int, libc::rlimit)],
    pub nice: Option<c_int>,
    pub chroot: Option<&'a CString>,
    pub creds: Option<Creds<'a>>,
    /// Changed into after dropping privileges, so it is checked as the service's user.
    pub cwd: &'a CString,
    pub umask: libc::mode_t,
    /// The write end of a readiness pipe, and the fd N it becomes (`ready=fd:N`).
    pub ready: Option<(RawFd, c_int)>,
    /// An fd the exec path names (`/proc/self/fd/N`): kept open until the exec.
    pub exec_fd: Option<RawFd>,
    /// The service's cgroup, its directory open, and whether the child may be made in it
    /// (clone3 with CLONE_INTO_CGROUP); else, or on kernels before 5.7, it moves itself
    /// there first; so that everything it becomes and forks is the service's.
    pub cgroup: Option<(RawFd, bool)>,
}

/// Where going keeps the fds it holds for long (a service's output, readiness and
/// exec-error pipes, an adopted process's pidfd, a cgroup's directory and event files):
/// at or above this number. A child is cloned sharing going's fd table and copies only
/// the fds below the highest one it needs (close_range with CLOSE_RANGE_UNSHARE), so what
/// going holds up here costs a spawn nothing.
pub const HIGH_FD: RawFd = 256;

/// Moves `fd` to [`HIGH_FD`] or above (close-on-exec, as every fd of going's); where the
/// limit on open files does not allow that, it stays where it is: a spawn then copies it,
/// which only costs time.
pub fn high(fd: OwnedFd) -> OwnedFd {
    if fd.as_raw_fd() >= HIGH_FD {
        return fd;
    }
    // SAFETY: F_DUPFD_CLOEXEC returns a new fd that we own; `fd` is closed by its drop.
    match unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, HIGH_FD) } {
        moved if moved >= 0 => unsafe { OwnedFd::from_raw_fd(moved) },
        _ => fd,
    }
}

/// A copy of `fd` at the lowest free number (close-on-exec): for a child cloned sharing
/// going's fds, which keeps only those below the highest it needs.
fn low(fd: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: F_DUPFD_CLOEXEC returns a new fd that we own.
    let fd = cvt(unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3) })?;
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// clone3(2)'s arguments (linux/sched.h), up to `cgroup` (CLONE_ARGS_SIZE_VER2).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// Set once clone3 was turned down (a kernel before 5.3, an emulator): fork from then on.
static NO_CLONE3: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Set once clone3 turned CLONE_INTO_CGROUP down (a kernel before 5.7): a child moves
/// itself into its cgroup from then on.
static NO_CLONE_INTO: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// The child's stack while it shares going's memory: in the frame of [`spawn_child`], which
/// waits (CLONE_VFORK) until the child has exec'd or exited. One page: the child uses some
/// 200 bytes of it (1 kB in a debug build), and each kB here is a kB more of VmPeak.
const CHILD_STACK: usize = 4096;
#[repr(C, align(16))]
struct ChildStack([std::mem::MaybeUninit<u8>; CHILD_STACK]);

/// What the cloned child runs with, passed to [`child_entry`] by pointer.
struct ChildArgs<'a> {
    s: &'a Spawn<'a>,
    argv: &'a [*const c_char],
    envp: &'a [*const c_char],
    report: RawFd,
    /// The child closes its fds from this one up (none it needs is there).
    keep: c_int,
    /// The directory of the cgroup the child moves itself into, below `keep`.
    enter: Option<RawFd>,
}

extern "C" fn child_entry(arg: *mut std::ffi::c_void) -> ! {
    // SAFETY: `arg` points to the ChildArgs in the frame of spawn_child, which waits for
    // this child to exec or exit (CLONE_VFORK).
    unsafe {
        let a = &*(arg as *const ChildArgs);
        child(a.s, a.argv, a.envp, a.report, Some(a.keep), a.enter)
    }
}

/// clone3 with the child running `entry(arg)` on its own stack (`args.stack`): the
/// parent returns the pid, or -errno. Written out because libc has no clone3 wrapper and
/// a child that shares the memory must not return into the parent's frames.
///
/// # Safety
/// `args` is valid; with CLONE_VM, `entry` never returns and uses only its own stack.
#[cfg(target_arch = "x86_64")]
unsafe fn clone3(
    args: &CloneArgs,
    entry: extern "C" fn(*mut std::ffi::c_void) -> !,
    arg: *mut std::ffi::c_void,
) -> libc::c_long {
    let ret: libc::c_long;
    std::arch::asm!(
        "syscall",
        "test rax, rax",
        "jnz 2f",
        // The child, on its stack (16-aligned): entry(arg), which never returns.
        "mov rdi, r12",
        "call r13",
        "ud2",
        "2:",
        inlateout("rax") libc::SYS_clone3 => ret,
        in("rdi") args as *const CloneArgs,
        in("rsi") std::mem::size_of::<CloneArgs>(),
        in("r12") arg,
        in("r13") entry,
        lateout("rcx") _,
        lateout("r11") _,
        options(nostack),
    );
    ret
}

#[cfg(target_arch = "aarch64")]
unsafe fn clone3(
    args: &CloneArgs,
    entry: extern "C" fn(*mut std::ffi::c_void) -> !,
    arg: *mut std::ffi::c_void,
) -> libc::c_long {
    let ret: libc::c_long;
    std::arch::asm!(
        "svc 0",
        "cbnz x0, 2f",
        "mov x0, x20",
        "blr x21",
        "brk #1",
        "2:",
        inlateout("x0") args as *const CloneArgs => ret,
        in("x1") std::mem::size_of::<CloneArgs>(),
        in("x8") libc::SYS_clone3,
        in("x20") arg,
        in("x21") entry,
        options(nostack),
    );
    ret
}

/// Elsewhere: no clone3 here, going forks.
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
unsafe fn clone3(
    _: &CloneArgs,
    _: extern "C" fn(*mut std::ffi::c_void) -> !,
    _: *mut std::ffi::c_void,
) -> libc::c_long {
    -(libc::ENOSYS as libc::c_long)
}

/// A started child: its pid, the read end of its exec-error pipe (end-of-file there means
/// the exec succeeded, 12 bytes mean a [`ChildError`]; at [`HIGH_FD`] or above).
pub struct Child {
    pub pid: Pid,
    pub report: OwnedFd,
}

/// [`spawn_child`], as (pid, exec-error pipe).
pub fn spawn(s: &Spawn) -> io::Result<(Pid, OwnedFd)> {
    spawn_child(s).map(|c| (c.pid, c.report))
}

/// Empties the signal mask but for SIGCHLD, which only the signalfd reads ([`exits_fd`]):
/// each one dequeued with the pid that ended, so that that one child is reaped alone.
pub fn unblock_all_but_exits() {
    let mask = 1u64 << (libc::SIGCHLD - 1);
    // SAFETY: rt_sigprocmask reads an 8-byte mask and writes nothing (old set is null).
    unsafe {
        libc::syscall(
            libc::SYS_rt_sigprocmask,
            libc::SIG_SETMASK,
            &mask,
            ptr::null_mut::<u64>(),
            8,
        )
    };
}

/// A signalfd that says when SIGCHLD is pending, non-blocking.
pub fn exits_fd() -> io::Result<OwnedFd> {
    // SAFETY: sigset_t is plain data, filled by sigemptyset/sigaddset; signalfd returns a
    // new fd that we own.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGCHLD);
        let fd = cvt(libc::signalfd(
            -1,
            &set,
            libc::SFD_NONBLOCK | libc::SFD_CLOEXEC,
        ))?;
        Ok(OwnedFd::from_raw_fd(fd))
    }
}

/// The pid of the child whose end the pending SIGCHLD tells, if one is pending (a SIGCHLD
/// sent by kill(2), or for a child stopped or continued, is no end, and left out). Each
/// child that ends sends one, but one pending already swallows the next: the caller
/// looks at every child after ([`reap`]) for those.
pub fn read_exits(pids: &mut Vec<Pid>) {
    // SAFETY: sigset_t and siginfo_t are plain data; sigtimedwait with a zero timeout
    // dequeues one pending signal of the set into `info`, or fails at once.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGCHLD);
        let now = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        let ended = [libc::CLD_EXITED, libc::CLD_KILLED, libc::CLD_DUMPED];
        loop {
            let mut info: libc::siginfo_t = std::mem::zeroed();
            if libc::sigtimedwait(&set, &mut info, &now) < 0 {
                return;
            }
            if ended.contains(&info.si_code) && info.si_pid() > 0 {
                pids.push(info.si_pid());
            }
        }
    }
}

/// Starts a service process, as cheaply with 10,000 fds open as with 10: clone3 with
/// CLONE_VM | CLONE_VFORK | CLONE_FILES, so that neither memory nor the fd table is
/// copied; the child, on a stack of its own, unshares the fds below the highest it needs
/// and closes the rest (close_range, CLOSE_RANGE_UNSHARE) before anything else. Going
/// waits meanwhile, until the child has exec'd or failed (as posix_spawn does). Where
/// clone3 is missing, a plain fork.
pub fn spawn_child(s: &Spawn) -> io::Result<Child> {
    use std::sync::atomic::Ordering;
    let argv = nul_terminated(s.argv);
    let envp = nul_terminated(s.envp);
    let (rd, mut wr) = pipe()?;
    let rd = high(rd);
    // The report pipe must stay open until the exec: never at the fd the readiness pipe is
    // put at.
    if let Some((_, n)) = s.ready.filter(|&(_, n)| n == wr.as_raw_fd()) {
        // SAFETY: F_DUPFD_CLOEXEC returns a new fd, above n, that we own.
        let moved = cvt(unsafe { libc::fcntl(wr.as_raw_fd(), libc::F_DUPFD_CLOEXEC, n + 1) })?;
        wr = unsafe { OwnedFd::from_raw_fd(moved) };
    }
    // Made in its cgroup (CLONE_INTO_CGROUP) where it may be; else the child moves itself
    // there through a copy of the cgroup's directory below `keep` (going holds it high).
    let mut into = (s.cgroup)
        .filter(|c| c.1 && !NO_CLONE_INTO.load(Ordering::Relaxed))
        .map(|c| c.0);
    let mut enter = match (s.cgroup, into) {
        (Some((dir, _)), None) => Some(low(dir)?),
        _ => None,
    };
    let keep = |enter: &Option<OwnedFd>| {
        let needed = [s.stdin, s.stdout, wr.as_raw_fd()];
        (needed.into_iter())
            .chain(s.ready.map(|r| r.0))
            .chain(s.exec_fd)
            .chain(enter.as_ref().map(|e| e.as_raw_fd()))
            .max()
            .unwrap_or(2)
            .max(2)
            + 1
    };
    // SAFETY: sigset_t is plain data; sigfillset/pthread_sigmask only write to our locals.
    // Blocking every signal across the clone keeps going's handlers from running in the
    // child before it has reset them (they would write to going's own wake-up pipe).
    let mut all: libc::sigset_t = unsafe { std::mem::zeroed() };
    let mut old: libc::sigset_t = unsafe { std::mem::zeroed() };
    unsafe {
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
    }
    let mut stack = ChildStack([std::mem::MaybeUninit::uninit(); CHILD_STACK]);
    let mut pid: libc::c_long = -(libc::ENOSYS as libc::c_long);
    while !NO_CLONE3.load(Ordering::Relaxed) {
        let a = ChildArgs {
            s,
            argv: &argv,
            envp: &envp,
            report: wr.as_raw_fd(),
            keep: keep(&enter),
            enter: enter.as_ref().map(|e| e.as_raw_fd()),
        };
        let into_flag = into.map_or(0, |_| CLONE_INTO_CGROUP);
        let args = CloneArgs {
            flags: (libc::CLONE_VM | libc::CLONE_VFORK | libc::CLONE_FILES) as u64 | into_flag,
            exit_signal: libc::SIGCHLD as u64,
            stack: stack.0.as_mut_ptr() as u64,
            stack_size: CHILD_STACK as u64,
            cgroup: into.map_or(0, |dir| dir as u64),
            ..CloneArgs::default()
        };
        // SAFETY: going is single-threaded, so the child inherits no lock held by another
        // thread; it runs child_entry on `stack`, making only async-signal-safe calls,
        // and going waits until it has exec'd or exited (CLONE_VFORK), so `stack`, `a`
        // and what they point to outlive its use of them.
        pid = unsafe { clone3(&args, child_entry, &a as *const ChildArgs as *mut _) };
        let refused = matches!(-pid as c_int, libc::ENOSYS | libc::EINVAL | libc::E2BIG);
        match (s.cgroup, into) {
            // A kernel before 5.7 (no CLONE_INTO_CGROUP): the child moves itself from now
            // on, and clone3 is tried again without it before it is taken for unusable.
            (Some((dir, _)), Some(_)) if refused && -pid as c_int != libc::ENOSYS => {
                NO_CLONE_INTO.store(true, Ordering::Relaxed);
                into = None;
                match low(dir) {
                    Ok(fd) => enter = Some(fd),
                    Err(e) => {
                        pid = -(e.raw_os_error().unwrap_or(libc::EMFILE) as libc::c_long);
                        break;
                    }
                }
            }
            // A seccomp filter that answers unknown calls with EPERM (Docker before
            // 20.10.10) refuses clone3 itself: fork, as if it did not exist.
            _ if refused || -pid as c_int == libc::EPERM => {
                NO_CLONE3.store(true, Ordering::Relaxed)
            }
            _ => break,
        }
    }
    let mut err = io::Error::from_raw_os_error((-pid) as c_int);
    if NO_CLONE3.load(Ordering::Relaxed) {
        // Without clone3 there is no CLONE_INTO_CGROUP either: the child moves itself.
        let dir = s.cgroup.map(|c| c.0);
        // SAFETY: as above; the forked child has memory and fds of its own.
        pid = unsafe { libc::fork() } as libc::c_long;
        if pid == 0 {
            unsafe { child(s, &argv, &envp, wr.as_raw_fd(), None, dir) }
        }
        err = io::Error::last_os_error();
    }
    // SAFETY: restores the mask saved above.
    unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &old, ptr::null_mut()) };
    if pid < 0 {
        return Err(err);
    }
    drop(wr);
    Ok(Child {
        pid: pid as Pid,
        report: rd,
    })
}

fn nul_terminated(v: &[CString]) -> Vec<*const c_char> {
    v.iter()
        .map(|s| s.as_ptr())
        .chain(std::iter::once(ptr::null()))
        .collect()
}

/// The child: its own fd table (the fds below `keep`, when cloned sharing going's),
/// default signal state, the service's cgroup, a fresh session, stdio on /dev/null, the
/// service's limits, priority, root, identity, cwd and umask, then execve of the first
/// candidate that exists. Limits, nice and chroot come while still root (raising a hard
/// limit, lowering nice and chroot need it); the identity drops groups, gid, then uid, and
/// is verified. Limits and identity are raw system calls: libc's wrappers would apply them
/// to every thread of going's, through memory this child may share.
///
/// # Safety
/// Only in the child after fork or clone3; `argv` and `envp` are NUL-terminated arrays of
/// pointers into `s`, and `report` is the write end of the exec-error pipe. `keep`: the
/// child was cloned with CLONE_FILES and must unshare before touching any fd. `enter`: the
/// directory of the cgroup to move into (when the child was not made in it), below `keep`.
unsafe fn child(
    s: &Spawn,
    argv: &[*const c_char],
    envp: &[*const c_char],
    report: RawFd,
    keep: Option<c_int>,
    enter: Option<RawFd>,
) -> ! {
    let fail = |step: Step, errno: i32, arg: i32| -> ! {
        let mut b = [0u8; 12];
        b[..4].copy_from_slice(&(step as i32).to_ne_bytes());
        b[4..8].copy_from_slice(&errno.to_ne_bytes());
        b[8..].copy_from_slice(&arg.to_ne_bytes());
        libc::write(report, b.as_ptr().cast(), b.len());
        libc::_exit(127)
    };
    let errno = || *libc::__errno_location();

    if let Some(keep) = keep {
        // Copies only the fds below `keep`: O(1) however many going holds above. Before
        // close_range could unshare (Linux 5.9), the whole table is copied instead.
        let flags = libc::CLOSE_RANGE_UNSHARE;
        let r = libc::syscall(libc::SYS_close_range, keep as u32, u32::MAX, flags);
        if r < 0 && libc::syscall(libc::SYS_unshare, libc::CLONE_FILES) < 0 {
            fail(Step::Stdio, errno(), 0);
        }
    }
    // Handlers do not survive exec, but ignored signals would: reset every one. The raw
    // system call, because libc refuses the signals it reserves (32–34) and may lock.
    let dfl = [0u64; 4]; // the kernel's struct sigaction: SIG_DFL, no flags, empty mask
    for sig in 1..=64 {
        libc::syscall(
            libc::SYS_rt_sigaction,
            sig,
            dfl.as_ptr(),
            ptr::null_mut::<u64>(),
            8,
        );
    }
    // "0" is the writer: the child moves itself, before it can fork anything.
    if let Some(dir) = enter {
        let flags = libc::O_WRONLY | libc::O_CLOEXEC;
        let procs = libc::openat(dir, c"cgroup.procs".as_ptr(), flags);
        if procs < 0 || libc::write(procs, b"0".as_ptr().cast(), 1) != 1 {
            fail(Step::Cgroup, errno(), 0);
        }
        libc::close(procs);
    }
    if libc::setsid() < 0 {
        fail(Step::Session, errno(), 0);
    }
    if libc::dup2(s.stdin, 0) < 0 || libc::dup2(s.stdout, 1) < 0 || libc::dup2(s.stdout, 2) < 0 {
        fail(Step::Stdio, errno(), 0);
    }
    for &(resource, ref limit) in s.limits {
        let none = ptr::null_mut::<libc::rlimit>();
        if libc::syscall(libc::SYS_prlimit64, 0, resource, limit as *const _, none) < 0 {
            fail(Step::Limit, errno(), resource);
        }
    }
    // After the limits: N must be below the service's own limit on open files. dup2 makes
    // an fd without close-on-exec; the pipe's own fd already at N only needs that cleared.
    if let Some((w, n)) = s.ready {
        let done = match w == n {
            true => libc::fcntl(n, libc::F_SETFD, 0),
            false => libc::dup2(w, n),
        };
        if done < 0 {
            fail(Step::ReadyFd, errno(), n);
        }
    }
    if let Some(n) = s.nice {
        if libc::setpriority(libc::PRIO_PROCESS as _, 0, n) < 0 {
            fail(Step::Nice, errno(), n);
        }
    }
    if let Some(dir) = s.chroot {
        if libc::chroot(dir.as_ptr()) < 0 || libc::chdir(c"/".as_ptr()) < 0 {
            fail(Step::Chroot, errno(), 0);
        }
    }
    if let Some(c) = &s.creds {
        if let Err((step, e)) = become_user(c) {
            fail(step, e, 0);
        }
    }
    if libc::chdir(s.cwd.as_ptr()) < 0 {
        fail(Step::Chdir, errno(), 0);
    }
    libc::umask(s.umask);
    unblock_all();

    let err = exec_first(s.paths, argv, envp);
    fail(Step::Exec, err, 0)
}

/// In the child: drops groups, gid, then uid, and verifies each (a service given a user
/// never keeps root). Err: the step that failed, and errno. Raw system calls: they change
/// this process alone.
///
/// # Safety
/// As `child`: only in the child after fork.
unsafe fn become_user(c: &Creds) -> Result<(), (Step, i32)> {
    use libc::{syscall, SYS_getegid, SYS_geteuid, SYS_getgid, SYS_getuid};
    let errno = || *libc::__errno_location();
    if syscall(libc::SYS_setgroups, c.groups.len(), c.groups.as_ptr()) < 0 {
        return Err((Step::Groups, errno()));
    }
    let gid = c.gid as libc::c_long;
    if syscall(libc::SYS_setgid, gid) < 0
        || syscall(SYS_getgid) != gid
        || syscall(SYS_getegid) != gid
    {
        return Err((Step::Gid, errno()));
    }
    let Some(uid) = c.uid else {
        return Ok(());
    };
    let uid = uid as libc::c_long;
    if syscall(libc::SYS_setuid, uid) < 0 {
        return Err((Step::Uid, errno()));
    }
    if syscall(SYS_getuid) != uid
        || syscall(SYS_geteuid) != uid
        || (uid != 0 && syscall(libc::SYS_setuid, 0) == 0)
    {
        return Err((Step::Uid, libc::EPERM));
    }
    Ok(())
}

/// In the child: execve of the first candidate that exists, as execvp: a missing one moves
/// on to the next, EACCES is remembered. Returns only on failure, with the errno to report.
///
/// # Safety
/// As `child`: only in the child after fork, with NUL-terminated `argv` and `envp`.
unsafe fn exec_first(paths: &[CString], argv: &[*const c_char], envp: &[*const c_char]) -> i32 {
    let mut err = libc::ENOENT;
    for path in paths {
        libc::execve(path.as_ptr(), argv.as_ptr(), envp.as_ptr());
        match *libc::__errno_location() {
            libc::ENOENT | libc::ENOTDIR => {}
            libc::EACCES => err = libc::EACCES,
            e => return e,
        }
    }
    err
}

/// A close-on-exec pipe: (read end, write end). The read end is non-blocking, as going
/// reads it from its loop; the write end blocks, as whoever writes it expects (a service's
/// stdout, a child's report).
pub fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as c_int; 2];
    // SAFETY: pipe2 writes two fds into the array; we own them from here on.
    let (r, w) = unsafe {
        cvt(libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC))?;
        (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1]))
    };
    // SAFETY: fcntl on an fd we own.
    cvt(unsafe { libc::fcntl(r.as_raw_fd(), libc::F_SETFL, libc::O_NONBLOCK) })?;
    Ok((r, w))
}

/// Sends `sig` to the process `pid`.
pub fn kill(pid: Pid, sig: c_int) -> io::Result<()> {
    debug_assert!(pid > 1);
    // SAFETY: kill has no memory effects.
    cvt(unsafe { libc::kill(pid, sig) }).map(drop)
}

/// Sends `sig` to the process group `pgid`.
pub fn kill_group(pgid: Pid, sig: c_int) -> io::Result<()> {
    debug_assert!(pgid > 1);
    // SAFETY: kill has no memory effects; a negative pid names a process group.
    cvt(unsafe { libc::kill(-pgid, sig) }).map(drop)
}

/// Whether any process is left in the group `pgid` (zombies count).
pub fn group_alive(pgid: Pid) -> bool {
    match kill_group(pgid, 0) {
        Ok(()) => true,
        Err(e) => e.raw_os_error() == Some(libc::EPERM),
    }
}

/// Reaps one child that has exited, any child at all, those that send no SIGCHLD too:
/// (pid, wait status). Each call walks all of going's children: it is for the ends that a
/// pending SIGCHLD swallowed ([`read_exits`]), looked for after the named one's restart.
pub fn reap() -> Option<(Pid, c_int)> {
    let mut status = 0;
    // SAFETY: waitpid writes only to `status`.
    let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG | libc::__WALL) };
    (pid > 0).then_some((pid, status))
}

/// Reaps the child `pid` if it has exited: its wait status, in the form waitpid gives.
/// One child looked at, however many going has. None while it runs, or once it was
/// reaped already.
pub fn reap_pid(pid: Pid) -> Option<c_int> {
    // SAFETY: siginfo_t is plain data; waitid writes only into it.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    let flags = libc::WEXITED | libc::WNOHANG | libc::__WALL;
    let r = unsafe { libc::waitid(libc::P_PID, pid as libc::id_t, &mut info, flags) };
    // SAFETY: waitid filled in a SIGCHLD's fields (si_pid 0: nothing had exited).
    let (pid, status) = unsafe { (info.si_pid(), info.si_status()) };
    if r < 0 || pid == 0 {
        return None;
    }
    Some(match info.si_code {
        libc::CLD_EXITED => (status & 0xff) << 8,
        libc::CLD_DUMPED => (status & 0x7f) | 0x80,
        _ => status & 0x7f,
    })
}

/// How a process ended, from its wait status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    Code(i32),
    Signal {
        sig: i32,
        core: bool,
    },
    /// An adopted process: not going's child, so its exit status is not going's to read.
    Unknown,
}

impl Exit {
    pub fn from_status(status: c_int) -> Exit {
        if libc::WIFSIGNALED(status) {
            Exit::Signal {
                sig: libc::WTERMSIG(status),
                core: libc::WCOREDUMP(status),
            }
        } else {
            Exit::Code(libc::WEXITSTATUS(status))
        }
    }
}

/// epoll, level-triggered, one `u64` token per fd.
pub struct Epoll(OwnedFd);

pub type Event = libc::epoll_event;

pub const NO_EVENT: Event = libc::epoll_event { events: 0, u64: 0 };

pub fn token(e: &Event) -> u64 {
    e.u64
}

impl Epoll {
    pub fn new() -> io::Result<Epoll> {
        // SAFETY: epoll_create1 returns a new fd that we own.
        let fd = cvt(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) })?;
        Ok(Epoll(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// Watches `fd` for input.
    pub fn add(&self, fd: RawFd, token: u64) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_ADD, fd, libc::EPOLLIN as u32, token)
    }

    /// Watches `fd` for output (`output`), or for nothing yet (its fd known from the start).
    pub fn add_for_output(&self, fd: RawFd, output: bool, token: u64) -> io::Result<()> {
        let events = if output { libc::EPOLLOUT as u32 } else { 0 };
        self.ctl(libc::EPOLL_CTL_ADD, fd, events, token)
    }

    /// Watches `fd`, already added, for output (`output`) or for nothing.
    pub fn set_output(&self, fd: RawFd, output: bool, token: u64) -> io::Result<()> {
        let events = if output { libc::EPOLLOUT as u32 } else { 0 };
        self.ctl(libc::EPOLL_CTL_MOD, fd, events, token)
    }

    fn ctl(&self, op: c_int, fd: RawFd, events: u32, token: u64) -> io::Result<()> {
        let mut ev = libc::epoll_event { events, u64: token };
        // SAFETY: ev is a valid epoll_event for the duration of the call.
        cvt(unsafe { libc::epoll_ctl(self.0.as_raw_fd(), op, fd, &mut ev) }).map(drop)
    }

    pub fn delete(&self, fd: RawFd) {
        // SAFETY: a null event is allowed for EPOLL_CTL_DEL since Linux 2.6.9.
        unsafe { libc::epoll_ctl(self.0.as_raw_fd(), libc::EPOLL_CTL_DEL, fd, ptr::null_mut()) };
    }

    /// Waits for events; `timeout_ms` -1 waits forever. An interrupting signal returns 0.
    pub fn wait(&self, events: &mut [Event], timeout_ms: i32) -> io::Result<usize> {
        let max = events.len().min(c_int::MAX as usize) as c_int;
        // SAFETY: the kernel writes at most `max` events into the slice.
        let n =
            unsafe { libc::epoll_wait(self.0.as_raw_fd(), events.as_mut_ptr(), max, timeout_ms) };
        match cvt(n) {
            Ok(n) => Ok(n as usize),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(0),
            Err(e) => Err(e),
        }
    }
}

/// Start-up hygiene: fds 0–2 exist (so nothing of ours lands on them) and every fd going
/// inherited is close-on-exec, so none leaks into a service.
pub fn sanitize_fds() {
    for fd in 0..3 {
        // SAFETY: fcntl/open have no memory effects; an fd opened here is kept for good.
        unsafe {
            if libc::fcntl(fd, libc::F_GETFD) == -1 {
                libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
            }
        }
    }
    // SAFETY: close_range only changes fd flags (Linux 5.11+; older kernels: ENOSYS/EINVAL).
    let r = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            3u32,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    if r == 0 {
        return;
    }
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return;
    };
    for fd in dir
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<RawFd>().ok())
    {
        if fd > 2 {
            // SAFETY: setting FD_CLOEXEC on an fd (even the directory's own) is harmless.
            unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
        }
    }
}

/// Empties the signal mask (raw, as libc keeps its reserved signals out of reach). going
/// calls it at start-up too, once its handlers are in place: a SIGCHLD blocked by whoever
/// started going would blind it.
pub fn unblock_all() {
    let empty = 0u64;
    // SAFETY: rt_sigprocmask reads an 8-byte mask and writes nothing (old set is null).
    unsafe {
        libc::syscall(
            libc::SYS_rt_sigprocmask,
            libc::SIG_SETMASK,
            &empty,
            ptr::null_mut::<u64>(),
            8,
        )
    };
}

/// A signal mask as the kernel keeps it: bit N-1 for signal N.
pub type SigMask = u64;

/// Blocks `sigs` as well; returns the mask as it was. A signal that comes while it is
/// blocked waits, pending, even across an exec: for the handlers of the new binary.
pub fn block_signals(sigs: &[c_int]) -> SigMask {
    let set = sigs.iter().fold(0u64, |m, &s| m | 1 << (s - 1));
    let mut old = 0u64;
    // SAFETY: rt_sigprocmask reads one 8-byte mask and writes another, both live locals.
    unsafe { libc::syscall(libc::SYS_rt_sigprocmask, libc::SIG_BLOCK, &set, &mut old, 8) };
    old
}

/// Unblocks `sigs`.
pub fn unblock_signals(sigs: &[c_int]) {
    let set = sigs.iter().fold(0u64, |m, &s| m | 1 << (s - 1));
    // SAFETY: rt_sigprocmask reads an 8-byte mask and writes nothing (old set is null).
    unsafe {
        libc::syscall(
            libc::SYS_rt_sigprocmask,
            libc::SIG_UNBLOCK,
            &set,
            ptr::null_mut::<u64>(),
            8,
        )
    };
}

/// Sets the signal mask back to what [`block_signals`] returned.
pub fn set_signal_mask(mask: SigMask) {
    // SAFETY: rt_sigprocmask reads an 8-byte mask and writes nothing (old set is null).
    unsafe {
        libc::syscall(
            libc::SYS_rt_sigprocmask,
            libc::SIG_SETMASK,
            &mask,
            ptr::null_mut::<u64>(),
            8,
        )
    };
}

/// Orphans of services (double-forking helpers) are reparented to going, not init.
pub fn become_subreaper() {
    // SAFETY: prctl with an integer argument has no memory effects.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
}

/// Going's own hard limit on `resource` (u64::MAX: none), which only root may raise.
pub fn hard_limit(resource: c_int) -> u64 {
    let mut r = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: getrlimit writes only to `r`; on failure it stays "none".
    unsafe { libc::getrlimit(resource as _, &mut r) };
    match r.rlim_max {
        libc::RLIM_INFINITY => u64::MAX,
        #[allow(clippy::unnecessary_cast)] // rlim_t is not u64 everywhere
        n => n as u64,
    }
}

/// Going's own nice value, below which only root may go.
pub fn nice_now() -> i32 {
    // SAFETY: getpriority has no memory effects; -1 is also a valid value, and the worst
    // a failure gives is that value.
    unsafe { libc::getpriority(libc::PRIO_PROCESS as _, 0) }
}

pub fn nofile_limit() -> libc::rlimit {
    let mut r = libc::rlimit {
        rlim_cur: 1024,
        rlim_max: 1024,
    };
    // SAFETY: getrlimit writes only to `r`.
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) };
    r
}

/// Raises going's own fd limit: as root to the kernel's ceiling (fs.nr_open), as systemd
/// does, else the soft limit to the hard one. Services get the original back. A service
/// costs going an fd, its output pipe.
pub fn raise_nofile(r: libc::rlimit) {
    let ceiling = std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|s| s.trim().parse::<libc::rlim_t>().ok())
        .filter(|&c| c > r.rlim_max);
    for max in ceiling.into_iter().chain([r.rlim_max]) {
        let raised = libc::rlimit {
            rlim_cur: max,
            rlim_max: max,
        };
        // Above the hard limit it takes CAP_SYS_RESOURCE: EPERM otherwise, and the hard
        // limit is the next try.
        if set_nofile(raised).is_ok() {
            return;
        }
    }
}

/// Sets going's own fd limit to `r`: the one it was started with, given back before an
/// upgrade's exec, so that the new binary takes that for the original and its services
/// get it, not the raised one.
pub fn set_nofile(r: libc::rlimit) -> io::Result<()> {
    // SAFETY: setrlimit reads only `r`.
    match unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &r) } {
        0 => Ok(()),
        _ => Err(io::Error::last_os_error()),
    }
}

pub fn getpid() -> Pid {
    // SAFETY: getpid cannot fail.
    unsafe { libc::getpid() }
}

/// Signal names without the SIG prefix, as kill(1) spells them.
const SIGNALS: [(c_int, &str); 31] = [
    (libc::SIGHUP, "HUP"),
    (libc::SIGINT, "INT"),
    (libc::SIGQUIT, "QUIT"),
    (libc::SIGILL, "ILL"),
    (libc::SIGTRAP, "TRAP"),
    (libc::SIGABRT, "ABRT"),
    (libc::SIGBUS, "BUS"),
    (libc::SIGFPE, "FPE"),
    (libc::SIGKILL, "KILL"),
    (libc::SIGUSR1, "USR1"),
    (libc::SIGSEGV, "SEGV"),
    (libc::SIGUSR2, "USR2"),
    (libc::SIGPIPE, "PIPE"),
    (libc::SIGALRM, "ALRM"),
    (libc::SIGTERM, "TERM"),
    (libc::SIGSTKFLT, "STKFLT"),
    (libc::SIGCHLD, "CHLD"),
    (libc::SIGCONT, "CONT"),
    (libc::SIGSTOP, "STOP"),
    (libc::SIGTSTP, "TSTP"),
    (libc::SIGTTIN, "TTIN"),
    (libc::SIGTTOU, "TTOU"),
    (libc::SIGURG, "URG"),
    (libc::SIGXCPU, "XCPU"),
    (libc::SIGXFSZ, "XFSZ"),
    (libc::SIGVTALRM, "VTALRM"),
    (libc::SIGPROF, "PROF"),
    (libc::SIGWINCH, "WINCH"),
    (libc::SIGIO, "IO"),
    (libc::SIGPWR, "PWR"),
    (libc::SIGSYS, "SYS"),
];

pub fn signal_name(sig: c_int) -> Option<&'static str> {
    SIGNALS.iter().find(|s| s.0 == sig).map(|s| s.1)
}

/// A user's entry in the passwd database.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Passwd {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: String,
}

/// Looks a user up by name or by uid; None when there is no such user.
pub fn passwd(name: Option<&str>, uid: u32) -> io::Result<Option<Passwd>> {
    let cname = c_name(name.unwrap_or(""))?;
    // SAFETY: getpw*_r fill `pw` with pointers into `buf` and set `out`; the strings are
    // read (NUL-terminated, in `buf`) before `buf` changes.
    lookup(|buf| unsafe {
        let mut pw: libc::passwd = std::mem::zeroed();
        let mut out: *mut libc::passwd = ptr::null_mut();
        let (b, n) = (buf.as_mut_ptr(), buf.len());
        let r = match name {
            Some(_) => libc::getpwnam_r(cname.as_ptr(), &mut pw, b, n, &mut out),
            None => libc::getpwuid_r(uid, &mut pw, b, n, &mut out),
        };
        let s = |p: *const c_char| std::ffi::CStr::from_ptr(p).to_string_lossy().into_owned();
        (
            r,
            (!out.is_null()).then(|| Passwd {
                name: s(pw.pw_name),
                uid: pw.pw_uid,
                gid: pw.pw_gid,
                home: s(pw.pw_dir),
            }),
        )
    })
}

/// Looks a group up by name; None when there is no such group.
pub fn group_id(name: &str) -> io::Result<Option<u32>> {
    let cname = c_name(name)?;
    // SAFETY: as in `passwd`; only the gid is read.
    lookup(|buf| unsafe {
        let mut gr: libc::group = std::mem::zeroed();
        let mut out: *mut libc::group = ptr::null_mut();
        let r = libc::getgrnam_r(
            cname.as_ptr(),
            &mut gr,
            buf.as_mut_ptr(),
            buf.len(),
            &mut out,
        );
        (r, (!out.is_null()).then_some(gr.gr_gid))
    })
}

fn c_name(name: &str) -> io::Result<CString> {
    CString::new(name).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

/// Runs a `get*_r` lookup with a buffer grown until the entry fits. Not found is a return
/// of 0 or, from some libcs, ENOENT, ESRCH, EBADF or EPERM.
fn lookup<T>(mut f: impl FnMut(&mut [c_char]) -> (c_int, Option<T>)) -> io::Result<Option<T>> {
    let mut buf = vec![0 as c_char; 4096];
    loop {
        match f(&mut buf) {
            (libc::ERANGE, _) if buf.len() < 1 << 22 => buf.resize(buf.len() * 2, 0),
            (_, Some(found)) => return Ok(Some(found)),
            (0 | libc::ENOENT | libc::ESRCH | libc::EBADF | libc::EPERM, None) => return Ok(None),
            (e, None) => return Err(io::Error::from_raw_os_error(e)),
        }
    }
}

/// The groups `user` belongs to, `gid` first, as initgroups(3) would set them.
pub fn group_list(user: &str, gid: u32) -> Vec<u32> {
    let Ok(cname) = CString::new(user) else {
        return vec![gid];
    };
    let mut n: c_int = 32;
    loop {
        let mut groups = vec![0 as libc::gid_t; n as usize];
        // SAFETY: getgrouplist writes at most `n` gids and sets `n` to the count it needs.
        let r = unsafe {
            libc::getgrouplist(
                cname.as_ptr(),
                gid as _,
                groups.as_mut_ptr() as *mut _,
                &mut n,
            )
        };
        if r >= 0 {
            groups.truncate(n as usize);
            return groups;
        }
        if n as usize <= groups.len() {
            n = groups.len() as c_int * 2;
        }
    }
}

/// A signal by name (`HUP`, `SIGHUP`) or number.
pub fn signal_number(name: &str) -> Option<c_int> {
    let bare = name.strip_prefix("SIG").unwrap_or(name);
    match bare.parse::<c_int>() {
        Ok(n) => (1..=64).contains(&n).then_some(n),
        Err(_) => SIGNALS.iter().find(|s| s.1 == bare).map(|s| s.0),
    }
}

/// The uid of the process at the other end of a Unix socket (SO_PEERCRED).
pub fn peer_uid(fd: RawFd) -> io::Result<u32> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `cred`.
    cvt(unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    })?;
    Ok(cred.uid)
}

pub fn geteuid() -> u32 {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() }
}

pub fn getegid() -> u32 {
    // SAFETY: getegid cannot fail.
    unsafe { libc::getegid() }
}

/// The width in columns of the terminal on `fd`; None when `fd` is no terminal.
pub fn terminal_columns(fd: RawFd) -> Option<usize> {
    // SAFETY: winsize is plain data; TIOCGWINSZ writes one into the live local.
    let mut size: libc::winsize = unsafe { std::mem::zeroed() };
    let done = unsafe { libc::ioctl(fd, libc::TIOCGWINSZ, &mut size) };
    (done == 0 && size.ws_col > 0).then_some(size.ws_col as usize)
}

/// An fd that becomes readable when process `pid` exits, for processes going did not fork
/// (adopted after a restart of going), which it cannot wait for.
pub fn pidfd_open(pid: Pid) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open returns a new fd (close-on-exec by the kernel) that we own.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// A process's identity from /proc/PID/stat: its process group and its start time (field
/// 22, in clock ticks since boot), which a recycled pid does not share.
pub fn proc_identity(pid: Pid) -> Option<(Pid, u64)> {
    let (state, pgid, start) = proc_stat(pid)?;
    (state != b'Z' && state != b'X').then_some((pgid, start))
}

/// The state letter, process group and start time (fields 3, 5 and 22) of /proc/PID/stat,
/// a zombie's too. Read into the stack: this runs for every process on some paths.
fn proc_stat(pid: Pid) -> Option<(u8, Pid, u64)> {
    use std::io::Read;
    let mut buf = [0u8; 1024];
    let mut path = [0u8; 32];
    let mut w = &mut path[..];
    std::io::Write::write_fmt(&mut w, format_args!("/proc/{pid}/stat")).ok()?;
    let len = 32 - w.len();
    let path = std::str::from_utf8(&path[..len]).ok()?;
    let n = std::fs::File::open(path).ok()?.read(&mut buf).ok()?;
    // The command name (field 2) may hold spaces, parentheses and, cut at 15 bytes, half a
    // UTF-8 character: only what follows the last ')' is read as text.
    let close = buf[..n].iter().rposition(|&b| b == b')')?;
    let rest = std::str::from_utf8(buf.get(close + 2..n)?).ok()?;
    let mut fields = rest.split(' ');
    let state = *fields.next()?.as_bytes().first()?;
    let pgid = fields.nth(1)?.parse().ok()?;
    Some((state, pgid, fields.nth(16)?.parse().ok()?))
}

/// The monotonic clock (CLOCK_MONOTONIC, as `Instant` reads it) in milliseconds: a time
/// that means the same to every process of this boot, for deadlines that outlive going.
pub fn monotonic_ms() -> u64 {
    // SAFETY: timespec is plain data; clock_gettime writes only to it.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1000 + ts.tv_nsec as u64 / 1_000_000
}

/// A deadline as [`monotonic_ms`] reads it, told from `now` (`Instant::now()`, read with
/// `clock` = `monotonic_ms()`), and back.
pub fn deadline_ms(at: std::time::Instant, now: std::time::Instant, clock: u64) -> u64 {
    clock + at.saturating_duration_since(now).as_millis() as u64
}

/// See [`deadline_ms`].
pub fn deadline_at(ms: u64, now: std::time::Instant, clock: u64) -> std::time::Instant {
    now + std::time::Duration::from_millis(ms.saturating_sub(clock))
}

/// How long ago a process with this start time (clock ticks since boot) started.
pub fn age(start_ticks: u64) -> Option<std::time::Duration> {
    // SAFETY: sysconf has no memory effects.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    let uptime = std::fs::read_to_string("/proc/uptime").ok()?;
    let since_boot = uptime_ms(uptime.split(' ').next()?)?;
    let started = start_ticks.saturating_mul(1000) / hz;
    Some(std::time::Duration::from_millis(
        since_boot.saturating_sub(started),
    ))
}

/// "12345.67" (seconds, as /proc/uptime says them) in milliseconds: integers only, as
/// floating point would bring its parser and tables into the binary for this one use.
fn uptime_ms(text: &str) -> Option<u64> {
    let (secs, frac) = text.split_once('.').unwrap_or((text, "0"));
    let frac = frac.get(..frac.len().min(3))?;
    let scale = 10u64.pow(3 - frac.len() as u32);
    Some(secs.parse::<u64>().ok()? * 1000 + frac.parse::<u64>().ok()? * scale)
}

/// Whether a process other than a zombie is left in group `pgid`, from /proc: for groups
/// whose members are not going's children, whose zombies it cannot reap (`group_alive`
/// counts them).
pub fn group_has_live(pgid: Pid) -> bool {
    // No member at all, not even a zombie: known without reading every process's stat
    // (10,000 of them on a busy machine, read at each look at the group).
    if !group_alive(pgid) {
        return false;
    }
    match group_members(pgid) {
        Some(members) => !members.is_empty(),
        None => true,
    }
}

/// The processes of group `pgid` but zombies, from /proc; None when /proc cannot be read.
pub fn group_members(pgid: Pid) -> Option<Vec<Pid>> {
    let dir = std::fs::read_dir("/proc").ok()?;
    let pids = dir
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<Pid>().ok());
    Some(
        pids.filter(|&p| proc_identity(p).is_some_and(|(group, _)| group == pgid))
            .collect(),
    )
}

/// Takes over an fd inherited across going's own re-exec: None unless it is open. It is
/// made close-on-exec again, so that no service inherits it.
pub fn inherit_fd(fd: RawFd) -> Option<OwnedFd> {
    // SAFETY: fcntl on an fd number; we take ownership only if it is open, and it was
    // handed to us by the going that exec'd us, which owned it.
    unsafe {
        if fd < 3 || libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) < 0 {
            return None;
        }
        Some(OwnedFd::from_raw_fd(fd))
    }
}

/// Lets `fd` survive an exec (true) or not (false).
pub fn keep_on_exec(fd: RawFd, keep: bool) {
    // SAFETY: fcntl only changes the fd's flags.
    unsafe { libc::fcntl(fd, libc::F_SETFD, if keep { 0 } else { libc::FD_CLOEXEC }) };
}

/// Replaces going with `path` (argv and environment as given); returns only on failure.
pub fn exec(path: &CString, argv: &[CString], envp: &[CString]) -> io::Error {
    let argv = nul_terminated(argv);
    let envp = nul_terminated(envp);
    // SAFETY: argv and envp are NUL-terminated arrays of pointers to live C strings.
    unsafe { libc::execve(path.as_ptr(), argv.as_ptr(), envp.as_ptr()) };
    io::Error::last_os_error()
}

/// A directory held open, so that what is done in it is done in the directory that was
/// checked, not in whatever a path names by then. Its own last component is opened
/// without following a symbolic link, and so is every name in it.
pub struct Dir(std::fs::File);

fn c_path(p: &std::path::Path) -> io::Result<CString> {
    use std::os::unix::ffi::OsStrExt;
    CString::new(p.as_os_str().as_bytes()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

impl Dir {
    /// Opens the directory `path`; ELOOP when its last component is a symbolic link.
    pub fn open(path: &std::path::Path) -> io::Result<Dir> {
        let p = c_path(path)?;
        let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC;
        // SAFETY: open reads a valid C string and returns a new fd that we own.
        let fd = cvt(unsafe { libc::open(p.as_ptr(), flags) })?;
        Ok(Dir(unsafe { std::fs::File::from_raw_fd(fd) }))
    }

    /// The same directory, its fd moved to [`HIGH_FD`] or above: see [`high`].
    pub fn high(self) -> Dir {
        Dir(std::fs::File::from(high(OwnedFd::from(self.0))))
    }

    /// A directory that another part of going handed over (an upgrade), made close-on-exec.
    pub fn from_fd(fd: OwnedFd) -> Dir {
        Dir(std::fs::File::from(fd))
    }

    /// The directory open as `file` (which stays open too).
    pub fn from_file(file: &std::fs::File) -> io::Result<Dir> {
        Ok(Dir(file.try_clone()?))
    }

    /// What `name` in the directory is, itself (a symbolic link is not followed).
    pub fn stat_at(&self, name: &str) -> io::Result<std::fs::Metadata> {
        self.open_at(name, libc::O_PATH, 0)?.metadata()
    }

    pub fn fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }

    pub fn metadata(&self) -> io::Result<std::fs::Metadata> {
        self.0.metadata()
    }

    /// Opens `name` in the directory with `flags` (close-on-exec and no-follow are added).
    pub fn open_at(
        &self,
        name: &str,
        flags: c_int,
        mode: libc::mode_t,
    ) -> io::Result<std::fs::File> {
        let n = c_name(name)?;
        let flags = flags | libc::O_NOFOLLOW | libc::O_CLOEXEC;
        // SAFETY: openat reads a valid C string and returns a new fd that we own.
        let fd = cvt(unsafe { libc::openat(self.fd(), n.as_ptr(), flags, mode as libc::c_uint) })?;
        Ok(unsafe { std::fs::File::from_raw_fd(fd) })
    }

    /// The subdirectory `name`, itself not a symbolic link.
    pub fn subdir(&self, name: &str) -> io::Result<Dir> {
        let f = self.open_at(name, libc::O_RDONLY | libc::O_DIRECTORY, 0)?;
        Ok(Dir(f))
    }

    pub fn mkdir(&self, name: &str, mode: libc::mode_t) -> io::Result<()> {
        let n = c_name(name)?;
        // SAFETY: mkdirat reads a valid C string.
        cvt(unsafe { libc::mkdirat(self.fd(), n.as_ptr(), mode) }).map(drop)
    }

    pub fn unlink(&self, name: &str) -> io::Result<()> {
        let n = c_name(name)?;
        // SAFETY: unlinkat reads a valid C string.
        cvt(unsafe { libc::unlinkat(self.fd(), n.as_ptr(), 0) }).map(drop)
    }

    pub fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        let (f, t) = (c_name(from)?, c_name(to)?);
        // SAFETY: renameat reads two valid C strings.
        cvt(unsafe { libc::renameat(self.fd(), f.as_ptr(), self.fd(), t.as_ptr()) }).map(drop)
    }

    /// The names in the directory, `.` and `..` aside.
    pub fn names(&self) -> io::Result<Vec<std::ffi::OsString>> {
        use std::os::unix::ffi::OsStrExt;
        // fdopendir takes the fd it is given: a duplicate, closed by closedir.
        let dup = self.0.try_clone()?;
        // SAFETY: fdopendir takes ownership of the fd (released from `dup` only on success);
        // readdir's entries are read before the next call; closedir frees the stream.
        unsafe {
            let dirp = libc::fdopendir(dup.as_raw_fd());
            if dirp.is_null() {
                return Err(io::Error::last_os_error());
            }
            std::mem::forget(dup);
            libc::rewinddir(dirp);
            let mut out = Vec::new();
            loop {
                *libc::__errno_location() = 0;
                let ent = libc::readdir(dirp);
                if ent.is_null() {
                    let errno = *libc::__errno_location();
                    libc::closedir(dirp);
                    if errno != 0 {
                        return Err(io::Error::from_raw_os_error(errno));
                    }
                    return Ok(out);
                }
                let name = std::ffi::CStr::from_ptr((*ent).d_name.as_ptr()).to_bytes();
                if name != b"." && name != b".." {
                    out.push(std::ffi::OsStr::from_bytes(name).to_owned());
                }
            }
        }
    }
}

/// The processes that hold a lock (flock or POSIX) on the file of this device and inode,
/// from /proc/locks: to name who holds a lock going could not take. For a flock that is
/// the process that took it, which may have ended since, its fd passed on to a child.
pub fn lock_holders(meta: &std::fs::Metadata) -> Vec<Pid> {
    let Ok(text) = std::fs::read_to_string("/proc/locks") else {
        return Vec::new();
    };
    text.lines()
        .filter_map(|l| lock_line(l, meta).map(|(_, pid)| pid))
        .collect()
}

/// A line of /proc/locks, or of a `lock:` line of /proc/PID/fdinfo after the tag, if it
/// is a lock (not a waiter's `->`) on the file of `meta`: its kind (`FLOCK`, `POSIX`,
/// `OFDLCK`) and the pid that took it.
/// "1: FLOCK  ADVISORY  WRITE 1234 08:01:567 0 EOF" (major and minor in hex)
fn lock_line<'a>(line: &'a str, meta: &std::fs::Metadata) -> Option<(&'a str, Pid)> {
    use std::os::unix::fs::MetadataExt;
    let (dev, ino) = (meta.dev(), meta.ino());
    let f: Vec<&str> = line.split_whitespace().collect();
    let (kind, pid, id) = (*f.get(1)?, f.get(4)?.parse::<Pid>().ok()?, f.get(5)?);
    let mut parts = id.split(':');
    let maj = u32::from_str_radix(parts.next()?, 16).ok()?;
    let min = u32::from_str_radix(parts.next()?, 16).ok()?;
    let i = parts.next()?.parse::<u64>().ok()?;
    let ours = maj == libc::major(dev) && min == libc::minor(dev) && i == ino;
    (ours && pid > 0).then_some((kind, pid))
}

/// The process `pid`, with its real and effective uids, if it holds a flock(2) on the
/// file of `meta` through an fd of its own: /proc/PID/fdinfo says which open file holds a
/// lock, where /proc/locks names only the process that took it. Taken to hold it when its
/// fds cannot be read (another user's, to a going that is not root), if it runs.
pub fn flock_holder(pid: Pid, meta: &std::fs::Metadata) -> Option<(Pid, u32, u32)> {
    let holds = match std::fs::read_dir(format!("/proc/{pid}/fdinfo")) {
        Ok(fds) => fds.flatten().any(|fd| {
            let text = std::fs::read_to_string(fd.path()).unwrap_or_default();
            text.lines()
                .filter_map(|l| l.strip_prefix("lock:"))
                .any(|l| lock_line(l, meta).is_some_and(|(kind, _)| kind == "FLOCK"))
        }),
        Err(e) => e.kind() == io::ErrorKind::PermissionDenied,
    };
    if !holds {
        return None;
    }
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let uids = status.lines().find_map(|l| l.strip_prefix("Uid:"))?;
    let mut w = uids.split_whitespace().map(|u| u.parse::<u32>().ok());
    Some((pid, w.next()??, w.next()??))
}

/// This boot's identity (/proc/sys/kernel/random/boot_id): a pid and start time name a
/// process only within one boot.
pub fn boot_id() -> Option<String> {
    let id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
    let id = id.trim();
    (!id.is_empty() && id.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-'))
        .then(|| id.to_string())
}

/// A path that reaches `name` inside the directory `dir` through its open fd, for the
/// calls that take no directory fd (bind(2)); the plain path where /proc is missing.
pub fn path_in(dir: &Dir, fallback: &std::path::Path, name: &str) -> std::path::PathBuf {
    let via = std::path::PathBuf::from(format!("/proc/self/fd/{}", dir.fd()));
    if via.is_dir() {
        via.join(name)
    } else {
        fallback.join(name)
    }
}

/// Sets the file mode creation mask, returning the previous one (single-threaded going:
/// around a bind(2), so that the socket is created with the right mode from the start).
pub fn set_umask(mask: libc::mode_t) -> libc::mode_t {
    // SAFETY: umask cannot fail.
    unsafe { libc::umask(mask) }
}

/// The file type (the `S_IFMT` bits of `st_mode`) of what `fd` refers to.
pub fn fd_type(fd: RawFd) -> io::Result<libc::mode_t> {
    // SAFETY: fstat writes only to `st`, plain data.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    cvt(unsafe { libc::fstat(fd, &mut st) })?;
    Ok(st.st_mode & libc::S_IFMT)
}

/// One write(2) of `buf` to `fd`, which the caller does not own (fd 2).
pub fn write(fd: RawFd, buf: &[u8]) -> io::Result<usize> {
    // SAFETY: write only reads `buf.len()` bytes of `buf`.
    let n = unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

/// Sends on the socket `fd` without waiting, whatever the blocking mode of its open file
/// description (which others share, so it is not changed), and without SIGPIPE.
pub fn send_now(fd: RawFd, buf: &[u8]) -> io::Result<usize> {
    let flags = libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL;
    // SAFETY: send only reads `buf.len()` bytes of `buf`.
    let n = unsafe { libc::send(fd, buf.as_ptr().cast(), buf.len(), flags) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

/// Whether a write to `fd` would go through now (poll(2) without waiting): false when it
/// would wait; EPIPE when it never will (no reader left, a terminal hung up).
pub fn writable_now(fd: RawFd) -> io::Result<bool> {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLOUT,
        revents: 0,
    };
    // SAFETY: poll reads and writes the one pollfd it is given.
    cvt(unsafe { libc::poll(&mut p, 1, 0) })?;
    if p.revents & libc::POLLOUT != 0 {
        Ok(true)
    } else if p.revents & (libc::POLLERR | libc::POLLHUP | libc::POLLNVAL) != 0 {
        Err(io::Error::from_raw_os_error(libc::EPIPE))
    } else {
        Ok(false)
    }
}

/// Whether `fd` can be read now (poll(2) without waiting): a pidfd is, once its process
/// ended. False when that cannot be told.
pub fn readable_now(fd: RawFd) -> bool {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: poll reads and writes the one pollfd it is given.
    let n = unsafe { libc::poll(&mut p, 1, 0) };
    n > 0 && p.revents & libc::POLLIN != 0
}

/// How many bytes wait unread on the socket `fd` (FIONREAD); 0 when that cannot be told.
pub fn unread(fd: RawFd) -> usize {
    let mut n: c_int = 0;
    // SAFETY: FIONREAD writes one int.
    match cvt(unsafe { libc::ioctl(fd, libc::FIONREAD, &mut n) }) {
        Ok(_) => n.max(0) as usize,
        Err(_) => 0,
    }
}

/// The type of the filesystem the file at `path` is on (statfs(2) magic, as in
/// linux/magic.h), symbolic links followed.
pub fn fs_type(path: &std::path::Path) -> io::Result<u32> {
    use std::os::unix::ffi::OsStrExt;
    let path = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: statfs reads a valid C string and writes only to `st`, plain data.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    cvt(unsafe { libc::statfs(path.as_ptr(), &mut st) })?;
    // Every magic fits 32 bits; f_type is signed on some targets, so compare those.
    Ok(st.f_type as u32)
}

/// The same for the open file `fd` (fstatfs(2)).
pub fn fd_fs_type(fd: RawFd) -> io::Result<u32> {
    // SAFETY: fstatfs writes only to `st`, plain data.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    cvt(unsafe { libc::fstatfs(fd, &mut st) })?;
    Ok(st.f_type as u32)
}

// Readiness notification (src/notify.rs): the sd_notify socket and /proc for its senders.

/// The process group of `pid`, from /proc; None once the process is gone (reaped). A
/// zombie's counts: its pid, and so the group it names, is not reused before it is reaped.
pub fn process_group(pid: Pid) -> Option<Pid> {
    proc_stat(pid).map(|(_, pgid, _)| pgid)
}

/// Makes the Unix socket `fd` receive each sender's credentials with its messages
/// (SO_PASSCRED). Set before bind(2), so that no message arrives without them.
pub fn pass_credentials(fd: RawFd) -> io::Result<()> {
    let one: c_int = 1;
    // SAFETY: setsockopt reads one int from a live local.
    cvt(unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_PASSCRED,
            (&one as *const c_int).cast(),
            std::mem::size_of::<c_int>() as libc::socklen_t,
        )
    })
    .map(drop)
}

/// Binds the Unix socket `fd` to `path`, the bytes of `sun_path`: a leading NUL names the
/// abstract namespace (the name is every byte after it); empty asks the kernel for a
/// fresh abstract name of its own (autobind).
pub fn bind_unix(fd: RawFd, path: &[u8]) -> io::Result<()> {
    // SAFETY: sockaddr_un is plain data; all zeroes is a valid value.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    // A path needs its terminating NUL to fit; an abstract name may fill sun_path.
    let room = addr.sun_path.len() - (path.first() != Some(&0)) as usize;
    if path.len() > room {
        return Err(io::Error::from_raw_os_error(libc::ENAMETOOLONG));
    }
    for (to, &from) in addr.sun_path.iter_mut().zip(path) {
        *to = from as c_char;
    }
    let len = std::mem::offset_of!(libc::sockaddr_un, sun_path) + path.len();
    // SAFETY: bind reads `len` bytes of `addr`, which holds at least that many.
    cvt(unsafe {
        libc::bind(
            fd,
            (&addr as *const libc::sockaddr_un).cast(),
            len as libc::socklen_t,
        )
    })
    .map(drop)
}

/// One datagram read by [`recv_with_creds`].
pub struct Datagram {
    /// How many bytes were put in the buffer.
    pub len: usize,
    /// The datagram was longer than the buffer: the rest is lost.
    pub truncated: bool,
    /// The sender's pid, uid and gid as the kernel gave them (SCM_CREDENTIALS): its own,
    /// unless it had the privilege to claim others (CAP_SYS_ADMIN, CAP_SETUID, CAP_SETGID).
    pub creds: Option<(Pid, u32, u32)>,
}

/// Reads one datagram from the socket `fd` without waiting, with its sender's credentials
/// (the socket has [`pass_credentials`]). File descriptors sent along are never kept: the
/// control buffer has room for the credentials only, so the kernel discards them, and any
/// that got through anyway are closed here.
pub fn recv_with_creds(fd: RawFd, buf: &mut [u8]) -> io::Result<Datagram> {
    const UCRED: usize = std::mem::size_of::<libc::ucred>();
    // SAFETY: CMSG_SPACE and CMSG_LEN only compute sizes.
    const SPACE: usize = unsafe { libc::CMSG_SPACE(UCRED as u32) } as usize;
    let cred_len = unsafe { libc::CMSG_LEN(UCRED as u32) } as usize;
    let no_data = unsafe { libc::CMSG_LEN(0) } as usize;
    // Aligned as a cmsghdr must be.
    #[repr(C, align(8))]
    struct Control([u8; SPACE]);
    let mut control = Control([0; SPACE]);
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: msghdr is plain data; all zeroes is a valid value.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.0.as_mut_ptr().cast();
    msg.msg_controllen = SPACE as _;
    let flags = libc::MSG_DONTWAIT | libc::MSG_CMSG_CLOEXEC;
    // SAFETY: recvmsg writes at most iov_len bytes into `buf` and msg_controllen bytes into
    // `control`, both alive for the call.
    let n = unsafe { libc::recvmsg(fd, &mut msg, flags) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut creds = None;
    // SAFETY: the CMSG_* walk stays within the msg_controllen bytes the kernel filled in;
    // data is read unaligned; an fd in SCM_RIGHTS is a new one of ours, closed once.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            let (level, kind, len) = ((*c).cmsg_level, (*c).cmsg_type, (*c).cmsg_len as usize);
            if level == libc::SOL_SOCKET && kind == libc::SCM_CREDENTIALS && len >= cred_len {
                let u: libc::ucred = ptr::read_unaligned(libc::CMSG_DATA(c).cast());
                creds = Some((u.pid, u.uid, u.gid));
            } else if level == libc::SOL_SOCKET && kind == libc::SCM_RIGHTS {
                let fds = libc::CMSG_DATA(c).cast::<c_int>();
                for i in 0..len.saturating_sub(no_data) / std::mem::size_of::<c_int>() {
                    drop(OwnedFd::from_raw_fd(ptr::read_unaligned(fds.add(i))));
                }
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    Ok(Datagram {
        len: n as usize,
        truncated: msg.msg_flags & libc::MSG_TRUNC != 0,
        creds,
    })
}

// cgroup v2 (src/cgroup.rs): removing and locking a cgroup's directories, and watching its
// cgroup.events. The members of a cgroup are signalled one by one with `kill`.

impl Dir {
    /// Removes the directory `name` in the directory (rmdir(2) semantics: a cgroup goes
    /// only once it holds no process and no cgroup).
    pub fn rmdir(&self, name: &str) -> io::Result<()> {
        let n = c_name(name)?;
        // SAFETY: unlinkat reads a valid C string.
        cvt(unsafe { libc::unlinkat(self.fd(), n.as_ptr(), libc::AT_REMOVEDIR) }).map(drop)
    }

    /// Takes an exclusive flock(2) on the directory without waiting: false when another
    /// open file description holds it. Released when the directory is closed.
    pub fn try_lock(&self) -> io::Result<bool> {
        match self.0.try_lock() {
            Ok(()) => Ok(true),
            Err(std::fs::TryLockError::WouldBlock) => Ok(false),
            Err(std::fs::TryLockError::Error(e)) => Err(e),
        }
    }
}

impl Epoll {
    /// Watches `fd` for priority events alone: a cgroup's `cgroup.events` is always
    /// readable, and tells of a change with EPOLLPRI until it is read again.
    pub fn add_priority(&self, fd: RawFd, token: u64) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_ADD, fd, libc::EPOLLPRI as u32, token)
    }
}

// What a service costs (usage.rs): /proc read without an allocation per process.

/// Calls `f` with the pid of every process in /proc, in one readdir(3) pass: std's
/// `read_dir` allocates a name per entry; this allocates only the directory stream.
pub fn each_pid(mut f: impl FnMut(Pid)) -> io::Result<()> {
    // SAFETY: opendir reads a valid C string and returns a stream that is ours until the
    // closedir below (close-on-exec in glibc and musl); an entry's name is read before the
    // next readdir, which may reuse it; errno is read right after the readdir that set it.
    unsafe {
        let dir = libc::opendir(c"/proc".as_ptr());
        if dir.is_null() {
            return Err(io::Error::last_os_error());
        }
        loop {
            *libc::__errno_location() = 0;
            let ent = libc::readdir(dir);
            if ent.is_null() {
                let errno = *libc::__errno_location();
                libc::closedir(dir);
                return match errno {
                    0 => Ok(()),
                    e => Err(io::Error::from_raw_os_error(e)),
                };
            }
            let name = std::ffi::CStr::from_ptr((*ent).d_name.as_ptr()).to_bytes();
            if let Some(pid) = std::str::from_utf8(name).ok().and_then(|n| n.parse().ok()) {
                f(pid);
            }
        }
    }
}

/// /proc/PID/FILE read into `buf` with one read(2), which gives a /proc file of this size
/// whole, and no allocation; None once the process is gone. What does not fit is cut.
pub fn read_proc<'b>(pid: Pid, file: &str, buf: &'b mut [u8]) -> Option<&'b [u8]> {
    use std::io::{Read, Write};
    let mut path = [0u8; 64];
    let mut w = &mut path[..];
    write!(w, "/proc/{pid}/{file}").ok()?;
    let len = 64 - w.len();
    let path = std::str::from_utf8(&path[..len]).ok()?;
    let n = std::fs::File::open(path).ok()?.read(buf).ok()?;
    Some(&buf[..n])
}

/// Clock ticks per second (USER_HZ), the unit of CPU times in /proc.
pub fn clock_ticks() -> u64 {
    // SAFETY: sysconf has no memory effects.
    (unsafe { libc::sysconf(libc::_SC_CLK_TCK) }).max(1) as u64
}

/// The size of a page, the unit of RSS in /proc/PID/stat.
pub fn page_size() -> u64 {
    // SAFETY: sysconf has no memory effects.
    (unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).max(1) as u64
}

#[cfg(test)]
mod tests {
    #[test]
    fn uptime_is_read_in_milliseconds() {
        assert_eq!(super::uptime_ms("12345.67"), Some(12_345_670));
        assert_eq!(super::uptime_ms("3.5"), Some(3_500));
        assert_eq!(super::uptime_ms("7"), Some(7_000));
        assert_eq!(super::uptime_ms("x.1"), None);
    }
}

#[cfg(test)]
mod spawn_tests {
    use super::*;
    use std::os::fd::AsFd;

    fn c(s: &str) -> CString {
        CString::new(s).unwrap()
    }

    /// Waits (up to 10 s) for the process `pid` to end, then reaps it.
    fn reaped(pid: Pid) -> c_int {
        let pidfd = pidfd_open(pid).unwrap();
        let mut p = libc::pollfd {
            fd: pidfd.as_fd().as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: poll reads and writes the one pollfd it is given.
        assert_eq!(unsafe { libc::poll(&mut p, 1, 10_000) }, 1, "it ended");
        reap_pid(pid).expect("reaped")
    }

    #[test]
    fn a_child_sees_none_of_the_fds_kept_high_and_its_failure_is_reported() {
        let (_r, w) = pipe().unwrap();
        let kept = high(w);
        assert!(kept.as_raw_fd() >= HIGH_FD, "{}", kept.as_raw_fd());
        // Not close-on-exec, as no fd of going's is: the child must close it itself.
        keep_on_exec(kept.as_raw_fd(), true);
        let null = std::fs::File::options()
            .read(true)
            .write(true)
            .open("/dev/null")
            .unwrap();
        // Exits 7 when fd `kept` is not open in it, 1 when it is.
        let script = format!(
            "test -e /proc/self/fd/{} && exit 1; exit 7",
            kept.as_raw_fd()
        );
        let (argv, root) = ([c("sh"), c("-c"), c(&script)], c("/"));
        let s = Spawn {
            paths: &[c("/bin/sh")],
            argv: &argv,
            envp: &[],
            stdin: null.as_raw_fd(),
            stdout: null.as_raw_fd(),
            limits: &[],
            nice: None,
            chroot: None,
            creds: None,
            cwd: &root,
            umask: 0o022,
            ready: None,
            exec_fd: None,
            cgroup: None,
        };
        let child = spawn_child(&s).unwrap();
        assert!(child.report.as_raw_fd() >= HIGH_FD);
        assert_eq!(Exit::from_status(reaped(child.pid)), Exit::Code(7));
        assert_eq!(reap_pid(child.pid), None, "reaped once");
        // A failed exec is reported on the pipe, as from a forked child.
        let s = Spawn {
            paths: &[c("/nonexistent/going-test")],
            ..s
        };
        let child = spawn_child(&s).unwrap();
        let mut b = [0u8; 12];
        let n = std::io::Read::read(&mut std::fs::File::from(child.report), &mut b).unwrap();
        let err = ChildError::decode(b).filter(|_| n == 12).expect("a report");
        assert_eq!((err.step, err.errno), (Step::Exec, libc::ENOENT));
        let status = reaped(child.pid);
        assert_eq!(Exit::from_status(status), Exit::Code(127));
    }
}

/// The unwinder's entry points, as going's release binary has them: nothing unwinds in a
/// panic=abort build, and the linker script (link/no-unwind-tables.ld) drops the tables an
/// unwinder would read, so the backtrace of a panic message finds no frame whatever
/// unwinder answers. Defined here, they keep the linker from pulling in musl's libunwind
/// for std's backtrace and personality code that never runs: 48 kB of code, and the
/// stdio it logs with, that VmPeak counted.
#[cfg(all(target_env = "musl", panic = "abort", not(test)))]
mod no_unwinder {
    use std::ffi::{c_int, c_void};

    /// `_URC_END_OF_STACK`: no frame to walk, no handler found.
    const END_OF_STACK: c_int = 5;

    // SAFETY (all of them): they touch no memory; callers get "no frame" or a zero.
    #[no_mangle]
    extern "C" fn _Unwind_Backtrace(_: *mut c_void, _: *mut c_void) -> c_int {
        END_OF_STACK
    }
    #[no_mangle]
    extern "C" fn _Unwind_RaiseException(_: *mut c_void) -> c_int {
        END_OF_STACK
    }
    #[no_mangle]
    extern "C" fn _Unwind_Resume(_: *mut c_void) -> ! {
        std::process::abort()
    }
    #[no_mangle]
    extern "C" fn _Unwind_DeleteException(_: *mut c_void) {}
    #[no_mangle]
    extern "C" fn _Unwind_GetIP(_: *mut c_void) -> usize {
        0
    }
    #[no_mangle]
    extern "C" fn _Unwind_GetIPInfo(_: *mut c_void, before: *mut c_int) -> usize {
        let _ = before;
        0
    }
    #[no_mangle]
    extern "C" fn _Unwind_GetCFA(_: *mut c_void) -> usize {
        0
    }
    #[no_mangle]
    extern "C" fn _Unwind_FindEnclosingFunction(_: *mut c_void) -> *mut c_void {
        std::ptr::null_mut()
    }
    #[no_mangle]
    extern "C" fn _Unwind_GetLanguageSpecificData(_: *mut c_void) -> *mut c_void {
        std::ptr::null_mut()
    }
    #[no_mangle]
    extern "C" fn _Unwind_GetRegionStart(_: *mut c_void) -> usize {
        0
    }
    #[no_mangle]
    extern "C" fn _Unwind_GetTextRelBase(_: *mut c_void) -> usize {
        0
    }
    #[no_mangle]
    extern "C" fn _Unwind_GetDataRelBase(_: *mut c_void) -> usize {
        0
    }
    #[no_mangle]
    extern "C" fn _Unwind_SetGR(_: *mut c_void, _: c_int, _: usize) {}
    #[no_mangle]
    extern "C" fn _Unwind_SetIP(_: *mut c_void, _: usize) {}
}
