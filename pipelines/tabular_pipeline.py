"""The kfp-tabular pipeline: a raw table to a validated, evaluated, gated, registered and deployed model.

    start_run -> ingest -> validate (TFDV) -> transform -> train -> evaluate -> [gate] -> register -> deploy
                                                          (end_run, always: the MLflow run's status)

Every parameter is a field of ``components.config.TabularConfig`` with the same name and default. One
MLflow run (experiment: the model's name) records every stage; the registry's ``champion`` is what
validation and evaluation compare with and what deployment replaces.
"""

from kfp import dsl

from components.config import TabularConfig
from components.deploy.component import deploy
from components.evaluate.component import evaluate
from components.images import PIPELINE_IMAGE
from components.ingest.component import ingest
from components.register.component import register
from components.track.component import end_run, start_run
from components.train.component import train
from components.transform.component import transform
from components.validate.component import validate

D = TabularConfig()  # the defaults

# Caching on a KFP cluster, stage by stage. KFP's cache key is a task's input artifacts and parameters, image and
# command: it cannot see anything outside KFP's artifact store, so a stage that reads or changes such state is
# never cached. (Since ingest runs every time and makes new artifacts, a re-run recomputes every stage.)
CACHING = {
    "start_run": False,  # opens a new MLflow run and reads the registry's champion
    "ingest": False,  # reads source_uri: an s3://, gs:// or http(s):// table can change under the same URI
    "validate": False,  # reads schema_uri and the champion: both can change under the same URI
    "transform": True,  # a function of its input artifacts and parameters alone
    "train": True,  # likewise (a search cut short by max_seconds is still a valid answer for those inputs)
    "evaluate": False,  # reads the champion: the model it must beat can change under the same URI
    "register": False,  # side effects outside KFP: a new registry version
    "deploy": False,  # side effects outside KFP: the champion alias, an InferenceService
    "end_run": False,  # side effects outside KFP: the MLflow run's status
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
    ensemble_size: int = D.ensemble_size,
    thresholds: dict = D.thresholds,
    baseline_model_uri: str = D.baseline_model_uri,
    baseline_tolerance: float = D.baseline_tolerance,
    deploy_target: str = D.deploy_target,
    model_name: str = D.model_name,
    kserve_namespace: str = D.kserve_namespace,
    kserve_deployment_mode: str = D.kserve_deployment_mode,
    canary_traffic_percent: int = D.canary_traffic_percent,
    deploy_timeout_seconds: float = D.deploy_timeout_seconds,
    mlflow_tracking_uri: str = D.mlflow_tracking_uri,
    mlflow_artifacts_destination: str = D.mlflow_artifacts_destination,
):
    run = start_run(
        mlflow_tracking_uri=mlflow_tracking_uri,
        source_uri=source_uri,
        target=target,
        task=task,
        model_name=model_name,
        baseline_model_uri=baseline_model_uri,
        pipeline_image=PIPELINE_IMAGE,  # recorded as a tag: which image ran this
    ).set_caching_options(CACHING["start_run"])
    name = run.outputs["model_name"]  # model_name, or <source>-<target> when it is empty
    champion = run.outputs["champion_uri"]  # what this run is compared with ("" on a first run)
    tracking = {"mlflow_tracking_uri": mlflow_tracking_uri, "mlflow_run_id": run.outputs["run_id"]}
    finish = end_run(
        mlflow_tracking_uri=mlflow_tracking_uri, source_uri=source_uri, target=target, model_name=model_name
    )
    finish.set_caching_options(CACHING["end_run"])
    with dsl.ExitHandler(finish, name="tracked-run"):
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
            **tracking,
        ).set_caching_options(CACHING["ingest"])
        target_column = data.outputs["target"]  # sanitized name
        checks = validate(
            train_data=data.outputs["train_data"],
            eval_data=data.outputs["eval_data"],
            test_data=data.outputs["test_data"],
            target=target_column,
            schema_uri=schema_uri,
            drift_threshold=drift_threshold,
            drift_thresholds=drift_thresholds,
            drift_action=drift_action,
            champion_uri=champion,  # drift against the data the champion was trained on
            **tracking,
        ).set_caching_options(CACHING["validate"])
        features = transform(
            train_data=data.outputs["train_data"],
            eval_data=data.outputs["eval_data"],
            target=target_column,
            task=task,
            max_categories=max_categories,
            **tracking,
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
            ensemble_size=ensemble_size,
            seed=seed,
            **tracking,
        ).set_caching_options(CACHING["train"])
        gate = evaluate(
            model=trained.outputs["model"],
            test_data=data.outputs["test_data"],
            thresholds=thresholds,  # empty: the task's defaults
            champion_uri=champion,  # the candidate must be no worse than the champion on this test split
            baseline_tolerance=baseline_tolerance,
            **tracking,
        ).set_caching_options(CACHING["evaluate"])
        with dsl.If(gate.outputs["Output"] == True, name="model-blessed"):  # noqa: E712 (a KFP condition)
            version = register(model=trained.outputs["model"], model_name=name, **tracking)
            version.set_caching_options(CACHING["register"])
            deploy(
                model=trained.outputs["model"],
                test_data=data.outputs["test_data"],  # smoke-test rows (kserve target)
                version=version.outputs["version"],
                source=version.outputs["source"],
                champion_version=run.outputs["champion_version"],  # moves only if still the champion
                deploy_target=deploy_target,
                model_name=name,
                kserve_namespace=kserve_namespace,
                kserve_deployment_mode=kserve_deployment_mode,
                canary_traffic_percent=canary_traffic_percent,
                deploy_timeout_seconds=deploy_timeout_seconds,
                mlflow_artifacts_destination=mlflow_artifacts_destination,
                **tracking,
            ).set_caching_options(CACHING["deploy"])
