//! balancer: an XDP L4 load balancer with weighted Maglev hashing.
//!
//! The binary (`main.rs`) is the daemon and its CLI; this library holds everything they use, so
//! integration tests drive the same code.
#![warn(missing_docs)]

pub mod admin;
pub mod announce;
pub mod config;
pub mod control;
pub mod daemon;
pub mod dataplane;
pub mod fdlimit;
pub mod handoff;
pub mod health;
pub mod import;
pub mod l7;
pub mod lock;
pub mod maglev;
pub mod metrics;
pub mod netlink;
pub mod notify;
pub mod overrides;
pub mod preflight;
pub mod status;
