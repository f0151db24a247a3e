"""The official Python client against a Skiff control plane: CRUD, selectors,
pagination, a watch resumed after a disconnect, and raw status codes."""

import json
import os
import ssl
import urllib.error
import urllib.request

from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException

config.load_kube_config(config_file=os.environ["KUBECONFIG"])
cfg = client.Configuration.get_default_copy()
v1 = client.CoreV1Api()
apps = client.AppsV1Api()
NS = "default"


def expect_status(code, fn, *args, **kw):
    try:
        fn(*args, **kw)
    except ApiException as e:
        assert e.status == code, f"wanted {code}, got {e.status}: {e.body}"
        return json.loads(e.body)
    raise AssertionError(f"wanted HTTP {code}, call succeeded")


def crud():
    cm = client.V1ConfigMap(
        metadata=client.V1ObjectMeta(name="py1", labels={"app": "py"}), data={"k": "v"}
    )
    created = v1.create_namespaced_config_map(NS, cm)
    assert created.metadata.uid and created.metadata.resource_version
    status = expect_status(409, v1.create_namespaced_config_map, NS, cm)
    assert status["reason"] == "AlreadyExists", status
    got = v1.read_namespaced_config_map("py1", NS)
    assert got.data == {"k": "v"}
    got.data["k"] = "v2"
    updated = v1.replace_namespaced_config_map("py1", NS, got)
    assert updated.data["k"] == "v2"
    assert int(updated.metadata.resource_version) > int(created.metadata.resource_version)
    got.data["k"] = "v3"  # stale resourceVersion
    status = expect_status(409, v1.replace_namespaced_config_map, "py1", NS, got)
    assert status["reason"] == "Conflict", status
    # dict body: strategic merge patch; list body: JSON patch.
    p = v1.patch_namespaced_config_map("py1", NS, {"metadata": {"labels": {"extra": "1"}}})
    assert p.metadata.labels == {"app": "py", "extra": "1"}, p.metadata.labels
    p = v1.patch_namespaced_config_map("py1", NS, [{"op": "add", "path": "/data/j", "value": "x"}])
    assert p.data == {"k": "v2", "j": "x"}, p.data

    dep = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "pyd"},
        "spec": {
            "selector": {"matchLabels": {"app": "pyd"}},
            "template": {
                "metadata": {"labels": {"app": "pyd"}},
                "spec": {"containers": [{"name": "c", "image": "img:1"}]},
            },
        },
    }
    d = apps.create_namespaced_deployment(NS, dep)
    assert d.spec.replicas == 1 and d.metadata.generation == 1
    assert d.spec.template.spec.containers[0].image_pull_policy == "IfNotPresent"
    s = apps.patch_namespaced_deployment_scale("pyd", NS, {"spec": {"replicas": 3}})
    assert s.spec.replicas == 3
    assert apps.read_namespaced_deployment("pyd", NS).spec.replicas == 3
    st = apps.patch_namespaced_deployment_status("pyd", NS, {"status": {"readyReplicas": 2, "replicas": 3}})
    assert st.status.ready_replicas == 2 and st.spec.replicas == 3
    # A main-resource write cannot change status.
    d = apps.patch_namespaced_deployment("pyd", NS, {"status": {"readyReplicas": 0}})
    assert d.status.ready_replicas == 2
    apps.delete_namespaced_deployment("pyd", NS)
    expect_status(404, apps.read_namespaced_deployment, "pyd", NS)

    v1.delete_namespaced_config_map("py1", NS)
    status = expect_status(404, v1.read_namespaced_config_map, "py1", NS)
    assert status["reason"] == "NotFound" and status["kind"] == "Status", status


def selectors_and_pages():
    for i in range(5):
        labels = {"group": "even" if i % 2 == 0 else "odd", "sel": "yes"}
        v1.create_namespaced_config_map(
            NS, client.V1ConfigMap(metadata=client.V1ObjectMeta(name=f"sel-{i}", labels=labels))
        )
    names = lambda l: [i.metadata.name for i in l.items]
    assert names(v1.list_namespaced_config_map(NS, label_selector="group=even")) == ["sel-0", "sel-2", "sel-4"]
    assert names(v1.list_namespaced_config_map(NS, label_selector="sel,group notin (even)")) == ["sel-1", "sel-3"]
    assert names(v1.list_namespaced_config_map(NS, field_selector="metadata.name=sel-3")) == ["sel-3"]
    assert names(v1.list_config_map_for_all_namespaces(label_selector="group!=even,sel=yes")) == ["sel-1", "sel-3"]

    seen, token, pages = [], None, 0
    while True:
        page = v1.list_namespaced_config_map(NS, label_selector="sel=yes", limit=2, _continue=token)
        seen += names(page)
        pages += 1
        token = page.metadata._continue
        if not token:
            break
    assert seen == [f"sel-{i}" for i in range(5)] and pages == 3, (seen, pages)

    v1.delete_collection_namespaced_config_map(NS, label_selector="group=odd")
    assert names(v1.list_namespaced_config_map(NS, label_selector="sel=yes")) == ["sel-0", "sel-2", "sel-4"]


def watch_resumes():
    start = v1.list_namespaced_config_map(NS, label_selector="w=1").metadata.resource_version
    meta = lambda n: client.V1ObjectMeta(name=n, labels={"w": "1"})
    v1.create_namespaced_config_map(NS, client.V1ConfigMap(metadata=meta("w-a"), data={"n": "1"}))

    w = watch.Watch()
    last_rv, first = None, []
    for ev in w.stream(v1.list_namespaced_config_map, NS, label_selector="w=1",
                       resource_version=start, timeout_seconds=5):
        first.append((ev["type"], ev["object"].metadata.name))
        last_rv = ev["object"].metadata.resource_version
        w.stop()  # disconnect after the first event
    assert first == [("ADDED", "w-a")], first

    # Changes while no one watches.
    v1.create_namespaced_config_map(NS, client.V1ConfigMap(metadata=meta("w-b")))
    v1.patch_namespaced_config_map("w-a", NS, {"data": {"n": "2"}})
    v1.delete_namespaced_config_map("w-a", NS)
    v1.create_namespaced_config_map(NS, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="w-other")))

    resumed = []
    for ev in watch.Watch().stream(v1.list_namespaced_config_map, NS, label_selector="w=1",
                                   resource_version=last_rv, timeout_seconds=1):
        resumed.append((ev["type"], ev["object"].metadata.name))
    assert resumed == [("ADDED", "w-b"), ("MODIFIED", "w-a"), ("DELETED", "w-a")], resumed


def every_kind_through_the_dynamic_client():
    """Discovery-driven CRUD of every served kind, as generic clients do it."""
    from kubernetes import dynamic

    dyn = dynamic.DynamicClient(client.ApiClient())
    pod_template = {"metadata": {"labels": {"app": "k"}},
                    "spec": {"containers": [{"name": "c", "image": "img:1"}], "restartPolicy": "Never"}}
    workload = {"selector": {"matchLabels": {"app": "k"}}, "template": pod_template}
    ref = {"apiVersion": "v1", "kind": "Pod", "name": "k", "namespace": NS}
    kinds = [
        ("v1", "Namespace", False, {}),
        ("v1", "Node", False, {"spec": {"podCIDR": "10.1.0.0/24"}}),
        ("v1", "Pod", True, {"spec": pod_template["spec"]}),
        ("v1", "Service", True, {"spec": {"ports": [{"port": 80}]}}),
        ("v1", "Endpoints", True, {"subsets": [{"addresses": [{"ip": "10.1.0.5"}], "ports": [{"port": 80}]}]}),
        ("discovery.k8s.io/v1", "EndpointSlice", True, {"addressType": "IPv4", "endpoints": [{"addresses": ["10.1.0.5"]}]}),
        ("v1", "ConfigMap", True, {"data": {"a": "b"}}),
        ("v1", "Secret", True, {"stringData": {"a": "b"}}),
        ("v1", "ServiceAccount", True, {}),
        ("v1", "Event", True, {"involvedObject": ref, "reason": "Tested", "message": "hi", "type": "Normal"}),
        ("events.k8s.io/v1", "Event", True, {"eventTime": "2026-01-01T00:00:00.000000Z", "reportingController": "t", "reportingInstance": "t", "action": "Test", "reason": "Tested", "regarding": ref, "type": "Normal"}),
        ("coordination.k8s.io/v1", "Lease", True, {"spec": {"holderIdentity": "n1", "leaseDurationSeconds": 40}}),
        ("apps/v1", "Deployment", True, {"spec": workload}),
        ("apps/v1", "ReplicaSet", True, {"spec": workload}),
        ("apps/v1", "DaemonSet", True, {"spec": workload}),
        ("batch/v1", "Job", True, {"spec": {"template": pod_template}}),
        ("batch/v1", "CronJob", True, {"spec": {"schedule": "*/5 * * * *", "jobTemplate": {"spec": {"template": pod_template}}}}),
        ("rbac.authorization.k8s.io/v1", "Role", True, {"rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}]}),
        ("rbac.authorization.k8s.io/v1", "RoleBinding", True, {"roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "k"}, "subjects": [{"kind": "User", "name": "u"}]}),
        ("rbac.authorization.k8s.io/v1", "ClusterRole", False, {"rules": []}),
        ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding", False, {"roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "k"}, "subjects": [{"kind": "Group", "name": "g"}]}),
    ]
    for api_version, kind, namespaced, extra in kinds:
        res = dyn.resources.get(api_version=api_version, kind=kind)
        assert res.namespaced == namespaced, kind
        body = {"apiVersion": api_version, "kind": kind, "metadata": {"name": "k", "labels": {"t": "1"}}, **extra}
        kw = {"namespace": NS} if namespaced else {}
        made = res.create(body=body, **kw)
        assert made.metadata.uid and made.metadata.name == "k", kind
        assert res.get(name="k", **kw).metadata.uid == made.metadata.uid, kind
        assert [i.metadata.name for i in res.get(label_selector="t=1", **kw).items] == ["k"], kind
        patched = res.patch(body={"metadata": {"labels": {"p": "1"}}}, name="k",
                            content_type="application/merge-patch+json", **kw)
        assert patched.metadata.labels["p"] == "1", kind
        res.delete(name="k", **kw)
    # The pod was unscheduled, so it went at once; everything is gone.
    for api_version, kind, namespaced, _ in kinds:
        kw = {"namespace": NS} if namespaced else {}
        res = dyn.resources.get(api_version=api_version, kind=kind)
        if kind == "Namespace":
            continue  # terminates in the background
        assert [i.metadata.name for i in res.get(label_selector="t=1", **kw).items] == [], kind


def raw(method, path, body=b"", ctype="application/json", creds=True):
    ctx = ssl.create_default_context(cafile=cfg.ssl_ca_cert)
    if creds:
        ctx.load_cert_chain(cfg.cert_file, cfg.key_file)
    req = urllib.request.Request(cfg.host + path, data=body or None, method=method,
                                 headers={"Content-Type": ctype})
    try:
        with urllib.request.urlopen(req, context=ctx) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def status_codes():
    cms = f"/api/v1/namespaces/{NS}/configmaps"
    before = raw("GET", cms)[1]["items"]
    cases = [
        (401, "Unauthorized", ("GET", "/api/v1/namespaces", b"", "application/json", False)),
        (400, "BadRequest", ("POST", cms, b'{"kind": "ConfigMap",')),
        (400, "BadRequest", ("POST", cms, b"metadata: [x", "application/yaml")),
        (400, "BadRequest", ("POST", cms, b'{"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "x"}}')),
        (404, "NotFound", ("POST", "/apis/example.com/v1/namespaces/default/widgets", b"{}")),
        (404, "NotFound", ("GET", cms + "/missing")),
        (415, "UnsupportedMediaType", ("POST", cms, b"x", "text/plain")),
        (422, "Invalid", ("POST", cms, b'{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "Bad_Name"}}')),
        (422, "Invalid", ("POST", cms, b"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  labels: {'bad key': x}\n  name: ok\n", "application/yaml")),
        (413, "RequestEntityTooLarge", ("POST", cms, b'{"data": {"x": "' + b"a" * (3 * 1024 * 1024) + b'"}}')),
    ]
    for code, reason, args in cases:
        got, status = raw(*args)
        assert got == code and status["kind"] == "Status" and status["reason"] == reason, (args[:2], got, status)
        assert status["code"] == code, status
    # YAML bodies are accepted.
    got, obj = raw("POST", cms, b"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: from-yaml\ndata:\n  a: b\n", "application/yaml")
    assert got == 201 and obj["data"] == {"a": "b"}, obj
    raw("DELETE", cms + "/from-yaml")
    assert raw("GET", cms)[1]["items"] == before, "refused requests changed the store"
    assert raw("GET", "/version")[1]["gitVersion"].startswith("v1.33")
    ctx = ssl.create_default_context(cafile=cfg.ssl_ca_cert)
    ctx.load_cert_chain(cfg.cert_file, cfg.key_file)
    for path in ("/healthz", "/readyz", "/livez"):
        with urllib.request.urlopen(cfg.host + path, context=ctx) as r:
            assert r.status == 200 and r.read() == b"ok", path


crud()
every_kind_through_the_dynamic_client()
selectors_and_pages()
watch_resumes()
status_codes()
print("python client: all checks passed")
