"""Deployment: dispatch to a deploy target. ``local`` publishes into a local model repository."""

from __future__ import annotations

from components.common.errors import ConfigError
from components.deploy.local import Publication, publish_local

TARGETS = ("local",)


def deploy(
    *, model_dir: str, deploy_target: str, model_name: str, model_repository: str, source_uri: str = ""
) -> Publication:
    if deploy_target == "local":
        return publish_local(
            model_dir=model_dir,
            repository=model_repository,
            model_name=model_name,
            deployment={"target": "local", "source_uri": source_uri},
        )
    raise ConfigError(f"unknown deploy_target {deploy_target!r}; available: {list(TARGETS)}")
