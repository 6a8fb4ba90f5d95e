"""The cluster's MLflow tracking server (manifests/base/mlflow.yaml), run here as the Deployment says.

The pipeline image runs first the Deployment's init container, then its server container, each with its own
command and args, environment (its ConfigMap and the predictors' storage Secret), securityContext (uid 1000, read-only
root file system, no privilege escalation, every capability dropped), volumes (a directory standing in for the
PersistentVolumeClaim at /data, an emptyDir /tmp) and limits, every value read from the rendered kind overlay.
KFP's MinIO is an S3 API on 127.0.0.1 (moto), behind a recorder that keeps each request's headers.

Containers share this machine's network here, so three values change, each named where it is changed: the bind
address (127.0.0.1, not 0.0.0.0), the port (a free one, not 5000) and the object store's endpoint (moto's).

Then, from this machine, through the server: a run with the model as its artifact, registered as a version and made
champion (components/registry, as the pipeline does), downloaded again; the version's files sit in the bucket at
``storage_uri(source, --artifacts-destination)``, where KServe reads them. A second server on the same volume still
has the champion.
"""

from __future__ import annotations

import hashlib
import http.client
import http.server
import threading
import time
from pathlib import Path

import httpx
import pytest

from components.images import PIPELINE_IMAGE
from components.registry import models as registry
from components.registry.tracking import Tracker
from tests.conftest import free_port
from tests.test_manifests import mlflow_parts, object_store_env, render, server_options

pytestmark = [pytest.mark.containers, pytest.mark.slow]
MODEL = "penguins-species"
IN_CLUSTER_HOST = "mlflow.kfp-tabular.svc.cluster.local:5000"  # the Host header of the pipeline's pods
# what boto3 >= 1.36 adds to requests by default, unknown to KFP 2.14.3's MinIO (RELEASE.2019-08-14)
CHECKSUM_HEADERS = ("x-amz-checksum-", "x-amz-sdk-checksum-algorithm", "x-amz-trailer", "x-amz-checksum-mode")
HOP_BY_HOP = {"connection", "transfer-encoding", "content-length", "expect", "keep-alive"}
# podman's --read-only mounts a writable tmpfs at these unless something else is mounted there; Kubernetes'
# readOnlyRootFilesystem does not: an empty read-only directory goes where the pod mounts nothing
ENGINE_TMPFS = ("/tmp", "/var/tmp", "/run")


# --- the object store: moto on 127.0.0.1 behind a recorder of request headers ------------------------------


class Recorder(http.server.BaseHTTPRequestHandler):
    """Forwards each request to ``server.target`` and keeps (method, path, headers) in ``server.seen``."""

    protocol_version = "HTTP/1.1"

    def forward(self):
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            body = b""
            while size := int(self.rfile.readline().split(b";")[0], 16):
                body += self.rfile.read(size)
                self.rfile.readline()
            self.rfile.readline()
        else:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.server.seen.append((self.command, self.path, {k.lower(): v for k, v in self.headers.items()}))
        upstream = http.client.HTTPConnection(*self.server.target, timeout=60)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
        upstream.request(self.command, self.path, body=body, headers=headers)
        answer = upstream.getresponse()
        data = answer.read()
        self.send_response(answer.status)
        for key, value in answer.getheaders():
            if key.lower() not in HOP_BY_HOP or (self.command == "HEAD" and key.lower() == "content-length"):
                self.send_header(key, value)
        if self.command != "HEAD":
            self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)
        upstream.close()

    do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = forward

    def log_message(self, *args):  # quiet
        pass


@pytest.fixture(scope="module")
def object_store():
    """(endpoint URL for the containers, the requests it received, a boto3 client on moto itself)."""
    import boto3
    from moto.server import ThreadedMotoServer

    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    moto.start()
    host, port = moto.get_host_and_port()
    # moto's buckets live in the test process, shared by every moto server it started: start from none
    httpx.post(f"http://{host}:{port}/moto-api/reset", timeout=30).raise_for_status()
    recorder = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    recorder.target, recorder.seen = (host, port), []
    threading.Thread(target=recorder.serve_forever, daemon=True).start()
    s3 = boto3.client(
        "s3",
        endpoint_url=f"http://{host}:{port}",
        aws_access_key_id="x",
        aws_secret_access_key="x",
        region_name="us-east-1",
    )
    yield f"http://127.0.0.1:{recorder.server_port}", recorder.seen, s3
    recorder.shutdown()
    moto.stop()


# --- the Deployment's containers, as the kubelet would run them ---------------------------------------------


@pytest.fixture(scope="module")
def deployment() -> dict:
    objects = render("manifests/overlays/kind")
    return mlflow_parts(objects) | {"objects": objects}


def run_options(deployment: dict, container: dict, endpoint: str, data: Path) -> dict:
    """docker/podman options for one of the pod's containers; a securityContext field or a volume kind this does
    not know fails the test."""
    pod = deployment["Deployment"]["spec"]["template"]["spec"]
    assert container["image"] == PIPELINE_IMAGE
    security = dict(container["securityContext"])
    assert security.pop("runAsNonRoot") is True and pod["securityContext"]["runAsNonRoot"] is True
    user = security.pop("runAsUser")
    assert user != 0
    options = {
        "user": f"{user}:{pod['securityContext']['runAsGroup']}",
        "group_add": [str(pod["securityContext"]["fsGroup"])],
        "read_only": security.pop("readOnlyRootFilesystem"),
        "cap_drop": security.pop("capabilities")["drop"],
        "security_opt": [] if security.pop("allowPrivilegeEscalation") else ["no-new-privileges"],
    }
    assert security.pop("seccompProfile") == {"type": "RuntimeDefault"}  # the engine's default profile
    assert not security, f"securityContext fields this test does not apply: {security}"
    volumes = {v["name"]: v for v in pod["volumes"]}
    tmpfs, binds = {}, []
    for mount in container.get("volumeMounts", []):
        volume = volumes[mount["name"]]
        if "emptyDir" in volume:
            tmpfs[mount["mountPath"]] = "rw,exec,nosuid,nodev"  # an emptyDir: writable, not noexec
        else:
            assert (
                volume["persistentVolumeClaim"]["claimName"]
                == deployment["PersistentVolumeClaim"]["metadata"]["name"]
            )
            binds.append(f"{data}:{mount['mountPath']}:rw")
    empty = data.parent / "empty-read-only"
    empty.mkdir(exist_ok=True)
    binds += [f"{empty}:{path}:ro" for path in ENGINE_TMPFS if path not in tmpfs]
    env = object_store_env(deployment, container, deployment["objects"])
    assert env["MLFLOW_S3_ENDPOINT_URL"] == "http://minio-service.kubeflow.svc.cluster.local:9000"
    env["MLFLOW_S3_ENDPOINT_URL"] = endpoint  # changed: KFP's MinIO -> the S3 API on 127.0.0.1
    limits = container["resources"]["limits"]
    memory = limits["memory"]
    assert memory.endswith(("Mi", "Gi"))
    megabytes = int(float(memory[:-2]) * (1024 if memory.endswith("Gi") else 1))
    cpus = float(limits["cpu"][:-1]) / 1000 if str(limits["cpu"]).endswith("m") else float(limits["cpu"])
    return options | {
        "entrypoint": container["command"],  # Kubernetes' command replaces the image's entrypoint
        "command": list(container["args"]) if "args" in container else [],
        "environment": env,
        "tmpfs": tmpfs,
        "volumes": binds,
        "mem_limit": f"{megabytes}m",
        "nano_cpus": int(cpus * 1e9),
        "network_mode": "host",
    }


def run_init(engine, deployment: dict, endpoint: str, data: Path) -> str:
    """The init container to completion; fails with its log unless it exits 0."""
    options = run_options(deployment, deployment["init"], endpoint, data)
    container = engine.containers.run(PIPELINE_IMAGE, detach=True, **options)
    try:
        status = container.wait(timeout=300)["StatusCode"]
        log = container.logs().decode()
        assert status == 0, log[-3000:]
        return log
    finally:
        container.remove(force=True)


def start_server(engine, deployment: dict, endpoint: str, data: Path) -> tuple[object, str]:
    """The server container, detached, until /health answers; returns (container, URL on 127.0.0.1)."""
    server = deployment["server"]
    options = run_options(deployment, server, endpoint, data)
    port = free_port()
    args = options["command"]
    for changed, value in (("--host", "127.0.0.1"), ("--port", str(port))):  # changed: shared network here
        (i,) = [i for i, arg in enumerate(args) if arg.startswith(f"{changed}=")]
        args[i] = f"{changed}={value}"
    container = engine.containers.run(PIPELINE_IMAGE, detach=True, **options)
    url = f"http://127.0.0.1:{port}"
    health = server["readinessProbe"]["httpGet"]["path"]
    started = time.monotonic()
    while True:
        try:
            if httpx.get(url + health, timeout=2).status_code == 200:
                break
        except httpx.TransportError:
            pass
        container.reload()
        budget = server["startupProbe"]["periodSeconds"] * server["startupProbe"]["failureThreshold"]
        if container.status != "running" or time.monotonic() - started > budget:
            log = container.logs().decode()
            container.remove(force=True)
            pytest.fail(
                f"the server did not answer {health} within the startup probe's {budget} s:\n{log[-4000:]}"
            )
        time.sleep(1)
    print(f"mlflow server answered {health} after {time.monotonic() - started:.0f} s")
    return container, url


@pytest.fixture(scope="module")
def served(images, deployment, object_store, tmp_path_factory):
    """The init container run twice (a pod restart), then the server: (container, URL, data dir)."""
    endpoint, _, s3 = object_store
    data = tmp_path_factory.mktemp("mlflow-data")
    data.chmod(0o777)  # as kind's storage class (local-path) provisions a volume
    first = run_init(images, deployment, endpoint, data)
    again = run_init(images, deployment, endpoint, data)
    bucket = server_options(deployment["server"])["artifacts_destination"].removeprefix("s3://")
    assert f"bucket {bucket} created" in first and f"bucket {bucket} exists" in again
    assert bucket in [b["Name"] for b in s3.list_buckets()["Buckets"]]
    container, url = start_server(images, deployment, endpoint, data)
    try:
        yield container, url, data
    finally:
        container.remove(force=True)


def test_server_runs_restricted_and_keeps_its_database_on_the_volume(served):
    container, _, data = served
    host = container.attrs["HostConfig"]  # what the engine was told, from the engine itself
    assert (
        host["ReadonlyRootfs"] is True and host["CapDrop"] and "no-new-privileges" in str(host["SecurityOpt"])
    )
    assert container.exec_run(["id", "-u"]).output.decode().strip() == "1000"
    # nothing writable but the pod's volumes (uid 1000 owns /home/kfp; /var/tmp and /run are the engine's, not mounted)
    assert (
        container.exec_run(["sh", "-c", "touch /home/kfp/x || touch /var/tmp/x || touch /run/x"]).exit_code
        != 0
    )
    assert (data / "mlflow.db").stat().st_size > 0  # runs and registry: on the volume, not in the container


def test_server_answers_the_in_cluster_host_name_and_refuses_others(served):
    """MLflow 3's host check with the manifest's --allowed-hosts: the pipeline pods' Host header passes, another 403s."""
    _, url, _ = served
    api = f"{url}/api/2.0/mlflow/experiments/search?max_results=1"
    assert httpx.get(api, headers={"Host": IN_CLUSTER_HOST}, timeout=30).status_code == 200
    refused = httpx.get(api, headers={"Host": "attacker.example:5000"}, timeout=30)
    assert refused.status_code == 403, refused.text
    assert httpx.get(f"{url}/health", headers={"Host": "10.244.0.7:5000"}, timeout=30).status_code == 200


def digests(files: dict[str, bytes]) -> dict[str, str]:
    return {name: hashlib.sha256(content).hexdigest() for name, content in sorted(files.items())}


@pytest.fixture(scope="module")
def registered(served, penguins_model):
    """As the pipeline does, through the server: the model logged to a run, registered, made champion."""
    _, url, _ = served
    model_dir, _ = penguins_model
    tracker = Tracker.start(url, experiment=MODEL, run_name="cluster", params={"seed": 42}, tags={})
    tracker.log_metrics({"accuracy": 0.97})
    version = registry.register(tracker, model_dir, MODEL, tags={})
    registry.promote(url, MODEL, version.version, expected=None)
    assert tracker.finish("SUCCEEDED") == "FINISHED"
    return version


def test_registered_version_is_stored_where_kserve_reads_it(
    served, registered, deployment, object_store, penguins_model, tmp_path
):
    """The version's source is proxied (mlflow-artifacts:/), its files are in the bucket where storage_uri() sends
    KServe, the champion downloads through the server, and nothing sent to the object store has the checksums
    KFP's MinIO does not know."""
    _, url, _ = served
    _, seen, s3 = object_store
    model_dir, _ = penguins_model
    assert registered.source.startswith(
        "mlflow-artifacts:/"
    )  # the pipeline's pods need no storage credentials

    destination = server_options(deployment["server"])["artifacts_destination"]
    bucket, _, prefix = (
        registry.storage_uri(registered.source, destination).removeprefix("s3://").partition("/")
    )
    listed = s3.list_objects_v2(Bucket=bucket, Prefix=prefix + "/")["Contents"]
    stored = {
        o["Key"].removeprefix(prefix + "/"): s3.get_object(Bucket=bucket, Key=o["Key"])["Body"].read()
        for o in listed
    }
    assert digests(stored) == digests({p.name: p.read_bytes() for p in model_dir.iterdir()})

    downloaded = registry.download(url, f"models:/{MODEL}@champion", tmp_path / "champion")
    assert digests({p.name: p.read_bytes() for p in downloaded.iterdir()}) == digests(stored)

    # what the server (and the init container) sent the object store: uploads into its bucket, no checksums
    puts = [path for method, path, _ in seen if method == "PUT" and path.startswith(f"/{bucket}/{prefix}/")]
    assert len(puts) == len(stored)
    for method, path, headers in seen:
        checksums = [h for h in headers if h.startswith(CHECKSUM_HEADERS)]
        assert not checksums and "aws-chunked" not in headers.get("content-encoding", ""), (
            method,
            path,
            headers,
        )


def test_a_new_server_on_the_same_volume_has_the_registry(
    served, registered, deployment, object_store, images
):
    """The pod replaced (strategy Recreate: the old one stops first) starts on the claim's database and still has the
    champion. Runs last: it stops the module's server."""
    container, _, data = served
    endpoint, _, _ = object_store
    container.stop(timeout=30)
    again, url = start_server(images, deployment, endpoint, data)
    try:
        after = registry.champion(url, MODEL)
        assert after is not None and (after.version, after.source) == (registered.version, registered.source)
    finally:
        again.remove(force=True)
