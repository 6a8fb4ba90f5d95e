"""The kfp-tabular pipeline: a raw table to a validated, evaluated, gated and deployed model.

    ingest -> validate (TFDV) -> transform -> train -> evaluate -> [gate] -> deploy

Every parameter is a field of ``components.config.TabularConfig`` with the same name and default.
"""

from kfp import dsl

from components.config import TabularConfig
from components.deploy.component import deploy
from components.evaluate.component import evaluate
from components.ingest.component import ingest
from components.train.component import train
from components.transform.component import transform
from components.validate.component import validate

D = TabularConfig()  # the defaults

# Caching on a KFP cluster, stage by stage. KFP's cache key is a task's input artifacts and parameters, image and
# command: it cannot see anything outside KFP's artifact store, so a stage that reads or changes such state is
# never cached. (Since ingest runs every time and makes new artifacts, a re-run recomputes every stage.)
CACHING = {
    "ingest": False,  # reads source_uri: an s3://, gs:// or http(s):// table can change under the same URI
    "validate": False,  # reads schema_uri: a curated schema can change under the same URI
    "transform": True,  # a function of its input artifacts and parameters alone
    "train": True,  # likewise (a search cut short by max_seconds is still a valid answer for those inputs)
    "evaluate": False,  # reads baseline_model_uri: the model it must beat can change under the same URI
    "deploy": False,  # side effects outside KFP: an InferenceService, a model repository
}



@dsl.pipeline(
    name="kfp-tabular", description="Raw CSV/Parquet table to a validated, evaluated, deployed model."
)
def tabular_pipeline(
    source_uri: str = D.source_uri,
    file_format: str = D.file_format,
    delimiter: str = D.delimiter,
    missing_values: list = D.missing_values,
    target: str = D.target,
    task: str = D.task,
    drop_columns: list = D.drop_columns,
    column_types: dict = D.column_types,
    non_finite: str = D.non_finite,
    eval_fraction: float = D.eval_fraction,
    test_fraction: float = D.test_fraction,
    seed: int = D.seed,
    schema_uri: str = D.schema_uri,
    drift_threshold: float = D.drift_threshold,
    drift_thresholds: dict = D.drift_thresholds,
    drift_action: str = D.drift_action,
    max_categories: int = D.max_categories,
    candidates: list = D.candidates,
    max_trials: int = D.max_trials,
    max_seconds: float = D.max_seconds,
    cv_folds: int = D.cv_folds,
    search_sample_rows: int = D.search_sample_rows,
    thresholds: dict = D.thresholds,
    baseline_model_uri: str = D.baseline_model_uri,
    baseline_tolerance: float = D.baseline_tolerance,
    deploy_target: str = D.deploy_target,
    model_name: str = D.model_name,
    model_repository: str = D.model_repository,
    kserve_namespace: str = D.kserve_namespace,
    kserve_deployment_mode: str = D.kserve_deployment_mode,
    canary_traffic_percent: int = D.canary_traffic_percent,
    deploy_timeout_seconds: float = D.deploy_timeout_seconds,
):
    data = ingest(
        source_uri=source_uri,
        file_format=file_format,
        delimiter=delimiter,
        missing_values=missing_values,
        target=target,
        task=task,
        drop_columns=drop_columns,
        column_types=column_types,
        non_finite=non_finite,
        eval_fraction=eval_fraction,
        test_fraction=test_fraction,
        seed=seed,
        model_name=model_name,
    ).set_caching_options(CACHING["ingest"])
    target_column = data.outputs["target"]  # sanitized name
    name = data.outputs["model_name"]  # model_name, or <source>-<target> when it is empty
    checks = validate(
        train_data=data.outputs["train_data"],
        eval_data=data.outputs["eval_data"],
        test_data=data.outputs["test_data"],
        target=target_column,
        schema_uri=schema_uri,
        drift_threshold=drift_threshold,
        drift_thresholds=drift_thresholds,
        drift_action=drift_action,
        baseline_model_uri=baseline_model_uri,  # compared with the current model's training data
        deploy_target=deploy_target,
        model_repository=model_repository,
        model_name=name,
    ).set_caching_options(CACHING["validate"])
    features = transform(
        train_data=data.outputs["train_data"],
        eval_data=data.outputs["eval_data"],
        target=target_column,
        task=task,
        max_categories=max_categories,
    ).after(checks)  # problems in the data stop the run before anything is fitted
    features.set_caching_options(CACHING["transform"])
    trained = train(
        transformed_train=features.outputs["transformed_train"],
        transformed_eval=features.outputs["transformed_eval"],
        transform_graph=features.outputs["transform_graph"],
        statistics=checks.outputs["statistics"],  # carried in the model: the next run's drift reference
        schema=checks.outputs["schema"],
        candidates=candidates,
        max_trials=max_trials,
        max_seconds=max_seconds,
        cv_folds=cv_folds,
        search_sample_rows=search_sample_rows,
        seed=seed,
    ).set_caching_options(CACHING["train"])
    gate = evaluate(
        model=trained.outputs["model"],
        test_data=data.outputs["test_data"],
        thresholds=thresholds,  # empty: the task's defaults
        baseline_model_uri=baseline_model_uri,
        baseline_tolerance=baseline_tolerance,
    ).set_caching_options(CACHING["evaluate"])
    with dsl.If(gate.outputs["Output"] == True, name="model-blessed"):  # noqa: E712 (a KFP condition, not Python)
        deploy(
            model=trained.outputs["model"],
            test_data=data.outputs["test_data"],  # smoke-test rows (kserve target)
            deploy_target=deploy_target,
            model_name=name,
            model_repository=model_repository,
            kserve_namespace=kserve_namespace,
            kserve_deployment_mode=kserve_deployment_mode,
            canary_traffic_percent=canary_traffic_percent,
            deploy_timeout_seconds=deploy_timeout_seconds,
        ).set_caching_options(CACHING["deploy"])
