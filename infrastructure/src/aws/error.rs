//! The one place AWS SDK errors are translated: each failure is classified as transient
//! (throttling, 5xx, timeouts, I/O) or permanent, and transient ones are retried with full-jitter
//! exponential backoff a bounded number of times (the shape of quickwit's `retry.rs`).
//!
//! The SDK has its own retry layer (standard mode, 3 attempts by default); this one sits above
//! it so that a burst of throttling that outlasts the SDK's attempts still gets a few spaced-out
//! tries before the caller sees `Unavailable`. The composition root may tune or disable either.

use aws_sdk_dynamodb::config::http::HttpResponse;
use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use commands::StoreError;
use projections::store::ReadModelError;
use rand::Rng;
use std::future::Future;
use std::time::Duration;

/// Error codes that mean "try again later", across DynamoDB, SQS and EventBridge.
const TRANSIENT_CODES: &[&str] = &[
    "ThrottlingException",
    "Throttling",
    "ThrottledException",
    "RequestThrottled",
    "RequestThrottledException",
    "TooManyRequestsException",
    "RequestLimitExceeded",
    // DynamoDB Streams' request-rate limit (a 400).
    "LimitExceededException",
    "ProvisionedThroughputExceededException",
    "TransactionInProgressException",
    "InternalServerError",
    "InternalFailure",
    "InternalError",
    "InternalException",
    "ServiceUnavailable",
    "ServiceUnavailableException",
    "RequestTimeout",
    "RequestTimeoutException",
];

/// One classified SDK failure.
#[derive(Debug, Clone)]
pub struct AwsFailure {
    /// The SDK operation, for example `TransactWriteItems`.
    pub operation: &'static str,
    /// The service's error code when it answered with one.
    pub code: Option<String>,
    pub transient: bool,
    /// The whole error chain, for logs.
    pub message: String,
}

impl std::fmt::Display for AwsFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} failed: {}", self.operation, self.message)
    }
}

impl std::error::Error for AwsFailure {}

/// Classifies any SDK error (every AWS service crate re-exports the same `SdkError`).
pub fn classify<E>(operation: &'static str, err: &SdkError<E, HttpResponse>) -> AwsFailure
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let code = err.code().map(str::to_owned);
    let transient = match err {
        SdkError::ConstructionFailure(_) => false,
        SdkError::TimeoutError(_) | SdkError::ResponseError(_) => true,
        SdkError::DispatchFailure(d) => !d.is_user(),
        SdkError::ServiceError(service) => {
            let status = service.raw().status().as_u16();
            status >= 500
                || status == 429
                || code
                    .as_deref()
                    .is_some_and(|c| TRANSIENT_CODES.contains(&c))
        }
        _ => false,
    };
    AwsFailure {
        operation,
        code,
        transient,
        message: DisplayErrorContext(err).to_string(),
    }
}

impl AwsFailure {
    /// Whether the service answered with the error code `code`.
    pub fn is(&self, code: &str) -> bool {
        self.code.as_deref() == Some(code)
    }

    /// A failure the adapter itself detected (for example a transaction cancelled for reasons
    /// that are all transient).
    pub(crate) fn new(
        operation: &'static str,
        transient: bool,
        message: impl Into<String>,
    ) -> Self {
        Self {
            operation,
            code: None,
            transient,
            message: message.into(),
        }
    }
}

impl AwsFailure {
    /// The failure as a port's error: `transient(message)` when trying again may help, else
    /// `permanent(message)`.
    pub(crate) fn into_port_error<E>(
        self,
        transient: impl FnOnce(String) -> E,
        permanent: impl FnOnce(String) -> E,
    ) -> E {
        let message = self.to_string();
        if self.transient {
            transient(message)
        } else {
            permanent(message)
        }
    }
}

impl From<AwsFailure> for StoreError {
    fn from(f: AwsFailure) -> Self {
        f.into_port_error(StoreError::Unavailable, StoreError::Internal)
    }
}

impl From<AwsFailure> for ReadModelError {
    fn from(f: AwsFailure) -> Self {
        f.into_port_error(ReadModelError::Unavailable, ReadModelError::Internal)
    }
}

/// Errors that know whether trying again may help.
pub trait Transient {
    fn is_transient(&self) -> bool;
}

impl Transient for AwsFailure {
    fn is_transient(&self) -> bool {
        self.transient
    }
}

impl Transient for StoreError {
    fn is_transient(&self) -> bool {
        StoreError::is_transient(self)
    }
}

impl Transient for ReadModelError {
    fn is_transient(&self) -> bool {
        ReadModelError::is_transient(self)
    }
}

/// How transient failures are retried: at most `max_attempts` tries in total, sleeping a random
/// duration in `[0, min(max_delay, base_delay * 2^n)]` (full jitter) before try `n + 1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    pub base_delay: Duration,
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 5,
            base_delay: Duration::from_millis(50),
            max_delay: Duration::from_secs(2),
        }
    }
}

impl RetryPolicy {
    /// One attempt, no retry.
    pub fn no_retries() -> Self {
        Self {
            max_attempts: 1,
            ..Self::default()
        }
    }

    /// The pause before attempt `attempt + 1` (attempts count from 1).
    pub fn delay(&self, attempt: u32) -> Duration {
        let exp = self
            .base_delay
            .saturating_mul(2u32.saturating_pow(attempt.saturating_sub(1).min(16)));
        let cap = exp.min(self.max_delay);
        let millis = u64::try_from(cap.as_millis()).unwrap_or(u64::MAX);
        Duration::from_millis(rand::rng().random_range(0..=millis))
    }

    /// Sends one AWS request, built afresh by `request` for each attempt, with [`Self::retry`];
    /// a failure comes back [`classify`]d. `request` returns the SDK's `send()` future:
    /// `retry.send("GetItem", || client.get_item().table_name(t).key(k, v).send())`.
    pub async fn send<T, E, F, Fut>(
        &self,
        operation: &'static str,
        mut request: F,
    ) -> Result<T, AwsFailure>
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, SdkError<E, HttpResponse>>>,
    {
        self.retry(operation, |_| {
            let sent = request();
            async move { sent.await.map_err(|e| classify(operation, &e)) }
        })
        .await
    }

    /// Runs `op` (given the attempt number, from 1) until it succeeds, fails permanently, or
    /// `max_attempts` is reached; the last error is returned.
    pub async fn retry<T, E, F, Fut>(&self, what: &'static str, mut op: F) -> Result<T, E>
    where
        E: Transient + std::fmt::Display,
        F: FnMut(u32) -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let mut attempt = 1;
        loop {
            match op(attempt).await {
                Ok(v) => return Ok(v),
                Err(e) if e.is_transient() && attempt < self.max_attempts.max(1) => {
                    let pause = self.delay(attempt);
                    tracing::warn!(
                        operation = what,
                        attempt,
                        pause_ms = pause.as_millis() as u64,
                        error = %e,
                        "transient AWS failure, retrying"
                    );
                    tokio::time::sleep(pause).await;
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[test]
    fn delays_are_capped_and_jittered() {
        let p = RetryPolicy {
            max_attempts: 10,
            base_delay: Duration::from_millis(10),
            max_delay: Duration::from_millis(100),
        };
        for attempt in 1..40 {
            assert!(p.delay(attempt) <= Duration::from_millis(100));
        }
    }

    /// How many times `p` calls an operation that always fails, transiently or not.
    async fn calls_of_failing_op(p: &RetryPolicy, transient: bool) -> u32 {
        let calls = AtomicU32::new(0);
        let r: Result<(), AwsFailure> = p
            .retry("Test", |_| async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err(AwsFailure::new("Test", transient, "failing"))
            })
            .await;
        assert!(r.is_err());
        calls.load(Ordering::SeqCst)
    }

    #[tokio::test]
    async fn transient_errors_are_retried_a_bounded_number_of_times() {
        let p = RetryPolicy {
            max_attempts: 3,
            base_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(2),
        };
        assert_eq!(calls_of_failing_op(&p, true).await, 3);
        assert_eq!(
            calls_of_failing_op(&p, false).await,
            1,
            "permanent errors are not retried"
        );
    }
}
