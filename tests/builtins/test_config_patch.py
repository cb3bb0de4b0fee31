import hashlib
import json
import os
import stat

import pytest
import trio

from sidecar.builtins.config_patch import config_patch, merge_patch
from sidecar.errors import TaskError

TOML = b"""\
# node configuration; managed by hand and by sidecar
moniker = "node-0"  # shown to peers

[p2p]
# comma-separated seeds
seeds = ["a@1.2.3.4:26656"]
port = 26656

[rpc]
laddr = "tcp://127.0.0.1:26657"
"""


@pytest.fixture
def ctx_dict(home):
    return {"home": home, "allow_exec": False}


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def test_toml_patch_merges_and_keeps_comments_and_layout(home, run_handler):
    (home / "config.toml").write_bytes(TOML)
    result = await run_handler(
        config_patch,
        {"file": "config.toml", "patch": {"p2p": {"port": 30000, "pex": False}, "rpc": None}},
    )
    text = (home / "config.toml").read_text()
    assert text == TOML.decode().replace("port = 26656", "port = 30000\npex = false").replace(
        '\n[rpc]\nladdr = "tcp://127.0.0.1:26657"\n', ""
    )
    assert "# comma-separated seeds" in text and "# shown to peers" in text
    assert result == {"file": "config.toml", "changed": True, "sha256": sha(text.encode())}


async def test_a_patch_already_applied_changes_nothing_not_even_mtime(home, run_handler):
    path = home / "config.toml"
    path.write_bytes(TOML)
    os.utime(path, (1_000_000, 1_000_000))
    patch = {"moniker": "node-0", "p2p": {"port": 26656, "seeds": ["a@1.2.3.4:26656"]}}
    result = await run_handler(config_patch, {"file": "config.toml", "patch": patch})
    assert result == {"file": "config.toml", "changed": False, "sha256": sha(TOML)}
    assert path.read_bytes() == TOML
    assert path.stat().st_mtime == 1_000_000


async def test_running_twice_is_idempotent(home, run_handler):
    (home / "config.toml").write_bytes(TOML)
    params = {"file": "config.toml", "patch": {"p2p": {"port": 1, "extra": {"a": [1, 2]}}}}
    first = await run_handler(config_patch, params)
    after_first = (home / "config.toml").read_bytes()
    second = await run_handler(config_patch, params)
    assert first["changed"] and not second["changed"]
    assert first["sha256"] == second["sha256"] == sha(after_first)
    assert (home / "config.toml").read_bytes() == after_first


async def test_toml_values_keep_their_types_true_is_not_1(home, run_handler):
    (home / "c.toml").write_text("a = 1\nb = 1.0\n")
    result = await run_handler(config_patch, {"file": "c.toml", "patch": {"a": True, "b": 1.0}})
    assert result["changed"]
    assert (home / "c.toml").read_text() == "a = true\nb = 1.0\n"


async def test_json_patch_keeps_indent_and_null_deletes(home, run_handler):
    (home / "app.json").write_text('{\n    "a": 1,\n    "b": {"c": 2, "d": 3}\n}\n')
    result = await run_handler(
        config_patch, {"file": "app.json", "patch": {"b": {"c": None}, "e": [1, None]}}
    )
    text = (home / "app.json").read_text()
    assert json.loads(text) == {"a": 1, "b": {"d": 3}, "e": [1, None]}
    assert text.startswith('{\n    "a": 1,') and text.endswith("}\n")
    assert result["sha256"] == sha(text.encode())


async def test_compact_json_stays_compact_and_unchanged_json_is_untouched(home, run_handler):
    (home / "a.json").write_bytes(b'{"a": 1, "b": [1,2]}')
    assert not (await run_handler(config_patch, {"file": "a.json", "patch": {"a": 1}}))["changed"]
    assert (home / "a.json").read_bytes() == b'{"a": 1, "b": [1,2]}'
    await run_handler(config_patch, {"file": "a.json", "patch": {"a": 2}})
    assert (home / "a.json").read_bytes() == b'{"a":2,"b":[1,2]}'


async def test_create_makes_the_file_and_missing_directories(home, run_handler):
    result = await run_handler(
        config_patch, {"file": "etc/new.toml", "patch": {"x": {"y": 1, "z": None}}, "create": True}
    )
    assert (home / "etc/new.toml").read_text() == "[x]\ny = 1\n"
    assert result["changed"] is True


async def test_missing_file_without_create_fails_with_a_hint(home, run_handler):
    with pytest.raises(TaskError, match="does not exist") as info:
        await run_handler(config_patch, {"file": "nope.toml", "patch": {"a": 1}})
    assert info.value.hint == "set create: true to create it"
    assert not (home / "nope.toml").exists()


@pytest.mark.parametrize(
    ("name", "content", "words"),
    [
        ("bad.toml", b"[p2p\nport = 1\n", "is not valid TOML: "),
        ("dup.toml", b"a = 1\na = 2\n", "is not valid TOML: "),
        ("bad.json", b'{"a": 1,}', "is not valid JSON: Expecting property name"),
        ("latin.toml", b'a = "\xe9"\n', "not UTF-8"),
    ],
)
async def test_a_file_that_does_not_parse_fails_and_is_left_untouched(
    home, run_handler, name, content, words
):
    (home / name).write_bytes(content)
    with pytest.raises(TaskError, match=words):
        await run_handler(config_patch, {"file": name, "patch": {"a": 3}})
    assert (home / name).read_bytes() == content
    assert sorted(p.name for p in home.iterdir()) == [name]


async def test_write_keeps_permissions_and_leaves_no_temp_files(home, run_handler):
    path = home / "secret.toml"
    path.write_bytes(TOML)
    path.chmod(0o600)
    await run_handler(config_patch, {"file": "secret.toml", "patch": {"moniker": "x"}})
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in home.iterdir()] == ["secret.toml"]


async def test_a_symlink_inside_home_is_followed_and_kept(home, run_handler):
    (home / "real").mkdir()
    (home / "real/config.toml").write_bytes(TOML)
    (home / "config.toml").symlink_to("real/config.toml")
    await run_handler(config_patch, {"file": "config.toml", "patch": {"moniker": "y"}})
    assert (home / "config.toml").is_symlink()
    assert 'moniker = "y"' in (home / "real/config.toml").read_text()


async def test_a_directory_is_not_a_file(home, run_handler):
    (home / "dir.toml").mkdir()
    with pytest.raises(TaskError, match=r"cannot read dir\.toml"):
        await run_handler(config_patch, {"file": "dir.toml", "patch": {"a": 1}})


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory permissions")
async def test_an_unwritable_directory_fails_retryably_and_keeps_the_file(home, run_handler):
    (home / "ro").mkdir()
    (home / "ro/c.toml").write_bytes(TOML)
    (home / "ro").chmod(0o500)
    try:
        with pytest.raises(TaskError, match=r"cannot write ro/c\.toml") as info:
            await run_handler(config_patch, {"file": "ro/c.toml", "patch": {"a": 1}})
    finally:
        (home / "ro").chmod(0o700)
    assert info.value.retryable
    assert (home / "ro/c.toml").read_bytes() == TOML


async def test_concurrent_patches_of_one_file_both_land(home, run_handler):
    (home / "c.json").write_text("{}\n")
    async with trio.open_nursery() as nursery:
        for i in range(10):
            nursery.start_soon(run_handler, config_patch, {"file": "c.json", "patch": {f"k{i}": i}})
    assert json.loads((home / "c.json").read_text()) == {f"k{i}": i for i in range(10)}


@pytest.mark.parametrize(
    ("params", "field", "words"),
    [
        ({"patch": {}}, "file", "Field required"),
        ({"file": "a.toml"}, "patch", "Field required"),
        ({"file": "a.toml", "patch": [1]}, "patch", "valid dictionary"),
        ({"file": "a.toml", "patch": "x"}, "patch", "valid dictionary"),
        ({"file": 3, "patch": {}}, "file", "valid string"),
        ({"file": "a.toml", "patch": {}, "format": "yaml"}, "format", "'toml' or 'json'"),
        ({"file": "a.conf", "patch": {}}, "format", "cannot infer the format of 'a.conf'"),
        ({"file": "a.toml", "patch": {}, "create": "yes"}, "create", "valid boolean"),
        ({"file": "a.toml", "patch": {"a": [1, None]}}, "patch", "null inside an array"),
        ({"file": "a.toml", "patch": {}, "mode": 1}, "mode", "Extra inputs"),
        ({"file": "", "patch": {}}, "file", "non-empty path"),
        ({"file": "../a.toml", "patch": {}}, "file", "must not contain '..'"),
        ({"file": "etc/../../a.toml", "patch": {}}, "file", "must not contain '..'"),
        ({"file": "/etc/a.toml", "patch": {}}, "file", "not absolute"),
        ({"file": "..\\a.toml", "patch": {}}, "file", "'/' as the separator"),
        ({"file": ".", "patch": {}, "format": "json"}, "file", "below the home directory"),
        ({"file": "sidecar.db", "patch": {}, "format": "json"}, "file", "sidecar database"),
        ({"file": "sidecar.db-wal", "patch": {}, "format": "json"}, "file", "sidecar database"),
    ],
)
def test_bad_params_are_rejected_at_submit_naming_the_field(
    invalid, ctx_dict, params, field, words
):
    err = invalid(config_patch, params, ctx_dict)
    assert err.field == field, str(err)
    assert words in str(err)


def test_a_json_file_may_hold_null_in_arrays(ctx_dict):
    params = config_patch.validate({"file": "a.json", "patch": {"a": [None]}}, ctx_dict)
    assert params.format == "json"


def test_explicit_format_wins_over_the_extension(ctx_dict):
    assert (
        config_patch.validate({"file": "node.conf", "patch": {}, "format": "toml"}, ctx_dict).format
        == "toml"
    )


def test_symlinked_directory_escaping_home_is_rejected_at_submit(invalid, home, tmp_path, ctx_dict):
    (tmp_path / "outside").mkdir()
    (home / "link").symlink_to(tmp_path / "outside")
    err = invalid(config_patch, {"file": "link/a.toml", "patch": {}}, ctx_dict)
    assert err.field == "file"
    assert "resolves outside the home directory" in str(err)


def test_symlinked_file_escaping_home_is_rejected_at_submit(invalid, home, tmp_path, ctx_dict):
    (tmp_path / "victim.toml").write_text("a = 1\n")
    (home / "a.toml").symlink_to(tmp_path / "victim.toml")
    assert invalid(config_patch, {"file": "a.toml", "patch": {}}, ctx_dict).field == "file"


def test_a_runtime_without_home_rejects_config_patch(invalid):
    err = invalid(config_patch, {"file": "a.toml", "patch": {}}, {"home": None})
    assert "needs a runtime with a home directory" in str(err)


def test_without_context_only_lexical_checks_apply(invalid):
    assert config_patch.validate({"file": "a.toml", "patch": {}}).file == "a.toml"
    assert invalid(config_patch, {"file": "../a.toml", "patch": {}}, None).field == "file"


async def test_a_symlink_planted_after_submit_is_caught_when_the_task_runs(
    home, tmp_path, make_ctx
):
    victim = tmp_path / "victim.toml"
    victim.write_bytes(TOML)
    params = config_patch.validate(
        {"file": "a.toml", "patch": {"a": 1}}, {"home": home, "allow_exec": False}
    )
    (home / "a.toml").symlink_to(victim)
    with pytest.raises(TaskError, match="resolves outside the home directory"):
        await config_patch(make_ctx(), params)
    assert victim.read_bytes() == TOML


@pytest.mark.parametrize(
    ("target", "patch", "expected"),
    [  # RFC 7386, Appendix A
        ({"a": "b"}, {"a": "c"}, {"a": "c"}),
        ({"a": "b"}, {"b": "c"}, {"a": "b", "b": "c"}),
        ({"a": "b"}, {"a": None}, {}),
        ({"a": "b", "b": "c"}, {"a": None}, {"b": "c"}),
        ({"a": ["b"]}, {"a": "c"}, {"a": "c"}),
        ({"a": "c"}, {"a": ["b"]}, {"a": ["b"]}),
        ({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}, {"a": {"b": "d"}}),
        ({"a": [{"b": "c"}]}, {"a": [1]}, {"a": [1]}),
        (["a", "b"], ["c", "d"], ["c", "d"]),
        ({"a": "b"}, ["c"], ["c"]),
        ({"a": "foo"}, None, None),
        ({"a": "foo"}, "bar", "bar"),
        ({"e": None}, {"a": 1}, {"e": None, "a": 1}),
        ([1, 2], {"a": "b", "c": None}, {"a": "b"}),
        ({}, {"a": {"bb": {"ccc": None}}}, {"a": {"bb": {}}}),
    ],
)
def test_merge_patch_follows_rfc_7386(target, patch, expected):
    assert merge_patch(target, patch) == expected
