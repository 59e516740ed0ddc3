//! `sluice cluster status`: the cluster's members and partition owners, read from etcd.

use std::time::Duration;

use super::CliError;
use crate::cluster::controller::ClusterStatus;
use crate::cluster::etcd::Store;
use crate::settings::Settings;

/// Print the cluster as `GET /v1/cluster` shows it (JSON), read straight from etcd.
pub fn status(settings: Settings) -> Result<(), CliError> {
    let c = &settings.cluster;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::Runtime(format!("cannot start a runtime: {e}")))?;
    runtime.block_on(async {
        let store = Store::connect(&c.etcd, &c.prefix, Duration::from_secs(3))
            .await
            .map_err(|e| {
                CliError::Runtime(format!("cannot reach etcd at {}: {e}", c.etcd.join(", ")))
            })?;
        let view = store
            .load(settings.pipeline.partitions as u32)
            .await
            .map_err(|e| CliError::Runtime(e.to_string()))?;
        let members: Vec<_> = view.members.into_values().collect();
        let owners: Vec<_> = view.owners.into_iter().map(|o| o.map(|(o, _)| o)).collect();
        let status = ClusterStatus::new(&settings.node_id(), &members, &owners);
        let mut out = serde_json::to_value(status).unwrap_or_default();
        if let Some(o) = out.as_object_mut() {
            o.insert("prefix".into(), c.prefix.clone().into());
        }
        println!(
            "{}",
            serde_json::to_string_pretty(&out).unwrap_or_else(|e| e.to_string())
        );
        Ok(())
    })
}
