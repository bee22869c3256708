# The flow image: the project, TensorFlow, MLflow, Prefect and infra/ (environment configs, SQL,
# the serving Dockerfile, Kubernetes manifests) at /opt/modelops, so a flow run in a container needs no
# checkout. prefect.docker.yaml builds and pushes it with prefect-docker's build_docker_image /
# push_docker_image steps (`modelops up --config docker` runs them); by hand, from the repository root:
#   docker build --network=host -f infra/docker/flow.Dockerfile --build-arg BASE_IMAGE=python:3.11-slim \
#     -t registry.example.com/team/modelops-flows:dev .
# BASE_IMAGE: python:3.11-slim in production; on machines without Docker Hub the stand-in
# modelops/python-standin:3.11-slim (infra/docker/standin/build-python-standin.sh).
# Layers: the dependencies (from pyproject.toml, pinned by requirements/constraints.txt) come before the
# project's code, so a code change rebuilds only the last layers (seconds).
ARG BASE_IMAGE=python:3.11-slim

# The dependency list alone: this stage re-runs whenever pyproject.toml changes, but its output is the
# same file unless the dependencies changed, so the install layer below stays cached.
FROM ${BASE_IMAGE} AS requirements
COPY pyproject.toml /src/pyproject.toml
RUN python3 -c "import tomllib; deps = tomllib.load(open('/src/pyproject.toml', 'rb'))['project']['dependencies']; open('/src/requirements.txt', 'w').write(chr(10).join(deps) + chr(10))"

FROM ${BASE_IMAGE}
ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
RUN python3 -m venv /opt/venv
COPY requirements/constraints.txt /opt/modelops/requirements/constraints.txt
COPY --from=requirements /src/requirements.txt /opt/modelops/requirements/flow-image.txt
RUN pip install -r /opt/modelops/requirements/flow-image.txt -c /opt/modelops/requirements/constraints.txt

# A writable home for a numeric non-root user (group 0, so OpenShift's random UID can write it too).
# MODELOPS_STACK__HOME: where a flow run keeps its downloads (models/); PREFECT_HOME: Prefect's files.
ENV HOME=/home/modelops \
    PREFECT_HOME=/home/modelops/.prefect \
    MODELOPS_STACK__HOME=/home/modelops/stack \
    PYTHONPATH=/opt/modelops \
    TF_CPP_MIN_LOG_LEVEL=2
RUN mkdir -p /home/modelops/.prefect /home/modelops/stack \
    && chown -R 10001:0 /home/modelops && chmod -R 0775 /home/modelops
COPY pyproject.toml /opt/modelops/pyproject.toml
COPY infra /opt/modelops/infra
COPY modelops /opt/modelops/modelops
COPY tasks /opt/modelops/tasks
COPY flows /opt/modelops/flows
WORKDIR /opt/modelops
USER 10001:0
# The Docker worker starts each flow run with its own command (python -m prefect.engine); this default
# only says what the image holds.
CMD ["python", "-c", "import modelops, prefect, mlflow, tensorflow; print('modelops flow image')"]
