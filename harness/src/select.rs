//! Which specs a run selects: the profile, then `--ginkgo.focus`/`--ginkgo.skip` with
//! ginkgo's semantics over both names a core spec has (ours and the Go csi-sanity's).
//!
//! - Focus and skip are repeatable; a spec runs when any focus matches (or none is
//!   given) and no skip matches. A regex is Go's RE2 dialect, so `a|b` alternation works.
//! - A core spec matches when the regex matches its own name or its Go name, so a Go
//!   user's regexes select what they select in Go.
//! - A Beyond spec has no Go name. A focus selects it only when the regex mentions
//!   `Beyond` and matches its name, so no Go regex pulls one in by accident; a skip
//!   matches its own name.
//! - A focus or skip that leaves nothing to run is a usage error, never a green run.

use anyhow::Context;
use csi_suites::{Profile, Spec};
use regex::Regex;

/// The specs a run keeps, and how many the profile and the regexes left out.
pub struct Selection {
    pub specs: Vec<Spec>,
    pub filtered_out: u64,
}

/// Keep the specs that `profile`, `focus` and `skip` select, in order.
pub fn select(
    specs: Vec<Spec>,
    profile: Profile,
    focus: &[String],
    skip: &[String],
) -> anyhow::Result<Selection> {
    let compile = |res: &[String]| -> anyhow::Result<Vec<Regex>> {
        res.iter()
            .map(|r| Regex::new(r).with_context(|| format!("invalid regex {r:?}")))
            .collect()
    };
    let focus_re = compile(focus)?;
    let skip_re = compile(skip)?;
    let in_profile: Vec<Spec> = specs
        .into_iter()
        .filter(|s| profile == Profile::Full || s.in_compat())
        .collect();
    let before = in_profile.len();
    let kept: Vec<Spec> = in_profile
        .iter()
        .filter(|s| focused(s, &focus_re) && !skipped(s, &skip_re))
        .cloned()
        .collect();
    if kept.is_empty() && (!focus.is_empty() || !skip.is_empty()) {
        anyhow::bail!("{}", nothing_selected(&in_profile, profile, focus, skip));
    }
    let filtered_out = (before - kept.len()) as u64;
    Ok(Selection {
        specs: kept,
        filtered_out,
    })
}

/// Whether any focus selects `spec` (every spec, when there is no focus).
pub fn focused(spec: &Spec, focus: &[Regex]) -> bool {
    if focus.is_empty() {
        return true;
    }
    if spec.is_beyond() {
        let own = spec.full_name();
        return focus
            .iter()
            .any(|r| mentions_beyond(r.as_str()) && r.is_match(&own));
    }
    let names = spec.names();
    focus.iter().any(|r| names.iter().any(|n| r.is_match(n)))
}

/// Whether any skip matches one of `spec`'s names.
pub fn skipped(spec: &Spec, skip: &[Regex]) -> bool {
    let names = spec.names();
    skip.iter().any(|r| names.iter().any(|n| r.is_match(n)))
}

fn mentions_beyond(regex: &str) -> bool {
    regex.to_ascii_lowercase().contains("beyond")
}

/// The usage error for a selection that is empty: the regexes, and the spec names
/// closest to each focus.
fn nothing_selected(specs: &[Spec], profile: Profile, focus: &[String], skip: &[String]) -> String {
    let mut msg = String::from("no spec is selected");
    if profile == Profile::Compat {
        msg.push_str(" in the compat profile");
    }
    for f in focus {
        msg.push_str(&format!("\n  --ginkgo.focus {f:?}"));
    }
    for s in skip {
        msg.push_str(&format!("\n  --ginkgo.skip {s:?}"));
    }
    let suggestions = closest(specs, focus, 5);
    if !suggestions.is_empty() {
        msg.push_str("\nclosest spec names:");
        for name in suggestions {
            msg.push_str(&format!("\n  {name}"));
        }
    }
    msg.push_str("\n(list every name with --list; Go names match too, e.g. \"Node Service\")");
    msg
}

/// The names (ours or Go's) most like the focus regexes: the most three-letter pieces
/// of a regex's words found in the name, so a typo still finds its spec.
fn closest(specs: &[Spec], focus: &[String], n: usize) -> Vec<String> {
    let grams: Vec<String> = focus
        .iter()
        .flat_map(|f| {
            let lower: Vec<char> = f
                .to_ascii_lowercase()
                .chars()
                .filter(|c| c.is_alphanumeric() || *c == ' ')
                .collect();
            lower
                .windows(3)
                .map(|w| w.iter().collect::<String>())
                .filter(|g| !g.contains(' '))
                .collect::<Vec<_>>()
        })
        .collect();
    if grams.is_empty() {
        return Vec::new();
    }
    let mut scored: Vec<(usize, String)> = specs
        .iter()
        .flat_map(|s| s.names())
        .map(|name| {
            let lower = name.to_ascii_lowercase();
            let score = grams.iter().filter(|g| lower.contains(g.as_str())).count();
            (score, name)
        })
        .filter(|(score, _)| *score * 2 >= grams.len())
        .collect();
    scored.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.len().cmp(&b.1.len())));
    scored.into_iter().take(n).map(|(_, name)| name).collect()
}
