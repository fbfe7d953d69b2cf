//! Exit codes, all in one place: those of going and of its commands (sysexits(3) where one
//! fits), as going(8) EXIT STATUS lists them. A command's code travels from the running
//! going on the first line of its reply.

/// Done; for `status`, every named service runs.
pub const OK: u8 = 0;
/// `check` or `reload` found an invalid file.
pub const FAILED: u8 = 1;
/// A named service is not running (LSB's `status` code).
pub const NOT_RUNNING: u8 = 3;
/// A named service does not exist.
pub const UNKNOWN: u8 = 4;
/// The command line is wrong.
pub const EX_USAGE: u8 = 64;
/// going cannot be reached.
pub const EX_UNAVAILABLE: u8 = 69;
/// A system resource going needs at start-up could not be had.
pub const EX_OSERR: u8 = 71;
/// RUNDIR or its lock could not be created.
pub const EX_CANTCREAT: u8 = 73;
/// Another going holds RUNDIR's or CONFDIR's lock.
pub const EX_TEMPFAIL: u8 = 75;
/// The caller may not control going.
pub const EX_NOPERM: u8 = 77;
/// RUNDIR is not going's own and private, or a control socket is served by someone else.
pub const EX_CONFIG: u8 = 78;
