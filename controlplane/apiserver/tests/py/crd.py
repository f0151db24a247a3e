"""The official Python client's CustomObjectsApi against a Skiff control
plane with the CronTab CRD of tests/crd.rs: CRUD, selectors, a watch,
merge patch, the status subresource and schema errors (422 with causes)."""

import json
import os

from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException

config.load_kube_config(config_file=os.environ["KUBECONFIG"])
api = client.CustomObjectsApi()
G, V, NS, P = "stable.example.com", "v1", "default", "crontabs"


def crontab(name, labels, replicas=1):
    return {
        "apiVersion": f"{G}/{V}",
        "kind": "CronTab",
        "metadata": {"name": name, "labels": labels},
        "spec": {"cronSpec": "* * * * *", "replicas": replicas, "extra": 1},
    }


created = api.create_namespaced_custom_object(G, V, NS, P, crontab("a", {"app": "x"}))
assert created["metadata"]["uid"], created
assert "extra" not in created["spec"], created
assert created["spec"]["image"] == "busybox", created
rv = api.list_namespaced_custom_object(G, V, NS, P)["metadata"]["resourceVersion"]

w = watch.Watch()
api.create_namespaced_custom_object(G, V, NS, P, crontab("b", {"app": "y"}))
events = []
for ev in w.stream(
    api.list_namespaced_custom_object, G, V, NS, P, resource_version=rv, timeout_seconds=5
):
    events.append((ev["type"], ev["object"]["metadata"]["name"]))
    if len(events) == 1:
        w.stop()
assert events == [("ADDED", "b")], events

listed = api.list_namespaced_custom_object(G, V, NS, P, label_selector="app=x")
assert [i["metadata"]["name"] for i in listed["items"]] == ["a"], listed
listed = api.list_cluster_custom_object(G, V, P, field_selector="metadata.name=b")
assert [i["metadata"]["name"] for i in listed["items"]] == ["b"], listed

patched = api.patch_namespaced_custom_object(G, V, NS, P, "a", {"spec": {"replicas": 3}})
assert patched["spec"]["replicas"] == 3, patched
status = api.patch_namespaced_custom_object_status(
    G, V, NS, P, "a", {"status": {"replicas": 3}}
)
assert status["status"] == {"replicas": 3}, status

try:
    api.create_namespaced_custom_object(G, V, NS, P, crontab("c", {}, replicas=0))
    raise AssertionError("a schema violation was stored")
except ApiException as e:
    assert e.status == 422, e
    body = json.loads(e.body)
    causes = body["details"]["causes"]
    assert causes[0]["field"] == "spec.replicas", causes
    assert "greater than or equal to 1" in causes[0]["message"], causes

api.delete_namespaced_custom_object(G, V, NS, P, "a")
try:
    api.get_namespaced_custom_object(G, V, NS, P, "a")
    raise AssertionError("deleted object still there")
except ApiException as e:
    assert e.status == 404, e

print("python crd: all checks passed")
