//! The handlers against a real engine (actors, memory lookup, file sinks) with no network:
//! what a cluster member answers while it is fenced.

use std::sync::Arc;

use actix_web::http::StatusCode;
use actix_web::test::{TestRequest, call_service, init_service};
use actix_web::{App, web};

use super::state::AppState;
use super::{cluster, records};
use crate::durability::codec;
use crate::engine::Engine;
use crate::engine::ownership::Ownership;
use crate::peer_api::{H_EPOCH, H_HANDOVER, H_PARTITION, H_SOURCE};
use crate::record::Record;
use crate::settings::Settings;
use crate::sink;

/// A ready engine whose node is a cluster member that never had a live lease: fenced. The
/// sender keeps the shutdown grace from being over.
fn fenced_node(dir: &std::path::Path) -> (AppState, tokio::sync::watch::Sender<bool>) {
    let mut s = Settings::defaults();
    s.output.path = dir.join("out.jsonl").display().to_string();
    s.dead_letter.path = dir.join("dead.jsonl").display().to_string();
    let lookups = crate::lookup::factory::build_pipeline(&s).expect("the sample table loads");
    let pipeline =
        Arc::new(crate::engine::pipeline::Pipeline::new(&s, lookups).expect("a one-step pipeline"));
    let output = sink::open(&s.output, sink::Role::Output).expect("output sink");
    let dead = sink::open(&s.dead_letter, sink::Role::DeadLetter).expect("dead-letter sink");
    let ownership = Arc::new(Ownership::clustered("n1", "", s.pipeline.partitions as u32));
    let engine = Engine::start_with(&s, pipeline, output, dead, None, ownership).expect("engine");
    engine.set_ready();
    let (grace, grace_over) = tokio::sync::watch::channel(false);
    let state = AppState {
        engine: Arc::new(engine),
        settings: Arc::new(s),
        node: "n1".into(),
        grace_over,
    };
    (state, grace)
}

fn staged(partition: u32, seq: u64) -> Vec<u8> {
    let r = Record {
        partition,
        seq,
        accepted_ms: 1,
        first_attempt_ms: 0,
        attempts: 0,
        splice: true,
        id: format!("\"r{seq}\"").into(),
        key: "\"u1\"".into(),
        canonical: "u1".into(),
        text: r#"{"user_id":"u1"}"#.into(),
        decided: None,
        steps: Vec::new(),
    };
    let mut out = Vec::new();
    // Sent without `x-sluice-format`: version 1.
    codec::encode_staged_in(&r, codec::Layout::V1, &mut out);
    out
}

#[actix_web::test]
async fn a_fenced_node_counts_every_record_it_refuses() {
    let dir = tempfile::tempdir().unwrap();
    let (state, _grace) = fenced_node(dir.path());
    let state = web::Data::new(state);
    assert!(state.engine.shared().ownership.is_fenced());
    let refusals = || state.engine.shared().metrics.fencing_refusals.get();
    let app = init_service(
        App::new()
            .app_data(state.clone())
            .route("/v1/records", web::post().to(records::post_records))
            .route("/v1/enrich", web::post().to(records::post_enrich))
            .route("/internal/v1/import", web::post().to(cluster::post_import)),
    )
    .await;
    let three = r#"[{"user_id":"u1"},{"user_id":"u2"},{"user_id":"u3"}]"#;
    for (path, expected) in [("/v1/records", 3), ("/v1/enrich", 6)] {
        let req = TestRequest::post()
            .uri(path)
            .insert_header(("content-type", "application/json"))
            .set_payload(three)
            .to_request();
        let res = call_service(&app, req).await;
        let status = res.status();
        let body = actix_web::test::read_body(res).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{path}: {body:?}");
        assert_eq!(refusals(), expected, "after {path}: {body:?}");
    }
    let mut body = staged(0, 0);
    body.extend(staged(0, 1));
    let req = TestRequest::post()
        .uri("/internal/v1/import")
        .insert_header((H_SOURCE, "n2"))
        .insert_header((H_PARTITION, "0"))
        .insert_header((H_EPOCH, "7"))
        .insert_header((H_HANDOVER, "0"))
        .set_payload(body)
        .to_request();
    let res = call_service(&app, req).await;
    assert_eq!(res.status(), StatusCode::CONFLICT);
    assert_eq!(refusals(), 8, "after the import");
}
