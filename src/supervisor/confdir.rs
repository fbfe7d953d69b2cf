//! The lock on CONFDIR: two goings given one CONFDIR and different RUNDIRs would both run
//! every service. flock(2) on the directory itself, taken again when the directory at the
//! path is another one (made anew, or a symbolic link pointed elsewhere), and handed over
//! on an upgrade.

use std::fs::{self, File};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::sys;

#[derive(Default)]
pub struct ConfLock {
    pub held: Option<File>,
}

impl ConfLock {
    /// Locks the directory `confdir` names now, unless that is the one already locked; Ok
    /// too when there is no directory to lock (the scan says why). Err names the going
    /// that holds it.
    pub fn take(&mut self, confdir: &Path) -> Result<(), String> {
        let Ok(meta) = fs::metadata(confdir) else {
            // Gone: let go of it, so that its inode (and inotify's watch on it) can go too.
            self.held = None;
            return Ok(());
        };
        let same = |f: &File| {
            f.metadata()
                .is_ok_and(|m| (m.dev(), m.ino()) == (meta.dev(), meta.ino()))
        };
        if self.held.as_ref().is_some_and(same) || !meta.is_dir() {
            return Ok(());
        }
        let Some(dir) = File::open(confdir).ok().filter(same) else {
            return Ok(()); // replaced meanwhile: the next reload looks again
        };
        if dir.try_lock().is_err() {
            return Err(format!(
                "{} is supervised by another going{}",
                confdir.display(),
                held_by(&meta)
            ));
        }
        self.held = Some(dir);
        Ok(())
    }
}

/// " (pid N: its command line)" for the process holding a lock on this file, or nothing.
pub fn held_by(meta: &fs::Metadata) -> String {
    let me = sys::getpid();
    let Some(pid) = sys::lock_holders(meta).into_iter().find(|&p| p != me) else {
        return String::new();
    };
    let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let words: Vec<String> = (cmdline.split(|&b| b == 0))
        .filter(|w| !w.is_empty())
        .map(crate::output::escape)
        .collect();
    match words.is_empty() {
        true => format!(" (pid {pid})"),
        false => format!(" (pid {pid}: {})", words.join(" ")),
    }
}
