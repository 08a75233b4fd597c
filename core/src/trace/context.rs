//! W3C trace context: the `traceparent` a request or message carries, parsed and written.

/// The trace context header.
pub const TRACEPARENT: &str = "traceparent";
/// The vendor trace state header, passed on unchanged.
pub const TRACESTATE: &str = "tracestate";
/// Whether a header or message attribute is W3C trace context (kept under its own name by
/// connectors, so the trace continues).
pub fn is_trace_context(name: &str) -> bool {
    name.eq_ignore_ascii_case(TRACEPARENT) || name.eq_ignore_ascii_case(TRACESTATE)
}

/// One span's place in a trace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceContext {
    /// The trace.
    pub trace_id: u128,
    /// This span.
    pub span_id: u64,
    /// Whether the trace is sampled (flag 01).
    pub sampled: bool,
}

fn nonzero_u128() -> u128 {
    fastrand::u128(1..)
}

fn nonzero_u64() -> u64 {
    fastrand::u64(1..)
}

impl TraceContext {
    /// Parses a `traceparent` value (`00-TRACE-SPAN-FLAGS`); `None` when invalid.
    pub fn parse(value: &str) -> Option<Self> {
        let mut parts = value.trim().split('-');
        let (version, trace, span, flags) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        // Version 00 has exactly four fields; later versions may add more.
        if version.len() != 2
            || version.eq_ignore_ascii_case("ff")
            || (version == "00" && parts.next().is_some())
        {
            return None;
        }
        u8::from_str_radix(version, 16).ok()?;
        if trace.len() != 32 || span.len() != 16 || flags.len() != 2 {
            return None;
        }
        let hex = |s: &str| {
            s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        };
        if !hex(trace) || !hex(span) || !hex(flags) {
            return None;
        }
        let trace_id = u128::from_str_radix(trace, 16).ok().filter(|t| *t != 0)?;
        let span_id = u64::from_str_radix(span, 16).ok().filter(|s| *s != 0)?;
        let flags = u8::from_str_radix(flags, 16).ok()?;
        Some(Self {
            trace_id,
            span_id,
            sampled: flags & 1 == 1,
        })
    }

    /// A new trace (sampled).
    pub fn new_root() -> Self {
        Self {
            trace_id: nonzero_u128(),
            span_id: nonzero_u64(),
            sampled: true,
        }
    }

    /// A new span in the same trace.
    pub fn child(&self) -> Self {
        Self {
            span_id: nonzero_u64(),
            ..*self
        }
    }

    /// The `traceparent` value naming this span.
    pub fn header_value(&self) -> http::HeaderValue {
        http::HeaderValue::from_bytes(&self.text()).unwrap_or(http::HeaderValue::from_static(""))
    }

    /// The `traceparent` header's text.
    pub fn header(&self) -> String {
        String::from_utf8_lossy(&self.text()).into_owned()
    }

    /// `00-TRACE-SPAN-FLAGS`: 55 visible ASCII bytes, written without the formatting machinery
    /// (once per call a connector or the gateway makes).
    fn text(&self) -> [u8; 55] {
        let mut text = [0u8; 55];
        text[..3].copy_from_slice(b"00-");
        write_hex(&mut text[3..35], self.trace_id);
        text[35] = b'-';
        write_hex(&mut text[36..52], u128::from(self.span_id));
        text[52..].copy_from_slice(if self.sampled { b"-01" } else { b"-00" });
        text
    }
}

/// Writes the low `out.len()` hex digits of `n` into `out`, lower case.
fn write_hex(out: &mut [u8], mut n: u128) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for byte in out.iter_mut().rev() {
        *byte = DIGITS[(n & 0xf) as usize];
        n >>= 4;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_valid_and_refuses_invalid_headers() {
        let c = TraceContext::parse("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
            .expect("valid");
        assert_eq!(c.trace_id, 0x0af7651916cd43dd8448eb211c80319c);
        assert_eq!(c.span_id, 0xb7ad6b7169203331);
        assert!(c.sampled);
        assert_eq!(
            c.header(),
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
        );
        for bad in [
            "",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331",
            "00-00000000000000000000000000000000-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
            "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-extra",
            "00-xyz-b7ad6b7169203331-01",
        ] {
            assert!(TraceContext::parse(bad).is_none(), "{bad}");
        }
        assert!(
            TraceContext::parse("01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00-later")
                .is_some()
        );
    }

    #[test]
    fn the_header_value_is_the_header_text() {
        for text in [
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "00-00000000000000000000000000000001-0000000000000001-00",
            "00-ffffffffffffffffffffffffffffffff-ffffffffffffffff-01",
        ] {
            let c = TraceContext::parse(text).expect("valid");
            assert_eq!(c.header_value(), text);
            assert_eq!(c.header(), text);
        }
        let root = TraceContext::new_root();
        let expected = format!("00-{:032x}-{:016x}-01", root.trace_id, root.span_id);
        assert_eq!(root.header(), expected);
        assert_eq!(root.header_value(), expected.as_str());
    }
}
