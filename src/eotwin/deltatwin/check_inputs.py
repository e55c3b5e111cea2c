"""Checks of an ``inputs*.json`` example: known names, matching types, Data URLs, secrets left as placeholders."""

from __future__ import annotations

import json
import re
from typing import Any

from eotwin.deltatwin.check_manifest import check_value_type
from eotwin.deltatwin.findings import Collector, as_dict, closest, type_of
from eotwin.deltatwin.schema import PRIMITIVE_TYPES, RUNTIME_TYPES, SECRET_NAME_RE

PLACEHOLDER_VALUES = re.compile(r"^(?:your[_ -].*|<.*>|changeme|xxx+|todo|\.\.\.)$", re.IGNORECASE)


def check_inputs_file(f: str, data: Any, manifest: dict, out: Collector) -> None:
    if not isinstance(data, dict):
        out.error(f, "", "structure", "must be a mapping {input name: {type, value}}")
        return
    declared = as_dict(manifest.get("inputs"))
    for name, entry in data.items():
        if name not in declared:
            out.error(f, name, "input-unknown", f"'{name}' is not an input of the component (inputs: "
                                                f"{', '.join(declared) or 'none'}){closest(name, declared)}")
            continue
        entry = as_dict(entry)
        ftype, mtype = entry.get("type"), type_of(declared[name])
        secret = mtype == "secret" or ftype == "secret" or bool(SECRET_NAME_RE.search(name))
        if not isinstance(ftype, str):
            out.error(f, f"{name}.type", "input-type", "missing: every input needs a type")
            continue
        if ftype not in RUNTIME_TYPES:
            out.error(f, f"{name}.type", "type", f"'{ftype}' is not a type the runtime knows "
                                                 f"({', '.join(RUNTIME_TYPES)})")
            continue
        if mtype and ftype != mtype and not {ftype, mtype} <= {"integer", "number"}:
            out.error(f, f"{name}.type", "input-type", f"'{ftype}' but manifest.json types '{name}' as {mtype}: the "
                                                       "service rejects the run")
        if ftype == "Data":
            if not entry.get("url") and not entry.get("path"):
                out.error(f, name, "data-url", "a Data input is given by 'url' (an http(s) URL or a file path); "
                                               "'value' is ignored for Data")
            continue
        value = entry.get("secret_value", entry.get("value")) if ftype == "secret" else entry.get("value")
        typed = ftype in PRIMITIVE_TYPES or ftype == "secret"
        if typed and not check_value_type(f, f"{name}.value", ftype, value, out, hide=secret):
            continue
        if isinstance(value, str):
            if secret and (not value or PLACEHOLDER_VALUES.match(value)):
                out.warn(f, f"{name}.value", "placeholder", "a placeholder, not a usable credential: fill it in "
                                                            "before running")
            elif "bbox" in name.lower():
                _check_bbox(f, f"{name}.value", value, out)
            n = len(value.split())
            if not secret and n > 1:
                out.warn(f, f"{name}.value", "value-spaces", f"contains spaces: the service passes values unquoted, "
                                                             f"so {json.dumps(value)} becomes {n} arguments")
    for name, param in declared.items():
        if name not in data and as_dict(param).get("value") is None:
            out.error(f, "", "input-missing", f"'{name}' has no value here and no default in manifest.json: the "
                                              "service rejects the run")


def _check_bbox(f: str, key: str, value: str, out: Collector) -> None:
    parts = [p for p in re.split(r"[\s,]+", value.strip()) if p]
    try:
        numbers = [float(p) for p in parts]
    except ValueError:
        numbers = []
    if len(numbers) != 4:
        out.error(f, key, "bbox", f"{json.dumps(value)} is not a bounding box: expected four numbers "
                                  "min_lon,min_lat,max_lon,max_lat")
        return
    west, south, east, north = numbers
    if not (-180 <= west <= 180 and -180 <= east <= 180 and -90 <= south <= 90 and -90 <= north <= 90):
        out.error(f, key, "bbox", f"{json.dumps(value)} is outside lon [-180, 180] / lat [-90, 90]")
    elif south >= north or west >= east:
        which = "min_lat >= max_lat" if south >= north else "min_lon >= max_lon"
        out.error(f, key, "bbox", f"{json.dumps(value)} is inverted or empty ({which}); expected "
                                  "min_lon,min_lat,max_lon,max_lat")
