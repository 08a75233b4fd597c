//! Where `X-Callback-Url` may point. `/async-function` stays open as in OpenFaaS, so without a
//! restriction anyone who may call a function can make the gateway POST results to any host it
//! can reach (an SSRF relay into the internal network). `callback_allow` lists the hosts
//! allowed: `hooks.example.com`, `*.example.com` (any subdomain), `10.0.0.7:8080` (one port),
//! `[::1]`, or `*` (anything, the default when unset).

use std::fmt;
use std::str::FromStr;

use http::Uri;

/// The hosts callbacks may go to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CallbackAllow {
    /// No patterns: any host.
    patterns: Vec<HostPattern>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct HostPattern {
    /// Lowercase host, without a leading `*.`.
    host: String,
    /// `*.host`: subdomains of `host` (not `host` itself).
    subdomains: bool,
    /// Only this port, when given.
    port: Option<u16>,
}

impl CallbackAllow {
    /// Whether callbacks may go anywhere.
    pub fn is_open(&self) -> bool {
        self.patterns.is_empty()
    }

    /// Whether `url` (an http or https URL) may be called back.
    pub fn allows(&self, url: &Uri) -> bool {
        if self.is_open() {
            return true;
        }
        let Some(host) = url.host() else {
            return false;
        };
        let host = host.to_ascii_lowercase();
        let host = host.trim_end_matches('.');
        let port = url.port_u16().unwrap_or(match url.scheme_str() {
            Some("https") => 443,
            _ => 80,
        });
        self.patterns.iter().any(|p| {
            let host_ok = if p.subdomains {
                host.strip_suffix(p.host.as_str())
                    .is_some_and(|prefix| prefix.ends_with('.') && prefix.len() > 1)
            } else {
                host == p.host
            };
            host_ok && p.port.is_none_or(|want| want == port)
        })
    }
}

impl FromStr for CallbackAllow {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, String> {
        let mut patterns = Vec::new();
        for item in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            if item == "*" {
                return Ok(Self::default());
            }
            patterns.push(parse_pattern(item).map_err(|why| {
                format!("callback_allow entry {item:?} {why}: use host, *.domain, host:port or [v6 address], comma-separated")
            })?);
        }
        Ok(Self { patterns })
    }
}

fn parse_pattern(item: &str) -> Result<HostPattern, &'static str> {
    if item.contains("://") || item.contains('/') {
        return Err("is a URL, not a host");
    }
    let (host, port) = match item.rsplit_once(':') {
        // An IPv6 address in brackets has colons of its own.
        Some((h, p)) if !h.contains(':') || h.ends_with(']') => {
            (h, Some(p.parse::<u16>().map_err(|_| "has a bad port")?))
        }
        _ => (item, None),
    };
    let (host, subdomains) = match host.strip_prefix("*.") {
        Some(rest) => (rest, true),
        None => (host, false),
    };
    let valid = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.[]:".contains(&b));
    if !valid {
        return Err("is not a host name or address");
    }
    Ok(HostPattern {
        host: host.to_ascii_lowercase(),
        subdomains,
        port,
    })
}

impl fmt::Display for CallbackAllow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_open() {
            return f.write_str("*");
        }
        let items: Vec<String> = self
            .patterns
            .iter()
            .map(|p| {
                let star = if p.subdomains { "*." } else { "" };
                match p.port {
                    Some(port) => format!("{star}{}:{port}", p.host),
                    None => format!("{star}{}", p.host),
                }
            })
            .collect();
        f.write_str(&items.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allows(list: &str, url: &str) -> bool {
        list.parse::<CallbackAllow>()
            .expect("parses")
            .allows(&url.parse().expect("url"))
    }

    #[test]
    fn hosts_subdomains_ports_and_addresses() {
        assert!(allows("", "http://169.254.169.254/latest"));
        assert!(allows("*", "http://anything:1/"));
        let list = "hooks.example.com, *.internal.test, 10.0.0.7:8080, [::1]";
        assert!(allows(list, "https://hooks.example.com/x"));
        assert!(allows(list, "https://HOOKS.example.com./x"));
        assert!(!allows(list, "https://evil.com/?hooks.example.com"));
        assert!(!allows(list, "http://hooks.example.com.evil.com/"));
        assert!(allows(list, "http://a.b.internal.test/"));
        assert!(
            !allows(list, "http://internal.test/"),
            "*. means subdomains"
        );
        assert!(!allows(list, "http://xinternal.test/"));
        assert!(allows(list, "http://10.0.0.7:8080/cb"));
        assert!(!allows(list, "http://10.0.0.7/cb"), "port 80 is not 8080");
        assert!(!allows(list, "http://user@169.254.169.254/"));
        assert!(allows(list, "http://[::1]:9000/"));
        assert!(allows("example.com:443", "https://example.com/"));
    }

    #[test]
    fn bad_entries_are_named() {
        for bad in ["http://x.com", "x.com:port", "a b", "x.com/path", "*."] {
            let err = bad.parse::<CallbackAllow>().expect_err(bad);
            assert!(err.contains(bad), "{err}");
        }
        let list: CallbackAllow = "A.com,*.b.com:81".parse().expect("parses");
        assert_eq!(list.to_string(), "a.com,*.b.com:81");
    }
}
