//! Failures that explain themselves, and the checks that make them.
//!
//! A failure names the RPC, the request (secrets redacted), what was expected, what
//! came back, and the rule, so nobody has to open the spec's source to understand it.

use std::fmt;

use tonic::{Code, Status};

/// A spec that did not hold.
#[derive(Debug, Clone, Default)]
pub struct Failure {
    /// The RPC that misbehaved, if one did.
    pub rpc: Option<String>,
    /// The request, rendered with secret fields redacted.
    pub request: Option<String>,
    /// What the rule expects.
    pub expected: String,
    /// What came back.
    pub actual: String,
    /// The rule, quoted or cited.
    pub rule: String,
    /// The step of the spec that was under way (e.g. "setting up: create a test volume").
    pub step: Option<String>,
}

/// Why a spec stopped before it passed: it failed, or it found at run time that it does
/// not apply (a skip is an outcome of its own, reported as skipped, never as failed).
/// A [`Failure`] becomes a `Stop` with `?`.
#[derive(Debug, Clone)]
pub enum Stop {
    Failed(Failure),
    /// The spec does not apply here, for this reason.
    Skipped(String),
}

impl Stop {
    /// Not a failure: the spec does not apply here, for `reason`.
    pub fn skip(reason: impl Into<String>) -> Stop {
        Stop::Skipped(reason.into())
    }

    /// [`Failure::during`] for a failure; a skip stays as it is.
    pub fn during(self, step: impl Into<String>) -> Stop {
        match self {
            Stop::Failed(f) => Stop::Failed(f.during(step)),
            skipped => skipped,
        }
    }
}

impl From<Failure> for Stop {
    fn from(failure: Failure) -> Stop {
        Stop::Failed(failure)
    }
}

impl fmt::Display for Stop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Stop::Failed(failure) => failure.fmt(f),
            Stop::Skipped(reason) => write!(f, "skipped: {reason}"),
        }
    }
}

impl Failure {
    /// A failure that is not tied to one RPC response.
    pub fn new(expected: impl Into<String>, actual: impl Into<String>, rule: &str) -> Failure {
        Failure {
            expected: expected.into(),
            actual: actual.into(),
            rule: rule.to_string(),
            ..Default::default()
        }
    }

    /// A failure about a response of `rpc` to `request`.
    pub fn about(
        rpc: &str,
        request: &str,
        expected: impl Into<String>,
        actual: impl fmt::Debug,
        rule: &str,
    ) -> Failure {
        Failure {
            rpc: Some(rpc.to_string()),
            request: Some(request.to_string()),
            expected: expected.into(),
            actual: format!("{actual:?}"),
            rule: rule.to_string(),
            ..Default::default()
        }
    }

    /// Say which step of the spec was under way, unless one is already named.
    pub fn during(mut self, step: impl Into<String>) -> Failure {
        if self.step.is_none() {
            self.step = Some(step.into());
        }
        self
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(step) = &self.step {
            writeln!(f, "during:   {step}")?;
        }
        if let Some(rpc) = &self.rpc {
            writeln!(f, "RPC:      {rpc}")?;
        }
        if let Some(request) = &self.request {
            writeln!(f, "request:  {request}")?;
        }
        writeln!(f, "expected: {}", self.expected)?;
        writeln!(f, "actual:   {}", self.actual)?;
        write!(f, "rule:     {}", self.rule)
    }
}

impl std::error::Error for Failure {}

/// Render a request for a failure message, with `csi_secret` fields redacted.
pub fn describe_request<M: prost::Message>(rpc: &str, request: &M) -> String {
    let bytes = request.encode_to_vec();
    csi_proto::redact::redact_secrets(&format!("csi.v1.{rpc}Request"), &bytes)
        .unwrap_or_else(|| format!("<{rpc}Request, {} bytes>", bytes.len()))
}

/// Render a status as `CODE: "message"`.
pub fn describe_status(status: &Status) -> String {
    format!("{:?}: {:?}", status.code(), status.message())
}

/// The outcome of one RPC, kept with its name and request so checks can explain themselves.
pub struct Call<T> {
    pub rpc: &'static str,
    pub request: String,
    pub result: Result<T, Status>,
}

impl<T: fmt::Debug> Call<T> {
    /// Record a call's outcome.
    pub fn new<M: prost::Message>(
        rpc: &'static str,
        request: &M,
        result: Result<T, Status>,
    ) -> Self {
        Call {
            rpc,
            request: describe_request(rpc, request),
            result,
        }
    }

    /// A failure about this call, naming its RPC and request.
    pub fn failure(&self, expected: String, actual: String, rule: &str) -> Failure {
        Failure {
            rpc: Some(self.rpc.to_string()),
            request: Some(self.request.clone()),
            expected,
            actual,
            rule: rule.to_string(),
            ..Default::default()
        }
    }

    /// Whether the call succeeded.
    pub fn is_ok(&self) -> bool {
        self.result.is_ok()
    }

    /// The gRPC code of the outcome (`Ok` on success).
    pub fn status_code(&self) -> Code {
        match &self.result {
            Ok(_) => Code::Ok,
            Err(s) => s.code(),
        }
    }

    /// The call must succeed, or fail with one of `codes`; `Ok(None)` for those codes.
    pub fn ok_or_code_in(self, codes: &[Code], rule: &str) -> Result<Option<T>, Failure> {
        match self.result {
            Ok(v) => Ok(Some(v)),
            Err(ref status) if codes.contains(&status.code()) => Ok(None),
            Err(ref status) => {
                let expected = std::iter::once("OK".to_string())
                    .chain(codes.iter().map(|c| format!("{c:?}")))
                    .collect::<Vec<_>>()
                    .join(" or ");
                let actual = describe_status(status);
                Err(self.failure(expected, actual, rule))
            }
        }
    }

    /// A failure about this call's (successful) response.
    pub fn bad_response(
        &self,
        expected: impl Into<String>,
        actual: impl fmt::Debug,
        rule: &str,
    ) -> Failure {
        self.failure(expected.into(), format!("{actual:?}"), rule)
    }

    /// The call must succeed.
    pub fn ok(self, rule: &str) -> Result<T, Failure> {
        match self.result {
            Ok(v) => Ok(v),
            Err(ref status) => {
                let actual = describe_status(status);
                Err(self.failure("OK".into(), actual, rule))
            }
        }
    }

    /// The call must fail with `code`.
    pub fn code(self, code: Code, rule: &str) -> Result<Status, Failure> {
        self.code_in(&[code], rule)
    }

    /// The call must fail with one of `codes`.
    pub fn code_in(self, codes: &[Code], rule: &str) -> Result<Status, Failure> {
        let expected = codes
            .iter()
            .map(|c| format!("{c:?}"))
            .collect::<Vec<_>>()
            .join(" or ");
        match &self.result {
            Err(status) if codes.contains(&status.code()) => Ok(status.clone()),
            Err(status) => {
                let actual = describe_status(status);
                Err(self.failure(expected, actual, rule))
            }
            Ok(v) => {
                let actual = format!("OK: {v:?}");
                Err(self.failure(expected, actual, rule))
            }
        }
    }

    /// The call must fail, with any code but OK.
    pub fn error(self, rule: &str) -> Result<Status, Failure> {
        match &self.result {
            Err(status) => Ok(status.clone()),
            Ok(v) => {
                let actual = format!("OK: {v:?}");
                Err(self.failure("an error".into(), actual, rule))
            }
        }
    }
}

/// A plain assertion about a response, with the RPC it came from.
pub fn ensure(
    cond: bool,
    rpc: &str,
    expected: impl Into<String>,
    actual: impl fmt::Debug,
    rule: &str,
) -> Result<(), Failure> {
    if cond {
        return Ok(());
    }
    Err(Failure {
        rpc: Some(rpc.to_string()),
        request: None,
        expected: expected.into(),
        actual: format!("{actual:?}"),
        rule: rule.to_string(),
        ..Default::default()
    })
}

/// Like [`ensure`], naming the request that produced the response too.
pub fn ensure_call(
    cond: bool,
    rpc: &str,
    request: &str,
    expected: impl Into<String>,
    actual: impl fmt::Debug,
    rule: &str,
) -> Result<(), Failure> {
    ensure(cond, rpc, expected, actual, rule).map_err(|mut f| {
        f.request = Some(request.to_string());
        f
    })
}

/// Make an RPC and keep its name and request for the checks:
/// `call!(ctx.identity(), get_plugin_info, "GetPluginInfo", GetPluginInfoRequest {})`.
#[macro_export]
macro_rules! call {
    ($client:expr, $method:ident, $rpc:literal, $req:expr) => {{
        let request = $req;
        let mut client = $client;
        let started = ::std::time::Instant::now();
        let result = match $crate::breaker::before($rpc) {
            Some(refused) => Err(refused),
            None => client
                .$method(request.clone())
                .await
                .map(|r| r.into_inner()),
        };
        $crate::breaker::after($rpc, started, &result);
        $crate::check::Call::new($rpc, &request, result)
    }};
}

#[cfg(test)]
mod tests {
    use super::*;
    use csi_proto::v1::CreateVolumeRequest;

    #[test]
    fn a_failure_names_the_rpc_the_redacted_request_and_both_outcomes() {
        let req = CreateVolumeRequest {
            name: "pvc-1".into(),
            secrets: [("password".to_string(), "hunter2".to_string())].into(),
            ..Default::default()
        };
        let call: Call<()> = Call::new("CreateVolume", &req, Err(Status::internal("boom")));
        let text = call
            .code(Code::InvalidArgument, "CreateVolume: name is REQUIRED")
            .unwrap_err()
            .to_string();
        assert!(text.contains("RPC:      CreateVolume"), "{text}");
        assert!(
            text.contains("pvc-1") && text.contains("password"),
            "{text}"
        );
        assert!(!text.contains("hunter2"), "a secret leaked: {text}");
        assert!(text.contains("expected: InvalidArgument"), "{text}");
        assert!(text.contains("actual:   Internal: \"boom\""), "{text}");
        assert!(
            text.contains("rule:     CreateVolume: name is REQUIRED"),
            "{text}"
        );
    }

    #[test]
    fn ok_or_code_in_accepts_ok_and_the_listed_codes_only() {
        let req = CreateVolumeRequest::default();
        let ok: Call<u8> = Call::new("CreateVolume", &req, Ok(1));
        assert_eq!(ok.ok_or_code_in(&[Code::NotFound], "r").unwrap(), Some(1));
        let gone: Call<u8> = Call::new("CreateVolume", &req, Err(Status::not_found("x")));
        assert_eq!(gone.ok_or_code_in(&[Code::NotFound], "r").unwrap(), None);
        let bad: Call<u8> = Call::new("CreateVolume", &req, Err(Status::internal("x")));
        let f = bad.ok_or_code_in(&[Code::NotFound], "r").unwrap_err();
        assert_eq!(f.expected, "OK or NotFound");
    }

    #[test]
    fn a_skip_reads_as_a_skip() {
        let f = Stop::skip("not here");
        assert!(matches!(&f, Stop::Skipped(reason) if reason == "not here"));
        assert_eq!(f.to_string(), "skipped: not here");
        let failed: Stop = Failure::new("a", "b", "rule").into();
        assert!(matches!(failed, Stop::Failed(_)));
    }
}
