//! One daemon per pin directory. Two daemons writing one set of maps would each undo the
//! other's tables, and a `teardown` under a running daemon leaves it reporting success while
//! L4 traffic fails. The daemon holds an exclusive `flock` on a file named after its pin dir for
//! its whole life (the kernel drops it when the process dies, even by `kill -9`); the file holds
//! its PID, so whoever finds it locked can say who holds it.

use std::{
    fs::{File, OpenOptions},
    io::{Read as _, Seek as _, Write as _},
    path::{Path, PathBuf},
};

use nix::fcntl::{Flock, FlockArg};

/// Where the lock files live (tmpfs: gone at reboot, with the processes they name).
pub const LOCK_DIR: &str = "/run/balancer";

/// Why the pin directory could not be locked.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another daemon holds it.
    #[error(
        "another balancer daemon (PID {pid}) is running with pin_dir {}; stop it first (`kill {pid}`)",
        pin_dir.display()
    )]
    Held {
        /// The pin directory.
        pin_dir: PathBuf,
        /// The holder, as it wrote itself into the lock file (0 if unreadable).
        pid: u32,
    },
    /// The lock file cannot be created or locked.
    #[error("lock file {}: {source}", path.display())]
    Io {
        /// The lock file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// The held lock; released when dropped or when the process ends. The file stays: removing
/// it could let a second daemon lock the removed file while a third creates a new one.
#[derive(Debug)]
pub struct PinLock {
    file: Flock<File>,
}

/// The lock file for `pin_dir`.
pub fn path_for(pin_dir: &Path) -> PathBuf {
    use std::fmt::Write as _;
    let mut name = String::from("pin");
    for b in pin_dir.as_os_str().as_encoded_bytes() {
        if b.is_ascii_alphanumeric() || *b == b'-' {
            name.push(char::from(*b));
        } else {
            let _ = write!(name, "_{b:02x}");
        }
    }
    Path::new(LOCK_DIR).join(format!("{name}.lock"))
}

impl PinLock {
    /// Takes the lock for `pin_dir` and writes this process's PID into it.
    pub fn acquire(pin_dir: &Path) -> Result<Self, LockError> {
        let path = path_for(pin_dir);
        let io = |source| LockError::Io { path: path.clone(), source };
        std::fs::create_dir_all(LOCK_DIR).map_err(io)?;
        let file = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path).map_err(io)?;
        let mut file = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(f) => f,
            Err((mut file, nix::errno::Errno::EWOULDBLOCK)) => {
                return Err(LockError::Held { pin_dir: pin_dir.to_owned(), pid: read_pid(&mut file) });
            }
            Err((_, e)) => return Err(io(e.into())),
        };
        file.set_len(0).map_err(io)?;
        file.rewind().map_err(io)?;
        writeln!(file, "{}", std::process::id()).map_err(io)?;
        Ok(Self { file })
    }

    /// The lock a daemon handed over (`handoff`): the same open file, so the lock is held by
    /// both until the old daemon exits. This process's PID replaces the old one in the file.
    pub fn adopt(fd: std::os::fd::OwnedFd, pin_dir: &Path) -> Result<Self, LockError> {
        let path = path_for(pin_dir);
        let io = |source| LockError::Io { path: path.clone(), source };
        // Locking again through the same open file description succeeds at once.
        let mut file = Flock::lock(File::from(fd), FlockArg::LockExclusiveNonblock).map_err(|(_, e)| io(e.into()))?;
        file.set_len(0).map_err(io)?;
        file.rewind().map_err(io)?;
        writeln!(file, "{}", std::process::id()).map_err(io)?;
        Ok(Self { file })
    }

    /// A descriptor of the locked file, to hand to the daemon taking over.
    pub fn share(&self) -> std::io::Result<std::os::fd::OwnedFd> {
        Ok(self.file.try_clone()?.into())
    }

    /// The PID of the daemon holding `pin_dir`'s lock, if one does.
    pub fn holder(pin_dir: &Path) -> Option<u32> {
        let path = path_for(pin_dir);
        let file = OpenOptions::new().read(true).write(true).open(path).ok()?;
        match Flock::lock(file, FlockArg::LockSharedNonblock) {
            Ok(_) => None,
            Err((mut file, _)) => Some(read_pid(&mut file)),
        }
    }
}

fn read_pid(file: &mut File) -> u32 {
    let mut text = String::new();
    let _ = file.read_to_string(&mut text);
    text.trim().parse().unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_file_names_are_flat_and_distinct() {
        assert_eq!(path_for(Path::new("/sys/fs/bpf/lb")), Path::new("/run/balancer/pin_2fsys_2ffs_2fbpf_2flb.lock"));
        assert_ne!(path_for(Path::new("/sys/fs/bpf/a_b")), path_for(Path::new("/sys/fs/bpf/a/b")));
    }
}
