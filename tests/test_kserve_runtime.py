"""What KServe does with a blessed model on the cluster, proven piece by piece on one machine.

1. **The storage initializer.** KServe v0.20.0's own code for it (the ``kserve-storage`` package is what its
   init container runs) downloads the model from an S3 API on 127.0.0.1 (moto) into a directory, configured
   as KServe's pod webhook configures that init container for our InferenceService: its service account's
   Secret (``manifests/base/storage.yaml``) gives the credentials and, through its annotations, the endpoint,
   scheme and region. The only value changed is the endpoint's address (in-cluster MinIO -> moto on 127.0.0.1).
2. **The runtime.** The serving image serves that directory exactly as the ClusterServingRuntime in
   ``manifests/`` says: its args with ``{{.Name}}`` filled in, its securityContext (uid 1000, read-only root
   file system, no privilege escalation, every capability dropped), its env, its /tmp volume, the
   InferenceService's resource limits, the model mounted read-only at /mnt/models; its readiness and liveness
   probes' paths answer, and so do predictions. Every value is read from the rendered manifests.

The container runs in a network namespace of its own (no port of the host is used), so probes and requests go
to its loopback from inside it, as the kubelet's go to the pod's address.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from components.common.servable import ServableModel
from components.deploy.kserve import CONTAINER, KServeSettings, inference_service
from components.images import SERVING_IMAGE
from components.registry.models import storage_uri
from tests.test_manifests import render
from tests.test_serving_server import features

NAME = "penguins-species"  # the InferenceService's name: what KServe puts for {{.Name}}
# A registered version's files, as the cluster's MLflow server (proxied artifacts) records their source, and
# the server's --artifacts-destination (manifests/): KServe reads s3://mlflow/<experiment>/<run>/artifacts/model.
VERSION_SOURCE = "mlflow-artifacts:/3/0f1e2d3c4b5a69788796a5b4c3d2e1f0/artifacts/model"
ARTIFACTS_DESTINATION = "s3://mlflow"
MODEL_MOUNT = "/mnt/models"  # KServe mounts the storage initializer's directory here, read-only
# KServe v0.20.0's default inferenceservice-config, "credentials.s3" (config/configmap/inferenceservice.yaml):
# the Secret keys the webhook reads; its other s3 settings are "" there, so only the Secret's annotations count.
S3_ACCESS_KEY_ID_NAME, S3_SECRET_ACCESS_KEY_NAME = "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"
ANNOTATION = "serving.kserve.io/"


def storage_initializer_env(secret: dict) -> dict[str, str]:
    """The environment KServe v0.20.0's webhook gives the storage initializer for an S3 Secret on the predictor's
    service account (pkg/credentials/s3: BuildSecretEnvs, BuildS3EnvVars). The webhook sets the credentials only
    when the Secret holds the configured secret-key entry."""
    data, notes = secret.get("stringData", {}), secret["metadata"].get("annotations", {})
    assert S3_SECRET_ACCESS_KEY_NAME in data and S3_ACCESS_KEY_ID_NAME in data, (
        "KServe's webhook ignores an S3 Secret without these keys"
    )
    env = {
        "AWS_ACCESS_KEY_ID": data[S3_ACCESS_KEY_ID_NAME],
        "AWS_SECRET_ACCESS_KEY": data[S3_SECRET_ACCESS_KEY_NAME],
    }
    endpoint = notes.get(ANNOTATION + "s3-endpoint", "")
    if endpoint:
        if endpoint.startswith(("http://", "https://")):
            https = "1" if endpoint.startswith("https://") else "0"
            url, endpoint = endpoint, endpoint.split("://", 1)[1]
        else:
            https = notes.get(ANNOTATION + "s3-usehttps", "")
            url = ("http://" if https == "0" else "https://") + endpoint
        if https:
            env["S3_USE_HTTPS"] = https
        env |= {"S3_ENDPOINT": endpoint, "AWS_ENDPOINT_URL": url}
    for note, name in [
        ("s3-verifyssl", "S3_VERIFY_SSL"),
        ("s3-useanoncredential", "awsAnonymousCredential"),
        ("s3-region", "AWS_DEFAULT_REGION"),
        ("s3-usevirtualbucket", "S3_USER_VIRTUAL_BUCKET"),
        ("s3-useaccelerate", "S3_USE_ACCELERATE"),
        ("s3-cabundle", "AWS_CA_BUNDLE"),
        ("s3-cabundle-configmap", "AWS_CA_BUNDLE_CONFIGMAP"),
    ]:
        if notes.get(ANNOTATION + note):
            env[name] = notes[ANNOTATION + note]
    return env


@pytest.fixture(scope="module")
def cluster_objects() -> dict[tuple[str, str], dict]:
    return {(o["kind"], o["metadata"]["name"]): o for o in render("manifests/overlays/kind")}


@pytest.fixture(scope="module")
def isvc() -> dict:
    """The InferenceService the deploy step creates for the blessed model's artifact."""
    return inference_service(NAME, storage_uri(VERSION_SOURCE, ARTIFACTS_DESTINATION), KServeSettings())


@pytest.fixture(scope="module")
def s3_server():
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    yield "{}:{}".format(*server.get_host_and_port())
    server.stop()


@pytest.fixture(scope="module")
def downloaded(penguins_model, cluster_objects, isvc, s3_server, tmp_path_factory) -> dict:
    """The blessed model, put into the S3 API where the MLflow server keeps a version's files, then fetched by KServe's storage
    initializer as the webhook configures it: the directory it wrote, and what it ran with."""
    import boto3

    model_dir, test_split = penguins_model
    predictor = isvc["spec"]["predictor"]
    account = cluster_objects[("ServiceAccount", predictor["serviceAccountName"])]
    (secret,) = [cluster_objects[("Secret", ref["name"])] for ref in account["secrets"]]
    env = storage_initializer_env(secret)
    in_cluster = env["S3_ENDPOINT"]
    assert in_cluster == "minio-service.kubeflow.svc.cluster.local:9000"  # KFP standalone's MinIO
    env["S3_ENDPOINT"] = s3_server
    env["AWS_ENDPOINT_URL"] = env["AWS_ENDPOINT_URL"].replace(in_cluster, s3_server)

    storage_uri = predictor["model"]["storageUri"]
    bucket, _, prefix = storage_uri.removeprefix("s3://").partition("/")
    s3 = boto3.client(
        "s3",
        endpoint_url=env["AWS_ENDPOINT_URL"],
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        region_name=env["AWS_DEFAULT_REGION"],
    )
    s3.create_bucket(Bucket=bucket)
    for path in model_dir.iterdir():
        s3.upload_file(str(path), bucket, f"{prefix}/{path.name}")
    # the run's other artifacts sit next to the model. (KServe selects objects by key prefix: an artifact named,
    # say, "model_card" would be downloaded with "model"; the run logs none.)
    s3.put_object(Bucket=bucket, Key=f"{prefix.rsplit('/', 1)[0]}/validate/report.md", Body=b"# report")

    target = tmp_path_factory.mktemp("kserve-provision-location") / "models"
    # initializer-entrypoint's work: make the destination, then Storage.download_files(uris, destinations)
    entrypoint = (
        "import os, sys; from kserve_storage import Storage; "
        "os.makedirs(sys.argv[2], exist_ok=True); Storage.download_files([sys.argv[1]], [sys.argv[2]])"
    )
    clean = {"PATH": os.environ["PATH"], "HOME": str(target.parent)} | env  # nothing else from this machine
    proc = subprocess.run(
        [sys.executable, "-c", entrypoint, storage_uri, str(target)],
        env=clean,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {"dir": target, "env": env, "source": model_dir, "storage_uri": storage_uri, "test": test_split}


def test_storage_initializer_fetches_the_blessed_model_as_kserves_webhook_configures_it(downloaded):
    env = downloaded["env"]
    # what our Secret's annotations make of the endpoint: plain HTTP to KFP's MinIO, its region, real credentials
    assert env["S3_USE_HTTPS"] == "0" and env["AWS_ENDPOINT_URL"].startswith("http://127.0.0.1:")
    assert env["AWS_DEFAULT_REGION"] == "us-east-1" and env["awsAnonymousCredential"] == "false"
    assert downloaded["storage_uri"] == "s3://mlflow/3/0f1e2d3c4b5a69788796a5b4c3d2e1f0/artifacts/model"

    def digests(folder: Path) -> dict[str, str]:
        return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}

    assert digests(downloaded["dir"]) == digests(downloaded["source"])  # exactly the model, not its sibling
    ServableModel.load(downloaded["dir"])  # checks model.joblib's sha256 and the package versions


# --- the runtime -------------------------------------------------------------------------------------------

# Asked from inside the container (its loopback): prints the HTTP status, then the body.
HTTP_FROM_INSIDE = """
import sys, urllib.error, urllib.request
body = sys.argv[2].encode() if len(sys.argv) > 2 else None
request = urllib.request.Request(sys.argv[1], data=body, headers={"content-type": "application/json"})
try:
    with urllib.request.urlopen(request, timeout=5) as answer:
        print(answer.status); print(answer.read().decode())
except urllib.error.HTTPError as error:
    print(error.code); print(error.read().decode())
except OSError as error:
    print(0); print(error)
"""


def runtime_container(cluster_objects: dict, isvc: dict) -> tuple[dict, list[dict]]:
    """The predictor container as KServe builds it: the runtime's container with {{.Name}} filled in, the
    InferenceService's resources over the runtime's; and the runtime's volumes."""
    runtime = cluster_objects[("ClusterServingRuntime", isvc["spec"]["predictor"]["model"]["runtime"])]
    (container,) = runtime["spec"]["containers"]
    assert container["name"] == CONTAINER
    container = json.loads(json.dumps(container).replace("{{.Name}}", isvc["metadata"]["name"]))
    container["resources"] = isvc["spec"]["predictor"]["model"]["resources"]
    return container, runtime["spec"].get("volumes", [])


def engine_options(container: dict, volumes: list[dict], model_dir: Path) -> dict:
    """docker/podman options for the container spec; a field this does not know fails the test."""
    security = dict(container["securityContext"])
    assert security.pop("runAsNonRoot") is True and security["runAsUser"] != 0
    options = {
        "user": str(security.pop("runAsUser")),
        "read_only": security.pop("readOnlyRootFilesystem"),
        "cap_drop": security.pop("capabilities")["drop"],
        "security_opt": [] if security.pop("allowPrivilegeEscalation") else ["no-new-privileges"],
    }
    assert security.pop("seccompProfile") == {"type": "RuntimeDefault"}  # the engine's default profile
    assert not security, f"securityContext fields this test does not apply: {security}"
    empty_dirs = {v["name"] for v in volumes if "emptyDir" in v}
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert set(mounts.values()) <= empty_dirs
    limits = container["resources"]["limits"]
    memory = limits["memory"]
    assert memory.endswith("Gi")
    return (
        options
        | {
            "command": container["args"],  # KServe sets args: the image's entrypoint stays
            "environment": {e["name"]: e["value"] for e in container.get("env", [])},
            "tmpfs": dict.fromkeys(mounts, ""),  # emptyDir volumes
            "volumes": {str(model_dir): {"bind": MODEL_MOUNT, "mode": "ro"}},
            "mem_limit": f"{int(float(memory[:-2]) * 1024)}m",
            "nano_cpus": int(float(limits["cpu"]) * 1e9),
            "network_mode": "none",
        }
    )


@pytest.mark.containers
@pytest.mark.slow
def test_serving_image_runs_as_the_cluster_serving_runtime_says(images, cluster_objects, isvc, downloaded):
    container, volumes = runtime_container(cluster_objects, isvc)
    assert container["image"] == SERVING_IMAGE
    args = dict(arg.split("=", 1) for arg in container["args"])
    assert args["--model_name"] == NAME and args["--model_dir"] == MODEL_MOUNT
    port = container["ports"][0]["containerPort"]
    assert int(args["--http_port"]) == port == container["readinessProbe"]["httpGet"]["port"]
    options = engine_options(container, volumes, downloaded["dir"])
    server = images.containers.run(SERVING_IMAGE, detach=True, **options)

    def ask(path: str, body: dict | None = None) -> tuple[int, str]:
        argv = ["python", "-c", HTTP_FROM_INSIDE, f"http://127.0.0.1:{port}{path}"]
        out = server.exec_run(argv + ([json.dumps(body)] if body is not None else [])).output.decode()
        status, _, text = out.partition("\n")
        return int(status), text

    try:
        host = server.attrs["HostConfig"]  # what the engine was told, from the engine itself
        assert (
            host["ReadonlyRootfs"] is True
            and host["CapDrop"]
            and "no-new-privileges" in str(host["SecurityOpt"])
        )
        readiness = container["readinessProbe"]["httpGet"]["path"]
        assert readiness == f"/v2/models/{NAME}/ready"
        deadline = time.monotonic() + 90
        while (status := ask(readiness)[0]) != 200:
            server.reload()
            logs = server.logs().decode()[-3000:]
            assert server.status == "running" and time.monotonic() < deadline, f"readiness {status}\n{logs}"
            time.sleep(0.5)
        assert ask(container["livenessProbe"]["httpGet"]["path"])[0] == 200

        model = ServableModel.load(downloaded["dir"])
        test = pd.read_parquet(downloaded["test"]).head(5)
        status, text = ask(
            f"/v1/models/{NAME}:predict", {"instances": features(model, test).to_dict("records")}
        )
        assert status == 200, text
        labels = [p["label"] for p in json.loads(text)["predictions"]]
        assert labels == [str(v) for v in model.predict(test)]

        whoami = server.exec_run(["id", "-u"]).output.decode().strip()
        writable = server.exec_run(["sh", "-c", f"touch /app/x || touch {MODEL_MOUNT}/x"]).exit_code
        assert whoami == "1000" and writable != 0  # uid 1000; neither the image nor the model is writable
    finally:
        server.remove(force=True)
