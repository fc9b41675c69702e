/*!
Scanning: container walking, allowlist-first policy, findings and verdicts,
and reports (text, JSON, SARIF). Input is bytes; reading files is the
caller's job.
*/

mod analyze;
pub mod budgets;
pub mod finding;
mod keras;
pub mod policy;
pub mod report;
pub mod template;
mod tf;
pub mod torchscript;

pub use analyze::{Fetched, FileReport, GlobalUse, ScanOptions, Scanner};
pub use budgets::Budgets;
pub use finding::{Finding, Location, Rule, Severity, Verdict};
pub use policy::{Policy, Profile, UserPolicy};
