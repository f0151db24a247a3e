//! The built-in **test runtime**: scripted containers, so the node agent,
//! the kubelet core and `kubectl logs` can be exercised end to end without
//! building wasm guests. The node runs it beside the wasm runtime for
//! unresolved `skiff.dev/testrt` images ([`crate::wasmrt::NodeRuntime`]). It
//! runs no user code and is labelled everywhere it shows
//! (`containerRuntimeVersion: skiff-testrt://…`).
//!
//! Only the image `skiff.dev/testrt[:tag]` runs here; any other image is
//! [`StartError::ImageNotFound`] to it. The container's `command` + `args` are
//! the script, one step per word list entry:
//!
//! | step            | effect                                              |
//! |-----------------|-----------------------------------------------------|
//! | `echo TEXT`     | writes `TEXT\n` to stdout                           |
//! | `env NAME`      | writes `NAME=value\n` from the container's env      |
//! | `sleep MS`      | waits MS milliseconds                               |
//! | `exit CODE`     | exits with CODE                                     |
//! | `oom`           | ends as OOMKilled (exit 137)                        |
//! | `forever`       | runs until stopped                                  |
//!
//! Running out of steps exits 0. A stop exits at once with 143 (SIGTERM), a
//! kill with 137. The driver sets [`TestRuntime::now`] before each tick and
//! ticks again at [`TestRuntime::next_change`].

use alloc::collections::BTreeMap;
use alloc::string::{String, ToString as _};
use alloc::vec::Vec;

use skiff_kubelet::{
    ContainerId, LogBuffer, LogSource, MILLI, Nanos, Runtime, RuntimeState, StartError, StartSpec,
};

/// The image this runtime accepts.
pub const IMAGE: &str = "skiff.dev/testrt";
/// `containerRuntimeVersion` of a node running it.
pub const RUNTIME_VERSION: &str = concat!("skiff-testrt://", env!("CARGO_PKG_VERSION"));
/// Log kept per container instance.
const LOG_BYTES: usize = 64 << 10;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    Echo(String),
    Sleep(Nanos),
    Exit(i32),
    Oom,
    Forever,
}

#[derive(Debug)]
struct Instance {
    steps: Vec<Step>,
    /// Next step to run, and when it may run.
    pc: usize,
    ready_at: Nanos,
    ended: Option<(i32, bool)>,
    log: LogBuffer,
}

/// See the module docs.
#[derive(Debug, Default)]
pub struct TestRuntime {
    /// The kubelet's clock (set by the driver).
    pub now: Nanos,
    /// Unix ms at `now == 0`, for log timestamps.
    pub boot_wall_ms: u64,
    /// Reported as every pod's IP (the node's address: no pod networking yet).
    pub pod_ip: Option<String>,
    next_id: u64,
    instances: BTreeMap<ContainerId, Instance>,
}

fn parse(words: &[String], env: &[(String, String)]) -> Result<Vec<Step>, String> {
    let mut steps = Vec::new();
    for w in words {
        let (verb, arg) = w.split_once(' ').unwrap_or((w.as_str(), ""));
        let num = |what: &str| {
            arg.trim()
                .parse::<i64>()
                .map_err(|_| alloc::format!("testrt: `{verb}` needs {what}, got {arg:?}"))
        };
        steps.push(match verb {
            "echo" => Step::Echo(arg.to_string()),
            "env" => {
                let v = env.iter().find(|(k, _)| k == arg).map_or("", |(_, v)| v);
                Step::Echo(alloc::format!("{arg}={v}"))
            }
            "sleep" => Step::Sleep(num("milliseconds")?.max(0) as Nanos * MILLI),
            "exit" => Step::Exit(num("an exit code")? as i32),
            "oom" => Step::Oom,
            "forever" => Step::Forever,
            _ => {
                return Err(alloc::format!(
                    "testrt: unknown step {w:?} (echo, env, sleep, exit, oom, forever)"
                ));
            }
        });
    }
    Ok(steps)
}

impl TestRuntime {
    pub fn new(boot_wall_ms: u64, pod_ip: Option<String>) -> Self {
        Self {
            boot_wall_ms,
            pod_ip,
            ..Self::default()
        }
    }

    /// Runs every instance's steps that are due at `now`.
    fn advance(&mut self) {
        let now = self.now;
        let wall = self.boot_wall_ms + now / MILLI;
        for inst in self.instances.values_mut() {
            while inst.ended.is_none() && inst.ready_at <= now {
                let Some(step) = inst.steps.get(inst.pc).cloned() else {
                    inst.ended = Some((0, false));
                    break;
                };
                inst.pc += 1;
                match step {
                    Step::Echo(text) => {
                        inst.log.append(wall, text.as_bytes());
                        inst.log.append(wall, b"\n");
                    }
                    Step::Sleep(d) => inst.ready_at += d,
                    Step::Exit(code) => inst.ended = Some((code, false)),
                    Step::Oom => inst.ended = Some((137, true)),
                    Step::Forever => {
                        inst.pc -= 1;
                        inst.ready_at = Nanos::MAX;
                    }
                }
            }
            if inst.ended.is_some() {
                inst.log.close();
            }
        }
    }

    /// When any instance next changes by itself.
    pub fn next_change(&self) -> Option<Nanos> {
        self.instances
            .values()
            .filter(|i| i.ended.is_none() && i.ready_at != Nanos::MAX)
            .map(|i| i.ready_at)
            .min()
    }

    /// An instance's log (for `kubectl logs`).
    pub fn log(&self, id: ContainerId) -> Option<&LogBuffer> {
        self.instances.get(&id).map(|i| &i.log)
    }

    pub fn len(&self) -> usize {
        self.instances.len()
    }

    pub fn is_empty(&self) -> bool {
        self.instances.is_empty()
    }

    fn end(&mut self, id: ContainerId, code: i32) {
        if let Some(i) = self.instances.get_mut(&id)
            && i.ended.is_none()
        {
            i.ended = Some((code, false));
            i.log.close();
        }
    }
}

impl Runtime for TestRuntime {
    fn start(&mut self, spec: &StartSpec<'_>) -> Result<ContainerId, StartError> {
        let image = spec.container.image.reference.as_str();
        let repo = image.split([':', '@']).next().unwrap_or(image);
        if repo != IMAGE {
            return Err(StartError::ImageNotFound(alloc::format!(
                "the built-in test runtime runs only the image {IMAGE}, not {image:?}"
            )));
        }
        let words: Vec<String> = spec
            .container
            .command
            .iter()
            .chain(spec.container.args.iter())
            .cloned()
            .collect();
        let steps = parse(&words, &spec.env).map_err(StartError::Other)?;
        self.next_id += 1;
        let id = ContainerId(self.next_id);
        self.instances.insert(
            id,
            Instance {
                steps,
                pc: 0,
                ready_at: self.now,
                ended: None,
                log: LogBuffer::new(LOG_BYTES),
            },
        );
        self.advance();
        Ok(id)
    }

    fn state(&mut self, id: ContainerId) -> RuntimeState {
        self.advance();
        match self.instances.get(&id) {
            None => RuntimeState::Unknown,
            Some(i) => match i.ended {
                Some((exit_code, oom_killed)) => RuntimeState::Exited {
                    exit_code,
                    oom_killed,
                },
                None => RuntimeState::Running,
            },
        }
    }

    fn stop(&mut self, id: ContainerId) {
        self.end(id, 143);
    }

    fn kill(&mut self, id: ContainerId) {
        self.end(id, 137);
    }

    fn remove(&mut self, id: ContainerId) {
        self.instances.remove(&id);
    }

    fn pod_ip(&mut self, _pod_uid: &str) -> Option<String> {
        self.pod_ip.clone()
    }
}

impl LogSource for TestRuntime {
    fn log_buffer(&self, id: ContainerId) -> Option<&LogBuffer> {
        self.log(id)
    }
}
