"""The 19 BigEarthNet classes, their explicit order, and the CORINE 43 -> 19 mapping of v1.

Tools disagree on the class order: torchgeo and the BigEarthNet-19 paper list the classes in the
"original" (CORINE code) order, ConfigILM sorts them alphabetically. A model trained in one order and
evaluated in the other scores nonsense without any error, so every multi-hot vector here is built from
an explicit, named order (``"original"`` by default) and stored models record which one they used.

Original order (index: name, CORINE level-3 codes merged into it):

 0 Urban fabric (111, 112)
 1 Industrial or commercial units (121)
 2 Arable land (211, 212, 213)
 3 Permanent crops (221, 222, 223, 241)
 4 Pastures (231)
 5 Complex cultivation patterns (242)
 6 Land principally occupied by agriculture, with significant areas of natural vegetation (243)
 7 Agro-forestry areas (244)
 8 Broad-leaved forest (311)
 9 Coniferous forest (312)
10 Mixed forest (313)
11 Natural grassland and sparsely vegetated areas (321, 333)
12 Moors, heathland and sclerophyllous vegetation (322, 323)
13 Transitional woodland, shrub (324)
14 Beaches, dunes, sands (331)
15 Inland wetlands (411, 412)
16 Coastal wetlands (421, 422)
17 Inland waters (511, 512)
18 Marine waters (521, 522, 523)

The other 10 CORINE classes of v1 (122-124, 131-133, 141, 142, 332, 334, 423) have no 19-class
counterpart and are dropped, as in the BigEarthNet-19 nomenclature.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

import numpy as np

from eotwin.errors import EotwinError

ClassOrder = Literal["original", "alphabetical"]

CLASSES_ORIGINAL: tuple[str, ...] = (
    "Urban fabric",
    "Industrial or commercial units",
    "Arable land",
    "Permanent crops",
    "Pastures",
    "Complex cultivation patterns",
    "Land principally occupied by agriculture, with significant areas of natural vegetation",
    "Agro-forestry areas",
    "Broad-leaved forest",
    "Coniferous forest",
    "Mixed forest",
    "Natural grassland and sparsely vegetated areas",
    "Moors, heathland and sclerophyllous vegetation",
    "Transitional woodland, shrub",
    "Beaches, dunes, sands",
    "Inland wetlands",
    "Coastal wetlands",
    "Inland waters",
    "Marine waters",
)
#: ConfigILM's order (lexicographic), for reading its checkpoints and predictions.
CLASSES_ALPHABETICAL: tuple[str, ...] = tuple(sorted(CLASSES_ORIGINAL))
NUM_CLASSES = len(CLASSES_ORIGINAL)

#: Short names for plot axes (same order as ``CLASSES_ORIGINAL``).
SHORT_NAMES: dict[str, str] = dict(zip(CLASSES_ORIGINAL, (
    "Urban fabric", "Industrial/commercial", "Arable land", "Permanent crops", "Pastures",
    "Complex cultivation", "Agriculture + natural veg.", "Agro-forestry", "Broad-leaved forest",
    "Coniferous forest", "Mixed forest", "Grassland / sparse veg.", "Moors, heath, sclerophyll",
    "Transitional woodland", "Beaches, dunes, sands", "Inland wetlands", "Coastal wetlands",
    "Inland waters", "Marine waters",
), strict=True))

#: CORINE level-3 code -> v1 label name (the 43 classes present in BigEarthNet v1).
CORINE_43: dict[int, str] = {
    111: "Continuous urban fabric",
    112: "Discontinuous urban fabric",
    121: "Industrial or commercial units",
    122: "Road and rail networks and associated land",
    123: "Port areas",
    124: "Airports",
    131: "Mineral extraction sites",
    132: "Dump sites",
    133: "Construction sites",
    141: "Green urban areas",
    142: "Sport and leisure facilities",
    211: "Non-irrigated arable land",
    212: "Permanently irrigated land",
    213: "Rice fields",
    221: "Vineyards",
    222: "Fruit trees and berry plantations",
    223: "Olive groves",
    231: "Pastures",
    241: "Annual crops associated with permanent crops",
    242: "Complex cultivation patterns",
    243: "Land principally occupied by agriculture, with significant areas of natural vegetation",
    244: "Agro-forestry areas",
    311: "Broad-leaved forest",
    312: "Coniferous forest",
    313: "Mixed forest",
    321: "Natural grassland",
    322: "Moors and heathland",
    323: "Sclerophyllous vegetation",
    324: "Transitional woodland/shrub",
    331: "Beaches, dunes, sands",
    332: "Bare rock",
    333: "Sparsely vegetated areas",
    334: "Burnt areas",
    411: "Inland marshes",
    412: "Peatbogs",
    421: "Salt marshes",
    422: "Salines",
    423: "Intertidal flats",
    511: "Water courses",
    512: "Water bodies",
    521: "Coastal lagoons",
    522: "Estuaries",
    523: "Sea and ocean",
}

#: CORINE level-3 code -> 19-class name (codes missing here are dropped).
CORINE_TO_19: dict[int, str] = {
    111: "Urban fabric", 112: "Urban fabric",
    121: "Industrial or commercial units",
    211: "Arable land", 212: "Arable land", 213: "Arable land",
    221: "Permanent crops", 222: "Permanent crops", 223: "Permanent crops", 241: "Permanent crops",
    231: "Pastures",
    242: "Complex cultivation patterns",
    243: "Land principally occupied by agriculture, with significant areas of natural vegetation",
    244: "Agro-forestry areas",
    311: "Broad-leaved forest",
    312: "Coniferous forest",
    313: "Mixed forest",
    321: "Natural grassland and sparsely vegetated areas", 333: "Natural grassland and sparsely vegetated areas",
    322: "Moors, heathland and sclerophyllous vegetation", 323: "Moors, heathland and sclerophyllous vegetation",
    324: "Transitional woodland, shrub",
    331: "Beaches, dunes, sands",
    411: "Inland wetlands", 412: "Inland wetlands",
    421: "Coastal wetlands", 422: "Coastal wetlands",
    511: "Inland waters", 512: "Inland waters",
    521: "Marine waters", 522: "Marine waters", 523: "Marine waters",
}

_V1_NAME_TO_CODE = {name: code for code, name in CORINE_43.items()}


def class_names(order: ClassOrder = "original") -> tuple[str, ...]:
    """The 19 class names in the requested order."""
    if order == "original":
        return CLASSES_ORIGINAL
    if order == "alphabetical":
        return CLASSES_ALPHABETICAL
    raise EotwinError(f"unknown class order '{order}': use 'original' or 'alphabetical'")


def multi_hot(labels: Iterable[str], order: ClassOrder = "original") -> np.ndarray:
    """19-dim float32 multi-hot vector of 19-class names; unknown names are an error, not a silent zero."""
    names = class_names(order)
    index = {name: i for i, name in enumerate(names)}
    vector = np.zeros(len(names), dtype=np.float32)
    for label in labels:
        try:
            vector[index[label]] = 1.0
        except KeyError:
            raise EotwinError(f"'{label}' is not one of the 19 BigEarthNet classes") from None
    return vector


def labels_from_multi_hot(vector: np.ndarray, order: ClassOrder = "original", threshold: float = 0.5) -> list[str]:
    """Class names whose entry is at least ``threshold`` (inverse of :func:`multi_hot`)."""
    names = class_names(order)
    vector = np.asarray(vector).reshape(-1)
    if vector.size != len(names):
        raise EotwinError(f"expected {len(names)} class scores, got {vector.size}")
    return [name for name, value in zip(names, vector, strict=True) if value >= threshold]


def v1_to_19(labels_43: Iterable[str | int]) -> list[str]:
    """Map v1 labels (CORINE names or codes) to 19-class names, dropped classes removed, original order."""
    merged: set[str] = set()
    for label in labels_43:
        code = label if isinstance(label, int) else _V1_NAME_TO_CODE.get(str(label))
        if code is None or code not in CORINE_43:
            raise EotwinError(f"'{label}' is not one of the 43 BigEarthNet v1 (CORINE) labels")
        if code in CORINE_TO_19:
            merged.add(CORINE_TO_19[code])
    return [name for name in CLASSES_ORIGINAL if name in merged]
