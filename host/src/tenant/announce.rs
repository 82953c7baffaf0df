//! Announcements of tenant-component changes through Redis pub/sub, so that every host
//! compiles a new version before the first call needs it.
//!
//! Provisioning publishes `{"tenantId", "component", "revision"}` on
//! `<redis_key_prefix>tenant-components` after each change it commits. An announcement only
//! warms the cache: correctness does not depend on it, because every caller passes the
//! revision it read from PostgreSQL and a host with an older one loads the component again. So a
//! host that was disconnected from Redis when an announcement went out serves the new version
//! all the same, only with the compile on its first call.

use std::sync::Arc;

use serde_json::Value;

use super::{Target, TenantComponents};
use crate::websocket::fanout::{Event, Fanout};

/// The pub/sub channel of the announcements, after the application's Redis key prefix.
pub const CHANNEL: &str = "tenant-components";

/// The target an announcement names, if it is one.
pub fn parse(payload: &[u8]) -> Option<Target> {
    let value: Value = serde_json::from_slice(payload).ok()?;
    Some(Target {
        tenant_id: value["tenantId"].as_i64()?,
        name: value["component"].as_str()?.to_owned(),
        revision: value["revision"].as_i64()?,
    })
}

/// Listens for announcements on `fanout` for as long as the host runs.
pub async fn listen(
    components: Arc<TenantComponents>,
    fanout: &Fanout,
    redis_key_prefix: &str,
) -> anyhow::Result<()> {
    let channel = format!("{redis_key_prefix}{CHANNEL}");
    let weak = Arc::downgrade(&components);
    fanout
        .start(move |event| {
            let Event::Message { payload, .. } = event else {
                // Missed announcements cost only a compile on the next call.
                return;
            };
            let (Some(target), Some(components)) = (parse(&payload), weak.upgrade()) else {
                return;
            };
            tokio::spawn(async move {
                if let Err(failure) = components.refresh(&target).await {
                    tracing::warn!(
                        tenant = target.tenant_id,
                        component = target.name,
                        error = %failure,
                        "cannot load an announced tenant component"
                    );
                }
            });
        })
        .await?;
    fanout.subscribe_always(&channel).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_an_announcement() {
        let target = parse(br#"{"tenantId": 7, "component": "faq", "revision": 3}"#).unwrap();
        assert_eq!(
            (target.tenant_id, target.name.as_str(), target.revision),
            (7, "faq", 3)
        );
        assert!(parse(b"{}").is_none());
        assert!(parse(b"not json").is_none());
    }
}
