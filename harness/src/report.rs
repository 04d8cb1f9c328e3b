//! What a run found: per-spec outcomes, the closing summary, and the JUnit XML report.

use std::fmt;
use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use quick_junit::{NonSuccessKind, TestCase, TestCaseStatus, TestSuite};

/// How one spec ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    Passed,
    /// Failed, with the full message (RPC, request, expected, actual, rule).
    Failed(String),
    /// Did not apply, with the reason.
    Skipped(String),
}

/// One spec's result.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The group, e.g. `Controller::CreateVolume`.
    pub group: String,
    /// The rule sentence.
    pub name: String,
    /// The Go csi-sanity's full name for this spec, if it has a Go counterpart.
    pub go_name: Option<&'static str>,
    pub status: Status,
    pub duration: Duration,
    /// SHOULD-level deviations the spec found; they fail it only under `--csi.strict`.
    pub warnings: Vec<String>,
}

impl Outcome {
    /// `Group::sentence`, as shown and filtered on.
    pub fn full_name(&self) -> String {
        format!("{}::{}", self.group, self.name)
    }
}

/// How the JUnit report names test cases (`--csi.junit-names`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum JunitNames {
    /// A testsuite per group, a testcase per spec, named by its rule sentence.
    #[default]
    Ours,
    /// As the Go csi-sanity names them: one testsuite "CSI Driver Test Suite", testcases
    /// `[It] <Go full name>`, so dashboards keyed on Go's names keep their history. Specs
    /// without a Go counterpart keep their own names, in a testsuite of their own.
    Go,
}

impl std::str::FromStr for JunitNames {
    type Err = String;
    fn from_str(s: &str) -> Result<JunitNames, String> {
        match s {
            "ours" => Ok(JunitNames::Ours),
            "go" => Ok(JunitNames::Go),
            other => Err(format!("expected go or ours, got {other:?}")),
        }
    }
}

/// The testsuite (and classname) the Go csi-sanity's JUnit report uses.
pub const GO_SUITE_NAME: &str = "CSI Driver Test Suite";

/// What a run found.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub passed: u64,
    /// Failed specs, plus one when the leftover check found something.
    pub failed: u64,
    pub skipped: u64,
    /// SHOULD-level findings across all specs (they do not fail a run unless strict).
    pub warnings: u64,
    /// The RPCs the run stopped calling because they kept running out their deadline,
    /// and the endpoint if it went away.
    pub cut_off: Vec<String>,
    /// Specs left out by filters (`--ginkgo.focus`/`--ginkgo.skip`, libtest filters).
    pub filtered_out: u64,
    /// Every spec that ran or was skipped, in the order they finished.
    pub outcomes: Vec<Outcome>,
    /// Volumes and snapshots the run created that were still there at the end.
    pub leftovers: Vec<String>,
    /// In strict mode: what was not covered, as "reason (N specs)".
    pub not_covered: Vec<String>,
}

impl Report {
    /// Whether the run had no failure.
    pub fn success(&self) -> bool {
        self.failed == 0
    }

    /// The outcomes that failed.
    pub fn failures(&self) -> impl Iterator<Item = &Outcome> {
        self.outcomes
            .iter()
            .filter(|o| matches!(o.status, Status::Failed(_)))
    }

    /// The full names of the failed specs, sorted.
    pub fn failed_names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.failures().map(Outcome::full_name).collect();
        v.sort();
        v
    }

    /// The outcome of the spec whose full name is `full_name`.
    pub fn outcome(&self, full_name: &str) -> Option<&Outcome> {
        self.outcomes.iter().find(|o| o.full_name() == full_name)
    }

    /// The closing summary: skipped specs with reasons, what strict mode found not
    /// covered, leftovers, then exactly `N passed, N failed, N skipped` on its own line.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        let mut skipped: Vec<(String, &str)> = self
            .outcomes
            .iter()
            .filter_map(|o| match &o.status {
                Status::Skipped(r) => Some((o.full_name(), r.as_str())),
                _ => None,
            })
            .collect();
        skipped.sort();
        if !skipped.is_empty() {
            s.push_str("skipped:\n");
            for (name, reason) in skipped {
                s.push_str(&format!("    {name}: {reason}\n"));
            }
        }
        if !self.not_covered.is_empty() {
            s.push_str("not covered (strict mode; these specs failed):\n");
            for n in &self.not_covered {
                s.push_str(&format!("    {n}\n"));
            }
        }
        if !self.cut_off.is_empty() {
            s.push_str("cut off (the specs that needed these failed at once):\n");
            for c in &self.cut_off {
                s.push_str(&format!("    {c}\n"));
            }
        }
        if !self.leftovers.is_empty() {
            s.push_str("FAILED: left over after the run:\n");
            for l in &self.leftovers {
                s.push_str(&format!("    {l}\n"));
            }
        }
        let warned: Vec<&Outcome> = self
            .outcomes
            .iter()
            .filter(|o| !o.warnings.is_empty())
            .collect();
        if !warned.is_empty() {
            s.push_str("warnings (SHOULD-level; they fail only under --csi.strict):\n");
            for o in warned {
                for w in &o.warnings {
                    s.push_str(&format!("    {}: {}\n", o.full_name(), warning_line(w)));
                }
            }
        }
        if self.passed == 0 && self.failed == 0 && self.skipped > 0 {
            s.push_str(&format!(
                "WARNING: every one of the {} selected specs was skipped: nothing was checked\n",
                self.skipped
            ));
        }
        let warnings = match self.warnings {
            0 => String::new(),
            1 => ", 1 warning".to_string(),
            n => format!(", {n} warnings"),
        };
        s.push_str(&format!(
            "{} passed, {} failed, {} skipped{warnings}\n",
            self.passed, self.failed, self.skipped
        ));
        s
    }

    /// Write the JUnit XML report: a testsuite per group, a testcase per spec.
    pub fn write_junit(
        &self,
        path: &Path,
        total: Duration,
        names: JunitNames,
    ) -> anyhow::Result<()> {
        let mut report = quick_junit::Report::new("csi-sanity");
        report.set_time(total);
        // (suite name, the outcomes in it, how each testcase is named)
        let mut suites: Vec<(String, Vec<(&Outcome, String)>)> = Vec::new();
        for o in &self.outcomes {
            let (suite, case) = match (names, o.go_name) {
                (JunitNames::Go, Some(go)) => (GO_SUITE_NAME.to_string(), format!("[It] {go}")),
                _ => (o.group.clone(), o.name.clone()),
            };
            match suites.iter_mut().find(|(name, _)| *name == suite) {
                Some((_, cases)) => cases.push((o, case)),
                None => suites.push((suite, vec![(o, case)])),
            }
        }
        for (group, cases) in &suites {
            let mut suite = TestSuite::new(group.as_str());
            let mut time = Duration::ZERO;
            for (o, case_name) in cases {
                time += o.duration;
                let status = match &o.status {
                    Status::Passed => TestCaseStatus::success(),
                    Status::Failed(msg) => {
                        let mut st = TestCaseStatus::non_success(NonSuccessKind::Failure);
                        st.set_message(first_line(msg));
                        st.set_type("failure");
                        st.set_description(msg.as_str());
                        st
                    }
                    Status::Skipped(reason) => {
                        let mut st = TestCaseStatus::skipped();
                        st.set_message(reason.as_str());
                        st
                    }
                };
                let mut case = TestCase::new(case_name.as_str(), status);
                if !o.warnings.is_empty() {
                    case.set_system_out(format!(
                        "WARNING (SHOULD-level, fails only under --csi.strict):\n{}",
                        o.warnings.join("\n---\n")
                    ));
                    case.add_property(quick_junit::Property::new(
                        "warnings",
                        o.warnings.len().to_string(),
                    ));
                }
                case.set_classname(group.as_str());
                case.set_time(o.duration);
                suite.add_test_case(case);
            }
            suite.set_time(time);
            report.add_test_suite(suite);
        }
        if !self.leftovers.is_empty() {
            let mut suite = TestSuite::new("csi-sanity");
            let mut st = TestCaseStatus::non_success(NonSuccessKind::Failure);
            st.set_message("resources were left over after the run");
            st.set_type("failure");
            st.set_description(self.leftovers.join("\n"));
            let mut case = TestCase::new("nothing the run created is left over", st);
            case.set_classname("csi-sanity");
            suite.add_test_case(case);
            report.add_test_suite(suite);
        }
        let file = std::fs::File::create(path)
            .with_context(|| format!("creating JUnit report {}", path.display()))?;
        report
            .serialize(std::io::BufWriter::new(file))
            .with_context(|| format!("writing JUnit report {}", path.display()))?;
        Ok(())
    }
}

/// A warning in one line: what came back, and the rule.
fn warning_line(w: &str) -> String {
    let field = |p: &str| w.lines().find_map(|l| l.strip_prefix(p)).map(str::trim);
    match (field("actual:"), field("rule:")) {
        (Some(actual), Some(rule)) => format!("{actual} ({rule})"),
        _ => w.lines().next().unwrap_or_default().to_string(),
    }
}

fn first_line(msg: &str) -> String {
    // The most telling line is what came back; fall back to the first.
    msg.lines()
        .find(|l| l.starts_with("actual:"))
        .or_else(|| msg.lines().next())
        .unwrap_or("")
        .to_string()
}

impl fmt::Display for Report {
    /// The failures in full, then the summary: what a `#[test]` prints when it asserts
    /// `report.success()`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for o in self.failures() {
            if let Status::Failed(msg) = &o.status {
                writeln!(f, "---- {} ----\n{msg}\n", o.full_name())?;
            }
        }
        write!(f, "{}", self.summary())
    }
}
