import numpy as np
import pytest

from eotwin.ben.labels import (
    CLASSES_ALPHABETICAL,
    CLASSES_ORIGINAL,
    CORINE_43,
    CORINE_TO_19,
    class_names,
    labels_from_multi_hot,
    multi_hot,
    v1_to_19,
)
from eotwin.errors import EotwinError


def test_nineteen_classes_in_both_orders():
    assert len(CLASSES_ORIGINAL) == 19 == len(set(CLASSES_ORIGINAL))
    assert list(CLASSES_ALPHABETICAL) == sorted(CLASSES_ORIGINAL)
    assert CLASSES_ORIGINAL[0] == "Urban fabric" and CLASSES_ORIGINAL[-1] == "Marine waters"
    assert CLASSES_ALPHABETICAL[0] == "Agro-forestry areas"


def test_multi_hot_order_is_explicit():
    labels = ["Marine waters", "Urban fabric"]
    original = multi_hot(labels)
    alphabetical = multi_hot(labels, "alphabetical")
    assert original.dtype == np.float32 and original.shape == (19,)
    assert np.flatnonzero(original).tolist() == [0, 18]
    assert np.flatnonzero(alphabetical).tolist() == sorted(CLASSES_ALPHABETICAL.index(x) for x in labels)
    assert labels_from_multi_hot(original) == ["Urban fabric", "Marine waters"]
    with pytest.raises(EotwinError, match="not one of the 19"):
        multi_hot(["Rice fields"])
    with pytest.raises(EotwinError):
        class_names("random")  # type: ignore[arg-type]


def test_corine_mapping_covers_the_published_nomenclature():
    assert len(CORINE_43) == 43
    assert set(CORINE_TO_19) <= set(CORINE_43)
    assert set(CORINE_TO_19.values()) == set(CLASSES_ORIGINAL)
    dropped = sorted(set(CORINE_43) - set(CORINE_TO_19))
    assert dropped == [122, 123, 124, 131, 132, 133, 141, 142, 332, 334, 423]
    # merges stated in the BigEarthNet-19 nomenclature
    assert {CORINE_TO_19[c] for c in (221, 222, 223, 241)} == {"Permanent crops"}
    assert {CORINE_TO_19[c] for c in (321, 333)} == {"Natural grassland and sparsely vegetated areas"}


def test_v1_labels_map_to_19_in_original_order():
    v1 = ["Sea and ocean", "Bare rock", "Continuous urban fabric", "Discontinuous urban fabric", "Olive groves"]
    assert v1_to_19(v1) == ["Urban fabric", "Permanent crops", "Marine waters"]
    assert v1_to_19([312, 324]) == ["Coniferous forest", "Transitional woodland, shrub"]
    assert v1_to_19(["Airports"]) == []
    with pytest.raises(EotwinError, match="43 BigEarthNet v1"):
        v1_to_19(["Transitional woodland, shrub"])  # a 19-class name is not a v1 label


def test_real_metadata_uses_exactly_the_19_names(shared_fixtures):
    import pandas as pd

    frame = pd.read_parquet(shared_fixtures / "ben" / "real" / "metadata.parquet", columns=["labels"])
    seen = {label for labels in frame["labels"] for label in labels}
    assert seen == set(CLASSES_ORIGINAL)
