//! The firewall's in-process tests, one binary.

mod common;

mod cache;
mod fail_closed;
mod uploads;
