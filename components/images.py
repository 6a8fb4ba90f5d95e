"""Container images the compiled pipeline refers to (built by `make images`).

Set ``KFP_TABULAR_REGISTRY`` / ``KFP_TABULAR_TAG`` when compiling to point the YAML at your registry.
"""

import os

REGISTRY = os.environ.get("KFP_TABULAR_REGISTRY", "ghcr.io/kfp-tabular")
TAG = os.environ.get("KFP_TABULAR_TAG", "0.1.0")
PIPELINE_IMAGE = f"{REGISTRY}/pipeline:{TAG}"
SERVING_IMAGE = f"{REGISTRY}/serving:{TAG}"
