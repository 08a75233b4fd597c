//! Parsers for OpenFaaS-style values: durations (`60s`, `1m30s`, or bare seconds) and byte sizes
//! (`512K`, `10M`). They double as clap value parsers, so their errors say what would be right.

use std::time::Duration;

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

/// Like [`parse_duration`], refusing zero.
pub fn parse_positive_duration(value: &str) -> Result<Duration, String> {
    let d = parse_duration(value)?;
    if d.is_zero() {
        return Err(format!("{value:?} must be longer than zero"));
    }
    Ok(d)
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

/// Parses a whole number of at least one (a count such as `max_inflight`).
pub fn parse_count(value: &str) -> Result<usize, String> {
    match value.trim().parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("{value:?} is not a whole number")),
    }
}

/// Parses a whole number of zero or more (a limit such as `max_retries`).
pub fn parse_whole(value: &str) -> Result<u32, String> {
    value
        .trim()
        .parse::<u32>()
        .map_err(|_| format!("{value:?} is not a whole number (0 or more)"))
}

/// Parses a TCP port; 0 means "off" where a setting allows it.
pub fn parse_port(value: &str) -> Result<u16, String> {
    value
        .trim()
        .parse::<u16>()
        .map_err(|_| format!("{value:?} is not a port: must be 0-65535"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_sizes_and_counts_parse() {
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("15"), Ok(Duration::from_secs(15)));
        assert!(parse_duration("banana").is_err());
        assert!(parse_duration("-3").is_err());
        assert!(parse_positive_duration("0s").is_err());
        assert_eq!(parse_size("10M"), Ok(10 << 20));
        assert_eq!(parse_size("512KiB"), Ok(512 << 10));
        assert!(parse_size("10X").is_err());
        assert!(parse_count("0").expect_err("zero").contains("at least 1"));
        assert_eq!(parse_count("8"), Ok(8));
        assert!(parse_whole("-1").expect_err("neg").contains("whole number"));
        assert!(parse_port("70000").expect_err("big").contains("0-65535"));
    }
}
