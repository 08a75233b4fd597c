//! Property tests on what the gateway parses from strangers: stack files, callback host lists,
//! basic-auth headers, names, secrets. Whatever comes in, the answer is a value or a clear
//! error, never a panic or a hang.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::path::Path;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use tributary_gateway::auth::Credentials;
use tributary_gateway::callback::CallbackAllow;
use tributary_gateway::model::{Secret, validate_name, validate_secret_name};
use tributary_gateway::stack::Stack;

/// A stack file with one function: known field names and a few misspelt ones, with values of
/// every YAML shape.
fn stack_text() -> impl Strategy<Value = String> {
    let key = prop_oneof![
        Just("image".to_owned()),
        Just("fprocess".to_owned()),
        Just("environment".to_owned()),
        Just("enviroment".to_owned()),
        Just("labels".to_owned()),
        Just("annotations".to_owned()),
        Just("secrets".to_owned()),
        Just("limits".to_owned()),
        Just("lang".to_owned()),
        Just("handler".to_owned()),
        Just("readonly_root_filesystem".to_owned()),
        "[a-z_]{1,12}",
    ];
    let value = prop_oneof![
        "[ -~]{0,20}".prop_map(|s| format!("{s:?}")),
        any::<i64>().prop_map(|n| n.to_string()),
        Just("[a, 1, {b: c}]".to_owned()),
        Just("{x: y, n: 1}".to_owned()),
        Just("null".to_owned()),
        Just("~".to_owned()),
        Just("${HOME:-/x}".to_owned()),
    ];
    (
        "[a-z][a-z0-9-]{0,10}|[A-Z_ ]{1,5}",
        proptest::collection::vec((key, value), 0..6),
    )
        .prop_map(|(name, fields)| {
            let mut text =
                format!("version: 1.0\nprovider:\n  name: openfaas\nfunctions:\n  {name}:\n");
            for (k, v) in fields {
                text.push_str(&format!("    {k}: {v}\n"));
            }
            text
        })
}

proptest! {
    #[test]
    fn stack_files_parse_or_fail_with_a_message(text in stack_text()) {
        match Stack::parse(Path::new("stack.yml"), &text) {
            Ok(stack) => {
                // Parsed files turn into deployments or a clear error, too.
                if let Err(e) = stack.deployments() {
                    prop_assert!(!e.to_string().is_empty());
                }
            }
            Err(e) => prop_assert!(e.to_string().contains("stack.yml"), "{e}"),
        }
    }

    #[test]
    fn any_text_as_a_stack_file_is_an_answer(text in "\\PC{0,200}") {
        if let Err(e) = Stack::parse(Path::new("stack.yml"), &text) {
            prop_assert!(!e.to_string().is_empty());
        }
    }

    #[test]
    fn callback_lists_and_urls_never_panic(list in "[ -~]{0,40}", url in "https?://[ -~]{0,30}") {
        match list.parse::<CallbackAllow>() {
            Ok(allow) => {
                if let Ok(uri) = url.parse() {
                    let _ = allow.allows(&uri);
                }
            }
            Err(e) => prop_assert!(e.contains("callback_allow"), "{e}"),
        }
    }

    #[test]
    fn basic_auth_headers_match_only_the_right_pair(header in proptest::collection::vec(any::<u8>(), 0..80)) {
        let creds = Credentials::new("admin", "s3cret");
        prop_assert!(!creds.matches_header(&header) || header == b"Basic YWRtaW46czNjcmV0");
        prop_assert!(creds.matches_header(b"Basic YWRtaW46czNjcmV0"));
    }

    #[test]
    fn names_are_checked_without_panics(name in "\\PC{0,70}") {
        if validate_name("function", &name).is_ok() {
            prop_assert!(name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'));
        }
        if validate_secret_name(&name).is_ok() {
            prop_assert!(!name.contains('/') && name != "." && name != "..");
        }
    }

    #[test]
    fn secret_json_is_a_value_or_an_error(json in "\\PC{0,80}") {
        if let Err(e) = serde_json::from_str::<Secret>(&json) {
            prop_assert!(!e.to_string().is_empty());
        }
    }
}

#[test]
fn alias_bombs_in_stack_files_fail_fast() {
    let mut text = String::from("a: &a [x, x, x, x, x, x, x, x, x]\n");
    for i in 0..12 {
        let prev = if i == 0 {
            "a".to_owned()
        } else {
            format!("a{}", i - 1)
        };
        let refs = vec![format!("*{prev}"); 9].join(", ");
        text.push_str(&format!("a{i}: &a{i} [{refs}]\n"));
    }
    text.push_str("functions:\n  f:\n    image: x\n    labels: *a11\n");
    let started = Instant::now();
    let result = Stack::parse(Path::new("stack.yml"), &text);
    assert!(result.is_err(), "a billion-laughs file is refused");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}
