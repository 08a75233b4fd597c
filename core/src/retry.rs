//! Retry classification and backoff, shared by the connector runtime and the async queue.
//!
//! A failure is retried when there was no answer (a connection error) or the status is one of the
//! function's retryable codes (by default 408, 429, 500, 502, 503, 504, as OpenFaaS'
//! queue-worker). Waits grow exponentially from `min_wait` to `max_wait` with full jitter; a
//! `Retry-After` from the function wins, capped at `max_wait`. Per function, the OpenFaaS
//! annotations `com.openfaas.retry.attempts|codes|min_wait|max_wait` override the defaults.

use std::time::Duration;

use crate::units::parse_duration;

/// Status codes worth another attempt, as in OpenFaaS' queue-worker.
pub const RETRYABLE_STATUS: [u16; 6] = [408, 429, 500, 502, 503, 504];

/// Annotation: attempts in all, the first one included.
pub const ATTEMPTS_ANNOTATION: &str = "com.openfaas.retry.attempts";
/// Annotation: retryable status codes, comma separated (`429,503`).
pub const CODES_ANNOTATION: &str = "com.openfaas.retry.codes";
/// Annotation: the first wait (`500ms`).
pub const MIN_WAIT_ANNOTATION: &str = "com.openfaas.retry.min_wait";
/// Annotation: the longest wait (`30s`).
pub const MAX_WAIT_ANNOTATION: &str = "com.openfaas.retry.max_wait";

/// How one function's failures are retried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetrySettings {
    /// Attempts in all, the first one included (1: never retried).
    pub attempts: u32,
    /// Statuses worth another attempt; a call with no answer always is.
    pub codes: Vec<u16>,
    /// The wait before the first retry; it doubles each retry.
    pub min_wait: Duration,
    /// The longest single wait, `Retry-After` included.
    pub max_wait: Duration,
}

impl RetrySettings {
    /// `attempts` in all with waits from `min_wait` to `max_wait`, on the default codes.
    pub fn new(attempts: u32, min_wait: Duration, max_wait: Duration) -> Self {
        Self {
            attempts: attempts.max(1),
            codes: RETRYABLE_STATUS.to_vec(),
            min_wait: min_wait.min(max_wait),
            max_wait,
        }
    }

    /// Retries allowed after the first attempt.
    pub fn max_retries(&self) -> u32 {
        self.attempts.saturating_sub(1)
    }

    /// These settings overridden by a function's `com.openfaas.retry.*` annotations
    /// (`annotation` looks one up); an invalid value is logged and the default kept.
    pub fn with_annotations<'a>(
        mut self,
        function: &str,
        annotation: impl Fn(&str) -> Option<&'a str>,
    ) -> Self {
        let warn = |key: &str, value: &str| {
            tracing::warn!(
                function,
                annotation = key,
                value,
                "invalid retry annotation; using the default"
            );
        };
        if let Some(v) = annotation(ATTEMPTS_ANNOTATION) {
            match v.trim().parse::<u32>() {
                Ok(n) if n >= 1 => self.attempts = n,
                _ => warn(ATTEMPTS_ANNOTATION, v),
            }
        }
        if let Some(v) = annotation(CODES_ANNOTATION) {
            let codes: Result<Vec<u16>, _> = v
                .split(',')
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .map(str::parse::<u16>)
                .collect();
            match codes {
                Ok(c) => self.codes = c,
                Err(_) => warn(CODES_ANNOTATION, v),
            }
        }
        for (key, slot) in [
            (MIN_WAIT_ANNOTATION, &mut self.min_wait),
            (MAX_WAIT_ANNOTATION, &mut self.max_wait),
        ] {
            if let Some(v) = annotation(key) {
                match parse_duration(v) {
                    Ok(d) => *slot = d,
                    Err(_) => warn(key, v),
                }
            }
        }
        self.min_wait = self.min_wait.min(self.max_wait);
        self
    }

    /// Whether a call that ended with `status` (`None`: no answer) is worth another attempt.
    pub fn is_retryable(&self, status: Option<u16>) -> bool {
        status.is_none_or(|s| self.codes.contains(&s))
    }

    /// The wait before retry number `retry` (1-based): full jitter over the exponential
    /// ceiling, or the function's `Retry-After`, capped at `max_wait` either way.
    pub fn backoff(&self, retry: u32, retry_after: Option<Duration>) -> Duration {
        match retry_after {
            Some(ra) => ra.min(self.max_wait),
            None => full_jitter(exponential(retry, self.min_wait, self.max_wait)),
        }
    }
}

/// Full jitter: a uniformly random wait between zero and `ceiling`.
pub fn full_jitter(ceiling: Duration) -> Duration {
    ceiling.mul_f64(fastrand::f64())
}

/// The exponential ceiling before retry number `retry` (1-based): `initial * 2^(retry-1)`,
/// capped at `max`.
pub fn exponential(retry: u32, initial: Duration, max: Duration) -> Duration {
    let factor = 2f64.powi(
        i32::try_from(retry.saturating_sub(1))
            .unwrap_or(i32::MAX)
            .min(62),
    );
    Duration::from_secs_f64((initial.as_secs_f64() * factor).min(max.as_secs_f64()))
}

/// Reads `Retry-After` as seconds (HTTP dates are not used by functions in practice).
pub fn retry_after(headers: &http::HeaderMap) -> Option<Duration> {
    let v = headers
        .get(http::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    v.parse::<f64>()
        .ok()
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map(Duration::from_secs_f64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn exponential_doubles_and_caps() {
        let (i, m) = (Duration::from_millis(100), Duration::from_secs(1));
        assert_eq!(exponential(1, i, m), Duration::from_millis(100));
        assert_eq!(exponential(3, i, m), Duration::from_millis(400));
        assert_eq!(exponential(10, i, m), m);
        assert_eq!(exponential(500, i, m), m);
        assert!(full_jitter(m) <= m);
    }

    #[test]
    fn retry_after_reads_seconds() {
        let mut h = http::HeaderMap::new();
        assert_eq!(retry_after(&h), None);
        h.insert(
            http::header::RETRY_AFTER,
            http::HeaderValue::from_static("2"),
        );
        assert_eq!(retry_after(&h), Some(Duration::from_secs(2)));
        h.insert(
            http::header::RETRY_AFTER,
            http::HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
        );
        assert_eq!(retry_after(&h), None);
    }

    #[test]
    fn annotations_override_the_defaults() {
        let defaults = RetrySettings::new(10, Duration::from_secs(10), Duration::from_secs(120));
        let a: HashMap<&str, &str> = HashMap::from([
            (ATTEMPTS_ANNOTATION, "3"),
            (CODES_ANNOTATION, "429, 503"),
            (MIN_WAIT_ANNOTATION, "500ms"),
            (MAX_WAIT_ANNOTATION, "5s"),
        ]);
        let p = defaults
            .clone()
            .with_annotations("f", |k| a.get(k).copied());
        assert_eq!(p.attempts, 3);
        assert_eq!(p.max_retries(), 2);
        assert_eq!(p.codes, vec![429, 503]);
        assert_eq!(p.min_wait, Duration::from_millis(500));
        assert_eq!(p.max_wait, Duration::from_secs(5));
        assert!(p.is_retryable(None) && p.is_retryable(Some(429)));
        assert!(!p.is_retryable(Some(500)));
        assert_eq!(
            p.backoff(1, Some(Duration::from_secs(60))),
            Duration::from_secs(5)
        );
        let bad: HashMap<&str, &str> = HashMap::from([(ATTEMPTS_ANNOTATION, "many")]);
        let p = defaults.with_annotations("f", |k| bad.get(k).copied());
        assert_eq!(p.attempts, 10);
        assert_eq!(p.codes, RETRYABLE_STATUS.to_vec());
    }
}
