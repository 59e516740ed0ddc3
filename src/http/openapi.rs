//! The OpenAPI 3.1 document of the REST API, served at `GET /openapi.json`.
//!
//! It is generated: routes from the handlers' `#[utoipa::path]` attributes, bodies from the
//! typed answers in `api.rs`, problems from the table below (which a test holds against
//! [`ApiError`]). The served copy is then fitted to the running configuration — the record
//! schema names this deployment's key and id members and the request limits — so a client
//! (or a generator of test requests) sees the rules it will be held to. The repository keeps
//! the document of the default configuration as `openapi.json`; a test compares the two.

use serde_json::{Value, json};
use utoipa::OpenApi;
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::response::{Response, ResponseBuilder};
use utoipa::openapi::schema::{Object, SchemaType, Type};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, RefOr};

#[cfg(test)]
use super::problem::ApiError;
use super::{api, cluster};
use crate::pointer::Pointer;
use crate::settings::Settings;

/// Problem responses by component name: status, problem slug, title, when it is answered,
/// and the headers it carries.
const PROBLEMS: &[ProblemDoc] = &[
    ProblemDoc {
        name: "Malformed",
        status: 400,
        slug: "malformed-body",
        title: "Malformed request body",
        when: "The body is not UTF-8, not valid JSON, not an array (application/json), or an \
               NDJSON line is not JSON (the detail names the line). Nothing was accepted.",
        headers: &[],
    },
    ProblemDoc {
        name: "Unauthorized",
        status: 401,
        slug: "unauthorized",
        title: "Unauthorized",
        when: "`server.auth_tokens` is set and the bearer token is missing or wrong.",
        headers: &[("WWW-Authenticate", "`Bearer`.")],
    },
    ProblemDoc {
        name: "NotFound",
        status: 404,
        slug: "not-found",
        title: "Not found",
        when: "No such resource (the cluster routes on a standalone node).",
        headers: &[],
    },
    ProblemDoc {
        name: "RequestTimeout",
        status: 408,
        slug: "request-timeout",
        title: "Request body too slow",
        when: "The body did not arrive within 30 s of the head, or paused over 5 s; the \
               connection is closed and nothing was accepted.",
        headers: &[],
    },
    ProblemDoc {
        name: "NotOwner",
        status: 409,
        slug: "not-owner",
        title: "Not the partition's owner at that epoch",
        when: "The receiving node does not own the partition at the sender's epoch.",
        headers: &[(
            "x-sluice-imported-upto",
            "The sender's records below this number are held here already.",
        )],
    },
    ProblemDoc {
        name: "PayloadTooLarge",
        status: 413,
        slug: "payload-too-large",
        title: "Payload too large",
        when: "The body is over `server.max_body_bytes`, holds more than \
               `server.max_records_per_request` records, or more records for one partition \
               than it can ever hold (`pipeline.capacity + pipeline.backlog`).",
        headers: &[],
    },
    ProblemDoc {
        name: "UnsupportedMediaType",
        status: 415,
        slug: "unsupported-media-type",
        title: "Unsupported media type",
        when: "The Content-Type is not application/json or application/x-ndjson (type \
               `unsupported-media-type`), or a Content-Encoding other than identity was sent \
               (type `unsupported-content-encoding`, with `Accept-Encoding: identity`).",
        headers: &[(
            "Accept-Encoding",
            "`identity`, when the body's content coding was refused.",
        )],
    },
    ProblemDoc {
        name: "InvalidRecords",
        status: 422,
        slug: "invalid-records",
        title: "Invalid records",
        when: "A record is not an object, lacks its key, has a key that is not a string, \
               number or boolean, an id that is not a non-empty string (not starting with \
               `sluice:`) or a number, or a merge target under a non-object. `errors` lists \
               each problem; nothing was accepted.",
        headers: &[],
    },
    ProblemDoc {
        name: "Overloaded",
        status: 429,
        slug: "overloaded",
        title: "Backlog full, nothing accepted",
        when: "A target partition cannot take its share of the batch now. Nothing was \
               accepted; retry after `Retry-After`.",
        headers: &[("Retry-After", "Seconds to wait before retrying.")],
    },
    ProblemDoc {
        name: "Internal",
        status: 500,
        slug: "internal",
        title: "Internal error",
        when: "Cluster mode: another node answered a forwarded `/v1/enrich` with fewer \
               results than records.",
        headers: &[],
    },
    ProblemDoc {
        name: "NotImplemented",
        status: 501,
        slug: "not-implemented",
        title: "Not implemented",
        when: "The engine runs without a journal, so there is nothing to checkpoint.",
        headers: &[],
    },
    ProblemDoc {
        name: "Unavailable",
        status: 503,
        slug: "not-ready",
        title: "Service not ready",
        when: "Starting, shutting down, the journal cannot write, a sink or the lookup backend \
               is unhealthy (`/readyz`), or in a cluster no owner can take the records now \
               (failover, handover, fenced). Nothing was accepted; the detail says which.",
        headers: &[("Retry-After", "Seconds to wait before retrying.")],
    },
];

/// One problem response of the document.
struct ProblemDoc {
    name: &'static str,
    status: u16,
    slug: &'static str,
    title: &'static str,
    when: &'static str,
    headers: &'static [(&'static str, &'static str)],
}

impl ProblemDoc {
    fn response(&self) -> Response {
        let example = json!({
            "type": format!("urn:sluice:problem:{}", self.slug),
            "title": self.title,
            "status": self.status,
            "detail": "what went wrong with this request, and what to do",
        });
        let content = ContentBuilder::new()
            .schema(Some(Ref::from_schema_name("Problem")))
            .example(Some(example))
            .build();
        let mut b = ResponseBuilder::new()
            .description(self.when)
            .content("application/problem+json", content);
        for (name, what) in self.headers {
            b = b.header(
                *name,
                HeaderBuilder::new()
                    .schema(Object::with_type(SchemaType::new(Type::String)))
                    .description(Some(*what))
                    .build(),
            );
        }
        b.build()
    }
}

/// Declares the problem responses as components the handlers' attributes name.
macro_rules! problem_responses {
    ($($ty:ident),* $(,)?) => {
        $(
            #[doc = concat!("The `", stringify!($ty), "` problem response (see `PROBLEMS`).")]
            pub struct $ty;

            impl<'r> utoipa::ToResponse<'r> for $ty {
                fn response() -> (&'r str, RefOr<Response>) {
                    let doc = PROBLEMS
                        .iter()
                        .find(|p| p.name == stringify!($ty))
                        .expect("every problem response is in PROBLEMS");
                    (doc.name, RefOr::T(doc.response()))
                }
            }
        )*
    };
}

problem_responses!(
    Malformed,
    Unauthorized,
    NotFound,
    RequestTimeout,
    NotOwner,
    PayloadTooLarge,
    UnsupportedMediaType,
    InvalidRecords,
    Overloaded,
    Internal,
    NotImplemented,
    Unavailable,
);

/// Adds the bearer scheme the POST routes name.
struct BearerScheme;

impl utoipa::Modify for BearerScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
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
        super::post_records,
        super::post_enrich,
        super::get_status,
        super::post_checkpoint,
        cluster::get_cluster,
        cluster::post_import,
        super::get_metrics,
        super::healthz,
        super::readyz,
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
        responses(
            Malformed,
            Unauthorized,
            NotFound,
            RequestTimeout,
            NotOwner,
            PayloadTooLarge,
            UnsupportedMediaType,
            InvalidRecords,
            Overloaded,
            Internal,
            NotImplemented,
            Unavailable,
        ),
    ),
    modifiers(&BearerScheme),
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
pub async fn get_openapi(state: actix_web::web::Data<super::AppState>) -> actix_web::HttpResponse {
    actix_web::HttpResponse::Ok().json(document(&state.settings))
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::ResponseError;

    #[test]
    fn every_problem_the_api_answers_is_documented_with_its_status() {
        let variants = [
            ApiError::BadRequest(String::new()),
            ApiError::Unauthorized,
            ApiError::NotFound(String::new()),
            ApiError::RequestTimeout(String::new()),
            ApiError::PayloadTooLarge(String::new()),
            ApiError::UnsupportedMediaType(String::new()),
            ApiError::UnsupportedEncoding(String::new()),
            ApiError::InvalidRecords {
                detail: String::new(),
                errors: vec![],
            },
            ApiError::Overloaded {
                detail: String::new(),
                retry_after_secs: 1,
            },
            ApiError::Conflict(String::new(), 0),
            ApiError::NotImplemented(String::new()),
            ApiError::Unavailable(String::new()),
            ApiError::Internal(String::new()),
        ];
        for v in variants {
            let status = v.status_code().as_u16();
            let doc = PROBLEMS.iter().find(|p| p.status == status);
            assert!(
                doc.is_some(),
                "{v:?} answers {status}, which is not documented"
            );
            let slug = v.slug();
            let doc = doc.unwrap();
            assert!(
                doc.slug == slug || doc.when.contains(&format!("`{slug}`")),
                "{v:?}: type {slug} is not named by the {status} response"
            );
        }
    }

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
