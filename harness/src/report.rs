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
    pub status: Status,
    pub duration: Duration,
}

impl Outcome {
    /// `Group::sentence`, as shown and filtered on.
    pub fn full_name(&self) -> String {
        format!("{}::{}", self.group, self.name)
    }
}

/// What a run found.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub passed: u64,
    /// Failed specs, plus one when the leftover check found something.
    pub failed: u64,
    pub skipped: u64,
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
        if !self.leftovers.is_empty() {
            s.push_str("FAILED: left over after the run:\n");
            for l in &self.leftovers {
                s.push_str(&format!("    {l}\n"));
            }
        }
        s.push_str(&format!(
            "{} passed, {} failed, {} skipped\n",
            self.passed, self.failed, self.skipped
        ));
        s
    }

    /// Write the JUnit XML report: a testsuite per group, a testcase per spec.
    pub fn write_junit(&self, path: &Path, total: Duration) -> anyhow::Result<()> {
        let mut report = quick_junit::Report::new("csi-sanity");
        report.set_time(total);
        let mut groups: Vec<&str> = Vec::new();
        for o in &self.outcomes {
            if !groups.contains(&o.group.as_str()) {
                groups.push(&o.group);
            }
        }
        for group in groups {
            let mut suite = TestSuite::new(group);
            let mut time = Duration::ZERO;
            for o in self.outcomes.iter().filter(|o| o.group == group) {
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
                let mut case = TestCase::new(o.name.as_str(), status);
                case.set_classname(group);
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
