"""Small CLI faults of the publishing side: `repo serve` on a busy port or of a folder that is not
a repository, and `publish` to a folder that is not one (refused unless --init)."""

from __future__ import annotations

import socket

from toolchain.cli import main


def _edgeship(argv, capsys):
    code = main(argv)
    return code, capsys.readouterr()


def test_repo_serve_refuses_a_busy_port_and_a_folder_that_is_not_a_repository(tmp_path, capsys, env):
    code, out = _edgeship(["repo", "serve", str(tmp_path / "nope")], capsys)
    assert code == 2 and out.err.count("\n") == 1 and "nope: no such folder" in out.err
    (tmp_path / "empty").mkdir()
    code, out = _edgeship(["repo", "serve", str(tmp_path / "empty")], capsys)
    assert code == 2 and "not a TUF repository (no metadata/timestamp.json)" in out.err
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        code, out = _edgeship(["repo", "serve", str(env.repo), "--port", str(port)], capsys)
    assert code == 2 and out.out == "" and out.err.count("\n") == 1
    assert out.err.startswith("edgeship repo: error: ") and f"cannot listen on 127.0.0.1:{port}" in out.err
    assert "Traceback" not in out.err


def test_publish_to_a_folder_that_is_not_a_repository_needs_init(tmp_path, capsys, env):
    bundle = env.bundle(release=1)
    typo = tmp_path / "repoo"
    code, out = _edgeship(["publish", str(bundle), "--repo", str(typo), "--keys", str(env.keys)], capsys)
    assert code == 2 and "repoo: no such folder; to start a new repository there, publish with --init" in out.err
    assert not typo.exists()  # nothing was created
    code, out = _edgeship(["publish", str(bundle), "--repo", str(typo), "--keys", str(env.keys), "--init"], capsys)
    assert code == 0, out.err
    assert (typo / "metadata" / "timestamp.json").is_file()
    code, out = _edgeship(["publish", str(env.bundle(release=2)), "--repo", str(typo), "--keys", str(env.keys)],
                          capsys)
    assert code == 0, out.err  # an existing repository needs no --init
