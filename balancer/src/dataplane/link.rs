//! Replacing the program inside a pinned XDP link, so a restarted daemon swaps in its new
//! program without the interface ever being without one.
//!
//! aya 0.14 can update a link (`Xdp::attach_to_link`) but only from an owned link, which for a
//! pinned one means unpinning it first: a crash at that moment would detach the program. These
//! are the two syscalls that do it in place.

use std::{
    ffi::CString,
    io,
    os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd},
    path::Path,
};

const BPF_OBJ_GET: libc::c_long = 7;
const BPF_LINK_UPDATE: libc::c_long = 29;

/// `union bpf_attr` for `BPF_OBJ_GET`.
#[repr(C)]
#[derive(Default)]
struct ObjGetAttr {
    pathname: u64,
    bpf_fd: u32,
    file_flags: u32,
    path_fd: i32,
    _pad: u32,
}

/// `union bpf_attr` for `BPF_LINK_UPDATE`.
#[repr(C)]
#[derive(Default)]
struct LinkUpdateAttr {
    link_fd: u32,
    new_prog_fd: u32,
    flags: u32,
    old_prog_fd: u32,
}

fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> io::Result<libc::c_long> {
    // SAFETY: `attr` is a live, fully initialised `#[repr(C)]` prefix of `union bpf_attr` for
    // `cmd`, and its size is passed along, as bpf(2) requires.
    let rc = unsafe { libc::syscall(libc::SYS_bpf, cmd, std::ptr::from_mut::<T>(attr), std::mem::size_of::<T>()) };
    if rc < 0 { Err(io::Error::last_os_error()) } else { Ok(rc) }
}

/// Makes the link pinned at `pin` run `prog` from now on (atomically, for every packet).
///
/// # Errors
/// When nothing is pinned at `pin`, it is not a link, or the kernel refuses the program.
pub fn replace_program(pin: &Path, prog: impl AsFd) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt as _;
    let path = CString::new(pin.as_os_str().as_bytes()).map_err(io::Error::other)?;
    let mut get = ObjGetAttr { pathname: path.as_ptr() as u64, ..Default::default() };
    let fd = bpf(BPF_OBJ_GET, &mut get)?;
    // SAFETY: BPF_OBJ_GET returned a new file descriptor that nothing else owns.
    let link = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let mut update = LinkUpdateAttr {
        link_fd: link.as_raw_fd() as u32,
        new_prog_fd: prog.as_fd().as_raw_fd() as u32,
        ..Default::default()
    };
    bpf(BPF_LINK_UPDATE, &mut update).map(drop)
}
