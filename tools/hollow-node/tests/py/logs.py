"""pods/log through the official Python client (kubernetes package), against
the cluster tests/logs.rs set up (pods talk, forever, unscheduled)."""

import re

from kubernetes import client, config
from kubernetes.client.rest import ApiException

config.load_kube_config()
v1 = client.CoreV1Api()
NS = "default"


def expect_error(status, needle, f):
    try:
        f()
    except ApiException as e:
        assert e.status == status, (e.status, e.body)
        assert needle in e.body, e.body
        return
    raise AssertionError(f"expected HTTP {status} ({needle})")


out = v1.read_namespaced_pod_log("talk", NS, container="a")
assert out == "hello from a attempt 0\nsecond line of a\n", repr(out)
out = v1.read_namespaced_pod_log("talk", NS, container="b", tail_lines=1)
assert out == "second line of b\n", repr(out)
out = v1.read_namespaced_pod_log("talk", NS, container="a", limit_bytes=8)
assert out == "hello fr", repr(out)
out = v1.read_namespaced_pod_log("talk", NS, container="a", timestamps=True, tail_lines=1)
assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z second line of a\n", out), repr(out)
out = v1.read_namespaced_pod_log("talk", NS, container="a", since_seconds=3600)
assert out.startswith("hello from a"), repr(out)

# Streaming reads: the raw response, chunk by chunk.
resp = v1.read_namespaced_pod_log(
    "forever", NS, follow=True, tail_lines=0, _preload_content=False
)
assert resp.headers["Content-Type"].startswith("text/plain"), resp.headers
got = b""
for chunk in resp.stream(64):
    got += chunk
    if got.count(b"\n") >= 2:
        break
resp.release_conn()
assert re.match(rb"hollow container main tick \d+\n", got), got

expect_error(
    400,
    "a container name must be specified for pod talk, choose one of: [a b]",
    lambda: v1.read_namespaced_pod_log("talk", NS),
)
expect_error(
    400,
    "container nope is not valid for pod talk",
    lambda: v1.read_namespaced_pod_log("talk", NS, container="nope"),
)
expect_error(
    400, "is waiting to start", lambda: v1.read_namespaced_pod_log("unscheduled", NS)
)
expect_error(404, "not found", lambda: v1.read_namespaced_pod_log("ghost", NS))
expect_error(
    422,
    "tailLines: Invalid value: -1: must be greater than or equal to 0",
    lambda: v1.read_namespaced_pod_log("talk", NS, container="a", tail_lines=-1),
)
print("python logs: all checks passed")
