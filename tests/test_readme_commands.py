"""Every command the READMEs name answers `--help`: exit 0, a usage line, no traceback.

The list is read from README.md and bench/README.md, not kept here: every `bench/`, `scripts/`
or `examples/` Python file they mention, and every `flask --app bridge <command>`. A command
named there is covered as soon as it is named. Each runs as a subprocess in an empty folder,
with settings that keep it away from the checkout's own registry and secret.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import JWT_SECRET

ROOT = Path(__file__).resolve().parent.parent
READMES = (ROOT / "README.md", ROOT / "bench" / "README.md")
SCRIPT = re.compile(r"\b((?:bench|scripts|examples)/[\w/]+\.py)\b")
FLASK_COMMAND = re.compile(r"\bflask --app bridge ([a-z][a-z-]*)")
FLASK = Path(sys.executable).with_name("flask")


def _readme_text() -> str:
    return "\n".join(path.read_text() for path in READMES)


def named_scripts() -> list[str]:
    return sorted(set(SCRIPT.findall(_readme_text())))


def named_flask_commands() -> list[str]:
    return sorted(set(FLASK_COMMAND.findall(_readme_text())))


def answer_help(argv: list[str], cwd: Path) -> subprocess.CompletedProcess:
    # An empty .env here stops the .env lookup from finding one further up; the settings make
    # sure that an app built for the help text migrates nothing and writes no secret.
    (cwd / ".env").touch()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT),
                                                                     os.environ.get("PYTHONPATH")])),
           "DATABASE_URL": f"sqlite:///{cwd / 'registry.db'}", "JWT_SECRET_KEY": JWT_SECRET,
           "AUTO_MIGRATE": "false", "BRIDGE_ENGINE": "offline", "REDIS_URL": ""}
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=60)


def assert_helpful(result: subprocess.CompletedProcess) -> None:
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert re.search(r"^usage:", result.stdout, re.IGNORECASE | re.MULTILINE), output[-3000:]
    assert "Traceback" not in output, output[-3000:]


def test_the_readmes_name_commands():
    """The tests below cover what the READMEs name; if they found nothing, they prove nothing."""
    assert "bench/soak.py" in named_scripts()
    assert "scripts/setup_assistant.py" in named_scripts()
    assert {"token", "setup-assistant", "migrate-threads", "run-worker", "db"} <= set(
        named_flask_commands())


@pytest.mark.parametrize("script", named_scripts())
def test_script_answers_help(script, tmp_path):
    assert (ROOT / script).is_file(), f"the README names {script}, which does not exist"

    assert_helpful(answer_help([sys.executable, str(ROOT / script), "--help"], tmp_path))


@pytest.mark.parametrize("command", named_flask_commands())
def test_flask_command_answers_help(command, tmp_path):
    assert FLASK.exists(), f"flask is not installed next to {sys.executable}"

    result = answer_help([str(FLASK), "--app", "bridge", command, "--help"], tmp_path)

    assert_helpful(result)
    assert f"flask {command}" in result.stdout
    assert not (tmp_path / "registry.db").exists(), "--help touched the registry"
