//! The problem responses of the OpenAPI document: one component per status, with its
//! problem type, when it is answered and the headers it carries. The handlers' attributes
//! name them (`responses::Overloaded`); a test holds the table against every [`ApiError`].

use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::response::{Response, ResponseBuilder};
use utoipa::openapi::schema::{Object, SchemaType, Type};
use utoipa::openapi::{ContentBuilder, Ref, RefOr};

#[cfg(test)]
use super::problem::ApiError;
use serde_json::json;

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
            crate::peer_api::H_IMPORTED_UPTO,
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
               `unsupported-media-type`), a Content-Encoding other than identity was sent \
               (type `unsupported-content-encoding`, with `Accept-Encoding: identity`), or a \
               node forwarded a batch in a format version this one does not read (type \
               `unsupported-format-version`; the detail names both versions).",
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

/// Every problem response, by component name (for the document's `components`).
pub fn all() -> impl Iterator<Item = (&'static str, Response)> {
    PROBLEMS.iter().map(|p| (p.name, p.response()))
}

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
            ApiError::UnsupportedFormat(String::new()),
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
}
