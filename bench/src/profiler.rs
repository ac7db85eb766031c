//! Recording the server during one step's window: a `perf` profile, or its instruction count
//! under valgrind's callgrind (the server then runs under valgrind for its whole ramp).

use std::time::{Duration, Instant};

use anyhow::{Context, Result};

/// What to record of the server during one step's window.
#[derive(Debug, Clone)]
pub enum Profiler {
    /// A `perf record` profile, written to `dir`.
    Perf {
        step: usize,
        dir: std::path::PathBuf,
    },
    /// Instruction counts: the server runs under `valgrind --tool=callgrind
    /// --instr-atstart=no`; instrumentation is on, and the counts zeroed, for this step's
    /// window only (joins and handshakes before it run uninstrumented, ≈ 5× faster).
    Callgrind { step: usize },
}

/// Where callgrind writes its counts for the server `pid`.
pub fn callgrind_out(pid_placeholder: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("sluice-callgrind.out.{pid_placeholder}"))
}

/// Starts `program args` as the server, under callgrind when `profiler` counts instructions
/// (collection is switched on only for the chosen step's window).
pub fn start_server(
    name: &str,
    program: &std::path::Path,
    args: &[String],
    envs: &[(&str, &str)],
    profiler: Option<&Profiler>,
) -> Result<crate::process::ServerProcess> {
    if !matches!(profiler, Some(Profiler::Callgrind { .. })) {
        return crate::process::ServerProcess::start(name, program, args, envs);
    }
    let mut wrapped = vec![
        "--tool=callgrind".to_owned(),
        "--instr-atstart=no".to_owned(),
        format!("--callgrind-out-file={}", callgrind_out("%p").display()),
        program.display().to_string(),
    ];
    wrapped.extend(args.iter().cloned());
    crate::process::ServerProcess::start(name, std::path::Path::new("valgrind"), &wrapped, envs)
}

pub(crate) fn callgrind_control(pid: u32, args: &[&str]) -> Result<()> {
    let status = std::process::Command::new("callgrind_control")
        .args(args)
        .arg(pid.to_string())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .context("running callgrind_control (valgrind installed?)")?;
    anyhow::ensure!(
        status.success(),
        "callgrind_control {args:?} failed: {status}"
    );
    Ok(())
}

/// Dumps the counts collected since the last zeroing and returns the instructions executed.
pub(crate) fn callgrind_instructions(pid: u32) -> Result<u64> {
    let base = callgrind_out(&pid.to_string());
    let dir = base.parent().context("callgrind output folder")?.to_owned();
    let prefix = base
        .file_name()
        .and_then(|n| n.to_str())
        .context("callgrind output name")?
        .to_owned();
    let before: std::collections::HashSet<_> = dumps(&dir, &prefix).into_iter().collect();
    callgrind_control(pid, &["--dump=window"])?;
    let fresh = dumps(&dir, &prefix)
        .into_iter()
        .find(|path| !before.contains(path))
        .context("callgrind wrote no dump")?;
    let text = std::fs::read_to_string(&fresh)?;
    let _ = std::fs::remove_file(&fresh);
    text.lines()
        .find_map(|line| {
            line.strip_prefix("totals:")
                .or(line.strip_prefix("summary:"))
        })
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .context("no totals in the callgrind dump")
}

fn dumps(dir: &std::path::Path, prefix: &str) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .and_then(|n| n.strip_prefix(prefix)?.strip_prefix('.'))
                        .is_some_and(|dump| !dump.is_empty())
                })
                .collect()
        })
        .unwrap_or_default()
}

/// `perf record` of the server for one window (sampling at 999 Hz, user and kernel).
pub(crate) fn start_perf(
    pid: u32,
    window: Duration,
    dir: &std::path::Path,
    name: &str,
) -> Result<(std::process::Child, std::path::PathBuf, std::path::PathBuf)> {
    std::fs::create_dir_all(dir)?;
    // The samples stay out of the output folder (it may be docs/); the flat report goes there.
    let data = std::env::temp_dir().join(format!("{name}-perf-{pid}.data"));
    let child = std::process::Command::new("perf")
        .args(["record", "-F", "999", "-p", &pid.to_string(), "-o"])
        .arg(&data)
        .args(["--", "sleep", &window.as_secs().to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .context("starting perf record")?;
    Ok((child, data, dir.join(format!("{name}-perf.txt"))))
}

/// Waits for `perf record` and writes the flat profile next to its data.
pub(crate) fn finish_perf(
    mut child: std::process::Child,
    data: &std::path::Path,
    text: &std::path::Path,
    name: &str,
    started: Instant,
) {
    let _ = child.wait();
    let report = std::process::Command::new("perf")
        .args([
            "report",
            "--stdio",
            "--no-children",
            "--sort",
            "dso,symbol",
            "--percent-limit",
            "0.4",
            "-i",
        ])
        .arg(data)
        .output();
    if let Ok(out) = report {
        let _ = std::fs::write(text, &out.stdout);
        crate::ramp::progress(
            started,
            &format!("{name}: perf profile in {}", text.display()),
        );
    }
    let _ = std::fs::remove_file(data);
}
