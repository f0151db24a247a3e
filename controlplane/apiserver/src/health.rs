//! `/healthz`, `/livez` and `/readyz` as kube serves them: named checks,
//! `ping` (the server answers) and `etcd` (the store answers a linearizable
//! read within [`STORE_TIMEOUT`], so a member cut off from its quorum, or
//! removed from its cluster, is not ready). `?verbose` lists every check,
//! `?exclude=NAME` leaves one out, `/readyz/NAME` asks one alone. Any
//! failing check is a 500; as kube does, the body withholds the reason and
//! the log keeps it.

use std::time::Duration;

use axum::body::Body;
use axum::http::Response;

use crate::http::Query;
use crate::server::State;

/// The checks, in the order kube lists them.
const CHECKS: &[&str] = &["ping", "etcd"];
/// How long the store may take to answer before the member is unhealthy.
pub const STORE_TIMEOUT: Duration = Duration::from_secs(2);

/// Answers `/{endpoint}` (`check`: `/{endpoint}/{check}`), or `None` for a
/// check that does not exist.
pub(crate) async fn serve(
    state: &State,
    endpoint: &str,
    check: Option<&str>,
    query: &Query,
) -> Option<Response<Body>> {
    if let Some(name) = check {
        let name = CHECKS.iter().find(|c| **c == name)?;
        return Some(match run(state, name).await {
            Ok(()) => text(200, "ok".into()),
            Err(why) => {
                tracing::warn!(check = name, %why, "{endpoint} check failed");
                text(500, format!("internal server error: {name} check failed\n"))
            }
        });
    }
    let excluded: Vec<&str> = query.all("exclude").collect();
    let mut report = String::new();
    let mut failed = false;
    for name in CHECKS {
        if excluded.contains(name) {
            report += &format!("[+]{name} excluded: ok\n");
            continue;
        }
        match run(state, name).await {
            Ok(()) => report += &format!("[+]{name} ok\n"),
            Err(why) => {
                tracing::warn!(check = name, %why, "{endpoint} check failed");
                failed = true;
                report += &format!("[-]{name} failed: reason withheld\n");
            }
        }
    }
    Some(if failed {
        text(500, format!("{report}{endpoint} check failed\n"))
    } else if query.flag("verbose") {
        text(200, format!("{report}{endpoint} check passed\n"))
    } else {
        text(200, "ok".into())
    })
}

async fn run(state: &State, check: &str) -> Result<(), String> {
    match check {
        "etcd" => {
            if state.store.removed() {
                return Err("this member was removed from its cluster".into());
            }
            match tokio::time::timeout(STORE_TIMEOUT, state.store.get("/registry/health")).await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err(format!("the store did not answer within {STORE_TIMEOUT:?}")),
            }
        }
        _ => Ok(()),
    }
}

fn text(code: u16, body: String) -> Response<Body> {
    Response::builder()
        .status(code)
        .header("content-type", "text/plain; charset=utf-8")
        .header("x-content-type-options", "nosniff")
        .body(Body::from(body))
        .expect("static response parts")
}
