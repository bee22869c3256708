"""Every flow of the loop, one module each, importable from Python::

    from flows.train import train
    from flows.lifecycle import lifecycle
    from flows.ks_check import ks_check

Each module holds its flow and only the order of its steps; the steps are the tasks in ``tasks/``.
Importing a flow loads neither TensorFlow nor MLflow: the tasks that need them import them.
(The flows are not re-exported here: ``flows.train`` must stay the module, not the flow.)
"""
