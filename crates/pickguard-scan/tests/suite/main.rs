//! The scanner's integration tests, one binary.

mod findings;
mod mutation;
