"""Every Prefect task of the loop: thin wrappers, one module per outside system.

A task names a step as the Prefect UI shows it and does one thing through the library in
``modelops/``; the order of the steps is in ``flows/``. All are declared with :func:`tasks.base.task`.

    training      TensorFlow: load data, fit, evaluate
    registry      MLflow: register, resolve versions and aliases, prebuild, promote, tag
    evidence      MLflow + the scoring log: score versions side by side for a reviewer
    image         Docker: build and push the serving image
    serving       the serving target (local process, Docker, Kubernetes, OpenShift): deploy
    scoring_log   PostgreSQL: labelled windows, KS checks, the approvals audit, retraining data
    artifacts     Prefect artifacts: the approval evidence and decision, the KS report
    charts        matplotlib + MLflow's monitoring run: each KS check's charts
    deployments   Prefect deployments: start the lifecycle of a new version
    notify        Microsoft Teams and e-mail
    events        Prefect events (automations react to them)
"""
