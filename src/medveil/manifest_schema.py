"""The schema of the two manifests medveil reads from other parties: a release's (the
owner's message) and a results set's (the processor's answer).

Checked by ``store.open_store`` before any field is used, so that a manifest whose
``scheme`` is a string, whose ``params`` is a list or whose fingerprint is a number is
an :class:`~medveil.errors.IntegrityError` naming the field, never a traceback deep in
``decode``. The shard table (files, shapes, hashes) is checked field by field in
``store._checked_shards``.
"""

from __future__ import annotations

from typing import Any

from medveil.errors import IntegrityError

_NAME = {"type": "string", "pattern": "^[a-z][a-z0-9_]{0,63}$"}
_HEX = {"type": "string", "pattern": "^[0-9a-f]{16,128}$"}
_SCHEME = {"type": "object", "required": ["name", "version", "params"],
           "properties": {"name": _NAME, "version": {"type": "string", "maxLength": 32},
                          "params": {"type": "object"}}}
_PROTOCOL = {"type": "object", "required": ["name"], "properties": {"name": _NAME}}
_MESSAGE = {"type": "object", "required": ["kind", "sender", "round"],
            "properties": {"kind": {"type": "string", "maxLength": 64},
                           "sender": {"enum": ["owner", "processor"]},
                           "round": {"type": "integer", "minimum": 0}}}
_DATASET = {"type": "object", "properties": {
    "name": {"type": "string", "maxLength": 200},
    "task": {"enum": ["classification", "segmentation", "none"]},
    "image_shape": {"type": "array", "minItems": 3, "maxItems": 3,
                    "items": {"type": "integer", "minimum": 1, "maximum": 65536}},
    "class_names": {"type": ["array", "null"], "maxItems": 1000,
                    "items": {"type": "string", "maxLength": 200}}}}
_COMMON = {"format": {"type": "string"}, "medveil_version": {"type": "string"},
           "created": {"type": "string"}, "splits": {"type": "object"},
           "shards": {"type": "array"}, "message": _MESSAGE,
           "manifest_hmac": {"type": "string"}}

RELEASE_SCHEMA: dict[str, Any] = {
    "type": "object", "required": ["format", "splits", "shards", "scheme", "protocol"],
    "properties": {**_COMMON, "scheme": _SCHEME, "protocol": _PROTOCOL, "dataset": _DATASET,
                   "key_fingerprint": {"anyOf": [{"type": "null"}, _HEX]}}}

RESULTS_SCHEMA: dict[str, Any] = {
    "type": "object", "required": ["format", "splits", "shards", "protocol", "split"],
    "properties": {**_COMMON, "protocol": _PROTOCOL,
                   "scheme": {"anyOf": [{"type": "null"}, _SCHEME]},
                   "release": {"anyOf": [{"type": "null"}, _HEX]},
                   "release_key_fingerprint": {"anyOf": [{"type": "null"}, _HEX]},
                   "split": {"type": "string", "pattern": "^[a-z][a-z0-9_]{0,31}$"},
                   "dataset": _DATASET,
                   "key_fingerprint": {"type": "null"}}}


def check_manifest(manifest: dict[str, Any], schema: dict[str, Any], *, where: str) -> None:
    """Raise an :class:`IntegrityError` naming the first field of ``manifest`` that breaks
    ``schema``."""
    import jsonschema

    validator = jsonschema.Draft202012Validator(schema)
    error = next(iter(sorted(validator.iter_errors(manifest), key=lambda e: e.path)), None)
    if error is not None:
        field = ".".join(str(p) for p in error.absolute_path) or "(the manifest)"
        raise IntegrityError(f"{where}: field {field} is not what medveil writes "
                             f"({error.message[:120]}); the file was altered or is not "
                             "medveil's: ask for it again")
