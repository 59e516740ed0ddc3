use super::config::CqlSinkSettings;

fn settings() -> CqlSinkSettings {
    CqlSinkSettings {
        contact_points: vec!["127.0.0.1:9042".into()],
        keyspace: "ks".into(),
        table: "t".into(),
        columns: vec!["id".into(), "envelope".into()],
        values: vec!["/id".into(), "".into()],
        consistency: "ONE".into(),
        concurrency: 4,
    }
}

#[test]
fn config_problems_name_the_key() {
    assert!(settings().problems("output.cql").is_empty());
    let mut s = settings();
    s.values.pop();
    s.concurrency = 0;
    s.table.clear();
    let p = s.problems("output.cql");
    assert!(
        p.iter()
            .any(|l| l.starts_with("output.cql.values: one pointer per column")),
        "{p:?}"
    );
    assert!(
        p.iter().any(|l| l.starts_with("output.cql.concurrency")),
        "{p:?}"
    );
    assert!(p.iter().any(|l| l.starts_with("output.cql.table")), "{p:?}");
    let mut s = settings();
    s.values[0] = "id".into();
    assert!(s.problems("dead_letter.cql")[0].starts_with("dead_letter.cql.values:"));
}
