"""The mesh stays within a memory budget: block-wise normals and writers, and a grid sized to the budget."""

from __future__ import annotations

import json

import numpy as np
import pytest

from eotwin.cli.main import run
from eotwin.pointcloud import mesh as mesh_core
from eotwin.pointcloud import mesh_pipeline


def _reference_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    v = vertices - vertices.min(axis=0)
    tri = v[faces]
    face_n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    normals = np.zeros_like(v)
    for corner in range(3):
        np.add.at(normals, faces[:, corner], face_n)
    length = np.linalg.norm(normals, axis=1, keepdims=True)
    return np.where(length > 0, normals / np.where(length > 0, length, 1), [0.0, 0.0, 1.0])


def test_block_wise_normals_equal_the_whole_mesh_sum(monkeypatch):
    rng = np.random.default_rng(3)
    vertices = np.column_stack([rng.uniform(3e5, 3.1e5, 500), rng.uniform(5e6, 5.01e6, 500), rng.uniform(0, 3e3, 500)])
    faces = rng.integers(0, 480, size=(2000, 3)).astype(np.uint32)  # vertices 480-499 in no face: straight up
    monkeypatch.setattr(mesh_core, "NORMAL_CHUNK_FACES", 7)
    got = mesh_core.vertex_normals(vertices, faces)
    np.testing.assert_allclose(got, _reference_normals(vertices, faces), atol=2e-6)
    assert np.array_equal(got[480:], np.tile([0, 0, 1], (20, 1)).astype(np.float32))


def test_a_grid_beyond_the_budget_is_refused_with_the_spacing_that_fits(sample_files, tmp_path, monkeypatch, capsys):
    # the sample here is 200 x 200 px at 10 m (40,000 cells): a budget of 10,000 cells needs 20 m
    monkeypatch.setattr(mesh_pipeline, "MESH_MEMORY_BUDGET", 10_000 * mesh_pipeline.MESH_BYTES_PER_CELL)
    out = tmp_path / "m.ply"
    code = run(["pointcloud", "mesh", "--dem", str(sample_files.dem), "--image", str(sample_files.tci), "-o", str(out)])
    err = capsys.readouterr().err
    assert code != 0 and "does not fit the memory budget" in err and "--resolution 20" in err
    assert not list(tmp_path.iterdir())
    # the spacing it names does fit
    assert run(["pointcloud", "mesh", "--dem", str(sample_files.dem), "--image", str(sample_files.tci), "-o", str(out),
                "--resolution", "20", "--json", "--no-glb"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["spacing"] == 20 and report["coarsened_from"] is None
    assert report["grid"][0] * report["grid"][1] <= 10_000


@pytest.mark.parametrize("budget_cells", [5_000])
def test_with_triangles_the_grid_is_coarsened_to_fit_and_says_so(sample_files, tmp_path, monkeypatch, capsys,
                                                                 budget_cells):
    monkeypatch.setattr(mesh_pipeline, "MESH_MEMORY_BUDGET", budget_cells * mesh_pipeline.SIMPLIFY_BYTES_PER_CELL)
    out = tmp_path / "m.ply"
    assert run(["pointcloud", "mesh", "--dem", str(sample_files.dem), "--image", str(sample_files.tci), "-o", str(out),
                "--resolution", "10", "--triangles", "2000", "--json", "--no-glb"]) == 0
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert report["coarsened_from"] == 10 and report["spacing"] > 10
    assert report["grid"][0] * report["grid"][1] <= budget_cells
    assert report["triangles"] <= 2000 * 1.05 and out.is_file()
    assert f"meshing at {report['spacing']:g} instead of 10" in captured.err
