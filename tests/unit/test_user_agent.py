"""The User-Agent shipper sends: its own, with the app's one line and bounded, where a proxied call brought one."""

from __future__ import annotations

import pytest

from shipper.sinks.transport import MAX_APP_AGENT, USER_AGENT, user_agent


@pytest.mark.parametrize(
    ("app_agent", "sent"),
    [
        (None, USER_AGENT),
        ("", USER_AGENT),
        ("   ", USER_AGENT),
        ("freeplay-python/0.6.1", f"{USER_AGENT} (via freeplay-python/0.6.1)"),
        ("Mozilla/5.0 (X11;\tLinux)  x", f"{USER_AGENT} (via Mozilla/5.0 (X11; Linux) x)"),
        ("a" * 500, f"{USER_AGENT} (via {'a' * MAX_APP_AGENT})"),
    ],
)
def test_user_agent_appends_the_apps_agent_on_one_bounded_line(app_agent: str | None, sent: str) -> None:
    assert user_agent(app_agent) == sent


def test_shippers_agent_names_its_version() -> None:
    from shipper import __version__

    assert f"shipper/{__version__}" == USER_AGENT
