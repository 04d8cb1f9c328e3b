//! The Node service for real: loop devices, ext4 and xfs, bind mounts and raw block
//! devices, driven through gRPC on a unix socket.
//!
//! A `harness = false` test: `main` enters a private mount namespace while the process is
//! still single-threaded (unshare affects only the calling thread), then runs the cases
//! one after another, each with its own driver and temporary directory. After every case
//! it checks that no mount, loop device or device link is left behind. Cases that need
//! root report `skipped: needs root` without it; they never pass silently.
//!
//! `cargo test -p csi-driver --test node_lifecycle -- <filter>` runs the cases whose name
//! contains `<filter>`.

mod node_common;

use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use csi_proto::v1::node_service_capability::rpc::Type as RpcType;
use csi_proto::v1::volume_capability::access_mode::Mode;
use csi_proto::v1::*;
use futures::future::BoxFuture;
use futures::FutureExt;
use node_common::*;
use tonic::Code;

/// One case: its name (a sentence), whether it needs root, the node tools it needs
/// beyond [`EXT4_TOOLS`], and its body.
struct Case {
    name: &'static str,
    needs_root: bool,
    tools: &'static [&'static str],
    run: fn(Env) -> BoxFuture<'static, Result<()>>,
}

/// What every root case runs through the driver: loop devices, probing, ext4.
const EXT4_TOOLS: &[&str] = &["losetup", "blkid", "mkfs.ext4", "e2fsck", "resize2fs"];
/// What the xfs cases run besides (Debian's xfsprogs).
const XFS: &[&str] = &["mkfs.xfs", "xfs_growfs"];

macro_rules! cases {
    (@tools) => { &[] };
    (@tools $tools:ident) => { $tools };
    ($($root:literal $name:ident $(needs $tools:ident)?),* $(,)?) => {
        vec![$(Case {
            name: stringify!($name),
            needs_root: $root,
            tools: cases!(@tools $($tools)?),
            run: |env| Box::pin($name(env)),
        }),*]
    };
}

/// Whether `tool` can be run: on PATH, or in the sbin folders a root shell has.
fn installed(tool: &str) -> bool {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin"].map(PathBuf::from))
        .any(|dir| dir.join(tool).is_file())
}

/// The first tool a case needs that is not installed.
fn missing_tool(case: &Case) -> Option<&'static str> {
    EXT4_TOOLS
        .iter()
        .chain(case.tools)
        .copied()
        .find(|tool| !installed(tool))
}

fn all_cases() -> Vec<Case> {
    cases![
        false node_info_reports_id_limit_and_region,
        false capabilities_advertise_what_is_implemented,
        false missing_fields_are_invalid_argument,
        false hostile_paths_are_invalid_argument,
        false unknown_volume_is_not_found,
        false publish_without_staging_path_is_failed_precondition,
        true mount_lifecycle_ext4_keeps_data_across_restage,
        true mount_lifecycle_xfs_keeps_data_across_restage needs XFS,
        true block_lifecycle_keeps_data_across_restage,
        true every_call_is_idempotent,
        true staging_differently_is_already_exists needs XFS,
        true a_device_holding_data_is_never_formatted needs XFS,
        true a_second_target_follows_the_access_mode,
        true same_target_with_other_arguments_is_already_exists,
        true readonly_publish_is_read_only,
        true publish_of_an_unstaged_volume_is_failed_precondition,
        true symlinks_and_missing_parents_are_refused_without_side_effects,
        true volume_stats_report_usage_and_condition,
        true xfs_expands_online needs XFS,
        true ext4_online_expansion_never_reports_false_success,
        true ext4_grows_offline_when_staged_again,
        true block_expansion_reports_the_device_size,
        true state_survives_a_driver_restart,
        true unstage_while_published_is_refused,
        true digitalocean_stage_waits_for_the_device_link,
        true a_concurrent_operation_on_the_volume_is_aborted,
        true a_volume_deleted_while_staged_can_still_be_unstaged,
        true a_mount_that_vanishes_takes_its_loop_device_with_it,
        true a_raw_block_staging_is_recorded_and_conflicts_both_ways needs XFS,
        true a_raw_block_publish_needs_the_staging_record,
        true unstaging_a_raw_block_volume_leaves_nothing_behind,
        true a_raw_block_device_stays_attached_when_it_is_opened_and_closed,
        true a_stage_that_fails_detaches_the_loop_device_it_attached needs XFS,
        true a_driver_that_owns_its_cloud_releases_unused_loop_devices_when_it_stops,
        true a_node_only_driver_leaves_loop_devices_alone_when_it_stops,
    ]
}

fn main() -> ExitCode {
    let filter: Option<String> = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    if std::env::args().any(|a| a == "--list") {
        for case in all_cases() {
            println!("{}: test", case.name);
        }
        return ExitCode::SUCCESS;
    }
    let cases: Vec<Case> = all_cases()
        .into_iter()
        .filter(|c| filter.as_ref().is_none_or(|f| c.name.contains(f.as_str())))
        .collect();
    let root = nix::unistd::geteuid().is_root();
    // Before any thread exists: a private mount namespace, so that whatever a failed case
    // leaves mounted vanishes with this process.
    let namespace = if root {
        enter_private_mount_namespace()
    } else {
        Err("needs root".to_string())
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start tokio: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!("\nrunning {} node cases", cases.len());
    let (mut passed, mut failed, mut skipped) = (0, 0, 0);
    let mut failures = Vec::new();
    let mut missing = std::collections::BTreeSet::new();
    for case in &cases {
        if case.needs_root {
            if let Err(why) = &namespace {
                println!("test {} ... skipped: {why}", case.name);
                skipped += 1;
                continue;
            }
            if let Some(tool) = missing_tool(case) {
                // Outside CI a missing node tool is a skip that names it; CI installs
                // every tool (.ci/run), so there it is a failure.
                if std::env::var_os("CI").is_some() {
                    println!("test {} ... FAILED", case.name);
                    failures.push((
                        case.name,
                        anyhow::anyhow!(
                            "{tool} is not installed, and CI is set (.ci/run installs it)"
                        ),
                    ));
                    failed += 1;
                } else {
                    println!("test {} ... skipped: needs {tool}", case.name);
                    skipped += 1;
                    missing.insert(tool);
                }
                continue;
            }
        }
        let outcome = runtime.block_on(run_case(case));
        match outcome {
            Ok(()) => {
                println!("test {} ... ok", case.name);
                passed += 1;
            }
            Err(e) => {
                println!("test {} ... FAILED", case.name);
                failures.push((case.name, e));
                failed += 1;
            }
        }
    }
    for (name, e) in &failures {
        println!("\n---- {name} ----\n{e:#}");
    }
    let why = match (namespace.is_err(), missing.is_empty()) {
        (true, _) => " (skipped cases need root)".to_string(),
        (false, false) => format!(
            " (skipped cases need {}; install xfsprogs/e2fsprogs)",
            missing.into_iter().collect::<Vec<_>>().join(", ")
        ),
        (false, true) => String::new(),
    };
    println!("\nnode_lifecycle: {passed} passed, {failed} failed, {skipped} skipped{why}");
    if failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn enter_private_mount_namespace() -> Result<(), String> {
    use nix::mount::{mount, MsFlags};
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS)
        .map_err(|e| format!("cannot create a mount namespace: {e}"))?;
    mount::<str, str, str, str>(None, "/", None, MsFlags::MS_REC | MsFlags::MS_PRIVATE, None)
        .map_err(|e| format!("cannot make / private: {e}"))
}

/// Run one case with a fresh driver, then check (and force) that nothing is left behind.
async fn run_case(case: &Case) -> Result<()> {
    let env = Env::start().await?;
    let dir = env.dir.clone();
    let result = tokio::time::timeout(
        Duration::from_secs(180),
        std::panic::AssertUnwindSafe((case.run)(env)).catch_unwind(),
    )
    .await;
    let result = match result {
        Err(_) => Err(anyhow::anyhow!("timed out after 180 s")),
        Ok(Err(panic)) => Err(anyhow::anyhow!(
            "panicked: {}",
            panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default()
        )),
        Ok(Ok(r)) => r,
    };
    settle().await;
    let left = leftovers(dir.path())?;
    if !left.is_empty() {
        force_clean(dir.path());
    }
    match (result, left.is_empty()) {
        (Ok(()), true) => Ok(()),
        (Ok(()), false) => bail!("left behind: {}", left.join("; ")),
        (Err(e), true) => Err(e),
        (Err(e), false) => Err(e.context(format!("(and left behind: {})", left.join("; ")))),
    }
}

// ---- Cases without mounts ----

async fn node_info_reports_id_limit_and_region(env: Env) -> Result<()> {
    let info = env
        .client
        .clone()
        .node_get_info(NodeGetInfoRequest {})
        .await?
        .into_inner();
    ensure!(info.node_id == "1", "node id {:?}", info.node_id);
    ensure!(info.max_volumes_per_node == 5);
    let topology = info.accessible_topology.context("no topology")?;
    ensure!(
        topology
            .segments
            .get(csi_driver::config::TOPOLOGY_REGION_KEY)
            == Some(&"fra1".into()),
        "{topology:?}"
    );
    Ok(())
}

async fn capabilities_advertise_what_is_implemented(env: Env) -> Result<()> {
    let caps = env
        .client
        .clone()
        .node_get_capabilities(NodeGetCapabilitiesRequest {})
        .await?
        .into_inner();
    let mut got: Vec<i32> = caps
        .capabilities
        .iter()
        .filter_map(|c| c.r#type)
        .map(|node_service_capability::Type::Rpc(rpc)| rpc.r#type)
        .collect();
    got.sort();
    let mut want = vec![
        RpcType::StageUnstageVolume as i32,
        RpcType::GetVolumeStats as i32,
        RpcType::ExpandVolume as i32,
        RpcType::VolumeCondition as i32,
        RpcType::SingleNodeMultiWriter as i32,
    ];
    want.sort();
    ensure!(got == want, "capabilities {got:?}, expected {want:?}");
    Ok(())
}

async fn missing_fields_are_invalid_argument(env: Env) -> Result<()> {
    let mut c = env.client.clone();
    let staging = env.staging("s")?;
    let target = env.target("t");
    let s = path_text(&staging);
    let t = path_text(&target);
    let invalid = Code::InvalidArgument;

    let stage = |id: &str, path: &str, cap: Option<VolumeCapability>| NodeStageVolumeRequest {
        volume_id: id.into(),
        staging_target_path: path.into(),
        volume_capability: cap,
        publish_context: publish_context(id),
        ..Default::default()
    };
    expect_code(
        "stage without id",
        c.node_stage_volume(stage("", &s, Some(ext4()))).await,
        invalid,
        "volume_id",
    )?;
    expect_code(
        "stage without path",
        c.node_stage_volume(stage("v", "", Some(ext4()))).await,
        invalid,
        "staging_target_path",
    )?;
    expect_code(
        "stage without capability",
        c.node_stage_volume(stage("v", &s, None)).await,
        invalid,
        "volume_capability",
    )?;
    let no_mode = VolumeCapability {
        access_mode: None,
        ..ext4()
    };
    expect_code(
        "stage without access mode",
        c.node_stage_volume(stage("v", &s, Some(no_mode))).await,
        invalid,
        "access_mode",
    )?;
    let no_type = VolumeCapability {
        access_type: None,
        ..ext4()
    };
    expect_code(
        "stage without access type",
        c.node_stage_volume(stage("v", &s, Some(no_type))).await,
        invalid,
        "access_type",
    )?;
    let btrfs = mount_cap("btrfs", &[], Mode::SingleNodeWriter);
    expect_code(
        "stage with btrfs",
        c.node_stage_volume(stage("v", &s, Some(btrfs))).await,
        invalid,
        "fs_type",
    )?;
    let bind = mount_cap("ext4", &["bind"], Mode::SingleNodeWriter);
    expect_code(
        "stage with a bind flag",
        c.node_stage_volume(stage("v", &s, Some(bind))).await,
        invalid,
        "mount_flags",
    )?;

    expect_code(
        "unstage without id",
        env.unstage("", &staging).await,
        invalid,
        "volume_id",
    )?;
    expect_code(
        "unstage without path",
        env.unstage("v", Path::new("")).await,
        invalid,
        "staging_target_path",
    )?;

    let publish =
        |id: &str, target: &str, cap: Option<VolumeCapability>| NodePublishVolumeRequest {
            volume_id: id.into(),
            staging_target_path: s.clone(),
            target_path: target.into(),
            volume_capability: cap,
            ..Default::default()
        };
    expect_code(
        "publish without id",
        c.node_publish_volume(publish("", &t, Some(ext4()))).await,
        invalid,
        "volume_id",
    )?;
    expect_code(
        "publish without target",
        c.node_publish_volume(publish("v", "", Some(ext4()))).await,
        invalid,
        "target_path",
    )?;
    expect_code(
        "publish without capability",
        c.node_publish_volume(publish("v", &t, None)).await,
        invalid,
        "volume_capability",
    )?;

    expect_code(
        "unpublish without id",
        env.unpublish("", &target).await,
        invalid,
        "volume_id",
    )?;
    expect_code(
        "unpublish without target",
        env.unpublish("v", Path::new("")).await,
        invalid,
        "target_path",
    )?;

    expect_code(
        "stats without id",
        env.stats("", &target).await,
        invalid,
        "volume_id",
    )?;
    expect_code(
        "stats without path",
        env.stats("v", Path::new("")).await,
        invalid,
        "volume_path",
    )?;
    expect_code(
        "expand without id",
        env.expand("", &target, 0).await,
        invalid,
        "volume_id",
    )?;
    expect_code(
        "expand without path",
        env.expand("v", Path::new(""), 0).await,
        invalid,
        "volume_path",
    )?;
    ensure!(!target.exists(), "a failed call created the target");
    Ok(())
}

async fn hostile_paths_are_invalid_argument(env: Env) -> Result<()> {
    env.image("v", 64 * MIB)?;
    let staging = env.staging("s")?;
    let long = format!("/tmp/{}", "a".repeat(5000));
    let hostile = [
        "relative/target",
        "/tmp/../etc/target",
        "/tmp/./target",
        "/",
        "/proc",
        "/proc/self/root",
        "/sys/kernel/target",
        "/dev",
        "/tmp/nul\0byte",
        long.as_str(),
    ];
    for path in hostile {
        let shown: String = path.chars().take(40).collect();
        let p = Path::new(path);
        expect_code(
            &format!("publish at {shown:?}"),
            env.publish("v", &staging, p, ext4(), false).await,
            Code::InvalidArgument,
            "target_path",
        )?;
        expect_code(
            &format!("unpublish at {shown:?}"),
            env.unpublish("v", p).await,
            Code::InvalidArgument,
            "target_path",
        )?;
        expect_code(
            &format!("stage at {shown:?}"),
            env.stage("v", p, ext4()).await,
            Code::InvalidArgument,
            "staging_target_path",
        )?;
        expect_code(
            &format!("unstage at {shown:?}"),
            env.unstage("v", p).await,
            Code::InvalidArgument,
            "staging_target_path",
        )?;
        // NodeGetVolumeStats only reads: no volume can be at a relative path, so the
        // answer is NOT_FOUND ("volume does not exist on the specified path"), as the Go
        // csi-sanity expects for "some/path". Other hostile paths stay refused.
        let (code, says) = if p.is_relative() {
            (Code::NotFound, "relative path holds no volume")
        } else {
            (Code::InvalidArgument, "volume_path")
        };
        expect_code(
            &format!("stats at {shown:?}"),
            env.stats("v", p).await,
            code,
            says,
        )?;
        expect_code(
            &format!("expand at {shown:?}"),
            env.expand("v", p, 0).await,
            Code::InvalidArgument,
            "volume_path",
        )?;
    }
    // A symlinked parent that leads into /proc is refused after resolution.
    std::os::unix::fs::symlink("/proc/self", env.root().join("into-proc"))?;
    let sneaky = env.root().join("into-proc/target");
    expect_code(
        "publish through a link into /proc",
        env.publish("v", &staging, &sneaky, ext4(), false).await,
        Code::InvalidArgument,
        "under /proc",
    )?;
    Ok(())
}

async fn unknown_volume_is_not_found(env: Env) -> Result<()> {
    let staging = env.staging("s")?;
    let target = env.target("t");
    expect_code(
        "stage",
        env.stage("ghost", &staging, ext4()).await,
        Code::NotFound,
        "no image at",
    )?;
    expect_code(
        "unstage",
        env.unstage("ghost", &staging).await,
        Code::NotFound,
        "ghost",
    )?;
    expect_code(
        "stats",
        env.stats("ghost", &target).await,
        Code::NotFound,
        "ghost",
    )?;
    expect_code(
        "expand",
        env.expand("ghost", &target, 0).await,
        Code::NotFound,
        "ghost",
    )?;
    // spec error table: an unknown volume is NOT_FOUND for unpublish too.
    expect_code(
        "unpublish",
        env.unpublish("ghost", &target).await,
        Code::NotFound,
        "ghost",
    )?;
    // A known volume that is not published at a target that does not exist: OK.
    env.image("known", 64 * MIB)?;
    expect_ok(
        "unpublish of nothing",
        env.unpublish("known", &target).await,
    )?;
    ensure!(leftovers(env.root())?.is_empty());
    Ok(())
}

async fn publish_without_staging_path_is_failed_precondition(env: Env) -> Result<()> {
    env.image("v", 64 * MIB)?;
    let target = env.target("t");
    expect_code(
        "publish",
        env.publish("v", Path::new(""), &target, ext4(), false)
            .await,
        Code::FailedPrecondition,
        "staging_target_path",
    )?;
    ensure!(!target.exists());
    Ok(())
}

// ---- Lifecycles ----

async fn mount_lifecycle(env: &Env, capability: VolumeCapability, size: u64) -> Result<()> {
    env.image("v", size)?;
    let staging = env.staging("s")?;
    let target = env.target("t");
    env.stage_and_publish("v", &staging, &target, capability.clone())
        .await?;
    ensure!(target.is_dir(), "the target directory was not created");
    std::fs::write(target.join("hello.txt"), b"kept across restage")?;
    env.unpublish_and_unstage("v", &staging, &target).await?;
    ensure!(!target.exists(), "unpublish left the target path");
    ensure!(
        staging.is_dir(),
        "unstage removed the CO's staging directory"
    );
    let left = leftovers(env.root())?;
    ensure!(left.is_empty(), "after unstage: {left:?}");

    env.stage_and_publish("v", &staging, &target, capability)
        .await?;
    let data = std::fs::read(target.join("hello.txt")).context("reading back")?;
    ensure!(data == b"kept across restage", "data changed: {data:?}");
    env.unpublish_and_unstage("v", &staging, &target).await
}

async fn mount_lifecycle_ext4_keeps_data_across_restage(env: Env) -> Result<()> {
    mount_lifecycle(&env, ext4(), 64 * MIB).await?;
    let fs = signature(&env.image_path("v"))?;
    ensure!(fs == "ext4", "image holds {fs:?}");
    Ok(())
}

async fn mount_lifecycle_xfs_keeps_data_across_restage(env: Env) -> Result<()> {
    mount_lifecycle(&env, xfs(), 512 * MIB).await?;
    let fs = signature(&env.image_path("v"))?;
    ensure!(fs == "xfs", "image holds {fs:?}");
    Ok(())
}

async fn block_lifecycle_keeps_data_across_restage(env: Env) -> Result<()> {
    env.image("v", 64 * MIB)?;
    let staging = env.staging("s")?;
    let target = env.target("t");
    let cap = block_cap(Mode::SingleNodeWriter);
    env.stage("v", &staging, cap.clone()).await?;
    // Staging mounts nothing from the device: it binds the device node onto its record.
    let record = record_in(&staging)?;
    ensure!(
        mounts_under(env.root())? == [record.clone()],
        "block staging must bind only its record: {:?}",
        mounts_under(env.root())?
    );
    ensure!(
        std::fs::metadata(&record)?.file_type().is_block_device(),
        "the record is not the device node"
    );
    env.publish("v", &staging, &target, cap.clone(), false)
        .await?;
    let pattern: Vec<u8> = (0..4096u32).map(|i| (i % 251) as u8).collect();
    {
        let mut device = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&target)
            .context("opening the published block device")?;
        device.seek(SeekFrom::Start(MIB))?;
        device.write_all(&pattern)?;
        device.sync_all()?;
    }
    env.unpublish_and_unstage("v", &staging, &target).await?;
    ensure!(!target.exists(), "unpublish left the target file");
    ensure!(
        std::fs::read_dir(&staging)?.next().is_none(),
        "unstage left something in the staging directory"
    );
    ensure!(leftovers(env.root())?.is_empty());

    env.stage_and_publish("v", &staging, &target, cap).await?;
    let mut back = vec![0u8; 4096];
    {
        let mut device = std::fs::File::open(&target)?;
        device.seek(SeekFrom::Start(MIB))?;
        device.read_exact(&mut back)?;
    }
    ensure!(back == pattern, "block data changed across restage");
    env.unpublish_and_unstage("v", &staging, &target).await?;
    // The image holds the bytes: nothing was formatted.
    let mut image = vec![0u8; 4096];
    std::fs::File::open(env.image_path("v"))?.read_exact_at(&mut image, MIB)?;
    ensure!(image == pattern, "the bytes are not in the image");
    Ok(())
}

async fn every_call_is_idempotent(env: Env) -> Result<()> {
    for (id, cap, size) in [
        ("m", ext4(), 64 * MIB),
        ("b", block_cap(Mode::SingleNodeWriter), 64 * MIB),
    ] {
        env.image(id, size)?;
        let staging = env.staging(id)?;
        let target = env.target(id);
        for round in 0..3 {
            expect_ok(
                &format!("{id}: stage #{round}"),
                env.stage(id, &staging, cap.clone()).await,
            )?;
        }
        for round in 0..3 {
            expect_ok(
                &format!("{id}: publish #{round}"),
                env.publish(id, &staging, &target, cap.clone(), false).await,
            )?;
        }
        let stacked = mounts_under(env.root())?
            .iter()
            .filter(|m| m.ends_with(format!("targets/{id}")))
            .count();
        ensure!(stacked == 1, "{id}: {stacked} mounts at the target");
        for round in 0..3 {
            expect_ok(
                &format!("{id}: unpublish #{round}"),
                env.unpublish(id, &target).await,
            )?;
        }
        for round in 0..3 {
            expect_ok(
                &format!("{id}: unstage #{round}"),
                env.unstage(id, &staging).await,
            )?;
        }
        let left = leftovers(env.root())?;
        ensure!(left.is_empty(), "{id}: {left:?}");
    }
    Ok(())
}

async fn staging_differently_is_already_exists(env: Env) -> Result<()> {
    env.image("v", 512 * MIB)?;
    env.image("w", 64 * MIB)?;
    let staging = env.staging("s")?;
    env.stage("v", &staging, ext4()).await?;
    expect_code(
        "other fs type",
        env.stage("v", &staging, xfs()).await,
        Code::AlreadyExists,
        "already holds",
    )?;
    let noexec = mount_cap("ext4", &["noexec"], Mode::SingleNodeWriter);
    expect_code(
        "other flags",
        env.stage("v", &staging, noexec).await,
        Code::AlreadyExists,
        "already holds",
    )?;
    expect_code(
        "other volume",
        env.stage("w", &staging, ext4()).await,
        Code::AlreadyExists,
        "already holds",
    )?;
    // The failed stage of w attached nothing that stays.
    ensure!(
        loops_of(&env.image_path("w"))?.is_empty(),
        "w's loop device stayed attached"
    );
    expect_ok("same again", env.stage("v", &staging, ext4()).await)?;
    let block = block_cap(Mode::SingleNodeWriter);
    expect_code(
        "raw block now",
        env.stage("v", &staging, block.clone()).await,
        Code::AlreadyExists,
        "already holds",
    )?;
    env.unstage("v", &staging).await?;

    // Staged and published as a raw block device, then asked for as a filesystem.
    let target = env.target("t");
    env.stage_and_publish("v", &staging, &target, block).await?;
    expect_code(
        "filesystem now",
        env.stage("v", &staging, ext4()).await,
        Code::AlreadyExists,
        "raw block",
    )?;
    let fs = signature(&env.image_path("v"))?;
    ensure!(fs == "ext4", "the device was touched: {fs:?}");
    env.unpublish_and_unstage("v", &staging, &target).await?;

    // Flags are honoured, and the same flags again are the same staging.
    let flags = mount_cap("ext4", &["noatime", "nosuid,nodev"], Mode::SingleNodeWriter);
    env.stage("v", &staging, flags.clone()).await?;
    let table = csi_driver::mount::mountinfo::MountTable::read()?;
    let entry = table
        .at(&staging.canonicalize()?)
        .context("nothing at the staging path")?;
    for flag in ["noatime", "nosuid", "nodev"] {
        ensure!(
            entry.mount_options.iter().any(|o| o == flag),
            "{flag} missing from {:?}",
            entry.mount_options
        );
    }
    expect_ok("same flags again", env.stage("v", &staging, flags).await)?;
    env.unstage("v", &staging).await?;
    Ok(())
}

async fn a_device_holding_data_is_never_formatted(env: Env) -> Result<()> {
    // An xfs volume asked for as ext4.
    let image = env.image("x", 512 * MIB)?;
    run("mkfs.xfs", &["-q", &path_text(&image)])?;
    let staging = env.staging("s")?;
    expect_code(
        "ext4 over xfs",
        env.stage("x", &staging, ext4()).await,
        Code::FailedPrecondition,
        "holds a xfs filesystem",
    )?;
    let fs = signature(&image)?;
    ensure!(fs == "xfs", "the xfs filesystem was touched: {fs:?}");
    ensure!(
        leftovers(env.root())?.is_empty(),
        "a failed stage left {:?}",
        leftovers(env.root())?
    );

    // A disk with a partition table (an MBR with one Linux partition).
    let image = env.image("p", 64 * MIB)?;
    let mut mbr = [0u8; 512];
    mbr[446 + 4] = 0x83;
    mbr[446 + 8..446 + 12].copy_from_slice(&2048u32.to_le_bytes());
    mbr[446 + 12..446 + 16].copy_from_slice(&4096u32.to_le_bytes());
    mbr[510] = 0x55;
    mbr[511] = 0xAA;
    std::fs::OpenOptions::new()
        .write(true)
        .open(&image)?
        .write_all_at(&mbr, 0)?;
    expect_code(
        "ext4 over a partition table",
        env.stage("p", &staging, ext4()).await,
        Code::FailedPrecondition,
        "partition table",
    )?;
    let mut first = [0u8; 512];
    std::fs::File::open(&image)?.read_exact_at(&mut first, 0)?;
    ensure!(first == mbr, "the partition table was overwritten");
    ensure!(leftovers(env.root())?.is_empty());
    Ok(())
}

async fn a_second_target_follows_the_access_mode(env: Env) -> Result<()> {
    env.image("v", 64 * MIB)?;
    let staging = env.staging("s")?;
    let (one, two) = (env.target("one"), env.target("two"));
    for mode in [
        Mode::SingleNodeWriter,
        Mode::SingleNodeSingleWriter,
        Mode::SingleNodeReaderOnly,
    ] {
        let cap = mount_cap("ext4", &[], mode);
        env.stage("v", &staging, cap.clone()).await?;
        env.publish("v", &staging, &one, cap.clone(), false).await?;
        expect_code(
            &format!("{mode:?} second target"),
            env.publish("v", &staging, &two, cap.clone(), false).await,
            Code::FailedPrecondition,
            &path_text(&one.canonicalize()?),
        )?;
        ensure!(!two.exists(), "a refused publish created the target");
        env.unpublish_and_unstage("v", &staging, &one).await?;
    }
    let multi = mount_cap("ext4", &[], Mode::SingleNodeMultiWriter);
    env.stage("v", &staging, multi.clone()).await?;
    env.publish("v", &staging, &one, multi.clone(), false)
        .await?;
    expect_ok(
        "multi-writer second target",
        env.publish("v", &staging, &two, multi.clone(), false).await,
    )?;
    std::fs::write(one.join("shared"), b"both see it")?;
    ensure!(std::fs::read(two.join("shared"))? == b"both see it");
    env.unpublish("v", &two).await?;
    env.unpublish_and_unstage("v", &staging, &one).await?;

    // Raw block: the same rule, judged from the device's bind mounts.
    let block = block_cap(Mode::SingleNodeWriter);
    env.stage("v", &staging, block.clone()).await?;
    env.publish("v", &staging, &one, block.clone(), false)
        .await?;
    expect_code(
        "block second target",
        env.publish("v", &staging, &two, block, false).await,
        Code::FailedPrecondition,
        "already published",
    )?;
    let multi_block = block_cap(Mode::SingleNodeMultiWriter);
    expect_ok(
        "block multi-writer second target",
        env.publish("v", &staging, &two, multi_block, false).await,
    )?;
    env.unpublish("v", &two).await?;
    env.unpublish_and_unstage("v", &staging, &one).await
}

async fn same_target_with_other_arguments_is_already_exists(env: Env) -> Result<()> {
    let (staging, target) = published_ext4(&env).await?;
    expect_code(
        "readonly now",
        env.publish("v", &staging, &target, ext4(), true).await,
        Code::AlreadyExists,
        "already holds",
    )?;
    let noexec = mount_cap("ext4", &["noexec"], Mode::SingleNodeWriter);
    expect_code(
        "other flags",
        env.publish("v", &staging, &target, noexec, false).await,
        Code::AlreadyExists,
        "already holds",
    )?;
    expect_code(
        "block now",
        env.publish(
            "v",
            &staging,
            &target,
            block_cap(Mode::SingleNodeWriter),
            false,
        )
        .await,
        Code::FailedPrecondition,
        "in use",
    )?;
    expect_ok(
        "same again",
        env.publish("v", &staging, &target, ext4(), false).await,
    )?;
    env.unpublish_and_unstage("v", &staging, &target).await
}

async fn readonly_publish_is_read_only(env: Env) -> Result<()> {
    env.image("v", 64 * MIB)?;
    let staging = env.staging("s")?;
    let (rw, ro) = (env.target("rw"), env.target("ro"));
    let cap = mount_cap("ext4", &[], Mode::SingleNodeMultiWriter);
    env.stage("v", &staging, cap.clone()).await?;
    env.publish("v", &staging, &ro, cap.clone(), true).await?;
    env.publish("v", &staging, &rw, cap.clone(), false).await?;
    let err = std::fs::write(ro.join("nope"), b"x").expect_err("wrote through a readonly publish");
    ensure!(err.raw_os_error() == Some(libc::EROFS), "{err}");
    std::fs::write(rw.join("yes"), b"x")?;
    ensure!(
        ro.join("yes").exists(),
        "the readonly target does not show the volume"
    );
    expect_ok(
        "readonly again",
        env.publish("v", &staging, &ro, cap, true).await,
    )?;
    env.unpublish("v", &ro).await?;
    env.unpublish_and_unstage("v", &staging, &rw).await
}

async fn publish_of_an_unstaged_volume_is_failed_precondition(env: Env) -> Result<()> {
    env.image("v", 64 * MIB)?;
    let staging = env.staging("s")?;
    let target = env.target("t");
    expect_code(
        "mount publish",
        env.publish("v", &staging, &target, ext4(), false).await,
        Code::FailedPrecondition,
        "not staged",
    )?;
    expect_code(
        "block publish",
        env.publish(
            "v",
            &staging,
            &target,
            block_cap(Mode::SingleNodeWriter),
            false,
        )
        .await,
        Code::FailedPrecondition,
        "not staged",
    )?;
    ensure!(!target.exists(), "a refused publish created the target");
    Ok(())
}

async fn symlinks_and_missing_parents_are_refused_without_side_effects(env: Env) -> Result<()> {
    env.image("v", 64 * MIB)?;
    let staging = env.staging("s")?;
    env.stage("v", &staging, ext4()).await?;
    let victim = env.root().join("victim");
    std::fs::create_dir(&victim)?;
    std::fs::write(victim.join("precious"), b"keep")?;

    // Target whose final component is a symlink to somewhere else.
    let link = env.target("link");
    std::os::unix::fs::symlink(&victim, &link)?;
    expect_code(
        "publish onto a symlink",
        env.publish("v", &staging, &link, ext4(), false).await,
        Code::InvalidArgument,
        "symlink",
    )?;
    expect_code(
        "unpublish of a symlink",
        env.unpublish("v", &link).await,
        Code::InvalidArgument,
        "symlink",
    )?;
    ensure!(
        std::fs::symlink_metadata(&link)?.file_type().is_symlink(),
        "the symlink was removed"
    );
    ensure!(victim.join("precious").exists(), "the victim lost its file");
    ensure!(
        mounts_under(&victim)?.is_empty(),
        "something was mounted on the victim"
    );

    // Block target as a symlink to a file elsewhere.
    let victim_file = env.root().join("victim-file");
    std::fs::write(&victim_file, b"keep")?;
    let file_link = env.target("file-link");
    std::os::unix::fs::symlink(&victim_file, &file_link)?;
    env.unstage("v", &staging).await?;
    env.stage("v", &staging, block_cap(Mode::SingleNodeWriter))
        .await?;
    expect_code(
        "block publish onto a symlink",
        env.publish(
            "v",
            &staging,
            &file_link,
            block_cap(Mode::SingleNodeWriter),
            false,
        )
        .await,
        Code::InvalidArgument,
        "symlink",
    )?;
    ensure!(std::fs::read(&victim_file)? == b"keep");

    // A parent that does not exist: the node creates only the final component.
    let deep = env.root().join("targets/missing/parent/t");
    expect_code(
        "publish under a missing parent",
        env.publish(
            "v",
            &staging,
            &deep,
            block_cap(Mode::SingleNodeWriter),
            false,
        )
        .await,
        Code::FailedPrecondition,
        "parent directory does not exist",
    )?;
    ensure!(
        !env.root().join("targets/missing").exists(),
        "parents were created"
    );
    expect_ok(
        "unpublish under a missing parent",
        env.unpublish("v", &deep).await,
    )?;

    // A staging path that is a symlink.
    env.unstage("v", &staging).await?;
    let staging_link = env.root().join("staging/link");
    std::os::unix::fs::symlink(&victim, &staging_link)?;
    expect_code(
        "stage onto a symlink",
        env.stage("v", &staging_link, ext4()).await,
        Code::InvalidArgument,
        "symlink",
    )?;
    ensure!(mounts_under(&victim)?.is_empty());
    // A target that is an existing non-empty directory is not covered.
    env.stage("v", &staging, ext4()).await?;
    expect_code(
        "publish onto a non-empty directory",
        env.publish("v", &staging, &victim, ext4(), false).await,
        Code::FailedPrecondition,
        "not empty",
    )?;
    ensure!(victim.join("precious").exists());
    env.unstage("v", &staging).await?;
    Ok(())
}

async fn volume_stats_report_usage_and_condition(env: Env) -> Result<()> {
    env.image("v", 64 * MIB)?;
    env.image("b", 32 * MIB)?;
    let staging = env.staging("s")?;
    let target = env.target("t");
    env.stage_and_publish("v", &staging, &target, ext4())
        .await?;
    std::fs::write(target.join("data"), vec![7u8; 4 * MIB as usize])?;
    nix::unistd::sync();
    let stats = expect_ok("stats", env.stats("v", &target).await)?;
    let bytes = usage(&stats, volume_usage::Unit::Bytes).context("no bytes")?;
    let inodes = usage(&stats, volume_usage::Unit::Inodes).context("no inodes")?;
    ensure!(
        bytes.total > 32 * MIB as i64 && bytes.total <= 64 * MIB as i64,
        "{bytes:?}"
    );
    ensure!(bytes.used >= 4 * MIB as i64, "{bytes:?}");
    ensure!(
        bytes.available > 0 && bytes.available < bytes.total,
        "{bytes:?}"
    );
    ensure!(inodes.total > 0 && inodes.used > 0, "{inodes:?}");
    let condition = stats.volume_condition.context("no condition")?;
    ensure!(!condition.abnormal, "{condition:?}");
    // The staging path is a volume too.
    expect_ok("stats at staging", env.stats("v", &staging).await)?;

    expect_code(
        "a path that does not exist",
        env.stats("v", &env.target("nothing")).await,
        Code::NotFound,
        "does not exist",
    )?;
    let plain = env.root().join("plain");
    std::fs::create_dir(&plain)?;
    expect_code(
        "a directory that is not a mount",
        env.stats("v", &plain).await,
        Code::NotFound,
        "not a mount point",
    )?;
    expect_code(
        "another volume's path",
        env.stats("b", &target).await,
        Code::NotFound,
        "not volume b",
    )?;

    // The filesystem turns read-only under a read-write publish: abnormal.
    nix::mount::mount::<str, Path, str, str>(
        None,
        &staging,
        None,
        nix::mount::MsFlags::MS_REMOUNT | nix::mount::MsFlags::MS_RDONLY,
        None,
    )?;
    let stats = expect_ok("stats after remount", env.stats("v", &target).await)?;
    let condition = stats.volume_condition.context("no condition")?;
    ensure!(
        condition.abnormal && condition.message.contains("read-only"),
        "{condition:?}"
    );
    env.unpublish("v", &target).await?;
    expect_ok(
        "unstage of a read-only filesystem",
        env.unstage("v", &staging).await,
    )?;

    // Raw block: the device's size.
    let block = block_cap(Mode::SingleNodeWriter);
    env.stage_and_publish("b", &staging, &target, block).await?;
    let stats = expect_ok("block stats", env.stats("b", &target).await)?;
    let bytes = usage(&stats, volume_usage::Unit::Bytes).context("no bytes")?;
    ensure!(bytes.total == 32 * MIB as i64, "{bytes:?}");
    ensure!(!stats.volume_condition.context("no condition")?.abnormal);
    env.unpublish_and_unstage("b", &staging, &target).await
}

async fn xfs_expands_online(env: Env) -> Result<()> {
    env.image("v", 512 * MIB)?;
    let staging = env.staging("s")?;
    let target = env.target("t");
    env.stage_and_publish("v", &staging, &target, xfs()).await?;
    std::fs::write(target.join("before"), b"grown around me")?;
    let before = statvfs_total(&target)?;
    env.grow_image("v", 1024 * MIB)?;
    let capacity = expect_ok("expand", env.expand("v", &target, 1024 * MIB).await)?;
    ensure!(capacity == 1024 * MIB as i64, "capacity {capacity}");
    let after = statvfs_total(&target)?;
    ensure!(after > before + 400 * MIB, "statvfs {before} → {after}");
    ensure!(std::fs::read(target.join("before"))? == b"grown around me");
    // Again: nothing left to grow, same answer.
    let again = expect_ok("expand again", env.expand("v", &target, 1024 * MIB).await)?;
    ensure!(again == capacity);
    // Asking for more than the device has is refused, not faked.
    expect_code(
        "expand beyond the device",
        env.expand("v", &target, 2048 * MIB).await,
        Code::FailedPrecondition,
        "less than",
    )?;
    env.unpublish_and_unstage("v", &staging, &target).await
}

async fn ext4_online_expansion_never_reports_false_success(env: Env) -> Result<()> {
    let (staging, target) = published_ext4(&env).await?;
    let before = statvfs_total(&target)?;
    env.grow_image("v", 128 * MIB)?;
    match env.expand("v", &target, 128 * MIB).await {
        // Where resize2fs may grow a mounted ext4 (CAP_SYS_RESOURCE), it must really grow.
        Ok(capacity) => {
            let after = statvfs_total(&target)?;
            ensure!(
                capacity == 128 * MIB as i64 && after > before,
                "OK without growth: {before} → {after}"
            );
        }
        Err(status) => {
            ensure!(status.code() == Code::FailedPrecondition, "{status:?}");
            ensure!(
                status.message().contains("resize2fs"),
                "{}",
                status.message()
            );
            ensure!(statvfs_total(&target)? == before);
        }
    }
    env.unpublish_and_unstage("v", &staging, &target).await
}

async fn ext4_grows_offline_when_staged_again(env: Env) -> Result<()> {
    let (staging, target) = published_ext4(&env).await?;
    std::fs::write(target.join("data"), b"survives offline growth")?;
    let before = statvfs_total(&target)?;
    env.unpublish_and_unstage("v", &staging, &target).await?;
    // The controller grows the volume while it is unstaged.
    env.grow_image("v", 256 * MIB)?;
    env.stage_and_publish("v", &staging, &target, ext4())
        .await?;
    let after = statvfs_total(&target)?;
    ensure!(after > before + 150 * MIB, "statvfs {before} → {after}");
    ensure!(std::fs::read(target.join("data"))? == b"survives offline growth");
    let capacity = expect_ok(
        "expand after offline growth",
        env.expand("v", &target, 256 * MIB).await,
    )?;
    ensure!(capacity == 256 * MIB as i64, "capacity {capacity}");
    env.unpublish_and_unstage("v", &staging, &target).await
}

async fn block_expansion_reports_the_device_size(env: Env) -> Result<()> {
    env.image("v", 64 * MIB)?;
    let staging = env.staging("s")?;
    let target = env.target("t");
    let cap = block_cap(Mode::SingleNodeWriter);
    env.stage_and_publish("v", &staging, &target, cap).await?;
    env.grow_image("v", 96 * MIB)?;
    let capacity = expect_ok("expand", env.expand("v", &target, 96 * MIB).await)?;
    ensure!(capacity == 96 * MIB as i64, "capacity {capacity}");
    let len = std::fs::File::open(&target)?.seek(SeekFrom::End(0))?;
    ensure!(len == 96 * MIB, "the device shows {len} bytes");
    env.unpublish_and_unstage("v", &staging, &target).await
}

async fn state_survives_a_driver_restart(env: Env) -> Result<()> {
    env.image("v", 64 * MIB)?;
    let staging = env.staging("s")?;
    let (one, two) = (env.target("one"), env.target("two"));
    env.stage_and_publish("v", &staging, &one, ext4()).await?;
    let env = env.restart().await?;
    expect_ok(
        "stage after restart",
        env.stage("v", &staging, ext4()).await,
    )?;
    expect_ok(
        "publish after restart",
        env.publish("v", &staging, &one, ext4(), false).await,
    )?;
    expect_code(
        "second target after restart",
        env.publish("v", &staging, &two, ext4(), false).await,
        Code::FailedPrecondition,
        "already published",
    )?;
    expect_code(
        "readonly after restart",
        env.publish("v", &staging, &one, ext4(), true).await,
        Code::AlreadyExists,
        "already holds",
    )?;
    env.unpublish_and_unstage("v", &staging, &one).await
}

async fn unstage_while_published_is_refused(env: Env) -> Result<()> {
    let (staging, target) = published_ext4(&env).await?;
    expect_code(
        "unstage while published",
        env.unstage("v", &staging).await,
        Code::FailedPrecondition,
        "in use",
    )?;
    std::fs::write(target.join("still"), b"here")?;
    env.unpublish_and_unstage("v", &staging, &target).await?;

    let block = block_cap(Mode::SingleNodeWriter);
    env.stage_and_publish("v", &staging, &target, block).await?;
    expect_code(
        "block unstage while published",
        env.unstage("v", &staging).await,
        Code::FailedPrecondition,
        "in use",
    )?;
    env.unpublish_and_unstage("v", &staging, &target).await
}

async fn digitalocean_stage_waits_for_the_device_link(env: Env) -> Result<()> {
    let env = env.restart_as("digitalocean").await?;
    let image = env.image("v", 64 * MIB)?;
    let staging = env.staging("s")?;
    let target = env.target("t");
    let request = || NodeStageVolumeRequest {
        volume_id: "v".into(),
        staging_target_path: path_text(&staging),
        volume_capability: Some(ext4()),
        publish_context: publish_context("v"),
        ..Default::default()
    };
    // No device ever appears: the wait ends with the request's deadline.
    let started = std::time::Instant::now();
    let result = env
        .client
        .clone()
        .node_stage_volume(with_timeout(request(), Duration::from_millis(1500)))
        .await;
    expect_code("stage without a device", result, Code::DeadlineExceeded, "")?;
    ensure!(
        started.elapsed() < Duration::from_secs(10),
        "waited {:?}",
        started.elapsed()
    );

    // The "hypervisor" attaches the disk a little later.
    let link = env
        .root()
        .join("by-id")
        .join(csi_driver::config::device_link_name("v"));
    let image_text = path_text(&image);
    let hotplug = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(700)).await;
        let device = run("losetup", &["--find", "--show", &image_text])?;
        std::fs::create_dir_all(link.parent().context("no parent")?)?;
        std::os::unix::fs::symlink(device.trim(), &link)?;
        anyhow::Ok(device.trim().to_string())
    });
    let result = env
        .client
        .clone()
        .node_stage_volume(with_timeout(request(), Duration::from_secs(30)))
        .await;
    let device = hotplug.await??;
    expect_ok("stage once the link appears", result)?;
    env.publish("v", &staging, &target, ext4(), false).await?;
    std::fs::write(target.join("x"), b"x")?;
    env.unpublish_and_unstage("v", &staging, &target).await?;
    // Detaching is the hypervisor's job in this mode: the node left the device alone.
    ensure!(
        !loops_of(&image)?.is_empty(),
        "the node detached a device it did not attach"
    );
    run("losetup", &["-d", &device])?;
    std::fs::remove_file(
        env.root()
            .join("by-id")
            .join(csi_driver::config::device_link_name("v")),
    )?;
    Ok(())
}

async fn a_concurrent_operation_on_the_volume_is_aborted(env: Env) -> Result<()> {
    // The digitalocean source waits for a link that never comes: a stage held in flight.
    let env = env.restart_as("digitalocean").await?;
    let staging = env.staging("s")?;
    let request = NodeStageVolumeRequest {
        volume_id: "v".into(),
        staging_target_path: path_text(&staging),
        volume_capability: Some(ext4()),
        publish_context: publish_context("v"),
        ..Default::default()
    };
    let mut client = env.client.clone();
    let pending = tokio::spawn(async move {
        client
            .node_stage_volume(with_timeout(request, Duration::from_secs(3)))
            .await
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    expect_code(
        "unstage meanwhile",
        env.unstage("v", &staging).await,
        Code::Aborted,
        "in progress",
    )?;
    expect_code(
        "the first stage",
        pending.await?,
        Code::DeadlineExceeded,
        "",
    )?;
    // The lock is released once the first call ends.
    tokio::time::sleep(Duration::from_millis(500)).await;
    expect_ok("unstage afterwards", env.unstage("v", &staging).await)?;
    Ok(())
}

async fn a_volume_deleted_while_staged_can_still_be_unstaged(env: Env) -> Result<()> {
    for (id, cap) in [("m", ext4()), ("b", block_cap(Mode::SingleNodeWriter))] {
        env.image(id, 64 * MIB)?;
        let staging = env.staging(id)?;
        let target = env.target(id);
        env.stage_and_publish(id, &staging, &target, cap).await?;
        env.unpublish(id, &target).await?;
        // The cloud deletes the image while the node still has it attached.
        std::fs::remove_file(env.image_path(id))?;
        expect_ok(&format!("{id}: unstage"), env.unstage(id, &staging).await)?;
        let left = leftovers(env.root())?;
        ensure!(left.is_empty(), "{id}: {left:?}");
        // And now the volume is unknown.
        expect_code(
            &format!("{id}: unstage again"),
            env.unstage(id, &staging).await,
            Code::NotFound,
            "no image at",
        )?;
    }
    Ok(())
}

async fn a_mount_that_vanishes_takes_its_loop_device_with_it(env: Env) -> Result<()> {
    let image = env.image("v", 64 * MIB)?;
    let staging = env.staging("s")?;
    env.stage("v", &staging, ext4()).await?;
    ensure!(!loops_of(&image)?.is_empty(), "no loop device after stage");
    // The staging mount goes without NodeUnstageVolume (as when a test's mount namespace
    // ends): the kernel detaches the loop device by itself.
    nix::mount::umount2(&staging, nix::mount::MntFlags::empty())?;
    settle().await;
    ensure!(
        loops_of(&image)?.is_empty(),
        "the loop device outlived its mount: {}",
        loops_of(&image)?
    );
    expect_ok("unstage", env.unstage("v", &staging).await)?;
    // Its link dangles until the next stage replaces it; the node never guesses which
    // dangling link is whose.
    let link = env
        .root()
        .join("by-id")
        .join(csi_driver::config::device_link_name("v"));
    ensure!(std::fs::symlink_metadata(&link).is_ok());
    std::fs::remove_file(&link)?;
    // A new stage works and finds the data.
    env.stage("v", &staging, ext4()).await?;
    env.unstage("v", &staging).await?;
    Ok(())
}

// ---- Raw block staging records ----

/// Volume "v" (64 MiB) staged at "s" and published at "t" as ext4: `(staging, target)`.
async fn published_ext4(env: &Env) -> Result<(PathBuf, PathBuf)> {
    env.image("v", 64 * MIB)?;
    let staging = env.staging("s")?;
    let target = env.target("t");
    env.stage_and_publish("v", &staging, &target, ext4())
        .await?;
    Ok((staging, target))
}

/// `<staging>/block-device`, parents resolved: where a raw block stage binds the device.
fn record_in(staging: &Path) -> Result<PathBuf> {
    Ok(staging.canonicalize()?.join(csi_driver::node::BLOCK_RECORD))
}

/// What `blkid -p` finds on an image: empty when it holds no signature at all.
fn signature(image: &Path) -> Result<String> {
    let out = std::process::Command::new("blkid")
        .args(["-p", "-o", "value", "-s", "TYPE"])
        .arg(image)
        .output()
        .context("running blkid")?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

async fn a_raw_block_staging_is_recorded_and_conflicts_both_ways(env: Env) -> Result<()> {
    env.image("v", 64 * MIB)?;
    env.image("w", 64 * MIB)?;
    let staging = env.staging("s")?;
    let record = record_in(&staging)?;
    let block = block_cap(Mode::SingleNodeWriter);
    env.stage("v", &staging, block.clone()).await?;
    let loop_device = loops_of(&env.image_path("v"))?;
    let (node, _) = loop_device.split_once(':').context("v is not attached")?;
    ensure!(
        std::fs::metadata(&record)?.rdev() == std::fs::metadata(node)?.rdev(),
        "the record does not name v's device"
    );

    // spec: staged at this path, but incompatible → ALREADY_EXISTS. Raw block, then a
    // filesystem.
    for (what, cap) in [("ext4", ext4()), ("xfs", xfs())] {
        expect_code(
            &format!("{what} over a raw block staging"),
            env.stage("v", &staging, cap).await,
            Code::AlreadyExists,
            "raw block",
        )?;
    }
    ensure!(
        signature(&env.image_path("v"))?.is_empty(),
        "a refused filesystem stage formatted the device"
    );
    expect_code(
        "another volume at the same path",
        env.stage("w", &staging, block.clone()).await,
        Code::AlreadyExists,
        "already holds",
    )?;
    expect_code(
        "another volume's filesystem at the same path",
        env.stage("w", &staging, ext4()).await,
        Code::AlreadyExists,
        "raw block",
    )?;
    ensure!(
        signature(&env.image_path("w"))?.is_empty(),
        "a refused filesystem stage formatted w"
    );
    ensure!(
        loops_of(&env.image_path("w"))?.is_empty(),
        "the refused stages of w left its loop device attached"
    );
    expect_ok("same again", env.stage("v", &staging, block.clone()).await)?;
    ensure!(
        mounts_under(env.root())? == [record.clone()],
        "a repeated stage stacked another record: {:?}",
        mounts_under(env.root())?
    );
    // Staged as raw block here, asked for as a filesystem at another path.
    let other = env.staging("o")?;
    expect_code(
        "a filesystem at another path",
        env.stage("v", &other, ext4()).await,
        Code::AlreadyExists,
        "raw block",
    )?;
    ensure!(signature(&env.image_path("v"))?.is_empty());
    env.unstage("v", &staging).await?;
    ensure!(leftovers(env.root())?.is_empty());

    // A filesystem, then raw block.
    env.stage("v", &staging, ext4()).await?;
    expect_code(
        "raw block over a filesystem staging",
        env.stage("v", &staging, block.clone()).await,
        Code::AlreadyExists,
        "already holds",
    )?;
    ensure!(
        !record.exists(),
        "a refused raw block stage created its record"
    );
    // The filesystem staged at another path: its raw device is not handed out.
    expect_code(
        "raw block at another path",
        env.stage("v", &other, block).await,
        Code::FailedPrecondition,
        "in use",
    )?;
    ensure!(!record_in(&other)?.exists());
    env.unstage("v", &staging).await?;
    Ok(())
}

async fn a_raw_block_publish_needs_the_staging_record(env: Env) -> Result<()> {
    env.image("v", 64 * MIB)?;
    let staging = env.staging("s")?;
    let elsewhere = env.staging("elsewhere")?;
    let target = env.target("t");
    let block = block_cap(Mode::SingleNodeWriter);
    env.stage("v", &staging, block.clone()).await?;
    // spec: NodePublishVolume of a volume not staged at staging_target_path →
    // FAILED_PRECONDITION (the device is attached, but not staged there).
    expect_code(
        "publish from a path where nothing is staged",
        env.publish("v", &elsewhere, &target, block.clone(), false)
            .await,
        Code::FailedPrecondition,
        "not staged",
    )?;
    ensure!(!target.exists(), "a refused publish created the target");
    // The record is not a publish: a single-writer volume still gets its one target.
    expect_ok(
        "publish from the staging path",
        env.publish("v", &staging, &target, block.clone(), false)
            .await,
    )?;
    let stats = expect_ok(
        "stats with the staging path",
        env.client
            .clone()
            .node_get_volume_stats(NodeGetVolumeStatsRequest {
                volume_id: "v".into(),
                volume_path: path_text(&target),
                staging_target_path: path_text(&staging),
            })
            .await,
    )?
    .into_inner();
    let condition = stats.volume_condition.context("no condition")?;
    ensure!(!condition.abnormal, "{condition:?}");
    // The record gone behind the node's back: the volume is reported abnormal.
    nix::mount::umount2(&record_in(&staging)?, nix::mount::MntFlags::empty())?;
    let stats = env
        .client
        .clone()
        .node_get_volume_stats(NodeGetVolumeStatsRequest {
            volume_id: "v".into(),
            volume_path: path_text(&target),
            staging_target_path: path_text(&staging),
        })
        .await?
        .into_inner();
    let condition = stats.volume_condition.context("no condition")?;
    ensure!(
        condition.abnormal && condition.message.contains("staging record"),
        "{condition:?}"
    );
    env.unpublish_and_unstage("v", &staging, &target).await?;
    ensure!(std::fs::read_dir(&staging)?.next().is_none());
    Ok(())
}

async fn unstaging_a_raw_block_volume_leaves_nothing_behind(env: Env) -> Result<()> {
    env.image("v", 64 * MIB)?;
    let staging = env.staging("s")?;
    let target = env.target("t");
    let record = record_in(&staging)?;
    let block = block_cap(Mode::SingleNodeWriter);
    let empty = |what: &str| -> Result<()> {
        ensure!(
            std::fs::read_dir(&staging)?.next().is_none(),
            "{what}: the staging directory is not empty"
        );
        let left = leftovers(env.root())?;
        ensure!(left.is_empty(), "{what}: left behind {left:?}");
        Ok(())
    };
    env.stage_and_publish("v", &staging, &target, block.clone())
        .await?;
    env.unpublish_and_unstage("v", &staging, &target).await?;
    empty("after unstage")?;
    expect_ok("unstage again", env.unstage("v", &staging).await)?;
    empty("after a second unstage")?;

    // A record file left by a stage that died before binding it: unstage removes it, and
    // a stage takes it over.
    std::fs::write(&record, b"")?;
    expect_ok(
        "unstage with a leftover record file",
        env.unstage("v", &staging).await,
    )?;
    empty("after unstaging a leftover record file")?;
    std::fs::write(&record, b"")?;
    expect_ok(
        "stage over a leftover record file",
        env.stage("v", &staging, block.clone()).await,
    )?;
    env.unstage("v", &staging).await?;
    empty("after staging over a leftover record file")?;

    // The record's bind lost behind the node's back: unstage still detaches the device.
    env.stage("v", &staging, block.clone()).await?;
    nix::mount::umount2(&record, nix::mount::MntFlags::empty())?;
    expect_ok(
        "unstage without the record's bind",
        env.unstage("v", &staging).await,
    )?;
    empty("after unstaging a lost record")?;

    // Something at the record's name that the node did not make is never taken or removed.
    std::fs::write(&record, b"precious")?;
    expect_code(
        "stage over a non-empty file",
        env.stage("v", &staging, block.clone()).await,
        Code::FailedPrecondition,
        "not empty",
    )?;
    ensure!(
        loops_of(&env.image_path("v"))?.is_empty(),
        "the refused stage left its loop device attached"
    );
    expect_ok(
        "unstage with a foreign file",
        env.unstage("v", &staging).await,
    )?;
    ensure!(std::fs::read(&record)? == b"precious");
    std::fs::remove_file(&record)?;
    let victim = env.root().join("victim");
    std::fs::write(&victim, b"keep")?;
    std::os::unix::fs::symlink(&victim, &record)?;
    expect_code(
        "stage over a symlink",
        env.stage("v", &staging, block).await,
        Code::InvalidArgument,
        "symlink",
    )?;
    ensure!(std::fs::read(&victim)? == b"keep");
    ensure!(mounts_under(env.root())?.is_empty());
    ensure!(loops_of(&env.image_path("v"))?.is_empty());
    expect_ok("unstage with a symlink", env.unstage("v", &staging).await)?;
    ensure!(std::fs::symlink_metadata(&record)?.file_type().is_symlink());
    std::fs::remove_file(&record)?;
    Ok(())
}

// ---- Loop devices ----

async fn a_raw_block_device_stays_attached_when_it_is_opened_and_closed(env: Env) -> Result<()> {
    let image = env.image("v", 64 * MIB)?;
    let staging = env.staging("s")?;
    let target = env.target("t");
    env.stage_and_publish("v", &staging, &target, block_cap(Mode::SingleNodeWriter))
        .await?;
    // Nothing holds a raw block device open: with autoclear on, the first close would
    // detach it under its binds.
    ensure!(
        loop_autoclear(&image)? == Some(false),
        "a raw block device is set to autoclear"
    );
    for _ in 0..3 {
        drop(std::fs::File::open(&target)?);
    }
    settle().await;
    ensure!(!loops_of(&image)?.is_empty(), "the device went at a close");
    expect_ok("stats", env.stats("v", &target).await)?;
    env.unpublish_and_unstage("v", &staging, &target).await?;

    // A filesystem's mount holds its device, which goes by itself once unmounted.
    env.stage("v", &staging, ext4()).await?;
    ensure!(
        loop_autoclear(&image)? == Some(true),
        "a mounted loop device is not set to autoclear"
    );
    env.unstage("v", &staging).await?;
    Ok(())
}

async fn a_stage_that_fails_detaches_the_loop_device_it_attached(env: Env) -> Result<()> {
    let image = env.image("x", 512 * MIB)?;
    run("mkfs.xfs", &["-q", "-f", &path_text(&image)])?;
    let staging = env.staging("s")?;
    for (what, cap) in [
        ("ext4 over xfs", ext4()),
        ("staging path missing", ext4()),
        (
            "raw block at a missing staging path",
            block_cap(Mode::SingleNodeWriter),
        ),
    ] {
        let path = if what.contains("missing") {
            env.root().join("staging/missing")
        } else {
            staging.clone()
        };
        let result = env.stage("x", &path, cap).await;
        ensure!(result.is_err(), "{what}: staged");
        settle().await;
        ensure!(
            loops_of(&image)?.is_empty(),
            "{what}: the failed stage left {}",
            loops_of(&image)?
        );
        let left = leftovers(env.root())?;
        ensure!(left.is_empty(), "{what}: left behind {left:?}");
    }
    Ok(())
}

/// Loop devices of images under `root`: staged as raw block devices whose records went
/// behind the node's back (one image deleted too, as DeleteVolume does), and one staged
/// properly. Returns the images, in that order.
async fn lose_two_raw_block_stagings(env: &Env) -> Result<[PathBuf; 3]> {
    let block = block_cap(Mode::SingleNodeWriter);
    let mut images = Vec::new();
    for id in ["lost", "deleted", "kept"] {
        images.push(env.image(id, 32 * MIB)?);
        let staging = env.staging(id)?;
        env.stage(id, &staging, block.clone()).await?;
        if id != "kept" {
            nix::mount::umount2(&record_in(&staging)?, nix::mount::MntFlags::empty())?;
        }
    }
    std::fs::remove_file(&images[1])?;
    for image in [&images[0], &images[2]] {
        ensure!(
            !loops_of(image)?.is_empty(),
            "{} not attached",
            image.display()
        );
    }
    Ok([images[0].clone(), images[1].clone(), images[2].clone()])
}

/// Loop devices whose backing file was `image`, deleted since.
fn loops_of_deleted(image: &Path) -> Result<Vec<String>> {
    let wanted = format!("({} (deleted))", path_text(image));
    Ok(run("losetup", &["-a"])?
        .lines()
        .filter(|l| l.ends_with(&wanted))
        .map(str::to_string)
        .collect())
}

async fn a_driver_that_owns_its_cloud_releases_unused_loop_devices_when_it_stops(
    env: Env,
) -> Result<()> {
    // The harness's bundled driver: Controller and Node, with its own in-process cloud.
    let dir = env.dir.clone();
    env.stop().await?;
    let env = Env::start_as(dir.clone(), "loop", "all").await?;
    let [lost, deleted, kept] = lose_two_raw_block_stagings(&env).await?;
    ensure!(loops_of_deleted(&deleted)?.len() == 1);
    env.stop().await?;
    settle().await;
    ensure!(
        loops_of(&lost)?.is_empty(),
        "an unused loop device outlived the driver: {}",
        loops_of(&lost)?
    );
    ensure!(
        loops_of_deleted(&deleted)?.is_empty(),
        "an unused loop device of a deleted image outlived the driver: {:?}",
        loops_of_deleted(&deleted)?
    );
    ensure!(
        !loops_of(&kept)?.is_empty(),
        "the driver detached a staged volume's device"
    );
    let env = Env::start_in(dir, "loop").await?;
    env.unstage("kept", &env.staging("kept")?).await?;
    env.unstage("lost", &env.staging("lost")?).await?;
    Ok(())
}

async fn a_node_only_driver_leaves_loop_devices_alone_when_it_stops(env: Env) -> Result<()> {
    // The images belong to a cloud elsewhere, and other nodes' mounts may be out of sight.
    let [lost, deleted, kept] = lose_two_raw_block_stagings(&env).await?;
    let dir = env.dir.clone();
    env.stop().await?;
    settle().await;
    for image in [&lost, &kept] {
        ensure!(
            !loops_of(image)?.is_empty(),
            "a node-only driver detached {} as it stopped",
            image.display()
        );
    }
    ensure!(loops_of_deleted(&deleted)?.len() == 1);
    // NodeUnstageVolume still cleans up, even after DeleteVolume.
    let env = Env::start_in(dir, "loop").await?;
    for id in ["lost", "kept"] {
        env.unstage(id, &env.staging(id)?).await?;
    }
    expect_ok(
        "unstage of a deleted volume still attached",
        env.unstage("deleted", &env.staging("deleted")?).await,
    )?;
    Ok(())
}
