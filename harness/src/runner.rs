//! The runner: connect, read capabilities, turn specs into trials, run each with its
//! cleanup, check nothing is left over, report.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use csi_suites::{Capabilities, Clients, Need, RunState, Spec, SuiteConfig};
use futures::FutureExt;
use libtest_mimic::{Arguments, Completion, Failed, FormatSetting, Trial};

use crate::bundled::Bundled;
use crate::discover::{check_node_pool, read_capabilities};
use crate::leftovers::leftovers;
pub use crate::report::{Outcome, Report, Status};

/// Everything a run needs. `Config::default()` runs every spec against the bundled
/// driver, one at a time.
#[derive(Debug, Clone)]
pub struct Config {
    /// The endpoint under test; `None` starts the bundled driver.
    pub endpoint: Option<String>,
    /// A separate controller endpoint, if the controller is served elsewhere.
    pub controller_endpoint: Option<String>,
    /// Node plugins of further nodes of the same driver: specs running at once are
    /// spread over the endpoint's node and these, one node per spec while nodes last.
    pub extra_node_endpoints: Vec<String>,
    /// With the bundled driver: how many nodes it runs, each a droplet with its own node
    /// plugin. `None`: as many as [`Config::parallel`].
    pub bundled_nodes: Option<usize>,
    /// How long to wait for an endpoint to answer.
    pub connect_timeout: Duration,
    /// Settings for the specs.
    pub suite: SuiteConfig,
    /// libtest arguments: filters, `--list`, `--format`, `--test-threads`.
    pub args: Arguments,
    /// How many specs run at once (libtest's `--test-threads`, unless that is set).
    /// `None`: the profile's default ([`Config::parallel`]).
    pub parallel: Option<usize>,
    /// Write a JUnit XML report here.
    pub junit_file: Option<PathBuf>,
    /// Run only specs whose full name matches one of these regexes (`--ginkgo.focus`).
    pub focus: Vec<String>,
    /// Leave out specs whose full name matches one of these regexes (`--ginkgo.skip`).
    pub skip: Vec<String>,
    /// A spec that takes longer than this fails (its cleanup still runs).
    pub spec_timeout: Duration,
    /// Set when the test volume size was given explicitly; otherwise the bundled driver
    /// uses 1 GiB (it rounds to whole GiB, and formatting 1 GiB is quick).
    pub volume_size_set: bool,
    /// Print the closing summary (to stdout; to stderr with `--format json`).
    pub print_summary: bool,
    /// Write the findings page here (`--csi.report`).
    pub findings_file: Option<PathBuf>,
    /// The command line, as the findings page shows it.
    pub command_line: String,
    /// How the JUnit report names test cases (`--csi.junit-names`).
    pub junit_names: crate::report::JunitNames,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            endpoint: None,
            controller_endpoint: None,
            extra_node_endpoints: Vec::new(),
            bundled_nodes: None,
            connect_timeout: Duration::from_secs(10),
            suite: SuiteConfig::default(),
            args: Arguments::default(),
            parallel: None,
            junit_file: None,
            focus: Vec::new(),
            skip: Vec::new(),
            spec_timeout: Duration::from_secs(900),
            volume_size_set: false,
            print_summary: true,
            junit_names: crate::report::JunitNames::Ours,
            findings_file: None,
            command_line: String::new(),
        }
    }
}

/// How many specs the full profile runs at once unless told otherwise. Most of a
/// lifecycle spec's time is the driver waiting on mkfs, mount and its cloud, so a few
/// specs at once use that time; three was the fastest on the 2-core machine the suite
/// was tuned on (the bundled driver: 1 → 1.55 s, 2 → 0.99 s, 3 → 0.75 s, 4 → 0.81 s).
/// The CSI spec lets a CO call for distinct volumes at once, and the specs are written
/// for it ([`csi_suites::Spec::alone`] marks the few that need the driver to themselves).
pub const FULL_PROFILE_PARALLEL: usize = 3;

impl Config {
    /// How many specs run at once: `--csi.parallel`, or else one in the compat profile,
    /// as the Go csi-sanity runs them, and [`FULL_PROFILE_PARALLEL`] in the full one.
    pub fn parallel(&self) -> usize {
        self.parallel.unwrap_or(match self.suite.profile {
            csi_suites::Profile::Compat => 1,
            csi_suites::Profile::Full => FULL_PROFILE_PARALLEL,
        })
    }

    /// A configuration for the endpoint `endpoint`, with every other setting at its
    /// default.
    pub fn for_endpoint(endpoint: impl Into<String>) -> Config {
        Config {
            endpoint: Some(endpoint.into()),
            ..Config::default()
        }
    }

    /// Keep only the specs whose full name matches `regex` (like `--ginkgo.focus`).
    pub fn focus(mut self, regex: impl Into<String>) -> Config {
        self.focus.push(regex.into());
        self
    }
}

/// Apply the bundled driver's defaults to whatever the caller left at the default.
fn bundled_defaults(config: &mut Config, bundled: &Bundled) {
    let defaults = SuiteConfig::default();
    let suite = &mut config.suite;
    if suite.mount_dir == defaults.mount_dir {
        suite.mount_dir = bundled.mount_dir();
    }
    if suite.staging_dir == defaults.staging_dir {
        suite.staging_dir = bundled.staging_dir();
    }
    if !config.volume_size_set && suite.volume_size == defaults.volume_size {
        suite.volume_size = 1 << 30;
    }
    if suite.second_node_id.is_none() {
        suite.second_node_id = Some(bundled.second_node_id.clone());
    }
    if suite.mutable_parameters.is_empty() && suite.profile == csi_suites::Profile::Full {
        // What the bundled driver can change on a volume, as it says itself.
        suite.mutable_parameters = bundled.mutable_parameters().into_iter().collect();
    }
}

/// How a spec is turned into a trial: gated statically on its needs, otherwise run
/// with cleanup afterwards, whatever happened.
struct TrialFactory {
    rt: tokio::runtime::Handle,
    run: RunState,
    outcomes: Arc<Mutex<Vec<Outcome>>>,
    strict: bool,
    spec_timeout: Duration,
    /// Specs share it; a spec marked [`Spec::alone`] takes it for itself. Fair: once an
    /// alone spec waits, specs that start later wait behind it.
    turns: Arc<tokio::sync::RwLock<()>>,
}

/// A spec's hold on [`TrialFactory::turns`] while it runs: one of the two guards.
struct Turn {
    _shared: Option<tokio::sync::OwnedRwLockReadGuard<()>>,
    _alone: Option<tokio::sync::OwnedRwLockWriteGuard<()>>,
}

impl Turn {
    /// Wait for a spec's turn: with the other specs, or alone when it asks to be.
    fn take(
        rt: &tokio::runtime::Handle,
        turns: &Arc<tokio::sync::RwLock<()>>,
        alone: bool,
    ) -> Turn {
        let turns = turns.clone();
        if alone {
            Turn {
                _shared: None,
                _alone: Some(rt.block_on(turns.write_owned())),
            }
        } else {
            Turn {
                _shared: Some(rt.block_on(turns.read_owned())),
                _alone: None,
            }
        }
    }
}

impl TrialFactory {
    fn record(outcomes: &Arc<Mutex<Vec<Outcome>>>, spec: &Spec, status: Status, started: Instant) {
        Self::record_with(outcomes, spec, status, started, Vec::new())
    }

    fn record_with(
        outcomes: &Arc<Mutex<Vec<Outcome>>>,
        spec: &Spec,
        status: Status,
        started: Instant,
        warnings: Vec<String>,
    ) {
        outcomes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Outcome {
                group: spec.group.to_string(),
                name: spec.name.to_string(),
                go_name: spec.go_name,
                status,
                warnings,
                duration: started.elapsed(),
            });
    }

    fn trial(&self, spec: Spec) -> Trial {
        let name = spec.full_name();
        let outcomes = self.outcomes.clone();
        if let Some(need) = self.run.caps().first_unmet(spec.needs) {
            let caps = self.run.caps();
            let broken = match need {
                Need::NodeService | Need::NodeCap(_) => caps.node_caps_error.clone(),
                Need::GroupControllerCap(_) => caps.group_caps_error.clone(),
                _ => None,
            };
            let reason = match &broken {
                Some(err) => format!("the capabilities this spec needs could not be read: {err}"),
                None => need.describe(),
            };
            let broken = broken.is_some();
            let fail = broken || (self.strict && need.is_capability());
            return Trial::ignorable_test(name, move || {
                let started = Instant::now();
                if fail {
                    let why = if broken { "" } else { "strict mode: " };
                    let msg = format!(
                        "{why}{reason}, which this spec needs\nrule:     {}",
                        spec.rule
                    );
                    Self::record(&outcomes, &spec, Status::Failed(msg.clone()), started);
                    Err(Failed::from(msg))
                } else {
                    Self::record(&outcomes, &spec, Status::Skipped(reason.clone()), started);
                    Ok(Completion::ignored_with(reason))
                }
            });
        }
        let rt = self.rt.clone();
        let run = self.run.clone();
        let spec_timeout = self.spec_timeout;
        let strict = self.strict;
        let turns = self.turns.clone();
        Trial::ignorable_test(name.clone(), move || {
            let _turn = Turn::take(&rt, &turns, spec.alone);
            let started = Instant::now();
            let ctx = run.ctx(&name);
            let (result, cleanup) = rt.block_on(csi_suites::breaker::scope(run.breaker(), async {
                let body = std::panic::AssertUnwindSafe((spec.run)(ctx.clone())).catch_unwind();
                let result = match tokio::time::timeout(spec_timeout, body).await {
                    Ok(Ok(r)) => r.map_err(SpecError::Stopped),
                    Ok(Err(panic)) => Err(SpecError::Panic(panic_message(&*panic))),
                    Err(_) => Err(SpecError::Timeout(spec_timeout)),
                };
                // Cleanup runs whatever happened above.
                let cleanup = ctx.cleanup().await;
                (result, cleanup)
            }));
            let cleanup_msg = cleanup
                .err()
                .map(|f| format!("\ncleanup failed:\n{f}"))
                .unwrap_or_default();
            let warnings: Vec<String> = ctx.warnings().iter().map(|w| w.to_string()).collect();
            let status = match result {
                Ok(()) if cleanup_msg.is_empty() && strict && !warnings.is_empty() => {
                    Status::Failed(format!(
                        "strict mode: {} SHOULD-level warning(s):\n{}",
                        warnings.len(),
                        warnings.join("\n---\n")
                    ))
                }
                Ok(()) if cleanup_msg.is_empty() => Status::Passed,
                Err(SpecError::Stopped(csi_suites::Stop::Skipped(reason)))
                    if cleanup_msg.is_empty() =>
                {
                    Status::Skipped(reason)
                }
                Ok(()) => Status::Failed(cleanup_msg.trim_start().to_string()),
                Err(e) if spec.rule.is_empty() => Status::Failed(format!("{e}{cleanup_msg}")),
                Err(e) => Status::Failed(format!("{e}\ncites:    {}{cleanup_msg}", spec.rule)),
            };
            Self::record_with(&outcomes, &spec, status.clone(), started, warnings);
            match status {
                Status::Passed => Ok(Completion::Completed),
                Status::Skipped(reason) => Ok(Completion::ignored_with(reason)),
                Status::Failed(msg) => Err(Failed::from(msg)),
            }
        })
    }
}

enum SpecError {
    /// The spec failed, or found that it does not apply.
    Stopped(csi_suites::Stop),
    Panic(String),
    Timeout(Duration),
}

impl std::fmt::Display for SpecError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SpecError::Stopped(stop) => write!(f, "{stop}"),
            SpecError::Panic(msg) => write!(f, "the spec panicked: {msg}"),
            SpecError::Timeout(t) => write!(f, "the spec did not finish within {t:?}"),
        }
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "(no message)".to_string())
}

/// Run the suite described by `config`: connect (or start the bundled driver), read
/// the capabilities, run the selected specs, check for leftovers, write the reports.
///
/// Errors are for the run as a whole (no connection, a bad flag); a failing spec is
/// counted in the [`Report`]. Call it from a plain `#[test]` or `main`, not from inside
/// an async runtime: it runs its own.
pub fn run(config: Config) -> anyhow::Result<Report> {
    run_specs(config, csi_suites::all())
}

/// Like [`run`], with a list of specs of your own (for example `csi_suites::all()` plus
/// a driver's own specs written with the `csi_suites` fixtures).
pub fn run_specs(mut config: Config, specs: Vec<Spec>) -> anyhow::Result<Report> {
    let started = Instant::now();
    let crate::select::Selection {
        specs,
        filtered_out: ginkgo_filtered,
    } = crate::select::select(specs, config.suite.profile, &config.focus, &config.skip)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;

    // `--list` needs no driver: list every spec that the filters keep.
    if config.args.list {
        let trials = specs
            .into_iter()
            .map(|s| Trial::test(s.full_name(), || Ok(())))
            .collect();
        let _listed = libtest_mimic::run(&config.args, trials);
        return Ok(Report::default());
    }

    match (&config.endpoint, config.bundled_nodes) {
        (None, _) if !config.extra_node_endpoints.is_empty() => anyhow::bail!(
            "--csi.nodeendpoints needs --csi.endpoint: the bundled driver runs its own nodes (--csi.bundlednodes)"
        ),
        (Some(_), Some(_)) => anyhow::bail!(
            "--csi.bundlednodes is for the bundled driver; with --csi.endpoint, give the other nodes with --csi.nodeendpoints"
        ),
        _ => {}
    }
    let (clients, caps, bundled) = rt.block_on(async {
        let bundled = match &config.endpoint {
            Some(_) => None,
            None => {
                let nodes = config
                    .bundled_nodes
                    .unwrap_or(config.parallel().min(crate::bundled::MAX_NODES));
                Some(crate::bundled::start(nodes).await?)
            }
        };
        let extra_endpoints = match &bundled {
            Some(b) => b.extra_node_endpoints.clone(),
            None => config.extra_node_endpoints.clone(),
        };
        let endpoint = match (&config.endpoint, &bundled) {
            (Some(e), _) => e.clone(),
            (None, Some(b)) => b.endpoint.clone(),
            (None, None) => unreachable!("a bundled driver starts when no endpoint is given"),
        };
        let rpc_timeout = config.suite.rpc_timeout;
        let node =
            crate::connect::connect_with(&endpoint, config.connect_timeout, rpc_timeout).await?;
        let separate = match &config.controller_endpoint {
            Some(c) => {
                Some(crate::connect::connect_with(c, config.connect_timeout, rpc_timeout).await?)
            }
            None => None,
        };
        let controller = separate.clone().unwrap_or_else(|| node.clone());
        let mut extra = Vec::new();
        for e in &extra_endpoints {
            extra.push(crate::connect::connect_with(e, config.connect_timeout, rpc_timeout).await?);
        }
        let mut clients = Clients::new(node, controller).with_extra_nodes(extra);
        if let Some(c) = separate {
            clients = clients.with_separate_controller(c);
        }
        let caps = read_capabilities(&clients, config.connect_timeout)
            .await
            .with_context(|| format!("reading the capabilities of {endpoint}"))?;
        anyhow::Ok((clients, caps, bundled))
    })?;
    if let Some(b) = &bundled {
        bundled_defaults(&mut config, b);
    }
    if !clients.extra_nodes.is_empty() {
        let second = config.suite.second_node_id.as_deref();
        if let Err(e) = rt.block_on(check_node_pool(
            &clients,
            &caps,
            second,
            config.connect_timeout,
        )) {
            if let Some(b) = bundled {
                rt.block_on(b.stop());
            }
            return Err(e);
        }
    }
    let mut caps = caps.with_config(&config.suite);
    // An external driver mounts with its own privileges; the bundled one mounts in this
    // process, which takes root.
    caps.mounts = bundled.is_none() || caps.root;

    let run = RunState::new(clients, config.suite.clone(), caps.clone());
    let outcomes = Arc::new(Mutex::new(Vec::new()));
    let factory = TrialFactory {
        rt: rt.handle().clone(),
        run: run.clone(),
        outcomes: outcomes.clone(),
        strict: config.suite.strict,
        spec_timeout: config.spec_timeout,
        turns: Arc::new(tokio::sync::RwLock::new(())),
    };
    let mut args = config.args.clone();
    if args.test_threads.is_none() {
        args.test_threads = Some(config.parallel());
    }
    let trials: Vec<Trial> = specs.iter().cloned().map(|s| factory.trial(s)).collect();
    let conclusion = libtest_mimic::run(&args, trials);

    let leftovers = rt.block_on(leftovers(&run));
    if let Some(b) = bundled {
        rt.block_on(b.stop());
    }
    let mut outcomes = outcomes.lock().unwrap_or_else(|e| e.into_inner()).clone();
    // Report in the suite's order, whatever order parallel specs finished in.
    let order: std::collections::HashMap<String, usize> = specs
        .iter()
        .enumerate()
        .map(|(i, s)| (s.full_name(), i))
        .collect();
    outcomes.sort_by_key(|o| order.get(&o.full_name()).copied().unwrap_or(usize::MAX));
    let count = |f: fn(&Status) -> bool| outcomes.iter().filter(|o| f(&o.status)).count() as u64;
    let mut report = Report {
        passed: count(|s| matches!(s, Status::Passed)),
        failed: count(|s| matches!(s, Status::Failed(_))) + u64::from(!leftovers.is_empty()),
        skipped: count(|s| matches!(s, Status::Skipped(_))),
        warnings: outcomes.iter().map(|o| o.warnings.len() as u64).sum(),
        cut_off: run.breaker().cut_off(),
        filtered_out: conclusion.num_filtered_out + ginkgo_filtered,
        outcomes,
        leftovers,
        not_covered: Vec::new(),
    };
    if config.suite.strict {
        report.not_covered = not_covered(&specs, &caps);
    }
    if let Some(path) = &config.findings_file {
        let endpoint = config
            .endpoint
            .clone()
            .unwrap_or_else(|| "(the bundled driver)".to_string());
        let profile = match config.suite.profile {
            csi_suites::Profile::Full => "full",
            csi_suites::Profile::Compat => "compat",
        };
        crate::findings::write(
            path,
            &report,
            &crate::findings::RunInfo {
                endpoint: &endpoint,
                command: &config.command_line,
                profile,
            },
        )?;
    }
    if let Some(path) = &config.junit_file {
        report.write_junit(path, started.elapsed(), config.junit_names)?;
    }
    if config.print_summary {
        let summary = report.summary();
        if args.format == Some(FormatSetting::Json) {
            // libtest's events say "ok" for a spec with warnings; one more event per
            // warning carries them, in the same line-per-event form.
            for o in &report.outcomes {
                for w in &o.warnings {
                    println!(
                        "{}",
                        serde_json::json!({
                            "type": "test",
                            "event": "warning",
                            "name": o.full_name(),
                            "severity": "SHOULD",
                            "message": w,
                        })
                    );
                }
            }
            eprint!("{summary}");
        } else {
            print!("{summary}");
        }
    }
    Ok(report)
}

/// The capabilities the driver lacks, with how many selected specs needed each.
fn not_covered(specs: &[Spec], caps: &Capabilities) -> Vec<String> {
    let mut counts: Vec<(Need, usize)> = Vec::new();
    for spec in specs {
        if let Some(need) = caps.first_unmet(spec.needs) {
            if !need.is_capability() {
                continue;
            }
            match counts.iter_mut().find(|(n, _)| n == need) {
                Some((_, c)) => *c += 1,
                None => counts.push((*need, 1)),
            }
        }
    }
    counts
        .into_iter()
        .map(|(n, c)| {
            format!(
                "{} ({c} spec{})",
                n.describe(),
                if c == 1 { "" } else { "s" }
            )
        })
        .collect()
}
