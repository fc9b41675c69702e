//! pickguard's integration tests, one binary (each binary links the whole
//! workspace). `live_watch` is its own binary: its host-wide sensor must
//! not see the payloads other tests run. Run one part with
//! `cargo test -p pickguard --features live --test suite cli::`.

#[path = "../common/mod.rs"]
mod common;

mod audit;
mod audit_attacks;
mod cli;
mod convert;
mod corpus;
mod live;
mod live_audit;
mod live_convert;
mod live_firewall;
mod live_guard;
mod live_sign;
mod remote;
