"""`python -m services.run --help` tells what the environment changes and what exit codes mean."""

from __future__ import annotations

import pytest

from services.launcher.plan import DEFAULT_PORTS
from services.run import parse_args


def test_help_names_the_variables_and_the_default_ports(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit):
        parse_args(["--help"])
    text = capsys.readouterr().out

    for variable in ("DATABASE_URL", "HANDOFF_HOME", "HANDOFF_<SERVICE>_PORT"):
        assert variable in text
    for name, port in DEFAULT_PORTS:
        assert f"{name.upper()} {port}" in text
    assert "exit status" in text
    assert "docs/operations.md" in text
