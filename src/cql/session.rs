//! The driver session and what the driver's answers mean to sluice: consistency names,
//! error classification (retryable or not), one way to connect.

use std::time::Duration;

use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;
use scylla::errors::NewSessionError;
use scylla::statement::Consistency;

/// A consistency name the driver has no level for (the settings check names the key).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("consistency: unknown level `{0}`")]
pub struct UnknownConsistency(pub String);

/// No session could be opened to the contact points.
#[derive(Debug, thiserror::Error)]
#[error("cannot connect to {points:?}: {source}")]
pub struct ConnectError {
    /// The contact points tried.
    pub points: Vec<String>,
    /// The driver's reason (boxed: the driver's error is large).
    #[source]
    pub source: Box<NewSessionError>,
}

/// The driver's consistency level for a config name.
pub fn consistency(s: &str) -> Result<Consistency, UnknownConsistency> {
    Ok(match s.to_ascii_uppercase().as_str() {
        "ANY" => Consistency::Any,
        "ONE" => Consistency::One,
        "TWO" => Consistency::Two,
        "THREE" => Consistency::Three,
        "QUORUM" => Consistency::Quorum,
        "ALL" => Consistency::All,
        "LOCAL_QUORUM" => Consistency::LocalQuorum,
        "EACH_QUORUM" => Consistency::EachQuorum,
        "LOCAL_ONE" => Consistency::LocalOne,
        other => {
            return Err(UnknownConsistency(other.to_string()));
        }
    })
}

/// A driver error, by what the caller should do about it. Shared by the CQL lookup (which
/// maps it onto its own error kinds) and the CQL sink.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DriverError {
    /// Timeouts on the cluster, overload, unavailable, broken connections: try again.
    Retryable(String),
    /// Syntax, invalid, unauthorized, unserializable: the same request fails again.
    Fatal(String),
    /// The driver's own client-side timeout fired.
    Timeout(String),
}

impl DriverError {
    /// Whether trying the same request again can succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, DriverError::Retryable(_))
    }
}

/// Classify a driver error: retryable (timeouts, overload, unavailable, broken connections)
/// or not (syntax, invalid, unauthorized).
pub fn classify(message: String) -> DriverError {
    let m = message.to_ascii_lowercase();
    if m.contains("client timeout") {
        return DriverError::Timeout(message);
    }
    // Transport trouble first: its messages can mention (de)serializing the frame.
    let transient = [
        "connection",
        "broken",
        "timeout",
        "overloaded",
        "unavailable",
        "pool",
        "no known",
    ];
    if transient.iter().any(|t| m.contains(t)) {
        return DriverError::Retryable(message);
    }
    let fatal = [
        "syntax",
        "invalid",
        "unauthorized",
        "bad credentials",
        "serializ",
        "unprepared",
        "already exists",
    ];
    if fatal.iter().any(|f| m.contains(f)) {
        DriverError::Fatal(message)
    } else {
        DriverError::Retryable(message)
    }
}

/// A session to `contact_points` (schema metadata off: sluice needs none), using
/// `keyspace` when given.
pub async fn connect_session(
    contact_points: &[String],
    keyspace: &str,
) -> Result<Session, ConnectError> {
    connect_session_as(contact_points, keyspace, "", "").await
}

/// Like [`connect_session`], authenticating with `username`/`password` when given.
pub async fn connect_session_as(
    contact_points: &[String],
    keyspace: &str,
    username: &str,
    password: &str,
) -> Result<Session, ConnectError> {
    let mut builder = SessionBuilder::new()
        .known_nodes(contact_points)
        .fetch_schema_metadata(false)
        .fetch_full_schema_metadata(false)
        .connection_timeout(Duration::from_secs(5));
    if !keyspace.is_empty() {
        builder = builder.use_keyspace(keyspace, false);
    }
    if !username.is_empty() {
        builder = builder.user(username, password);
    }
    builder.build().await.map_err(|source| ConnectError {
        points: contact_points.to_vec(),
        source: Box::new(source),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consistency_names_are_case_blind_and_unknown_ones_named() {
        assert_eq!(consistency("local_quorum"), Ok(Consistency::LocalQuorum));
        assert_eq!(
            consistency("most").unwrap_err().to_string(),
            "consistency: unknown level `MOST`"
        );
    }

    #[test]
    fn errors_are_classified() {
        assert!(
            classify("Database returned an error: Not enough nodes are alive (Unavailable)".into())
                .is_retryable()
        );
        assert!(classify("Read timeout".into()).is_retryable());
        assert!(
            classify(
                "Connection broken, reason: Failed to deserialize frame: Failed to read the frame header: early eof"
                    .into()
            )
            .is_retryable()
        );
        assert!(matches!(
            classify("Request execution exceeded a client timeout of 200ms".into()),
            DriverError::Timeout(_)
        ));
        assert!(!classify("The submitted query has a syntax error".into()).is_retryable());
        assert!(!classify("The query is syntactically correct but invalid".into()).is_retryable());
    }
}
