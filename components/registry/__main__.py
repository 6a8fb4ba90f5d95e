"""The registry from the command line: ``python -m components.registry <command>``.

    python -m components.registry versions --model-name penguins-species      # versions, champion, history
    python -m components.registry rollback --model-name penguins-species      # champion -> the one before
    python -m components.registry rollback --model-name penguins-species --to 3

``--tracking-uri`` defaults to ``$MLFLOW_TRACKING_URI``, else the local store ``./mlflow``. A running
local model server (``make serve``) follows the champion and serves the rolled-back version within
seconds. With ``--deploy-target kserve`` the InferenceService is also pointed back at that version's
files (``--artifacts-destination``: the tracking server's artifact store), and waited for.
"""

from __future__ import annotations

import argparse
import os
import sys

from components.common.errors import KfpTabularError
from components.registry import models as registry
from components.registry.tracking import client, local_store

LOCAL_STORE = "mlflow"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m components.registry", description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=["versions", "rollback"])
    parser.add_argument("--model-name", required=True)
    parser.add_argument("--tracking-uri", default=os.environ.get("MLFLOW_TRACKING_URI", ""))
    parser.add_argument("--to", help="rollback: the version to make champion (default: the one before)")
    parser.add_argument("--deploy-target", choices=["local", "kserve"], default="local")
    parser.add_argument("--kserve-namespace", default="kfp-tabular")
    parser.add_argument("--artifacts-destination", default="s3://mlflow")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    uri = args.tracking_uri or local_store(LOCAL_STORE)
    try:
        if args.command == "versions":
            mlflow_client = client(uri)
            current = registry.champion(uri, args.model_name, mlflow_client)
            for mv in sorted(
                mlflow_client.search_model_versions(f"name = '{args.model_name}'"),
                key=lambda v: int(v.version),
            ):
                mark = "  <- champion" if current and str(mv.version) == current.version else ""
                print(f"version {mv.version}  run {mv.run_id}  sha256 {mv.tags.get('sha256', '')[:12]}{mark}")
            print(f"champion history: {registry.history(uri, args.model_name, mlflow_client)}")
            return 0
        before, after = registry.rollback(uri, args.model_name, args.to)
        print(f"{args.model_name}: champion version {before} -> {after}")
        if args.deploy_target == "kserve":
            point_inference_service(args, uri, after)
        else:
            print("a running `make serve` follows the champion: it serves the new one within seconds")
        return 0
    except KfpTabularError as exc:
        print(f"kfp-tabular registry: {exc}", file=sys.stderr)
        return 1


def point_inference_service(args: argparse.Namespace, uri: str, version: str) -> None:
    """Point the InferenceService at ``version``'s files and wait until it serves them."""
    import requests
    from kubernetes import client as k8s
    from kubernetes import config

    from components.deploy.kserve import KServeSettings, deploy_kserve

    target = registry.resolve(uri, f"models:/{args.model_name}/{version}")
    storage = registry.storage_uri(target.source, args.artifacts_destination)
    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    result = deploy_kserve(
        name=args.model_name,
        storage_uri=storage,
        settings=KServeSettings(namespace=args.kserve_namespace),
        api=k8s.CustomObjectsApi(),
        smoke_rows=[],
        expected=[],
        post=lambda url, body: requests.post(url, json=body, timeout=30),
    )
    print(
        f"InferenceService {args.kserve_namespace}/{args.model_name} -> {storage}: {result.status} ({result.url})"
    )


if __name__ == "__main__":
    sys.exit(main())
