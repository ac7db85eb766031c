//! What the binary's integration tests share: a child process killed when dropped, and the
//! `sluice` binary started as one on an ephemeral port.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use anyhow::{Context, Result, anyhow};

/// A child process of the test, killed (and reaped) when dropped.
pub struct Process(pub Child);

impl Process {
    pub fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Starts `sluice` listening on `127.0.0.1:0` with `args` after it and `secret` as its
/// secret (logs at warn); returns it and its HTTP address (`127.0.0.1:PORT`), read from the
/// line it prints when listening.
pub fn start_sluice(args: &[&str], secret: &str) -> Result<(Process, String)> {
    let child = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["--listen", "127.0.0.1:0"])
        .args(args)
        .env("SLUICE_SECRET", secret)
        .env("SLUICE_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("the sluice binary starts")?;
    let mut process = Process(child);
    let stdout = process.0.stdout.take().context("stdout")?;
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line)?;
    let addr = line
        .trim()
        .strip_prefix("sluice listening on http://")
        .ok_or_else(|| anyhow!("unexpected first line: {line:?}"))?
        .to_owned();
    Ok((process, addr))
}
