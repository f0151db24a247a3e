"""What one client may hold, checked with the official Python client against
a server with small limits (tests/connections.rs sets them): 3 watches per
user, 2 mutating requests in flight, a 2 s request timeout. Past a limit the
answer is 429 with Retry-After, and other users (and the admin) are served."""

import json
import os
import socket
import ssl
import time

from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException

URL = os.environ["SKIFF_URL"]
CA = os.environ["SKIFF_CA"]
NS = "default"
HOST, PORT = URL[len("https://"):].rsplit(":", 1)

config.load_kube_config(config_file=os.environ["KUBECONFIG"])
admin = client.CoreV1Api()


def api_for(token):
    cfg = client.Configuration()
    cfg.host = URL
    cfg.ssl_ca_cert = CA
    cfg.api_key = {"authorization": "Bearer " + token}
    return client.CoreV1Api(client.ApiClient(cfg))


ALICE = "alice-token-0123456789"
alice = api_for(ALICE)
bob = api_for("bob-token-0123456789")


def cm(name):
    return client.V1ConfigMap(metadata=client.V1ObjectMeta(name=name), data={"k": "v"})


def open_watch(api):
    """A watch whose response stays open (streamed, not read)."""
    return api.list_namespaced_config_map(
        NS, watch=True, timeout_seconds=120, _preload_content=False
    )


def expect_429(fn, *args, **kw):
    try:
        r = fn(*args, **kw)
    except ApiException as e:
        assert e.status == 429, f"wanted 429, got {e.status}: {e.body}"
        assert e.headers.get("Retry-After") == "1", dict(e.headers)
        return json.loads(e.body)
    if hasattr(r, "close"):
        r.close()
    raise AssertionError("wanted HTTP 429, the request was served")


def eventually(what, check, secs=10):
    deadline = time.time() + secs
    while True:
        try:
            return check()
        except (AssertionError, ApiException):
            if time.time() > deadline:
                raise AssertionError(f"timed out waiting for {what}")
            time.sleep(0.2)


def watches_per_user():
    held = [open_watch(alice) for _ in range(3)]
    status = expect_429(open_watch, alice)
    assert status["reason"] == "TooManyRequests", status
    assert "Too many watches" in status["message"], status
    # Another user's watch works and sees events.
    admin.create_namespaced_config_map(NS, cm("seen-by-bob"))
    names = []
    for ev in watch.Watch().stream(bob.list_namespaced_config_map, NS, timeout_seconds=5):
        names.append(ev["object"].metadata.name)
        if "seen-by-bob" in names:
            break
    assert "seen-by-bob" in names, names
    # Closing one of alice's gives its slot back.
    held.pop().close()

    def reopen():
        w = open_watch(alice)
        held.append(w)

    eventually("alice's watch slot to come back", reopen)
    for w in held:
        w.close()


def slow_post(token, name):
    """A create whose body never finishes arriving: in flight until the
    request timeout."""
    ctx = ssl.create_default_context(cafile=CA)
    s = ctx.wrap_socket(socket.create_connection((HOST, int(PORT))), server_hostname=HOST)
    body = json.dumps({"apiVersion": "v1", "kind": "ConfigMap",
                       "metadata": {"name": name}, "data": {"k": "v"}}).encode()
    head = (f"POST /api/v1/namespaces/{NS}/configmaps HTTP/1.1\r\nHost: {HOST}\r\n"
            f"Authorization: Bearer {token}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode()
    s.sendall(head + body[:10])
    return s


def mutating_in_flight():
    slow = [slow_post(ALICE, f"slow{i}") for i in range(2)]
    time.sleep(0.5)
    status = expect_429(alice.create_namespaced_config_map, NS, cm("third"))
    assert status["message"] == "Too many requests, please try again later.", status
    # The limit is the server's, not alice's: bob waits too; the admin
    # (system:masters) does not, as in kube.
    expect_429(bob.create_namespaced_config_map, NS, cm("bobs"))
    admin.create_namespaced_config_map(NS, cm("admins"))
    # Reads have their own pool.
    alice.list_namespaced_config_map(NS)
    # The slow bodies run into the request timeout: 504, and their slots
    # come back.
    for s in slow:
        s.settimeout(10)
        answer = s.recv(4096)
        assert answer.startswith(b"HTTP/1.1 504"), answer
        assert b"Timeout" in answer, answer
        s.close()
    eventually("alice to be served again",
               lambda: alice.create_namespaced_config_map(NS, cm("third")))


watches_per_user()
mutating_in_flight()
print("limits: all checks passed")
