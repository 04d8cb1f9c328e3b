//! The findings report (`--csi.report FILE.md` or `FILE.html`): one page per run that a
//! driver author can act on. Each finding gives the spec sentence it breaks and its
//! severity (MUST: a failure; SHOULD: a warning), the request and the response as the
//! failure message carries them (secrets already redacted), and the command that runs
//! that one spec again.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;

use crate::report::{Outcome, Report, Status};

/// What the page says about the run itself.
pub struct RunInfo<'a> {
    /// The endpoint under test, or how the bundled driver was started.
    pub endpoint: &'a str,
    /// The command line that made the run, as the user typed it.
    pub command: &'a str,
    /// The profile that ran (`full` or `compat`).
    pub profile: &'a str,
}

/// One finding: a failed spec (MUST) or one warning (SHOULD).
struct Finding<'a> {
    spec: &'a Outcome,
    severity: &'static str,
    detail: &'a str,
}

/// Write the findings page to `path`: Markdown, or HTML when the name ends in `.html`.
pub fn write(path: &Path, report: &Report, info: &RunInfo) -> anyhow::Result<()> {
    let markdown = markdown(report, info);
    let text = if path.extension().is_some_and(|e| e == "html" || e == "htm") {
        html(&markdown)
    } else {
        markdown
    };
    std::fs::write(path, text)
        .with_context(|| format!("writing the findings report {}", path.display()))
}

fn findings(report: &Report) -> Vec<Finding<'_>> {
    let mut all = Vec::new();
    for o in &report.outcomes {
        if let Status::Failed(msg) = &o.status {
            all.push(Finding {
                spec: o,
                severity: "MUST (fails the run)",
                detail: msg,
            });
        }
        for w in &o.warnings {
            all.push(Finding {
                spec: o,
                severity: "SHOULD (a warning; fails only under --csi.strict)",
                detail: w,
            });
        }
    }
    all
}

/// The line of a failure message that starts with `label`, if any.
fn field<'a>(detail: &'a str, label: &str) -> Option<&'a str> {
    detail
        .lines()
        .find_map(|l| l.strip_prefix(label))
        .map(str::trim)
}

fn markdown(report: &Report, info: &RunInfo) -> String {
    let mut s = String::new();
    let found = findings(report);
    let _ = writeln!(s, "# csi-sanity findings\n");
    let _ = writeln!(s, "- endpoint: `{}`", info.endpoint);
    let _ = writeln!(s, "- profile: `{}`", info.profile);
    let _ = writeln!(s, "- command: `{}`", info.command);
    let warnings = match report.warnings {
        0 => String::new(),
        1 => ", 1 warning".to_string(),
        n => format!(", {n} warnings"),
    };
    let _ = writeln!(
        s,
        "- result: {} passed, {} failed, {} skipped{warnings}\n",
        report.passed, report.failed, report.skipped
    );
    if found.is_empty() {
        let _ = writeln!(
            s,
            "No findings: every spec that ran passed, with no warning."
        );
    }
    for (i, f) in found.iter().enumerate() {
        let name = f.spec.full_name();
        let _ = writeln!(s, "## {}. {}\n", i + 1, name);
        if let Some(go) = f.spec.go_name {
            let _ = writeln!(s, "- Go csi-sanity name: `{go}`");
        }
        let _ = writeln!(s, "- severity: **{}**", f.severity);
        let cites = field(f.detail, "cites:");
        let check = field(f.detail, "rule:");
        if let Some(rule) = cites.or(check) {
            let _ = writeln!(s, "- breaks: {rule}");
        }
        if let (Some(_), Some(check)) = (cites, check) {
            let _ = writeln!(s, "- check: {check}");
        }
        if let Some(rpc) = field(f.detail, "RPC:") {
            let _ = writeln!(s, "- RPC: `{rpc}`");
        }
        if let Some(step) = field(f.detail, "during:") {
            let _ = writeln!(s, "- during: {step}");
        }
        if let Some(request) = field(f.detail, "request:") {
            let _ = writeln!(s, "- request (secrets redacted): `{request}`");
        }
        if let Some(expected) = field(f.detail, "expected:") {
            let _ = writeln!(s, "- expected: {expected}");
        }
        if let Some(actual) = field(f.detail, "actual:") {
            let _ = writeln!(s, "- response: `{actual}`");
        }
        let focus = format!("^{}$", regex::escape(&name));
        let _ = writeln!(
            s,
            "- reproduce: `csi-sanity --csi.endpoint {} --ginkgo.focus '{}'`\n",
            info.endpoint,
            focus.replace('\'', "'\\''")
        );
        let _ = writeln!(
            s,
            "<details><summary>full message</summary>\n\n```\n{}\n```\n\n</details>\n",
            f.detail
        );
    }
    s
}

/// The Markdown page as a plain HTML document: escaped, in a `<pre>`, so any browser
/// shows it as written.
fn html(markdown: &str) -> String {
    let escaped = markdown
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;");
    format!(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>csi-sanity findings</title></head>\n<body><pre>\n{escaped}</pre></body></html>\n"
    )
}
