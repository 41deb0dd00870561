"""One error tree per package, unique names, and one CLI error path with the same exit codes
in every command of `edgeship` and `edgeship-agent`."""

from __future__ import annotations

import ast
import importlib
import pkgutil
from pathlib import Path

import pytest

from runtime.errors import EdgeshipRuntimeError, ExitCode

ROOT = Path(__file__).resolve().parents[1]


def _error_classes() -> dict[str, list[tuple[str, type]]]:
    """Every exception class defined in toolchain, runtime and device_agent, by package."""
    from device_agent.errors import DeviceAgentError
    from toolchain.errors import ToolchainError

    out: dict[str, list[tuple[str, type]]] = {"toolchain": [], "runtime": [], "device_agent": []}
    for pkg in out:
        mod = importlib.import_module(pkg)
        names = [pkg] + [m.name for m in pkgutil.walk_packages(mod.__path__, pkg + ".")]
        for name in names:
            m = importlib.import_module(name)
            for obj in vars(m).values():
                if isinstance(obj, type) and issubclass(obj, BaseException) and obj.__module__ == name:
                    out[pkg].append((f"{name}.{obj.__name__}", obj))
    assert DeviceAgentError in [c for _, c in out["device_agent"]]
    assert ToolchainError in [c for _, c in out["toolchain"]]
    return out


def test_one_root_per_package_and_every_error_carries_an_exit_code():
    from device_agent.errors import DeviceAgentError
    from toolchain.errors import ToolchainError

    roots = {"toolchain": ToolchainError, "runtime": EdgeshipRuntimeError, "device_agent": DeviceAgentError}
    for pkg, classes in _error_classes().items():
        for name, cls in classes:
            assert issubclass(cls, roots[pkg]), f"{name} is not a {roots[pkg].__name__}"
            assert cls.exit_code in (ExitCode.FAILED, ExitCode.BAD_INPUT), name


def test_error_class_names_are_unique_across_the_project():
    seen: dict[str, str] = {}
    dups = []
    for pkg in ("toolchain", "runtime", "device_agent"):
        for p in sorted((ROOT / pkg).rglob("*.py")):
            for node in ast.walk(ast.parse(p.read_text())):
                if isinstance(node, ast.ClassDef) and (node.name.endswith("Error") or node.name == "PayloadRejected"):
                    where = str(p.relative_to(ROOT))
                    if node.name in seen:
                        dups.append(f"{node.name}: {seen[node.name]} and {where}")
                    seen[node.name] = where
    assert dups == []


# ------------------------------------------------------------------ the CLI error path
def _agent(argv, capsys):
    from device_agent.cli import main

    code = main(argv)
    return code, capsys.readouterr()


def _edgeship(argv, capsys):
    from toolchain.cli import main

    code = main(argv)
    return code, capsys.readouterr()


def test_agent_commands_report_errors_in_one_line_with_their_exit_code(tmp_path, capsys):
    missing = tmp_path / "nope"
    code, out = _agent(["status", "--state-dir", str(missing)], capsys)
    assert code == 2 and out.err == f"edgeship-agent status: error: state dir {missing} does not exist " \
                                    f"(run `edgeship-agent install`)\n"
    code, out = _agent(["run", "--config", str(tmp_path / "agent.toml")], capsys)
    assert code == 2 and out.err.startswith("edgeship-agent run: error: ") and "config file not found" in out.err
    (tmp_path / "bad.toml").write_text("[serving]\nprot = 1\n")
    code, out = _agent(["update", "--config", str(tmp_path / "bad.toml")], capsys)
    assert code == 2 and "edgeship-agent update: error: " in out.err and "unknown key(s) ['prot']" in out.err
    code, out = _agent(["rollback", "--state-dir", str(tmp_path / "state")], capsys)  # an empty store
    assert code == 1 and out.err.startswith("edgeship-agent rollback: error: ") and "no previous model" in out.err
    code, out = _agent(["install", "--bundle", str(tmp_path / "x.tar"), "--prefix", str(tmp_path / "p")], capsys)
    assert code == 2 and "not an edgeship bundle (no such file)" in out.err
    assert not (tmp_path / "p").exists()  # refused before anything was written


def test_edgeship_commands_report_errors_in_one_line_with_their_exit_code(tmp_path, capsys):
    code, out = _edgeship(["publish", str(tmp_path / "missing.tar"), "--repo", str(tmp_path / "r"),
                           "--keys", str(tmp_path / "k")], capsys)
    assert code == 2 and out.err.startswith("edgeship publish: error: ") and "missing.tar" in out.err
    code, out = _edgeship(["package", str(tmp_path), "--artifact", "a", "--version", "1.0.0", "--release", "1",
                           "--out", str(tmp_path / "o")], capsys)
    assert code == 2 and out.err.startswith("edgeship package: error: ") and "not a build directory" in out.err
    code, out = _edgeship(["fleet", "status", "--fleet", "a/b"], capsys)
    assert code == 2 and "not a valid topic level" in out.err
    code, out = _edgeship(["push", "--fleet", "f", "--device", "d", "--model", "m", "--release", "1",
                           "--repo", str(tmp_path / "norepo"), "--broker", "nohostport"], capsys)
    assert code == 2 and out.err.startswith("edgeship push: error: ") and "pass --keys DIR" in out.err
    assert _edgeship(["keys", "init", "--dir", str(tmp_path / "k3")], capsys)[0] == 0
    code, out = _edgeship(["push", "--fleet", "f", "--device", "d", "--model", "m", "--release", "1", "--keys",
                           str(tmp_path / "k3"), "--repo", str(tmp_path / "norepo"), "--broker", "nohostport"], capsys)
    assert code == 1 and out.err.startswith("edgeship push: error: ") and "no metadata/ directory" in out.err
    code, out = _edgeship(["keys", "init", "--dir", str(tmp_path / "k2"), "--keys", "root"], capsys)
    assert code == 2 and "--keys expects ROLE=N" in out.err


@pytest.mark.parametrize("exc,code", [
    ("runtime.errors:EngineNotInstalledError", ExitCode.BAD_INPUT),
    ("runtime.contracts.errors:BundleError", ExitCode.BAD_INPUT),
    ("runtime.errors:ModelLoadError", ExitCode.FAILED),
    ("device_agent.configfile:ConfigError", ExitCode.BAD_INPUT),
    ("device_agent.mqtt.errors:TelemetryConfigError", ExitCode.BAD_INPUT),
    ("device_agent.store:BundleRejectedError", ExitCode.BAD_INPUT),
    ("device_agent.store:StoreCorruptError", ExitCode.FAILED),
    ("device_agent.ota.errors:BadSignatureError", ExitCode.FAILED),
    ("toolchain.errors:MissingExtraError", ExitCode.BAD_INPUT),
    ("toolchain.errors:ExportError", ExitCode.FAILED),
    ("toolchain.fleet.errors:BrokerUnavailableError", ExitCode.FAILED),
    ("toolchain.ota.errors:PublishRefusedError", ExitCode.BAD_INPUT),
])
def test_exit_codes_follow_the_rule(exc, code):
    """2 when what the user gave is wrong (a file, flag, config, document, missing extra); 1 when the work failed."""
    module, name = exc.split(":")
    assert getattr(importlib.import_module(module), name).exit_code is code
