//! The `X-Kafka-*` headers a function gets for a record.

use base64::Engine;
use rdkafka::Message as _;
use rdkafka::message::{BorrowedMessage, Headers};

/// `X-Kafka-*` headers for the functions.
pub(crate) fn function_headers(m: &BorrowedMessage<'_>) -> Vec<(String, String)> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut h = vec![
        ("X-Kafka-Partition".to_owned(), m.partition().to_string()),
        ("X-Kafka-Offset".to_owned(), m.offset().to_string()),
    ];
    if let Some(ts) = m.timestamp().to_millis() {
        h.push(("X-Kafka-Timestamp".to_owned(), ts.to_string()));
    }
    if let Some(key) = m.key() {
        match std::str::from_utf8(key).ok().filter(|k| header_value_ok(k)) {
            Some(k) => h.push(("X-Kafka-Key".to_owned(), k.to_owned())),
            None => {
                h.push(("X-Kafka-Key".to_owned(), b64.encode(key)));
                h.push(("X-Kafka-Key-Enc".to_owned(), "b64".to_owned()));
            }
        }
    }
    if let Some(headers) = m.headers() {
        for kh in headers.iter() {
            if kh.key.is_empty() || !kh.key.bytes().all(is_token_byte) {
                tracing::debug!(
                    header = kh.key,
                    "Kafka header name is not a valid HTTP header name: not passed"
                );
                continue;
            }
            let value = kh.value.unwrap_or_default();
            let value = match std::str::from_utf8(value)
                .ok()
                .filter(|v| header_value_ok(v))
            {
                Some(v) => v.to_owned(),
                None => b64.encode(value),
            };
            // CloudEvents' Kafka binding names attributes `ce_*`; HTTP's, `ce-*`. W3C trace
            // context keeps its names, so the trace continues.
            if let Some(attribute) = kh.key.strip_prefix("ce_") {
                h.push((format!("ce-{attribute}"), value));
            } else if tributary_core::trace::is_trace_context(kh.key) {
                h.push((kh.key.to_ascii_lowercase(), value));
            } else {
                h.push((format!("X-Kafka-{}", kh.key), value));
            }
        }
    }
    h
}

fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn header_value_ok(v: &str) -> bool {
    v.bytes().all(|b| b == b'\t' || (0x20..0x7f).contains(&b))
}
