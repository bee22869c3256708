"""What a tabular data set looks like: its target, numeric and categorical columns, and separator.

The same schema drives the generator, CSV loading, the model's input signature, the serving
server's request validation and the scoring client. A schema file is a small YAML document::

    target: BAD
    numeric: [LOAN, MORTDUE, VALUE]
    categorical: [REASON, JOB]
    separator: ","
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

_COLUMN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


class SchemaError(ValueError):
    """A schema file or a data set does not match what the schema promises."""


@dataclass(frozen=True)
class DatasetSchema:
    target: str
    numeric: tuple[str, ...]
    categorical: tuple[str, ...]
    separator: str = ","

    def __post_init__(self) -> None:
        features = self.features
        if not features:
            raise SchemaError("a schema needs at least one numeric or categorical feature")
        for name in (self.target, *features):
            if not _COLUMN.match(name):
                raise SchemaError(
                    f"column name {name!r} is not usable as a model input name: use [A-Za-z_][A-Za-z0-9_]*"
                )
        duplicates = {n for n in (self.target, *features) if (self.target, *features).count(n) > 1}
        if duplicates:
            raise SchemaError(f"columns listed twice in the schema: {sorted(duplicates)}")
        if len(self.separator) != 1:
            raise SchemaError(f"separator must be one character, got {self.separator!r}")

    @property
    def features(self) -> tuple[str, ...]:
        return (*self.numeric, *self.categorical)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any], source: str = "schema") -> DatasetSchema:
        allowed = {"target", "numeric", "categorical", "separator"}
        unknown = set(raw) - allowed
        if unknown:
            raise SchemaError(f"{source}: unknown keys {sorted(unknown)}; allowed: {sorted(allowed)}")
        if "target" not in raw:
            raise SchemaError(f"{source}: 'target' is required (the 0/1 label column)")
        return cls(
            target=str(raw["target"]),
            numeric=tuple(str(c) for c in raw.get("numeric") or ()),
            categorical=tuple(str(c) for c in raw.get("categorical") or ()),
            separator=str(raw.get("separator", ",")),
        )

    @classmethod
    def from_yaml(cls, path: str | Path) -> DatasetSchema:
        path = Path(path)
        try:
            raw = yaml.safe_load(path.read_text())
        except FileNotFoundError:
            raise SchemaError(f"schema file {path} does not exist") from None
        except yaml.YAMLError as exc:
            raise SchemaError(f"schema file {path} is not valid YAML: {exc}") from None
        if not isinstance(raw, dict):
            raise SchemaError(f"schema file {path} must be a mapping with target/numeric/categorical")
        return cls.from_dict(raw, source=str(path))


HMEQ_SCHEMA = DatasetSchema(
    target="BAD",
    numeric=("LOAN", "MORTDUE", "VALUE", "YOJ", "DEROG", "DELINQ", "CLAGE", "NINQ", "CLNO", "DEBTINC"),
    categorical=("REASON", "JOB"),
)
HMEQ_CATEGORIES: dict[str, tuple[str, ...]] = {
    "REASON": ("DebtCon", "HomeImp"),
    "JOB": ("Other", "Sales", "ProfExe", "Office", "Mgr", "Self"),
}
