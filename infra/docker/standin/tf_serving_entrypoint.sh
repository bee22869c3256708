#!/bin/bash
# Identical in behaviour to tensorflow/serving's /usr/bin/tf_serving_entrypoint.sh: later flags in "$@" win.
exec tensorflow_model_server --port=8500 --rest_api_port=8501 \
  --model_name=${MODEL_NAME} --model_base_path=${MODEL_BASE_PATH}/${MODEL_NAME} "$@"
