# The local stand-in for tensorflow/serving: same entrypoint, same flags, same REST API, same layout
# (/models/<MODEL_NAME>/<version>), served by this project's TF-Serving-compatible server.
# Built by build-standin.sh; never pushed anywhere but the local registry.
ARG RUNTIME_IMAGE=modelops/standin-runtime:py311-tf2.21.0
FROM ${RUNTIME_IMAGE}
COPY modelops /opt/standin/app/modelops
COPY infra/config /opt/standin/app/infra/config
COPY tensorflow_model_server /usr/bin/tensorflow_model_server
COPY tf_serving_entrypoint.sh /usr/bin/tf_serving_entrypoint.sh
ENV PYTHONPATH=/opt/standin/app:/opt/standin/site-packages \
    MODEL_BASE_PATH=/models \
    MODEL_NAME=model \
    TF_CPP_MIN_LOG_LEVEL=2 \
    HOME=/tmp
RUN chmod 0755 /usr/bin/tensorflow_model_server /usr/bin/tf_serving_entrypoint.sh && mkdir -p /models
EXPOSE 8500 8501
ENTRYPOINT ["/usr/bin/tf_serving_entrypoint.sh"]
