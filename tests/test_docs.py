"""The README is the product's interface: every command, setting and store table is in it."""

from __future__ import annotations

import re

import duckdb
import pytest

from recsys.cli import app
from recsys.config import Config
from recsys.store import CURRENT

from conftest import ROOT

README = (ROOT / "README.md").read_text(encoding="utf-8")


def _commands():
    import typer.main

    group = typer.main.get_command(app)
    return group.commands


@pytest.mark.parametrize("name", sorted(_commands()))
def test_every_command_has_help_and_is_documented(name):
    command = _commands()[name]
    assert command.help and len(command.help) > 20
    for param in command.params:
        if param.param_type_name == "option" and param.name != "help":
            assert param.help, f"{name} {param.name} has no help text"
    assert f"`recsys {name}" in README


def _keys(model, prefix=""):
    for name, field in type(model).model_fields.items():
        value = getattr(model, name)
        if hasattr(type(value), "model_fields"):
            yield from _keys(value, f"{prefix}{name}.")
        else:
            yield f"{prefix}{name}"


@pytest.mark.parametrize("key", sorted(_keys(Config())))
def test_every_setting_is_documented(key):
    assert f"`{key}`" in README or re.search(rf"`{re.escape(key)}`|{re.escape(key)}[,`]", README)


def test_every_store_table_and_column_is_documented(sample_store):
    with duckdb.connect(str(sample_store / CURRENT), read_only=True) as con:
        tables = [row[0] for row in con.execute("SHOW TABLES").fetchall()]
        for table in tables:
            row = re.search(rf"^\| `{table}` \|(.*)$", README, flags=re.MULTILINE)
            assert row, f"table {table} is not in the README"
            columns = [d[0] for d in con.execute(f'SELECT * FROM "{table}" LIMIT 0').description]
            if table == "recommendation_features":
                continue  # documented as "the ranker's input features"
            for column in columns:
                assert f"`{column}`" in row.group(1), f"{table}.{column} is not in the README"
