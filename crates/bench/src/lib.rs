//! The library half of carevault-bench: the seeded synthetic population, shared by the
//! `carevault-bench` binary and the criterion benches.

pub mod synth;
