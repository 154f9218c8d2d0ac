//! The election of the acting controller: every `oncelog controller --etcd` process campaigns
//! (etcd's election API) on a lease it keeps alive; the one whose campaign returns is acting
//! until its lease ends (it stops, is killed, or cannot reach etcd to renew it), and then the
//! next candidate's campaign returns.
//!
//! Invariant: `acting` is true only between a won campaign and the first failed renewal of the
//! lease that campaign ran on. Being acting only decides who expires sessions; every change of
//! the record is a compare-and-set, so two processes that both believe they act for a moment
//! (one's lease just expired in etcd, it has not noticed yet) cannot apply conflicting changes.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use etcd_client::Client;
use tokio::runtime::Runtime;
use tokio::task::JoinHandle;

/// This process's campaign, running on the store's runtime until `Election::stop`.
#[derive(Debug)]
pub struct Election {
    task: JoinHandle<()>,
    /// The lease of the current campaign (0: none).
    lease: Arc<AtomicI64>,
    acting: Arc<AtomicBool>,
}

/// Pause after a failed etcd call before the campaign starts again.
const RETRY: Duration = Duration::from_millis(200);

impl Election {
    pub(super) fn start(
        rt: &Runtime,
        client: Client,
        name: String,
        candidate: String,
        ttl_s: i64,
        acting: Arc<AtomicBool>,
    ) -> Election {
        let lease = Arc::new(AtomicI64::new(0));
        let task = rt.spawn(campaign_forever(
            client,
            name,
            candidate,
            ttl_s,
            Arc::clone(&acting),
            Arc::clone(&lease),
        ));
        Election {
            task,
            lease,
            acting,
        }
    }

    /// Stops campaigning and revokes the lease, which resigns at once if this process acts.
    pub(super) fn stop(self, rt: &Runtime, mut client: Client) {
        self.task.abort();
        self.acting.store(false, Ordering::Release);
        let lease = self.lease.load(Ordering::Acquire);
        if lease != 0 {
            let _ = rt.block_on(async {
                tokio::time::timeout(Duration::from_secs(1), client.lease_revoke(lease)).await
            });
        }
    }
}

async fn campaign_forever(
    mut client: Client,
    name: String,
    candidate: String,
    ttl_s: i64,
    acting: Arc<AtomicBool>,
    lease_slot: Arc<AtomicI64>,
) {
    loop {
        acting.store(false, Ordering::Release);
        let lease = match client.lease_grant(ttl_s, None).await {
            Ok(g) => g.id(),
            Err(_) => {
                tokio::time::sleep(RETRY).await;
                continue;
            }
        };
        lease_slot.store(lease, Ordering::Release);
        let mut keeper = tokio::spawn(keep_alive(client.clone(), lease, ttl_s));
        let mut c = client.clone();
        let won = tokio::select! {
            r = c.campaign(name.clone(), candidate.clone(), lease) => r.is_ok(),
            _ = &mut keeper => false,
        };
        if won && !keeper.is_finished() {
            acting.store(true, Ordering::Release);
            // Acting until the lease is lost.
            let _ = (&mut keeper).await;
        }
        keeper.abort();
        acting.store(false, Ordering::Release);
        let _ = client.lease_revoke(lease).await;
        lease_slot.store(0, Ordering::Release);
        tokio::time::sleep(RETRY).await;
    }
}

/// Renews `lease` every third of its TTL; returns when a renewal fails or etcd says it expired.
async fn keep_alive(mut client: Client, lease: i64, ttl_s: i64) {
    let period =
        Duration::from_millis(u64::try_from(ttl_s.saturating_mul(1000) / 3).unwrap_or(300));
    let Ok((mut keeper, mut stream)) = client.lease_keep_alive(lease).await else {
        return;
    };
    loop {
        if keeper.keep_alive().await.is_err() {
            return;
        }
        match tokio::time::timeout(period, stream.message()).await {
            Ok(Ok(Some(m))) if m.ttl() > 0 => {}
            _ => return,
        }
        tokio::time::sleep(period).await;
    }
}
