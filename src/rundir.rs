//! RUNDIR, going's private directory: its lock, control socket, state file and the marks of
//! services the admin stopped. going runs as root there, so whoever else could write in it
//! could make going overwrite or create any file, forge replies, or hold the lock.
//!
//! Invariant: RUNDIR is going's own and private — owned by going's uid, writable by nobody
//! else, not a symbolic link — checked on the opened directory, not on its path; every
//! file in it is opened relative to that directory and without following a symbolic link,
//! temporary files are created exclusively, and what is read is a regular file of bounded
//! size (a FIFO there would hang going, a link to /dev/zero grow it without end).

use std::fmt;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use crate::log::Errno;
use crate::sys::{self, Dir};

/// Why RUNDIR (or a directory in it) is not used.
#[derive(Debug)]
pub enum Refused {
    /// It could not be created or opened.
    Io(PathBuf, io::Error),
    /// Someone else owns it, or may write it; or it is a symbolic link, or no directory.
    Unsafe(PathBuf, String),
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            Refused::Io(p, e) => write!(f, "unable to open {}: {}", p.display(), Errno(e)),
            Refused::Unsafe(p, why) => write!(f, "{} is {why}: refused", p.display()),
        }
    }
}

impl Refused {
    /// Whether it is a matter of whose the directory is (and not of an I/O error).
    pub fn is_unsafe(&self) -> bool {
        !matches!(self, Refused::Io(..))
    }
}

pub struct RunDir {
    dir: Dir,
    path: PathBuf,
}

/// The largest file going reads from RUNDIR: a state file of 10,000 services with its
/// journal is about 2 MB.
pub const READ_MAX: u64 = 64 << 20;

impl RunDir {
    /// Creates RUNDIR (mode 0700, missing parents too) when it is not there, and opens it,
    /// refusing one that is not going's own and private.
    pub fn open(path: &Path) -> Result<RunDir, Refused> {
        let io = |e| Refused::Io(path.to_owned(), e);
        match std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(path)
        {
            Ok(()) => {}
            // A symbolic link to nothing, say: the open says what it is.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io(e)),
        }
        let dir = Dir::open(path).map_err(|e| not_dir(path, e))?;
        Self::checked(dir, path.to_owned())
    }

    /// RUNDIR as the going that exec'd this one held it open (an upgrade), checked again.
    pub fn from_dir(dir: Dir, path: &Path) -> Result<RunDir, Refused> {
        Self::checked(dir, path.to_owned())
    }

    fn checked(dir: Dir, path: PathBuf) -> Result<RunDir, Refused> {
        let meta = dir.metadata().map_err(|e| Refused::Io(path.clone(), e))?;
        match crate::config::ours(&meta) {
            Ok(()) => Ok(RunDir { dir, path }),
            Err(why) => Err(Refused::Unsafe(path, why)),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn dir(&self) -> &Dir {
        &self.dir
    }

    /// The directory `name` in RUNDIR, created (0700) when missing, checked as RUNDIR is.
    pub fn subdir(&self, name: &str) -> Result<RunDir, Refused> {
        let path = self.path.join(name);
        match self.dir.mkdir(name, 0o700) {
            Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err(Refused::Io(path, e)),
            _ => {}
        }
        let dir = self.dir.subdir(name).map_err(|e| not_dir(&path, e))?;
        Self::checked(dir, path)
    }

    /// The subdirectory `name` if it is there and going's own; None otherwise.
    pub fn existing_subdir(&self, name: &str) -> Option<RunDir> {
        let dir = self.dir.subdir(name).ok()?;
        Self::checked(dir, self.path.join(name)).ok()
    }

    /// Opens (creating) the lock file: a regular file, going's own.
    pub fn lock_file(&self, name: &str) -> io::Result<File> {
        let f = self
            .dir
            .open_at(name, libc::O_RDWR | libc::O_CREAT, 0o600)?;
        regular(&f)?;
        Ok(f)
    }

    /// Replaces the file `name` with `bytes`: written to a temporary file made afresh
    /// (exclusively, mode 0600), then renamed over it, so a reader sees all or nothing.
    pub fn replace(&self, name: &str, bytes: &[u8]) -> io::Result<()> {
        let tmp = format!(".{name}.new");
        let create = || {
            self.dir
                .open_at(&tmp, libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL, 0o600)
        };
        let mut f = match create() {
            // Left by a going that died while writing it.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                self.dir.unlink(&tmp)?;
                create()?
            }
            other => other?,
        };
        let written = f.write_all(bytes);
        drop(f);
        if let Err(e) = written.and_then(|()| self.dir.rename(&tmp, name)) {
            if let Err(e) = self.dir.unlink(&tmp) {
                if e.kind() != io::ErrorKind::NotFound {
                    return Err(e);
                }
            }
            return Err(e);
        }
        Ok(())
    }

    /// Appends `bytes` to the existing regular file `name` in one write; NotFound when it
    /// is not there.
    pub fn append(&self, name: &str, bytes: &[u8]) -> io::Result<()> {
        let mut f = self.dir.open_at(name, libc::O_WRONLY | libc::O_APPEND, 0)?;
        regular(&f)?;
        match f.write(bytes)? {
            n if n == bytes.len() => Ok(()),
            _ => Err(io::Error::from_raw_os_error(libc::ENOSPC)), // torn: caller rewrites
        }
    }

    /// The content of the regular file `name`, at most `max` bytes (more is an error); None
    /// when there is no such file.
    pub fn read(&self, name: &str, max: u64) -> io::Result<Option<Vec<u8>>> {
        let f = match self.dir.open_at(name, libc::O_RDONLY | libc::O_NONBLOCK, 0) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let meta = regular(&f)?;
        crate::config::ours(&meta)
            .map_err(|why| io::Error::new(io::ErrorKind::PermissionDenied, why))?;
        let mut bytes = Vec::new();
        f.take(max + 1).read_to_end(&mut bytes)?;
        if bytes.len() as u64 > max {
            return Err(io::Error::other(format!("larger than {} MiB", max >> 20)));
        }
        Ok(Some(bytes))
    }

    /// Removes `name`; that it was not there is no error.
    pub fn remove(&self, name: &str) -> io::Result<()> {
        match self.dir.unlink(name) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// The names in the directory that are valid service names.
    pub fn names(&self) -> io::Result<Vec<String>> {
        Ok((self.dir.names()?.into_iter())
            .filter_map(|n| n.into_string().ok())
            .filter(|n| crate::config::valid_name(n))
            .collect())
    }

    /// A path reaching `name` in RUNDIR through the open directory, for bind(2).
    pub fn socket_path(&self, name: &str) -> PathBuf {
        sys::path_in(&self.dir, &self.path, name)
    }
}

/// Why a directory could not be opened: a symbolic link or no directory (O_NOFOLLOW with
/// O_DIRECTORY says ENOTDIR for both), or an I/O error.
fn not_dir(path: &Path, e: io::Error) -> Refused {
    match e.raw_os_error() {
        Some(libc::ELOOP | libc::ENOTDIR) => {
            let link = std::fs::symlink_metadata(path).is_ok_and(|m| m.is_symlink());
            let what = if link {
                "a symbolic link"
            } else {
                "not a directory"
            };
            Refused::Unsafe(path.to_owned(), what.into())
        }
        _ => Refused::Io(path.to_owned(), e),
    }
}

/// Checks that an opened file is a regular file (no FIFO, device or directory).
fn regular(f: &File) -> io::Result<std::fs::Metadata> {
    let meta = f.metadata()?;
    if !meta.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    Ok(meta)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    fn temp(tag: &str) -> PathBuf {
        let p = std::env::temp_dir().join(format!("going-rundir-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        p
    }

    #[test]
    fn created_private_and_files_never_follow_links() {
        let base = temp("links");
        let run = base.join("a/run");
        let rd = RunDir::open(&run).unwrap();
        let mode = std::fs::metadata(&run).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o700);
        // A link where a temporary file or the state goes is never followed.
        let victim = base.join("victim");
        std::fs::write(&victim, "precious").unwrap();
        std::os::unix::fs::symlink(&victim, run.join(".state.new")).unwrap();
        rd.replace("state", b"one\n").unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
        assert_eq!(std::fs::read(run.join("state")).unwrap(), b"one\n");
        std::os::unix::fs::symlink(&victim, run.join("lock")).unwrap();
        assert!(rd.lock_file("lock").is_err());
        std::fs::remove_file(run.join("state")).unwrap();
        std::os::unix::fs::symlink(&victim, run.join("state")).unwrap();
        assert!(rd.append("state", b"x\n").is_err());
        assert!(rd.read("state", 100).is_err());
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
        // A FIFO is not read (and does not block), nor is a file past the bound.
        std::fs::remove_file(run.join("state")).unwrap();
        let fifo = std::ffi::CString::new(run.join("state").to_str().unwrap()).unwrap();
        // SAFETY: mkfifo reads a valid C string.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
        assert!(rd.read("state", 100).is_err());
        std::fs::remove_file(run.join("state")).unwrap();
        std::fs::write(run.join("state"), vec![b'x'; 101]).unwrap();
        assert!(rd.read("state", 100).is_err());
        assert_eq!(rd.read("missing", 100).unwrap(), None);
        std::fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn a_rundir_others_may_write_or_a_link_is_refused() {
        let base = temp("refused");
        std::fs::create_dir_all(&base).unwrap();
        let open = base.join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = RunDir::open(&open).err().unwrap();
        assert!(e
            .to_string()
            .ends_with("writable by group or others (mode 0777): refused"));
        let link = base.join("link");
        std::os::unix::fs::symlink(&open, &link).unwrap();
        let e = RunDir::open(&link).err().unwrap();
        assert!(
            e.to_string().ends_with("is a symbolic link: refused"),
            "{e}"
        );
        std::fs::write(base.join("file"), "").unwrap();
        let e = RunDir::open(&base.join("file")).err().unwrap();
        assert!(
            e.to_string().ends_with("is not a directory: refused"),
            "{e}"
        );
        std::fs::remove_dir_all(&base).unwrap();
    }
}
