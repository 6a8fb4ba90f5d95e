"""Registration: a blessed model becomes a new version of the registered model, linked to its run."""

from __future__ import annotations

from components.common.logs import get_logger
from components.registry.models import Version, register
from components.registry.tracking import Tracker

log = get_logger("register")


def register_model(*, tracking_uri: str, run_id: str, model_dir: str, model_name: str) -> Version:
    """Log the servable directory into the run and register it as a new version of ``model_name``.

    The version is not the champion yet: deployment moves ``champion`` once the model serves.
    """
    tracker = Tracker(tracking_uri, run_id)
    data_sha256 = tracker.client.get_run(run_id).data.tags.get("kfp_tabular.data_sha256", "")
    version = register(
        tracker, model_dir, model_name, tags={"run_id": run_id, "data_sha256": data_sha256, "blessed": "true"}
    )
    tracker.set_tags({"kfp_tabular.registered_version": version.version})
    return version
