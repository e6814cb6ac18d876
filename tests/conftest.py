"""Makes tests/serving.py (the real-server fixture) importable from every test folder."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))


import pytest  # noqa: E402
import serving  # noqa: E402


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Tests of a module marked ``both_servers`` run once per HTTP server."""
    if metafunc.definition.get_closest_marker("both_servers") is not None:
        metafunc.parametrize("http_server", serving.HTTP_SERVERS, indirect=True)


@pytest.fixture(autouse=True)
def http_server(request: pytest.FixtureRequest):
    """The HTTP server ``running_server`` starts: the test's parameter, else djl's."""
    serving.default_http_server = getattr(request, "param", "djl")
    yield serving.default_http_server
    serving.default_http_server = "djl"
