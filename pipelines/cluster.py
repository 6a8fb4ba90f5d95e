"""The pipeline on a KFP cluster: upload it as a new pipeline version, start a run, wait for it.

    python -m pipelines.cluster upload                  # pipelines/tabular_pipeline.yaml -> KFP
    python -m pipelines.cluster run --wait --set deploy_target=kserve
    python -m pipelines.cluster predict                 # REST call to the InferenceService
    python -m pipelines.cluster rollback [--to 3]       # champion back, the InferenceService pointed at it

Without ``--host`` it reaches KFP's API through ``kubectl port-forward`` to ``svc/ml-pipeline`` in the
``kubeflow`` namespace (KFP standalone), the model through a port-forward to the predictor Service
the InferenceService's address names, and the MLflow server (``rollback``) through a port-forward to the
Service ``CLUSTER_TRACKING_URI`` names (``manifests/base/mlflow.yaml``). Runs use the ``kfp-tabular-runner`` service account
(``manifests/base/rbac.yaml``): KFP's own pipeline-runner rights in ``kubeflow``, plus the deploy step's
rights on InferenceServices in ``kfp-tabular``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from urllib.parse import urlsplit

import yaml

from components.config import CLUSTER_TRACKING_URI
from pipelines.compile import PIPELINE_YAML

PIPELINE_NAME = "kfp-tabular"
RUN_SERVICE_ACCOUNT = "kfp-tabular-runner"  # manifests/base/rbac.yaml


def need(tool: str) -> str:
    path = shutil.which(tool)
    if not path:
        raise SystemExit(f"error: {tool} not found on PATH (needed to reach the cluster)")
    return path


@contextlib.contextmanager
def port_forward(namespace: str, target: str, remote_port: int) -> Iterator[str]:
    """``kubectl port-forward`` on a free local port for the duration of the block; yields the URL."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [
            need("kubectl"),
            "port-forward",
            "-n",
            namespace,
            target,
            f"{port}:{remote_port}",
            "--address",
            "127.0.0.1",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                raise SystemExit(
                    f"error: kubectl port-forward {namespace}/{target} failed: {proc.stderr.read()}"
                )
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            if time.monotonic() > deadline:
                raise SystemExit(f"error: port-forward to {namespace}/{target} did not open within 30 s")
            time.sleep(0.2)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()


def mlflow_service(tracking_uri: str = CLUSTER_TRACKING_URI) -> tuple[str, str, int]:
    """(namespace, ``svc/<name>``, port) of the in-cluster tracking URI ``http://<name>.<namespace>.svc...:<port>``."""
    uri = urlsplit(tracking_uri)
    name, namespace = uri.hostname.split(".")[:2]
    return namespace, f"svc/{name}", uri.port or 80


@contextlib.contextmanager
def kfp_host(host: str | None) -> Iterator[str]:
    if host:
        yield host
    else:
        with port_forward("kubeflow", "svc/ml-pipeline", 8888) as url:
            yield url


def upload(client, version_name: str) -> tuple[str, str]:
    """The compiled pipeline as the newest version of pipeline "kfp-tabular"; returns (pipeline id, version id).

    The first upload creates the pipeline, and KFP creates its first version from the same file (named after the
    pipeline); a later one adds a version named ``version_name``, unless the newest version already holds exactly
    this pipeline spec: then nothing is uploaded, so uploading twice in a row adds nothing.
    """
    pipeline_id = client.get_pipeline_id(PIPELINE_NAME)
    if pipeline_id is None:
        pipeline_id = client.upload_pipeline(str(PIPELINE_YAML), pipeline_name=PIPELINE_NAME).pipeline_id
        first = newest_version(client, pipeline_id)
        print(
            f"uploaded pipeline {PIPELINE_NAME!r} ({pipeline_id}) "
            f"with its first version {first.display_name!r} ({first.pipeline_version_id})"
        )
        return pipeline_id, first.pipeline_version_id
    newest = newest_version(client, pipeline_id)
    if newest is not None:
        spec = client.get_pipeline_version(pipeline_id, newest.pipeline_version_id).pipeline_spec
        if spec == yaml.safe_load(PIPELINE_YAML.read_text()):
            print(
                f"version {newest.display_name!r} ({newest.pipeline_version_id}) of {PIPELINE_NAME!r} "
                f"already holds {PIPELINE_YAML.name}: nothing uploaded"
            )
            return pipeline_id, newest.pipeline_version_id
    version = client.upload_pipeline_version(
        str(PIPELINE_YAML), pipeline_version_name=version_name, pipeline_id=pipeline_id
    )
    print(f"uploaded version {version_name!r} ({version.pipeline_version_id}) of {PIPELINE_NAME!r}")
    return pipeline_id, version.pipeline_version_id


def newest_version(client, pipeline_id: str):
    """The pipeline's most recently created version, or None."""
    versions = client.list_pipeline_versions(
        pipeline_id, sort_by="created_at desc", page_size=1
    ).pipeline_versions
    return versions[0] if versions else None


def latest_version(client, pipeline_id: str) -> str:
    version = newest_version(client, pipeline_id)
    if version is None:
        raise SystemExit(f"error: pipeline {PIPELINE_NAME!r} has no versions: run `make upload` first")
    return version.pipeline_version_id


def predictor_service(namespace: str, name: str) -> str:
    """The Service behind the InferenceService's address (``<name>-predictor``, or after a Standard-mode
    canary promotion ``<name>-<canary>-predictor``)."""
    from components.deploy.kserve import address_service

    proc = subprocess.run(
        [need("kubectl"), "get", "inferenceservice", name, "-n", namespace, "-o", "json"],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        raise SystemExit(f"error: InferenceService {namespace}/{name}: {proc.stderr.strip()}")
    service = address_service(json.loads(proc.stdout))
    if not service:
        raise SystemExit(f"error: InferenceService {namespace}/{name} has no address yet (is it Ready?)")
    return service


def parse_sets(items: list[str]) -> dict:
    params = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"error: --set takes NAME=VALUE, not {item!r}")
        try:
            params[key] = json.loads(value)
        except json.JSONDecodeError:
            params[key] = value
    return params


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=["upload", "run", "predict", "rollback"])
    parser.add_argument("--host", help="KFP API URL (default: port-forward to kubeflow/svc/ml-pipeline)")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", help="pipeline parameter")
    parser.add_argument("--wait", action="store_true", help="wait for the run to finish")
    parser.add_argument("--timeout", type=int, default=3600)
    parser.add_argument("--model_name", default="penguins-species")
    parser.add_argument("--namespace", default="kfp-tabular")
    parser.add_argument(
        "--service_account",
        default=RUN_SERVICE_ACCOUNT,
        help="the run's Kubernetes service account, in KFP's namespace (default: %(default)s)",
    )
    parser.add_argument("--to", help="rollback: the version to make champion (default: the one before)")
    args = parser.parse_args(argv)

    if args.command == "rollback":
        from components.registry.__main__ import main as registry

        namespace, service, port = mlflow_service()
        with port_forward(namespace, service, port) as url:
            return registry(
                [
                    "rollback",
                    "--model-name",
                    args.model_name,
                    "--tracking-uri",
                    url,
                    "--deploy-target",
                    "kserve",
                ]
                + ["--kserve-namespace", args.namespace]
                + (["--to", args.to] if args.to else [])
            )

    if args.command == "predict":
        from components.serving.example_request import main as example

        service = predictor_service(args.namespace, args.model_name)
        with port_forward(args.namespace, f"svc/{service}", 80) as url:
            return example(["--url", url, "--model_name", args.model_name])

    import kfp

    with kfp_host(args.host) as host:
        client = kfp.Client(host=host)
        if args.command == "upload":
            upload(client, f"{dt.datetime.now(dt.UTC):%Y%m%d-%H%M%S}")
            return 0
        pipeline_id = client.get_pipeline_id(PIPELINE_NAME)
        if pipeline_id is None:
            raise SystemExit(f"error: no pipeline {PIPELINE_NAME!r} on {host}: run `make upload` first")
        params = {"deploy_target": "kserve", "model_name": args.model_name, **parse_sets(args.set)}
        experiment = client.create_experiment(PIPELINE_NAME)
        run = client.run_pipeline(
            experiment_id=experiment.experiment_id,
            job_name=f"{PIPELINE_NAME}-{dt.datetime.now(dt.UTC):%Y%m%d-%H%M%S}",
            pipeline_id=pipeline_id,
            version_id=latest_version(client, pipeline_id),
            params=params,
            service_account=args.service_account,
        )
        print(f"started run {run.run_id} as {args.service_account} with {params}")
        if not args.wait:
            return 0
        finished = client.wait_for_run_completion(run.run_id, timeout=args.timeout)
        state = str(finished.state)
        print(f"run {run.run_id} finished: {state}")
        return 0 if state.upper().endswith("SUCCEEDED") else 1


if __name__ == "__main__":
    sys.exit(main())
