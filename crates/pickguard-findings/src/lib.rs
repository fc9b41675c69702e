/*!
One findings model for every command that reports rules (`scan`, `audit`):
the severity scale, the [`rules!`] macro each command's rule table is written
with, and [`RuleInfo`], the plain description SARIF, the docs test and
`pickguard rules` read. A rule id (`PG101-dangerous-global`,
`AUD004-private-name-reaches-public`) never changes meaning.
*/

use serde::Serialize;

/// How much a finding demands attention.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Severity {
    Info,
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }
}

/// A rule, described.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct RuleInfo {
    /// Stable id: a prefix (PG, AUD), a number, a slug.
    pub id: &'static str,
    pub severity: Severity,
    /// One sentence: what a finding of this rule means.
    pub summary: &'static str,
    /// The whole description (markdown paragraphs), when there is more to
    /// say than the summary: what docs/rules.md and `pickguard rules ID` show.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub doc: Option<&'static str>,
    /// How to fix it, when there is one fix.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<&'static str>,
    /// The command whose findings use it (`scan`, `audit`).
    pub command: &'static str,
}

impl RuleInfo {
    /// What the rule means, in full: its doc, else its summary.
    pub fn description(&self) -> &'static str {
        self.doc.unwrap_or(self.summary)
    }

    /// The docs anchor: the id in lower case (`pg101-dangerous-global`).
    pub fn anchor(&self) -> String {
        self.id.to_ascii_lowercase()
    }
}

/// A command's rule table: an enum `Rule` with a stable id per variant, its
/// severity, summary, optional doc (the whole description docs/rules.md is
/// generated from, `cargo dev docs`), optional fix, and optional *effect*
/// (what a finding does to the command's result, e.g. scan's verdict;
/// `Default` when not given).
///
/// ```
/// pickguard_findings::rules! {
///     command "demo", effect bool;
///     Bad = "DEMO001-bad", High, "Something bad.", fix "Do better.", effect true;
///     Odd = "DEMO002-odd", Info, "Something odd.", doc "Something odd.\n\nMore.";
/// }
/// assert_eq!(Rule::Bad.id(), "DEMO001-bad");
/// assert!(Rule::Bad.effect() && !Rule::Odd.effect());
/// assert_eq!(Rule::Odd.info().fix, None);
/// assert_eq!(Rule::Bad.info().description(), "Something bad.");
/// assert!(Rule::Odd.info().description().ends_with("More."));
/// ```
#[macro_export]
macro_rules! rules {
    (command $cmd:literal, effect $eff:ty;
     $( $v:ident = $id:literal, $sev:ident, $summary:literal
        $(, doc $doc:literal)? $(, fix $fix:literal)? $(, effect $e:expr)? ; )*) => {
        /// Every rule, with a stable id that never changes meaning.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
        pub enum Rule { $( #[serde(rename = $id)] $v, )* }
        impl Rule {
            pub const ALL: &'static [Rule] = &[ $( Rule::$v, )* ];
            pub fn id(self) -> &'static str { match self { $( Rule::$v => $id, )* } }
            pub fn severity(self) -> $crate::Severity {
                match self { $( Rule::$v => $crate::Severity::$sev, )* }
            }
            pub fn summary(self) -> &'static str { match self { $( Rule::$v => $summary, )* } }
            pub fn doc(self) -> Option<&'static str> {
                match self { $( Rule::$v => $crate::rules!(@opt $($doc)?), )* }
            }
            pub fn fix(self) -> Option<&'static str> {
                match self { $( Rule::$v => $crate::rules!(@opt $($fix)?), )* }
            }
            /// What a finding of this rule does to the command's result.
            pub fn effect(self) -> $eff {
                match self { $( Rule::$v => $crate::rules!(@eff $($e)?), )* }
            }
            pub fn info(self) -> $crate::RuleInfo {
                $crate::RuleInfo {
                    id: self.id(),
                    severity: self.severity(),
                    summary: self.summary(),
                    doc: self.doc(),
                    fix: self.fix(),
                    command: $cmd,
                }
            }
            /// The rule with this id.
            pub fn from_id(id: &str) -> Option<Rule> {
                Rule::ALL.iter().copied().find(|r| r.id() == id)
            }
        }
    };
    (@opt) => { None };
    (@opt $f:literal) => { Some($f) };
    (@eff) => { Default::default() };
    (@eff $e:expr) => { $e };
}
