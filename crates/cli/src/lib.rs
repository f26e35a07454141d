//! The `carevault` command's composition root and operator commands. A library beside the
//! binary so that the benchmarks (`carevault-bench serve`) run the server exactly as the binary
//! composes it, with only the audit trail behind reads swapped for a bare in-memory append.

pub mod audit;
pub mod config;
pub mod runtime;
pub mod user;
