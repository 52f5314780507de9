//! The live page in a real browser: tests/servers/live_page.py drives Debian's Chromium with
//! Playwright for Python (scripts/test installs both) and prints what it saw.

use std::process::{Command, Stdio};
use std::time::Duration;

/// A process group (the script, Playwright's driver, Chromium), killed whole when dropped.
struct Group(std::process::Child);

impl Drop for Group {
    fn drop(&mut self) {
        // A syscall, not the kill command: Debian's reads `kill -KILL -12345` as a signal to
        // process group -1, every process there is.
        let pid = i32::try_from(self.0.id()).ok().and_then(rustix::process::Pid::from_raw);
        if let Some(pid) = pid {
            let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
        }
        let _ = self.0.wait();
    }
}

/// Runs live_page.py with `args`; what it saw, as JSON.
pub async fn drive(args: &[&str]) -> serde_json::Value {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/servers/live_page.py");
    let child = std::os::unix::process::CommandExt::process_group(
        Command::new("python3").arg(script).args(args).stdout(Stdio::piped()).stderr(Stdio::piped()),
        0,
    )
    .spawn()
    .expect("python3 (scripts/test installs Playwright for Python)");
    let mut group = Group(child);
    let mut stdout = group.0.stdout.take().expect("stdout");
    let mut stderr = group.0.stderr.take().expect("stderr");
    let read = tokio::task::spawn_blocking(move || {
        let (mut out, mut err) = (String::new(), String::new());
        let _ = std::io::Read::read_to_string(&mut stdout, &mut out);
        let _ = std::io::Read::read_to_string(&mut stderr, &mut err);
        (out, err)
    });
    let (out, err) = tokio::time::timeout(Duration::from_secs(120), read)
        .await
        .expect("the browser script ends within two minutes")
        .expect("join");
    drop(group);
    serde_json::from_str(out.trim())
        .unwrap_or_else(|e| panic!("live_page.py: {e}\nstdout: {out}\nstderr: {err}"))
}
