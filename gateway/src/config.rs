//! Gateway configuration and the parsers for OpenFaaS-style values (`60s`, `10MB`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Settings of one gateway instance.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// Address the API listens on.
    pub bind: SocketAddr,
    /// How long a function may take to answer (`upstream_timeout`).
    pub upstream_timeout: Duration,
    /// Largest request body accepted, in bytes (`max_body_size`).
    pub max_body_size: usize,
    /// Whether `/system/*` requires basic auth (`basic_auth`).
    pub basic_auth: bool,
    /// Folder holding `basic-auth-user` and `basic-auth-password` (`secret_mount_path`).
    pub secret_mount_path: PathBuf,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            bind: SocketAddr::from(([0, 0, 0, 0], 8080)),
            upstream_timeout: Duration::from_secs(60),
            max_body_size: 32 * 1024 * 1024,
            basic_auth: false,
            secret_mount_path: PathBuf::from("/var/openfaas/secrets"),
        }
    }
}

/// Parses a duration the way OpenFaaS components do: a Go-style duration (`1m30s`, `500ms`)
/// or a bare number of seconds.
pub fn parse_duration(value: &str) -> Result<Duration, String> {
    let v = value.trim();
    if v.is_empty() {
        return Err("empty duration: use e.g. 60s, 1m30s or 500ms".into());
    }
    if let Ok(secs) = v.parse::<f64>() {
        if secs.is_finite() && secs >= 0.0 {
            return Ok(Duration::from_secs_f64(secs));
        }
        return Err(format!("invalid duration {value:?}: must be zero or more"));
    }
    humantime::parse_duration(v)
        .map_err(|e| format!("invalid duration {value:?} ({e}): use e.g. 60s, 1m30s or 500ms"))
}

/// Parses a byte size: a number with an optional `K`, `M` or `G` suffix (powers of 1024,
/// `KB`/`KiB`/`Mi` spellings accepted).
pub fn parse_size(value: &str) -> Result<usize, String> {
    let v = value.trim();
    let split = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
    let (num, unit) = v.split_at(split);
    let n: usize = num
        .parse()
        .map_err(|_| format!("invalid size {value:?}: use bytes or e.g. 512K, 10M, 1G"))?;
    let mult: usize = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "ki" | "kib" => 1 << 10,
        "m" | "mb" | "mi" | "mib" => 1 << 20,
        "g" | "gb" | "gi" | "gib" => 1 << 30,
        other => {
            return Err(format!(
                "invalid size unit {other:?} in {value:?}: use K, M or G"
            ));
        }
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("size {value:?} is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_accept_go_style_and_seconds() {
        assert_eq!(parse_duration("60s"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("15"), Ok(Duration::from_secs(15)));
        assert!(parse_duration("banana").is_err());
        assert!(parse_duration("-3").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn sizes_accept_suffixes() {
        assert_eq!(parse_size("1024"), Ok(1024));
        assert_eq!(parse_size("10M"), Ok(10 << 20));
        assert_eq!(parse_size("512KiB"), Ok(512 << 10));
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert!(parse_size("10X").is_err());
        assert!(parse_size("M").is_err());
    }
}
