//! Certificates made by the test (a private CA and leaves signed by it, rcgen), and a TLS
//! client that keeps its connection, to see which certificate a handshake got and whether an
//! established connection survives a reload.

use std::{
    io::Write as _,
    net::{SocketAddr, TcpStream},
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rustls_pki_types::pem::PemObject as _;

/// A private CA in a directory of its own; removed on drop.
pub struct Pki {
    /// Where the files are.
    pub dir: PathBuf,
    ca: Issuer<'static, KeyPair>,
    /// The CA certificate's file, for clients (`curl --cacert`).
    pub ca_file: PathBuf,
}

/// A validity window: days from now (negative: in the past).
pub type Days = (i64, i64);

impl Pki {
    /// A new CA, files under a directory named after `name`.
    pub fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("{name}-pki"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, "balancer test CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let ca_file = dir.join("ca.pem");
        std::fs::write(&ca_file, cert.pem()).unwrap();
        Self { dir, ca: Issuer::new(params, key), ca_file }
    }

    /// A leaf for `names` valid over `days`, written as `<file>.pem` (leaf, then the CA) and
    /// `<file>.key` (mode 0600); returns both paths.
    pub fn leaf(&self, file: &str, names: &[&str], days: Days) -> (PathBuf, PathBuf) {
        let mut params = CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>()).unwrap();
        params.distinguished_name.push(DnType::CommonName, names.first().copied().unwrap_or("leaf"));
        let now = time_now();
        params.not_before = now + time::Duration::days(days.0);
        params.not_after = now + time::Duration::days(days.1);
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.ca).unwrap();
        let (cert_file, key_file) = (self.dir.join(format!("{file}.pem")), self.dir.join(format!("{file}.key")));
        let ca = std::fs::read_to_string(&self.ca_file).unwrap();
        std::fs::write(&cert_file, format!("{}{ca}", cert.pem())).unwrap();
        std::fs::write(&key_file, key.serialize_pem()).unwrap();
        std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).unwrap();
        (cert_file, key_file)
    }
}

fn time_now() -> time::OffsetDateTime {
    time::OffsetDateTime::now_utc()
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A TLS client connection (blocking) that trusts `ca` only.
pub struct TlsClient {
    stream: rustls::StreamOwned<rustls::ClientConnection, TcpStream>,
}

impl TlsClient {
    /// Connects to `addr` with SNI `name` (and ALPN `http/1.1`).
    pub fn connect(addr: SocketAddr, name: &str, ca: &Path) -> std::io::Result<Self> {
        Self::connect_after(addr, b"", name, ca)
    }

    /// As `connect`, sending `preamble` (a PROXY protocol header) before the handshake.
    pub fn connect_after(addr: SocketAddr, preamble: &[u8], name: &str, ca: &Path) -> std::io::Result<Self> {
        let mut roots = rustls::RootCertStore::empty();
        let pem = std::fs::read(ca)?;
        for cert in rustls_pki_types::CertificateDer::pem_slice_iter(&pem) {
            roots.add(cert.map_err(std::io::Error::other)?).map_err(std::io::Error::other)?;
        }
        let mut config = rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let server = rustls_pki_types::ServerName::try_from(name.to_owned()).map_err(std::io::Error::other)?;
        let conn = rustls::ClientConnection::new(Arc::new(config), server).map_err(std::io::Error::other)?;
        let mut tcp = TcpStream::connect_timeout(&addr, Duration::from_secs(3))?;
        tcp.set_read_timeout(Some(Duration::from_secs(5)))?;
        tcp.write_all(preamble)?;
        let mut stream = rustls::StreamOwned::new(conn, tcp);
        while stream.conn.is_handshaking() {
            stream.conn.complete_io(&mut stream.sock)?;
        }
        Ok(Self { stream })
    }

    /// The leaf certificate the server presented, as DER.
    pub fn peer_leaf(&self) -> Vec<u8> {
        self.stream.conn.peer_certificates().and_then(|c| c.first()).map(|c| c.to_vec()).unwrap_or_default()
    }

    /// GET `path` for `host` on the kept connection; the whole response (head and body, which
    /// must have a `Content-Length`).
    pub fn get(&mut self, host: &str, path: &str) -> std::io::Result<String> {
        write!(self.stream, "GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n")?;
        self.stream.flush()?;
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            let n = crate::backend::read_some(&mut self.stream, &mut buf)?;
            if n == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            got.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&got);
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let len = head
                    .lines()
                    .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_owned()))
                    .and_then(|v| v.parse::<usize>().ok())
                    .unwrap_or(0);
                if body.len() >= len {
                    return Ok(text.into_owned());
                }
            }
        }
    }
}
