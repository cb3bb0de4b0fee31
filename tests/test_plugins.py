"""Plugin loading: ``--handlers MODULE:ATTR`` specs and the ``sidecar.handlers`` entry points.

Each test writes its plugin modules (and, for entry points, a ``*.dist-info``) into
``tmp_path`` and puts that on ``sys.path``, so nothing leaks between tests.
"""

from __future__ import annotations

import sys
import textwrap
import uuid

import pytest

import sidecar
from sidecar.errors import HandlerConflict
from sidecar.handlers import Handler
from sidecar.plugins import ENTRY_POINT_GROUP, load_handlers

PLUGIN = """
import sidecar

@sidecar.handler("{prefix}-one")
async def one(ctx, params):
    return {{"one": True}}

@sidecar.handler("{prefix}-two", idempotent=True)
async def two(ctx, params):
    return {{"two": True}}

HANDLERS = [one, two]
GROUP = (two,)
NOT_A_HANDLER = 42
MIXED = [one, "two"]

class Nested:
    handlers = [one]
"""


@pytest.fixture
def plugin(tmp_path, monkeypatch):
    """Write a plugin module; return ``(module_name, type_prefix)``."""

    def write(source: str = PLUGIN, *, name: str | None = None) -> tuple[str, str]:
        name = name or f"sidecar_test_plugin_{uuid.uuid4().hex[:8]}"
        prefix = name.rsplit("_", 1)[-1]
        (tmp_path / f"{name}.py").write_text(textwrap.dedent(source.format(prefix=prefix)))
        monkeypatch.syspath_prepend(str(tmp_path))
        monkeypatch.delitem(sys.modules, name, raising=False)
        return name, prefix

    yield write
    for mod in [m for m in sys.modules if m.startswith("sidecar_test_plugin_")]:
        del sys.modules[mod]


@pytest.fixture
def distribution(tmp_path, monkeypatch):
    """Install a fake distribution whose entry points are ``{name: "module:attr"}``."""

    def install(entry_points: dict[str, str], *, dist: str = "sidecar-fake-plugin") -> None:
        info = tmp_path / f"{dist.replace('-', '_')}-1.2.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.2\n")
        lines = [f"[{ENTRY_POINT_GROUP}]"] + [f"{k} = {v}" for k, v in entry_points.items()]
        (info / "entry_points.txt").write_text("\n".join(lines) + "\n")
        monkeypatch.syspath_prepend(str(tmp_path))

    return install


def test_a_spec_naming_a_list_loads_every_handler_with_its_source(plugin):
    module, prefix = plugin()
    handlers = load_handlers([f"{module}:HANDLERS"], entry_points=False)
    assert [h.type for h in handlers] == [f"{prefix}-one", f"{prefix}-two"]
    assert all(isinstance(h, Handler) for h in handlers)
    assert {h.source for h in handlers} == {f"--handlers {module}:HANDLERS"}
    assert handlers[1].idempotent


def test_a_spec_may_name_one_handler_a_tuple_or_a_dotted_attribute(plugin):
    module, prefix = plugin()
    specs = [f"{module}:one", f"{module}:GROUP", f"{module}:Nested.handlers"]
    handlers = load_handlers(specs, entry_points=False)
    assert sorted(h.type for h in handlers) == [f"{prefix}-one", f"{prefix}-two"]


@pytest.mark.parametrize(
    ("spec", "words"),
    [
        ("no_colon_here", "expected MODULE:ATTR"),
        (":HANDLERS", "expected MODULE:ATTR"),
        ("{module}:", "expected MODULE:ATTR"),
        ("{module}:a:b", "expected MODULE:ATTR"),
        ("sidecar_no_such_module_xyz:HANDLERS", "no module named 'sidecar_no_such_module_xyz'"),
        ("{module}:MISSING", "has no attribute 'MISSING'"),
        ("{module}:NOT_A_HANDLER", "int 42 is not a handler"),
        ("{module}:MIXED", "the list holds 'two', which is not a handler"),
    ],
)
def test_bad_specs_are_value_errors_naming_the_spec(plugin, spec, words):
    module, _ = plugin()
    spec = spec.format(module=module)
    with pytest.raises(ValueError, match="--handlers") as info:
        load_handlers([spec], entry_points=False)
    assert words in str(info.value)
    assert not isinstance(info.value, HandlerConflict)


def test_a_plugin_that_fails_to_import_reports_its_own_error(plugin):
    module, _ = plugin("import sidecar_missing_dependency_xyz\n")
    with pytest.raises(ValueError, match="ModuleNotFoundError") as info:
        load_handlers([f"{module}:X"], entry_points=False)
    assert "sidecar_missing_dependency_xyz" in str(info.value)
    module, _ = plugin("raise RuntimeError('boom')\n")
    with pytest.raises(ValueError, match="RuntimeError: boom"):
        load_handlers([f"{module}:X"], entry_points=False)


def test_one_string_instead_of_a_list_is_refused():
    with pytest.raises(TypeError, match="list"):
        load_handlers("mod:attr", entry_points=False)


def test_entry_points_load_handlers_naming_the_distribution(plugin, distribution):
    module, prefix = plugin()
    distribution({"mine": f"{module}:HANDLERS"})
    handlers = load_handlers([])
    mine = [h for h in handlers if h.type.startswith(prefix)]
    assert [h.type for h in mine] == [f"{prefix}-one", f"{prefix}-two"]
    assert mine[0].source == (
        f"entry point 'mine' ({module}:HANDLERS) from sidecar-fake-plugin 1.2"
    )


def test_entry_points_can_be_turned_off(plugin, distribution):
    module, prefix = plugin()
    distribution({"mine": f"{module}:HANDLERS"})
    assert not [h for h in load_handlers([], entry_points=False) if h.type.startswith(prefix)]


def test_a_broken_entry_point_is_a_value_error_naming_it(plugin, distribution):
    module, _ = plugin()
    distribution({"broken": f"{module}:MISSING"})
    with pytest.raises(ValueError, match=r"entry point 'broken'.*cannot load"):
        load_handlers([])


def test_a_type_claimed_by_two_sources_is_a_conflict_naming_both(plugin, distribution):
    first, prefix = plugin()
    second, _ = plugin(
        f"""
        import sidecar

        @sidecar.handler("{prefix}-one")
        async def other(ctx, params):
            return None
        """.replace("{", "{{").replace("}", "}}"),
    )
    distribution({"theirs": f"{second}:other"})
    with pytest.raises(HandlerConflict) as info:
        load_handlers([f"{first}:HANDLERS"])
    message = str(info.value)
    assert f"{prefix}-one" in message
    assert f"--handlers {first}:HANDLERS" in message
    assert f"entry point 'theirs' ({second}:other)" in message


def test_reusing_a_builtin_name_is_a_conflict_saying_so(plugin):
    module, _ = plugin(
        """
        import sidecar

        @sidecar.handler("sleep")
        async def my_sleep(ctx, params):
            return None
        """.replace("{", "{{").replace("}", "}}"),
    )
    with pytest.raises(HandlerConflict, match="is a built-in task type") as info:
        load_handlers([f"{module}:my_sleep"], entry_points=False)
    assert "the built-in 'sleep' (sidecar.builtins.sleep:sleep)" in str(info.value)
    assert f"--handlers {module}:my_sleep" in str(info.value)
    # A runtime opened with builtins=False may reuse the name.
    [h] = load_handlers([f"{module}:my_sleep"], entry_points=False, builtins=False)
    assert h.type == "sleep"


def test_the_same_handler_named_twice_loads_once(plugin):
    module, prefix = plugin()
    handlers = load_handlers([f"{module}:one", f"{module}:HANDLERS"], entry_points=False)
    assert sorted(h.type for h in handlers) == [f"{prefix}-one", f"{prefix}-two"]


async def test_plugin_handlers_run_in_a_runtime(plugin, tmp_path):
    module, prefix = plugin()
    handlers = load_handlers([f"{module}:HANDLERS"], entry_points=False)
    async with sidecar.open_runtime(tmp_path / "home", handlers=handlers) as rt:
        task_id = await rt.submit(f"{prefix}-two")
        rec = await rt.wait(task_id, timeout=5)
    assert rec.result == {"two": True}


async def test_the_runtime_rejects_a_plugin_shadowing_a_builtin(plugin, tmp_path):
    module, _ = plugin(
        """
        import sidecar

        @sidecar.handler("exec")
        async def exec_anything(ctx, params):
            return None
        """.replace("{", "{{").replace("}", "}}"),
    )
    [h] = load_handlers([f"{module}:exec_anything"], entry_points=False, builtins=False)
    with pytest.raises(HandlerConflict, match="'exec' is registered twice"):
        async with sidecar.open_runtime(tmp_path / "home", handlers=[h]):
            pass
