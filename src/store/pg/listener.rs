//! Each server's ear on the shared database: `LISTEN` for the callers whose data any server
//! committed (to wake the calls waiting for it here) and for configuration changes.
//!
//! Notifications carry a key; the data stays in the tables. A notification sent while the
//! listener's connection was down is lost, so when it is re-established every waiting call
//! here is woken to look at the store again, and the configuration is checked.

use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::PgListener;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use super::PgDb;
use super::batch::WAKE_CHANNEL;
use crate::wakeups::{WakeKey, Wakeups};

/// The channel on which every configuration change is announced (by a trigger; the
/// payload is the new configuration version).
pub const CONFIG_CHANNEL: &str = "precall_config";

/// How long the listener waits before connecting again after a failure.
const RETRY: Duration = Duration::from_millis(200);

/// The key a wake-up's payload names (see [`super::batch::wake_payload`]).
fn wake_key(payload: &str) -> Option<WakeKey> {
    let (action, phone) = payload.split_once(':')?;
    Some(WakeKey {
        action_id: action.parse().ok()?,
        phone: phone.to_owned(),
    })
}

/// Listens until the task is aborted: wakes `wakeups` for every committed caller and
/// notifies `config_changed` for every configuration change (and after a reconnection).
pub fn spawn(db: PgDb, wakeups: Arc<dyn Wakeups>, config_changed: Arc<Notify>) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let mut listener = match connect(&db).await {
                Ok(listener) => listener,
                Err(e) => {
                    tracing::warn!(error = %e, "could not listen for notifications; trying again");
                    tokio::time::sleep(RETRY).await;
                    continue;
                }
            };
            // What was sent before this connection listened is looked at afresh.
            wakeups.notify_all();
            config_changed.notify_one();
            loop {
                match listener.try_recv().await {
                    Ok(Some(n)) if n.channel() == WAKE_CHANNEL => {
                        if let Some(key) = wake_key(n.payload()) {
                            wakeups.notify(&key);
                        }
                    }
                    Ok(Some(_)) => config_changed.notify_one(),
                    // The connection was lost: listen on a new one, and only then have the
                    // waiting calls look again (what commits before the new LISTEN they
                    // find; what commits after it is announced).
                    Ok(None) => {
                        tracing::warn!("the notification connection was lost; listening again");
                        break;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "notifications failed; listening again");
                        tokio::time::sleep(RETRY).await;
                        break;
                    }
                }
            }
        }
    })
}

async fn connect(db: &PgDb) -> Result<PgListener, sqlx::Error> {
    let mut listener = PgListener::connect_with(&db.pool).await?;
    listener.listen_all([WAKE_CHANNEL, CONFIG_CHANNEL]).await?;
    Ok(listener)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wake_up_names_the_webhook_and_the_caller() {
        let key = WakeKey {
            action_id: 42,
            phone: "+12125551234".into(),
        };
        assert_eq!(
            wake_key(&super::super::batch::wake_payload(&key)),
            Some(key)
        );
        assert_eq!(wake_key("nonsense"), None);
        assert_eq!(wake_key("x:+1"), None);
    }
}
