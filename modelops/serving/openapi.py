"""OpenAPI 3.0 description of the served TF Serving REST API, built from the loaded signatures.

The request schemas name the served model's actual inputs (number or string per input dtype), so
a fuzzer (schemathesis/hypothesis) generates both valid and invalid requests. Missing numbers are
sent as the JSON token ``NaN``, which JSON Schema cannot describe; the schema lists plain numbers.
"""

from __future__ import annotations

from typing import Any

from modelops.serving.predict_request import InputSpec
from modelops.serving.repository import ModelRepository

_ERROR = {
    "description": "client mistake; the body names the problem and the fix",
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "required": ["error"],
                "properties": {"error": {"type": "string"}},
            }
        }
    },
}


def _value_schema(spec: InputSpec) -> dict[str, Any]:
    scalar: dict[str, Any]
    if spec.kind == "float":
        scalar = {"type": "number"}
    elif spec.kind == "int":
        scalar = {"type": "integer"}
    elif spec.kind == "bool":
        scalar = {"type": "boolean"}
    else:
        scalar = {"type": "string"}
    for _ in spec.shape[1:]:
        scalar = {"type": "array", "items": scalar}
    return scalar


def openapi_document(repository: ModelRepository, max_batch_size: int) -> dict[str, Any]:
    served = repository.default_version
    runner = served.signatures.get("serving_default") or next(iter(served.signatures.values()))
    instance = {
        "type": "object",
        "required": [spec.name for spec in runner.inputs],
        "additionalProperties": False,
        "properties": {spec.name: _value_schema(spec) for spec in runner.inputs},
    }
    batch = {"minItems": 1, "maxItems": max_batch_size}
    predict_body = {
        "oneOf": [
            {
                "type": "object",
                "required": ["instances"],
                "additionalProperties": False,
                "properties": {
                    "signature_name": {"type": "string", "enum": sorted(served.signatures)},
                    "instances": {"type": "array", "items": instance, **batch},
                },
            },
            {
                "type": "object",
                "required": ["inputs"],
                "additionalProperties": False,
                "properties": {
                    "signature_name": {"type": "string", "enum": sorted(served.signatures)},
                    "inputs": {
                        "type": "object",
                        "required": [spec.name for spec in runner.inputs],
                        "additionalProperties": False,
                        "properties": {
                            spec.name: {"type": "array", "items": _value_schema(spec), **batch}
                            for spec in runner.inputs
                        },
                    },
                },
            },
        ]
    }
    model_param = {
        "name": "model_name",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "example": repository.model_name},
    }
    version_param = {
        "name": "version",
        "in": "path",
        "required": True,
        "schema": {"type": "integer", "minimum": 0, "example": served.version},
    }
    status_schema = {
        "type": "object",
        "required": ["model_version_status"],
        "properties": {
            "model_version_status": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["version", "state", "status"],
                    "properties": {
                        "version": {"type": "string"},
                        "state": {"type": "string", "enum": ["AVAILABLE"]},
                        "status": {
                            "type": "object",
                            "properties": {
                                "error_code": {"type": "string"},
                                "error_message": {"type": "string"},
                            },
                        },
                    },
                },
            }
        },
    }
    predict_response = {
        "type": "object",
        "properties": {"predictions": {"type": "array"}, "outputs": {}},
    }
    metadata_schema = {
        "type": "object",
        "required": ["model_spec", "metadata"],
        "properties": {"model_spec": {"type": "object"}, "metadata": {"type": "object"}},
    }

    def get(summary: str, schema: dict[str, Any], params: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "get": {
                "summary": summary,
                "parameters": params,
                "responses": {
                    "200": {"description": "OK", "content": {"application/json": {"schema": schema}}},
                    "404": _ERROR,
                    "405": _ERROR,
                },
            }
        }

    def predict(params: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "post": {
                "summary": "score records (row format 'instances' or columnar 'inputs')",
                "parameters": params,
                "requestBody": {"required": True, "content": {"application/json": {"schema": predict_body}}},
                "responses": {
                    "200": {
                        "description": "scores",
                        "content": {"application/json": {"schema": predict_response}},
                    },
                    "400": _ERROR,
                    "404": _ERROR,
                    "405": _ERROR,
                    "413": _ERROR,
                },
            }
        }

    one, versioned = [model_param], [model_param, version_param]
    return {
        "openapi": "3.0.3",
        "info": {
            "title": f"TensorFlow Serving REST API for {repository.model_name}",
            "version": "1",
            "description": "Local TF-Serving-compatible server (modelops serve). Missing numbers: NaN token; "
            'missing categories: "". null is rejected, as by TensorFlow Serving.',
        },
        "paths": {
            "/v1/models/{model_name}": get("model version status", status_schema, one),
            "/v1/models/{model_name}/versions/{version}": get(
                "one version's status", status_schema, versioned
            ),
            "/v1/models/{model_name}/metadata": get("signature metadata", metadata_schema, one),
            "/v1/models/{model_name}/versions/{version}/metadata": get(
                "one version's signature metadata", metadata_schema, versioned
            ),
            "/v1/models/{model_name}:predict": predict(one),
            "/v1/models/{model_name}/versions/{version}:predict": predict(versioned),
        },
    }
