//! Accepting control connections. Each request is handed to the daemon's loop, which owns the
//! state, and its answer written back; a slow or broken client only holds its own task.

use std::{os::unix::fs::PermissionsExt as _, path::Path};

use tokio::{
    io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader},
    net::{UnixListener, UnixStream},
    sync::{mpsc, oneshot},
};
use tracing::{debug, warn};

use tokio::task::JoinHandle;

use super::protocol::{Request, Response};

/// A request and where its answer goes.
pub type Call = (Request, oneshot::Sender<Reply>);

/// An answer, and the descriptors that go with it (the listening sockets and pin lock a
/// `handoff` passes to the daemon that takes over), sent as `SCM_RIGHTS` with the line.
#[derive(Debug)]
pub struct Reply {
    /// The answer.
    pub response: Response,
    /// Descriptors for the peer.
    pub fds: Vec<std::os::fd::OwnedFd>,
    /// A handoff: after the answer, this connection waits for the new daemon's `ready`.
    pub handoff: bool,
}

impl Reply {
    /// The answer to a handoff, with the descriptors it passes.
    pub fn handoff(response: Response, fds: Vec<std::os::fd::OwnedFd>) -> Self {
        Self { response, fds, handoff: true }
    }
}

impl From<Response> for Reply {
    fn from(response: Response) -> Self {
        Self { response, fds: Vec::new(), handoff: false }
    }
}

/// Longest request line accepted.
const MAX_LINE: usize = 64 * 1024;

/// Fails when a daemon answers on `path`: with another `pin_dir` (or the pin lock would have
/// stopped this one), taking its socket over would leave it unreachable.
pub fn ensure_free(path: &Path) -> std::io::Result<()> {
    if std::os::unix::net::UnixStream::connect(path).is_ok() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::AddrInUse,
            "another balancer daemon answers on it; give this one its own control_socket",
        ));
    }
    Ok(())
}

/// Binds `path` (replacing whatever socket is there: check `ensure_free` first, unless taking
/// over from the daemon that answers there), makes it 0600, and serves it.
pub fn listen(path: &Path, calls: mpsc::Sender<Call>) -> std::io::Result<JoinHandle<()>> {
    if path.exists() {
        std::fs::remove_file(path)?;
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(tokio::spawn(async move {
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    tokio::spawn(serve(stream, calls.clone()));
                }
                Err(e) => warn!(error = %e, "control socket accept failed"),
            }
        }
    }))
}

async fn serve(stream: UnixStream, calls: mpsc::Sender<Call>) {
    // The socket's mode already keeps others out; the peer's uid is checked as well, in case
    // the file's mode or owner was changed.
    let root = stream.peer_cred().is_ok_and(|c| c.uid() == 0);
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read.take(MAX_LINE as u64 * 64)).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let reply: Reply = if !root {
            Response::err("the control socket answers root only").into()
        } else if line.len() > MAX_LINE {
            Response::err("request too long").into()
        } else {
            match serde_json::from_str::<Request>(&line) {
                Err(e) => Response::err(format!("bad request: {e}")).into(),
                Ok(request) => {
                    debug!(?request, "control request");
                    let (tx, rx) = oneshot::channel();
                    if calls.send((request, tx)).await.is_err() {
                        return;
                    }
                    rx.await.unwrap_or_else(|_| Response::err("the daemon is shutting down").into())
                }
            }
        };
        let mut out = serde_json::to_vec(&reply.response).unwrap_or_default();
        out.push(b'\n');
        let sent = if reply.fds.is_empty() {
            write.write_all(&out).await.is_ok()
        } else {
            send_with_fds(write.as_ref(), &out, &reply.fds).await.is_ok()
        };
        if reply.handoff {
            // The new daemon says `ready` on this connection once it serves; anything else
            // (it died, it gave up, it took too long) means the old daemon carries on.
            let said = tokio::time::timeout(crate::handoff::READY_TIMEOUT, lines.next_line()).await;
            let done = sent && matches!(said, Ok(Ok(Some(ref l))) if l == "ready");
            let request = if done { Request::HandoffDone } else { Request::HandoffAborted };
            let (tx, _rx) = oneshot::channel();
            let _ = calls.send((request, tx)).await;
            return;
        }
        if !sent {
            return;
        }
    }
}

/// Writes `bytes` with `fds` attached (`SCM_RIGHTS`): one `sendmsg`, so the descriptors arrive
/// with the first byte of the answer.
async fn send_with_fds(stream: &UnixStream, bytes: &[u8], fds: &[std::os::fd::OwnedFd]) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;

    use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg};
    let raw: Vec<i32> = fds.iter().map(AsRawFd::as_raw_fd).collect();
    let mut sent = 0;
    while sent < bytes.len() {
        stream.writable().await?;
        let n = stream.try_io(tokio::io::Interest::WRITABLE, || {
            let iov = [std::io::IoSlice::new(&bytes[sent..])];
            let cmsg = if sent == 0 { vec![ControlMessage::ScmRights(&raw)] } else { Vec::new() };
            sendmsg::<()>(stream.as_raw_fd(), &iov, &cmsg, MsgFlags::MSG_NOSIGNAL, None).map_err(std::io::Error::from)
        });
        match n {
            Ok(n) => sent += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
