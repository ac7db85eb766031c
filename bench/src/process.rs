//! The measured server runs as its own process (so /proc gives its CPU and memory alone); this
//! starts it, finds its address on stdout and stops it by its PID.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};

/// A child server process; stopped (SIGTERM, then SIGKILL) when dropped.
pub struct ServerProcess {
    child: Child,
    /// What followed `listening on ` on its stdout, e.g. `http://127.0.0.1:41234`.
    pub url: String,
}

impl ServerProcess {
    /// Starts `program args…` and waits (≤ 20 s) for a stdout line containing `listening on `.
    pub fn start(
        name: &str,
        program: &Path,
        args: &[String],
        envs: &[(&str, &str)],
    ) -> Result<Self> {
        let mut child = Command::new(program)
            .args(args)
            .envs(envs.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            // For debugging a target: SLUICE_BENCH_SERVER_LOG=<file> keeps its stderr.
            .stderr(server_log(name))
            .spawn()
            .with_context(|| format!("starting {}", program.display()))?;
        let stdout = child.stdout.take().context("child stdout")?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if !sent && let Some((_, url)) = line.split_once("listening on ") {
                    let _ = tx.send(url.trim().to_owned());
                    sent = true;
                }
                // Keep draining so the child never blocks on a full pipe.
            }
        });
        let url = match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(url) => url,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                bail!("{name} did not report its address within 20 s");
            }
        };
        Ok(Self { child, url })
    }

    /// Starts `program args…` reachable at `url` without waiting for a line on its stdout (for
    /// a server that says nothing at a quiet log level): the caller waits for it to answer.
    pub fn spawn(
        name: &str,
        program: &Path,
        args: &[String],
        envs: &[(&str, &str)],
        url: String,
    ) -> Result<Self> {
        let mut child = Command::new(program)
            .args(args)
            .envs(envs.iter().copied())
            .stdin(Stdio::null())
            // Janus logs to stdout: SLUICE_BENCH_SERVER_LOG=<file> keeps it.
            .stdout(server_log(name))
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", program.display()))?;
        if let Ok(Some(status)) = child.try_wait() {
            bail!("{name} exited at once: {status}");
        }
        Ok(Self { child, url })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The `host:port` part of the URL.
    pub fn host_port(&self) -> &str {
        self.url.trim_start_matches("http://").trim_end_matches('/')
    }

    /// SIGTERM, wait up to 5 s, then SIGKILL — this child only, by PID.
    pub fn stop(mut self) {
        self.stop_inner();
    }

    fn stop_inner(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        if let Ok(pid) = i32::try_from(self.child.id()) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        for _ in 0..50 {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Stops the server and removes the counts callgrind writes when a server under it exits
/// (the windows' counts were read from their own dumps already).
pub fn stop_and_clean(process: ServerProcess) {
    let pid = process.pid();
    process.stop();
    let _ = std::fs::remove_file(crate::ramp::callgrind_out(&pid.to_string()));
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.stop_inner();
    }
}

fn server_log(name: &str) -> Stdio {
    std::env::var_os("SLUICE_BENCH_SERVER_LOG")
        .and_then(|path| {
            let mut path = std::path::PathBuf::from(path);
            path.set_extension(format!("{name}.log"));
            std::fs::File::create(path).ok()
        })
        .map_or_else(Stdio::null, Stdio::from)
}
