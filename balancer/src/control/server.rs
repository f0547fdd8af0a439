//! Accepting control connections. Each request is handed to the daemon's loop, which owns the
//! state, and its answer written back; a slow or broken client only holds its own task.

use std::{os::unix::fs::PermissionsExt as _, path::Path};

use tokio::{
    io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader},
    net::{UnixListener, UnixStream},
    sync::{mpsc, oneshot},
};
use tracing::{debug, warn};

use super::protocol::{Request, Response};

/// A request and where its answer goes.
pub type Call = (Request, oneshot::Sender<Response>);

/// Longest request line accepted.
const MAX_LINE: usize = 64 * 1024;

/// Binds `path` (replacing a stale socket), makes it 0600, and serves it forever.
///
/// # Errors
/// When the socket cannot be created.
pub fn listen(path: &Path, calls: mpsc::Sender<Call>) -> std::io::Result<()> {
    // A socket someone answers on belongs to a running daemon (with another pin_dir, or the
    // pin lock would have stopped us): taking it over would leave that daemon unreachable.
    if std::os::unix::net::UnixStream::connect(path).is_ok() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::AddrInUse,
            "another balancer daemon answers on it; give this one its own control_socket",
        ));
    }
    if path.exists() {
        std::fs::remove_file(path)?;
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    tokio::spawn(async move {
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    tokio::spawn(serve(stream, calls.clone()));
                }
                Err(e) => warn!(error = %e, "control socket accept failed"),
            }
        }
    });
    Ok(())
}

async fn serve(stream: UnixStream, calls: mpsc::Sender<Call>) {
    // The socket's mode already keeps others out; the peer's uid is checked as well, in case
    // the file's mode or owner was changed.
    let root = stream.peer_cred().is_ok_and(|c| c.uid() == 0);
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read.take(MAX_LINE as u64 * 64)).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let response = if !root {
            Response::err("the control socket answers root only")
        } else if line.len() > MAX_LINE {
            Response::err("request too long")
        } else {
            match serde_json::from_str::<Request>(&line) {
                Err(e) => Response::err(format!("bad request: {e}")),
                Ok(request) => {
                    debug!(?request, "control request");
                    let (tx, rx) = oneshot::channel();
                    if calls.send((request, tx)).await.is_err() {
                        return;
                    }
                    rx.await.unwrap_or_else(|_| Response::err("the daemon is shutting down"))
                }
            }
        };
        let mut out = serde_json::to_vec(&response).unwrap_or_default();
        out.push(b'\n');
        if write.write_all(&out).await.is_err() {
            return;
        }
    }
}
