//! A running QEMU process: serial capture, log waits, exit status.

use std::fmt;
use std::io::{self, Read};
use std::process::{Child, Stdio};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::{DiagClient, KernelExit, NodeSpec};

/// One serial line (without the line terminator) and when the host saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// Position in the node's log (0 = first line).
    pub index: usize,
    /// When the reader thread received the line's last byte.
    pub at: Instant,
    pub text: String,
}

impl LogLine {
    /// The parsed record, if the line follows the contract format.
    pub fn record(&self) -> Option<crate::log::Record<'_>> {
        crate::log::parse(&self.text)
    }
}

/// Why a wait for a log line or for the exit did not succeed.
#[derive(Debug)]
pub enum WaitError {
    /// Nothing matched before the deadline. `log` holds the serial log so far.
    Timeout { waited: Duration, log: String },
    /// QEMU exited (serial closed) before a line matched.
    Exited {
        exit: Option<KernelExit>,
        log: String,
    },
}

impl fmt::Display for WaitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Timeout { waited, log } => {
                write!(f, "timed out after {waited:.1?}; log so far:\n{log}")
            }
            Self::Exited { exit, log } => {
                match exit {
                    Some(e) => write!(f, "QEMU exited ({e}) first")?,
                    None => write!(f, "QEMU closed its serial output first")?,
                }
                write!(f, "; log:\n{log}")
            }
        }
    }
}

impl std::error::Error for WaitError {}

#[derive(Default)]
struct State {
    lines: Vec<LogLine>,
    first_byte: Option<Instant>,
    /// Serial (QEMU's stdout) reached EOF: QEMU is gone or going.
    eof: bool,
    stderr: String,
}

#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    changed: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panicking echo callback must not make the log unreadable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Called by the reader thread for every serial line (e.g. to echo it).
pub type LineHook = Box<dyn FnMut(&LogLine) + Send>;

/// A launched node. Dropping it kills QEMU.
pub struct Node {
    child: Child,
    spec: NodeSpec,
    started: Instant,
    shared: Arc<Shared>,
    readers: Vec<JoinHandle<()>>,
    exit: Option<KernelExit>,
}

impl fmt::Debug for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Node")
            .field("pid", &self.child.id())
            .field("exit", &self.exit)
            .finish()
    }
}

impl NodeSpec {
    /// Starts QEMU. The serial log is captured from QEMU's stdout.
    pub fn launch(&self) -> io::Result<Node> {
        self.launch_with(None)
    }

    /// Like [`NodeSpec::launch`], calling `hook` for each serial line as it arrives.
    pub fn launch_with(&self, hook: Option<LineHook>) -> io::Result<Node> {
        let mut cmd = self.command();
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let started = Instant::now();
        let mut child = cmd.spawn().map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                io::Error::new(
                    e.kind(),
                    format!(
                        "{} not found: run `cargo xtask setup` to install QEMU",
                        cmd.get_program().to_string_lossy()
                    ),
                )
            } else {
                io::Error::new(e.kind(), format!("starting {}: {e}", self.command_line()))
            }
        })?;
        let shared = Arc::new(Shared::default());
        let stdout = child.stdout.take().expect("stdout is piped");
        let stderr = child.stderr.take().expect("stderr is piped");
        let s1 = Arc::clone(&shared);
        let s2 = Arc::clone(&shared);
        let readers = vec![
            std::thread::Builder::new()
                .name("qemu-serial".into())
                .spawn(move || read_serial(stdout, &s1, hook))?,
            std::thread::Builder::new()
                .name("qemu-stderr".into())
                .spawn(move || read_stderr(stderr, &s2))?,
        ];
        Ok(Node {
            child,
            spec: self.clone(),
            started,
            shared,
            readers,
            exit: None,
        })
    }
}

fn read_serial(mut out: impl Read, shared: &Shared, mut hook: Option<LineHook>) {
    let mut buf = [0u8; 4096];
    let mut partial: Vec<u8> = Vec::new();
    let mut finish_line = |partial: &mut Vec<u8>, at: Instant| {
        let mut text = String::from_utf8_lossy(partial).into_owned();
        partial.clear();
        if text.ends_with('\r') {
            text.pop();
        }
        let line = {
            let mut st = shared.lock();
            let line = LogLine {
                index: st.lines.len(),
                at,
                text,
            };
            st.lines.push(line.clone());
            line
        };
        shared.changed.notify_all();
        if let Some(hook) = hook.as_mut() {
            hook(&line);
        }
    };
    loop {
        let n = match out.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let at = Instant::now();
        {
            let mut st = shared.lock();
            st.first_byte.get_or_insert(at);
        }
        for &b in &buf[..n] {
            if b == b'\n' {
                finish_line(&mut partial, at);
            } else {
                partial.push(b);
            }
        }
    }
    if !partial.is_empty() {
        finish_line(&mut partial, Instant::now());
    }
    shared.lock().eof = true;
    shared.changed.notify_all();
}

fn read_stderr(mut err: impl Read, shared: &Shared) {
    let mut buf = [0u8; 1024];
    while let Ok(n) = err.read(&mut buf) {
        if n == 0 {
            break;
        }
        shared
            .lock()
            .stderr
            .push_str(&String::from_utf8_lossy(&buf[..n]));
    }
}

impl Node {
    pub fn spec(&self) -> &NodeSpec {
        &self.spec
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Just before QEMU was spawned.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// When the first serial byte arrived.
    pub fn first_byte(&self) -> Option<Instant> {
        self.shared.lock().first_byte
    }

    /// All serial lines so far.
    pub fn lines(&self) -> Vec<LogLine> {
        self.shared.lock().lines.clone()
    }

    /// What QEMU wrote to stderr so far (its own errors and warnings).
    pub fn stderr(&self) -> String {
        self.shared.lock().stderr.clone()
    }

    /// The serial log with host times since spawn, plus QEMU's stderr, for
    /// error messages.
    pub fn log_text(&self) -> String {
        let st = self.shared.lock();
        self.render(&st)
    }

    fn render(&self, st: &State) -> String {
        let mut s = String::new();
        for l in &st.lines {
            let ms = l.at.duration_since(self.started).as_secs_f64() * 1e3;
            s.push_str(&format!("  +{ms:9.3}ms | {}\n", l.text));
        }
        if st.lines.is_empty() {
            s.push_str("  (no serial output)\n");
        }
        if !st.stderr.trim().is_empty() {
            s.push_str("  QEMU stderr:\n");
            for l in st.stderr.lines() {
                s.push_str(&format!("  ! {l}\n"));
            }
        }
        s.push_str(&format!("  command: {}\n", self.spec.command_line()));
        s
    }

    /// Waits for the first line (from the start of the log) matching `pred`.
    pub fn wait_for_line(
        &mut self,
        pred: impl FnMut(&str) -> bool,
        timeout: Duration,
    ) -> Result<LogLine, WaitError> {
        self.wait_for_line_from(0, pred, timeout)
    }

    /// Waits for the first line at index `from` or later matching `pred`.
    pub fn wait_for_line_from(
        &mut self,
        from: usize,
        mut pred: impl FnMut(&str) -> bool,
        timeout: Duration,
    ) -> Result<LogLine, WaitError> {
        // `Duration::MAX` means no deadline.
        let deadline = Instant::now().checked_add(timeout);
        let mut next = from;
        let mut st = self.shared.lock();
        loop {
            while next < st.lines.len() {
                if pred(&st.lines[next].text) {
                    return Ok(st.lines[next].clone());
                }
                next += 1;
            }
            if st.eof {
                drop(st);
                // Serial closed: QEMU is exiting; collect its status.
                let exit = self.wait(Duration::from_secs(2)).ok();
                return Err(WaitError::Exited {
                    exit,
                    log: self.log_text(),
                });
            }
            let now = Instant::now();
            if deadline.is_some_and(|d| now >= d) {
                let log = self.render(&st);
                return Err(WaitError::Timeout {
                    waited: timeout,
                    log,
                });
            }
            let left = deadline.map_or(Duration::from_secs(3600), |d| d - now);
            st = self
                .shared
                .changed
                .wait_timeout(st, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Waits for `stage: <name>` and returns that line.
    pub fn wait_for_stage(&mut self, name: &str, timeout: Duration) -> Result<LogLine, WaitError> {
        self.wait_for_line(
            |l| {
                crate::log::parse(l)
                    .and_then(|r| r.stage())
                    .is_some_and(|(n, _)| n == name)
            },
            timeout,
        )
    }

    /// The exit, if QEMU has already exited (non-blocking).
    pub fn try_exit(&mut self) -> io::Result<Option<KernelExit>> {
        if self.exit.is_none()
            && let Some(status) = self.child.try_wait()?
        {
            self.exit = Some(KernelExit::from_status(status));
            self.join_readers();
        }
        Ok(self.exit)
    }

    /// Waits up to `timeout` (`Duration::MAX`: forever) for QEMU to exit and
    /// maps its status. On timeout QEMU is killed and `Timeout` returned (a
    /// hang is an error, not a wait forever).
    pub fn wait(&mut self, timeout: Duration) -> Result<KernelExit, WaitError> {
        let deadline = Instant::now().checked_add(timeout);
        loop {
            match self.try_exit() {
                Ok(Some(exit)) => return Ok(exit),
                Ok(None) => {}
                Err(_) => break,
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let log = self.log_text();
        self.kill();
        Err(WaitError::Timeout {
            waited: timeout,
            log,
        })
    }

    /// Kills QEMU (SIGKILL) and reaps it. Idempotent.
    pub fn kill(&mut self) {
        if self.exit.is_none() {
            let _ = self.child.kill();
            if let Ok(status) = self.child.wait() {
                self.exit = Some(KernelExit::from_status(status));
            }
            self.join_readers();
        }
    }

    /// The serial log is complete once QEMU is gone: wait for the readers.
    fn join_readers(&mut self) {
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
    }

    /// A diag client for the host port forwarded to `guest_port`, with the
    /// node's `skiff.diag_token` if it has one.
    pub fn diag(&self, guest_port: u16) -> Option<DiagClient> {
        self.spec
            .host_port_for(guest_port)
            .map(|p| DiagClient::new(([127, 0, 0, 1], p).into()).with_token(self.spec.diag_token()))
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ExitCode;
    use std::os::unix::fs::PermissionsExt;

    /// A stand-in for QEMU: a shell script that ignores its arguments.
    fn fake_qemu(name: &str, body: &str) -> NodeSpec {
        let path =
            std::env::temp_dir().join(format!("skiff-fake-qemu-{}-{name}", std::process::id()));
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        let mut spec = NodeSpec::new("kernel.elf");
        spec.qemu = path.display().to_string();
        spec
    }

    /// Launch, retrying ETXTBSY: a sibling test thread forking while our
    /// script's write descriptor is open makes exec fail transiently.
    fn launch(spec: &NodeSpec) -> Node {
        for _ in 0..50 {
            match spec.launch() {
                Err(e) if e.raw_os_error() == Some(26) => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                other => return other.unwrap(),
            }
        }
        panic!("script stayed busy");
    }

    #[test]
    fn captures_lines_and_maps_exit() {
        let spec = fake_qemu(
            "fault",
            "printf '[0.000000] INFO  skiff: skiff-kernel 0.1.0 build=x\\r\\n'\n\
             sleep 0.05\n\
             echo '[0.010000] INFO  stage: entry t_us=10000'\n\
             echo 'qemu warning' >&2\n\
             printf 'no newline'\n\
             exit 39",
        );
        let mut node = launch(&spec);
        let l = node
            .wait_for_stage("entry", Duration::from_secs(5))
            .unwrap();
        assert_eq!(l.index, 1);
        let first = node.first_byte().unwrap();
        assert!(first >= node.started());
        assert!(
            l.at >= first + Duration::from_millis(40),
            "lines are timestamped on arrival"
        );
        assert_eq!(
            node.wait(Duration::from_secs(5)).unwrap(),
            KernelExit::Code(ExitCode::Fault)
        );
        let lines = node.lines();
        assert_eq!(
            lines[0].text,
            "[0.000000] INFO  skiff: skiff-kernel 0.1.0 build=x"
        );
        assert_eq!(lines[2].text, "no newline");
        assert!(node.stderr().contains("qemu warning"));
    }

    #[test]
    fn exit_before_match_is_an_error_not_a_hang() {
        let mut node = launch(&fake_qemu("config", "echo 'ERROR config: bad'; exit 37"));
        match node.wait_for_line(|l| l.contains("never"), Duration::from_secs(30)) {
            Err(WaitError::Exited { exit, log }) => {
                assert_eq!(exit, Some(KernelExit::Code(ExitCode::Config)));
                assert!(log.contains("ERROR config: bad"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn hang_times_out_and_is_killed() {
        let mut node = launch(&fake_qemu("hang", "echo hi; exec sleep 30"));
        let t = Instant::now();
        assert!(matches!(
            node.wait_for_line(|l| l == "never", Duration::from_millis(200)),
            Err(WaitError::Timeout { .. })
        ));
        assert!(matches!(
            node.wait(Duration::from_millis(200)),
            Err(WaitError::Timeout { .. })
        ));
        assert!(t.elapsed() < Duration::from_secs(5));
        assert_eq!(node.try_exit().unwrap(), Some(KernelExit::Killed(Some(9))));
    }

    #[test]
    fn missing_qemu_says_run_setup() {
        let mut spec = NodeSpec::new("k");
        spec.qemu = "/nonexistent/qemu-system-x86_64".into();
        let err = spec.launch().unwrap_err().to_string();
        assert!(err.contains("cargo xtask setup"), "{err}");
    }
}
