pub mod audit;
pub mod convert;
pub mod firewall;
pub mod inspect;
pub mod run;
pub mod scan;
pub mod sign;
pub mod watch;
