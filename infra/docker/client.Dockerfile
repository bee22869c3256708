# The scoring client and the log sidecar: one image, two commands (`modelops traffic`, `modelops ship`).
# No TensorFlow, Prefect or MLflow inside: only what replay and shipping need (~200 MB).
# Build from the repository root:
#   docker build -f infra/docker/client.Dockerfile -t modelops/client:latest .
# Run (two processes sharing a spool directory, as the pod in infra/k8s/client/ does):
#   docker run --network=host -v spool:/spool modelops/client traffic --period 1 --url http://127.0.0.1:8501
#   docker run --network=host -v spool:/spool -e MODELOPS_DATABASE_URL=postgresql://… modelops/client ship
ARG PYTHON_IMAGE=python:3.11-slim-bookworm
FROM ${PYTHON_IMAGE}

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    MODELOPS_SPOOL=/spool

WORKDIR /app
COPY requirements/constraints.txt requirements/constraints.txt
# The client/sidecar subset of the project's dependencies, at the versions tested together.
RUN pip install -c requirements/constraints.txt \
        "psycopg2-binary" "httpx" "orjson" "numpy" "pandas" "pydantic" "PyYAML"

COPY pyproject.toml ./
COPY modelops modelops
COPY infra/sql infra/sql
COPY infra/config infra/config
# Editable, without dependencies: the code finds infra/sql and infra/config beside it under /app.
RUN pip install --no-deps -e . \
    && mkdir -p /spool \
    && chown 10001:0 /spool && chmod 0775 /spool

# Numeric non-root user (runAsNonRoot can verify it; OpenShift's random UID in group 0 works too).
USER 10001:0
VOLUME ["/spool"]
ENTRYPOINT ["modelops"]
CMD ["ship", "--spool", "/spool"]
