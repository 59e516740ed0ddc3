//! The one conversion from errors to RFC 9457 problem details at the HTTP edge.

use super::api::Problem;
use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpResponse, ResponseError};

use crate::engine::admit::FieldError;

/// At most this many per-record errors are listed in one 422 (the detail gives the total).
pub const MAX_LISTED_ERRORS: usize = 100;

/// Everything the REST API can answer with besides success.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("a valid bearer token is required (Authorization: Bearer <token>)")]
    Unauthorized,
    #[error("{0}")]
    NotFound(String),
    /// The path exists but not for this method; `allow` lists the methods it takes (the
    /// `Allow` header).
    #[error("{detail}")]
    MethodNotAllowed { detail: String, allow: &'static str },
    /// The body did not arrive in time (`server` body timeouts): the connection is closed.
    #[error("{0}")]
    RequestTimeout(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// A `Content-Encoding` other than `identity`: 415 with `Accept-Encoding: identity`.
    #[error("{0}")]
    UnsupportedEncoding(String),
    /// Cluster: a forwarded batch in a format version this node does not read (the detail
    /// names both); the sender keeps the records.
    #[error("{0}")]
    UnsupportedFormat(String),
    #[error("{detail}")]
    InvalidRecords {
        detail: String,
        errors: Vec<FieldError>,
    },
    #[error("{detail}")]
    Overloaded {
        detail: String,
        retry_after_secs: u64,
    },
    /// Cluster: the receiver does not own the partition at the sender's epoch; it holds
    /// the sender's records numbered below `.1` already.
    #[error("{0}")]
    Conflict(String, u64),
    #[error("{0}")]
    NotImplemented(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    /// The problem's slug: its `type` is `urn:sluice:problem:<slug>`.
    pub fn slug(&self) -> &'static str {
        self.slug_and_title().0
    }

    fn slug_and_title(&self) -> (&'static str, &'static str) {
        match self {
            ApiError::BadRequest(_) => ("malformed-body", "Malformed request body"),
            ApiError::Unauthorized => ("unauthorized", "Unauthorized"),
            ApiError::NotFound(_) => ("not-found", "Not found"),
            ApiError::MethodNotAllowed { .. } => ("method-not-allowed", "Method not allowed"),
            ApiError::RequestTimeout(_) => ("request-timeout", "Request body too slow"),
            ApiError::PayloadTooLarge(_) => ("payload-too-large", "Payload too large"),
            ApiError::UnsupportedMediaType(_) => {
                ("unsupported-media-type", "Unsupported media type")
            }
            ApiError::UnsupportedEncoding(_) => (
                "unsupported-content-encoding",
                "Unsupported content encoding",
            ),
            ApiError::UnsupportedFormat(_) => {
                ("unsupported-format-version", "Unsupported format version")
            }
            ApiError::InvalidRecords { .. } => ("invalid-records", "Invalid records"),
            ApiError::Overloaded { .. } => ("overloaded", "Backlog full, nothing accepted"),
            ApiError::Conflict(..) => ("not-owner", "Not the partition's owner at that epoch"),
            ApiError::NotImplemented(_) => ("not-implemented", "Not implemented"),
            ApiError::Unavailable(_) => ("not-ready", "Service not ready"),
            ApiError::Internal(_) => ("internal", "Internal error"),
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::RequestTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType(_)
            | ApiError::UnsupportedEncoding(_)
            | ApiError::UnsupportedFormat(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::InvalidRecords { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Overloaded { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Conflict(..) => StatusCode::CONFLICT,
            ApiError::NotImplemented(_) => StatusCode::NOT_IMPLEMENTED,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let status = self.status_code();
        let (slug, title) = self.slug_and_title();
        let errors = match self {
            ApiError::InvalidRecords { errors, .. } => {
                Some(errors[..errors.len().min(MAX_LISTED_ERRORS)].to_vec())
            }
            _ => None,
        };
        let body = Problem {
            kind: format!("urn:sluice:problem:{slug}"),
            title,
            status: status.as_u16(),
            detail: self.to_string(),
            errors,
        };
        let mut resp = HttpResponse::build(status);
        resp.insert_header((
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        ));
        match self {
            ApiError::Overloaded {
                retry_after_secs, ..
            } => {
                resp.insert_header((header::RETRY_AFTER, retry_after_secs.to_string()));
            }
            ApiError::Unauthorized => {
                resp.insert_header((header::WWW_AUTHENTICATE, "Bearer"));
            }
            ApiError::Unavailable(_) => {
                resp.insert_header((header::RETRY_AFTER, "1"));
            }
            ApiError::Conflict(_, upto) => {
                resp.insert_header((crate::peer_api::H_IMPORTED_UPTO, upto.to_string()));
            }
            ApiError::MethodNotAllowed { allow, .. } => {
                resp.insert_header((header::ALLOW, *allow));
            }
            ApiError::RequestTimeout(_) => {
                // The rest of the body may still come: this connection cannot carry another
                // request (RFC 9110 15.5.9).
                resp.force_close();
            }
            ApiError::UnsupportedEncoding(_) => {
                // RFC 9110 12.5.3: a 415 about a content coding names the ones accepted.
                resp.insert_header((header::ACCEPT_ENCODING, "identity"));
            }
            _ => {}
        }
        resp.body(serde_json::to_vec(&body).unwrap_or_default())
    }
}
