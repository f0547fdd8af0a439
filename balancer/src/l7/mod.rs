//! The L7 sticky layer: HTTP terminated on VIPs that ask for session affinity, each request
//! sent to the backend that holds its session.
//!
//! `cookie` signs the insert-mode cookie, `route` reads an application's own session route,
//! `session` finds a request's session, `select` picks backends (sticky, failover, new
//! sessions); `h1` forwards HTTP/1.1 requests, `proxy` HTTP/2 clients' (through hyper);
//! `server` runs the listeners on the worker threads. `tls` terminates TLS, `stream` is what
//! both HTTP paths need of a client connection, `proxy_header` reads and writes the PROXY
//! protocol, `access_log` writes one line per request off the request path, `redirect`
//! answers a TLS VIP's cleartext port.

pub mod access_log;
pub mod ajp;
pub mod cookie;
pub mod h1;
pub mod proxy;
pub mod proxy_header;
pub mod redirect;
pub mod route;
pub mod router;
pub mod select;
pub mod server;
pub mod session;
pub mod stream;
pub mod tls;
