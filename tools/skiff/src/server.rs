//! `skiff server` and `skiff kubeconfig`: a control plane in one command,
//! its PKI created on first start, as `k3s server` does.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::Args;
use skiff_apiserver::pki;
use skiff_controlplane::{ServeOptions, local_addr, local_url};

/// The host's own address as QEMU's user network shows it to a guest: the
/// serving certificate names it so `skiff node boot` nodes can check it.
pub const GUEST_HOST_ADDR: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 2);

/// Where `skiff server` keeps its state unless `--dir` says otherwise.
pub const DEFAULT_DIR: &str = "skiff-server";

/// The PKI (`pki init`'s directory) inside a server directory.
pub fn pki_dir(dir: &Path) -> PathBuf {
    dir.join("pki")
}

#[derive(Args)]
pub struct ServerArgs {
    /// The server's directory: `pki/` (created on first start: CA, serving
    /// certificate, admin kubeconfig) and `data/` (the embedded store).
    #[arg(long, default_value = DEFAULT_DIR)]
    dir: PathBuf,
    #[command(flatten)]
    options: ServeOptions,
}

#[derive(Args)]
pub struct KubeconfigArgs {
    /// The server's directory (as given to `skiff server`).
    #[arg(long, default_value = DEFAULT_DIR)]
    dir: PathBuf,
}

/// Creates the PKI on first start: no fleet token (each node gets its own
/// from `skiff token create`), the serving certificate naming the listen
/// addresses and the guest's view of this host.
fn init_pki_if_absent(pki: &Path, opts: &ServeOptions) -> Result<()> {
    if pki.join(pki::CA_CERT).exists() {
        return Ok(());
    }
    let mut sans = opts.san.clone();
    sans.push(GUEST_HOST_ADDR.to_string());
    for addr in [opts.listen, opts.node_listen] {
        if !addr.ip().is_unspecified() {
            sans.push(addr.ip().to_string());
        }
    }
    sans.sort();
    sans.dedup();
    let init = pki::InitOptions {
        sans,
        server_url: local_url(opts.listen),
        bootstrap_tokens: 0,
        ..Default::default()
    };
    pki::init(pki, &init).with_context(|| format!("creating the PKI in {}", pki.display()))?;
    eprintln!("skiff server: created the cluster PKI in {}", pki.display());
    Ok(())
}

pub fn run(args: ServerArgs) -> Result<()> {
    let pki = pki_dir(&args.dir);
    init_pki_if_absent(&pki, &args.options)?;
    let data = args.dir.join("data");
    let rt = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    rt.block_on(async {
        let running = skiff_controlplane::start(pki.clone(), data, args.options).await?;
        let gateway = running.gateway_addr();
        let node_server = local_addr(gateway);
        let dir = args.dir.display();
        println!(
            "skiff server: the Kubernetes API is at {api}, the node gateway at {gateway}\n\
             \n  kubectl:      export KUBECONFIG={kubeconfig}\n\
             \x20 a join token: skiff token create --dir {dir}\n\
             \x20 join a node:  skiff node boot --server {node_server} --ca {ca} --token <token>\n\
             \x20 dashboard:    {api}/ui/ (sign in with: kubectl create token NAME -n NAMESPACE)\n",
            api = local_url(running.api_addr()),
            kubeconfig = pki.join(pki::ADMIN_KUBECONFIG).display(),
            ca = pki.join(pki::CA_CERT).display(),
        );
        running.serve_until_stopped().await?;
        anyhow::Ok(())
    })
}

pub fn kubeconfig(args: KubeconfigArgs) -> Result<()> {
    let path = pki_dir(&args.dir).join(pki::ADMIN_KUBECONFIG);
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "reading {} (has `skiff server --dir {}` run?)",
            path.display(),
            args.dir.display()
        )
    })?;
    print!("{text}");
    Ok(())
}
