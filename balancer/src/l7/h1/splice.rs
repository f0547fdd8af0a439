//! Large bodies moved from the backend's socket to the client's through a pipe (`splice(2)`):
//! the kernel passes the pages along and the bytes never enter the proxy's memory, which saves
//! the two copies per byte a read and a write cost.

use std::{
    cell::RefCell,
    io,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd, RawFd},
    pin::Pin,
    time::Duration,
};

use tokio::{
    io::Interest,
    net::TcpStream,
    time::{Instant, Sleep},
};

use super::within;

/// Bodies left to relay below this go through the buffer instead (a pipe's two extra
/// syscalls per round do not pay for small ones).
pub const MIN: u64 = 256 * 1024;

/// What each pipe is sized to hold (Linux allows unprivileged pipes up to 1 MiB by default;
/// 256 KiB measured no better than the default 64 KiB).
const PIPE_SIZE: usize = 64 * 1024;

/// Empty pipes kept per worker.
const KEPT: usize = 64;

/// A pipe with what it holds.
pub struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
    capacity: usize,
    held: usize,
}

thread_local! {
    static PIPES: RefCell<Vec<Pipe>> = const { RefCell::new(Vec::new()) };
}

impl Pipe {
    /// An empty pipe from this worker's free list, or a new one.
    ///
    /// # Errors
    /// The pipe cannot be made (descriptors).
    pub fn take() -> io::Result<Self> {
        if let Some(p) = PIPES.with_borrow_mut(Vec::pop) {
            return Ok(p);
        }
        let mut fds = [0 as RawFd; 2];
        // SAFETY: `fds` has room for the two descriptors pipe2 writes.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: pipe2 succeeded, so both descriptors are open and owned by nothing else.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        // SAFETY: F_SETPIPE_SZ takes an int and changes nothing but the pipe's size.
        let sized = unsafe { libc::fcntl(write.as_raw_fd(), libc::F_SETPIPE_SZ, PIPE_SIZE as libc::c_int) };
        let capacity = usize::try_from(sized).unwrap_or(64 * 1024);
        Ok(Self { read, write, capacity, held: 0 })
    }

    /// Gives the pipe back to this worker's free list if it is empty (else closes it).
    pub fn give(self) {
        if self.held == 0 {
            PIPES.with_borrow_mut(|kept| {
                if kept.len() < KEPT {
                    kept.push(self);
                }
            });
        }
    }
}

fn splice(from: RawFd, to: RawFd, len: usize) -> io::Result<usize> {
    let flags = libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK;
    // SAFETY: plain descriptors and null offsets (both ends are a socket or a pipe).
    let n = unsafe { libc::splice(from, std::ptr::null_mut(), to, std::ptr::null_mut(), len, flags) };
    usize::try_from(n).map_err(|_| io::Error::last_os_error())
}

fn timed_out() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, "no progress within the response timeout")
}

/// Moves exactly `n` bytes from `from` to `to` through `pipe`; every wait for either socket is
/// bounded by `timeout` on `timer`.
///
/// # Errors
/// Either socket failed, the backend closed early, or nothing moved for `timeout`.
pub async fn relay(
    from: &TcpStream,
    to: &TcpStream,
    pipe: &mut Pipe,
    mut n: u64,
    timer: &mut Pin<Box<Sleep>>,
    timeout: Duration,
) -> io::Result<()> {
    while n > 0 || pipe.held > 0 {
        if n > 0 && pipe.held < pipe.capacity {
            let room = (pipe.capacity - pipe.held).min(usize::try_from(n).unwrap_or(usize::MAX));
            let fill = || splice(from.as_raw_fd(), pipe.write.as_raw_fd(), room);
            // With bytes in the pipe, EAGAIN may mean the pipe's slots are full (small
            // segments fill one slot each, well before its byte capacity), not that the socket
            // is empty: then the socket's readiness must not be cleared, or no wakeup comes for
            // the bytes it holds. Only an empty pipe's EAGAIN says the socket is drained.
            let filled = if pipe.held == 0 { from.try_io(Interest::READABLE, fill) } else { fill() };
            match filled {
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(k) => {
                    pipe.held += k;
                    n -= k as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if pipe.held == 0 {
                        within(timer, Instant::now() + timeout, from.readable()).await.ok_or_else(timed_out)??;
                        continue;
                    }
                }
                Err(e) => return Err(e),
            }
        }
        if pipe.held > 0 {
            match to.try_io(Interest::WRITABLE, || splice(pipe.read.as_raw_fd(), to.as_raw_fd(), pipe.held)) {
                Ok(k) => pipe.held -= k,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    within(timer, Instant::now() + timeout, to.writable()).await.ok_or_else(timed_out)??;
                }
                Err(e) => return Err(e),
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    use super::*;

    /// Both sockets' bytes arrive whole and in order, including when the reader is slower
    /// than the pipe (the pipe fills and waits), and a backend that closes early is an error.
    #[tokio::test]
    async fn a_large_body_arrives_whole_through_the_pipe() {
        // Smaller segments than loopback's, nearer a veth with a 1500-byte MTU (the end-to-end
        // test through veths is the one that caught a full pipe clearing the socket's
        // readiness; here the receive queue merges segments, so it does not reproduce that).
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        let mss: libc::c_int = 1000;
        // SAFETY: TCP_MAXSEG takes an int, passed by pointer with its size.
        let set = unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::IPPROTO_TCP,
                libc::TCP_MAXSEG,
                std::ptr::from_ref(&mss).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        assert_eq!(set, 0);
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let listener = socket.listen(16).unwrap();
        let addr = listener.local_addr().unwrap();
        let body: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let sent = body.clone();
        let backend = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            s.write_all(&sent).await.unwrap();
            s
        });
        let from = TcpStream::connect(addr).await.unwrap();
        let client_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client_addr = client_listener.local_addr().unwrap();
        let reader = tokio::spawn(async move {
            let mut c = TcpStream::connect(client_addr).await.unwrap();
            let mut got = Vec::new();
            let mut chunk = vec![0u8; 7000];
            while got.len() < 3_000_000 {
                let k = c.read(&mut chunk).await.unwrap();
                assert!(k > 0, "the relay ended early");
                got.extend_from_slice(&chunk[..k]);
                tokio::time::sleep(Duration::from_micros(50)).await;
            }
            got
        });
        let (to, _) = client_listener.accept().await.unwrap();
        let mut pipe = Pipe::take().unwrap();
        let mut timer = Box::pin(tokio::time::sleep(Duration::from_secs(5)));
        relay(&from, &to, &mut pipe, 3_000_000, &mut timer, Duration::from_secs(5)).await.unwrap();
        assert_eq!(reader.await.unwrap(), body);
        assert_eq!(pipe.held, 0);
        // The backend closes after 10 bytes of a promised 20.
        let mut early = backend.await.unwrap();
        early.write_all(&[1; 10]).await.unwrap();
        drop(early);
        let err = relay(&from, &to, &mut pipe, 20, &mut timer, Duration::from_secs(5)).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }
}
