from __future__ import annotations

from pathlib import Path

import pytest

from conveyor.errors import ConfigError
from conveyor.policy.config import Role, find_config, load_config

GOOD = """\
version: 1
identities:
  ci:       {key: keys/ci.pub,       roles: [builder, tester, scanner]}
  deployer: {key: keys/deployer.pub, roles: [deployer]}
  alice:    {key: keys/alice.pub,    roles: [approver]}
"""


def _write(tmp_path: Path, text: str, keys: tuple[str, ...] = ("ci", "deployer", "alice")) -> Path:
    (tmp_path / "keys").mkdir(exist_ok=True)
    for name in keys:
        (tmp_path / "keys" / f"{name}.pub").write_text("placeholder")
    path = tmp_path / "conveyor.yaml"
    path.write_text(text)
    return path


def test_the_documented_form_loads(tmp_path: Path) -> None:
    config = load_config(_write(tmp_path, GOOD))
    assert set(config.identities) == {"ci", "deployer", "alice"}
    assert config.identities["ci"].roles == {Role.BUILDER, Role.TESTER, Role.SCANNER}
    assert config.identities["alice"].key_path == tmp_path / "keys" / "alice.pub"
    assert config.ledger_url == f"sqlite:///{tmp_path / '.conveyor' / 'conveyor.db'}"


def test_six_mistakes_are_all_reported_with_lines(tmp_path: Path) -> None:
    text = """\
version: 2
identities:
  ci:       {key: keys/ci.pub,       roles: [builder, tester, sccanner]}
  deployer: {key: keys/missing.pub,  roles: [deployer]}
  Alice:    {key: keys/alice.pub,    roles: [approver]}
  bob:      {roles: [server]}
colour: blue
"""
    with pytest.raises(ConfigError) as info:
        load_config(_write(tmp_path, text))
    problems = info.value.problems
    joined = "\n".join(problems)
    assert len(problems) == 6, joined
    assert any(":1:" in p and "version" in p for p in problems)
    assert any(":3:" in p and "roles" in p for p in problems)
    assert any(":5:" in p and "Alice" in p for p in problems)
    assert any(":4:" in p and "missing.pub" in p for p in problems)
    assert any(":6:" in p and "key" in p for p in problems)
    assert any(":7:" in p and "colour" in p for p in problems)
    assert "6 problems" in str(info.value)
    assert "\n" not in str(info.value)


def test_missing_key_file_is_reported_with_its_line(tmp_path: Path) -> None:
    path = _write(tmp_path, GOOD, keys=("ci", "alice"))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.problems == [
        f"{path}:4:14: identities.deployer.key: key file "
        f"{tmp_path / 'keys' / 'deployer.pub'} does not exist"
    ]


@pytest.mark.parametrize(
    "text",
    [
        "version: 1\nidentities: !!python/object:os.system {}\n",
        "version: 1\nversion: 1\n",
        "- 1\n- 2\n",
        "",
        "version: [1\n",
        "version: 1\nidentities: {}\n",
    ],
)
def test_hostile_or_empty_configs_are_refused(tmp_path: Path, text: str) -> None:
    with pytest.raises(ConfigError):
        load_config(_write(tmp_path, text))


def test_oversized_and_binary_configs_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "conveyor.yaml"
    path.write_bytes(b"a: " + b"x" * (2 * 1024 * 1024))
    with pytest.raises(ConfigError, match="larger than"):
        load_config(path)
    path.write_bytes(b"version: 1\n\xff\xfe")
    with pytest.raises(ConfigError, match="UTF-8"):
        load_config(path)


def test_find_config_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match="conveyor init"):
        find_config(cwd=tmp_path)
    path = _write(tmp_path, GOOD)
    assert find_config(cwd=tmp_path) == path.resolve()
    other = tmp_path / "other.yaml"
    other.write_text(GOOD)
    monkeypatch.setenv("CONVEYOR_CONFIG", str(other))
    assert find_config(cwd=tmp_path) == other.resolve()
    with pytest.raises(ConfigError, match="does not exist"):
        find_config(tmp_path / "nope.yaml")


def test_alias_bomb_is_refused_quickly(tmp_path: Path) -> None:
    lines = ['a: &a ["x", "x", "x", "x", "x", "x", "x", "x", "x"]']
    for prev, name in zip("abcdefgh", "bcdefghi", strict=True):
        lines.append(f"{name}: &{name} [{', '.join([f'*{prev}'] * 9)}]")
    path = tmp_path / "conveyor.yaml"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ConfigError, match="alias bomb"):
        load_config(path)


def test_problem_list_is_sorted_by_line(tmp_path: Path) -> None:
    text = "colour: blue\nversion: 3\nidentities: {ci: {key: nope.pub, roles: [root]}}\n"
    with pytest.raises(ConfigError) as info:
        load_config(_write(tmp_path, text, keys=()))
    lines = [
        int(p.removeprefix(f"{tmp_path}/conveyor.yaml:").split(":")[0]) for p in info.value.problems
    ]
    assert lines == sorted(lines)
    assert len(lines) == 4
