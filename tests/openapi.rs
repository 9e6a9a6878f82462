//! The OpenAPI document of the HTTP API (`GET /api/openapi.json`, docs/protocol.md
//! section 10): valid OpenAPI 3.1 by a maintained validator, and every endpoint's
//! real answers, good and bad, match the schema it documents for that status.

mod common;

use common::{http_get, http_request, socket_id, TestServer, API_KEY, BASE_CONFIG};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::process::Command;

fn repo() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[tokio::test]
async fn the_served_document_is_valid_openapi_3_1() {
    let s = TestServer::start();
    let (status, served) = http_get(s.addr, "/api/openapi.json").await;
    assert_eq!(status, 200);
    let path = common::process::temp_path("openapi", "json");
    std::fs::write(&path, &served).unwrap();
    let out = Command::new("bash")
        .arg(repo().join("scripts/validate-openapi.sh"))
        .arg(&path)
        .output()
        .expect("run scripts/validate-openapi.sh");
    let _ = std::fs::remove_file(&path);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_ne!(
        out.status.code(),
        Some(2),
        "validate-openapi.sh could not install openapi-spec-validator (needs python3 with pip):\n{text}"
    );
    assert!(
        out.status.success(),
        "the served document is invalid:\n{text}"
    );

    // And the validator does fail on a broken document.
    let broken = common::process::temp_path("openapi-broken", "json");
    std::fs::write(
        &broken,
        served.replace("\"title\": \"Switchboard HTTP API\",", ""),
    )
    .unwrap();
    let out = Command::new("bash")
        .arg(repo().join("scripts/validate-openapi.sh"))
        .arg(&broken)
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&broken);
    assert_eq!(out.status.code(), Some(1), "a broken document must fail");
}

/// The document, with `$ref`s to `components/responses` followed.
struct Document(Value);

impl Document {
    fn load() -> Document {
        let text = std::fs::read_to_string(repo().join("src/http/openapi.json")).unwrap();
        Document(serde_json::from_str(&text).unwrap())
    }

    fn operations(&self) -> BTreeSet<(String, String)> {
        let mut out = BTreeSet::new();
        for (path, item) in self.0["paths"].as_object().unwrap() {
            for method in item.as_object().unwrap().keys() {
                out.insert((path.clone(), method.clone()));
            }
        }
        out
    }

    /// The response object documented for this status, if any.
    fn response(&self, path: &str, method: &str, status: u16) -> Option<Value> {
        let mut r = self.0["paths"][path][method]["responses"][status.to_string()].clone();
        if let Some(target) = r["$ref"].as_str() {
            let name = target.rsplit('/').next().unwrap();
            r = self.0["components"]["responses"][name].clone();
        }
        (!r.is_null()).then_some(r)
    }

    /// Check one real answer: its status is documented, and its body matches.
    fn check(&self, path: &str, method: &str, status: u16, body: &Value) -> Result<(), String> {
        let response = self
            .response(path, method, status)
            .ok_or_else(|| format!("{method} {path}: status {status} is not documented"))?;
        let Some(schema) = response
            .pointer("/content/application~1json/schema")
            .cloned()
        else {
            return match body {
                Value::Null => Ok(()),
                _ => Err(format!(
                    "{method} {path} {status}: undocumented body {body}"
                )),
            };
        };
        let root = json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "components": self.0["components"],
            "allOf": [schema],
        });
        let validator = jsonschema::validator_for(&root)
            .map_err(|e| format!("{method} {path} {status}: bad schema: {e}"))?;
        let errors: Vec<String> = validator.iter_errors(body).map(|e| e.to_string()).collect();
        if errors.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "{method} {path} {status}: {body} does not match: {errors:?}"
            ))
        }
    }
}

#[test]
fn the_checker_refuses_a_wrong_answer() {
    let doc = Document::load();
    let path = "/api/apps/{hash}/presence_stats";
    assert!(doc
        .check(
            path,
            "get",
            200,
            &json!({"channel":"c","sockets":1,"users":0})
        )
        .is_ok());
    assert!(doc
        .check(
            path,
            "get",
            200,
            &json!({"channel":"c","sockets":"1","users":0})
        )
        .is_err());
    assert!(doc.check(path, "get", 418, &json!({"error":"x"})).is_err());
    assert!(doc
        .check(path, "get", 404, &json!({"message":"x"}))
        .is_err());
}

#[tokio::test]
async fn every_endpoint_answers_as_documented() {
    let doc = Document::load();
    let config = BASE_CONFIG.replacen("drain_s = 1", "drain_s = 1\nadmin_token = \"admin\"", 1);
    let s = TestServer::with_config(&config);
    let mut a = s.client_with_token(&common::user_token(4)).await;
    let ack = a.join("chat/doc", true, true).await;
    a.expect("presence_full").await;
    a.message("chat/doc", json!({"text": "hi"})).await;
    a.expect("message").await;
    let sid = socket_id(&ack);

    // (template, method, concrete path, body, bearer)
    let app = "/api/apps/test";
    let calls: Vec<(&str, &str, String, String, &str)> = vec![
        (
            "/api/apps/{hash}/events",
            "post",
            format!("{app}/events"),
            json!({"channel":"chat/doc","data":1}).to_string(),
            API_KEY,
        ),
        (
            "/api/apps/{hash}/events",
            "post",
            format!("{app}/events"),
            "nope".into(),
            API_KEY,
        ),
        (
            "/api/apps/{hash}/events",
            "post",
            format!("{app}/events"),
            json!({"channel":"none","data":1}).to_string(),
            API_KEY,
        ),
        (
            "/api/apps/{hash}/events",
            "post",
            format!("{app}/events"),
            "x".repeat(2 << 20),
            API_KEY,
        ),
        (
            "/api/apps/{hash}/events",
            "post",
            format!("{app}/events"),
            "{}".into(),
            "wrong",
        ),
        (
            "/api/apps/{hash}/channels",
            "get",
            format!("{app}/channels"),
            String::new(),
            API_KEY,
        ),
        (
            "/api/apps/{hash}/channels",
            "get",
            format!("{app}/channels?prefix=chat/"),
            String::new(),
            "admin",
        ),
        (
            "/api/apps/{hash}/channels",
            "get",
            format!("{app}/channels"),
            String::new(),
            "wrong",
        ),
        (
            "/api/apps/{hash}/presence",
            "get",
            format!("{app}/presence?channel=chat/doc"),
            String::new(),
            API_KEY,
        ),
        (
            "/api/apps/{hash}/presence",
            "get",
            format!("{app}/presence"),
            String::new(),
            API_KEY,
        ),
        (
            "/api/apps/{hash}/presence",
            "get",
            format!("{app}/presence?channel=none"),
            String::new(),
            API_KEY,
        ),
        (
            "/api/apps/{hash}/presence_stats",
            "get",
            format!("{app}/presence_stats?channel=chat/doc"),
            String::new(),
            API_KEY,
        ),
        (
            "/api/apps/{hash}/presence_stats",
            "get",
            format!("{app}/presence_stats?channel=none"),
            String::new(),
            API_KEY,
        ),
        (
            "/api/apps/{hash}/history",
            "get",
            format!("{app}/history?channel=chat/doc"),
            String::new(),
            API_KEY,
        ),
        (
            "/api/apps/{hash}/history",
            "get",
            format!("{app}/history?channel=chat/doc&limit=x"),
            String::new(),
            API_KEY,
        ),
        (
            "/api/apps/{hash}/history",
            "delete",
            format!("{app}/history?channel=chat/doc"),
            String::new(),
            API_KEY,
        ),
        (
            "/api/apps/{hash}/history",
            "delete",
            format!("{app}/history?channel=none"),
            String::new(),
            API_KEY,
        ),
        (
            "/api/apps/{hash}/unsubscribe",
            "post",
            format!("{app}/unsubscribe"),
            json!({"channel":"chat/doc","socket_id":sid}).to_string(),
            API_KEY,
        ),
        (
            "/api/apps/{hash}/unsubscribe",
            "post",
            format!("{app}/unsubscribe"),
            json!({"channel":"none","socket_id":sid}).to_string(),
            API_KEY,
        ),
        (
            "/api/apps/{hash}/unsubscribe",
            "post",
            format!("{app}/unsubscribe"),
            "{}".into(),
            API_KEY,
        ),
        (
            "/api/apps/{hash}/unsubscribe",
            "post",
            format!("{app}/unsubscribe"),
            "x".repeat(70_000),
            API_KEY,
        ),
        (
            "/api/apps/{hash}/disconnect",
            "post",
            format!("{app}/disconnect"),
            json!({"auth_id":4}).to_string(),
            API_KEY,
        ),
        (
            "/api/apps/{hash}/disconnect",
            "post",
            format!("{app}/disconnect"),
            json!({"socket_id":7}).to_string(),
            API_KEY,
        ),
        (
            "/api/apps/{hash}/disconnect",
            "post",
            format!("{app}/disconnect"),
            "x".repeat(70_000),
            API_KEY,
        ),
        (
            "/api/apps/{hash}/disconnect",
            "post",
            "/api/apps/nope/disconnect".into(),
            "{}".into(),
            API_KEY,
        ),
        (
            "/api/openapi.json",
            "get",
            "/api/openapi.json".into(),
            String::new(),
            "",
        ),
    ];
    let mut exercised = BTreeSet::new();
    let mut failures = Vec::new();
    for (template, method, path, body, key) in calls {
        let key = (!key.is_empty()).then_some(key);
        let (status, answer) =
            http_request(s.addr, &method.to_uppercase(), &path, key, &body).await;
        assert!(status < 500, "{method} {path}: {status} {answer}");
        if (200..300).contains(&status) {
            exercised.insert((template.to_string(), method.to_string()));
        }
        if let Err(e) = doc.check(template, method, status, &answer) {
            failures.push(e);
        }
    }
    assert!(
        failures.is_empty(),
        "answers off the document:\n{}",
        failures.join("\n")
    );
    assert_eq!(
        exercised,
        doc.operations(),
        "every documented operation answered with success once"
    );
    assert_eq!(a.expect_close().await, 4401, "the disconnect call was real");
}
