//! The CLI's side of the control socket.

use std::{
    io::{BufRead as _, BufReader, Write as _},
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
    time::Duration,
};

use super::protocol::{Request, Response};

/// Why a request got no answer.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The socket is root-only.
    #[error("{}: permission denied (the control socket is root-only: run as root)", .0.display())]
    NotPermitted(PathBuf),
    /// Nothing listens on the socket.
    #[error("{}: no daemon is listening (is `balancer run` running with this control_socket?)", .0.display())]
    NoDaemon(PathBuf),
    /// Connecting failed otherwise.
    #[error("{}: {source}", socket.display())]
    Connect {
        /// The socket.
        socket: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The request could not be sent, or no answer read (30 s at most).
    #[error("{what}: {source}")]
    Io {
        /// Sending or reading.
        what: &'static str,
        /// Why.
        source: std::io::Error,
    },
    /// The answer is not a `Response` (a daemon of another version?).
    #[error("the daemon's answer is not understood: {0}")]
    Answer(#[from] serde_json::Error),
}

/// Sends one request and waits for its answer.
///
/// # Errors
/// A message a person can act on: no daemon, not root, or a broken answer.
pub fn call(socket: &Path, request: &Request) -> Result<Response, CallError> {
    let mut stream = UnixStream::connect(socket).map_err(|e| match e.kind() {
        std::io::ErrorKind::PermissionDenied => CallError::NotPermitted(socket.to_owned()),
        std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => CallError::NoDaemon(socket.to_owned()),
        _ => CallError::Connect { socket: socket.to_owned(), source: e },
    })?;
    let io = |what| move |source| CallError::Io { what, source };
    stream.set_read_timeout(Some(Duration::from_secs(30))).map_err(io("setting the answer's time limit"))?;
    let mut line = serde_json::to_vec(request)?;
    line.push(b'\n');
    stream.write_all(&line).map_err(io("sending the request"))?;
    let mut answer = String::new();
    BufReader::new(stream).read_line(&mut answer).map_err(io("reading the answer"))?;
    Ok(serde_json::from_str(&answer)?)
}
