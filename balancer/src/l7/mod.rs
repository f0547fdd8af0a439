//! The L7 sticky layer: HTTP terminated on VIPs that ask for session affinity, each request
//! sent to the backend that holds its session.
//!
//! `cookie` signs the insert-mode cookie, `route` reads an application's own session route,
//! `session` finds a request's session, `select` picks backends (sticky, failover, new
//! sessions); `h1` forwards HTTP/1.1 requests, `proxy` HTTP/2 clients' (through hyper);
//! `server` runs the listeners on the worker threads.

pub mod cookie;
pub mod h1;
pub mod proxy;
pub mod route;
pub mod select;
pub mod server;
pub mod session;
