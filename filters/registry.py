"""Filters by name, and chains built from a list, a YAML file, "default" or "none".

A YAML chain reads::

    filters:
      - {name: audio, min_rms_db: -45}
      - name: motion

Every name and parameter is checked when the chain is built, before any clip
is touched: a typo is a config error, said at once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from filters.agreement import AgreementFilter
from filters.audio import AudioFilter
from filters.base import Filter, FilterChain, FilterContext
from filters.blank import BlankFilter
from filters.caps import CapsFilter
from filters.dedup import DedupFilter
from filters.motion import MotionFilter
from filters.shots import ShotsFilter
from filters.text import TextFilter
from filters.vad import VadFilter

FILTERS: dict[str, type[Filter]] = {
    cls.name: cls
    for cls in (
        TextFilter, ShotsFilter, AudioFilter, VadFilter, MotionFilter, BlankFilter,
        AgreementFilter, DedupFilter, CapsFilter,
    )
}  # fmt: skip

DEFAULT_YAML = Path(__file__).with_name("default.yaml")


def load_spec(path: str | Path) -> list[dict[str, Any]]:
    """The ``filters:`` list of a YAML chain file."""
    import yaml

    path = Path(path)
    try:
        doc = yaml.safe_load(path.read_text())
    except OSError as e:
        raise ValueError(f"filter chain {path}: cannot read: {e}") from e
    except yaml.YAMLError as e:
        raise ValueError(f"filter chain {path}: not valid YAML: {e}") from e
    if not isinstance(doc, dict) or "filters" not in doc:
        raise ValueError(f"filter chain {path}: expected a mapping with a 'filters:' list")
    extra = sorted(set(doc) - {"filters"})
    if extra:
        raise ValueError(f"filter chain {path}: unknown top-level key(s) {extra}")
    spec = doc["filters"] or []
    if not isinstance(spec, list):
        raise ValueError(f"filter chain {path}: 'filters' must be a list")
    return spec


def build_filter(item: dict[str, Any]) -> Filter:
    """One filter from ``{name: ..., param: value, ...}``."""
    if not isinstance(item, dict) or "name" not in item:
        raise ValueError(f"filter entry {item!r}: expected a mapping with a 'name'")
    params = dict(item)
    name = params.pop("name")
    if name not in FILTERS:
        raise ValueError(f"unknown filter {name!r}; known: {sorted(FILTERS)}")
    return FILTERS[name](**params)


def resolve_spec(spec: list[dict[str, Any]] | str | Path | None) -> list[dict[str, Any]]:
    """The list of filter entries a list, a YAML path, ``"default"`` or ``"none"``/None names."""
    if spec is None or spec == "none":
        return []
    if spec == "default":
        return load_spec(DEFAULT_YAML)
    if isinstance(spec, str | Path):
        if not Path(spec).is_file():
            raise ValueError(f"filter chain {str(spec)!r}: not a file, and not 'default' or 'none'")
        return load_spec(spec)
    if isinstance(spec, list):
        return spec
    raise ValueError(
        f"filter chain: expected a list, a YAML path, 'default' or 'none', not {spec!r}"
    )


def build_chain(
    spec: list[dict[str, Any]] | str | Path | None, context: FilterContext | None = None
) -> FilterChain:
    """A chain from a list of filter entries, a YAML path, ``"default"`` or ``"none"``/None."""
    return FilterChain([build_filter(item) for item in resolve_spec(spec)], context)


def split_chain(
    spec: list[dict[str, Any]] | str | Path | None,
    overrides: dict[str, dict[str, Any]] | None = None,
) -> tuple[FilterChain, FilterChain]:
    """(per-clip chain, run-level chain) of one spec: filters that judge a clip alone run
    as clips are cut; those that compare clips (dedup, caps) run once over the whole run,
    after them. ``overrides`` sets parameters of the named filters (command-line options)."""
    items = [dict(item) for item in resolve_spec(spec)]
    for item in items:
        item.update((overrides or {}).get(item.get("name"), {}))
    chain = build_chain(items)
    return (
        FilterChain([f for f in chain.filters if not f.run_level]),
        FilterChain([f for f in chain.filters if f.run_level]),
    )
