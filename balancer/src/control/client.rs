//! The CLI's side of the control socket.

use std::{
    io::{BufRead as _, BufReader, Write as _},
    os::unix::net::UnixStream,
    path::Path,
    time::Duration,
};

use super::protocol::{Request, Response};

/// Sends one request and waits for its answer.
///
/// # Errors
/// A message a person can act on: no daemon, not root, or a broken answer.
pub fn call(socket: &Path, request: &Request) -> Result<Response, String> {
    let mut stream = UnixStream::connect(socket).map_err(|e| match e.kind() {
        std::io::ErrorKind::PermissionDenied => {
            format!("{}: permission denied (the control socket is root-only: run as root)", socket.display())
        }
        std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => {
            format!(
                "{}: no daemon is listening (is `balancer run` running with this control_socket?)",
                socket.display()
            )
        }
        _ => format!("{}: {e}", socket.display()),
    })?;
    stream.set_read_timeout(Some(Duration::from_secs(30))).map_err(|e| e.to_string())?;
    let mut line = serde_json::to_vec(request).map_err(|e| e.to_string())?;
    line.push(b'\n');
    stream.write_all(&line).map_err(|e| format!("sending the request: {e}"))?;
    let mut answer = String::new();
    BufReader::new(stream).read_line(&mut answer).map_err(|e| format!("reading the answer: {e}"))?;
    serde_json::from_str(&answer).map_err(|e| format!("the daemon's answer is not understood: {e}"))
}
