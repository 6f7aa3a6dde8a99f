//! The health sweeper: a timer that marks silent participants offline (announced once) and
//! closes pooled upstream connections idle past their timeout, and drops metrics series and
//! tunnel pools whose participant is gone — the
//! way back online is a health check, handled in `state`.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::{MissedTickBehavior, interval};

use crate::hub::HubInner;

/// The sweeper never runs more often than this.
pub(crate) const MIN_SWEEP_PERIOD: Duration = Duration::from_millis(10);

/// How often to sweep: often enough that a participant is marked offline within a quarter of
/// the timeout of going silent, and at least once per health interval.
pub(crate) fn sweep_period(health_interval: Duration, timeout: Duration) -> Duration {
    health_interval.min(timeout / 4).max(MIN_SWEEP_PERIOD)
}

pub(crate) async fn run(hub: Arc<HubInner>, mut shutdown: watch::Receiver<bool>) {
    let period = sweep_period(hub.config.health_interval, hub.config.participant_timeout);
    let mut tick = interval(period);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let n = hub.state.sweep(tokio::time::Instant::now());
                if n > 0 {
                    tracing::info!(count = n, "participants went offline");
                }
                hub.connector.prune_idle();
                // What outlived its participant (a request that finished after it left).
                let live = hub.state.participant_keys();
                let ids: std::collections::HashSet<&str> =
                    live.iter().map(|(_, id)| id.as_str()).collect();
                hub.metrics.retain_participants(|id| ids.contains(id));
                hub.tunnels.retain(&live);
            }
            _ = crate::http::service::shutdown_signalled(&mut shutdown) => break,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn period() {
        assert_eq!(
            sweep_period(Duration::from_secs(10), Duration::from_secs(30)),
            Duration::from_millis(7500)
        );
        assert_eq!(
            sweep_period(Duration::from_millis(1), Duration::from_millis(1)),
            MIN_SWEEP_PERIOD
        );
    }
}
