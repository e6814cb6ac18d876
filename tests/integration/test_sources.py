"""Model sources through the management API: archives, remote URLs, and their safety rules.

Every test talks to the real server (hypercorn, real worker processes) the way a client
does. Archives are built in ``tmp_path`` from the bundled echo example and served by
``http.server`` on 127.0.0.1 (``store_helpers``); nothing leaves the loopback interface.
The unit-level rules (every hostile-archive variant, every remote failure) are in
tests/test_store.py; here each kind is proven once end to end: the HTTP status and message
a client sees, the registration rolled back, the cache left clean.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import trio
from serving import EXAMPLES, model_url, running_server
from store_helpers import (
    ServerThread,
    Site,
    layered_bomb,
    snapshot,
    tar_bytes,
    zip_bomb,
    zip_bytes,
)

from djl.errors import Forbidden
from djl.store import url_hash

TEXT = {"content-type": "text/plain"}
ECHO_FILES = {name: (EXAMPLES / "echo" / name).read_bytes()
              for name in ("model.py", "serving.properties")}

#: A model that answers every request with the properties of its init call.
PROPS_MODEL = b'''
from djl_python import Output

INIT = {}


def handle(inputs):
    if inputs.is_empty():
        INIT.update(inputs.get_properties())
        return None
    return Output().add_as_json(INIT)
'''


# -- helpers ----------------------------------------------------------------------------------


def echo(prefix: str = "") -> list[tuple]:
    """store_helpers entries of the echo example, under ``prefix``."""
    return [("file", prefix + name, data) for name, data in ECHO_FILES.items()]


def free_port() -> int:
    """A port nothing listens on (bound, then closed again)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def repo_dir(tmp_path: Path) -> Path:
    """``<DJL_CACHE_DIR>/cache/repo``: where running_server's archives are extracted."""
    return tmp_path / "cache" / "cache" / "repo"


def cache_files(tmp_path: Path) -> set[str]:
    """Everything under the cache that is not one of its (empty) top-level folders."""
    root = tmp_path / "cache"
    if not root.exists():
        return set()
    return snapshot(root) - {"cache", "cache/repo", "download"}


async def predict(c: httpx.AsyncClient, name: str, body: str = "hello") -> str:
    r = await c.post(f"/predictions/{name}", content=body.encode(), headers=TEXT)
    assert r.status_code == 200, r.text
    return r.text


async def register(c: httpx.AsyncClient, url: str, name: str) -> None:
    r = await c.post("/models", params={"url": url, "model_name": name})
    assert r.status_code == 200, r.text
    assert r.json() == {"status": f'Model "{name}" registered.'}


async def refused(c: httpx.AsyncClient, url: str, status: int, *fragments: str,
                  route: str = "/models") -> str:
    """Register ``url`` (POST ``route``) and expect the error ``status`` whose message holds
    ``fragments``, as a spec error body. Returns the message."""
    r = await c.post(route, params={"url": url})
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/json"
    body = r.json()
    assert set(body) == {"code", "type", "message"} and body["code"] == status
    for fragment in fragments:
        assert fragment in body["message"], body
    return body["message"]


async def assert_nothing_registered(c: httpx.AsyncClient) -> None:
    assert (await c.get("/models")).json() == {"models": []}
    assert (await c.get("/workflows")).json()["workflows"] == []
    r = await c.get("/ping")
    assert r.status_code == 200 and r.json() == {}


def leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for sub in exc.exceptions for leaf in leaves(sub)]
    return [exc]


# -- archives that work -----------------------------------------------------------------------


async def test_archives_register_and_predict(tmp_path):
    """tar.gz, zip, a nested folder and an inner archive, over http and from disk."""
    site = Site(files={
        "/echo.tar.gz": tar_bytes(echo()),
        "/echo.zip": zip_bytes(echo()),
        "/nested.tar.gz": tar_bytes([("dir", "echo")] + echo("echo/")),
        # The only entry is a zip: extracted again, into <cache>/download/<hash>.
        "/inner.tar.gz": tar_bytes([("file", "echo.zip", zip_bytes(echo()))]),
    })
    disk = tmp_path / "disk"
    disk.mkdir()
    (disk / "echo.tgz").write_bytes(tar_bytes(echo()))
    # Nested folder, inner zip, and a nested folder inside that: every rule of spec §4.1.
    (disk / "inner.zip").write_bytes(
        zip_bytes([("file", "outer/model.zip", zip_bytes(echo("m/")))]))
    with ServerThread(site):
        urls = {
            "tgz": f"{site.base}/f/echo.tar.gz",
            "zip": f"{site.base}/f/echo.zip",
            "nested": f"{site.base}/f/nested.tar.gz",
            "inner": f"{site.base}/f/inner.tar.gz",
            "disk_tgz": f"file:{disk / 'echo.tgz'}",
            "disk_inner": str(disk / "inner.zip"),
        }
        async with running_server(tmp_path) as server:
            c = server.client
            for name, url in urls.items():
                await register(c, url, name)
            for name, url in urls.items():
                assert await predict(c, name, f"hello {name}") == f"hello {name}"
                [workflow] = (await c.get(f"/models/{name}")).json()
                assert workflow["models"][0]["modelUrl"] == url
            # Each archive was extracted once, under the hash of its URL (of its path).
            repo = repo_dir(tmp_path)
            expected = {url_hash(u) for n, u in urls.items() if not n.startswith("disk")}
            expected |= {url_hash(str(disk / "echo.tgz")), url_hash(str(disk / "inner.zip"))}
            assert set(os.listdir(repo)) == expected
            assert len(os.listdir(tmp_path / "cache" / "download")) == 2  # the inner archives
            assert site.hits["/f/echo.tar.gz"] == 1

            for name in urls:
                assert (await c.delete(f"/models/{name}")).status_code == 200
            # Unregistering deletes every extracted directory, leaving nothing behind.
            assert cache_files(tmp_path) == set()
            await assert_nothing_registered(c)
    # The archives on disk are the user's: untouched.
    assert sorted(os.listdir(disk)) == ["echo.tgz", "inner.zip"]


async def test_url_query_arguments_reach_the_model(tmp_path):
    """``?foo=bar`` on an archive URL becomes a property of the model's init call."""
    site = Site(files={"/props.tar.gz": tar_bytes([("file", "model.py", PROPS_MODEL)])})
    with ServerThread(site):
        url = f"{site.base}/f/props.tar.gz?foo=bar&greeting=hello%20world"
        async with running_server(tmp_path) as server:
            c = server.client
            r = await c.post("/models", params={"url": url})
            assert r.status_code == 200, r.text
            assert r.json() == {"status": 'Model "props" registered.'}  # query not in name
            init = json.loads(await predict(c, "props"))
            assert init["foo"] == "bar"
            assert init["greeting"] == "hello world"
            # The query is part of the request (it was sent), so of the cache key too.
            assert Path(init["model_dir"]) == repo_dir(tmp_path) / url_hash(url)
            assert site.hits["/f/props.tar.gz"] == 1


async def test_cache_is_shared_then_deleted(tmp_path):
    """Two registrations of one URL share one extracted directory; the last DELETE removes it."""
    site = Site(files={"/echo.tar.gz": tar_bytes(echo())})
    with ServerThread(site):
        url = f"{site.base}/f/echo.tar.gz"
        extracted = repo_dir(tmp_path) / url_hash(url)
        async with running_server(tmp_path) as server:
            c = server.client
            await register(c, url, "first")
            assert sorted(os.listdir(extracted)) == ["model.py", "serving.properties"]
            marker = extracted / ".marker"
            marker.touch()  # survives only if the directory is reused, not re-extracted

            await register(c, url, "second")
            assert site.hits["/f/echo.tar.gz"] == 1  # not downloaded again
            assert marker.exists()
            assert os.listdir(repo_dir(tmp_path)) == [extracted.name]
            assert await predict(c, "second") == "hello"

            assert (await c.delete("/models/first")).status_code == 200
            assert extracted.is_dir()  # "second" still uses it
            assert await predict(c, "second", "still here") == "still here"

            assert (await c.delete("/models/second")).status_code == 200
            assert not extracted.exists()
            assert cache_files(tmp_path) == set()  # no partial or trash directory either

            # Registering again after deletion downloads afresh.
            await register(c, url, "third")
            assert site.hits["/f/echo.tar.gz"] == 2
            assert not marker.exists()


# -- hostile archives -------------------------------------------------------------------------


async def test_hostile_archives_refused_and_rolled_back(tmp_path, tmp_path_factory):
    outside = tmp_path_factory.mktemp("outside")  # where a symlink would lead
    absolute = tmp_path / "absolute.py"
    # From <cache>/cache/repo/.<hash>.*.part, three ".." land in tmp_path itself.
    slip = tmp_path / "slip.py"
    cases = {
        "/slip.zip": (zip_bytes(echo() + [("file", "../../../slip.py", b"pwned")]), 400,
                      ["Unsafe archive", "'../../../slip.py'", "path traversal"]),
        "/absolute.tar.gz": (tar_bytes(echo() + [("file", str(absolute), b"pwned")]), 400,
                             ["Unsafe archive", repr(str(absolute)), "absolute path"]),
        "/symlink.tar.gz": (tar_bytes([("sym", "escape", str(outside)),
                                       ("file", "escape/model.py", b"pwned")]), 400,
                            ["Unsafe archive", "'escape'", "is outside the archive"]),
        "/relsymlink.tar.gz": (tar_bytes([("sym", "model.py", "../../../../slip.py")]), 400,
                               ["Unsafe archive", "'model.py'", "is outside the archive"]),
        # 8 MiB of zeros in ~8 KiB: about 1000:1, over the default archive_max_ratio (200).
        "/bomb.zip": (zip_bomb(8 << 20), 413, ["archive_max_ratio"]),
    }
    site = Site(files={path: data for path, (data, _, _) in cases.items()})
    with ServerThread(site):
        async with running_server(tmp_path) as server:
            c = server.client
            before = snapshot(tmp_path)
            for path, (_, status, fragments) in cases.items():
                url = f"{site.base}/f{path}"
                message = await refused(c, url, status, url, *fragments)
                await assert_nothing_registered(c)
                assert not slip.exists() and not absolute.exists(), message
                assert os.listdir(outside) == []
                # Only the (empty) cache folders may have appeared: no file, no leftover.
                assert snapshot(tmp_path) - before <= {"cache", "cache/cache",
                                                      "cache/cache/repo"}
                assert cache_files(tmp_path) == set()

            # The same refusal for an archive on disk.
            local = tmp_path / "slip.zip"
            local.write_bytes(cases["/slip.zip"][0])
            await refused(c, f"file:{local}", 400, "path traversal")
            await assert_nothing_registered(c)
            assert cache_files(tmp_path) == set() and not slip.exists()

            # The server is unharmed: a good model still registers and answers.
            await register(c, model_url("echo"), "echo")
            assert await predict(c, "echo") == "hello"


# -- download failures and unsupported sources ------------------------------------------------


async def test_download_failures_are_clear_and_rolled_back(tmp_path):
    big = os.urandom(10_000)
    site = Site(files={
        "/big.tar.gz": big,
        "/slow.tar.gz": tar_bytes(echo()),
        "/drop.tar.gz": tar_bytes(echo()),
        "/corrupt.tar.gz": b"\x1f\x8b\x08\x00" + os.urandom(200),
        "/corrupt.zip": b"PK\x03\x04 this is not a zip file",
        "/model.py": ECHO_FILES["model.py"],
    })
    closed = free_port()
    with ServerThread(site):
        try:
            async with running_server(tmp_path, download_max_bytes="4096",
                                      download_read_timeout="1") as server:
                c = server.client
                b = site.base
                cases = [
                    # Too large, by Content-Length and (no length sent) by the bytes received.
                    (f"{b}/f/big.tar.gz", 413, "download_max_bytes (4096 bytes)"),
                    (f"{b}/unsized/big.tar.gz", 413, "download_max_bytes (4096 bytes)"),
                    (f"{b}/drop/drop.tar.gz", 502, "Download interrupted"),
                    (f"http://127.0.0.1:{closed}/m.tar.gz", 400,
                     f"Cannot reach 127.0.0.1 (Connection refused): http://127.0.0.1:{closed}/"),
                    (f"{b}/f/missing.tar.gz", 404, "Model not found", "(HTTP 404)"),
                    (f"{b}/status/500/m.tar.gz", 502, "Download failed", "(HTTP 500)"),
                    (f"{b}/status/403/m.tar.gz", 400, "Download refused by the remote"),
                    (f"{b}/f/corrupt.tar.gz", 400, "Corrupt archive"),
                    (f"{b}/f/corrupt.zip", 400, "Corrupt archive"),
                    (f"{b}/f/model.py", 400, "Only archive URLs"),
                    ("s3://b/m.tar.gz", 400, "s3: URLs are not supported: s3://b/m.tar.gz"),
                    ("djl://ai.djl.zoo/mlp", 400,
                     "djl: URLs are not supported: djl://ai.djl.zoo/mlp"),
                ]
                for url, status, *fragments in cases:
                    await refused(c, url, status, url, *fragments)
                    await assert_nothing_registered(c)
                    assert cache_files(tmp_path) == set(), url

                # A remote that stops sending: 504 after the read timeout, not minutes.
                url = f"{b}/slow/slow.tar.gz"
                start = time.monotonic()
                await refused(c, url, 504, "Download timed out: no data for 1 s", url)
                assert time.monotonic() - start < 5
                await assert_nothing_registered(c)
                assert cache_files(tmp_path) == set()
        finally:
            site.release.set()  # let the stalled handler thread finish


# -- allowed_urls -----------------------------------------------------------------------------


async def test_allowed_urls_narrowed(tmp_path):
    allowed = tmp_path / "allowed"
    other = tmp_path / "other"
    for folder in (allowed, other):
        (folder / "echo").mkdir(parents=True)
        (folder / "echo.tar.gz").write_bytes(tar_bytes(echo()))
        for name, data in ECHO_FILES.items():
            (folder / "echo" / name).write_bytes(data)
    (allowed / "link.tar.gz").symlink_to(other / "echo.tar.gz")

    site = Site(files={"/echo.tar.gz": tar_bytes(echo())})
    with ServerThread(site):
        b = site.base

        def workflow(model: Path) -> bytes:
            return json.dumps({"name": "wf", "models": {"m": {"modelUrl": f"file:{model}/"}},
                               "workflow": {"out": ["m", "in"]}}).encode()

        site.files["/good.json"] = workflow(allowed / "echo")
        site.files["/bad_model.json"] = workflow(other / "echo")
        patterns = [rf"{re.escape(b)}/ok/.*", rf"{re.escape(b)}/redirect/.*",
                    rf"file:{re.escape(str(allowed))}/.*"]
        settings = {"allowed_urls": ",".join(patterns)}

        async with running_server(tmp_path, **settings) as server:
            c = server.client
            await register(c, f"{b}/ok/echo.tar.gz", "remote")
            await register(c, f"file:{allowed}/echo.tar.gz", "local")
            r = await c.post("/workflows", params={"url": f"{b}/ok/good.json"})
            assert r.status_code == 200, r.text
            for name in ("remote", "local", "wf"):
                assert await predict(c, name) == "hello"
            registered = (await c.get("/models")).json()

            for url in (
                f"{b}/no/echo.tar.gz",
                f"file:{other}/echo.tar.gz",
                str(other / "echo.tar.gz"),  # a plain path: the "[^:]*" default is gone
                f"file:{other}/echo/",
                f"{b}/no/wf.json",  # a workflow file through POST /models
            ):
                await refused(c, url, 403, f"URL is not allowed by allowed_urls: {url}")
            # ".." and symlinks are seen through.
            for url, real in ((f"file:{allowed}/../other/echo.tar.gz", other / "echo.tar.gz"),
                              (f"file:{allowed}/link.tar.gz", other / "echo.tar.gz")):
                await refused(c, url, 403, url, f"(resolves to file:{real})")
            # A redirect from an allowed URL to one that is not.
            target = f"{b}/no/echo.tar.gz"
            await refused(c, f"{b}/redirect/echo.tar.gz?to={target}", 403,
                          f"URL is not allowed by allowed_urls: {target}")
            # Workflow files, and the models a workflow file names.
            await refused(c, f"{b}/no/good.json", 403, f"{b}/no/good.json", route="/workflows")
            await refused(c, f"{b}/ok/bad_model.json", 403, f"file:{other / 'echo'}/",
                          route="/workflows")
            # An unsupported scheme is still a 400, whatever the patterns say.
            await refused(c, "s3://b/m.tar.gz", 400, "not supported")

            assert site.hits["/no/echo.tar.gz"] == 0  # refused before any request
            assert site.hits["/no/good.json"] == 0 and site.hits["/no/wf.json"] == 0
            assert (await c.get("/models")).json() == registered
            assert [w["workflowName"] for w in (await c.get("/workflows")).json()["workflows"]
                    ] == ["local", "remote", "wf"]
            assert set(os.listdir(repo_dir(tmp_path))) == {
                url_hash(f"{b}/ok/echo.tar.gz"), url_hash(str(allowed / "echo.tar.gz"))}

        # Start-up models and workflow files are checked too: start-up fails.
        for i, load_models in enumerate((f"file:{other}/echo/", f"bad={b}/no/echo.tar.gz",
                                         f"{b}/no/good.json", f"{b}/ok/bad_model.json")):
            home = tmp_path / f"startup{i}"
            home.mkdir()
            with pytest.raises(Exception) as info:  # noqa: PT011 — a group; leaves checked
                async with running_server(home, load_models=load_models, **settings):
                    pytest.fail("the server started")
            [error] = leaves(info.value)
            assert isinstance(error, Forbidden), error
            assert "URL is not allowed by allowed_urls" in error.message
        assert site.hits["/no/echo.tar.gz"] == 0 and site.hits["/no/good.json"] == 0


# -- exposure: management token, non-loopback warning ------------------------------------------


async def test_management_token(tmp_path, caplog):
    auth = {"Authorization": "Bearer s3cret"}
    async with running_server(tmp_path, management_token="s3cret") as server:
        c = server.client
        url = model_url("echo")
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret"}):
            r = await c.post("/models", params={"url": url}, headers=headers)
            assert r.status_code == 401, r.text
            assert r.json() == {"code": 401, "type": "UnauthorizedException",
                                "message": "Management API requires a valid bearer token"}
            assert (await c.get("/models", headers=headers)).status_code == 401
            assert (await c.get("/workflows", headers=headers)).status_code == 401
        assert (await c.get("/models", headers=auth)).json() == {"models": []}  # not registered

        r = await c.post("/models", params={"url": url}, headers=auth)
        assert r.status_code == 200, r.text
        # Inference routes stay open.
        assert await predict(c, "echo") == "hello"
        r = await c.post("/models/echo/invoke", content=b"hi", headers=TEXT)
        assert r.status_code == 200 and r.text == "hi"
        assert (await c.get("/ping")).json() == {"echo": {"status": "Healthy"}}

        assert (await c.delete("/models/echo")).status_code == 401
        assert await predict(c, "echo") == "hello"  # still registered
        assert (await c.delete("/models/echo", headers=auth)).status_code == 200
    # Bound to 127.0.0.1: no exposure warning.
    assert "management API is bound to" not in caplog.text


def test_non_loopback_management_warns(tmp_path):
    """Management on 0.0.0.0: a warning at start-up; still reached here only via 127.0.0.1."""
    management, inference = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SERVING_")}
    env.update({
        "DJL_CACHE_DIR": str(tmp_path / "cache"), "MODEL_SERVER_HOME": str(tmp_path),
        "SERVING_MANAGEMENT_ADDRESS": f"http://0.0.0.0:{management}",
        "SERVING_INFERENCE_ADDRESS": f"http://127.0.0.1:{inference}",
        "SERVING_MANAGEMENT_TOKEN": "s3cret",
    })
    proc = subprocess.Popen([sys.executable, "-m", "djl"], env=env, cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        infer = f"http://127.0.0.1:{inference}"
        manage = f"http://127.0.0.1:{management}"
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                pytest.fail(f"server exited: {proc.communicate()}")
            try:
                if httpx.get(f"{infer}/ping", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.1)
        assert httpx.get(f"{manage}/models", timeout=5).status_code == 401
        r = httpx.get(f"{manage}/models", headers={"Authorization": "Bearer s3cret"}, timeout=5)
        assert r.status_code == 200 and r.json() == {"models": []}
        # The inference listener does not serve management routes at all.
        assert httpx.get(f"{infer}/models", timeout=5).status_code == 404
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            _, err = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    assert proc.returncode == 0, err
    warning = [line for line in err.splitlines() if "management API is bound to" in line]
    assert len(warning) == 1, err
    assert "WARNING" in warning[0] and f"http://0.0.0.0:{management}" in warning[0]
    assert "reachable from other hosts" in warning[0]



# -- security review: entry points, nested archives, dot segments, links -------------------------


def pwn_script(marker: Path) -> bytes:
    """A handler that proves it ran by creating ``marker``."""
    return (f"open({str(marker)!r}, 'w').write('ran')\n"
            "def handle(inputs):\n    return None\n").encode()


async def test_entry_point_must_stay_inside_the_model_dir(tmp_path):
    """option.entryPoint / option.modelName naming a file elsewhere is a 400, never run."""
    outside = tmp_path / "outside"
    outside.mkdir()
    marker = tmp_path / "pwned"
    pwn = outside / "pwn.py"
    pwn.write_bytes(pwn_script(marker))
    climb = "../" * 12 + str(pwn).lstrip("/")
    local = tmp_path / "local"
    local.mkdir()
    for name, data in ECHO_FILES.items():
        (local / name).write_bytes(data)
    (local / "link.py").symlink_to(pwn)  # inside by name, outside in fact
    props = ECHO_FILES["serving.properties"] + f"\noption.entryPoint={pwn}\n".encode()
    site = Site(files={
        "/echo.zip": zip_bytes(echo()),
        "/props.zip": zip_bytes([("file", "model.py", ECHO_FILES["model.py"]),
                                 ("file", "serving.properties", props)]),
        "/code.zip": zip_bytes([("file", "code/handler.py", ECHO_FILES["model.py"]),
                                ("file", "serving.properties",
                                 ECHO_FILES["serving.properties"])]),
    })
    with ServerThread(site):
        b = site.base
        site.files["/wf.json"] = json.dumps({
            "name": "wf", "workflow": {"out": ["m", "in"]},
            "models": {"m": {"modelUrl": f"{b}/f/echo.zip", "options": {"entryPoint": str(pwn)}}},
        }).encode()
        settings = {"allowed_urls": f"{re.escape(b)}/.*,file:{re.escape(str(local))}.*"}
        async with running_server(tmp_path, **settings) as server:
            c = server.client
            cases = [
                (f"{b}/f/echo.zip?option.entryPoint={pwn}", f"option.entryPoint {pwn}"),
                (f"{b}/f/echo.zip?option.entryPoint={climb}", f"option.entryPoint {climb}"),
                (f"{b}/f/echo.zip?option.modelName={pwn}", f"option.modelName {pwn}"),
                (f"{b}/f/props.zip", f"option.entryPoint {pwn}"),
                (f"file:{local}/?option.entryPoint=link.py", "option.entryPoint link.py"),
            ]
            for url, fragment in cases:
                await refused(c, url, 400, fragment, "outside the model directory")
                await assert_nothing_registered(c)
            await refused(c, f"{b}/f/wf.json", 400, f"option.entryPoint {pwn}",
                          route="/workflows")
            await assert_nothing_registered(c)
            assert not marker.exists()

            # Module names and files inside the model directory still work.
            await register(c, f"{b}/f/echo.zip?option.entryPoint=model", "module")
            await register(c, f"{b}/f/echo.zip?option.entryPoint=model.py", "file")
            await register(c, f"{b}/f/code.zip?option.entryPoint=code/handler.py", "sub")
            for name in ("module", "file", "sub"):
                assert await predict(c, name) == "hello"
    assert not marker.exists()


async def test_nested_archive_shares_the_outer_limits(tmp_path):
    data = layered_bomb(echo())  # each layer alone under archive_max_ratio (200)
    site = Site(files={"/nested.zip": data})
    local = tmp_path / "nested.zip"
    local.write_bytes(data)
    with ServerThread(site):
        async with running_server(tmp_path) as server:
            c = server.client
            for url in (f"{site.base}/f/nested.zip", f"file:{local}"):
                await refused(c, url, 413, url, "inner archive inner.zip", "archive_max_ratio",
                              f"the {len(data)} bytes")
                await assert_nothing_registered(c)
                assert cache_files(tmp_path) == set()
            # With room for the whole expansion, it registers: the limit, not nesting, refused.
        async with running_server(tmp_path, archive_max_ratio="20000") as server:
            await register(server.client, f"{site.base}/f/nested.zip", "nested")
            assert await predict(server.client, "nested") == "hello"


async def test_dot_segments_in_http_urls_are_refused(tmp_path):
    """``/ok/../no/`` would pass the pattern ``/ok/.*`` and reach ``/no/`` on the remote."""
    site = Site(files={"/echo.tar.gz": tar_bytes(echo()), "/wf.json": b"{}"})
    with ServerThread(site):
        b = site.base
        settings = {"allowed_urls": f"{re.escape(b)}/ok/.*,{re.escape(b)}/redirect/.*"}
        async with running_server(tmp_path, **settings) as server:
            c = server.client
            for path in ("ok/../no/echo.tar.gz", "ok/%2e%2e/no/echo.tar.gz",
                         "ok/%2E./no/echo.tar.gz", "ok/.%2e%2fno/echo.tar.gz",
                         "ok/..%5cno/echo.tar.gz", "ok/..;/no/echo.tar.gz",
                         "ok/%252e%252e/no/echo.tar.gz", "ok/./echo.tar.gz"):
                url = f"{b}/{path}"
                await refused(c, url, 400, url, "'.' and '..' path segments")
            await refused(c, f"{b}/ok/%2e%2e/no/wf.json", 400, "'..' path segments",
                          route="/workflows")
            # A redirect to such a URL is refused as well.
            await refused(c, f"{b}/redirect/echo.tar.gz?to={b}/ok/../no/echo.tar.gz", 400,
                          f"path segments are not supported in http(s) URLs: {b}/ok/../no/")
            await assert_nothing_registered(c)
            assert set(site.hits) == {"/redirect/echo.tar.gz"}  # nothing else was requested
            await register(c, f"{b}/ok/echo.tar.gz", "ok")  # an ordinary path still works


async def test_links_picked_by_unwrapping_are_checked(tmp_path):
    """A local folder's only entry, a link to a folder or an archive outside allowed_urls."""
    allowed, secret = tmp_path / "allowed", tmp_path / "secret"
    for folder in (secret / "model", allowed / "real"):
        folder.mkdir(parents=True)
        for name, data in ECHO_FILES.items():
            (folder / name).write_bytes(data)
    (secret / "s.zip").write_bytes(zip_bytes(echo()))
    for name, target in (("m1/inner", secret / "model"), ("m2/inner.zip", secret / "s.zip"),
                         ("m3/inner", allowed / "real")):
        (allowed / name).parent.mkdir()
        (allowed / name).symlink_to(target)
    async with running_server(tmp_path, allowed_urls=f"file:{re.escape(str(allowed))}/.*") as s:
        c = s.client
        for folder, real in (("m1", secret / "model"), ("m2", secret / "s.zip")):
            url = f"file:{allowed / folder}/"
            await refused(c, url, 403, f"URL is not allowed by allowed_urls: {url}",
                          f"(resolves to file:{real})")
            await assert_nothing_registered(c)
        assert cache_files(tmp_path) == set()
        await register(c, f"file:{allowed / 'm3'}/", "inside")  # a link within is fine
        assert await predict(c, "inside") == "hello"


async def test_refused_workflow_path_does_not_reveal_existence(tmp_path):
    allowed, other = tmp_path / "allowed", tmp_path / "other"
    allowed.mkdir()
    (other / "dir").mkdir(parents=True)
    (other / "wf.json").write_text("{}")
    async with running_server(tmp_path, allowed_urls=f"file:{re.escape(str(allowed))}/.*") as s:
        for url in (str(other / "dir"), str(other / "missing"), str(other / "wf.json"),
                    f"file:{other}/dir/", f"file:{other}/missing/", "/etc"):
            for route in ("/workflows", "/models"):
                await refused(s.client, url, 403, f"URL is not allowed by allowed_urls: {url}",
                              route=route)


# -- crash leftovers, cancelled loads ---------------------------------------------------------


def test_crash_leftovers_removed_at_start(tmp_path):
    """A download temp left by kill -9 goes at the next start; user files and temps another
    live server holds stay."""
    site = Site(files={"/slow.tar.gz": tar_bytes(echo())})
    cache = tmp_path / "cache"
    repo = repo_dir(tmp_path)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SERVING_")}
    port = free_port()
    env.update({"DJL_CACHE_DIR": str(cache), "MODEL_SERVER_HOME": str(tmp_path),
                "SERVING_INFERENCE_ADDRESS": f"http://127.0.0.1:{port}",
                "SERVING_MANAGEMENT_ADDRESS": f"http://127.0.0.1:{port}"})
    with ServerThread(site):
        proc = subprocess.Popen([sys.executable, "-m", "djl"], env=env, cwd=tmp_path,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            base = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 60
            while True:
                assert proc.poll() is None and time.monotonic() < deadline
                try:
                    if httpx.get(f"{base}/ping", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.1)
            r = httpx.post(f"{base}/models", timeout=5, params={
                "url": f"{site.base}/slow/slow.tar.gz", "synchronous": "false"})
            assert r.status_code == 202, r.text
            while not repo.is_dir() or not [n for n in os.listdir(repo) if n.endswith(".part")]:
                assert time.monotonic() < deadline
                time.sleep(0.05)
        finally:
            proc.kill()  # SIGKILL: no clean-up of any kind
            proc.wait()
            site.release.set()
    [part] = os.listdir(repo)
    # A deletion interrupted the same way, and names that are not ours.
    digest = url_hash("anything")
    (repo / f".{digest}.k3y_8abc.del" / "x").mkdir(parents=True)
    ours = {part, f".{digest}.k3y_8abc.del"}
    theirs = {"model.part", ".model.part", f".{digest}.part", f"{digest}.abc.part"}
    for name in theirs:
        (repo / name).write_text("user data")
    outside = tmp_path / "outside"
    outside.mkdir()
    (repo / f".{digest}.linked.part").symlink_to(outside)
    (outside / "keep").write_text("keep")
    os.mkfifo(repo / f".{digest}.fifo.part")  # must not block start-up either
    theirs |= {f".{digest}.linked.part", f".{digest}.fifo.part"}
    for name in ours:  # crash leftovers are old; a fresh unlocked temp may be about to
        os.utime(repo / name, (time.time() - 60, time.time() - 60))  # be locked: kept
    fresh = f".{digest}.fresh123.part"
    (repo / fresh).write_text("just created by another server")
    theirs.add(fresh)
    live = cache / "download" / f".{digest}.live1234.part"
    live.mkdir(parents=True)
    # Another running server's extraction: it holds the lock.
    fd = os.open(live, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)

        async def start() -> None:
            async with running_server(tmp_path):
                pass

        trio.run(start)
    finally:
        os.close(fd)
    assert set(os.listdir(repo)) == theirs, ours
    assert live.is_dir() and (outside / "keep").exists()


async def test_unregister_stops_an_async_download(tmp_path):
    site = Site(files={"/m.tar.gz": tar_bytes(echo())})
    with ServerThread(site):
        try:
            async with running_server(tmp_path) as server:
                c = server.client
                r = await c.post("/models", params={"url": f"{site.base}/slow/m.tar.gz",
                                                    "synchronous": "false"})
                assert r.status_code == 202, r.text
                with trio.fail_after(10):
                    while not cache_files(tmp_path):  # the download's temp file
                        await trio.sleep(0.05)
                assert (await c.delete("/models/m")).status_code == 200
                # The remote is still sending (it stalls for 10 s): only a stopped download
                # has removed its temp file this soon.
                with trio.fail_after(3):
                    while cache_files(tmp_path):
                        await trio.sleep(0.05)
                await assert_nothing_registered(c)
        finally:
            site.release.set()


SLOW_INIT = b'''
import os, time

def handle(inputs):
    if inputs.is_empty():
        open(os.environ["PID_FILE"], "w").write(str(os.getpid()))
        time.sleep(20)
        return None
    return None
'''


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:
        return f.read().split(")")[-1].split()[0] != "Z"


async def test_unregister_during_synchronous_registration(tmp_path):
    """DELETE while a synchronous POST loads: the load stops and the POST says so (404)."""
    model = tmp_path / "slowinit"
    model.mkdir()
    (model / "model.py").write_bytes(SLOW_INIT)
    pid_file = tmp_path / "pid"
    (model / "serving.properties").write_text(f"engine=Python\noption.env=PID_FILE={pid_file}\n")
    async with running_server(tmp_path) as server:
        c = server.client
        answer: list[httpx.Response] = []

        async def post() -> None:
            answer.append(await c.post("/models", params={"url": f"file:{model}/"}))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(post)
            with trio.fail_after(15):
                while not pid_file.exists() or not pid_file.read_text():
                    await trio.sleep(0.05)
            assert (await c.delete("/models/slowinit")).status_code == 200
            with trio.fail_after(10):
                while not answer:
                    await trio.sleep(0.05)
        [r] = answer
        assert r.status_code == 404, r.text
        assert r.json() == {"code": 404, "type": "ModelNotFoundException",
                            "message": "Model or workflow slowinit was unregistered while "
                                       "it loaded"}
        await assert_nothing_registered(c)
        pid = int(pid_file.read_text())
        with trio.fail_after(10):
            while alive(pid):
                await trio.sleep(0.05)


async def test_management_token_scheme_is_case_insensitive(tmp_path):
    async with running_server(tmp_path, management_token="s3cret") as server:
        c = server.client
        for value in ("bearer s3cret", "BEARER s3cret", "Bearer   s3cret", "bEaReR s3cret"):
            r = await c.get("/models", headers={"Authorization": value})
            assert r.status_code == 200, value
        for value in ("Bearers3cret", "Bearer s3cre", "Bearer s3cret2", "Basic s3cret",
                      "s3cret", "bearer", "Bearer S3CRET"):
            r = await c.get("/models", headers={"Authorization": value})
            assert r.status_code == 401, value
