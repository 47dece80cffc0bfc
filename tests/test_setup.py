"""The README's two commands set a fresh machine up themselves: `make test` starts with
`make system-deps` (.ci/install-system-deps), which installs the Debian packages the tests need
as root and, without root, stops at once naming the one command to run; `.ci/run` is `make test`."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOBODY = 65534


def _installer_with(tmp_path: Path, packages: str) -> Path:
    """A copy of the installer beside a package list of our choosing (it reads the one beside it)."""
    shutil.copy(ROOT / ".ci" / "install-system-deps", tmp_path / "install-system-deps")
    (tmp_path / "apt-packages.txt").write_text(packages)
    tmp_path.chmod(0o755)
    return tmp_path / "install-system-deps"


def test_ci_runs_exactly_the_readme_test_command():
    commands = [line for line in (ROOT / ".ci" / "run").read_text().splitlines()
                if line.strip() and not line.startswith("#") and not line.startswith(("set ", "cd "))]
    assert commands == ["make test"]
    assert "make test" in (ROOT / "README.md").read_text().split("\n## ", 1)[0]
    target = re.search(r"^test: (.*)$", (ROOT / "Makefile").read_text(), re.M)
    assert target and target.group(1).split()[0] == "system-deps"  # the packages before anything slow


def test_installer_does_nothing_when_all_is_installed(tmp_path):
    done = subprocess.run([_installer_with(tmp_path, "# comment only\nbash  # the shell itself\n")],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout == "" and done.stderr == ""


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"), reason="needs root to drop to another user")
def test_installer_without_root_names_the_command_and_stops():
    with tempfile.TemporaryDirectory() as folder:  # in /tmp itself: pytest's tmp_path is root-only
        installer = _installer_with(Path(folder), "bash\nhyperthumbnail-no-such-package  # missing\n")
        done = subprocess.run(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", str(installer)],
                              capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert done.stderr.strip() == ("missing Debian packages: hyperthumbnail-no-such-package -- run: "
                                   "sudo apt-get install -y hyperthumbnail-no-such-package")
