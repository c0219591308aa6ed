"""MkDocs hook: pages quote the configs and the results registry instead of copying them, so the
site cannot drift from what metarun runs and what it measured.

    <!-- algo-config: maml -->     the YAML of conf/algo/maml.yaml, as it is
    <!-- results: maml -->         the registry's table for that learner (results/, metarun-results)
    <!-- results: all -->          the registry's whole table
    <!-- results-data: navigation2d -->  the registry's table for that data set
    <!-- results-variants: protonet_cell_omniglot_20way -->  a recipe's variants, with paired tests
"""
from __future__ import annotations

import re
from pathlib import Path

from metarun.errors import MetarunError
from metarun.registry import REGISTRY, load_entries, searched_cell_recipe, recipe_name, table, variants

CONF = Path(__file__).resolve().parents[1] / "metarun" / "conf"
MARKER = re.compile(r"<!-- (algo-config|results|results-data|results-variants): ([\w-]+) -->")


def replacement(kind: str, name: str) -> str:
    if kind == "algo-config":
        path = CONF / "algo" / f"{name}.yaml"
        return f"`conf/algo/{name}.yaml`, the defaults of `algo={name}`:\n\n```yaml\n{path.read_text()}```"
    if kind == "results-variants":
        try:
            return variants(load_entries(REGISTRY), name)
        except MetarunError:
            return f"No recorded run of `{name}` yet ([how entries are made](../results-registry.md))."
    field = "data" if kind == "results-data" else "algo"
    entries = [e for e in load_entries(REGISTRY) if name == "all" or e["results"][field] == name]
    if kind == "results" and name != "all":  # a searched cell's test is on MetaNAS's page, its controls too
        entries = [e for e in entries if not searched_cell_recipe(recipe_name(e))]
    if not entries:
        return ("No recorded run yet: this learner has no entry in the results registry "
                "([how entries are made](../results-registry.md)).")
    return table(entries, command_column=False)


def on_page_markdown(markdown: str, page, config, files) -> str:
    return MARKER.sub(lambda m: replacement(m.group(1), m.group(2)), markdown)
