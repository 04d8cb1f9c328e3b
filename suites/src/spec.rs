//! What a spec is: a named rule, what it needs, and the function that checks it.

use std::future::Future;
use std::pin::Pin;

use crate::capabilities::Need;
use crate::check::Stop;
use crate::context::Ctx;

/// The future a spec returns.
pub type SpecFuture = Pin<Box<dyn Future<Output = Result<(), Stop>> + Send>>;

/// One rule of the spec, checked against a driver.
#[derive(Clone)]
pub struct Spec {
    /// The service or group, e.g. `Controller::CreateVolume`.
    pub group: &'static str,
    /// The rule, as a sentence: "fails with INVALID_ARGUMENT when no name is given".
    pub name: &'static str,
    /// The spec text or section it enforces, quoted or cited.
    pub rule: &'static str,
    /// What must hold for the spec to apply.
    pub needs: &'static [Need],
    /// The check itself.
    pub run: fn(Ctx) -> SpecFuture,
    /// The Go csi-sanity's full name for this spec's counterpart, if it has one
    /// ([`crate::go_names`]); [`crate::all`] fills it in.
    pub go_name: Option<&'static str>,
    /// The spec needs the driver to itself: no other spec of the run may hold volumes
    /// while it runs (it fills a node to its attach limit). A runner that runs specs at
    /// once runs this one alone ([`Spec::alone`]).
    pub alone: bool,
}

impl Spec {
    /// Mark the spec as one that runs with no other spec at the same time.
    pub const fn alone(mut self) -> Self {
        self.alone = true;
        self
    }

    /// The trial name a runner shows and filters on: `Group::sentence`.
    pub fn full_name(&self) -> String {
        format!("{}::{}", self.group, self.name)
    }

    /// Whether this spec goes beyond the Go csi-sanity (the `Beyond::` groups): it runs
    /// only in the full profile, and a focus selects it only when it names it.
    pub fn is_beyond(&self) -> bool {
        self.group.starts_with("Beyond")
    }

    /// Whether the compat profile runs this spec: it has a Go counterpart that Go runs.
    pub fn in_compat(&self) -> bool {
        self.go_name
            .is_some_and(|go| go != crate::go_names::GO_PENDING)
    }

    /// The names `--ginkgo.focus`/`--ginkgo.skip` match: our own, and Go's if any.
    pub fn names(&self) -> Vec<String> {
        let mut names = vec![self.full_name()];
        names.extend(self.go_name.map(str::to_string));
        names
    }
}

impl std::fmt::Debug for Spec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spec")
            .field("name", &self.full_name())
            .field("needs", &self.needs)
            .finish()
    }
}

/// Declare a spec: `spec!(group, name, rule, needs, |ctx| async move { ... })`.
#[macro_export]
macro_rules! spec {
    ($group:expr, $name:expr, $rule:expr, [$($need:expr),* $(,)?], $body:expr) => {
        $crate::Spec {
            group: $group,
            name: $name,
            rule: $rule,
            needs: &[$($need),*],
            run: |ctx| Box::pin(($body)(ctx)),
            go_name: None,
            alone: false,
        }
    };
}
