"""The pip command for a model's requirements.txt (spec §6.1)."""

from __future__ import annotations

from djl.wlm.requirements import pip_command

BASE = ["py", "-m", "pip", "install", "-q", "-r", "requirements.txt",
        "--disable-pip-version-check"]


def test_no_requirements_file_no_pip(tmp_path):
    assert pip_command(tmp_path, "py", offline=False) is None


def test_wheels_folder_and_offline_flags(tmp_path):
    (tmp_path / "requirements.txt").write_text("numpy\n")
    assert pip_command(tmp_path, "py", offline=False) == BASE
    assert pip_command(tmp_path, "py", offline=True) == [*BASE, "--no-deps"]
    (tmp_path / "requirements").mkdir()
    wheels = ["-f", str(tmp_path / "requirements")]
    assert pip_command(tmp_path, "py", offline=False) == [*BASE, *wheels]
    assert pip_command(tmp_path, "py", offline=True) == [*BASE, *wheels, "--no-index"]
