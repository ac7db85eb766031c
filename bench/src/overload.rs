//! The overload step (issue 15 item 5): after the ramp, subscribers are added up to a multiple
//! (2×) of the largest lossless step, and one window is measured while the server's RSS is
//! sampled every half second and its signaling is probed (a fresh connection's join, then a
//! ping) every second. It answers: does RSS stay within 1.2× of its value at capacity, do the
//! subscribers that were there keep receiving, does signaling keep answering.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::procfs;
use crate::ramp::{Joins, Ramp, StepResult};
use crate::stats::Percentiles;

/// RSS samples kept (one per [`RSS_EVERY`]): bounds the curve of a long step.
const MAX_RSS_SAMPLES: usize = 1200;
const RSS_EVERY: Duration = Duration::from_millis(500);
/// Signaling probes kept (one per [`PROBE_EVERY`]).
const MAX_PROBES: usize = 600;
const PROBE_EVERY: Duration = Duration::from_secs(1);
/// One probe (connect, join, ping) gives up after this long and counts as failed.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// One signaling probe: a fresh connection's join, then a ping on it.
#[derive(Debug, Clone, Copy)]
pub struct Probe {
    pub join_ms: f64,
    pub ping_ms: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OverloadResult {
    pub factor: f64,
    /// The largest lossless step (mean loss < 0.5 %) and the server's RSS at its window's end.
    pub capacity_subscribers: usize,
    pub rss_at_capacity_mb: f64,
    /// The window at `factor` × capacity (`first_subscribers` holds the capacity's
    /// subscribers on their own).
    pub step: StepResult,
    /// The largest RSS sampled from the first join of the step to the end of its window.
    pub rss_peak_mb: f64,
    /// RSS at the end of the overload window / at capacity (goal ≤ 1.2).
    pub rss_ratio: f64,
    /// Peak RSS / RSS at capacity.
    pub rss_peak_ratio: f64,
    /// (seconds since the step began, RSS MB).
    pub rss_curve: Vec<(f64, f64)>,
    /// Signaling probes during the step: answered ones' join and ping times, and failures.
    pub probe_join_ms: Percentiles,
    pub probe_ping_ms: Percentiles,
    pub probes_failed: usize,
    /// Subscribers that joined during the step, of those asked for.
    pub joined: usize,
    pub asked: usize,
    /// Of those asked for, how many the server refused at its capacity (admission control).
    #[serde(default)]
    pub refused: usize,
}

/// Runs the overload step on `ramp` after its `steps`; `None` (with a progress line) when no
/// step was lossless or the step could not be measured.
pub async fn run(ramp: &mut Ramp<'_>, steps: &[StepResult], factor: f64) -> Option<OverloadResult> {
    let (started, name) = (ramp.started, ramp.name.clone());
    let say = |what: String| {
        eprintln!(
            "[{:6.1}s] {name}: overload: {what}",
            started.elapsed().as_secs_f64()
        );
    };
    let Some(capacity) = steps.iter().rev().find(|s| s.loss_mean < 0.005).cloned() else {
        say("no lossless step, nothing to double".to_owned());
        return None;
    };
    let goal = ((capacity.subscribers as f64) * factor).round() as usize;
    let before = ramp.subscribers();
    say(format!(
        "capacity {} subscribers (RSS {:.0} MB); {}",
        capacity.subscribers,
        capacity.rss_mb,
        if goal <= before {
            format!("{before} subscribers already ≥ {goal}, measured as they are")
        } else {
            format!("growing to {goal}")
        }
    ));
    let step_start = Instant::now();
    let stop = Arc::new(tokio::sync::Notify::new());
    let rss = spawn_rss_sampler(ramp.pid, step_start, Arc::clone(&stop));
    let probes = spawn_prober(Arc::clone(&ramp.target), Arc::clone(&stop));

    let refused_before = ramp.refused;
    let grown = tokio::time::timeout(ramp.config.budget, ramp.grow(goal)).await;
    // Joins cut short by an error or the budget: refusals were counted as they came.
    let unfinished = |ramp: &Ramp<'_>| {
        let refused = ramp.refused - refused_before;
        Joins {
            failed: goal.saturating_sub(ramp.subscribers() + refused),
            refused,
        }
    };
    let joins = match grown {
        Ok(Ok(joins)) => joins,
        Ok(Err(err)) => {
            say(format!("growing failed: {err:#}"));
            unfinished(ramp)
        }
        Err(_) => {
            say(format!(
                "joins did not finish within {:.0} s",
                ramp.config.budget.as_secs_f64()
            ));
            unfinished(ramp)
        }
    };
    let measured = ramp
        .measure(goal, before, joins, None, Some(capacity.subscribers))
        .await;
    stop.notify_waiters();
    let curve = rss.await.unwrap_or_default();
    let outcomes = probes.await.unwrap_or_default();
    let step = match measured {
        Ok(step) => step,
        Err(err) => {
            say(format!("window failed: {err:#}"));
            return None;
        }
    };
    let rss_peak_mb = curve.iter().map(|(_, mb)| *mb).fold(step.rss_mb, f64::max);
    let answered: Vec<Probe> = outcomes.iter().filter_map(|p| *p).collect();
    let result = OverloadResult {
        factor,
        capacity_subscribers: capacity.subscribers,
        rss_at_capacity_mb: capacity.rss_mb,
        rss_ratio: step.rss_mb / capacity.rss_mb,
        rss_peak_ratio: rss_peak_mb / capacity.rss_mb,
        rss_peak_mb,
        rss_curve: curve,
        probe_join_ms: Percentiles::of(answered.iter().map(|p| p.join_ms).collect()),
        probe_ping_ms: Percentiles::of(answered.iter().map(|p| p.ping_ms).collect()),
        probes_failed: outcomes.len() - answered.len(),
        joined: ramp.subscribers().saturating_sub(before),
        asked: goal.saturating_sub(before),
        refused: joins.refused,
        step,
    };
    let first = result.step.first_subscribers.as_ref();
    say(format!(
        "{} subscribers ({} refused at the server's capacity): RSS {:.0} MB at the window's end, peak {:.0} MB ({:.2}× / {:.2}× capacity) | the first {} subscribers: {} silent, loss {:.2}% | client connections lost {} | signaling: {} probes answered (join p50 {:.0} ms max {:.0} ms, ping p50 {:.1} ms max {:.1} ms), {} failed",
        result.step.subscribers,
        result.refused,
        result.step.rss_mb,
        result.rss_peak_mb,
        result.rss_ratio,
        result.rss_peak_ratio,
        first.map_or(0, |f| f.count),
        first.map_or(0, |f| f.silent),
        first.map_or(f64::NAN, |f| f.loss_mean * 100.0),
        result
            .step
            .connections_lost
            .map_or_else(|| "n/a".to_owned(), |n| n.to_string()),
        answered.len(),
        result.probe_join_ms.p50,
        result.probe_join_ms.max,
        result.probe_ping_ms.p50,
        result.probe_ping_ms.max,
        result.probes_failed,
    ));
    Some(result)
}

fn spawn_rss_sampler(
    pid: u32,
    start: Instant,
    stop: Arc<tokio::sync::Notify>,
) -> tokio::task::JoinHandle<Vec<(f64, f64)>> {
    tokio::spawn(async move {
        let mut curve = Vec::new();
        let stopped = stop.notified();
        tokio::pin!(stopped);
        while curve.len() < MAX_RSS_SAMPLES {
            if let Ok(kb) = procfs::rss_kb(pid) {
                curve.push((start.elapsed().as_secs_f64(), kb as f64 / 1024.0));
            }
            tokio::select! {
                () = &mut stopped => break,
                () = tokio::time::sleep(RSS_EVERY) => {}
            }
        }
        curve
    })
}

/// Probes the target's signaling every [`PROBE_EVERY`] until stopped; `None` for a probe that
/// failed or timed out.
fn spawn_prober(
    target: Arc<dyn crate::ramp::Target>,
    stop: Arc<tokio::sync::Notify>,
) -> tokio::task::JoinHandle<Vec<Option<Probe>>> {
    tokio::spawn(async move {
        let mut outcomes = Vec::new();
        let stopped = stop.notified();
        tokio::pin!(stopped);
        for n in 0..MAX_PROBES {
            let outcome = tokio::select! {
                () = &mut stopped => break,
                outcome = tokio::time::timeout(PROBE_TIMEOUT, target.probe_signaling(n)) => outcome,
            };
            let probe = match outcome {
                Ok(Ok(probe)) => Some(probe),
                Ok(Err(err)) => {
                    tracing::debug!(%err, "signaling probe failed");
                    None
                }
                Err(_) => None,
            };
            outcomes.push(probe);
            tokio::select! {
                () = &mut stopped => break,
                () = tokio::time::sleep(PROBE_EVERY) => {}
            }
        }
        outcomes
    })
}
