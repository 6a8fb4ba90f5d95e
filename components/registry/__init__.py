"""MLflow tracking and model registry helpers (plain Python over ``MlflowClient``; no KFP)."""
