//! The control API: a Unix socket (mode 0600, root only) speaking one JSON request and one JSON
//! response per line. `protocol` defines both, `server` accepts connections and hands requests
//! to the daemon, `client` is what the CLI uses.

pub mod client;
pub mod protocol;
pub mod server;
