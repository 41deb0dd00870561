"""The release facts signed into a TUF target: one key, one field list, one reader, one comparison.

``edgeship publish`` copies these ``model.json`` fields into the target's custom metadata,
``{"custom": {"edgeship": {...}}}``, so the targets key signs them. A device decides on them
*before* downloading (which model, which release, can this hardware run it) and, once the
bundle is downloaded, refuses it when its own ``model.json`` says anything else
(mix-and-match: a signed target whose bytes carry another model's description).

TUF signs canonical JSON, which has no floats: the float fields of model.json (latency
budget, tolerances, statistics) are not copied; the bundle's hash, signed in the same
target, binds them.

Pure: values in, values out (``unrecognized_fields`` is tuf's ``TargetFile`` attribute, a
plain mapping; this module does not import tuf).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from .bundle.schema import BundleInfo

#: key under a target's ``custom`` metadata that holds the facts
CUSTOM_KEY = "edgeship"
#: the model.json fields that are signed, and compared with the downloaded bundle's
FACT_FIELDS = ("name", "version", "release", "engine", "precision", "requirements", "io", "schema_version")


@dataclass(frozen=True)
class ReleaseFacts:
    """The facts one target carries (a subset of model.json, as JSON values)."""

    fields: Mapping[str, Any]

    @classmethod
    def of(cls, info: BundleInfo) -> "ReleaseFacts":
        """The facts a publisher signs for a bundle."""
        doc = info.to_json()
        return cls({k: doc[k] for k in FACT_FIELDS})

    @classmethod
    def from_target(cls, unrecognized_fields: Mapping[str, Any]) -> "ReleaseFacts | None":
        """The facts of a target (its ``TargetFile.unrecognized_fields``), or None when the
        target carries none (not an edgeship bundle, or not named by a publisher of ours)."""
        custom = unrecognized_fields.get("custom")
        facts = custom.get(CUSTOM_KEY) if isinstance(custom, Mapping) else None
        if not isinstance(facts, Mapping) or not isinstance(facts.get("name"), str):
            return None
        return cls(dict(facts))

    def custom_metadata(self) -> dict[str, Any]:
        """The value of the target's ``custom`` field."""
        return {CUSTOM_KEY: dict(self.fields)}

    # what devices and operators read before downloading
    @property
    def name(self) -> str:
        return str(self.fields["name"])

    @property
    def release(self) -> int:
        r = self.fields.get("release", 0)
        return r if isinstance(r, int) and not isinstance(r, bool) else 0

    @property
    def version(self) -> str | None:
        return self.fields.get("version")

    @property
    def engine(self) -> str | None:
        return self.fields.get("engine")

    @property
    def precision(self) -> str | None:
        return self.fields.get("precision")

    @property
    def requirements(self) -> Any:
        """The signed ``requirements`` object (parse with ``Requirements.from_json``)."""
        return self.fields.get("requirements")

    def mismatches(self, info: BundleInfo) -> list[str]:
        """The signed facts that the bundle's own model.json contradicts (empty when it agrees).

        A field the target does not carry (a publisher older than the field) is not compared.
        """
        mine = info.to_json()
        return [k for k in FACT_FIELDS if k in self.fields and self.fields[k] != mine.get(k)]
