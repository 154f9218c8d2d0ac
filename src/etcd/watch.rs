//! The store's watch: pushes every change of the partition record and of the replica sessions
//! to the controller service (`ControllerStore::watch`), so the acting controller fails a
//! replica the moment its lease ends and every controller process publishes a new record to
//! its parked `WatchPartition` requests at once.
//!
//! Invariant: no change is missed between two resynchronizations. Each round reads the store's
//! revision R, then calls `wake` (the service reads the record and the sessions afresh, at R or
//! later), then watches both key ranges from R + 1. A watch that ends (etcd cancelled it,
//! its start revision was compacted away, the stream or the connection broke) starts a new
//! round after a short pause; the service's periodic check covers the pause.

use std::time::Duration;

use etcd_client::{Client, WatchOptions};

use crate::net::StoreWake;

/// Pause before a new round after a failed read or a broken watch.
const RETRY: Duration = Duration::from_millis(200);

/// Watches `PREFIX/sessions/` and `PREFIX/partition` until aborted, calling `wake` on every
/// event and after every resynchronization.
pub(super) async fn watch_forever(mut client: Client, prefix: String, wake: StoreWake) {
    let sessions = format!("{prefix}/sessions/");
    let partition = format!("{prefix}/partition");
    loop {
        let _ = watch_round(&mut client, &sessions, &partition, &wake).await;
        tokio::time::sleep(RETRY).await;
    }
}

/// One resynchronization and the watch after it; returns when the watch ends.
async fn watch_round(
    client: &mut Client,
    sessions: &str,
    partition: &str,
    wake: &StoreWake,
) -> Result<(), etcd_client::Error> {
    let read = client.get(partition, None).await?;
    let revision = read.header().map_or(0, |h| h.revision());
    wake();
    let from = revision.saturating_add(1);
    let mut stream = client
        .watch(
            sessions,
            Some(WatchOptions::new().with_prefix().with_start_revision(from)),
        )
        .await?;
    stream
        .watch(
            partition,
            Some(WatchOptions::new().with_start_revision(from)),
        )
        .await?;
    while let Some(resp) = stream.message().await? {
        if resp.canceled() || resp.compact_revision() > 0 {
            // Compacted past our start, or cancelled by etcd: read everything again.
            return Ok(());
        }
        if !resp.events().is_empty() {
            wake();
        }
    }
    Ok(())
}
