//! What the sessions of one server count together: how many are open (the drain waits for
//! none) and how many messages the rate limit refused.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use tokio::sync::Notify;

/// Shared by every session of a server; read by `/metrics` and by the drain.
#[derive(Debug, Default)]
pub struct SessionCounters {
    open: AtomicUsize,
    rate_limited: AtomicU64,
    all_closed: Notify,
}

impl SessionCounters {
    /// Sessions running now (WebSocket connections, joined or not).
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// Messages refused by the per-connection rate limit since the server started.
    pub fn rate_limited(&self) -> u64 {
        self.rate_limited.load(Ordering::Relaxed)
    }

    /// Resolves once no session is running.
    pub async fn all_closed(&self) {
        loop {
            let closed = self.all_closed.notified();
            tokio::pin!(closed);
            // Registered before the check, so a close in between is not missed.
            closed.as_mut().enable();
            if self.open() == 0 {
                return;
            }
            closed.await;
        }
    }

    pub(super) fn count_rate_limited(&self) {
        self.rate_limited.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a session as open until the returned guard is dropped.
    pub(super) fn enter(self: &Arc<Self>) -> OpenSession {
        self.open.fetch_add(1, Ordering::Relaxed);
        OpenSession(Arc::clone(self))
    }
}

/// One open session; dropping it counts the session closed.
pub(super) struct OpenSession(Arc<SessionCounters>);

impl Drop for OpenSession {
    fn drop(&mut self) {
        if self.0.open.fetch_sub(1, Ordering::Relaxed) == 1 {
            self.0.all_closed.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn all_closed_waits_for_the_last_session() {
        let counters = Arc::new(SessionCounters::default());
        let first = counters.enter();
        let second = counters.enter();
        assert_eq!(counters.open(), 2);
        let waiter = tokio::spawn({
            let counters = Arc::clone(&counters);
            async move { counters.all_closed().await }
        });
        drop(first);
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        drop(second);
        tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .expect("all_closed resolves once the last session ends")
            .expect("the waiter does not panic");
        assert_eq!(counters.open(), 0);
    }
}
