//! The OpenAPI 3.1 document of the REST API, served at `GET /openapi.json`.
//!
//! It is generated: routes from the handlers' `#[utoipa::path]` attributes, bodies from the
//! typed answers in `api.rs`, problems from `responses.rs`. The served copy is then fitted to the running configuration — the record
//! schema names this deployment's key and id members and the request limits — so a client
//! (or a generator of test requests) sees the rules it will be held to. The repository keeps
//! the document of the default configuration as `openapi.json`; a test compares the two.

use serde_json::{Value, json};
use utoipa::OpenApi;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};

use super::{api, cluster, ops, records, responses};
use crate::pointer::Pointer;
use crate::settings::Settings;

/// Adds the bearer scheme the POST routes name and the problem responses the routes refer to.
struct BearerScheme;

impl utoipa::Modify for BearerScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
        for (name, response) in responses::all() {
            components
                .responses
                .insert(name.to_string(), response.into());
        }
    }
}

/// Gives every `HEAD` operation an id of its own (`healthz_head`): the handler attributes
/// share one for `GET` and `HEAD`, and generators need each operation's id to be unique.
struct HeadOperationIds;

impl utoipa::Modify for HeadOperationIds {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for item in openapi.paths.paths.values_mut() {
            if let Some(id) = item.head.as_mut().and_then(|op| op.operation_id.as_mut()) {
                id.push_str("_head");
            }
        }
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "sluice",
        description = "Asynchronous enrichment of JSON records: POST records, each is looked up \
                       (ScyllaDB/Cassandra or an embedded table) and emitted as an envelope with \
                       the row merged in. See the README's \"REST API\" section.",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    paths(
        records::post_records,
        records::post_enrich,
        ops::get_status,
        ops::post_checkpoint,
        cluster::get_cluster,
        cluster::post_import,
        ops::get_metrics,
        ops::healthz,
        ops::readyz,
        get_openapi,
    ),
    components(
        schemas(
            api::Record,
            api::RecordId,
            api::RecordKey,
            api::Envelope,
            api::Problem,
        ),
    ),
    modifiers(&BearerScheme, &HeadOperationIds),
    tags(
        (name = "records", description = "Sending records"),
        (name = "operations", description = "Status, health, metrics and checkpoints"),
        (name = "cluster", description = "Cluster mode"),
    ),
)]
struct ApiDoc;

/// The document for `settings`: generated, then fitted to the configuration.
pub fn document(settings: &Settings) -> Value {
    let mut doc = serde_json::to_value(ApiDoc::openapi()).unwrap_or(Value::Null);
    if let Some(info) = doc.pointer_mut("/info") {
        info["version"] = json!(env!("CARGO_PKG_VERSION"));
    }
    fit_record_schema(&mut doc, settings);
    doc
}

/// Name the configured key and id members in the record schema, and the request limits.
fn fit_record_schema(doc: &mut Value, s: &Settings) {
    let key = Pointer::parse(&s.pipeline.key).map(|p| p.tokens().to_vec());
    let id = Pointer::parse(&s.pipeline.id).map(|p| p.tokens().to_vec());
    let Some(record) = doc.pointer_mut("/components/schemas/Record") else {
        return;
    };
    if let Ok(key) = key
        && !key.is_empty()
    {
        require_at(
            record,
            &key,
            json!({"$ref": "#/components/schemas/RecordKey"}),
            true,
        );
    }
    if let Ok(id) = id
        && !id.is_empty()
    {
        let client_id = json!({
            "description": "The record's id: a non-empty string not starting with `sluice:`, \
                            or a number (absent or null: one is generated).",
            "oneOf": [
                {"type": "string", "minLength": 1, "not": {"pattern": "^sluice:"}},
                {"type": "number"},
                {"type": "null"},
            ],
        });
        require_at(record, &id, client_id, false);
    }
    let max = s.server.max_records_per_request;
    for path in ["~1v1~1records", "~1v1~1enrich"] {
        for media in ["application~1json", "application~1x-ndjson"] {
            let at = format!("/paths/{path}/post/requestBody/content/{media}/schema");
            if let Some(body) = doc.pointer_mut(&at) {
                body["maxItems"] = json!(max);
            }
        }
    }
}

/// Describe member `path` (nested objects on the way) of the object schema `schema`.
fn require_at(schema: &mut Value, path: &[String], leaf: Value, required: bool) {
    let Some((first, rest)) = path.split_first() else {
        return;
    };
    if !schema["properties"].is_object() {
        schema["properties"] = json!({});
    }
    if required {
        match schema["required"].as_array_mut() {
            Some(r) if !r.contains(&json!(first)) => r.push(json!(first)),
            Some(_) => {}
            None => schema["required"] = json!([first]),
        }
    }
    let child = if rest.is_empty() {
        leaf
    } else {
        let mut inner = json!({"type": "object", "additionalProperties": true});
        require_at(&mut inner, rest, leaf, required);
        inner
    };
    schema["properties"][first.as_str()] = child;
}

/// `GET /openapi.json`: this document.
#[utoipa::path(
    method(get, head),
    path = "/openapi.json",
    tag = "operations",
    responses((status = 200, description = "The OpenAPI 3.1 document of this API, fitted to \
               this node's configuration.", content_type = "application/json", body = Object)),
)]
pub async fn get_openapi(
    state: actix_web::web::Data<super::state::AppState>,
) -> actix_web::HttpResponse {
    actix_web::HttpResponse::Ok().json(document(&state.settings))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_record_schema_names_the_configured_members() {
        let mut s = Settings::defaults();
        s.pipeline.key = "/user/name".into();
        s.pipeline.id = "/rid".into();
        s.server.max_records_per_request = 7;
        let doc = document(&s);
        let record = &doc["components"]["schemas"]["Record"];
        assert_eq!(record["required"], json!(["user"]));
        assert_eq!(record["properties"]["user"]["required"], json!(["name"]));
        assert_eq!(
            record["properties"]["user"]["properties"]["name"]["$ref"],
            "#/components/schemas/RecordKey"
        );
        assert!(record["properties"]["rid"]["oneOf"].is_array());
        assert_eq!(
            doc.pointer(
                "/paths/~1v1~1records/post/requestBody/content/application~1json/schema/maxItems"
            ),
            Some(&json!(7))
        );
        assert_eq!(doc["openapi"], "3.1.0");
    }

    /// Every operation of a document: (path, method, operationId).
    fn operations(doc: &Value) -> Vec<(String, String, Option<String>)> {
        let mut out = Vec::new();
        for (path, item) in doc["paths"].as_object().into_iter().flatten() {
            for (method, op) in item.as_object().into_iter().flatten() {
                let id = op["operationId"].as_str().map(str::to_string);
                out.push((path.clone(), method.clone(), id));
            }
        }
        out
    }

    #[test]
    fn every_operation_has_an_id_of_its_own() {
        let doc = document(&Settings::defaults());
        let ops = operations(&doc);
        assert!(ops.len() > 10, "{ops:?}");
        let mut seen = std::collections::BTreeMap::new();
        for (path, method, id) in &ops {
            let id = id
                .as_deref()
                .unwrap_or_else(|| panic!("{method} {path} has no operationId"));
            if let Some(first) = seen.insert(id.to_string(), format!("{method} {path}")) {
                panic!("operationId `{id}` of {method} {path} is {first}'s too");
            }
        }
        assert_eq!(
            doc.pointer("/paths/~1healthz/head/operationId"),
            Some(&json!("healthz_head"))
        );
    }

    /// `section.key` (or deeper) words in the document's texts whose section is one of the
    /// configuration's.
    fn config_keys_named(v: &Value, sections: &toml::Table, out: &mut Vec<String>) {
        match v {
            Value::String(s) => {
                let words = s.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '.'));
                for w in words.map(|w| w.trim_matches('.')) {
                    if let Some((section, _)) = w.split_once('.')
                        && sections.contains_key(section)
                    {
                        out.push(w.to_string());
                    }
                }
            }
            Value::Array(a) => a.iter().for_each(|v| config_keys_named(v, sections, out)),
            Value::Object(o) => o.iter().for_each(|(k, v)| {
                config_keys_named(&Value::String(k.clone()), sections, out);
                config_keys_named(v, sections, out);
            }),
            _ => {}
        }
    }

    #[test]
    fn the_configuration_keys_the_document_names_exist() {
        let defaults: toml::Table = Settings::defaults().to_toml().parse().unwrap();
        let mut named = Vec::new();
        config_keys_named(&document(&Settings::defaults()), &defaults, &mut named);
        assert!(
            named.iter().any(|k| k == "server.max_body_bytes"),
            "{named:?}"
        );
        for key in &named {
            let mut at = toml::Value::Table(defaults.clone());
            for part in key.split('.') {
                at = at
                    .get(part)
                    .cloned()
                    .unwrap_or_else(|| panic!("the document names `{key}`, no such key"));
            }
        }
    }

    #[test]
    fn the_import_route_documents_the_internal_apis_headers() {
        use crate::peer_api::*;
        let doc = document(&Settings::defaults());
        let params = doc
            .pointer("/paths/~1internal~1v1~1import/post/parameters")
            .and_then(Value::as_array)
            .expect("the import route has parameters");
        let named = |name: &str| {
            params
                .iter()
                .find(|p| p["name"] == name && p["in"] == "header")
                .unwrap_or_else(|| panic!("{name} is not documented"))
        };
        for h in [H_SOURCE, H_PARTITION, H_EPOCH, H_HANDOVER] {
            assert_eq!(named(h)["required"], true, "{h}");
        }
        assert_eq!(named(H_INCARNATION)["required"], false);
        assert_eq!(named(H_INCARNATION)["schema"]["type"], "string");
    }

    #[test]
    fn the_document_in_the_repository_is_the_default_configurations() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("openapi.json");
        let generated =
            serde_json::to_string_pretty(&document(&Settings::defaults())).unwrap() + "\n";
        if std::env::var_os("SLUICE_WRITE_OPENAPI").is_some() {
            std::fs::write(&path, &generated).unwrap();
        }
        let kept = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            kept == generated,
            "openapi.json differs from the generated document: run \
             `SLUICE_WRITE_OPENAPI=1 cargo test --lib openapi` and commit it"
        );
    }
}
