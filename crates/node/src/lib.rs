//! The node as a library: the validator's main loop and the kernel side of its bans. The
//! `node` binary wires them to the command line.

pub mod kernel;
pub mod runtime;
