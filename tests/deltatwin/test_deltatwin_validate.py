"""The validator on the real public components (their real defects) and on small edited ones."""

from __future__ import annotations

import json

import pytest

from eotwin.cli.main import run
from eotwin.deltatwin.validate import validate_component

EXPECTED = {
    "DeltaTwin-od-mucilage": [
        ("warning", "manifest.json", "deltaVersion", "delta-version"),
        ("warning", "manifest.json", "inputs.cdse_key.type", "secret-as-string"),
        ("warning", "manifest.json", "inputs.cdse_secret.type", "secret-as-string"),
        ("warning", "manifest.json", "inputs.earth_data_hub_pat.type", "secret-as-string"),
        ("warning", "manifest.json", "models.mucilage_detector.parameters.pipInstallArgs", "parameter-unknown"),
        ("error", "manifest.json", "models.mucilage_detector.parameters.pythonVersion", "python-version"),
        ("warning", "inputs_file.json", "cdse_key.value", "placeholder"),
        ("warning", "inputs_file.json", "cdse_secret.value", "placeholder"),
        ("warning", "inputs_file.json", "earth_data_hub_pat.value", "placeholder"),
        ("error", "inputs_file.json", "bbox.value", "bbox"),
        ("warning", "inputs_file.json", "bbox.value", "value-spaces"),
    ],
    "DestinE_ESA_DeltaTwin__destination-earth/ai-sen2cor-processor": [
        ("warning", "manifest.json", "deltaVersion", "delta-version"),
        ("warning", "manifest.json", "inputs.cdse_key.type", "secret-as-string"),
        ("warning", "manifest.json", "inputs.cdse_secret.type", "secret-as-string"),
        ("error", "manifest.json", "models.ai-sen2cor-processor.parameters.pythonVersion", "python-version"),
        ("warning", "manifest.json", "models.ai-sen2cor-processor.parameters.command", "command-literal"),
        ("warning", "manifest.json", "models.ai-sen2cor-processor.parameters.command", "command-literal"),
        ("warning", "manifest.json", "models.ai-sen2cor-processor.inputs.cdse_key", "input-unused"),
        ("warning", "manifest.json", "models.ai-sen2cor-processor.inputs.cdse_secret", "input-unused"),
        ("warning", "inputs_file.json", "cdse_key.value", "placeholder"),
        ("warning", "inputs_file.json", "cdse_secret.value", "placeholder"),
    ],
    "DestinE_ESA_DeltaTwin__emanuel-gf/STAC_data_query": [
        ("warning", "manifest.json", "deltaVersion", "delta-version"),
        ("error", "manifest.json", "name", "name"),
        ("warning", "manifest.json", "models.stac_query.path", "model-path"),
        ("error", "manifest.json", "models.stac_query.parameters.pythonVersion", "python-version"),
        ("error", "workflow.yml", "nodes[0].ref", "node-ref"),
        ("error", "workflow.yml", "nodes[1].ref", "node-ref"),
        ("error", "workflow.yml", "nodes[2].ref", "node-ref"),
        ("error", "workflow.yml", "nodes[3].ref", "node-ref"),
        ("error", "workflow.yml", "edges[4].to.port", "edge-port"),
        ("warning", "workflow.yml", "nodes[5]", "input-unfed"),
        ("warning", "workflow.yml", "nodes[5]", "input-unfed"),
        ("warning", "workflow.yml", "nodes", "declared-unused"),
    ],
    "DestinE_ESA_DeltaTwin__emanuel-gf/all_models": [
        ("warning", "manifest.json", "deltaVersion", "delta-version"),
        ("warning", "manifest.json", "models.preprocessing.path", "model-path"),
        ("error", "manifest.json", "models.preprocessing.parameters.pythonVersion", "python-version"),
        ("warning", "manifest.json", "models.postprocessing.path", "model-path"),
        ("error", "manifest.json", "models.postprocessing.parameters.pythonVersion", "python-version"),
        ("warning", "manifest.json", "models.inference.path", "model-path"),
        ("error", "manifest.json", "models.inference.parameters.pythonVersion", "python-version"),
        ("error", "inputs_file.json", "cdse_key.type", "input-type"),
        ("warning", "inputs_file.json", "cdse_key.value", "placeholder"),
        ("error", "inputs_file.json", "cdse_secret.type", "input-type"),
        ("warning", "inputs_file.json", "cdse_secret.value", "placeholder"),
        ("error", "inputs_file.json", "bands", "input-unknown"),
        ("error", "inputs_file.json", "bbox.value", "bbox"),
    ],
    "DestinE_ESA_DeltaTwin__emanuel-gf/end-to-end-ai-s2-atmo-correc-processor": [
        ("warning", "manifest.json", "deltaVersion", "delta-version"),
        ("warning", "manifest.json", "inputs.cdse_key.type", "secret-as-string"),
        ("warning", "manifest.json", "inputs.cdse_secret.type", "secret-as-string"),
        ("warning", "manifest.json", "models.inference.path", "model-path"),
        ("error", "manifest.json", "models.inference.parameters.pythonVersion", "python-version"),
        ("error", "manifest.json", "models.inference.parameters.command", "command-input"),
        ("error", "manifest.json", "models.inference.parameters.command", "command-input"),
        ("error", "manifest.json", "models.inference.parameters.command", "command-input"),
        ("error", "manifest.json", "models.inference.parameters.command", "command-input"),
        ("error", "manifest.json", "models.inference.parameters.command", "command-input"),
        ("warning", "manifest.json", "models.inference.inputs.s2_preprocessed", "input-unused"),
        ("error", "workflow.yml", "edges[11]", "edge-duplicate"),
        ("warning", "inputs_file.json", "cdse_key.value", "placeholder"),
        ("warning", "inputs_file.json", "cdse_secret.value", "placeholder"),
        ("error", "inputs_file.json", "bbox.value", "bbox"),
        ("error", "inputs_file.json", "max_cloud_cover.type", "type"),
    ],
    "DestinE_ESA_DeltaTwin__emanuel-gf/get-product-S2": [
        ("warning", "manifest.json", "deltaVersion", "delta-version"),
        ("warning", "manifest.json", "inputs.cdse_key.type", "secret-as-string"),
        ("warning", "manifest.json", "inputs.cdse_secret.type", "secret-as-string"),
        ("warning", "manifest.json", "models.get_product.path", "model-path"),
        ("error", "manifest.json", "models.get_product.parameters.pythonVersion", "python-version"),
        ("warning", "inputs_file.json", "cdse_key.value", "placeholder"),
        ("warning", "inputs_file.json", "cdse_secret.value", "placeholder"),
        ("error", "inputs_file.json", "stac_item", "data-url"),
        ("warning", "inputs_online.json", "cdse_key.value", "placeholder"),
        ("warning", "inputs_online.json", "cdse_secret.value", "placeholder"),
        ("error", "inputs_online.json", "stac_item", "data-url"),
    ],
    "DestinE_ESA_DeltaTwin__emanuel-gf/get-product-S2-single-processing": [
        ("warning", "manifest.json", "deltaVersion", "delta-version"),
        ("warning", "manifest.json", "inputs.cdse_key.type", "secret-as-string"),
        ("warning", "manifest.json", "inputs.cdse_secret.type", "secret-as-string"),
        ("warning", "manifest.json", "models.get_product.path", "model-path"),
        ("error", "manifest.json", "models.get_product.parameters.pythonVersion", "python-version"),
        ("warning", "inputs_file.json", "cdse_key.value", "placeholder"),
        ("warning", "inputs_file.json", "cdse_secret.value", "placeholder"),
    ],
    "EO-Point-Cloud/DeltaTwin": [
        ("warning", "manifest.json", "deltaVersion", "delta-version"),
        ("warning", "manifest.json", "models.point_cloud_generator.path", "model-path"),
        ("error", "manifest.json", "models.point_cloud_generator.parameters.pythonVersion", "python-version"),
        ("error", "workflow.yml", "edges[0]", "edge-type"),
        ("error", "workflow.yml", "edges[1]", "edge-type"),
        ("error", "workflow.yml", "edges[2]", "edge-type"),
        ("error", "inputs_file.json", "cdse_key.type", "input-type"),
        ("warning", "inputs_file.json", "cdse_key.value", "placeholder"),
        ("error", "inputs_file.json", "cdse_secret.type", "input-type"),
        ("warning", "inputs_file.json", "cdse_secret.value", "placeholder"),
        ("error", "inputs_file.json", "earth_data_hub_key.type", "input-type"),
        ("warning", "inputs_file.json", "earth_data_hub_key.value", "placeholder"),
        ("warning", "inputs_file.json", "bbox.value", "value-spaces"),
    ],
    "EO-Point-Cloud/root": [
        ("warning", "manifest.json", "deltaVersion", "delta-version"),
        ("warning", "manifest.json", "inputs.cdse_key.type", "secret-as-string"),
        ("warning", "manifest.json", "inputs.cdse_secret.type", "secret-as-string"),
        ("warning", "manifest.json", "inputs.earth_data_hub_key.type", "secret-as-string"),
        ("warning", "manifest.json", "models.point_cloud_generator.path", "model-path"),
        ("warning", "manifest.json", "models.point_cloud_generator.parameters.baseImage", "parameter-unknown"),
        ("error", "manifest.json", "models.point_cloud_generator.parameters.pythonVersion", "python-version"),
        ("error", "manifest.json", "models.point_cloud_generator.parameters.command", "command-interpreter"),
        ("error", "workflow.yml", "", "missing-file"),
    ],
}


def _summary(report):
    return [(f.severity, f.file, f.key, f.code) for f in report.findings]


@pytest.mark.parametrize("folder", sorted(EXPECTED))
def test_public_components_exact_findings(shared_fixtures, folder):
    report = validate_component(shared_fixtures / "deltatwin" / folder)
    assert _summary(report) == EXPECTED[folder]
    assert not report.ok  # every public component has at least one error


def _messages(shared_fixtures, folder, code):
    report = validate_component(shared_fixtures / "deltatwin" / folder)
    return [f.message for f in report.findings if f.code == code]


def test_known_defects_have_precise_messages(shared_fixtures):
    gf = "DestinE_ESA_DeltaTwin__emanuel-gf"
    [typo] = _messages(shared_fixtures, f"{gf}/STAC_data_query", "edge-port")
    assert "'max_cloud_covery' is not an input of models.stac_query" in typo and "did you mean 'max_cloud_cover'" in typo
    refs = _messages(shared_fixtures, f"{gf}/STAC_data_query", "node-ref")
    assert refs[0] == "node 'bbox_min_lon' refers to inputs.bbox_min_lon, which manifest.json does not declare"
    [dup] = _messages(shared_fixtures, f"{gf}/end-to-end-ai-s2-atmo-correc-processor", "edge-duplicate")
    assert dup == "repeats edges[6] (stac_query_most_recent.stac_items -> get_sen2_products_l1c.stac_item)"
    [bbox] = _messages(shared_fixtures, f"{gf}/all_models", "bbox")
    assert bbox.startswith('"L2A" is not a bounding box')
    [inverted] = _messages(shared_fixtures, "DeltaTwin-od-mucilage", "bbox")
    assert "min_lat >= max_lat" in inverted
    [numeric] = _messages(shared_fixtures, f"{gf}/end-to-end-ai-s2-atmo-correc-processor", "type")
    assert numeric.startswith("'numeric' is not a type the runtime knows")
    [version] = _messages(shared_fixtures, "EO-Point-Cloud/DeltaTwin", "python-version")
    assert version.startswith("'3.12.2' is not supported by the builder")


def test_findings_never_echo_credentials(shared_fixtures):
    for folder in EXPECTED:
        for finding in validate_component(shared_fixtures / "deltatwin" / folder).findings:
            assert "your_cdse" not in finding.message and "your_earth" not in finding.message


def test_clean_component_has_no_findings(echo_component):
    report = validate_component(echo_component())
    assert report.findings == [] and report.ok


def _codes(root):
    return [(f.severity, f.key, f.code) for f in validate_component(root).findings]


def test_cycle_and_edge_checks(echo_component):
    def mutate(m, w):
        m["models"]["echo"]["inputs"]["back"] = {"type": "Data"}
        m["models"]["echo"]["parameters"]["command"] += " $(inputs.back)"
        w["edges"].append({"from": {"id": "echo", "port": "result"}, "to": {"id": "echo", "port": "back"}})
        w["edges"].append({"from": {"id": "ghost"}, "to": {"id": "echo", "port": "text"}})
        w["edges"].append({"from": {"id": "text"}, "to": {"id": "echo", "port": "text"}})
        w["edges"].append({"from": {"id": "count"}, "to": {"id": "echo", "port": "text"}})

    codes = _codes(echo_component(mutate))
    assert ("error", "edges[5].from.id", "edge-node") in codes
    assert ("error", "edges[6]", "edge-duplicate") in codes
    assert ("error", "edges[7].to.port", "edge-fed-twice") in codes
    assert ("error", "edges[7]", "edge-type") in codes  # integer into string
    assert ("error", "edges", "cycle") in codes
    [cycle] = [f.message for f in validate_component(echo_component(mutate, name="again")).findings if f.code == "cycle"]
    assert cycle == "the workflow has a cycle: echo -> echo"


def test_command_token_and_glob_checks(echo_component):
    def mutate(m, w):
        p = m["models"]["echo"]["parameters"]
        p["command"] = "python echo.py --text=$(inputs.text) $(inputs.count)x $(inputs.nope) $(inputs.token)"
        p["pythonVersion"] = "3.9"
        p["hardwareRequirements"] = {"cpu": "lots", "ram": "2GB"}
        m["models"]["echo"]["outputs"]["result"] = {"type": "Data"}
        m["models"]["echo"]["inputs"]["token"] = {"type": "string"}
        m["inputs"]["api_key"] = {"type": "string"}

    found = {(f.key, f.code): f.message for f in validate_component(echo_component(mutate)).findings}
    cmd_key = "models.echo.parameters.command"
    problems = [f for f in validate_component(echo_component(mutate, name="b")).findings if f.code == "command-token"]
    assert [p.severity for p in problems] == ["error", "error"]
    assert "'--text=$(inputs.text)' is not substituted" in problems[0].message
    assert "dropping 'x'" in problems[1].message
    assert (cmd_key, "command-input") in found
    assert found[("models.echo.outputs.result.glob", "glob")].startswith("a Data output needs a glob")
    assert ("models.echo.parameters.pythonVersion", "python-version") in found
    assert ("models.echo.parameters.hardwareRequirements.cpu", "hardware") in found
    assert ("models.echo.parameters.hardwareRequirements.ram", "hardware") in found
    assert ("inputs.api_key.type", "secret-as-string") in found
    assert ("edges[2]", "edge-type") in found  # secret into a string port


def test_schema_errors_are_reported_with_their_key(echo_component):
    def mutate(m, w):
        m["colour"] = "blue"
        m["resources"] = {"level": {"type": "string"}}
        m["license"]["copyrights"][0]["years"] = [1900]

    codes = _codes(echo_component(mutate))
    assert ("error", "", "schema") in codes  # additional property at the top
    assert ("error", "resources.level", "schema") in codes  # a resource needs a value
    assert ("error", "license.copyrights[0].years[0]", "schema") in codes


def test_dependency_ports_checked_with_local_components(tmp_path, echo_component):
    echo_component()  # tmp_path/echo, named tiny-echo

    def parent(m, w):
        m["name"] = "parent"
        m["dependencies"] = {"child": {"id": "tiny-echo", "version": "1.0"}}
        w["nodes"].append({"id": "child", "ref": "dependencies.child"})
        w["edges"].append({"from": {"id": "text"}, "to": {"id": "child", "port": "txt"}})
        w["edges"].append({"from": {"id": "child", "port": "result"}, "to": {"id": "echo", "port": "text"}})

    root = echo_component(parent, name="parent")
    without = _codes(root)
    assert not [c for c in without if c[2] == "edge-port"]  # the dependency is unknown: nothing to check
    found = [(f.key, f.code) for f in validate_component(root, components=[tmp_path]).findings]
    assert ("edges[4].to.port", "edge-port") in found  # 'txt' is not an input of tiny-echo
    assert ("edges[5].to.port", "edge-fed-twice") in found
    assert ("edges[5]", "edge-type") in found  # a Data output into a string port


def test_cli_json_and_exit_codes(shared_fixtures, echo_component, capsys):
    assert run(["deltatwin", "validate", str(echo_component())]) == 0
    out = capsys.readouterr().out
    assert "valid (0 errors, 0 warnings)" in out
    code = run(["deltatwin", "validate", "--json", str(shared_fixtures / "deltatwin" / "EO-Point-Cloud" / "root")])
    payload = json.loads(capsys.readouterr().out)
    assert code == 1 and payload["ok"] is False and payload["errors"] == 3
    assert payload["findings"][-1] == {"severity": "error", "file": "workflow.yml", "key": "", "code": "missing-file",
                                       "message": "workflow.yml is missing"}
    assert run(["deltatwin", "validate", str(shared_fixtures / "nope")]) == 2
