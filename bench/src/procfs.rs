//! Process figures from /proc: CPU time (user + sys) and resident memory.

use std::time::Duration;

use anyhow::{Context, Result};

/// Clock ticks per second of `utime`/`stime` in /proc/<pid>/stat (USER_HZ).
fn ticks_per_second() -> f64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .map_or(100.0, |t| t as f64)
}

/// CPU time the process (all its threads) has used, user + sys.
pub fn cpu_time(pid: u32) -> Result<Duration> {
    stat_cpu_time(&format!("/proc/{pid}/stat"))
}

/// CPU time one thread (`tid`) of process `pid` has used, user + sys.
pub fn thread_cpu_time_of(pid: u32, tid: u32) -> Result<Duration> {
    stat_cpu_time(&format!("/proc/{pid}/task/{tid}/stat"))
}

fn stat_cpu_time(path: &str) -> Result<Duration> {
    let stat = std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
    // The command name (field 2) may contain spaces; fields after its closing ')' are fixed.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .context("malformed /proc stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state); utime is field 14, stime field 15.
    let ticks = |i: usize| -> Result<f64> {
        fields
            .get(i - 3)
            .context("short /proc stat")?
            .parse::<f64>()
            .context("parsing a /proc stat field")
    };
    Ok(Duration::from_secs_f64(
        (ticks(14)? + ticks(15)?) / ticks_per_second(),
    ))
}

/// Resident set size in kB (VmRSS).
pub fn rss_kb(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .context("no VmRSS in /proc status")
}

/// CPU time of the calling thread (for the floor microbenchmark).
pub fn thread_cpu_time() -> Duration {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_THREAD_CPUTIME_ID)
        .map(Duration::from)
        .unwrap_or_default()
}

/// The 1-minute load average (the machine is shared: this says how contended the run was).
pub fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(f64::NAN)
}
