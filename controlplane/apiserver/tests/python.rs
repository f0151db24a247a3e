//! The official Python `kubernetes` client (SKIFF_PYTHON) against an
//! in-process control plane; the checks are in tests/py/client.py.

use std::process::Command;

use skiff_test_support::api::ApiServer;
use skiff_test_support::peers;

#[test]
fn python_client_crud_selectors_watch_and_errors() {
    let c = ApiServer::start();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/py/client.py");
    let out = Command::new(peers::python())
        .arg(script)
        .env("KUBECONFIG", &c.kubeconfig)
        .output()
        .expect("run python");
    let (so, se) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(
        out.status.success(),
        "python client checks failed:\nstdout: {so}\nstderr: {se}"
    );
    assert!(so.contains("python client: all checks passed"), "{so}");
}
