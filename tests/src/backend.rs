//! Real servers for end-to-end tests: a host that holds the VIP on loopback (as a DSR backend
//! does) and runs Python's HTTP server, answering with its own name.

use std::{net::IpAddr, path::PathBuf, time::Duration};

use crate::netns::{Host, Proc};

/// An HTTP server in a backend namespace; stops on drop.
#[derive(Debug)]
pub struct HttpBackend {
    /// The server process.
    pub proc: Proc,
    root: PathBuf,
}

impl HttpBackend {
    /// Puts `vip` on `host`'s loopback (not answering ARP for it, like an LVS-DR real server)
    /// and serves `GET /` with body `name` on port `port`.
    pub fn start(host: &Host, name: &str, vip: IpAddr, port: u16) -> Self {
        let ns = &host.ns;
        let plen = if vip.is_ipv4() { 32 } else { 128 };
        ns.run(&["ip", "addr", "replace", &format!("{vip}/{plen}"), "dev", "lo"]);
        ns.run(&["sysctl", "-qw", "net.ipv4.conf.all.arp_ignore=1", "net.ipv4.conf.all.arp_announce=2"]);
        let root = std::env::temp_dir().join(format!("{}-www", ns.name()));
        std::fs::create_dir_all(&root).expect("web root");
        std::fs::write(root.join("index.html"), name).expect("index.html");
        let bind = if vip.is_ipv4() { "0.0.0.0" } else { "::" };
        let proc = ns.spawn(&["python3", "-c", STATIC_SERVER, &port.to_string(), bind, root.to_str().unwrap()]);
        let b = Self { proc, root };
        // Ready when it answers locally.
        let url = format!("http://127.0.0.1:{port}/");
        for _ in 0..100 {
            if ns.output(&["curl", "-sf", "--max-time", "1", &url]).status.success() {
                return b;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("HTTP backend {name} did not start:\n{}", b.proc.log());
    }
}

impl Drop for HttpBackend {
    fn drop(&mut self) {
        self.proc.stop();
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// `python3 -m http.server` with HTTP/1.1 (so a client can keep a connection open across
/// requests) and a listen backlog of 1024 instead of its 5: a burst of connections overflowed
/// the accept queue, the kernel dropped the next SYN, and a health check waiting for it timed
/// out and took the backend down (a flaky ECMP test on a loaded 2-core machine).
const STATIC_SERVER: &str = r#"
import functools, http.server, socket, sys
port, bind, root = int(sys.argv[1]), sys.argv[2], sys.argv[3]
class H(http.server.SimpleHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
class S(http.server.ThreadingHTTPServer):
    request_queue_size = 1024
    address_family = socket.AF_INET6 if ":" in bind else socket.AF_INET
S((bind, port), functools.partial(H, directory=root)).serve_forever()
"#;

/// A minimal HTTP/1.1 client over one TCP connection: enough to ask the backends their name,
/// once per connection or many times over a kept-alive one.
pub struct HttpConn {
    stream: std::net::TcpStream,
}

impl HttpConn {
    /// Connects to `addr` (from the calling thread's namespace).
    ///
    /// # Errors
    /// When the connection fails.
    pub fn connect(addr: std::net::SocketAddr) -> std::io::Result<Self> {
        let stream = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(3))?;
        stream.set_read_timeout(Some(Duration::from_secs(3)))?;
        Ok(Self { stream })
    }

    /// How long `get` waits for an answer (3 s from `connect`): longer where a test expects
    /// TCP to retransmit through a failover.
    ///
    /// # Errors
    /// When the socket refuses the option.
    pub fn set_read_timeout(&self, limit: Duration) -> std::io::Result<()> {
        self.stream.set_read_timeout(Some(limit))
    }

    /// The local (client) address of the connection.
    pub fn local_addr(&self) -> std::net::SocketAddr {
        self.stream.local_addr().expect("connected socket")
    }

    /// `GET /` on this connection; returns the body.
    ///
    /// # Errors
    /// When the connection breaks or the answer is not a 200 with a body.
    pub fn get(&mut self) -> std::io::Result<String> {
        use std::io::Write as _;
        self.stream.write_all(b"GET / HTTP/1.1\r\nHost: vip\r\n\r\n")?;
        let (head, body) = read_response(&mut self.stream)?;
        if !head.starts_with("HTTP/1.1 200") && !head.starts_with("HTTP/1.0 200") {
            return Err(std::io::Error::other(format!("not a 200: {}", head.lines().next().unwrap_or(""))));
        }
        Ok(body)
    }
}

/// Reads one response with a `Content-Length` body from `stream`: (head, body).
///
/// # Errors
/// When the connection breaks or closes before the response is whole.
pub fn read_response(stream: &mut impl std::io::Read) -> std::io::Result<(String, String)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = read_some(stream, &mut chunk)?;
        if n == 0 {
            return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "connection closed mid-response"));
        }
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf).into_owned();
        let Some(end) = text.find("\r\n\r\n") else { continue };
        let len: usize = text[..end]
            .lines()
            .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse().unwrap_or(0)))
            .unwrap_or(0);
        if buf.len() >= end + 4 + len {
            return Ok((text[..end].to_owned(), String::from_utf8_lossy(&buf[end + 4..end + 4 + len]).into_owned()));
        }
    }
}

/// `read`, again when a signal interrupted it. A socket with a read timeout returns `EINTR`
/// even for a signal nobody handles: a child's `SIGCHLD` that arrives while the thread
/// spawning another child blocks every signal is queued, and wakes whichever thread is
/// reading (two of 24 watched ECMP connections "broke" so, in one run of three).
///
/// # Errors
/// Any other error of `read`.
pub fn read_some(stream: &mut impl std::io::Read, buf: &mut [u8]) -> std::io::Result<usize> {
    loop {
        match stream.read(buf) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            r => return r,
        }
    }
}

/// An application server like Tomcat with a `jvmRoute`: answers `NAME cookie=… xff=…` (the
/// `Cookie` and `X-Forwarded-For` it received) and, when the request has no session, sets
/// `JSESSIONID=<random>.<route>`; a POST answers `NAME post=<body length>`; `/slow` answers after 1.5 s. Listens on the host's own address.
const APP: &str = r#"
import http.server, secrets, socketserver, sys, time
port, name, route = int(sys.argv[1]), sys.argv[2], sys.argv[3]
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # One write per response (flushed when the request is done): head and body in separate
    # small segments would meet Nagle and the proxy's delayed ACK, 40 ms a request.
    wbufsize = 65536
    def do_GET(self):
        if self.path.startswith("/big"):
            # 3,000,000 bytes, byte i being i % 251; chunked in 100,000-byte chunks on /big-chunked.
            data = bytes(range(251)) * (3_000_000 // 251) + bytes(range(3_000_000 % 251))
            self.send_response(200)
            if self.path.startswith("/big-chunked"):
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                for i in range(0, len(data), 100_000):
                    part = data[i:i + 100_000]
                    self.wfile.write(b"%x\r\n" % len(part) + part + b"\r\n")
                self.wfile.write(b"0\r\n\r\n")
            else:
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            return
        if self.path.startswith("/slow"):
            time.sleep(1.5)
        cookie = self.headers.get("Cookie") or ""
        body = f"{name} cookie={cookie} xff={self.headers.get('X-Forwarded-For', '')} host={self.headers.get('Host', '')} proto={self.headers.get('X-Forwarded-Proto', '')}\n".encode()
        self.send_response(200)
        if "JSESSIONID=" not in cookie and route != "-":
            self.send_header("Set-Cookie", f"JSESSIONID={secrets.token_hex(8)}.{route}; Path=/")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def do_POST(self):
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            data = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0], 16)
                data += self.rfile.read(size)
                self.rfile.readline()
                if size == 0:
                    break
        else:
            data = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        body = f"{name} post={len(data)}\n".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
class S(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 1024
S(("0.0.0.0", port), H).serve_forever()
"#;

/// A running application server (the Python program in this module); stops on drop.
#[derive(Debug)]
pub struct AppServer {
    /// The process.
    pub proc: Proc,
}

impl AppServer {
    /// Starts the app on `host`, port `port`, answering as `name` with sessions routed to
    /// `route` (`-` for none).
    pub fn start(host: &Host, name: &str, route: &str, port: u16) -> Self {
        let script = std::env::temp_dir().join(format!("{}-app.py", host.ns.name()));
        std::fs::write(&script, APP).expect("write app script");
        let proc = host.ns.spawn(&["python3", script.to_str().unwrap(), &port.to_string(), name, route]);
        let url = format!("http://{}:{port}/", host.ip);
        for _ in 0..100 {
            if host.ns.output(&["curl", "-sf", "--max-time", "1", &url]).status.success() {
                return Self { proc };
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("app server {name} did not start:\n{}", proc.log());
    }
}

/// A real servlet container with a session route: Tomcat 10 (`jvmRoute`) or Jetty 9
/// (`workerName`), from Debian's packages, serving a JSP that opens a session and prints the
/// server's name. Runs from a private base directory; stops on drop.
#[derive(Debug)]
pub struct JavaServer {
    /// The JVM.
    pub proc: Proc,
    base: PathBuf,
}

impl JavaServer {
    /// Tomcat 10 on `host`:`port`, with `jvmRoute` = `route`.
    pub fn tomcat(host: &Host, route: &str, port: u16) -> Self {
        Self::tomcat_with(host, route, port, "")
    }

    /// As `tomcat`, with an AJP/1.3 connector on `ajp_port` that requires `secret`.
    pub fn tomcat_ajp(host: &Host, route: &str, port: u16, ajp_port: u16, secret: &str) -> Self {
        let connector = format!(
            r#"<Connector port="{ajp_port}" address="{}" protocol="AJP/1.3" secretRequired="true" secret="{secret}" />"#,
            host.ip
        );
        Self::tomcat_with(host, route, port, &connector)
    }

    fn tomcat_with(host: &Host, route: &str, port: u16, connector: &str) -> Self {
        let base = std::env::temp_dir().join(format!("{}-tomcat", host.ns.name()));
        let _ = std::fs::remove_dir_all(&base);
        for d in ["conf", "logs", "temp", "work", "webapps/ROOT"] {
            std::fs::create_dir_all(base.join(d)).expect("tomcat base");
        }
        for f in ["web.xml", "logging.properties"] {
            std::fs::copy(format!("/etc/tomcat10/{f}"), base.join("conf").join(f))
                .expect("tomcat10's stock configuration");
        }
        std::fs::write(
            base.join("conf/server.xml"),
            format!(
                r#"<Server port="-1" shutdown="SHUTDOWN"><Service name="Catalina">
<Connector port="{port}" address="{ip}" protocol="HTTP/1.1" />{connector}
<Engine name="Catalina" defaultHost="localhost" jvmRoute="{route}">
<Host name="localhost" appBase="webapps" unpackWARs="false" autoDeploy="false" /></Engine></Service></Server>"#,
                ip = host.ip
            ),
        )
        .expect("server.xml");
        Self::jsp(&base.join("webapps/ROOT"), route);
        let mut cmd = host.ns.command(&["/usr/share/tomcat10/bin/catalina.sh", "run"]);
        cmd.env("CATALINA_BASE", &base)
            .env("CATALINA_HOME", "/usr/share/tomcat10")
            .env("CATALINA_OPTS", "-Xmx96m -XX:TieredStopAtLevel=1");
        Self::started(Proc::spawn(cmd, &format!("{}-tomcat", host.ns.name())), base, host, port)
    }

    /// Jetty 9 on `host`:`port`, with `workerName` = `route`.
    pub fn jetty(host: &Host, route: &str, port: u16) -> Self {
        let base = std::env::temp_dir().join(format!("{}-jetty", host.ns.name()));
        let _ = std::fs::remove_dir_all(&base);
        std::fs::create_dir_all(base.join("webapps/ROOT")).expect("jetty base");
        std::fs::write(
            base.join("start.ini"),
            format!(
                "--module=http,deploy,jsp,sessions\njetty.http.host={}\njetty.http.port={port}\n\
                 jetty.sessionIdManager.workerName={route}\n",
                host.ip
            ),
        )
        .expect("start.ini");
        Self::jsp(&base.join("webapps/ROOT"), route);
        let home = "jetty.home=/usr/share/jetty9".to_owned();
        let jbase = format!("jetty.base={}", base.display());
        let mut cmd = host.ns.command(&[
            "java",
            "-Xmx96m",
            "-XX:TieredStopAtLevel=1",
            "-jar",
            "/usr/share/jetty9/start.jar",
            &home,
            &jbase,
        ]);
        cmd.current_dir(&base);
        Self::started(Proc::spawn(cmd, &format!("{}-jetty", host.ns.name())), base, host, port)
    }

    fn jsp(root: &std::path::Path, name: &str) {
        std::fs::write(root.join("index.jsp"), format!("<%@ page session=\"true\" %>{name} <%= session.getId() %>\n"))
            .expect("index.jsp");
        // What the container saw of a request, and a digest of its body (`body_digest`).
        std::fs::write(
            root.join("echo.jsp"),
            format!(
                "<%@ page session=\"false\" contentType=\"text/plain\" %><% \
                 java.io.InputStream in = request.getInputStream(); byte[] b = new byte[65536]; \
                 long n = 0, sum = 0; int r; while ((r = in.read(b)) > 0) {{ for (int i = 0; i < r; i++) \
                 sum = (sum * 31 + (b[i] & 0xff)) % 1000000007L; n += r; }} \
                 out.print(\"{name} remote=\" + request.getRemoteAddr() + \" port=\" + request.getRemotePort() \
                 + \" secure=\" + request.isSecure() + \" server=\" + request.getServerName() + \":\" \
                 + request.getServerPort() + \" method=\" + request.getMethod() + \" uri=\" + request.getRequestURI() \
                 + \" query=\" + request.getQueryString() + \" len=\" + n + \" sum=\" + sum \
                 + \" cookie=\" + request.getHeader(\"cookie\") + \"\\n\"); %>"
            ),
        )
        .expect("echo.jsp");
        // `n` bytes of a-z, written through the JSP writer (flushed in 8 KiB pieces, no length).
        std::fs::write(
            root.join("big.jsp"),
            "<%@ page session=\"false\" contentType=\"text/plain\" %><% \
             int n = Integer.parseInt(request.getParameter(\"n\")); \
             for (int i = 0; i < n; i++) out.write('a' + i % 26); %>",
        )
        .expect("big.jsp");
        // A page without a session that reads no body (the benchmark's).
        std::fs::write(
            root.join("hello.jsp"),
            format!("<%@ page session=\"false\" contentType=\"text/plain\" %>{name} hello\n"),
        )
        .expect("hello.jsp");
        // A response that streams: a line, a flush, 1.5 s, another line.
        std::fs::write(
            root.join("slow.jsp"),
            "<%@ page session=\"false\" contentType=\"text/plain\" %><% out.print(\"first\\n\"); out.flush(); \
             Thread.sleep(1500); out.print(\"second\\n\"); %>",
        )
        .expect("slow.jsp");
        // A directory: a request for `/sub` is redirected to `/sub/`.
        std::fs::create_dir_all(root.join("sub")).expect("sub/");
        std::fs::write(root.join("sub/index.jsp"), format!("<%@ page session=\"false\" %>{name} sub\n"))
            .expect("sub/index.jsp");
    }

    /// The digest `echo.jsp` prints of a body.
    pub fn body_digest(body: &[u8]) -> u64 {
        body.iter().fold(0u64, |sum, &b| (sum * 31 + u64::from(b)) % 1_000_000_007)
    }

    fn started(mut proc: Proc, base: PathBuf, host: &Host, port: u16) -> Self {
        let url = format!("http://{}:{port}/", host.ip);
        for _ in 0..120 {
            if host.ns.output(&["curl", "-sf", "--max-time", "2", &url]).status.success() {
                return Self { proc, base };
            }
            if let Some(st) = proc.try_wait() {
                panic!("the servlet container exited ({st}):\n{}", proc.log());
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        panic!("the servlet container did not answer in 30 s:\n{}", proc.log());
    }
}

impl Drop for JavaServer {
    fn drop(&mut self) {
        self.proc.stop();
        let _ = std::fs::remove_dir_all(&self.base);
    }
}

/// A backend that records the exact bytes each connection brings: it reads until the client
/// has been quiet for 200 ms, appends `=== <n bytes>\n<bytes>\n` to its record, and answers
/// `HTTP/1.1 200 OK` with body `ok` and `Connection: close`.
const RECORDER: &str = r#"
import socket, sys, threading
port, path = int(sys.argv[1]), sys.argv[2]
lock = threading.Lock()
def serve(c):
    c.settimeout(0.2)
    data = b""
    try:
        while True:
            d = c.recv(65536)
            if not d:
                break
            data += d
    except socket.timeout:
        pass
    with lock, open(path, "ab") as f:
        f.write(b"=== %d\n" % len(data) + data + b"\n")
    try:
        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
    except OSError:
        pass
    c.close()
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", port))
s.listen(128)
while True:
    c, _ = s.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
"#;

/// A running recording backend (the Python program above); stops on drop.
#[derive(Debug)]
pub struct Recorder {
    /// The process.
    pub proc: Proc,
    record: PathBuf,
}

impl Recorder {
    /// Starts the recorder on `host`, port `port`.
    pub fn start(host: &Host, port: u16) -> Self {
        let script = std::env::temp_dir().join(format!("{}-recorder.py", host.ns.name()));
        let record = std::env::temp_dir().join(format!("{}-recorded.txt", host.ns.name()));
        std::fs::write(&script, RECORDER).expect("write recorder script");
        let _ = std::fs::remove_file(&record);
        let proc = host.ns.spawn(&["python3", script.to_str().unwrap(), &port.to_string(), record.to_str().unwrap()]);
        for _ in 0..100 {
            if host.ns.output(&["sh", "-c", &format!("ss -ltn | grep -q ':{port} '")]).status.success() {
                return Self { proc, record };
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("recorder did not start:\n{}", proc.log());
    }

    /// What every connection brought so far, in order, and clears the record.
    pub fn take(&self) -> Vec<String> {
        let text = std::fs::read(&self.record).unwrap_or_default();
        let _ = std::fs::remove_file(&self.record);
        let text = String::from_utf8_lossy(&text).into_owned();
        let mut out = Vec::new();
        let mut rest = text.as_str();
        while let Some(after) = rest.strip_prefix("=== ") {
            let (n, body) = after.split_once('\n').expect("a record header");
            let n: usize = n.parse().expect("a length");
            out.push(body[..n].to_owned());
            rest = &body[n + 1..];
        }
        out
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.record);
    }
}
