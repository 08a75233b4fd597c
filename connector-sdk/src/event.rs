//! What a message says about itself to functions: an idempotency key, stable across
//! redeliveries and retries of the same message (sent as `Idempotency-Key`), and the CloudEvents
//! 1.0 attributes it maps to, sent in binary content mode (`ce-*` headers) to functions that opt
//! in with `com.tributary.cloudevents: binary` (or to all with the `cloudevents` setting).
//!
//! Structured CloudEvents arriving as the payload (`application/cloudevents+json`, or a JSON
//! object with `specversion`, `id`, `source` and `type`) and binary ones (`ce-*` headers, which
//! the Kafka connector maps from Kafka's `ce_*`) are passed on in binary mode with their own
//! attributes.
//!
//! ```
//! use tributary_connector_sdk::event::{EventInfo, binary_mode};
//! let info = EventInfo::new("/kafka/orders", "com.tributary.kafka.message").with_id("kafka:orders:0:42");
//! let (headers, body) = binary_mode(&info, br#"{"n":1}"#.as_slice().into(), &[]);
//! assert!(headers.contains(&("ce-id".to_owned(), "kafka:orders:0:42".to_owned())));
//! assert_eq!(&body[..], br#"{"n":1}"#);
//! ```

use base64::Engine;
use bytes::Bytes;
use serde_json::Value;

/// The header carrying a message's idempotency key (the IETF draft's name).
pub const IDEMPOTENCY_KEY: http::HeaderName = http::HeaderName::from_static("idempotency-key");
/// The annotation that turns on CloudEvents for a function; its value is `binary`.
pub const CLOUDEVENTS_ANNOTATION: &str = "com.tributary.cloudevents";
/// The content type of a structured CloudEvent.
const STRUCTURED: &str = "application/cloudevents+json";

/// A message's identity and CloudEvents attributes, set by its source.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventInfo {
    /// Stable across redeliveries (e.g. `kafka:TOPIC:PARTITION:OFFSET`): the `Idempotency-Key`
    /// and `ce-id`. Without one (core NATS), no key is sent and `ce-id` is a fresh UUID.
    pub id: Option<String>,
    /// `ce-source`, a URI reference naming where it came from.
    pub source: String,
    /// `ce-type`.
    pub kind: String,
    /// `ce-subject`.
    pub subject: Option<String>,
    /// `ce-time` (RFC 3339).
    pub time: Option<String>,
}

impl EventInfo {
    /// Attributes with `source` and `type`.
    pub fn new(source: impl Into<String>, kind: impl Into<String>) -> Self {
        Self {
            source: source.into(),
            kind: kind.into(),
            ..Self::default()
        }
    }

    /// Sets the stable id.
    pub fn with_id(mut self, id: impl Into<String>) -> Self {
        self.id = Some(id.into());
        self
    }

    /// Sets the subject.
    pub fn with_subject(mut self, subject: impl Into<String>) -> Self {
        self.subject = Some(subject.into());
        self
    }

    /// Sets the time (RFC 3339).
    pub fn with_time(mut self, time: impl Into<String>) -> Self {
        self.time = Some(time.into());
        self
    }

    /// Sets the time from Unix milliseconds (ignored when out of range).
    pub fn with_unix_millis(mut self, ms: i64) -> Self {
        if let Some(t) = chrono::DateTime::from_timestamp_millis(ms) {
            self.time = Some(t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true));
        }
        self
    }
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// Whether a function's annotation asks for CloudEvents (`binary`).
pub fn wants_cloudevents(annotation: Option<&str>) -> bool {
    annotation.is_some_and(|v| v.trim().eq_ignore_ascii_case("binary"))
}

/// The headers and body for a function that takes CloudEvents in binary mode: a structured event
/// in the payload is unpacked, a message with `ce-specversion` already is left as it is, anything
/// else gets `ce-*` headers from `info`. Headers the message carries are kept.
pub fn binary_mode(
    info: &EventInfo,
    payload: Bytes,
    headers: &[(String, String)],
) -> (Vec<(String, String)>, Bytes) {
    if let Some(unpacked) = structured(&payload, headers) {
        return unpacked;
    }
    let mut out = headers.to_vec();
    if header(&out, "ce-specversion").is_some() {
        return (out, payload);
    }
    let id = info
        .id
        .clone()
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    out.push(("ce-specversion".into(), "1.0".into()));
    out.push(("ce-id".into(), id));
    out.push(("ce-source".into(), info.source.clone()));
    out.push(("ce-type".into(), info.kind.clone()));
    if let Some(s) = &info.subject {
        out.push(("ce-subject".into(), s.clone()));
    }
    if let Some(t) = &info.time {
        out.push(("ce-time".into(), t.clone()));
    }
    (out, payload)
}

/// A structured CloudEvent unpacked into binary mode, when the payload is one.
fn structured(
    payload: &Bytes,
    headers: &[(String, String)],
) -> Option<(Vec<(String, String)>, Bytes)> {
    let declared = header(headers, "content-type").is_some_and(|c| c.starts_with(STRUCTURED));
    if !declared && payload.first() != Some(&b'{') {
        return None;
    }
    let Ok(Value::Object(mut event)) = serde_json::from_slice::<Value>(payload) else {
        return None;
    };
    let required = ["specversion", "id", "source", "type"];
    if !required
        .iter()
        .all(|k| event.get(*k).is_some_and(Value::is_string))
    {
        return None;
    }
    let data = event.remove("data");
    let data_base64 = event.remove("data_base64");
    let content_type = event
        .remove("datacontenttype")
        .and_then(|v| v.as_str().map(str::to_owned));
    let body = match (data, data_base64) {
        (_, Some(Value::String(b64))) => Bytes::from(
            base64::engine::general_purpose::STANDARD
                .decode(b64.as_bytes())
                .ok()?,
        ),
        (Some(Value::String(text)), _)
            if content_type.as_deref().is_some_and(|c| !c.contains("json")) =>
        {
            Bytes::from(text)
        }
        (Some(v), _) => Bytes::from(serde_json::to_vec(&v).ok()?),
        (None, _) => Bytes::new(),
    };
    let mut out: Vec<(String, String)> = headers
        .iter()
        .filter(|(k, _)| !k.eq_ignore_ascii_case("content-type"))
        .cloned()
        .collect();
    out.push((
        "Content-Type".into(),
        content_type.unwrap_or_else(|| "application/json".into()),
    ));
    for (k, v) in event {
        let value = match v {
            Value::String(s) => s,
            other => other.to_string(),
        };
        out.push((format!("ce-{k}"), value));
    }
    Some((out, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get<'a>(h: &'a [(String, String)], k: &str) -> Option<&'a str> {
        header(h, k)
    }

    #[test]
    fn binary_headers_from_the_source() {
        let info = EventInfo::new("/cron/tick", "com.tributary.cron.fired")
            .with_id("cron:tick:@every 1s:2026-01-01T00:00:00Z")
            .with_subject("@every 1s")
            .with_time("2026-01-01T00:00:00Z");
        let (h, body) = binary_mode(
            &info,
            Bytes::from_static(b"x"),
            &[("X-A".into(), "1".into())],
        );
        assert_eq!(&body[..], b"x");
        assert_eq!(get(&h, "ce-specversion"), Some("1.0"));
        assert_eq!(get(&h, "ce-id"), info.id.as_deref());
        assert_eq!(get(&h, "ce-source"), Some("/cron/tick"));
        assert_eq!(get(&h, "ce-type"), Some("com.tributary.cron.fired"));
        assert_eq!(get(&h, "ce-subject"), Some("@every 1s"));
        assert_eq!(get(&h, "ce-time"), Some("2026-01-01T00:00:00Z"));
        assert_eq!(get(&h, "x-a"), Some("1"));
        let (h, _) = binary_mode(&EventInfo::new("/nats", "t"), Bytes::new(), &[]);
        assert_eq!(
            get(&h, "ce-id").map(str::len),
            Some(36),
            "a UUID without a stable id"
        );
    }

    #[test]
    fn structured_events_are_unpacked() {
        let payload = Bytes::from_static(
            br#"{"specversion":"1.0","id":"e-1","source":"/shop","type":"order.created","subject":"o-9","datacontenttype":"application/json","data":{"amount":5},"traceparent":"00-abc-def-01"}"#,
        );
        let (h, body) = binary_mode(
            &EventInfo::new("/kafka/x", "k"),
            payload,
            &[("content-type".into(), STRUCTURED.into())],
        );
        assert_eq!(&body[..], br#"{"amount":5}"#);
        assert_eq!(get(&h, "ce-id"), Some("e-1"));
        assert_eq!(get(&h, "ce-source"), Some("/shop"));
        assert_eq!(get(&h, "ce-type"), Some("order.created"));
        assert_eq!(get(&h, "ce-subject"), Some("o-9"));
        assert_eq!(
            get(&h, "ce-traceparent"),
            Some("00-abc-def-01"),
            "extensions pass too"
        );
        assert_eq!(get(&h, "content-type"), Some("application/json"));
        assert_eq!(
            h.iter()
                .filter(|(k, _)| k.eq_ignore_ascii_case("content-type"))
                .count(),
            1
        );
        let b64 = Bytes::from_static(
            br#"{"specversion":"1.0","id":"2","source":"/s","type":"t","data_base64":"AAEC"}"#,
        );
        let (_, body) = binary_mode(&EventInfo::default(), b64, &[]);
        assert_eq!(&body[..], &[0, 1, 2]);
        let (h, body) = binary_mode(
            &EventInfo::new("/s", "t"),
            Bytes::from_static(br#"{"id": 1}"#),
            &[],
        );
        assert_eq!(
            &body[..],
            br#"{"id": 1}"#,
            "an ordinary JSON payload is not an event"
        );
        assert_eq!(get(&h, "ce-source"), Some("/s"));
    }

    #[test]
    fn binary_events_keep_their_attributes() {
        let headers = vec![
            ("ce-specversion".to_owned(), "1.0".to_owned()),
            ("ce-id".to_owned(), "k-1".to_owned()),
        ];
        let (h, _) = binary_mode(
            &EventInfo::new("/kafka/x", "k").with_id("mine"),
            Bytes::new(),
            &headers,
        );
        assert_eq!(h, headers, "the event's own attributes win");
        assert!(wants_cloudevents(Some(" Binary ")));
        assert!(!wants_cloudevents(Some("structured")));
        assert!(!wants_cloudevents(None));
    }
}
