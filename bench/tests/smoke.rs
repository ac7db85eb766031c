//! The benchmark's smoke mode stays working: a few subscribers for a few seconds against a real
//! Sluice process with simulcast publishers, driven by the default (sans-IO) load generator;
//! every subscriber receives video and audio and every figure is finite.
#![allow(clippy::unwrap_used)]

use std::process::Command;
use std::time::{Duration, Instant};

#[test]
fn smoke_run_measures_every_subscriber() {
    let out = std::env::temp_dir().join(format!("sluice-bench-smoke-{}", std::process::id()));
    let started = Instant::now();
    let status = Command::new(env!("CARGO_BIN_EXE_sluice-bench"))
        // Simulcast: the publishers send three layers by rid, as browsers do.
        .args(["--smoke", "--self-serve", "--simulcast", "--out"])
        .arg(&out)
        .status()
        .expect("running sluice-bench --smoke");
    assert!(status.success(), "sluice-bench --smoke failed: {status}");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "smoke took {:?}",
        started.elapsed()
    );

    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("results.json")).unwrap()).unwrap();
    let floor = report["floor"].as_array().unwrap();
    assert_eq!(floor.len(), 2, "both SRTP profiles measured");
    for f in floor {
        let ns = f["protect_send_to_ns"].as_f64().unwrap();
        assert!(ns.is_finite() && ns > 0.0, "floor figure {ns}");
    }
    let ramp = &report["ramps"][0];
    assert_eq!(ramp["target"], "sluice");
    let steps = ramp["steps"].as_array().unwrap();
    assert!(!steps.is_empty(), "no step measured: {}", ramp["ended"]);
    for step in steps {
        let subscribers = step["subscribers"].as_u64().unwrap();
        assert!(subscribers >= 2);
        assert_eq!(
            step["subscribers_silent"], 0,
            "a subscriber received nothing"
        );
        assert_eq!(step["joins_failed"], 0);
        // Every subscriber got ~(video + audio) packets for the window: ≥ 100 packets/s each.
        let pps = step["forwarded_pps"].as_f64().unwrap();
        assert!(
            pps > 100.0 * subscribers as f64,
            "forwarded {pps} packets/s"
        );
        // The default generator is the sans-IO one: its threads' CPU is reported on its own.
        let generator = step["generator_cores"].as_f64().unwrap();
        assert!(
            generator.is_finite() && generator > 0.0,
            "generator cores {generator}"
        );
        for key in [
            "server_cores",
            "cpu_us_per_packet",
            "pps_per_core",
            "rss_mb",
            "loss_mean",
        ] {
            let v = step[key].as_f64().unwrap();
            assert!(v.is_finite() && v >= 0.0, "{key} = {v}");
        }
        assert!(
            step["loss_mean"].as_f64().unwrap() < 0.05,
            "loss {}",
            step["loss_mean"]
        );
        let latency = &step["latency_us"];
        assert!(latency["count"].as_u64().unwrap() > 0);
        assert!(latency["p99"].as_f64().unwrap().is_finite());
        assert!(step["direct_latency_us"]["count"].as_u64().unwrap() > 0);
        assert!(step["join_audio_ms"]["count"].as_u64().unwrap() > 0);
        // Every subscriber that joined in this step got audio and, from a simulcast layer, video.
        assert_eq!(
            step["join_video_ms"]["count"], step["join_audio_ms"]["count"],
            "a subscriber received audio but no video"
        );
    }
    for plot in ["cpu.svg", "loss.svg", "latency.svg", "results.md"] {
        assert!(out.join(plot).exists(), "{plot} missing");
    }
    let _ = std::fs::remove_dir_all(&out);
}
