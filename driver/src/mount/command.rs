//! Running the node's tools (blkid, mkfs, losetup, e2fsck, resize2fs, xfs_growfs...):
//! stdin closed, output captured, the C locale so their output parses, and stderr
//! carried into the error when they fail.

use std::ffi::{OsStr, OsString};
use std::process::Stdio;

use super::MountError;

/// What a finished tool printed, and how it exited.
#[derive(Debug, Clone)]
pub struct Output {
    /// The exit code; None when a signal ended it.
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// Run `program` with `args` to completion, whatever its exit code.
pub async fn run<S: AsRef<OsStr>>(program: &str, args: &[S]) -> Result<Output, MountError> {
    let output = tokio::process::Command::new(program)
        .args(args)
        .env("LC_ALL", "C")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(false)
        .output()
        .await
        .map_err(|source| MountError::Spawn {
            program: program.to_string(),
            source,
        })?;
    Ok(Output {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    })
}

/// Run `program`; an exit code other than 0 is a [`MountError::Command`].
pub async fn run_ok<S: AsRef<OsStr>>(program: &str, args: &[S]) -> Result<Output, MountError> {
    let output = run(program, args).await?;
    if output.code == Some(0) {
        Ok(output)
    } else {
        Err(failure(program, args, &output))
    }
}

/// The error for a tool that ran and failed.
pub fn failure<S: AsRef<OsStr>>(program: &str, args: &[S], output: &Output) -> MountError {
    let status = match output.code {
        Some(code) => format!("exit code {code}"),
        None => "killed by a signal".to_string(),
    };
    let mut stderr = output.stderr.trim().to_string();
    if stderr.is_empty() {
        stderr = output.stdout.trim().to_string();
    }
    if stderr.is_empty() {
        stderr = "no output".to_string();
    }
    MountError::Command {
        program: program.to_string(),
        args: args
            .iter()
            .map(|a| a.as_ref().to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" "),
        status,
        stderr,
    }
}

/// An argument list from paths and strings alike.
pub fn args<I, S>(items: I) -> Vec<OsString>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    items.into_iter().map(|s| s.as_ref().to_owned()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_failing_tool_carries_its_stderr_into_the_error() {
        let err = run_ok("sh", &["-c", "echo oops >&2; exit 3"])
            .await
            .unwrap_err();
        let text = err.to_string();
        assert!(text.contains("exit code 3"), "{text}");
        assert!(text.contains("oops"), "{text}");
    }

    #[tokio::test]
    async fn a_missing_tool_is_a_spawn_error_naming_it() {
        let err = run_ok::<&str>("no-such-tool-here", &[]).await.unwrap_err();
        assert!(matches!(err, MountError::Spawn { .. }), "{err}");
        assert!(err.to_string().contains("no-such-tool-here"));
    }
}
