"""Chains from lists, YAML files, "default" and "none"; config errors before any work."""

from __future__ import annotations

import pytest

from filters.registry import FILTERS, build_chain


def test_default_chain_builds_and_documents_every_entry():
    chain = build_chain("default")
    names = [f.name for f in chain.filters]
    assert names[:2] == ["text", "shots"]  # cheap first, re-cut before media scores
    assert {"audio", "motion", "blank", "caps"} <= set(names)
    assert len(build_chain("none")) == 0 and len(build_chain(None)) == 0


def test_list_and_yaml_specs(tmp_path):
    chain = build_chain([{"name": "audio", "min_rms_db": -45}, {"name": "caps"}])
    assert chain.filters[0].min_rms_db == -45.0
    path = tmp_path / "chain.yaml"
    path.write_text("filters:\n  - {name: audio, min_rms_db: -40}\n  - name: text\n")
    assert [f.name for f in build_chain(path).filters] == ["audio", "text"]
    assert build_chain(str(path)).filters[0].min_rms_db == -40.0


@pytest.mark.parametrize(
    "text, match",
    [
        ("filters:\n  - name: audoi\n", r"unknown filter 'audoi'"),
        ("filters:\n  - {name: audio, min_db: -3}\n", r"'audio'.*unknown parameter.*min_db"),
        ("filters:\n  - {name: motion, frames: many}\n", r"'motion'.*'frames'"),
        ("filters:\n  - {min_rms_db: -3}\n", r"'name'"),
        ("- name: audio\n", r"'filters:'"),
        ("filters: {name: audio}\n", r"must be a list"),
        ("filters: [\n", r"not valid YAML"),
        ("filters: []\nfliters: []\n", r"unknown top-level"),
        ("filters:\n  - {name: text, reject_patterns: ['(']}\n", r"bad regex"),
    ],
)
def test_yaml_errors_are_clear(tmp_path, text, match):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ValueError, match=match):
        build_chain(path)


def test_not_a_file():
    with pytest.raises(ValueError, match="not a file"):
        build_chain("defualt")


def test_every_filter_has_a_name_and_default_params():
    for name, cls in FILTERS.items():
        assert cls.name == name
        cls()  # defaults are valid


def test_built_chains_pickle_for_dask():
    import pickle

    chain = pickle.loads(pickle.dumps(build_chain("default")))
    assert [f.name for f in chain.filters] == [f.name for f in build_chain("default").filters]
