//! `cargo xtask demo`: the demo cluster.
//!
//! 1. The control plane (`skiff-controlplane`: API server, embedded store,
//!    node gateway) starts with a fresh PKI; the real kubectl applies a
//!    multi-document manifest and reads it back.
//! 2. Hollow nodes (the real kubelet core and node protocol over TLS, fake
//!    runtime) bootstrap with a token and become Ready; the scheduler places
//!    the Deployment's replicas on them (`kubectl rollout status`); a pod
//!    bound to one runs to completion and kubectl shows its exit.
//! 3. N Skiff kernels boot under QEMU microvm through `skiff-qemu` on one
//!    shared L2 segment (`skiff_qemu::Segment`: a userspace hub, slirp
//!    bridged in for DHCP and host forwards) and join the control plane:
//!    each generates its key, bootstraps its certificate with the token,
//!    registers, gets a pod CIDR and shows Ready in `kubectl get nodes`.
//! 4. Wasm pods: the example guests are built and pushed with oras to a
//!    real registry; a Job runs the hello image to completion on node-1
//!    (`kubectl logs`); a Deployment of two echo servers, each on its own
//!    pod address, sits behind a Service: the host reaches a replica through
//!    a forward to its pod IP, and a client pod on another node reaches
//!    `wasm-echo` by its DNS name.
//! 5. The dashboard in headless Chromium, signed in as a read-only service
//!    account: every kernel node on its Nodes page with its usage (a
//!    screenshot in `target/demo/`). The demo then shows each node's diag
//!    `status`, has each ping its gateway, prints a summary and shuts them
//!    down cleanly (`--keep`: after Ctrl-C).

use std::path::Path;
use std::process::Command;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use std::net::{Ipv4Addr, SocketAddrV4};

use skiff_qemu::{Accel, DiagClient, ExitCode, KernelExit, Machine, Node, NodeSpec, Segment};

use crate::{cluster, setup, wasm_demo};

/// Guest port of the diag service on every demo node.
const DIAG_PORT: u16 = 7000;

#[derive(clap::Args)]
pub struct Args {
    /// Number of QEMU nodes to boot.
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// Keep the nodes running until Ctrl-C, then shut them down.
    #[arg(long)]
    keep: bool,
    /// Use KVM instead of TCG.
    #[arg(long)]
    kvm: bool,
    /// Echo every node's serial log.
    #[arg(long)]
    serial: bool,
}

impl Default for Args {
    /// What `cargo xtask demo` does with no flags.
    fn default() -> Self {
        Args {
            nodes: 3,
            keep: false,
            kvm: false,
            serial: false,
        }
    }
}

struct DemoNode {
    name: String,
    node: Node,
    diag: DiagClient,
    /// Host port forwarded to the node's diag service.
    host_port: u16,
}

pub fn run(root: &Path, args: Args) -> Result<()> {
    let tools = setup::run(root)?;
    let elf = skiff_build::build_kernel()?;
    // The demo's registry first: the plane reaches it over plain HTTP
    // only because it is listed (`--insecure-registry`).
    let reg = wasm_demo::Registry::start(root)?;
    let cp = control_plane(root, &tools, &reg.host)?;
    if !skiff_qemu::qemu_available(skiff_qemu::QEMU) {
        bail!("{} does not run: run `cargo xtask setup`", skiff_qemu::QEMU);
    }
    if args.nodes == 0 {
        bail!("--nodes must be at least 1");
    }
    // Ctrl-C must reach only us (QEMU runs in its own process group), so the
    // nodes can be shut down through their diag service, not killed.
    let (stop_tx, stop_rx) = mpsc::channel();
    ctrlc::set_handler(move || {
        let _ = stop_tx.send(());
    })
    .context("installing the Ctrl-C handler")?;

    let accel = if args.kvm { Accel::Kvm } else { Accel::Tcg };
    eprintln!(
        "demo: booting {} nodes (microvm, {accel:?}) with kernel {}",
        args.nodes,
        elf.display()
    );
    let segment_dir = root.join("target/demo/segment");
    std::fs::create_dir_all(&segment_dir)
        .with_context(|| format!("creating {}", segment_dir.display()))?;
    let segment = Segment::start(&segment_dir).context("starting the nodes' network segment")?;
    let t0 = Instant::now();
    let mut nodes = Vec::new();
    for i in 1..=args.nodes {
        nodes.push(launch(&elf, i, accel, args.serial, &cp, &segment)?);
    }

    // Boot: wait for every node's diag service.
    let mut boot_ms = Vec::new();
    let mut statuses = Vec::new();
    for n in &mut nodes {
        if let Err(e) = n.node.wait_for_stage("diag-ready", Duration::from_secs(60)) {
            bail!("{}: did not reach `stage: diag-ready`: {e}", n.name);
        }
        let status = n
            .diag
            .wait_ready(Duration::from_secs(30))
            .with_context(|| format!("{}: diag `status`\n{}", n.name, n.node.log_text()))?;
        boot_ms.push(n.node.started().elapsed().as_secs_f64() * 1e3);
        println!(
            "\n== {} status (diag at 127.0.0.1:{}) ==",
            n.name, n.host_port
        );
        for line in status.text().lines() {
            println!("  {line}");
        }
        statuses.push(status);
    }
    let booted_in = t0.elapsed();

    // The kernels join the cluster: Ready in kubectl, then a pod on one.
    cp.wait_until(60, "the kernel nodes to be Ready", |cp| {
        let out = cp.get(&["nodes", "-l", "skiff.dev/runtime=wasm", "--no-headers"])?;
        Ok(out
            .lines()
            .filter(|l| l.split_whitespace().nth(1) == Some("Ready"))
            .count()
            == nodes.len())
    })?;
    let joined_in = t0.elapsed();
    cp.kubectl(&["get", "nodes", "-o", "wide"])?;
    let client_node = nodes[nodes.len().min(2) - 1].name.clone();
    wasm_pods(root, &tools, &cp, &segment, &reg, &client_node)?;
    let names: Vec<&str> = nodes.iter().map(|n| n.name.as_str()).collect();
    dashboard(root, &tools, &cp, &names)?;

    // Each node pings its gateway from inside the guest (ICMP via smoltcp).
    let mut pings = Vec::new();
    for (n, s) in nodes.iter().zip(&statuses) {
        let r = match s.fields().gateway {
            None => Err("no gateway".to_string()),
            Some(gw) => match n.diag.ping(gw) {
                Ok(Some(us)) => Ok(us),
                Ok(None) => Err(format!("ping {gw}: timeout")),
                Err(e) => Err(format!("ping {gw}: {e}")),
            },
        };
        pings.push(r);
    }

    println!(
        "\n== summary: {} nodes up in {booted_in:.2?}, Ready in the cluster after {joined_in:.2?} ==",
        nodes.len()
    );
    println!(
        "  {:8} {:>9} {:18} {:12} {:>14}  devices",
        "node", "boot ms", "ip", "gateway", "gateway ping"
    );
    let mut failures = 0;
    for ((n, s), (ms, ping)) in nodes.iter().zip(&statuses).zip(boot_ms.iter().zip(&pings)) {
        let ping = match ping {
            Ok(us) => format!("{us} us"),
            Err(e) => {
                failures += 1;
                format!("FAILED ({e})")
            }
        };
        println!(
            "  {:8} {ms:9.1} {:18} {:12} {ping:>14}  {}",
            n.name,
            s.fields().ip.map_or("none".into(), |ip| ip.to_string()),
            s.fields()
                .gateway
                .map_or("none".into(), |gw| gw.to_string()),
            s.fields().devices,
        );
    }

    if args.keep {
        println!(
            "\ndemo: the control plane keeps running: KUBECONFIG={} kubectl get nodes",
            cp.kubeconfig.display()
        );
        println!(
            "demo: the dashboard is at https://{}/ui/; sign in with a token, e.g. \
             `kubectl create token dashboard-viewer -n demo` (it may read, not change)",
            cp.api
        );
        println!("demo: QEMU nodes keep running; diag services:");
        for n in &nodes {
            println!("  {}: 127.0.0.1:{}", n.name, n.host_port);
        }
        println!("demo: press Ctrl-C to shut them down");
        let _ = stop_rx.recv();
        println!();
    }

    // Orderly shutdown through the diag service; each must exit SUCCESS.
    for n in &mut nodes {
        let reply = n.diag.shutdown().unwrap_or_else(|e| format!("error: {e}"));
        let exit = n.node.wait(Duration::from_secs(20));
        match exit {
            Ok(KernelExit::Code(ExitCode::Success)) => {
                println!("demo: {} shut down ({})", n.name, reply.trim())
            }
            other => {
                failures += 1;
                println!(
                    "demo: {} did not shut down cleanly: reply {reply:?}, exit {other:?}\n{}",
                    n.name,
                    n.node.log_text()
                );
            }
        }
    }
    if failures > 0 {
        bail!("demo: {failures} check(s) failed");
    }
    println!(
        "demo: all {} nodes booted, answered, pinged their gateway and shut down",
        nodes.len()
    );
    Ok(())
}

/// The dashboard in headless Chromium as a read-only user
/// (`demo/dashboard.py`): every kernel node on its Nodes page with its usage.
fn dashboard(
    root: &Path,
    tools: &setup::Tools,
    cp: &cluster::ControlPlane,
    nodes: &[&str],
) -> Result<()> {
    let url = format!("https://{}", cp.api);
    println!("\n== the dashboard ({url}/ui/) in headless Chromium ==");
    cp.kubectl(&[
        "create",
        "clusterrole",
        "demo-dashboard",
        "--verb=get,list,watch",
        "--resource=nodes,pods,pods/log,services,events,namespaces,deployments.apps,jobs.batch,\
         leases.coordination.k8s.io,nodes.metrics.k8s.io,pods.metrics.k8s.io",
    ])?;
    cp.kubectl(&["create", "serviceaccount", "dashboard-viewer", "-n", "demo"])?;
    cp.kubectl(&[
        "create",
        "clusterrolebinding",
        "demo-dashboard",
        "--clusterrole=demo-dashboard",
        "--serviceaccount=demo:dashboard-viewer",
    ])?;
    let token = cp.kubectl_output(&["create", "token", "dashboard-viewer", "-n", "demo"])?;
    if !token.status.success() {
        bail!(
            "kubectl create token: {}",
            String::from_utf8_lossy(&token.stderr)
        );
    }
    let shot = root.join("target/demo/dashboard-nodes.png");
    let status = Command::new(&tools.python)
        .arg(root.join("tools/xtask/demo/dashboard.py"))
        .env("SKIFF_URL", &url)
        .env("SKIFF_TOKEN", String::from_utf8_lossy(&token.stdout).trim())
        .env("SKIFF_NODES", nodes.join(" "))
        .env("SKIFF_SHOT", &shot)
        .env("PYTHONPATH", root.join("tests/support/py"))
        .status()
        .context("running the dashboard check")?;
    if !status.success() {
        bail!("the dashboard check failed ({status})");
    }
    println!(
        "demo: a screenshot of the Nodes page is in {}",
        shot.display()
    );
    Ok(())
}

/// Wasm images from a real registry: a Job on node-1, and an HTTP server
/// Deployment behind a Service reached from the host (through a forward to
/// a replica's pod IP) and by DNS name from a client pod on another node.
fn wasm_pods(
    root: &Path,
    tools: &setup::Tools,
    cp: &cluster::ControlPlane,
    segment: &Segment,
    reg: &wasm_demo::Registry,
    client_node: &str,
) -> Result<()> {
    println!("\n== wasm pods: build the examples, push them with oras, run them ==");
    let guests = skiff_build::build_guests(&skiff_build::guests_target_dir())?;
    let client = skiff_build::guests_target_dir()
        .join(skiff_build::GUEST_P2_TARGET)
        .join("release/tcp-connect.wasm");
    for (repo, file) in [
        ("demo/hello:1.0", guests.join("hello.wasm")),
        ("demo/echo:1.0", guests.join("echo-server.wasm")),
        ("demo/client:1.0", client),
    ] {
        let digest = reg.push(&tools.python, repo, &file)?;
        println!("demo: pushed {}/{repo} ({digest})", reg.host);
    }
    let manifest = root.join("target/demo/wasm-pods.yaml");
    std::fs::write(&manifest, WASM_PODS.replace("REGISTRY", &reg.host))?;
    cp.kubectl(&["apply", "-f", &manifest.to_string_lossy()])?;
    wait_job(cp, "hello")?;
    cp.kubectl(&["logs", "job/hello", "-n", "demo"])?;
    cp.wait_until(180, "the echo servers to be available", |cp| {
        let s = cp.get(&[
            "deployment",
            "wasm-echo",
            "-n",
            "demo",
            "-o",
            "jsonpath={.status.availableReplicas}",
        ])?;
        Ok(s == "2")
    })?;
    cp.kubectl(&[
        "get",
        "pods",
        "-n",
        "demo",
        "-l",
        "app=wasm-echo",
        "-o",
        "custom-columns=POD:.metadata.name,NODE:.spec.nodeName,POD-IP:.status.podIP,STATUS:.status.phase",
    ])?;
    cp.kubectl(&["get", "service", "wasm-echo", "-n", "demo", "-o", "wide"])?;
    let pod_ip: Ipv4Addr = cp
        .get(&[
            "pods",
            "-n",
            "demo",
            "-l",
            "app=wasm-echo",
            "-o",
            "jsonpath={.items[0].status.podIP}",
        ])?
        .trim()
        .parse()
        .context("the echo pod's address")?;
    let http_port = segment
        .forward(SocketAddrV4::new(pod_ip, 8080))
        .context("forwarding to the echo pod")?;
    let answer = wasm_demo::http_get(http_port, "/from-the-demo")
        .with_context(|| format!("HTTP to the echo pod at {pod_ip}:8080"))?;
    println!(
        "demo: GET http://127.0.0.1:{http_port}/from-the-demo (pod {pod_ip}:8080) answered:\n{answer}"
    );
    if !answer.starts_with("HTTP/1.1 200") {
        bail!("the echo server answered {answer:?}");
    }
    let job = CLIENT_JOB
        .replace("REGISTRY", &reg.host)
        .replace("NODE", client_node);
    std::fs::write(&manifest, job)?;
    cp.kubectl(&["apply", "-f", &manifest.to_string_lossy()])?;
    wait_job(cp, "client")?;
    let log = cp.kubectl_output(&["logs", "job/client", "-n", "demo"])?;
    let log = String::from_utf8_lossy(&log.stdout);
    println!("demo: the client pod on {client_node} asked http://wasm-echo/ 4 times:\n{log}");
    if !log.contains("succeeded 4 of 4") {
        bail!("the client pod did not get 4 answers through the Service");
    }
    Ok(())
}

/// Waits for the Job `name` in the demo namespace to succeed.
fn wait_job(cp: &cluster::ControlPlane, name: &str) -> Result<()> {
    cp.wait_until(120, &format!("the {name} Job to complete"), |cp| {
        let s = cp.get(&[
            "job",
            name,
            "-n",
            "demo",
            "-o",
            "jsonpath={.status.succeeded}",
        ])?;
        Ok(s == "1")
    })
}

const WASM_PODS: &str = "apiVersion: batch/v1
kind: Job
metadata: {name: hello, namespace: demo}
spec:
  backoffLimit: 2
  template:
    spec:
      nodeName: node-1
      restartPolicy: Never
      containers:
        - name: hello
          image: REGISTRY/demo/hello:1.0
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: wasm-echo, namespace: demo}
spec:
  replicas: 2
  selector: {matchLabels: {app: wasm-echo}}
  template:
    metadata: {labels: {app: wasm-echo}}
    spec:
      # On the kernel nodes: the hollow nodes run no wasm.
      affinity:
        nodeAffinity:
          requiredDuringSchedulingIgnoredDuringExecution:
            nodeSelectorTerms:
              - matchExpressions: [{key: skiff.dev/hollow, operator: DoesNotExist}]
      containers:
        - name: echo
          image: REGISTRY/demo/echo:1.0
          ports: [{containerPort: 8080}]
          resources: {limits: {memory: 16Mi, cpu: 500m}}
          readinessProbe: {httpGet: {path: /healthz, port: 8080}, periodSeconds: 2}
          env:
            - name: POD_NAME
              valueFrom: {fieldRef: {fieldPath: metadata.name}}
---
apiVersion: v1
kind: Service
metadata: {name: wasm-echo, namespace: demo}
spec:
  selector: {app: wasm-echo}
  ports: [{port: 80, targetPort: 8080}]
";

/// A client pod on NODE: four requests to the Service by its DNS name.
const CLIENT_JOB: &str = "apiVersion: batch/v1
kind: Job
metadata: {name: client, namespace: demo}
spec:
  backoffLimit: 2
  template:
    spec:
      nodeSelector: {kubernetes.io/hostname: NODE}
      restartPolicy: Never
      containers:
        - name: client
          image: REGISTRY/demo/client:1.0
          resources: {limits: {memory: 16Mi}}
          env:
            - {name: ADDR, value: \"wasm-echo:80\"}
            - {name: REPEAT, value: \"4\"}
            - {name: MESSAGE, value: \"GET /through-the-service HTTP/1.1\\r\\nHost: wasm-echo\\r\\n\\r\\n\"}
";

/// Control plane, kubectl, hollow nodes and a pod run to completion.
fn control_plane(
    root: &Path,
    tools: &setup::Tools,
    registry: &str,
) -> Result<cluster::ControlPlane> {
    // The nodes reach the host's loopback (where the gateway listens)
    // through the segment's router.
    let sans = [skiff_qemu::SEGMENT_GATEWAY.to_string()];
    let mut cp = cluster::ControlPlane::start(root, tools, &sans, &[registry.to_string()])?;
    let manifest = root.join("tools/xtask/demo/cluster.yaml");
    cp.kubectl(&["apply", "-f", &manifest.to_string_lossy()])?;
    cp.kubectl(&[
        "get",
        "deployments,services,configmaps,secrets",
        "-n",
        "demo",
    ])?;

    cp.hollow_nodes(root, "hollow", 3)?;
    cp.wait_until(30, "3 hollow nodes Ready", |cp| {
        let nodes = cp.get(&["nodes", "--no-headers"])?;
        Ok(nodes
            .lines()
            .filter(|l| l.split_whitespace().nth(1) == Some("Ready"))
            .count()
            == 3)
    })?;
    cp.kubectl(&["get", "nodes", "-o", "wide"])?;
    // The scheduler places the Deployment's replicas; the controllers
    // report the rollout.
    cp.kubectl(&[
        "rollout",
        "status",
        "deployment/echo",
        "-n",
        "demo",
        "--timeout=60s",
    ])?;
    cp.kubectl(&["get", "pods", "-n", "demo", "-o", "wide"])?;

    // The batch pod names its node. The hollow node's fake runtime reads
    // its script from the annotations.
    let pod = root.join("target/demo/batch-pod.yaml");
    std::fs::write(&pod, BATCH_POD)?;
    cp.kubectl(&["apply", "-f", &pod.to_string_lossy()])?;
    cp.wait_until(30, "the batch pod to succeed", |cp| {
        let phase = cp.get(&[
            "pod",
            "batch",
            "-n",
            "demo",
            "-o",
            "jsonpath={.status.phase}",
        ])?;
        Ok(phase == "Succeeded")
    })?;
    cp.kubectl(&["get", "pod", "batch", "-n", "demo", "-o", "wide"])?;
    cp.kubectl(&[
        "get",
        "pod",
        "batch",
        "-n",
        "demo",
        "-o",
        "jsonpath={.status.containerStatuses[0].state.terminated}{\"\\n\"}",
    ])?;
    Ok(cp)
}

const BATCH_POD: &str = "apiVersion: v1
kind: Pod
metadata:
  name: batch
  namespace: demo
  annotations:
    hollow.skiff.dev/run-ms: \"1500\"
    hollow.skiff.dev/exit-code: \"0\"
spec:
  nodeName: hollow-1
  restartPolicy: Never
  containers:
    - name: main
      image: localhost:5000/skiff/hello:v1
";

fn launch(
    elf: &Path,
    i: usize,
    accel: Accel,
    serial: bool,
    cp: &cluster::ControlPlane,
    segment: &Segment,
) -> Result<DemoNode> {
    let gateway_port = cp
        .gateway
        .rsplit_once(':')
        .map(|(_, p)| p.to_string())
        .context("gateway address")?;
    let name = format!("node-{i}");
    let diag_token = skiff_qemu::new_diag_token()?;
    let mut spec = segment.attach(
        NodeSpec::new(elf)
            .machine(Machine::Microvm)
            .accel(accel)
            // Room for a few wasm pods next to the node's own heap.
            .memory_mib(96)
            // TCG's CPU has no RDRAND: virtio-rng is the node's entropy.
            .rng(true)
            .arg(format!("skiff.hostname={name}"))
            .arg(format!("skiff.diag={DIAG_PORT}"))
            // The demo shuts its nodes down through diag: that needs the token.
            .arg(format!("skiff.diag_token={diag_token}"))
            // The segment's router is the host's loopback at 10.0.2.2.
            .arg(format!(
                "skiff.gateway={}:{gateway_port}",
                skiff_qemu::SEGMENT_GATEWAY
            ))
            .arg(format!("skiff.token={}", cp.token))
            .arg(format!("skiff.ca={}", cp.ca_base64)),
    );
    spec.own_process_group = true;
    let hook: Option<skiff_qemu::LineHook> = serial.then(|| {
        let prefix = name.clone();
        Box::new(move |l: &skiff_qemu::LogLine| println!("[{prefix}] {}", l.text)) as _
    });
    let mut node = spec
        .launch_with(hook)
        .with_context(|| format!("{name}: launching QEMU"))?;
    // The node's DHCP address, then a host forward to its diag service.
    let up = node
        .wait_for_stage("net-up", Duration::from_secs(60))
        .map_err(|e| anyhow::anyhow!("{name}: no `stage: net-up`: {e}"))?;
    let ip: Ipv4Addr = skiff_qemu::log::field(&up.text, "ip")
        .and_then(|cidr| cidr.split('/').next()?.parse().ok())
        .with_context(|| format!("{name}: no address in {:?}", up.text))?;
    let host_port = segment
        .forward(SocketAddrV4::new(ip, DIAG_PORT))
        .with_context(|| format!("{name}: forwarding to its diag service"))?;
    let diag = DiagClient::new(([127, 0, 0, 1], host_port).into()).with_token(Some(diag_token));
    Ok(DemoNode {
        name,
        node,
        diag,
        host_port,
    })
}
