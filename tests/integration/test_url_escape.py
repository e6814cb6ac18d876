"""Dynamic loading cannot leave ``model_url_pattern``, however the URL is spelt, and every
way in (prediction, registration, workflow file) goes through ``djl.url_policy``."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from serving import MODELS, running_server, runtime_pids

from djl import url_policy
from djl.errors import Forbidden

TEXT = {"content-type": "text/plain"}

EVIL_MODEL = """\
import pathlib

pathlib.Path(__file__).with_name("RAN").write_text("evil ran")


def handle(inputs):
    return None
"""


def _escapes(allowed: Path) -> list[str]:
    """``model_url`` values (as the server receives them) that name ``../evil``."""
    a = str(allowed)
    return [
        f"file:{a}/../evil",
        f"file:{a}/%2e%2e/evil",
        f"file:{a}/%252e%252e/evil",
        f"file:{a}/.%2e/evil",
        f"file:{a}/%2e./evil",
        f"file:{a}/%2E%2E/evil",
        f"file:{a}/%2E%2e/evil",
        f"file:{a}/%2e%2E%2fevil",
        f"file:{a}/..%2fevil",
        f"file:{a}/..%2Fevil",
        f"file:{a}/x%2f..%2f..%2fevil",
        f"file:{a}//%2e%2e//evil",
        f"file:{a}/./%2e%2e/evil/",
        f"file://{a}/%2e%2e/evil",
        f"file://localhost{a}/%2e%2e/evil",
        f"file:///{a.lstrip('/')}/.%2E/evil",
        f"file:{a}/%2e%2e/evil/model.py",
    ]


@pytest.fixture
def folders(tmp_path: Path) -> tuple[Path, Path]:
    """(allowed, evil): a folder the pattern admits, holding a working model, and a model
    folder beside it whose model.py leaves a marker file when it is imported."""
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    shutil.copytree(MODELS / "behave", allowed / "good",
                    ignore=shutil.ignore_patterns("__pycache__"))
    evil = tmp_path / "evil"
    evil.mkdir()
    (evil / "model.py").write_text(EVIL_MODEL)
    return allowed, evil


async def test_encoded_dot_segments_never_load_a_model_outside_the_pattern(tmp_path, folders):
    allowed, evil = folders
    # Both file: spellings in the pattern, so a refusal is the dots', not the spelling's.
    pattern = f"file:(//)?{re.escape(str(allowed))}/.*"
    async with running_server(tmp_path, model_url_pattern=pattern) as server:
        client = server.client
        wrong = []
        for i, url in enumerate(_escapes(allowed)):
            for how in ("query", "header", "form"):
                path = f"/predictions/evil{i}{how}"
                if how == "query":
                    r = await client.post(path, params={"model_url": url}, content=b"hi",
                                          headers=TEXT)
                elif how == "header":
                    r = await client.post(path, headers={"model_url": url, **TEXT},
                                          content=b"hi")
                else:
                    r = await client.post(path, data={"model_url": url})
                json_body = r.headers.get("content-type", "").startswith("application/json")
                answer = (r.status_code, r.json().get("message") if json_body else r.text)
                if answer != (404, f"Permission denied: {url}"):
                    wrong.append((how, url, answer))
        assert wrong == [], "\n".join(map(str, wrong))
        assert not (evil / "RAN").exists()
        assert runtime_pids(evil) == set()
        assert (await client.get("/models")).json()["models"] == []

        # The pattern still admits what it names, an encoded letter included.
        good = f"file:{allowed}/go%6fd/"
        r = await client.post("/predictions/good", params={"model_url": good}, content=b"ok",
                              headers=TEXT)
        assert (r.status_code, r.content) == (200, b"ok")
    assert not (evil / "RAN").exists()


async def test_every_way_in_asks_the_url_policy(tmp_path, folders, monkeypatch):
    """With ``url_policy.check`` refusing everything, nothing registers or loads, by any
    route: the registry and the store have no check of their own to fall back on."""
    allowed, evil = folders
    asked: list[str] = []

    def refuse(url: str, config: object, *, dynamic: bool = False) -> None:
        asked.append(url)
        raise Forbidden(f"policy says no: {url}")

    monkeypatch.setattr(url_policy, "check", refuse)
    workflow = tmp_path / "wf.json"
    workflow.write_text(json.dumps({"models": {"m": f"file:{evil}/"},
                                    "workflow": {"out": ["m", "in"]}}))
    pattern = f"file:{re.escape(str(allowed))}/.*"
    async with running_server(tmp_path, model_url_pattern=pattern) as server:
        client = server.client
        good = f"file:{allowed}/good/"
        for r in (
            await client.post("/models", params={"url": good, "model_name": "g"}),
            await client.post("/workflows", params={"url": str(workflow)}),
            await client.post("/predictions/dyn", params={"model_url": good}, content=b"x",
                              headers=TEXT),
        ):
            assert r.status_code == 403 and r.json()["message"].startswith("policy says no: ")
        assert asked == [good, str(workflow), good]
        assert (await client.get("/models")).json()["models"] == []
    assert not (evil / "RAN").exists()


def test_no_other_module_reads_the_url_settings():
    """Only the policy (and the config that defines them) reads the URL rules' settings."""
    root = Path(url_policy.__file__).parent
    readers = sorted(
        str(path.relative_to(root))
        for path in root.rglob("*.py")
        if re.search(r"\.(allowed_urls|model_url_pattern)\b", path.read_text())
    )
    assert readers == ["url_policy.py"]
