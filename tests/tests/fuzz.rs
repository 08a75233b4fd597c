//! Property tests against the real binary: random JSON (of OpenFaaS's shapes and of none), raw
//! bytes, query strings and header values at every route. Each answer is a success or a 4xx with
//! a message; the gateway never fails with a 5xx for bad input, and keeps serving.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use reqwest::Method;
use serde_json::Value;
use tributary_tests::{GatewayProcess, fork_function};

/// Field names the routes know, and some they do not.
fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "service",
            "image",
            "envProcess",
            "envVars",
            "labels",
            "annotations",
            "secrets",
            "namespace",
            "functionName",
            "serviceName",
            "replicas",
            "name",
            "value",
            "rawValue",
            "limits",
            "readOnlyRootFilesystem",
        ])
        .prop_map(str::to_owned),
        "\\PC{0,8}",
    ]
}

fn json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        "[a-z0-9-]{1,12}".prop_map(Value::from),
        "\\PC{0,24}".prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::btree_map(key(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A body: random JSON, or bytes that may not be JSON at all.
fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => json().prop_map(|v| serde_json::to_vec(&v).unwrap()),
        1 => prop::collection::vec(any::<u8>(), 0..200),
    ]
}

const ROUTES: [(&str, &str); 10] = [
    ("POST", "/system/functions"),
    ("PUT", "/system/functions"),
    ("DELETE", "/system/functions"),
    ("POST", "/system/scale-function/target"),
    ("POST", "/system/secrets"),
    ("PUT", "/system/secrets"),
    ("DELETE", "/system/secrets"),
    ("POST", "/function/target"),
    ("POST", "/async-function/target"),
    ("GET", "/system/function/target"),
];

/// Whether an answer is acceptable for bad input: a success, a 4xx, or a function that could
/// not start (a deployment that was valid JSON but names no runnable command).
fn acceptable(code: u16, text: &str) -> bool {
    code < 500 || text.contains("did not start")
}

struct Fuzz {
    rt: tokio::runtime::Runtime,
    gw: GatewayProcess,
}

impl Fuzz {
    fn start() -> Self {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let gw = rt.block_on(async {
            let gw = GatewayProcess::start().await;
            gw.deploy_ok(fork_function("target", "cat")).await;
            gw
        });
        Self { rt, gw }
    }

    fn send(
        &self,
        method: &str,
        path: &str,
        headers: &[(String, String)],
        body: Vec<u8>,
    ) -> (u16, String) {
        self.rt.block_on(async {
            let mut req = self
                .gw
                .http
                .request(
                    Method::from_bytes(method.as_bytes()).unwrap(),
                    self.gw.url(path),
                )
                .body(body);
            for (k, v) in headers {
                req = req.header(k, v);
            }
            let r = req.send().await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        })
    }

    fn still_serves(&self) {
        let (code, text) = self.send("POST", "/function/target", &[], b"alive".to_vec());
        assert_eq!((code, text.as_str()), (200, "alive"));
    }
}

fn runner() -> TestRunner {
    TestRunner::new(Config {
        cases: 200,
        failure_persistence: None,
        ..Config::default()
    })
}

#[test]
fn random_bodies_at_every_route_get_an_answer_not_a_failure() {
    let fuzz = Fuzz::start();
    runner()
        .run(
            &(prop::sample::select(ROUTES.to_vec()), body()),
            |((method, path), body)| {
                let shown = String::from_utf8_lossy(&body).into_owned();
                let (code, text) = fuzz.send(method, path, &[], body);
                prop_assert!(
                    acceptable(code, &text),
                    "{method} {path} {shown:?}: {code} {text}"
                );
                if (400..500).contains(&code) {
                    prop_assert!(
                        !text.trim().is_empty(),
                        "{method} {path}: {code} without a message"
                    );
                }
                Ok(())
            },
        )
        .unwrap();
    fuzz.still_serves();
}

#[test]
fn random_query_strings_and_header_values_get_an_answer_not_a_failure() {
    let fuzz = Fuzz::start();
    let query = "[ -~]{0,40}".prop_map(|q| q.replace(['#', ' '], "%20"));
    let header = prop::sample::select(vec![
        "X-Callback-Url",
        "X-Call-Id",
        "Content-Type",
        "X-Forwarded-For",
        "Authorization",
        "X-Anything",
    ]);
    let value = "[ -~\t]{0,60}";
    let path = prop::sample::select(vec![
        "/system/logs",
        "/system/functions",
        "/system/secrets",
        "/system/function/target",
        "/async-function/target",
        "/function/target",
    ]);
    runner()
        .run(
            &(path, query, header, value),
            |(path, query, header, value)| {
                let method = if path.contains("function/target") && !path.starts_with("/system") {
                    "POST"
                } else {
                    "GET"
                };
                let url = format!("{path}?{query}");
                let headers = vec![(header.to_owned(), value.clone())];
                let (code, text) = fuzz.send(method, &url, &headers, b"x".to_vec());
                prop_assert!(
                    acceptable(code, &text),
                    "{url} {header}: {value:?}: {code} {text}"
                );
                Ok(())
            },
        )
        .unwrap();
    fuzz.still_serves();
}
