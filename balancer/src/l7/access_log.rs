//! The access log: one line per L7 request, formatted and written by a thread of its own.
//!
//! A request only builds its `Entry` and offers it to a bounded queue; when the writer falls
//! that far behind (a slow disk), lines are dropped and counted, and requests never wait. The
//! file is reopened on SIGUSR1 and on reload, so logrotate can move it away.

use std::{
    fmt::Write as _,
    fs::File,
    io::{self, BufWriter, Write as _},
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering::Relaxed},
        mpsc::{self, RecvTimeoutError, SyncSender, TrySendError},
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use arc_swap::ArcSwapOption;

use crate::config::{AccessLog, LogFormat};

/// How the request's backend was chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chosen {
    /// The session's own backend.
    Sticky,
    /// A new session.
    New,
    /// The session's backend was unavailable (the reason), and another took it.
    Failover(&'static str),
    /// No backend: the proxy answered itself.
    Local,
}

impl Chosen {
    /// How `choice` was made; `why` tells a failover's reason (asked only for a failover).
    pub fn of(choice: crate::l7::select::Choice, why: impl FnOnce() -> &'static str) -> Self {
        use crate::l7::select::Choice;
        match choice {
            Choice::Sticky(_) => Self::Sticky,
            Choice::New(_) => Self::New,
            Choice::Failover(_) => Self::Failover(why()),
        }
    }
}

impl std::fmt::Display for Chosen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Sticky => f.write_str("sticky"),
            Self::New => f.write_str("new"),
            Self::Failover(why) => write!(f, "failover:{why}"),
            Self::Local => f.write_str("local"),
        }
    }
}

/// One request, as the log line tells it.
#[derive(Debug, Clone)]
pub struct Entry {
    /// When the request's head was complete.
    pub time: SystemTime,
    /// The client (the PROXY header's source where the VIP accepts one).
    pub client: SocketAddr,
    /// The VIP.
    pub vip: SocketAddr,
    /// Method and target as the client sent them.
    pub method: Box<str>,
    /// The target (`/path?query`); the query is cut when the line is written unless `query`.
    pub target: Box<str>,
    /// `HTTP/1.0`, `HTTP/1.1` or `HTTP/2.0`.
    pub protocol: &'static str,
    /// The status the client got.
    pub status: u16,
    /// Bytes from the client: head and body.
    pub bytes_in: u64,
    /// Bytes to the client: head and body.
    pub bytes_out: u64,
    /// The backend that answered.
    pub backend: Option<SocketAddr>,
    /// Its route.
    pub route: Option<Box<str>>,
    /// The `name` of the VIP entry (pool) that took the request, when it has one.
    pub pool: Option<Box<str>>,
    /// How it was chosen.
    pub chosen: Chosen,
    /// Attempts after the first (another backend, after a failed connect or a broken one).
    pub retries: u32,
    /// Microseconds to the backend connection (0: a kept-alive one), to the response head, and
    /// to the end of the response.
    pub connect_us: Option<u64>,
    /// See `connect_us`.
    pub first_byte_us: Option<u64>,
    /// See `connect_us`.
    pub total_us: u64,
    /// TLS version, where the client came over TLS.
    pub tls: Option<&'static str>,
    /// The SNI name it sent.
    pub sni: Option<Box<str>>,
}

/// The running log, if any.
static LOG: ArcSwapOption<Logger> = ArcSwapOption::const_empty();

/// Lines dropped because the writer was behind, since the daemon started.
pub static DROPPED: AtomicU64 = AtomicU64::new(0);
/// Lines written, since the daemon started.
pub static WRITTEN: AtomicU64 = AtomicU64::new(0);

struct Logger {
    settings: AccessLog,
    tx: SyncSender<Entry>,
    reopen: Arc<AtomicBool>,
}

/// Whether requests should build entries at all.
pub fn enabled() -> bool {
    LOG.load().is_some()
}

/// Offers `entry` to the writer; drops and counts it if the writer is behind.
pub fn log(entry: Entry) {
    let guard = LOG.load();
    let Some(logger) = guard.as_ref() else { return };
    match logger.tx.try_send(entry) {
        Ok(()) => {}
        Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
            DROPPED.fetch_add(1, Relaxed);
        }
    }
}

/// Asks the writer to reopen its file (SIGUSR1, after logrotate moved it).
pub fn reopen() {
    if let Some(l) = LOG.load().as_ref() {
        l.reopen.store(true, Relaxed);
    }
}

/// Why the access log cannot be written.
#[derive(Debug, thiserror::Error)]
#[error("access_log.path {}: {source}", path.display())]
pub struct LogError {
    /// The file.
    pub path: PathBuf,
    /// Why it cannot be opened.
    pub source: io::Error,
}

/// Where lines go.
enum Sink {
    Stderr,
    File(PathBuf),
}

impl Sink {
    fn of(path: &Path) -> Self {
        if path == Path::new("stderr") { Self::Stderr } else { Self::File(path.into()) }
    }

    fn open(&self) -> io::Result<Box<dyn io::Write + Send>> {
        Ok(match self {
            Self::Stderr => Box::new(io::stderr()),
            Self::File(p) => Box::new(std::fs::OpenOptions::new().create(true).append(true).open(p)?),
        })
    }
}

/// Checks that `settings` can be written (the file opens for appending), changing nothing.
pub fn check(settings: &AccessLog) -> Result<(), LogError> {
    match Sink::of(&settings.path) {
        Sink::Stderr => Ok(()),
        Sink::File(p) => open_append(&p).map(drop).map_err(|source| LogError { path: p, source }),
    }
}

fn open_append(path: &Path) -> io::Result<File> {
    std::fs::OpenOptions::new().create(true).append(true).open(path)
}

/// Makes `settings` the log in force: the same settings reopen the file, others start a new
/// writer (the old one finishes its queue and stops); `None` stops logging.
pub fn install(settings: Option<&AccessLog>) -> Result<(), LogError> {
    let current = LOG.load();
    match (current.as_ref(), settings) {
        (_, None) => {
            LOG.store(None);
            Ok(())
        }
        (Some(l), Some(s)) if l.settings == *s => {
            l.reopen.store(true, Relaxed);
            Ok(())
        }
        (_, Some(s)) => {
            let sink = Sink::of(&s.path);
            let out = sink.open().map_err(|source| LogError { path: s.path.clone(), source })?;
            let (tx, rx) = mpsc::sync_channel(s.buffer);
            let reopen = Arc::new(AtomicBool::new(false));
            let (format, query, flag) = (s.format, s.query, reopen.clone());
            std::thread::Builder::new()
                .name("access-log".into())
                .spawn(move || write_lines(&rx, out, &sink, (format, query), &flag))
                .map_err(|source| LogError { path: s.path.clone(), source })?;
            LOG.store(Some(Arc::new(Logger { settings: s.clone(), tx, reopen })));
            Ok(())
        }
    }
}

/// The writer thread: formats and writes lines until every sender is gone, flushing whenever
/// the queue is empty (so a quiet log is never more than a moment behind).
fn write_lines(
    rx: &mpsc::Receiver<Entry>,
    out: Box<dyn io::Write + Send>,
    sink: &Sink,
    (format, query): (LogFormat, bool),
    reopen: &AtomicBool,
) {
    let mut out = BufWriter::with_capacity(64 * 1024, out);
    let mut line = String::new();
    loop {
        if reopen.swap(false, Relaxed) {
            let _ = out.flush();
            match sink.open() {
                Ok(f) => out = BufWriter::with_capacity(64 * 1024, f),
                Err(e) => tracing::error!(error = %e, "cannot reopen the access log; still writing to the old file"),
            }
        }
        let entry = match rx.try_recv() {
            Ok(e) => e,
            Err(mpsc::TryRecvError::Empty) => {
                let _ = out.flush();
                match rx.recv_timeout(Duration::from_millis(500)) {
                    Ok(e) => e,
                    Err(RecvTimeoutError::Timeout) => continue,
                    Err(RecvTimeoutError::Disconnected) => break,
                }
            }
            Err(mpsc::TryRecvError::Disconnected) => break,
        };
        line.clear();
        match format {
            LogFormat::Combined => combined(&mut line, &entry, query),
            LogFormat::Json => json(&mut line, &entry, query),
        }
        line.push('\n');
        if out.write_all(line.as_bytes()).is_ok() {
            WRITTEN.fetch_add(1, Relaxed);
        }
    }
    let _ = out.flush();
}

fn target(e: &Entry, query: bool) -> &str {
    if query { &e.target } else { e.target.split_once('?').map_or(&e.target, |(p, _)| p) }
}

/// Apache's combined format's first fields (`%h %l %u %t "%r" %>s %b`), then the balancer's
/// own as `key=value`.
pub fn combined(out: &mut String, e: &Entry, query: bool) {
    let t = time::OffsetDateTime::from(e.time);
    let _ = write!(
        out,
        "{} - - [{:02}/{}/{}:{:02}:{:02}:{:02} +0000] \"{} {} {}\" {} {}",
        e.client.ip(),
        t.day(),
        MONTHS[usize::from(u8::from(t.month())) - 1],
        t.year(),
        t.hour(),
        t.minute(),
        t.second(),
        printable(&e.method),
        printable(target(e, query)),
        e.protocol,
        e.status,
        e.bytes_out,
    );
    let _ = write!(out, " client_port={} vip={}", e.client.port(), e.vip);
    if let Some(pool) = &e.pool {
        let _ = write!(out, " pool={}", printable(pool));
    }
    let _ = write!(out, " bytes_in={}", e.bytes_in);
    match e.backend {
        Some(b) => {
            let _ = write!(out, " backend={b}");
        }
        None => out.push_str(" backend=-"),
    }
    let _ = write!(out, " route={} chosen={} retries={}", e.route.as_deref().unwrap_or("-"), e.chosen, e.retries);
    let ms = |us: Option<u64>| us.map_or_else(|| "-".to_owned(), |u| format!("{:.3}", u as f64 / 1000.0));
    let _ = write!(
        out,
        " connect_ms={} first_byte_ms={} total_ms={}",
        ms(e.connect_us),
        ms(e.first_byte_us),
        ms(Some(e.total_us))
    );
    if let Some(v) = e.tls {
        let _ = write!(out, " tls={v} sni={}", e.sni.as_deref().map_or("-".into(), printable));
    }
}

const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];

/// `s` with quotes, backslashes and control bytes escaped: a client cannot forge a line or a
/// field.
fn printable(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            c if c.is_control() => {
                let _ = write!(out, "\\x{:02x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out
}

/// One JSON object.
pub fn json(out: &mut String, e: &Entry, query: bool) {
    let secs = e.time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let value = serde_json::json!({
        "time": format!("{}.{:03}", secs.as_secs(), secs.subsec_millis()),
        "client": e.client.ip().to_string(),
        "client_port": e.client.port(),
        "vip": e.vip.to_string(),
        "pool": e.pool.as_deref(),
        "method": &*e.method,
        "path": target(e, query),
        "protocol": e.protocol,
        "status": e.status,
        "bytes_in": e.bytes_in,
        "bytes_out": e.bytes_out,
        "backend": e.backend.map(|b| b.to_string()),
        "route": e.route.as_deref(),
        "chosen": e.chosen.to_string(),
        "retries": e.retries,
        "connect_ms": e.connect_us.map(|u| u as f64 / 1000.0),
        "first_byte_ms": e.first_byte_us.map(|u| u as f64 / 1000.0),
        "total_ms": e.total_us as f64 / 1000.0,
        "tls": e.tls,
        "sni": e.sni.as_deref(),
    });
    let _ = write!(out, "{value}");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> Entry {
        Entry {
            time: UNIX_EPOCH + Duration::from_millis(1_764_590_400_250),
            client: "198.18.0.7:40000".parse().unwrap(),
            vip: "10.0.0.1:443".parse().unwrap(),
            method: "GET".into(),
            target: "/cart/view?token=secret".into(),
            protocol: "HTTP/1.1",
            status: 200,
            bytes_in: 80,
            bytes_out: 1234,
            backend: Some("10.0.0.2:8080".parse().unwrap()),
            route: Some("t1".into()),
            pool: None,
            chosen: Chosen::Failover("down"),
            retries: 1,
            connect_us: Some(250),
            first_byte_us: Some(1500),
            total_us: 2000,
            tls: Some("TLSv1.3"),
            sni: Some("shop.example".into()),
        }
    }

    #[test]
    fn a_combined_line_has_apaches_fields_then_ours_and_no_query() {
        let mut line = String::new();
        combined(&mut line, &entry(), false);
        assert_eq!(
            line,
            "198.18.0.7 - - [01/Dec/2025:12:00:00 +0000] \"GET /cart/view HTTP/1.1\" 200 1234 client_port=40000 \
             vip=10.0.0.1:443 bytes_in=80 backend=10.0.0.2:8080 route=t1 chosen=failover:down retries=1 \
             connect_ms=0.250 first_byte_ms=1.500 total_ms=2.000 tls=TLSv1.3 sni=shop.example"
        );
        line.clear();
        combined(&mut line, &entry(), true);
        assert!(line.contains("\"GET /cart/view?token=secret HTTP/1.1\""), "{line}");
    }

    #[test]
    fn a_client_cannot_forge_a_field_or_a_line() {
        let mut e = entry();
        e.target = "/a\" 500 1 route=evil\n198.18.0.9 - -".into();
        let mut line = String::new();
        combined(&mut line, &e, true);
        assert!(!line.contains('\n'), "{line}");
        assert!(line.contains("\"GET /a\\\" 500 1 route=evil\\x0a198.18.0.9 - - HTTP/1.1\""), "{line}");
    }

    #[test]
    fn a_json_line_is_one_object_with_every_field() {
        let mut line = String::new();
        json(&mut line, &entry(), false);
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["path"], "/cart/view");
        assert_eq!(v["status"], 200);
        assert_eq!(v["chosen"], "failover:down");
        assert_eq!(v["backend"], "10.0.0.2:8080");
        assert_eq!(v["tls"], "TLSv1.3");
        assert_eq!(v["time"], "1764590400.250");
    }
}
