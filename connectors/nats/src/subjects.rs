//! Subject routing: NATS wildcards, the functions a message goes to, and its headers.

use tributary_connector_sdk::TopicMap;

/// Whether `subject` matches `pattern` (`*` one token, `>` one or more trailing tokens).
pub fn subject_matches(pattern: &str, subject: &str) -> bool {
    let mut p = pattern.split('.');
    let mut s = subject.split('.');
    loop {
        match (p.next(), s.next()) {
            (Some(">"), Some(_)) => return true,
            (Some("*"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// The functions for a message on `subject` that matched `pattern`: subscribers of either.
pub(crate) fn targets(map: &TopicMap, subject: &str, pattern: &str) -> Vec<String> {
    let mut out: Vec<String> = map.functions_for(subject).to_vec();
    if pattern != subject {
        for f in map.functions_for(pattern) {
            if !out.contains(f) {
                out.push(f.clone());
            }
        }
    }
    out
}

/// A NATS message's headers, for the functions.
pub(crate) fn headers_of(message: &async_nats::Message) -> Vec<(String, String)> {
    let mut out = Vec::new();
    if let Some(h) = &message.headers {
        for (name, values) in h.iter() {
            for v in values {
                out.push((name.to_string(), v.as_str().to_owned()));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use tributary_connector_sdk::FunctionStatus;

    #[test]
    fn wildcards_match_like_nats() {
        assert!(subject_matches("orders", "orders"));
        assert!(subject_matches("orders.*", "orders.eu"));
        assert!(!subject_matches("orders.*", "orders.eu.created"));
        assert!(subject_matches("orders.>", "orders.eu.created"));
        assert!(!subject_matches("orders.>", "orders"));
        assert!(subject_matches("*.created", "orders.created"));
        assert!(!subject_matches("orders", "orders.eu"));
    }

    #[test]
    fn targets_are_the_subject_and_the_pattern_subscribers() {
        let f = |name: &str, topic: &str| FunctionStatus {
            name: name.into(),
            namespace: "openfaas-fn".into(),
            annotations: Some(BTreeMap::from([("topic".to_owned(), topic.to_owned())])),
            ..FunctionStatus::default()
        };
        let map = TopicMap::build(
            vec![
                f("exact", "events.eu.created"),
                f("wild", "events.>"),
                f("both", "events.eu.created,events.>"),
            ],
            ",",
        );
        let mut t = targets(&map, "events.eu.created", "events.>");
        t.sort();
        assert_eq!(t, ["both", "exact", "wild"]);
        assert_eq!(targets(&map, "events.us.deleted", "events.>").len(), 2);
    }
}
