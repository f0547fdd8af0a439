//! The L7 sticky layer: HTTP terminated on VIPs that ask for session affinity, each request
//! sent to the backend that holds its session.
//!
//! `cookie` signs the insert-mode cookie, `route` reads an application's own session route,
//! `select` picks backends (sticky, failover, new sessions), `proxy` forwards requests.

pub mod cookie;
pub mod proxy;
pub mod route;
pub mod select;
pub mod server;
