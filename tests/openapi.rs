//! The OpenAPI document at `/openapi.json` against the running service: it is the document
//! generated for the node's own configuration, and every route it lists answers with a status
//! it documents, in the media type it documents, with the members its schema names.
//! (The generated-request run over the same document is `tests/api/conformance.sh`.)

mod support;

use std::collections::BTreeSet;

use serde_json::{Value, json};
use support::{Config, Service};

/// `#/components/...` references resolved within `doc`.
fn resolve<'a>(doc: &'a Value, v: &'a Value) -> &'a Value {
    match v.get("$ref").and_then(Value::as_str) {
        Some(r) => doc
            .pointer(r.trim_start_matches('#'))
            .unwrap_or_else(|| panic!("dangling reference {r}")),
        None => v,
    }
}

/// The documented answer of `method path` with `status`, or a panic naming what is missing.
fn documented<'a>(doc: &'a Value, path: &str, method: &str, status: u16) -> &'a Value {
    let op = &doc["paths"][path][method];
    assert!(op.is_object(), "{method} {path} is not in the document");
    let r = op["responses"]
        .get(status.to_string())
        .unwrap_or_else(|| panic!("{method} {path} answered {status}, which it does not document"));
    resolve(doc, r)
}

/// The members an object schema names (after references).
fn properties(doc: &Value, schema: &Value) -> BTreeSet<String> {
    resolve(doc, schema)["properties"]
        .as_object()
        .map(|p| p.keys().cloned().collect())
        .unwrap_or_default()
}

#[test]
fn the_served_document_is_generated_for_this_nodes_configuration() {
    let cfg = Config {
        server: "max_records_per_request = 77".into(),
        pipeline: "key = \"/user/id\"\nid = \"/rid\"".into(),
        ..Config::default()
    };
    let svc = Service::start(&cfg);
    let r = svc.get("/openapi.json");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/json"));
    let served = r.json();
    let settings = sluice::settings::load(Some(&svc.dir.join("sluice.toml"))).expect("settings");
    assert_eq!(served, sluice::http::openapi::document(&settings));
    assert_eq!(served["openapi"], "3.1.0");
    let record = &served["components"]["schemas"]["Record"];
    assert_eq!(record["required"], json!(["user"]));
    assert!(record["properties"]["rid"].is_object());
    assert_eq!(
        served.pointer(
            "/paths/~1v1~1records/post/requestBody/content/application~1json/schema/maxItems"
        ),
        Some(&json!(77))
    );
}

#[test]
fn every_documented_route_answers_as_documented() {
    let svc = Service::start(&Config::default());
    let doc = svc.get("/openapi.json").json();
    let paths = doc["paths"].as_object().expect("paths");
    // Every route the service serves is documented, and nothing else is served.
    let listed: BTreeSet<&str> = paths.keys().map(String::as_str).collect();
    let served = [
        "/v1/records",
        "/v1/enrich",
        "/v1/status",
        "/v1/checkpoint",
        "/v1/cluster",
        "/internal/v1/import",
        "/metrics",
        "/healthz",
        "/readyz",
        "/openapi.json",
    ];
    assert_eq!(listed, served.into_iter().collect());
    assert_eq!(
        svc.get("/v1/nothing-here").problem(404)["type"],
        "urn:sluice:problem:not-found"
    );

    // Reads: status, media type and members as documented.
    for (path, op) in paths {
        if op.get("get").is_none() {
            continue;
        }
        assert!(
            op.get("head").is_some(),
            "GET {path} without HEAD in the document"
        );
        let r = svc.get(path);
        let answer = documented(&doc, path, "get", r.status);
        let media: Vec<&String> = answer["content"]
            .as_object()
            .expect("content")
            .keys()
            .collect();
        let ct = r.header("content-type").unwrap_or("");
        assert!(
            media.iter().any(|m| ct.starts_with(m.as_str())),
            "GET {path}: {ct} is not among {media:?}"
        );
        if ct.starts_with("application/json") && path != "/openapi.json" {
            let schema = &answer["content"]["application/json"]["schema"];
            let members: BTreeSet<String> = r
                .json()
                .as_object()
                .expect("object")
                .keys()
                .cloned()
                .collect();
            assert_eq!(members, properties(&doc, schema), "GET {path}: {}", r.body);
        }
        if ct.starts_with("application/problem+json") {
            let p = r.problem(r.status);
            assert_eq!(
                members_of(&p),
                properties(&doc, &doc["components"]["schemas"]["Problem"])
                    .into_iter()
                    .filter(|m| m != "errors")
                    .collect()
            );
        }
    }

    // Writes: a good request, and each kind of bad one, get documented answers.
    let good = json!([{"user_id": "u1", "id": "a"}, {"user_id": 7}]);
    let r = svc.post_json("/v1/records", good.as_array().unwrap());
    let answer = documented(&doc, "/v1/records", "post", r.status);
    assert_eq!(r.status, 202);
    let schema = &answer["content"]["application/json"]["schema"];
    assert_eq!(members_of(&r.json()), properties(&doc, schema));
    let r = svc.post_json("/v1/enrich", good.as_array().unwrap());
    assert_eq!(r.status, 200, "{}", r.body);
    documented(&doc, "/v1/enrich", "post", 200);
    let envelope = properties(&doc, &doc["components"]["schemas"]["Envelope"]);
    for e in r.json()["results"].as_array().expect("results") {
        let members = members_of(e);
        assert!(
            members.is_subset(&envelope),
            "{members:?} not within {envelope:?}"
        );
        for required in resolve(&doc, &doc["components"]["schemas"]["Envelope"])["required"]
            .as_array()
            .expect("required")
        {
            assert!(
                members.contains(required.as_str().unwrap()),
                "{e} lacks {required}"
            );
        }
    }
    let bad: [(&str, Option<&str>, &[u8], u16); 5] = [
        ("/v1/records", Some("application/json"), b"[1", 400),
        ("/v1/records", Some("text/csv"), b"a,b", 415),
        (
            "/v1/records",
            Some("application/json"),
            b"[{\"no_key\":1}]",
            422,
        ),
        (
            "/v1/enrich",
            Some("application/x-ndjson"),
            b"{\"user_id\":\"u1\"}\n7\n",
            422,
        ),
        (
            "/internal/v1/import",
            Some("application/octet-stream"),
            b"",
            400,
        ),
    ];
    for (path, ct, body, status) in bad {
        let r = svc.post_as(path, ct, None, body);
        let p = r.problem(status);
        let answer = documented(&doc, path, "post", status);
        assert!(answer["content"]["application/problem+json"].is_object());
        let example = &answer["content"]["application/problem+json"]["example"];
        assert_eq!(p["type"], example["type"], "POST {path}: {}", r.body);
    }
    let r = svc.post_as("/v1/checkpoint", None, None, b"");
    documented(&doc, "/v1/checkpoint", "post", r.status);
}

fn members_of(v: &Value) -> BTreeSet<String> {
    v.as_object().expect("object").keys().cloned().collect()
}
