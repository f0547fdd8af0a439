//! What the HTTP paths need of a client connection, plain TCP or TLS over it: bytes both
//! ways, a wait for the next request that holds no buffer, and what lies beneath (the socket
//! for `splice`, the handshake for the access log).

use std::task::{Context, Poll};

use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::TcpStream,
};
use tokio_rustls::server::TlsStream;

/// A client connection.
pub trait ClientStream: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    /// Ready when a read would not wait: bytes (or the end) arrived, or are already decrypted.
    fn poll_idle(&mut self, cx: &mut Context<'_>) -> Poll<()>;

    /// The socket itself, when the connection's bytes are the request's bytes (no TLS).
    fn plain(&self) -> Option<&TcpStream>;
}

impl ClientStream for TcpStream {
    fn poll_idle(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        self.poll_read_ready(cx).map(|_| ())
    }

    fn plain(&self) -> Option<&TcpStream> {
        Some(self)
    }
}

impl ClientStream for TlsStream<TcpStream> {
    fn poll_idle(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let (socket, tls) = self.get_mut();
        // Records read with the last request may hold the next one already: waiting on the
        // socket then would wait for bytes that came long ago.
        match tls.process_new_packets() {
            Ok(state) if state.plaintext_bytes_to_read() == 0 && !state.peer_has_closed() => {
                socket.poll_read_ready(cx).map(|_| ())
            }
            _ => Poll::Ready(()),
        }
    }

    fn plain(&self) -> Option<&TcpStream> {
        None
    }
}
