//! A seamless restart (`balancer run --takeover`), as `HAProxy` passes its listeners to the
//! process that replaces it:
//!
//! 1. the new daemon asks the running one, over the control socket, for its pin lock, admin
//!    socket and L7 listening sockets (`SCM_RIGHTS`), and keeps that connection open;
//! 2. the old one goes on serving, but stops writing the maps and taking changes;
//! 3. the new one loads and attaches (re-adopting the pinned maps), accepts on the same
//!    listening sockets — the kernel hands each new connection to one of the two — binds the
//!    control socket, and writes `ready` on the handoff connection;
//! 4. the old one then stops accepting, finishes its requests in flight and exits. If the new
//!    one dies or gives up before `ready` (the connection closes), or takes longer than
//!    `READY_TIMEOUT`, the old one carries on as before: a failed upgrade refuses nothing.

use std::{
    collections::HashMap,
    io::{IoSliceMut, Write as _},
    net::SocketAddr,
    os::{
        fd::{FromRawFd as _, OwnedFd},
        unix::net::UnixStream,
    },
    path::Path,
    time::Duration,
};

use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};

use crate::control::protocol::{HandoffAnswer, Request, Response};

/// Why taking over failed.
#[derive(Debug, thiserror::Error)]
pub enum HandoffError {
    /// Talking to the running daemon.
    #[error("taking over from the daemon on {socket}: {why}")]
    Exchange {
        /// The control socket.
        socket: String,
        /// What went wrong.
        why: String,
    },
}

/// What the running daemon passed over.
#[derive(Debug)]
pub struct Inherited {
    /// Its pin lock (the same open file, so the lock is shared until it exits).
    pub lock: OwnedFd,
    /// Its admin (metrics and status) socket.
    pub admin: std::net::TcpListener,
    /// Its L7 listening sockets, by VIP.
    pub listeners: HashMap<SocketAddr, std::net::TcpListener>,
    /// The handoff connection, on which `ready` tells the old daemon to go.
    pub stream: UnixStream,
}

/// How long the old daemon waits for the new one's `ready`.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// What the new daemon writes once it serves.
pub const READY: &[u8] = b"ready\n";

/// Tells the old daemon, on the handoff connection, that this one serves now, so it can go.
pub fn ready(mut stream: UnixStream) -> Result<(), HandoffError> {
    stream.write_all(READY).map_err(|e| HandoffError::Exchange {
        socket: "the handoff connection".into(),
        why: format!("the old daemon gave up the handoff (it waits {} s): {e}", READY_TIMEOUT.as_secs()),
    })
}

/// Asks the daemon answering on `socket` to hand over; `None` when no daemon answers there
/// (then there is nothing to take over, and the caller starts afresh).
pub fn take_over(socket: &Path) -> Result<Option<Inherited>, HandoffError> {
    let fail = |why: String| HandoffError::Exchange { socket: socket.display().to_string(), why };
    let Ok(mut stream) = UnixStream::connect(socket) else { return Ok(None) };
    stream.set_read_timeout(Some(Duration::from_secs(10))).map_err(|e| fail(e.to_string()))?;
    let mut line = serde_json::to_vec(&Request::Handoff).expect("a request serializes");
    line.push(b'\n');
    stream.write_all(&line).map_err(|e| fail(format!("sending the request: {e}")))?;
    let (text, fds) = receive(&stream).map_err(|e| fail(format!("reading the answer: {e}")))?;
    let response: Response = serde_json::from_slice(&text).map_err(|e| fail(format!("a broken answer: {e}")))?;
    if !response.ok {
        return Err(fail(response.error.unwrap_or_else(|| "refused".into())));
    }
    let answer: HandoffAnswer =
        serde_json::from_value(response.data).map_err(|e| fail(format!("a broken answer: {e}")))?;
    let mut fds = fds.into_iter();
    let lock = fds.next().ok_or_else(|| fail("no pin lock came with the answer".into()))?;
    let admin = fds.next().ok_or_else(|| fail("no admin socket came with the answer".into()))?.into();
    let listeners: HashMap<SocketAddr, std::net::TcpListener> =
        answer.listeners.into_iter().zip(fds.by_ref().map(std::net::TcpListener::from)).collect();
    Ok(Some(Inherited { lock, admin, listeners, stream }))
}

/// Reads one answer line and the descriptors sent with it.
fn receive(stream: &UnixStream) -> std::io::Result<(Vec<u8>, Vec<OwnedFd>)> {
    use std::os::fd::AsRawFd as _;
    let mut text = Vec::new();
    let mut fds = Vec::new();
    let mut buf = [0u8; 4096];
    let mut cmsg = nix::cmsg_space!([std::os::fd::RawFd; 64]);
    while !text.contains(&b'\n') {
        let mut iov = [IoSliceMut::new(&mut buf)];
        let msg = recvmsg::<()>(stream.as_raw_fd(), &mut iov, Some(&mut cmsg), MsgFlags::MSG_CMSG_CLOEXEC)
            .map_err(std::io::Error::from)?;
        for c in msg.cmsgs().map_err(std::io::Error::from)? {
            if let ControlMessageOwned::ScmRights(raw) = c {
                // SAFETY: the kernel just installed these descriptors in this process for us;
                // nothing else owns them.
                fds.extend(raw.into_iter().map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }));
            }
        }
        let n = msg.bytes;
        if n == 0 {
            return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "the daemon closed the connection"));
        }
        text.extend_from_slice(&buf[..n]);
    }
    Ok((text, fds))
}
