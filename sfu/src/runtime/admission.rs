//! Admission of subscriber connections against the server's configured capacity: a new
//! subscriber connection (a participant's first subscription, a WHEP viewer) is refused while
//! the process holds `max_subscribers` of them, or while the media thread that would carry it
//! is busier than `busy_percent`. Refusing at the door is what keeps a server past capacity
//! bounded: every admitted subscriber costs memory (its connection's buffers and history) and
//! forwarding work that the ones already there pay for in loss.
//!
//! What is never refused: publishers, a participant that holds its slot already (more
//! subscriptions on its connection, a resume after its socket dropped), and anything not
//! subscribing. A slot ([`SubscriberSlot`]) is held by its participant's task until the
//! participant ends. (The per-address connection limits of the accept loops are
//! [`crate::admission`], a separate matter.)

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// The capacity new subscriber connections are admitted against; zero turns a check off.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AdmissionConfig {
    /// Subscriber connections (SDK participants that subscribe, WHEP viewers) across the
    /// process; 0: no limit.
    pub max_subscribers: usize,
    /// New subscriber connections are refused while the media thread that would carry them
    /// spent more than this percentage of its last ~2 s working (see `shard::BUSY_WINDOW`);
    /// 0: off.
    pub busy_percent: u8,
}

/// Why a subscriber connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// The process holds `max_subscribers` (the number) subscriber connections.
    #[error("subscribers at this server's capacity, try again later or another server")]
    Capacity(usize),
    /// The media thread of the room is busier than the configured share.
    #[error("media thread busy ({busy:.0}% > {limit}%), try again later or another server")]
    Busy { busy: f64, limit: u8 },
}

impl Refusal {
    /// The reason as a metrics label: `max_subscribers` or `cpu`.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Capacity(_) => "max_subscribers",
            Self::Busy { .. } => "cpu",
        }
    }
}

/// Subscriber connections held now, and the refusals counted since the start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AdmissionCounts {
    pub subscribers: usize,
    pub refused_capacity: u64,
    pub refused_busy: u64,
}

/// The process's subscriber connections and refusals; shared by every participant task.
#[derive(Debug, Default)]
pub struct Admission {
    config: AdmissionConfig,
    subscribers: AtomicUsize,
    refused_capacity: AtomicU64,
    refused_busy: AtomicU64,
}

impl Admission {
    pub fn new(config: AdmissionConfig) -> Arc<Self> {
        Arc::new(Self {
            config,
            ..Self::default()
        })
    }

    /// A slot for one subscriber connection on a media thread `busy_percent` busy, held until
    /// the [`SubscriberSlot`] is dropped; a refusal is counted.
    pub fn admit(self: &Arc<Self>, busy_percent: f64) -> Result<SubscriberSlot, Refusal> {
        self.check_busy(busy_percent)?;
        let max = self.config.max_subscribers;
        self.subscribers
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |held| {
                (max == 0 || held < max).then_some(held + 1)
            })
            .map_err(|_| self.refused(Refusal::Capacity(max)))?;
        Ok(SubscriberSlot {
            admission: Arc::clone(self),
        })
    }

    /// Whether [`admit`](Self::admit) would refuse now, without taking a slot: lets a
    /// caller refuse before doing the work a connection needs. A refusal is counted.
    pub fn check(&self, busy_percent: f64) -> Result<(), Refusal> {
        self.check_busy(busy_percent)?;
        let max = self.config.max_subscribers;
        if max != 0 && self.subscribers.load(Ordering::Relaxed) >= max {
            return Err(self.refused(Refusal::Capacity(max)));
        }
        Ok(())
    }

    pub fn counts(&self) -> AdmissionCounts {
        AdmissionCounts {
            subscribers: self.subscribers.load(Ordering::Relaxed),
            refused_capacity: self.refused_capacity.load(Ordering::Relaxed),
            refused_busy: self.refused_busy.load(Ordering::Relaxed),
        }
    }

    fn check_busy(&self, busy: f64) -> Result<(), Refusal> {
        let limit = self.config.busy_percent;
        if limit != 0 && busy > f64::from(limit) {
            return Err(self.refused(Refusal::Busy { busy, limit }));
        }
        Ok(())
    }

    fn refused(&self, refusal: Refusal) -> Refusal {
        let counter = match refusal {
            Refusal::Capacity(_) => &self.refused_capacity,
            Refusal::Busy { .. } => &self.refused_busy,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        refusal
    }
}

/// One admitted subscriber connection's place, given back when dropped.
#[derive(Debug)]
pub struct SubscriberSlot {
    admission: Arc<Admission>,
}

impl Drop for SubscriberSlot {
    fn drop(&mut self) {
        self.admission.subscribers.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admission(max_subscribers: usize, busy_percent: u8) -> Arc<Admission> {
        Admission::new(AdmissionConfig {
            max_subscribers,
            busy_percent,
        })
    }

    #[test]
    fn slots_are_refused_at_the_capacity_and_come_back_when_dropped() {
        let admission = admission(2, 0);
        let first = admission.admit(0.0).expect("first");
        let second = admission.admit(0.0).expect("second");
        assert_eq!(admission.check(0.0), Err(Refusal::Capacity(2)));
        assert_eq!(admission.admit(0.0).err(), Some(Refusal::Capacity(2)));
        drop(first);
        assert_eq!(admission.check(0.0), Ok(()));
        let third = admission.admit(0.0).expect("a dropped slot is free again");
        let counts = admission.counts();
        assert_eq!((counts.subscribers, counts.refused_capacity), (2, 2));
        drop((second, third));
        assert_eq!(admission.counts().subscribers, 0);
    }

    #[test]
    fn a_busy_media_thread_refuses_and_an_idle_one_admits() {
        let admission = admission(0, 80);
        assert!(
            admission.admit(80.0).is_ok(),
            "at the limit is not above it"
        );
        let refused = admission.admit(91.5).err();
        assert_eq!(
            refused,
            Some(Refusal::Busy {
                busy: 91.5,
                limit: 80
            })
        );
        assert_eq!(refused.map(|r| r.label()), Some("cpu"));
        assert_eq!(admission.counts().refused_busy, 1);
    }

    #[test]
    fn zero_turns_both_checks_off() {
        let admission = admission(0, 0);
        let slots: Vec<_> = (0..1000)
            .map(|_| admission.admit(100.0).expect("no limit"))
            .collect();
        assert_eq!(admission.counts().subscribers, 1000);
        drop(slots);
        assert_eq!(admission.counts(), AdmissionCounts::default());
    }
}
