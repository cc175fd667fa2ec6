//! Upgraded connections (WebSocket and other `Upgrade`s): bytes relayed both ways once
//! client and upstream have switched protocols.

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;

/// Relays until either side ends.
pub(crate) async fn relay(client: OnUpgrade, upstream: OnUpgrade) {
    let (client, upstream) = match tokio::try_join!(client, upstream) {
        Ok(pair) => pair,
        Err(e) => {
            tracing::debug!(error = %e, "upgrade did not complete");
            return;
        }
    };
    let mut client = TokioIo::new(client);
    let mut upstream = TokioIo::new(upstream);
    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
}
