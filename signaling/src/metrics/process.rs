//! The process's own CPU time, resident memory and open file descriptors, read from `/proc`
//! (Linux); elsewhere they are left out of `/metrics`.

use std::fmt::Write;

/// Clock ticks per second of the times in `/proc/self/stat` (`USER_HZ`, 100 on every Linux
/// architecture the server is built for).
const TICKS_PER_SECOND: f64 = 100.0;

/// One reading of the process's resources.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct ProcessStats {
    /// User and system CPU time since the process started.
    pub cpu_seconds: f64,
    /// Resident set size.
    pub resident_bytes: u64,
    /// Open file descriptors (sockets included).
    pub open_fds: usize,
}

impl ProcessStats {
    /// Reads `/proc/self`; `None` where it cannot be read.
    pub(crate) fn read() -> Option<Self> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let open_fds = std::fs::read_dir("/proc/self/fd").ok()?.count();
        Some(Self {
            cpu_seconds: cpu_seconds(&stat)?,
            resident_bytes: resident_bytes(&status)?,
            open_fds,
        })
    }

    /// Appends the readings in Prometheus text format. Written by hand: the CPU time is a
    /// fractional counter, which the `metrics` facade's integer counters cannot carry.
    pub(crate) fn render(&self, out: &mut String) {
        let _ = write!(
            out,
            "# HELP sluice_process_cpu_seconds_total User and system CPU time of the server process.\n\
             # TYPE sluice_process_cpu_seconds_total counter\n\
             sluice_process_cpu_seconds_total {}\n\
             # HELP sluice_process_resident_memory_bytes Resident memory of the server process.\n\
             # TYPE sluice_process_resident_memory_bytes gauge\n\
             sluice_process_resident_memory_bytes {}\n\
             # HELP sluice_process_open_fds Open file descriptors of the server process.\n\
             # TYPE sluice_process_open_fds gauge\n\
             sluice_process_open_fds {}\n\n",
            self.cpu_seconds, self.resident_bytes, self.open_fds
        );
    }
}

/// `utime + stime` of a `/proc/PID/stat` line, in seconds. The command name (field 2) may
/// hold spaces and parentheses, so fields are counted after its last `)`.
fn cpu_seconds(stat: &str) -> Option<f64> {
    let (_, after_name) = stat.rsplit_once(')')?;
    let mut fields = after_name.split_whitespace();
    // After the name: state (field 3) … utime (14), stime (15).
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((utime + stime) as f64 / TICKS_PER_SECOND)
}

/// `VmRSS` of a `/proc/PID/status` text, in bytes.
fn resident_bytes(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line
        .trim_start_matches("VmRSS:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_texts() {
        let stat = "4242 (my (odd) name) S 1 4242 4242 0 -1 4194560 500 0 0 0 250 130 0 0 20 0 9 0 100 1000 300";
        assert_eq!(cpu_seconds(stat), Some(3.8));
        assert_eq!(cpu_seconds("garbage"), None);
        let status = "Name:\tsluice\nVmPeak:\t  9000 kB\nVmRSS:\t   2048 kB\nThreads:\t9\n";
        assert_eq!(resident_bytes(status), Some(2048 * 1024));
        assert_eq!(resident_bytes("Name:\tx\n"), None);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn reads_this_process() {
        let stats = ProcessStats::read().expect("/proc/self is readable on Linux");
        assert!(stats.resident_bytes > 0);
        assert!(stats.open_fds > 0);
        assert!(stats.cpu_seconds >= 0.0);
    }
}
