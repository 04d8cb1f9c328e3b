//! Target and staging paths: each spec gets its own, created with the configured
//! commands (csi-sanity's `--csi.createmountpathcmd` protocol: the command gets the
//! suggested path as its only argument and prints the path to use) or with `mkdir`, and
//! removed after the spec. Paths are checked with `--csi.checkpathcmd` (which prints
//! `file`, `directory`, `not_found` or `other`) or with `stat`, so drivers whose paths
//! live on another host can be tested too.

use std::path::Path;
use std::time::Duration;

use crate::check::Failure;
use crate::config::SuiteConfig;

/// Whether a harness-created directory holds target paths or is a staging path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PathRole {
    /// The parent of a NodePublishVolume target path.
    Target,
    /// A NodeStageVolume staging path.
    Staging,
}

impl PathRole {
    /// The word in the names of this role's directories.
    pub(crate) fn tag(self) -> &'static str {
        match self {
            PathRole::Target => "t",
            PathRole::Staging => "s",
        }
    }
}

/// What is at a path, as the check-path protocol reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PathKind {
    File,
    Directory,
    NotFound,
    Other,
}

impl PathKind {
    /// Parse the check-path command's output.
    pub fn parse(s: &str) -> Option<PathKind> {
        match s.trim() {
            "file" => Some(PathKind::File),
            "directory" => Some(PathKind::Directory),
            "not_found" => Some(PathKind::NotFound),
            "other" => Some(PathKind::Other),
            _ => None,
        }
    }
}

const PATH_RULE: &str = "harness setup: the target and staging directories must be creatable (--csi.mountdir, --csi.stagingdir, --csi.createmountpathcmd, --csi.createstagingpathcmd)";

/// Run `cmd path` with a timeout; its trimmed stdout on success.
async fn run_path_command(cmd: &str, path: &str, timeout: Duration) -> Result<String, String> {
    let child = tokio::process::Command::new(cmd)
        .arg(path)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot run {cmd:?}: {e}"))?;
    let output = match tokio::time::timeout(timeout, child.wait_with_output()).await {
        Ok(Ok(output)) => output,
        Ok(Err(e)) => return Err(format!("{cmd:?} {path:?}: {e}")),
        Err(_) => return Err(format!("{cmd:?} {path:?}: no answer within {timeout:?}")),
    };
    if !output.status.success() {
        return Err(format!(
            "{cmd:?} {path:?} exited with {}: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
}

/// Create a directory for `role`, suggested as `name` under the configured root, with
/// the configured command or `mkdir`; the path to use. The caller records it for removal.
pub(crate) async fn create_dir(
    config: &SuiteConfig,
    role: PathRole,
    name: &str,
) -> Result<String, Failure> {
    let (root, cmd) = match role {
        PathRole::Target => (&config.mount_dir, &config.create_target_path_cmd),
        PathRole::Staging => (&config.staging_dir, &config.create_staging_path_cmd),
    };
    let suggested = root.join(name);
    let suggested_str = suggested.to_string_lossy().to_string();
    match cmd {
        Some(cmd) => {
            let out = run_path_command(cmd, &suggested_str, config.create_path_cmd_timeout)
                .await
                .map_err(|e| {
                    Failure::new("the create-path command to succeed", e, PATH_RULE)
                        .during("setting up: creating a path")
                })?;
            Ok(if out.is_empty() { suggested_str } else { out })
        }
        None => {
            std::fs::create_dir_all(root)
                .and_then(|()| std::fs::create_dir(&suggested))
                .map_err(|e| {
                    Failure::new(
                        format!("to create {}", suggested.display()),
                        e.to_string(),
                        PATH_RULE,
                    )
                    .during("setting up: creating a path")
                })?;
            Ok(suggested_str)
        }
    }
}

/// What is at `path`, by the check-path command or `stat`.
pub async fn check_path(config: &SuiteConfig, path: &str) -> Result<PathKind, Failure> {
    const RULE: &str = "harness: --csi.checkpathcmd must print file, directory, not_found or other";
    if let Some(cmd) = &config.check_path_cmd {
        let out = run_path_command(cmd, path, config.check_path_cmd_timeout)
            .await
            .map_err(|e| Failure::new("the check-path command to succeed", e, RULE))?;
        return PathKind::parse(&out).ok_or_else(|| {
            Failure::new(
                "file, directory, not_found or other",
                format!("{cmd:?} printed {out:?}"),
                RULE,
            )
        });
    }
    match std::fs::metadata(path) {
        Ok(m) if m.is_file() => Ok(PathKind::File),
        Ok(m) if m.is_dir() => Ok(PathKind::Directory),
        Ok(_) => Ok(PathKind::Other),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(PathKind::NotFound),
        Err(e) => Err(Failure::new(format!("to stat {path}"), e.to_string(), RULE)),
    }
}

/// Remove a directory the harness created, with the configured command or `rmdir`.
pub(crate) async fn remove_path(
    config: &SuiteConfig,
    path: &str,
    role: PathRole,
) -> Result<(), Failure> {
    const RULE: &str = "cleanup: the harness removes the directories it created (--csi.removemountpathcmd, --csi.removestagingpathcmd); a directory still holding a mount is never removed";
    let cmd = match role {
        PathRole::Target => &config.remove_target_path_cmd,
        PathRole::Staging => &config.remove_staging_path_cmd,
    };
    if let Some(cmd) = cmd {
        return run_path_command(cmd, path, config.remove_path_cmd_timeout)
            .await
            .map(|_| ())
            .map_err(|e| Failure::new("the remove-path command to succeed", e, RULE));
    }
    let dir = Path::new(path);
    if !dir.exists() {
        return Ok(());
    }
    if role == PathRole::Target {
        // A driver that left its target behind is caught by the spec that checks
        // for it; here, only remove what is empty and unmounted (rmdir and unlink
        // refuse a mount point).
        let target = dir.join("target");
        if let Ok(m) = std::fs::symlink_metadata(&target) {
            let _ = if m.is_dir() {
                std::fs::remove_dir(&target)
            } else if m.len() == 0 {
                std::fs::remove_file(&target)
            } else {
                Ok(())
            };
        }
    }
    std::fs::remove_dir(dir).map_err(|e| {
        Failure::new(
            format!("to remove {path}"),
            format!("{e} (is something still mounted there?)"),
            RULE,
        )
    })
}
