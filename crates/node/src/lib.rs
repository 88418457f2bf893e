//! The node as a library: configuration, the validator's main loop, its HTTP API and metrics,
//! and the kernel side of its bans. The `node` binary wires them to the command line.

pub mod api;
pub mod collect;
pub mod config;
pub mod events;
pub mod filter;
pub mod kernel;
pub mod metrics;
pub mod process;
pub mod runtime;
pub mod secret;
