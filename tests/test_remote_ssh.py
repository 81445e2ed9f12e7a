"""A DVC remote over SSH, the usual on-premises team setup: push the tiny grid's outputs to
an ssh:// remote (the key in the uncommitted --local config), clone the repository fresh,
configure the key, pull, and neither DVC nor Snakemake finds anything to do.

Needs the dvc-ssh plugin and a key-only sshd on 127.0.0.1 (`cluster/sshd.sh install`, then
`cluster/sshd.sh start`, as root; started here when root and installed). Without them it
skips, saying why, except when CI=true: there a skip would hide a broken setup, so it fails."""

import getpass
import importlib.util
import os
import shutil
import subprocess
from pathlib import Path

import pytest

import conftest
from conftest import ROOT, assert_fresh_clone_has_nothing_to_do, copy_project, run, tool

pytestmark = pytest.mark.slow

HOST = "127.0.0.1"
PORT = int(os.environ.get("SSHD_DVC_PORT", "2222"))
USER = os.environ.get("SSHD_DVC_USER") or getpass.getuser()
KEY = Path(os.environ.get("SSHD_DVC_KEY", "~/.ssh/dvc_test_ed25519")).expanduser()
SSHD_SH = ROOT / "cluster" / "sshd.sh"
SSHD_ENV = {**os.environ, "SSHD_DVC_PORT": str(PORT), "SSHD_DVC_USER": USER, "SSHD_DVC_KEY": str(KEY)}
SETUP = "as root: cluster/sshd.sh install && cluster/sshd.sh start"


def unavailable(reason):
    conftest.unavailable(reason, SETUP)


def ssh_login():
    """None if the key logs in to the sshd, else why not."""
    if not shutil.which("ssh"):
        return "no ssh client on PATH (apt-get install openssh-client)"
    if not KEY.exists():
        return f"no key {KEY}"
    try:
        result = subprocess.run(
            ["ssh", "-i", str(KEY), "-p", str(PORT), "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes",
             "-o", "ConnectTimeout=5", "-o", "StrictHostKeyChecking=accept-new", f"{USER}@{HOST}", "true"],
            capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        return f"ssh to {USER}@{HOST}:{PORT} timed out"
    return None if result.returncode == 0 else \
        f"ssh -i {KEY} -p {PORT} {USER}@{HOST} failed: {result.stderr.strip()[-300:]}"


@pytest.fixture(scope="session")
def sshd():
    """A key-only sshd on HOST:PORT that KEY logs in to; started by cluster/sshd.sh (and
    stopped afterwards) when it is not running, we are root and openssh-server is installed."""
    if importlib.util.find_spec("dvc_ssh") is None:
        unavailable("the dvc-ssh plugin is not installed (pip install dvc-ssh, pinned in requirements.lock)")
    started = False
    why = ssh_login()
    if why and os.geteuid() == 0 and Path("/usr/sbin/sshd").exists():
        start = subprocess.run(["bash", str(SSHD_SH), "start"], capture_output=True, text=True, env=SSHD_ENV)
        if start.returncode != 0:
            unavailable(f"cluster/sshd.sh start failed: {(start.stdout + start.stderr).strip()[-500:]}")
        started = True
        why = ssh_login()
    if why:
        unavailable(f"no sshd to log in to: {why} ({SETUP})")
    yield f"ssh://{USER}@{HOST}:{PORT}"
    if started:
        subprocess.run(["bash", str(SSHD_SH), "stop"], capture_output=True, env=SSHD_ENV)


def git(project, *args):
    return run(["git", *args], cwd=project)


def dvc(project, *args):
    return run([tool("dvc"), *args], cwd=project)


@pytest.fixture(scope="module")
def pushed(sshd, tmp_path_factory, snakemake_grid):
    """The session's Snakemake-made tiny grid (recorded in dvc.lock), committed to git with an
    ssh remote (its key only in the local config) and pushed over SSH."""
    root = tmp_path_factory.mktemp("team-ssh")
    project = copy_project(snakemake_grid, root / "origin")
    shutil.copy2(ROOT / ".gitignore", project / ".gitignore")  # as in this repository
    remote = root / "dvc-remote"
    dvc(project, "remote", "add", "-d", "team", f"{sshd}{remote}")
    dvc(project, "remote", "modify", "--local", "team", "keyfile", str(KEY))
    git(project, "add", "-A")
    git(project, "commit", "-qm", "tiny grid and its results")
    assert "keyfile" not in (project / ".dvc" / "config").read_text()
    assert ".dvc/config.local" not in git(project, "ls-files").stdout.split()
    dvc(project, "push")
    assert any(path.is_file() for path in (remote / "files" / "md5").rglob("*"))
    return root, project


def test_fresh_clone_pulls_over_ssh_and_has_nothing_to_do(pushed):
    root, origin = pushed
    clone = root / "clone"
    run(["git", "clone", "-q", str(origin), str(clone)], cwd=root)
    assert not (clone / ".dvc" / "config.local").exists()  # the key is each user's own
    dvc(clone, "remote", "modify", "--local", "team", "keyfile", str(KEY))
    dvc(clone, "pull")
    assert_fresh_clone_has_nothing_to_do(origin, clone)
