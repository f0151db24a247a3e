//! The official Python `kubernetes` client (SKIFF_PYTHON) against an
//! in-process control plane; the checks are in tests/py/client.py.

use skiff_test_support::api::ApiServer;

#[test]
fn python_client_crud_selectors_watch_and_errors() {
    let c = ApiServer::start();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/py/client.py");
    c.run_python(script, "python client: all checks passed");
}
