//! Event filters: a function's `com.tributary.filter` annotation holds an EventBridge-style
//! pattern, and only messages that match it are delivered to that function (the others count as
//! done for acknowledgement).
//!
//! The pattern is a JSON object matched against the message: its payload's fields when the
//! payload is a JSON object, and its headers (names in lower case) under a `headers` key. Each
//! field of the pattern is a list of allowed values (any may match), or an object that matches
//! a nested object; every field must match. Besides literal values (strings, numbers, booleans,
//! `null`), a list may hold `{"prefix": "x"}`, `{"suffix": "x"}`, `{"equals-ignore-case": "x"}`,
//! `{"exists": true|false}`, `{"numeric": [">", 0, "<=", 5]}` and `{"anything-but": V}` where `V`
//! is a value, a list of values, or `{"prefix": ..}`/`{"suffix": ..}`. A field whose value is a
//! list matches when any element does.
//!
//! ```
//! use tributary_connector_sdk::filter::Filter;
//! let f = Filter::parse(r#"{"type": ["order"], "amount": [{"numeric": [">", 100]}]}"#).unwrap();
//! assert!(f.matches(&serde_json::json!({"type": "order", "amount": 150})));
//! assert!(!f.matches(&serde_json::json!({"type": "order", "amount": 50})));
//! ```

use serde_json::{Map, Value};

/// The annotation holding a function's filter.
pub const FILTER_ANNOTATION: &str = "com.tributary.filter";

/// Why a pattern cannot be used; the path names the offending field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {FILTER_ANNOTATION} pattern at {path}: {problem}")]
pub struct FilterError {
    /// Where in the pattern, e.g. `$.amount[0]`.
    pub path: String,
    /// What is wrong and what is expected.
    pub problem: String,
}

/// A parsed pattern.
#[derive(Debug, Clone, PartialEq)]
pub struct Filter {
    root: Vec<(String, Node)>,
}

#[derive(Debug, Clone, PartialEq)]
enum Node {
    Object(Vec<(String, Node)>),
    AnyOf(Vec<Matcher>),
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Op {
    Eq,
    Lt,
    Le,
    Gt,
    Ge,
}

#[derive(Debug, Clone, PartialEq)]
enum Matcher {
    Exact(Value),
    Prefix(String),
    Suffix(String),
    EqualsIgnoreCase(String),
    Exists(bool),
    Numeric(Vec<(Op, f64)>),
    AnythingBut(Vec<Value>),
    AnythingButPrefix(String),
    AnythingButSuffix(String),
}

fn bad(path: &str, problem: impl Into<String>) -> FilterError {
    FilterError {
        path: path.to_owned(),
        problem: problem.into(),
    }
}

impl Filter {
    /// Parses a pattern.
    pub fn parse(text: &str) -> Result<Self, FilterError> {
        let value: Value = serde_json::from_str(text).map_err(|e| {
            bad(
                "$",
                format!("not JSON ({e}); write e.g. {{\"type\": [\"order\"]}}"),
            )
        })?;
        match value {
            Value::Object(fields) if !fields.is_empty() => Ok(Self {
                root: fields_of(&fields, "$")?,
            }),
            _ => Err(bad("$", "must be a non-empty JSON object of fields")),
        }
    }

    /// Whether `event` (an object of payload fields and `headers`) matches.
    pub fn matches(&self, event: &Value) -> bool {
        all_match(&self.root, Some(event))
    }
}

fn fields_of(fields: &Map<String, Value>, path: &str) -> Result<Vec<(String, Node)>, FilterError> {
    fields
        .iter()
        .map(|(k, v)| {
            let here = format!("{path}.{k}");
            let node = match v {
                Value::Object(inner) if !inner.is_empty() => Node::Object(fields_of(inner, &here)?),
                Value::Array(list) if !list.is_empty() => Node::AnyOf(
                    list.iter()
                        .enumerate()
                        .map(|(i, m)| matcher(m, &format!("{here}[{i}]")))
                        .collect::<Result<_, _>>()?,
                ),
                _ => {
                    return Err(bad(
                        &here,
                        "must be a non-empty list of allowed values or matchers, or a nested object",
                    ));
                }
            };
            Ok((k.clone(), node))
        })
        .collect()
}

fn matcher(m: &Value, path: &str) -> Result<Matcher, FilterError> {
    let Value::Object(o) = m else {
        return match m {
            Value::Array(_) => Err(bad(path, "a list inside a list is not a matcher")),
            v => Ok(Matcher::Exact(v.clone())),
        };
    };
    let mut entries = o.iter();
    let (Some((name, arg)), None) = (entries.next(), entries.next()) else {
        return Err(bad(
            path,
            "a matcher object has exactly one key, e.g. {\"prefix\": \"x\"}",
        ));
    };
    let text = |what: &str| {
        arg.as_str()
            .map(str::to_owned)
            .ok_or_else(|| bad(path, format!("{what} takes a string")))
    };
    Ok(match name.as_str() {
        "prefix" => Matcher::Prefix(text("prefix")?),
        "suffix" => Matcher::Suffix(text("suffix")?),
        "equals-ignore-case" => {
            Matcher::EqualsIgnoreCase(text("equals-ignore-case")?.to_lowercase())
        }
        "exists" => Matcher::Exists(
            arg.as_bool()
                .ok_or_else(|| bad(path, "exists takes true or false"))?,
        ),
        "numeric" => Matcher::Numeric(numeric(arg, path)?),
        "anything-but" => match arg {
            Value::Array(values) if values.iter().all(|v| !v.is_object() && !v.is_array()) => {
                Matcher::AnythingBut(values.clone())
            }
            Value::Object(inner) => match (inner.get("prefix"), inner.get("suffix"), inner.len()) {
                (Some(Value::String(p)), None, 1) => Matcher::AnythingButPrefix(p.clone()),
                (None, Some(Value::String(s)), 1) => Matcher::AnythingButSuffix(s.clone()),
                _ => {
                    return Err(bad(
                        path,
                        "anything-but takes a value, a list of values, {\"prefix\": \"x\"} or {\"suffix\": \"x\"}",
                    ));
                }
            },
            Value::Array(_) => return Err(bad(path, "anything-but lists plain values only")),
            v => Matcher::AnythingBut(vec![v.clone()]),
        },
        other => {
            return Err(bad(
                path,
                format!(
                    "unknown matcher {other:?}: use prefix, suffix, equals-ignore-case, exists, numeric or anything-but"
                ),
            ));
        }
    })
}

fn numeric(arg: &Value, path: &str) -> Result<Vec<(Op, f64)>, FilterError> {
    let expected = "numeric takes pairs of an operator (=, <, <=, >, >=) and a number, e.g. [\">\", 0, \"<=\", 5]";
    let Some(list) = arg.as_array().filter(|l| !l.is_empty() && l.len() % 2 == 0) else {
        return Err(bad(path, expected));
    };
    list.chunks(2)
        .map(|pair| {
            let op = match pair[0].as_str() {
                Some("=") => Op::Eq,
                Some("<") => Op::Lt,
                Some("<=") => Op::Le,
                Some(">") => Op::Gt,
                Some(">=") => Op::Ge,
                _ => return Err(bad(path, expected)),
            };
            let n = pair[1].as_f64().ok_or_else(|| bad(path, expected))?;
            Ok((op, n))
        })
        .collect()
}

fn all_match(fields: &[(String, Node)], value: Option<&Value>) -> bool {
    fields.iter().all(|(k, node)| {
        let field = value.and_then(|v| v.get(k));
        match node {
            Node::Object(inner) => match field {
                Some(Value::Array(items)) => items.iter().any(|i| all_match(inner, Some(i))),
                other => all_match(inner, other),
            },
            Node::AnyOf(matchers) => matchers.iter().any(|m| field_matches(m, field)),
        }
    })
}

fn field_matches(m: &Matcher, field: Option<&Value>) -> bool {
    match (m, field) {
        (Matcher::Exists(want), f) => *want == f.is_some(),
        (_, None) => false,
        (_, Some(Value::Array(items))) => items.iter().any(|i| one_matches(m, i)),
        (_, Some(v)) => one_matches(m, v),
    }
}

fn same(a: &Value, b: &Value) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

fn one_matches(m: &Matcher, v: &Value) -> bool {
    let s = v.as_str();
    match m {
        Matcher::Exact(want) => same(want, v),
        Matcher::Prefix(p) => s.is_some_and(|s| s.starts_with(p.as_str())),
        Matcher::Suffix(p) => s.is_some_and(|s| s.ends_with(p.as_str())),
        Matcher::EqualsIgnoreCase(want) => s.is_some_and(|s| s.to_lowercase() == *want),
        Matcher::Exists(_) => true,
        Matcher::Numeric(conditions) => v.as_f64().is_some_and(|n| {
            conditions.iter().all(|(op, x)| match op {
                Op::Eq => n == *x,
                Op::Lt => n < *x,
                Op::Le => n <= *x,
                Op::Gt => n > *x,
                Op::Ge => n >= *x,
            })
        }),
        Matcher::AnythingBut(values) => !values.iter().any(|x| same(x, v)),
        Matcher::AnythingButPrefix(p) => s.is_some_and(|s| !s.starts_with(p.as_str())),
        Matcher::AnythingButSuffix(p) => s.is_some_and(|s| !s.ends_with(p.as_str())),
    }
}

/// The value a message is matched as: its payload's fields when it is a JSON object (else no
/// fields), and its headers, names in lower case, under `headers`.
pub fn event_of(payload: &[u8], headers: &[(String, String)]) -> Value {
    let mut fields = match serde_json::from_slice::<Value>(payload) {
        Ok(Value::Object(o)) => o,
        _ => Map::new(),
    };
    let headers: Map<String, Value> = headers
        .iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), Value::String(v.clone())))
        .collect();
    fields.insert("headers".into(), Value::Object(headers));
    Value::Object(fields)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn f(pattern: &str) -> Filter {
        Filter::parse(pattern).expect("parses")
    }

    #[test]
    fn values_prefixes_numbers_and_nesting() {
        let order = json!({"type": "order", "amount": 150, "customer": {"tier": "gold", "country": "DE"}, "tags": ["a", "vip"]});
        assert!(f(r#"{"type": ["order", "refund"]}"#).matches(&order));
        assert!(!f(r#"{"type": ["refund"]}"#).matches(&order));
        assert!(f(r#"{"amount": [{"numeric": [">", 100, "<=", 150]}]}"#).matches(&order));
        assert!(!f(r#"{"amount": [{"numeric": [">", 150]}]}"#).matches(&order));
        assert!(
            f(r#"{"amount": [150.0]}"#).matches(&order),
            "numbers compare as numbers"
        );
        assert!(
            f(r#"{"customer": {"tier": [{"prefix": "go"}], "country": ["DE"]}}"#).matches(&order)
        );
        assert!(!f(r#"{"customer": {"tier": ["silver"]}}"#).matches(&order));
        assert!(
            f(r#"{"tags": ["vip"]}"#).matches(&order),
            "any element of a list"
        );
        assert!(f(r#"{"type": [{"suffix": "der"}], "customer": {"country": [{"equals-ignore-case": "de"}]}}"#).matches(&order));
    }

    #[test]
    fn exists_and_anything_but() {
        let e = json!({"type": "order", "state": "paid"});
        assert!(f(r#"{"coupon": [{"exists": false}]}"#).matches(&e));
        assert!(!f(r#"{"coupon": [{"exists": true}]}"#).matches(&e));
        assert!(f(r#"{"state": [{"exists": true}]}"#).matches(&e));
        assert!(f(r#"{"state": [{"anything-but": ["cancelled", "failed"]}]}"#).matches(&e));
        assert!(!f(r#"{"state": [{"anything-but": "paid"}]}"#).matches(&e));
        assert!(!f(r#"{"state": [{"anything-but": {"prefix": "pa"}}]}"#).matches(&e));
        assert!(
            !f(r#"{"missing": [{"anything-but": "x"}]}"#).matches(&e),
            "a missing field is not anything-but"
        );
        assert!(!f(r#"{"deep": {"x": ["1"]}}"#).matches(&e));
        assert!(f(r#"{"deep": {"x": [{"exists": false}]}}"#).matches(&e));
    }

    #[test]
    fn headers_and_non_json_payloads() {
        let headers = vec![("X-Kafka-Key".to_owned(), "eu-1".to_owned())];
        let e = event_of(b"not json", &headers);
        assert!(f(r#"{"headers": {"x-kafka-key": [{"prefix": "eu-"}]}}"#).matches(&e));
        assert!(!f(r#"{"type": ["order"]}"#).matches(&e));
        let e = event_of(br#"{"type": "order"}"#, &headers);
        assert!(f(r#"{"type": ["order"], "headers": {"x-kafka-key": ["eu-1"]}}"#).matches(&e));
    }

    #[test]
    fn bad_patterns_say_where_and_what() {
        for (pattern, needle) in [
            ("not json", "not JSON"),
            ("[]", "non-empty JSON object"),
            (r#"{"type": "order"}"#, "$.type"),
            (r#"{"type": []}"#, "non-empty list"),
            (
                r#"{"amount": [{"numeric": [">"]}]}"#,
                "pairs of an operator",
            ),
            (
                r#"{"amount": [{"numeric": ["~", 1]}]}"#,
                "pairs of an operator",
            ),
            (r#"{"a": [{"regex": "x"}]}"#, "unknown matcher \"regex\""),
            (r#"{"a": [{"prefix": 1}]}"#, "prefix takes a string"),
            (
                r#"{"a": [{"prefix": "x", "suffix": "y"}]}"#,
                "exactly one key",
            ),
            (
                r#"{"a": [{"exists": "yes"}]}"#,
                "exists takes true or false",
            ),
            (
                r#"{"a": [{"anything-but": {"regex": "x"}}]}"#,
                "anything-but takes",
            ),
        ] {
            let e = Filter::parse(pattern).expect_err(pattern).to_string();
            assert!(e.contains(needle), "{pattern}: {e}");
            assert!(e.contains(FILTER_ANNOTATION), "{e}");
        }
    }
}
