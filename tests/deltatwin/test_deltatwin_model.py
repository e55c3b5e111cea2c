"""The typed manifest / workflow model reads the public components and writes back what it read."""

from __future__ import annotations

import json

import pytest
import yaml

from eotwin.deltatwin.graph import dependants, find_cycle, topological_order
from eotwin.deltatwin.manifest import Manifest, Workflow, load_component, save_component
from eotwin.errors import EotwinError


def test_round_trip_of_public_manifests(shared_fixtures):
    for path in sorted((shared_fixtures / "deltatwin").rglob("manifest.json")):
        raw = json.loads(path.read_text())
        back = Manifest.model_validate(raw).to_dict()
        back.pop("deltaVersion")  # the model states the version the fixtures leave implicit
        assert back == raw, path


def test_load_and_save_component(tmp_path, echo_component):
    component = load_component(echo_component())
    assert component.manifest.models["echo"].parameters.hardwareRequirements.ram == "2Gi"
    first = component.workflow.edges[0]
    assert (first.source.id, first.target.port) == ("text", "text")
    out = save_component(tmp_path / "copy", component.manifest, component.workflow)
    assert json.loads((out / "manifest.json").read_text()) == json.loads((component.root / "manifest.json").read_text())
    assert yaml.safe_load((out / "workflow.yml").read_text()) == yaml.safe_load(
        (component.root / "workflow.yml").read_text())
    assert Workflow.model_validate(yaml.safe_load((out / "workflow.yml").read_text())).edges[3].source.port == "result"


def test_load_errors_are_one_line(tmp_path):
    with pytest.raises(EotwinError, match=r"no manifest\.json"):
        load_component(tmp_path)
    (tmp_path / "manifest.json").write_text("{")
    with pytest.raises(EotwinError, match="not valid JSON: Expecting property name"):
        load_component(tmp_path)


def test_graph_order_cycles_and_dependants():
    nodes = ["a", "b", "c", "d"]
    edges = [("c", "d"), ("a", "b"), ("b", "d")]
    assert topological_order(nodes, edges) == ["a", "b", "c", "d"]
    assert topological_order(["d", "c", "b", "a"], edges) == ["c", "a", "b", "d"]  # ties: declaration order
    assert find_cycle(nodes, edges) is None
    assert find_cycle(nodes, [*edges, ("d", "a")]) == ["a", "b", "d", "a"]
    with pytest.raises(ValueError, match="cycle: a -> b -> d -> a"):
        topological_order(nodes, [*edges, ("d", "a")])
    assert dependants("a", edges) == {"b", "d"} and dependants("d", edges) == set()
