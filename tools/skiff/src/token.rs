//! `skiff token create|list|revoke`: node bootstrap tokens, kept as kube's
//! `bootstrap.kubernetes.io/token` Secrets in `kube-system` (what the node
//! gateway checks; `docs/SECURITY.md`), managed as the admin through the API
//! like `kubeadm token`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams, ListParams, ObjectMeta, PostParams};
use skiff_gateway::{BOOTSTRAP_TOKEN_TYPE as SECRET_TYPE, NODE_NAME_KEY, SINGLE_USE_KEY};

use crate::server::{DEFAULT_DIR, pki_dir};

const NAMESPACE: &str = "kube-system";
const NAME_PREFIX: &str = "bootstrap-token-";

#[derive(Args)]
pub struct TokenArgs {
    #[command(subcommand)]
    cmd: TokenCmd,
    /// The admin kubeconfig [default: $KUBECONFIG, else DIR/pki/admin.kubeconfig].
    #[arg(long, global = true)]
    kubeconfig: Option<PathBuf>,
    /// The server's directory (as given to `skiff server`).
    #[arg(long, global = true, default_value = DEFAULT_DIR)]
    dir: PathBuf,
}

#[derive(Subcommand)]
enum TokenCmd {
    /// Create a token and print it (`<id>.<secret>`, for `skiff node boot
    /// --token`). Bound to the first node that joins with it, or to --node.
    Create {
        /// The only node name the token may join as.
        #[arg(long)]
        node: Option<String>,
        /// How long the token can be used (`90s`, `30m`, `24h`, `7d`).
        #[arg(long, default_value = "24h", value_parser = parse_ttl)]
        ttl: Duration,
        /// Delete the token when a node joins with it.
        #[arg(long)]
        single_use: bool,
        /// Free text shown by `list`.
        #[arg(long)]
        description: Option<String>,
    },
    /// List the tokens (ids, never secrets), their node and expiry.
    List,
    /// Delete a token by id: no node can join with it any more (nodes that
    /// joined with it keep running, as in kube).
    Revoke { id: String },
}

/// `90s`, `30m`, `24h`, `7d`; more than nothing.
fn parse_ttl(s: &str) -> Result<Duration, String> {
    match skiff_controlplane::parse_duration(s)? {
        d if d.is_zero() => Err(format!("invalid duration {s:?}: a token must live a while")),
        d => Ok(d),
    }
}

/// A token id must name one Secret: `[a-z0-9]{6}`.
fn check_id(id: &str) -> Result<()> {
    if skiff_gateway::is_token_id(id) {
        Ok(())
    } else {
        bail!("token id {id:?}: expected 6 characters of [a-z0-9] (the part before the dot)")
    }
}

/// The Secret of a new token.
fn token_secret(
    id: &str,
    secret: &str,
    expiration: jiff::Timestamp,
    node: Option<&str>,
    single_use: bool,
    description: Option<&str>,
) -> Secret {
    let mut data: BTreeMap<String, ByteString> = [
        ("token-id", id.to_string()),
        ("token-secret", secret.to_string()),
        ("expiration", expiration.to_string()),
        ("usage-bootstrap-authentication", "true".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), ByteString(v.into_bytes())))
    .collect();
    let mut extra = |k: &str, v: &str| data.insert(k.into(), ByteString(v.as_bytes().to_vec()));
    if let Some(n) = node {
        extra(NODE_NAME_KEY, n);
    }
    if single_use {
        extra(SINGLE_USE_KEY, "true");
    }
    if let Some(d) = description {
        extra("description", d);
    }
    Secret {
        metadata: ObjectMeta {
            name: Some(format!("{NAME_PREFIX}{id}")),
            namespace: Some(NAMESPACE.into()),
            ..Default::default()
        },
        type_: Some(SECRET_TYPE.into()),
        data: Some(data),
        ..Default::default()
    }
}

fn field(s: &Secret, key: &str) -> Option<String> {
    let v = s.data.as_ref()?.get(key)?;
    String::from_utf8(v.0.clone()).ok()
}

pub fn run(args: TokenArgs) -> Result<()> {
    let kubeconfig = args
        .kubeconfig
        .or_else(|| std::env::var_os("KUBECONFIG").map(PathBuf::from))
        .unwrap_or_else(|| pki_dir(&args.dir).join(skiff_apiserver::pki::ADMIN_KUBECONFIG));
    let rt = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    rt.block_on(async {
        let client = skiff_client::client_from_kubeconfig(&kubeconfig, None).await?;
        let api: Api<Secret> = Api::namespaced(client, NAMESPACE);
        let server = || format!("the API server of {}", kubeconfig.display());
        match args.cmd {
            TokenCmd::Create {
                node,
                ttl,
                single_use,
                description,
            } => {
                let id = skiff_apiserver::pki::random_token(6);
                let secret = skiff_apiserver::pki::random_token(16);
                let expiration = jiff::Timestamp::now()
                    .checked_add(ttl)
                    .context("--ttl is too long")?
                    .round(jiff::Unit::Second)?;
                let object = token_secret(
                    &id,
                    &secret,
                    expiration,
                    node.as_deref(),
                    single_use,
                    description.as_deref(),
                );
                api.create(&PostParams::default(), &object)
                    .await
                    .with_context(|| format!("creating the token's Secret on {}", server()))?;
                println!("{id}.{secret}");
            }
            TokenCmd::List => {
                let list = api
                    .list(&ListParams::default().fields(&format!("type={SECRET_TYPE}")))
                    .await
                    .with_context(|| format!("listing tokens on {}", server()))?;
                println!(
                    "{:<8} {:<22} {:<20} {:<10} DESCRIPTION",
                    "ID", "EXPIRES", "NODE", "SINGLE-USE"
                );
                for s in &list.items {
                    let Some(id) = field(s, "token-id") else {
                        continue;
                    };
                    println!(
                        "{:<8} {:<22} {:<20} {:<10} {}",
                        id,
                        field(s, "expiration").unwrap_or_else(|| "never".into()),
                        field(s, NODE_NAME_KEY).unwrap_or_else(|| "<first to join>".into()),
                        field(s, SINGLE_USE_KEY).as_deref() == Some("true"),
                        field(s, "description").unwrap_or_default(),
                    );
                }
            }
            TokenCmd::Revoke { id } => {
                check_id(&id)?;
                let name = format!("{NAME_PREFIX}{id}");
                match api.delete(&name, &DeleteParams::default()).await {
                    Ok(_) => println!("token {id} revoked"),
                    Err(kube::Error::Api(e)) if e.code == 404 => {
                        bail!("no token {id} (`skiff token list` shows the ids)")
                    }
                    Err(e) => {
                        return Err(e).with_context(|| format!("deleting {name} on {}", server()));
                    }
                }
            }
        }
        anyhow::Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttls_parse_and_nonsense_is_refused() {
        assert_eq!(parse_ttl("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_ttl("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_ttl("7d"), Ok(Duration::from_secs(7 * 86_400)));
        for bad in ["", "h", "0h", "12", "1w", "-1h", "99999999999999999999d"] {
            assert!(parse_ttl(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn ids_are_six_lowercase_alphanumerics() {
        assert!(check_id("abc123").is_ok());
        for bad in ["abc12", "abc1234", "ABC123", "abc-12", "../../x"] {
            assert!(check_id(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_token_secret_is_what_the_gateway_checks() {
        let exp: jiff::Timestamp = "2030-01-02T03:04:05Z".parse().unwrap();
        let s = token_secret("abc123", "0123456789abcdef", exp, Some("n1"), true, None);
        assert_eq!(s.metadata.name.as_deref(), Some("bootstrap-token-abc123"));
        assert_eq!(s.type_.as_deref(), Some(SECRET_TYPE));
        assert_eq!(field(&s, "token-id").as_deref(), Some("abc123"));
        assert_eq!(
            field(&s, "token-secret").as_deref(),
            Some("0123456789abcdef")
        );
        assert_eq!(
            field(&s, "expiration").as_deref(),
            Some("2030-01-02T03:04:05Z")
        );
        assert_eq!(
            field(&s, "usage-bootstrap-authentication").as_deref(),
            Some("true")
        );
        assert_eq!(field(&s, NODE_NAME_KEY).as_deref(), Some("n1"));
        assert_eq!(field(&s, SINGLE_USE_KEY).as_deref(), Some("true"));
    }
}
