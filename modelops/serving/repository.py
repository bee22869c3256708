"""Load the numbered SavedModel versions of one model, as ``tensorflow_model_server`` does.

A model base path holds version folders named by integers (``D/1``, ``D/3`` ...), each a
SavedModel. The version policy picks which are loaded: ``latest`` (the highest only, TF Serving's
default), ``all``, or an explicit list. Requests without a version go to the highest loaded one.
Signatures are read from the SavedModel itself (input names, dtypes, shapes), never from a data set;
each is called as a concrete function (never ``model.predict``).

TensorFlow is imported inside the functions that load a model (seconds and hundreds of MB): the
server process sets its thread counts before the first import, and importing this module for its
types (request parsing, OpenAPI, the benchmark) stays cheap.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
from google.protobuf.json_format import MessageToDict

from modelops.serving.predict_request import SUPPORTED_DTYPES, InputSpec
from modelops.serving.tensorflow_import import import_tensorflow

log = logging.getLogger(__name__)

INIT_OP_SIGNATURE = "__saved_model_init_op"


class ModelLoadError(RuntimeError):
    """The model base path or a SavedModel in it cannot be served; the message says why and what to fix."""


@dataclass
class SignatureRunner:
    """One signature of one loaded version: its input specs, output names and the call itself."""

    name: str
    inputs: tuple[InputSpec, ...]
    outputs: tuple[str, ...]
    batchable: bool  # every output has a leading batch dimension, so batches can be split back
    function: Any = field(repr=False)

    fast_call: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]] | None = field(
        default=None, repr=False
    )

    def __call__(self, columns: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self.fast_call is not None:
            return self.fast_call(columns)
        return self.public_call(columns)

    def public_call(self, columns: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The signature called as TensorFlow documents it: ``tf.constant`` inputs, keyword arguments."""
        import tensorflow as tf

        tensors = {spec.name: tf.constant(columns[spec.name], dtype=spec.dtype) for spec in self.inputs}
        result = self.function(**tensors)
        return {name: result[name].numpy() for name in self.outputs}

    def enable_fast_call(self, columns: dict[str, np.ndarray]) -> bool:
        """Use :func:`_fast_call` when it gives the same answer as :meth:`public_call` on ``columns``.

        For a small network the public call costs more than the model: on TF 2.21, 12 HMEQ inputs, one
        record, ~800 us per call against ~510 us with the fast call (``tf.constant`` alone ~21 us per
        input, binding keyword arguments ~0.1 ms). The fast call uses private TF APIs, so it is checked
        against the public call when the model loads and left off if it is missing or differs.
        """
        fast = _fast_call(self.function, self.inputs, self.outputs)
        if fast is None:
            return False
        expected = self.public_call(columns)
        try:
            got = fast(columns)
            same = got.keys() == expected.keys() and all(np.array_equal(got[k], expected[k]) for k in got)
        except Exception:  # any failure means: keep the public call
            same = False
        self.fast_call = fast if same else None
        return same


def _fast_call(
    function: Any, inputs: tuple[InputSpec, ...], outputs: tuple[str, ...]
) -> Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]] | None:
    """The signature called the way ``tf.constant`` and the call would end up calling it, minus their
    Python layers: one ``EagerTensor`` per input (what ``tf.constant`` builds in eager mode) passed
    flat, in the function's own argument order, with its captured variables. None when this TF
    version lacks one of those private APIs.

    ``tf.constant`` copies a NumPy array first, since the tensor may share its memory; here it is not
    copied: the server builds each call's arrays for that call and never changes them afterwards."""
    import tensorflow as tf
    from tensorflow.python.eager import context
    from tensorflow.python.framework import ops

    order = tuple(getattr(function, "_arg_keywords", None) or ())
    eager_tensor = getattr(ops, "EagerTensor", None)
    if sorted(order) != sorted(spec.name for spec in inputs) or eager_tensor is None:
        return None
    if not hasattr(function, "_call_flat"):
        return None
    dtype_of = {spec.name: tf.as_dtype(spec.dtype).as_datatype_enum for spec in inputs}
    arguments = tuple((name, dtype_of[name]) for name in order)
    eager = context.context()

    def call(columns: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        device = eager.device_name  # the calling thread's device scope, as tf.constant reads it
        tensors = [eager_tensor(columns[name], device, dtype) for name, dtype in arguments]
        result = function._call_flat(tensors, function.captured_inputs)
        return {name: result[name].numpy() for name in outputs}

    return call


@dataclass
class ModelVersion:
    version: int
    path: Path
    signatures: dict[str, SignatureRunner]
    signature_def: dict[str, Any]  # the SignatureDefMap as TF Serving's metadata API shows it
    module: Any = field(repr=False)  # keeps the loaded SavedModel (and its variables) alive

    @cached_property  # read on every request; the signatures never change once loaded
    def inputs_by_signature(self) -> dict[str, tuple[InputSpec, ...]]:
        return {name: runner.inputs for name, runner in self.signatures.items()}


@dataclass
class ModelRepository:
    model_name: str
    base_path: Path
    versions: dict[int, ModelVersion]

    @property
    def default_version(self) -> ModelVersion:
        return self.versions[max(self.versions)]


def discover_versions(base_path: Path) -> list[int]:
    """Version numbers of the numbered sub-folders of ``base_path``, ascending."""
    if not base_path.is_dir():
        raise ModelLoadError(
            f"model base path {base_path} is not a directory: point --model-base-path at a folder holding "
            "numbered version folders (e.g. D/1/saved_model.pb)"
        )
    versions = sorted(int(p.name) for p in base_path.iterdir() if p.is_dir() and p.name.isdigit())
    if not versions:
        raise ModelLoadError(
            f"model base path {base_path} holds no numbered version folder: copy the SavedModel to "
            f"{base_path}/1/ (TF Serving layout)"
        )
    return versions


def choose_versions(available: list[int], policy: str, specific: tuple[int, ...] = ()) -> list[int]:
    if specific:
        missing = sorted(set(specific) - set(available))
        if missing:
            raise ModelLoadError(f"version(s) {missing} requested but not present; present: {available}")
        return sorted(specific)
    if policy == "latest":
        return [max(available)]
    if policy == "all":
        return list(available)
    raise ModelLoadError(f"unknown model version policy {policy!r}: use 'latest' or 'all'")


def load_repository(
    model_name: str, base_path: Path, policy: str = "all", specific: tuple[int, ...] = ()
) -> ModelRepository:
    base_path = base_path.resolve()
    chosen = choose_versions(discover_versions(base_path), policy, specific)
    versions = {}
    for version in chosen:
        log.info("loading %s version %d from %s", model_name, version, base_path / str(version))
        versions[version] = load_version(base_path / str(version), version)
    return ModelRepository(model_name, base_path, versions)


def load_version(path: Path, version: int) -> ModelVersion:
    tf = import_tensorflow()

    if not (path / "saved_model.pb").is_file():
        raise ModelLoadError(
            f"{path} is not a SavedModel (no saved_model.pb): export the model with tf.saved_model.save"
        )
    try:
        module = tf.saved_model.load(str(path))
    except Exception as exc:  # TF raises many types for a damaged SavedModel
        raise ModelLoadError(f"cannot load the SavedModel in {path}: {type(exc).__name__}: {exc}") from exc
    signatures = {name: _signature_runner(name, fn, path) for name, fn in module.signatures.items()}
    if not signatures:
        raise ModelLoadError(
            f"the SavedModel in {path} has no signatures: save it with signatures={{'serving_default': fn}}"
        )
    loaded = ModelVersion(version, path, signatures, _signature_def_map(path), module)
    _warm_up(loaded)
    return loaded


def _signature_runner(name: str, function: Any, path: Path) -> SignatureRunner:
    args, kwargs = function.structured_input_signature
    if args:
        raise ModelLoadError(
            f"signature {name!r} in {path} takes positional inputs; TF Serving needs named inputs"
        )
    inputs = []
    for input_name, spec in sorted(kwargs.items()):
        dtype = spec.dtype.name
        if dtype not in SUPPORTED_DTYPES:
            raise ModelLoadError(
                f"signature {name!r} input {input_name!r} has dtype {dtype}; "
                f"supported: {', '.join(SUPPORTED_DTYPES)}"
            )
        shape = tuple(spec.shape.as_list()) if spec.shape.rank is not None else (None,)
        if not shape:
            raise ModelLoadError(
                f"signature {name!r} input {input_name!r} is a scalar; inputs need a batch dimension"
            )
        inputs.append(InputSpec(input_name, dtype, shape))
    outputs = function.structured_outputs
    if not isinstance(outputs, dict):
        raise ModelLoadError(f"signature {name!r} in {path} must return a dict of named outputs")
    batchable = all(spec.shape.rank and spec.shape[0] is None for spec in outputs.values())
    return SignatureRunner(name, tuple(inputs), tuple(sorted(outputs)), bool(batchable), function)


def preload_tensorflow_internals() -> None:
    """Import what loading and calling a SavedModel imports lazily (the warm standby does, once)."""
    import_tensorflow()
    from tensorflow.core.protobuf import saved_model_pb2  # noqa: F401
    from tensorflow.python.eager import context  # noqa: F401
    from tensorflow.python.framework import ops  # noqa: F401


def _signature_def_map(path: Path) -> dict[str, Any]:
    from tensorflow.core.protobuf import saved_model_pb2

    saved_model = saved_model_pb2.SavedModel()
    saved_model.ParseFromString((path / "saved_model.pb").read_bytes())
    signature_defs = saved_model.meta_graphs[0].signature_def
    return {
        name: MessageToDict(signature_def, preserving_proto_field_name=True)
        for name, signature_def in signature_defs.items()
    }


def _warm_up(version: ModelVersion) -> None:
    """One call per signature so the first real request does not pay for lazy initialisation."""
    for runner in version.signatures.values():
        if any(len(spec.shape) != 1 for spec in runner.inputs):
            continue
        columns = {
            spec.name: np.array([""], dtype=object)
            if spec.kind == "string"
            else np.zeros(1, spec.numpy_dtype)
            for spec in runner.inputs
        }
        try:
            runner(columns)
            if not runner.enable_fast_call(columns):
                log.info("signature %r (version %d): using the public call", runner.name, version.version)
        except Exception as exc:  # a warm-up failure is reported, the smoke test decides
            log.warning(
                "warm-up call of signature %r (version %d) failed: %s", runner.name, version.version, exc
            )
