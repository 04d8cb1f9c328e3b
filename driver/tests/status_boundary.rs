//! Invariant: status.rs is the only place a gRPC code is chosen. The layers return typed
//! errors and status.rs maps them; this test reads driver/src and fails on a `Status`
//! constructor or a `Code::` outside the files allowed below.

use std::path::{Path, PathBuf};

/// Files that may name codes, and why.
const ALLOWED: &[(&str, &str)] = &[
    ("status.rs", "the one mapping from layer errors to codes"),
    (
        "logging.rs",
        "plumbing: reads the status a handler answered and bounds its size",
    ),
];

/// `tonic::Status` constructors: each chooses a code.
const CONSTRUCTORS: &[&str] = &[
    "new",
    "ok",
    "cancelled",
    "unknown",
    "invalid_argument",
    "deadline_exceeded",
    "not_found",
    "already_exists",
    "permission_denied",
    "resource_exhausted",
    "failed_precondition",
    "aborted",
    "out_of_range",
    "unimplemented",
    "internal",
    "unavailable",
    "data_loss",
    "unauthenticated",
    "with_details",
    "with_metadata",
    "with_details_and_metadata",
];

fn rust_files(dir: &Path, found: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read driver/src") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            rust_files(&path, found);
        } else if path.extension().is_some_and(|e| e == "rs") {
            found.push(path);
        }
    }
}

/// Whether `line` chooses a code: `Status::<constructor>(` or `Code::<Variant>`, each
/// as a whole word (so `ActionStatus::` and `ExitCode::` do not count).
fn chooses_a_code(line: &str) -> bool {
    let at_word_start = |i: usize| {
        i == 0
            || !line[..i]
                .chars()
                .next_back()
                .is_some_and(|c| c.is_alphanumeric() || c == '_')
    };
    let status = line.match_indices("Status::").any(|(i, m)| {
        let rest = &line[i + m.len()..];
        at_word_start(i)
            && CONSTRUCTORS
                .iter()
                .any(|c| rest.starts_with(c) && rest[c.len()..].starts_with('('))
    });
    let code = line.match_indices("Code::").any(|(i, m)| {
        at_word_start(i)
            && line[i + m.len()..]
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_uppercase())
    });
    status || code
}

#[test]
fn status_rs_is_the_only_place_codes_are_chosen() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    assert!(files.len() > 10, "driver/src has its files");
    let mut offenders = Vec::new();
    for file in files {
        let relative = file
            .strip_prefix(&src)
            .expect("under src")
            .to_string_lossy()
            .replace('\\', "/");
        if ALLOWED.iter().any(|(allowed, _)| {
            relative == *allowed || (allowed.ends_with('/') && relative.starts_with(allowed))
        }) {
            continue;
        }
        let text = std::fs::read_to_string(&file).expect("read source");
        // Unit tests may assert codes; only the code that serves is held to the rule.
        let served = text.split("#[cfg(test)]").next().unwrap_or("");
        for (n, line) in served.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            if chooses_a_code(code) {
                offenders.push(format!("src/{relative}:{}: {}", n + 1, line.trim()));
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "gRPC codes chosen outside status.rs (return a typed error and map it there):\n{}",
        offenders.join("\n")
    );
}

#[test]
fn the_scan_sees_constructors_and_codes_but_not_look_alikes() {
    assert!(chooses_a_code("Err(Status::not_found(\"x\"))"));
    assert!(chooses_a_code("tonic::Status::aborted(msg)"));
    assert!(chooses_a_code("Status::new(Code::Internal, m)"));
    assert!(chooses_a_code("if c == tonic::Code::Ok {"));
    assert!(!chooses_a_code("a.status == ActionStatus::InProgress"));
    assert!(!chooses_a_code("std::process::ExitCode::SUCCESS"));
    assert!(!chooses_a_code("(StatusCode::OK, body)"));
    assert!(!chooses_a_code("Status::from(err)"));
    assert!(!chooses_a_code("fn f() -> Result<(), Status> {"));
}
