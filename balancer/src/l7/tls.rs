//! TLS termination on an L7 VIP: certificates read and checked before anything changes, one
//! chosen per handshake by the client's SNI name, and the handshake's outcome counted.
//!
//! The provider is aws-lc-rs (rustls's default): its RSA signing and P-256 are the faster of
//! the two rustls providers, and a full handshake is mostly one signature; it builds with the
//! C compiler alone (no cmake on the build host).

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
};

use rustls::{
    ServerConfig,
    server::{ClientHello, ResolvesServerCert},
    sign::CertifiedKey,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject as _};

use crate::config::{Tls, TlsVersion};

/// Why a VIP's certificates cannot be used: the file and what is wrong with it.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The file cannot be read.
    #[error("{}: cannot read: {source}", file.display())]
    Read {
        /// The file.
        file: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// No certificate (or an unreadable PEM section) in a certificate file.
    #[error("{}: no PEM certificate chain in it ({reason})", file.display())]
    Certificate {
        /// The file.
        file: PathBuf,
        /// What the PEM reader or the X.509 parser said.
        reason: String,
    },
    /// No private key in a key file.
    #[error("{}: no PEM private key (PKCS#8, PKCS#1 or SEC1) in it ({reason})", file.display())]
    Key {
        /// The file.
        file: PathBuf,
        /// What the PEM reader said.
        reason: String,
    },
    /// The key file may be read by others than its owner.
    #[error("{}: mode {mode:o} lets group or others read the private key; `chmod 600 {}`", file.display(), file.display())]
    KeyMode {
        /// The file.
        file: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The key cannot sign, or is not the certificate's.
    #[error("{}: the key does not fit the certificate in {}: {reason}", key.display(), cert.display())]
    Pair {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// What rustls said.
        reason: String,
    },
    /// The leaf certificate's validity has ended, or not begun.
    #[error("{}: the certificate is valid from {from} to {until} (UTC), not now", file.display())]
    Validity {
        /// The file.
        file: PathBuf,
        /// Not before.
        from: String,
        /// Not after.
        until: String,
    },
    /// rustls refused the settings.
    #[error("TLS settings: {0}")]
    Settings(String),
}

/// What status shows of one certificate.
#[derive(Debug, Clone)]
pub struct CertInfo {
    /// The certificate file.
    pub file: PathBuf,
    /// The names it serves (its DNS subject alternative names, else its common name).
    pub names: Vec<String>,
    /// Its end of validity, seconds since the epoch.
    pub not_after: i64,
}

impl CertInfo {
    /// Whole days left until it expires at `now` (seconds since the epoch); negative after.
    pub fn days_left(&self, now: i64) -> i64 {
        (self.not_after - now).div_euclid(86_400)
    }
}

/// A VIP's TLS settings, ready for handshakes.
#[derive(Clone)]
pub struct Certs {
    /// What new handshakes use.
    pub config: Arc<ServerConfig>,
    /// Each certificate, in the configuration's order.
    pub info: Vec<CertInfo>,
}

impl std::fmt::Debug for Certs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Certs").field("info", &self.info).finish_non_exhaustive()
    }
}

/// The ALPN names offered, most preferred first.
pub const H2: &[u8] = b"h2";
/// HTTP/1.1's ALPN name.
pub const HTTP11: &[u8] = b"http/1.1";

/// Sessions a VIP keeps for resumption (HAProxy's `tune.ssl.cachesize` default).
const SESSIONS: usize = 20_000;

impl Certs {
    /// Reads and checks every certificate and key of `tls` (at `now`, seconds since the epoch).
    /// `h2` off keeps ALPN to HTTP/1.1 whatever `tls.h2` says (backends that get a PROXY
    /// header are reached from the HTTP/1 path only).
    pub fn load(tls: &Tls, h2: bool, now: i64) -> Result<Self, TlsError> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut resolver = BySni::default();
        let mut info = Vec::new();
        for c in &tls.certificates {
            let (key, cert) = read_pair(&c.cert, &c.key, &provider, now)?;
            let key = Arc::new(key);
            for name in &cert.names {
                resolver.names.entry(name.to_ascii_lowercase()).or_default().push(key.clone());
            }
            resolver.all.push(key);
            info.push(cert);
        }
        let versions: &[&rustls::SupportedProtocolVersion] = match tls.min_version {
            TlsVersion::V12 => &[&rustls::version::TLS13, &rustls::version::TLS12],
            TlsVersion::V13 => &[&rustls::version::TLS13],
        };
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
            .map_err(|e| TlsError::Settings(e.to_string()))?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(resolver));
        if tls.session_resumption {
            config.session_storage = rustls::server::ServerSessionMemoryCache::new(SESSIONS);
        } else {
            config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
            config.send_tls13_tickets = 0;
        }
        config.alpn_protocols = if tls.h2 && h2 { vec![H2.to_vec(), HTTP11.to_vec()] } else { vec![HTTP11.to_vec()] };
        Ok(Self { config: Arc::new(config), info })
    }
}

/// Reads one certificate chain and its key, and checks that they belong together and that the
/// leaf is valid at `now`.
fn read_pair(
    cert_file: &Path,
    key_file: &Path,
    provider: &rustls::crypto::CryptoProvider,
    now: i64,
) -> Result<(CertifiedKey, CertInfo), TlsError> {
    let pem = std::fs::read(cert_file).map_err(|source| TlsError::Read { file: cert_file.into(), source })?;
    let bad_cert = |reason: String| TlsError::Certificate { file: cert_file.into(), reason };
    let chain =
        CertificateDer::pem_slice_iter(&pem).collect::<Result<Vec<_>, _>>().map_err(|e| bad_cert(e.to_string()))?;
    let leaf = chain.first().ok_or_else(|| bad_cert("the file holds no CERTIFICATE section".into()))?;
    let (_, parsed) = x509_parser::parse_x509_certificate(leaf).map_err(|e| bad_cert(e.to_string()))?;
    let validity = parsed.validity();
    if now < validity.not_before.timestamp() || now > validity.not_after.timestamp() {
        return Err(TlsError::Validity {
            file: cert_file.into(),
            from: validity.not_before.to_string(),
            until: validity.not_after.to_string(),
        });
    }
    let info = CertInfo { file: cert_file.into(), names: names(&parsed), not_after: validity.not_after.timestamp() };
    let meta = std::fs::metadata(key_file).map_err(|source| TlsError::Read { file: key_file.into(), source })?;
    let mode = std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o777;
    if mode & 0o077 != 0 {
        return Err(TlsError::KeyMode { file: key_file.into(), mode });
    }
    let key_pem = std::fs::read(key_file).map_err(|source| TlsError::Read { file: key_file.into(), source })?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|e| TlsError::Key { file: key_file.into(), reason: e.to_string() })?;
    let pair = |reason: String| TlsError::Pair { cert: cert_file.into(), key: key_file.into(), reason };
    let signer = provider.key_provider.load_private_key(key).map_err(|e| pair(e.to_string()))?;
    let certified = CertifiedKey::new(chain, signer);
    match certified.keys_match() {
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
            return Err(pair("it is another certificate's key".into()));
        }
        Err(e) => return Err(pair(e.to_string())),
    }
    Ok((certified, info))
}

/// The DNS names a certificate serves, lowercase.
fn names(cert: &x509_parser::certificate::X509Certificate<'_>) -> Vec<String> {
    let mut names: Vec<String> = cert
        .subject_alternative_name()
        .ok()
        .flatten()
        .map(|san| {
            san.value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    x509_parser::extensions::GeneralName::DNSName(d) => Some(d.to_ascii_lowercase()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    if names.is_empty() {
        names.extend(cert.subject().iter_common_name().filter_map(|cn| cn.as_str().ok()).map(str::to_ascii_lowercase));
    }
    names
}

/// Picks a certificate by the client's SNI name: an exact name, then a wildcard one level up,
/// then the first certificate; among several for one name, the first whose key can sign with a
/// scheme the client offers (an ECDSA and an RSA certificate for one site).
#[derive(Debug, Default)]
struct BySni {
    names: HashMap<String, Vec<Arc<CertifiedKey>>>,
    all: Vec<Arc<CertifiedKey>>,
}

impl ResolvesServerCert for BySni {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let schemes = hello.signature_schemes();
        let fits = |k: &&Arc<CertifiedKey>| k.key.choose_scheme(schemes).is_some();
        let pick = |keys: &[Arc<CertifiedKey>]| keys.iter().find(fits).or(keys.first()).cloned();
        let Some(name) = hello.server_name().map(str::to_ascii_lowercase) else {
            return pick(&self.all[..1.min(self.all.len())]);
        };
        if let Some(keys) = self.names.get(&name) {
            return pick(keys);
        }
        if let Some((_, parent)) = name.split_once('.')
            && let Some(keys) = self.names.get(&format!("*.{parent}"))
        {
            return pick(keys);
        }
        pick(&self.all[..1.min(self.all.len())])
    }
}

/// Why a handshake failed, as the metrics name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// Not complete within the VIP's `header_timeout_ms`.
    Timeout,
    /// The client closed or reset the connection.
    Closed,
    /// The bytes were not TLS (often plain HTTP to the TLS port).
    NotTls,
    /// No protocol version, cipher suite or key exchange group in common.
    NoCommonParameters,
    /// The client offered ALPN protocols, none of them ours.
    NoApplicationProtocol,
    /// The client sent an alert (it rejected the certificate, mostly).
    ClientAlert,
    /// Anything else.
    Other,
}

impl Failure {
    /// Every reason, in the order of `TlsLive::failures`.
    pub const ALL: [Self; 7] = [
        Self::Timeout,
        Self::Closed,
        Self::NotTls,
        Self::NoCommonParameters,
        Self::NoApplicationProtocol,
        Self::ClientAlert,
        Self::Other,
    ];

    /// The name metrics and status use.
    pub fn name(self) -> &'static str {
        match self {
            Self::Timeout => "timeout",
            Self::Closed => "closed",
            Self::NotTls => "not_tls",
            Self::NoCommonParameters => "no_common_parameters",
            Self::NoApplicationProtocol => "no_application_protocol",
            Self::ClientAlert => "client_alert",
            Self::Other => "other",
        }
    }

    /// The reason for an error of tokio-rustls's accept.
    pub fn of(e: &std::io::Error) -> Self {
        use std::io::ErrorKind;
        if let Some(tls) = e.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()) {
            return match tls {
                rustls::Error::InvalidMessage(_) | rustls::Error::InappropriateMessage { .. } => Self::NotTls,
                rustls::Error::PeerIncompatible(_) => Self::NoCommonParameters,
                rustls::Error::NoApplicationProtocol => Self::NoApplicationProtocol,
                rustls::Error::AlertReceived(_) => Self::ClientAlert,
                _ => Self::Other,
            };
        }
        match e.kind() {
            ErrorKind::UnexpectedEof | ErrorKind::ConnectionReset | ErrorKind::BrokenPipe => Self::Closed,
            _ => Self::Other,
        }
    }
}

/// A VIP's handshake counters.
#[derive(Debug, Default)]
pub struct TlsLive {
    /// Completed handshakes.
    pub handshakes: AtomicU64,
    /// Failed handshakes, by `Failure::ALL`'s order.
    pub failures: [AtomicU64; 7],
    /// Completed handshakes by version, in `VERSIONS`' order.
    pub versions: [AtomicU64; 2],
    /// Completed handshakes by ALPN result, in `ALPN`'s order.
    pub alpn: [AtomicU64; 3],
}

/// The names of `TlsLive::versions`.
pub const VERSIONS: [&str; 2] = ["TLSv1.2", "TLSv1.3"];
/// The names of `TlsLive::alpn`.
pub const ALPN: [&str; 3] = ["h2", "http/1.1", "none"];

impl TlsLive {
    /// Counts a failed handshake.
    pub fn failed(&self, why: Failure) {
        let i = Failure::ALL.iter().position(|&f| f == why).unwrap_or(Failure::ALL.len() - 1);
        self.failures[i].fetch_add(1, Relaxed);
    }

    /// Counts a completed handshake of `conn`.
    pub fn done(&self, conn: &rustls::ServerConnection) {
        self.handshakes.fetch_add(1, Relaxed);
        if let Some(v) = conn.protocol_version() {
            let i = usize::from(v == rustls::ProtocolVersion::TLSv1_3);
            self.versions[i].fetch_add(1, Relaxed);
        }
        let alpn = match conn.alpn_protocol() {
            Some(H2) => 0,
            Some(_) => 1,
            None => 2,
        };
        self.alpn[alpn].fetch_add(1, Relaxed);
    }
}

/// What the request path keeps of a connection's handshake (the access log's fields).
#[derive(Debug, Clone)]
pub struct Session {
    /// `TLSv1.2` or `TLSv1.3`.
    pub version: &'static str,
    /// The SNI name the client sent.
    pub sni: Option<Box<str>>,
}

impl Session {
    /// What `conn`'s completed handshake settled.
    pub fn of(conn: &rustls::ServerConnection) -> Self {
        let version = match conn.protocol_version() {
            Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3",
            Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2",
            _ => "TLS",
        };
        Self { version, sni: conn.server_name().map(Into::into) }
    }
}
