"""Every registered source layout passes the conformance checks on its own examples."""

from __future__ import annotations

import pytest

from recsys_core.data.sources import LAYOUTS
from recsys_core.testing import sources as conformance

CASES = [
    pytest.param(name, example, id=f"{name}-{example.name}")
    for name in LAYOUTS
    for example in conformance.EXAMPLES.get(name, ())
]
BOTH_FORMATS = [
    case for case in CASES if {"csv", "parquet"} <= set(LAYOUTS[case.values[0]].formats)
]
EVERY_FORMAT = [
    pytest.param(name, example, fmt, id=f"{name}-{example.name}-{fmt}")
    for name in LAYOUTS
    for example in conformance.EXAMPLES.get(name, ())
    for fmt in LAYOUTS[name].formats
]


def test_every_registered_layout_has_an_example():
    missing = [name for name in LAYOUTS if not conformance.EXAMPLES.get(name)]
    assert not missing, f"add examples to recsys_core.testing.sources.EXAMPLES for {missing}"
    assert set(conformance.EXAMPLES) == set(LAYOUTS)


@pytest.mark.parametrize(("name", "example"), CASES)
def test_recognises_its_own_example_and_not_the_others(name, example, tmp_path):
    own = example.write(_folder(tmp_path, "own"), "csv")
    others = [
        other.write(_folder(tmp_path, f"{layout}-{other.name}"), "csv")
        for layout, examples in conformance.EXAMPLES.items()
        if layout != name
        for other in examples
    ]
    conformance.check_recognises_own_only(LAYOUTS[name], own, others)


@pytest.mark.parametrize(("name", "example"), CASES)
def test_plans_its_files(name, example, tmp_path):
    conformance.check_plans_files(LAYOUTS[name], example.write(tmp_path, "csv"))


@pytest.mark.parametrize(("name", "example"), CASES)
def test_maps_headers_to_the_canonical_columns(name, example, tmp_path):
    conformance.check_maps_headers(LAYOUTS[name], example.write(tmp_path, "csv"))


@pytest.mark.parametrize(("name", "example"), BOTH_FORMATS)
def test_csv_and_parquet_read_the_same_events(name, example, tmp_path):
    conformance.check_formats_agree(LAYOUTS[name], example, tmp_path)


@pytest.mark.parametrize(("name", "example", "fmt"), EVERY_FORMAT)
def test_bad_input_is_an_input_error_naming_the_file(name, example, fmt, tmp_path):
    conformance.check_bad_input_names_file(LAYOUTS[name], example.write(tmp_path, fmt))


def _folder(root, name):
    folder = root / name
    folder.mkdir()
    return folder
