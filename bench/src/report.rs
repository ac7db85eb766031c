//! Writes results.json, results.md (tables and headline ratios) and SVG plots.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result};
use plotters::prelude::*;

use crate::Report;
use crate::ramp::{RampResult, StepResult};

/// The largest step without loss (mean loss < 0.5 %), else the smallest step.
pub fn headline_step(ramp: &RampResult) -> Option<&StepResult> {
    ramp.steps
        .iter()
        .rev()
        .find(|s| s.loss_mean < 0.005)
        .or_else(|| ramp.steps.first())
}

/// The step with the best packets/s per core (the server at its most efficient here).
pub fn best_step(ramp: &RampResult) -> Option<&StepResult> {
    ramp.steps
        .iter()
        .filter(|s| s.loss_mean < 0.005)
        .max_by(|a, b| a.pps_per_core.total_cmp(&b.pps_per_core))
        .or_else(|| ramp.steps.first())
}

pub fn write(report: &Report, dir: &Path) -> Result<()> {
    std::fs::write(
        dir.join("results.json"),
        serde_json::to_string_pretty(report)?,
    )
    .context("writing results.json")?;
    std::fs::write(dir.join("results.md"), markdown(report)).context("writing results.md")?;
    if report.ramps.iter().any(|r| !r.steps.is_empty()) {
        plot_cpu(report, &dir.join("cpu.svg"))?;
        plot_loss(report, &dir.join("loss.svg"))?;
        plot_latency(report, &dir.join("latency.svg"))?;
    }
    Ok(())
}

pub fn markdown(report: &Report) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "Command: `{}`  ", report.command);
    let _ = writeln!(
        md,
        "Run time {:.0} s; each publisher sends VP8-shaped video at {:.2} Mb/s (30 fps, keyframe 5× every 2.5 s) and Opus-sized audio at 50 packets/s.\n",
        report.elapsed_s,
        report.video_bps as f64 / 1e6
    );
    if !report.floor.is_empty() {
        let _ = writeln!(
            md,
            "### Floor (sending-thread CPU per packet, median of runs)\n"
        );
        let _ = writeln!(
            md,
            "| SRTP profile | protect | send_to | sendmmsg×32 | GSO×n | protect+send_to | protect+sendmmsg | protect+GSO | floor pkt/s/core (send_to) |"
        );
        let _ = writeln!(md, "|---|---:|---:|---:|---:|---:|---:|---:|---:|");
        for f in &report.floor {
            let _ = writeln!(
                md,
                "| {} | {:.0} ns | {:.0} ns | {:.0} ns | {:.0} ns (n={}) | {:.0} ns | {:.0} ns | {:.0} ns | {:.0}k |",
                f.profile,
                f.protect_ns,
                f.send_to_ns,
                f.sendmmsg_ns,
                f.gso_ns,
                f.gso_segments,
                f.protect_send_to_ns,
                f.protect_sendmmsg_ns,
                f.protect_gso_ns,
                f.pps_per_core() / 1e3
            );
        }
        md.push('\n');
    }
    for ramp in &report.ramps {
        let _ = writeln!(md, "### {} (ended: {})\n", ramp.target, ramp.ended);
        let _ = writeln!(
            md,
            "| subs | pubs | fwd pkt/s | server cores | µs/pkt | pkt/s/core | RSS MB | kB/sub | loss mean | loss worst | latency p50/p99/max µs | direct p50/p99 µs | added p50/p99 µs | join audio p50/p95 ms | join video p50/p95 ms | load gen cores (generator threads) |"
        );
        let _ = writeln!(
            md,
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
        );
        for s in &ramp.steps {
            let (a50, a99) = s.added_latency_us();
            let _ = writeln!(
                md,
                "| {} | {} | {:.0} | {:.2} | {:.1} | {:.0} | {:.0} | {:.0} | {:.2}% | {:.2}% | {:.0}/{:.0}/{:.0} | {:.0}/{:.0} | {:.0}/{:.0} | {:.0}/{:.0} | {:.0}/{:.0} | {:.2}{} |",
                s.subscribers,
                s.publishers,
                s.forwarded_pps,
                s.server_cores,
                s.cpu_us_per_packet,
                s.pps_per_core,
                s.rss_mb,
                s.rss_per_subscriber_kb,
                s.loss_mean * 100.0,
                s.loss_worst * 100.0,
                s.latency_us.p50,
                s.latency_us.p99,
                s.latency_us.max,
                s.direct_latency_us.p50,
                s.direct_latency_us.p99,
                a50,
                a99,
                s.join_audio_ms.p50,
                s.join_audio_ms.p95,
                s.join_video_ms.p50,
                s.join_video_ms.p95,
                s.loadgen_cores,
                s.generator_cores
                    .map(|g| format!(" ({g:.2})"))
                    .unwrap_or_default(),
            );
        }
        md.push('\n');
        if let Some(o) = &ramp.overload {
            md.push_str(&overload_section(o));
        }
    }
    // Headline ratios.
    let sluice = report.ramps.iter().find(|r| r.target == "sluice");
    let peer = report
        .ramps
        .iter()
        .find(|r| r.target != "sluice" && !is_relay(r));
    let relays: Vec<&RampResult> = report.ramps.iter().filter(|r| is_relay(r)).collect();
    let gcm = report
        .floor
        .iter()
        .find(|f| f.profile == "AEAD_AES_128_GCM");
    let _ = writeln!(md, "### Headline\n");
    if let Some(s) = sluice.and_then(best_step) {
        let _ = writeln!(
            md,
            "- Sluice: {:.0} forwarded packets/s per core ({:.1} µs per packet) at {} subscribers.",
            s.pps_per_core, s.cpu_us_per_packet, s.subscribers
        );
        if let Some(f) = gcm {
            let _ = writeln!(
                md,
                "- Floor ({}, protect + send_to): {:.0} packets/s per core → Sluice is {:.1} % of the floor ({:.1} % of the GSO-batched floor).",
                f.profile,
                f.pps_per_core(),
                100.0 * s.pps_per_core / f.pps_per_core(),
                100.0 * s.pps_per_core / (1e9 / f.protect_gso_ns)
            );
        }
        if let Some(p) = peer.and_then(best_step) {
            let _ = writeln!(
                md,
                "- Peer {}: {:.0} packets/s per core at {} subscribers → Sluice/peer = {:.2}.",
                peer.map_or("", |r| r.target.as_str()),
                p.pps_per_core,
                p.subscribers,
                s.pps_per_core / p.pps_per_core
            );
        }
    }
    if let Some(s) = sluice.and_then(best_step) {
        for relay in &relays {
            if let Some(p) = best_step(relay) {
                let _ = writeln!(
                    md,
                    "- sans-IO prototype {}: {:.0} packets/s per core ({:.1} µs per packet) at {} subscribers → Sluice/prototype = {:.2}.",
                    relay.target,
                    p.pps_per_core,
                    p.cpu_us_per_packet,
                    p.subscribers,
                    s.pps_per_core / p.pps_per_core
                );
            }
        }
    }
    if let Some(sluice) = sluice
        && !relays.is_empty()
    {
        md.push_str(&relay_comparison(sluice, &relays));
    }
    if let Some(s) = sluice.and_then(headline_step) {
        let (a50, a99) = s.added_latency_us();
        let _ = writeln!(
            md,
            "- At {} subscribers (largest step without loss): RSS {:.0} kB per subscriber; added latency p50 {:.0} µs, p99 {:.0} µs (SFU path {:.0}/{:.0} µs − direct path {:.0}/{:.0} µs).",
            s.subscribers,
            s.rss_per_subscriber_kb,
            a50,
            a99,
            s.latency_us.p50,
            s.latency_us.p99,
            s.direct_latency_us.p50,
            s.direct_latency_us.p99
        );
    }
    for note in &report.notes {
        let _ = writeln!(md, "- Note: {note}");
    }
    md
}

const COLORS: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(255, 127, 14),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(23, 190, 207),
];

/// A ramp of the sans-IO prototype relay (`--rtc-relay`).
fn is_relay(ramp: &RampResult) -> bool {
    ramp.target.starts_with("rtc-relay")
}

/// Sluice against each prototype variant at the steps both ran.
fn relay_comparison(sluice: &RampResult, relays: &[&RampResult]) -> String {
    let mut md = String::new();
    let _ = writeln!(
        md,
        "\n### Sluice (webrtc 0.21 async layer) vs the sans-IO `rtc` prototype, per step\n"
    );
    let _ = writeln!(
        md,
        "| subs | system | µs/pkt | pkt/s/core | kB/sub | loss mean | added p50/p99 µs | Sluice/system (pkt/s/core) |"
    );
    let _ = writeln!(md, "|---:|---|---:|---:|---:|---:|---:|---:|");
    for s in &sluice.steps {
        let (a50, a99) = s.added_latency_us();
        let _ = writeln!(
            md,
            "| {} | sluice | {:.1} | {:.0} | {:.0} | {:.2}% | {:.0}/{:.0} | 1.00 |",
            s.subscribers,
            s.cpu_us_per_packet,
            s.pps_per_core,
            s.rss_per_subscriber_kb,
            s.loss_mean * 100.0,
            a50,
            a99
        );
        for relay in relays {
            if let Some(r) = relay.steps.iter().find(|r| r.subscribers == s.subscribers) {
                let (b50, b99) = r.added_latency_us();
                let _ = writeln!(
                    md,
                    "| {} | {} | {:.1} | {:.0} | {:.0} | {:.2}% | {:.0}/{:.0} | {:.2} |",
                    r.subscribers,
                    relay.target,
                    r.cpu_us_per_packet,
                    r.pps_per_core,
                    r.rss_per_subscriber_kb,
                    r.loss_mean * 100.0,
                    b50,
                    b99,
                    if r.pps_per_core > 0.0 {
                        s.pps_per_core / r.pps_per_core
                    } else {
                        f64::NAN
                    }
                );
            }
        }
    }
    md.push('\n');
    md
}

type Series = (String, Vec<(f64, f64)>);

fn line_chart(path: &Path, title: &str, y_label: &str, series: &[Series]) -> Result<()> {
    let root = SVGBackend::new(path, (720, 420)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_err)?;
    let points = series.iter().flat_map(|(_, p)| p.iter());
    let x_max = points.clone().map(|p| p.0).fold(1.0, f64::max) * 1.05;
    let y_max = points
        .map(|p| p.1)
        .filter(|v| v.is_finite())
        .fold(1e-9, f64::max)
        * 1.15;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..x_max, 0.0..y_max)
        .map_err(plot_err)?;
    chart
        .configure_mesh()
        .x_desc("subscribers")
        .y_desc(y_label)
        .draw()
        .map_err(plot_err)?;
    for (i, (name, points)) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        chart
            .draw_series(LineSeries::new(
                points.iter().copied(),
                color.stroke_width(2),
            ))
            .map_err(plot_err)?
            .label(name.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color));
        chart
            .draw_series(points.iter().map(|&p| Circle::new(p, 3, color.filled())))
            .map_err(plot_err)?;
    }
    chart
        .configure_series_labels()
        .border_style(BLACK)
        .background_style(WHITE.mix(0.8))
        .position(SeriesLabelPosition::UpperLeft)
        .draw()
        .map_err(plot_err)?;
    root.present().map_err(plot_err)?;
    Ok(())
}

fn plot_err(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow::anyhow!("plotting: {e}")
}

fn per_ramp(report: &Report, label: &str, f: impl Fn(&StepResult) -> f64) -> Vec<Series> {
    report
        .ramps
        .iter()
        .map(|r| {
            (
                format!("{} {label}", r.target),
                r.steps
                    .iter()
                    .map(|s| (s.subscribers as f64, f(s)))
                    .collect(),
            )
        })
        .collect()
}

fn plot_cpu(report: &Report, path: &Path) -> Result<()> {
    let mut series = per_ramp(report, "µs CPU per forwarded packet", |s| {
        s.cpu_us_per_packet
    });
    if let Some(f) = report
        .floor
        .iter()
        .find(|f| f.profile == "AEAD_AES_128_GCM")
    {
        let x_max = report
            .ramps
            .iter()
            .flat_map(|r| r.steps.iter().map(|s| s.subscribers as f64))
            .fold(1.0, f64::max);
        series.push((
            "floor: protect + send_to".to_owned(),
            vec![
                (0.0, f.protect_send_to_ns / 1e3),
                (x_max, f.protect_send_to_ns / 1e3),
            ],
        ));
    }
    line_chart(
        path,
        "Server CPU per forwarded packet",
        "µs per packet",
        &series,
    )
}

fn plot_loss(report: &Report, path: &Path) -> Result<()> {
    let mut series = per_ramp(report, "mean loss %", |s| s.loss_mean * 100.0);
    series.extend(per_ramp(report, "server cores", |s| s.server_cores * 100.0));
    line_chart(
        path,
        "Loss per subscriber (%) and server CPU (% of one core)",
        "%",
        &series,
    )
}

fn plot_latency(report: &Report, path: &Path) -> Result<()> {
    let mut series = Vec::new();
    for r in &report.ramps {
        for (name, pick) in [("added p50", 0usize), ("added p99", 1usize)] {
            series.push((
                format!("{} {name}", r.target),
                r.steps
                    .iter()
                    .map(|s| {
                        let (a50, a99) = s.added_latency_us();
                        (
                            s.subscribers as f64,
                            (if pick == 0 { a50 } else { a99 }).max(0.0) / 1000.0,
                        )
                    })
                    .collect(),
            ));
        }
    }
    line_chart(
        path,
        "Added forwarding latency (SFU path − direct path)",
        "ms",
        &series,
    )
}

/// The overload step of one ramp: RSS at capacity against the step, what the subscribers that
/// were there received, and how signaling answered.
fn overload_section(o: &crate::overload::OverloadResult) -> String {
    let mut md = String::new();
    let s = &o.step;
    let _ = writeln!(
        md,
        "#### Overload: {} subscribers ({:.1}× the largest lossless step, {})\n",
        s.subscribers, o.factor, o.capacity_subscribers
    );
    let _ = writeln!(md, "| figure | value |\n|---|---:|");
    let _ = writeln!(
        md,
        "| RSS at capacity → end of the overload window (peak) | {:.0} MB → {:.0} MB ({:.0} MB) |",
        o.rss_at_capacity_mb, s.rss_mb, o.rss_peak_mb
    );
    let _ = writeln!(
        md,
        "| RSS ratio, end of window / peak (goal ≤ 1.2) | {:.2} / {:.2} |",
        o.rss_ratio, o.rss_peak_ratio
    );
    let _ = writeln!(
        md,
        "| subscribers joined during the step (refused at the server's capacity) | {} of {} ({}) |",
        o.joined, o.asked, o.refused
    );
    if let Some(f) = &s.first_subscribers {
        let _ = writeln!(
            md,
            "| the {} subscribers of the capacity step: silent, mean loss | {}, {:.2} % |",
            f.count,
            f.silent,
            f.loss_mean * 100.0
        );
    }
    let _ = writeln!(
        md,
        "| all subscribers: silent, mean loss, worst loss | {}, {:.2} %, {:.2} % |",
        s.subscribers_silent,
        s.loss_mean * 100.0,
        s.loss_worst * 100.0
    );
    if let Some(lost) = s.connections_lost {
        let _ = writeln!(
            md,
            "| client connections that failed or closed after they were up (whole ramp) | {lost} |"
        );
    }
    let _ = writeln!(
        md,
        "| server cores, forwarded packets/s (published {:.0}/s) | {:.2}, {:.0} |",
        s.published_pps, s.server_cores, s.forwarded_pps
    );
    let _ = writeln!(
        md,
        "| signaling probes answered (failed): join p50 / max, ping p50 / max | {} ({}): {:.0} / {:.0} ms, {:.1} / {:.1} ms |",
        o.probe_join_ms.count,
        o.probes_failed,
        o.probe_join_ms.p50,
        o.probe_join_ms.max,
        o.probe_ping_ms.p50,
        o.probe_ping_ms.max
    );
    let _ = writeln!(
        md,
        "| load generator cores (generator threads) | {:.2}{} |",
        s.loadgen_cores,
        s.generator_cores
            .map(|g| format!(" ({g:.2})"))
            .unwrap_or_default()
    );
    // The RSS curve, thinned to at most 16 points.
    let every = o.rss_curve.len().div_ceil(16).max(1);
    let curve: Vec<String> = o
        .rss_curve
        .iter()
        .step_by(every)
        .map(|(t, mb)| format!("{t:.1} s {mb:.0} MB"))
        .collect();
    let _ = writeln!(md, "\nRSS during the step: {}\n", curve.join(", "));
    md
}
