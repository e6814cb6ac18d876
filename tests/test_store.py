"""djl.store (with djl.archive and djl.download): model URLs → local directories, safely.

Spec §4.1 (URL resolution), §4.2 (name inference), §4.4 (engine inference), §7.1 (workflow
files), §9 items 3 and 5 (allow-list, archive extraction), and the "Model sources" issue.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import logging
import os
import shutil
import socket
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from store_helpers import (
    ServerThread,
    Site,
    layered_bomb,
    snapshot,
    tar_bytes,
    tar_pax_bomb,
    zip_bomb,
    zip_bytes,
    zip_local_name_mismatch,
    zip_overlapping,
)

from djl import download, source_cache, store, url_policy
from djl.config import ServerConfig
from djl.engine_choice import infer_engine
from djl.errors import DjlError, Forbidden, ModelNotFound, SourceError
from djl.store import (
    fetch_text,
    infer_model_name,
    release,
    resolve_model,
)

MODEL = [("file", "model.py", b"def handle(inputs):\n    return None\n")]


@pytest.fixture
def config(tmp_path: Path) -> ServerConfig:
    return ServerConfig(cache_dir=tmp_path / "cache")


@pytest.fixture
def site() -> Iterator[Site]:
    site = Site()
    with ServerThread(site):
        yield site
        site.release.set()


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def cache_leftovers(config: ServerConfig) -> list[str]:
    root = Path(config.cache_dir)
    return sorted(snapshot(root)) if root.exists() else []


def assert_clean(config: ServerConfig) -> None:
    """No cache directory, temp file or temp directory is left (directories may remain)."""
    root = Path(config.cache_dir)
    left = [p for p in cache_leftovers(config) if not (root / p).is_dir() or "." in p]
    assert left == []


async def refused(url: str, config: ServerConfig, status: int) -> DjlError:
    with pytest.raises(DjlError) as info:
        await resolve_model(url, config)
    assert info.value.status == status, info.value.message
    return info.value


# -- §4.2 name inference ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "name"),
    [
        ("https://resources.djl.ai/test-models/mlp.zip", "mlp"),
        ("djl://ai.djl.zoo/mlp/0.0.3/mlp", "mlp"),
        ("file:src/test/resources/identity", "identity"),
        ("InvalidUrl", "InvalidUrl"),
        ("https://x/y/basic-serving-workflow.json", "basic_serving_workflow_json"),
        ("s3://b/p/model.tar.gz", "model"),
        ("file:/a/b/my-model/", "my_model"),
        ("/m/resnet.TAR.GZ", "resnet"),
        ("/m/a.b.tgz?x=1", "a_b"),
        ("/m/model.pt", "model_pt"),
        ("https://h/m%20x.mar", "m_x"),
    ],
)
def test_infer_model_name(url: str, name: str) -> None:
    assert infer_model_name(url) == name


def test_infer_model_name_bad_uri_is_409() -> None:
    with pytest.raises(DjlError) as info:
        infer_model_name("http://[::1/x.zip")
    assert info.value.status == 409


# -- allowed_urls (§9 item 3) -----------------------------------------------------------------


def test_default_allow_list_admits_local_and_http(config: ServerConfig) -> None:
    for url in ("/models/m", "models/m", "file:///m", "http://h/m.zip", "https://h/m.zip"):
        url_policy.check(url, config)


async def test_allow_list_refuses_with_403_naming_the_url(
    config: ServerConfig, tmp_path: Path
) -> None:
    narrow = dataclasses.replace(config, allowed_urls=(r"https://models\.example/.*",))
    for url in (str(tmp_path), "http://127.0.0.1:1/m.zip", "file:///etc"):
        err = await refused(url, narrow, 403)
        assert isinstance(err, Forbidden) and url in err.message
    with pytest.raises(Forbidden):
        await fetch_text(str(tmp_path / "w.json"), narrow)


async def test_allow_list_sees_through_dotdot_and_symlinks(
    config: ServerConfig, tmp_path: Path
) -> None:
    allowed = tmp_path / "models"
    (allowed / "m").mkdir(parents=True)
    (tmp_path / "secret").mkdir()
    (allowed / "link").symlink_to(tmp_path / "secret")
    narrow = dataclasses.replace(config, allowed_urls=(f"{allowed}/.*",))
    assert (await resolve_model(f"{allowed}/m", narrow)).model_dir == allowed / "m"
    await refused(f"{allowed}/../secret", narrow, 403)
    await refused(f"{allowed}/link", narrow, 403)


@pytest.mark.parametrize(
    "url",
    [
        "http://h/ok/../no/m.zip",
        "https://h/ok/%2e%2e/no/m.zip",
        "http://h/ok/%2E%2e/no/m.zip",
        "http://h/ok/.%2e%2Fno/m.zip",
        "http://h/ok/..%5Cno/m.zip",
        "http://h/ok/..;x/no/m.zip",
        "http://h/ok/%252e%252e/no/m.zip",
        "http://h/ok/./m.zip",
        "http://h/..",
    ],
)
def test_dot_segments_in_http_paths_are_400(config: ServerConfig, url: str) -> None:
    with pytest.raises(SourceError) as info:
        url_policy.check(url, config)
    assert info.value.status == 400 and url in info.value.message


def test_dots_inside_segments_are_fine(config: ServerConfig) -> None:
    for url in ("http://h/a.b/..c/x..y/.../m.tar.gz", "http://h/m.zip?to=../x", "http://h/.m/a.zip"):
        url_policy.check(url, config)


def test_invalid_allow_pattern_matches_nothing(config: ServerConfig) -> None:
    with pytest.raises(Forbidden):
        url_policy.check("/x", dataclasses.replace(config, allowed_urls=("[",)))


# -- §4.1 local sources -----------------------------------------------------------------------


async def test_directory_is_used_in_place(config: ServerConfig, tmp_path: Path) -> None:
    model = tmp_path / "my-model"
    write(model / "model.py", b"")
    write(model / "serving.properties", b"engine=Python\n")
    source = await resolve_model(f"{model}/", config)
    assert source.model_dir == model and source.owned_paths == ()
    assert source.artifact_name == "my-model" and source.entry_point is None
    await release(source)
    assert (model / "model.py").exists()


async def test_plain_file_means_its_directory(config: ServerConfig, tmp_path: Path) -> None:
    py = write(tmp_path / "m" / "handler.py", b"")
    write(tmp_path / "m" / "resnet.pt", b"")
    source = await resolve_model(str(py), config)
    assert (source.model_dir, source.entry_point) == (tmp_path / "m", str(py))
    source = await resolve_model(str(tmp_path / "m" / "resnet.pt"), config)
    assert (source.artifact_name, source.entry_point) == ("resnet", None)


async def test_missing_path_is_404(config: ServerConfig, tmp_path: Path) -> None:
    for url in ("InvalidUrl", str(tmp_path / "nope.zip"), "file:///nope/x", ""):
        err = await refused(url, config, 404)
        assert isinstance(err, ModelNotFound) and err.message == f"Invalid model url: {url}"


async def test_file_url_forms(
    config: ServerConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path / "my model" / "model.py", b"")
    monkeypatch.chdir(tmp_path)
    for url in (
        "file:my%20model",
        f"file://{tmp_path}/my%20model",
        f"file:{tmp_path}/my%20model/",
        "my model",
    ):
        assert (await resolve_model(url, config)).model_dir == tmp_path / "my model", url


@pytest.mark.parametrize(
    "url",
    [
        "s3://bucket/m.tar.gz",
        "djl://ai.djl.zoo/mlp",
        "gs://b/m.zip",
        "jar:///m.zip",
        "file://server/share/m.zip",
    ],
)
async def test_unsupported_schemes_are_400(config: ServerConfig, url: str) -> None:
    err = await refused(url, config, 400)
    assert "not supported" in err.message and url in err.message
    with pytest.raises(SourceError, match="not supported"):  # before the allow-list's 403
        url_policy.check(url, config)


async def test_local_archive_extracted_once_into_hash_dir(
    config: ServerConfig, tmp_path: Path
) -> None:
    archive = write(tmp_path / "src" / "resnet.tar.gz", tar_bytes(MODEL))
    url = f"{archive}?translator=a%20b&topK=1"
    source = await resolve_model(url, config)
    digest = hashlib.sha256(str(archive).encode()).hexdigest()[:40]
    assert source.model_dir == tmp_path / "cache" / "cache" / "repo" / digest
    assert (source.model_dir / "model.py").read_bytes() == MODEL[0][2]
    assert source.owned_paths == (source.model_dir,) and source.artifact_name == "resnet"
    assert dict(source.arguments) == {"translator": "a b", "topK": "1"}
    inode = source.model_dir.stat().st_ino
    again = await resolve_model(url, config)  # reused, not re-extracted
    assert again.model_dir.stat().st_ino == inode
    await release(source)
    assert again.model_dir.exists()  # still used by the second registration
    await release(again)
    assert not again.model_dir.exists()
    assert_clean(config)


@pytest.mark.parametrize(
    ("name", "data"),
    [
        ("m.ZIP", zip_bytes(MODEL)),
        ("m.mar", zip_bytes(MODEL)),
        ("m.TGZ", tar_bytes(MODEL)),
        ("m.tar", tar_bytes(MODEL, "w")),
        ("m.tar.z", tar_bytes(MODEL)),
        ("m.tar.gz", tar_bytes(MODEL, "w:xz")),
    ],
)
async def test_archive_kinds(config: ServerConfig, tmp_path: Path, name: str, data: bytes) -> None:
    source = await resolve_model(str(write(tmp_path / name, data)), config)
    assert (source.model_dir / "model.py").is_file() and source.artifact_name == "m"


async def test_nested_folder_and_inner_archive(config: ServerConfig, tmp_path: Path) -> None:
    inner = zip_bytes([("file", "inner/model.py", b"")])
    outer = tar_bytes([("dir", "top"), ("file", "top/.hidden", b""), ("file", "top/m.zip", inner)])
    source = await resolve_model(str(write(tmp_path / "m.tgz", outer)), config)
    assert source.model_dir.name == "inner" and (source.model_dir / "model.py").is_file()
    assert source.model_dir.parent.parent == tmp_path / "cache" / "download"
    assert len(source.owned_paths) == 2
    await release(source)
    assert_clean(config)
    # A user's own directory holding one archive: only the extraction is owned.
    write(tmp_path / "own" / "m.zip", inner)
    source = await resolve_model(str(tmp_path / "own"), config)
    assert source.model_dir.name == "inner" and len(source.owned_paths) == 1
    await release(source)
    assert (tmp_path / "own" / "m.zip").exists()


def _stored_zip(entries: dict[str, bytes]) -> bytes:
    return zip_bytes([("file", n, d) for n, d in entries.items()], zipfile.ZIP_STORED)


@pytest.mark.parametrize(
    ("outer", "limits", "key"),
    [
        (layered_bomb(MODEL), {}, "archive_max_ratio"),
        # Each layer writes 300 kB: under archive_max_bytes alone, over it together (a zip
        # and a tar inner layer: the tar stream is bounded on its own).
        (zip_bytes([("file", "m.zip", _stored_zip({"w": os.urandom(300_000)}))],
                   zipfile.ZIP_STORED),
         {"archive_max_bytes": 500_000}, "archive_max_bytes"),
        (zip_bytes([("file", "m.tar", tar_bytes([("file", "w", os.urandom(300_000))], "w"))],
                   zipfile.ZIP_STORED),
         {"archive_max_bytes": 500_000}, "archive_max_bytes"),
    ],
)
async def test_inner_archive_shares_the_outer_limits(
    config: ServerConfig, tmp_path: Path, outer: bytes, limits: dict[str, int], key: str
) -> None:
    name = "m.zip" if outer[:2] == b"PK" else "m.tgz"
    archive = write(tmp_path / name, outer)
    err = await refused(str(archive), dataclasses.replace(config, **limits), 413)
    assert key in err.message and f"{archive} (its inner archive " in err.message
    assert_clean(config)


async def test_outer_archive_left_by_an_earlier_run_is_extracted_again(
    config: ServerConfig, tmp_path: Path
) -> None:
    """What the outer layer spent dies with the process that extracted it: an inner archive
    still to extract makes the outer one be extracted (and measured) again; the directory in
    place is kept, since others may be reading it."""
    inner = zip_bytes([("file", "model.py", b"")])
    archive = write(tmp_path / "m.tgz", tar_bytes([("file", "m.zip", inner)]))
    source = await resolve_model(str(archive), config)
    outer_dir, inner_dir = source.owned_paths
    # A new process: nothing known about either directory; the inner one is gone (a crash
    # while unregistering deletes it first).
    for path in source.owned_paths:
        source_cache.CACHE.pop(str(path))
    shutil.rmtree(inner_dir)
    (outer_dir / ".marker").touch()
    again = await resolve_model(str(archive), config)
    assert again.owned_paths == source.owned_paths
    assert (again.model_dir / "model.py").is_file() and (outer_dir / ".marker").exists()
    await release(again)
    assert_clean(config)

    # Two registrations of it at once after such a crash: both succeed, one re-extraction.
    source = await resolve_model(str(archive), config)
    for path in source.owned_paths:
        source_cache.CACHE.pop(str(path))
    shutil.rmtree(source.owned_paths[1])
    sources: list[store.ModelSource] = []

    async def register() -> None:
        sources.append(await resolve_model(str(archive), config))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(register)
        nursery.start_soon(register)
    assert [s.owned_paths for s in sources] == [source.owned_paths] * 2
    assert all((s.model_dir / "model.py").is_file() for s in sources)
    for each in sources:
        await release(each)
    assert_clean(config)

    # The same for a nested bomb whose outer layer an earlier run left.
    bomb = layered_bomb(MODEL)
    archive = write(tmp_path / "bomb.zip", bomb)
    target = Path(config.cache_dir) / "cache" / "repo" / store.url_hash(str(archive))
    with zipfile.ZipFile(io.BytesIO(bomb)) as zf:
        zf.extractall(target)
    err = await refused(str(archive), config, 413)
    assert "archive_max_ratio" in err.message
    assert_clean(config)


async def test_failed_inner_archive_rolls_back_the_outer(
    config: ServerConfig, tmp_path: Path
) -> None:
    outer = tar_bytes([("file", "m.zip", b"PK\x03\x04 corrupt")])
    err = await refused(str(write(tmp_path / "m.tgz", outer)), config, 400)
    assert "Corrupt archive" in err.message
    assert_clean(config)  # the outer extraction was released again


# -- §4.1 http(s) sources ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "data"),
    [
        ("m.tar.gz", tar_bytes(MODEL)),
        ("m.zip", zip_bytes(MODEL)),
        ("m.tgz", tar_bytes([("dir", "nested"), ("file", "nested/model.py", b"")])),
    ],
)
async def test_http_archive(config: ServerConfig, site: Site, name: str, data: bytes) -> None:
    site.files["/" + name] = data
    url = f"{site.base}/files/{name}?model_name=resnet&topK=1"
    source = await resolve_model(url, config)
    assert (source.model_dir / "model.py").is_file()
    digest = hashlib.sha256(url.encode()).hexdigest()[:40]
    assert Path(config.cache_dir) / "cache" / "repo" / digest in source.owned_paths
    assert source.artifact_name == "resnet"
    assert dict(source.arguments) == {"model_name": "resnet", "topK": "1"}
    await resolve_model(url, config)
    assert site.hits[f"/files/{name}"] == 1  # the cache is reused
    await release(source)


async def test_http_inner_zip(config: ServerConfig, site: Site) -> None:
    site.files["/m.zip"] = zip_bytes([("file", "model.mar", zip_bytes(MODEL))])
    source = await resolve_model(f"{site.base}/files/m.zip", config)
    assert (source.model_dir / "model.py").is_file() and len(source.owned_paths) == 2


async def test_http_non_archive_is_400(config: ServerConfig, site: Site) -> None:
    err = await refused(f"{site.base}/files/model.pt", config, 400)
    assert "supported" in err.message


async def test_http_remote_errors(config: ServerConfig, site: Site) -> None:
    err = await refused(f"{site.base}/files/missing.zip", config, 404)
    assert "HTTP 404" in err.message
    await refused(f"{site.base}/status/403/m.zip", config, 400)
    await refused(f"{site.base}/status/500/m.zip", config, 502)
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    err = await refused(f"http://127.0.0.1:{port}/m.zip", config, 400)
    assert "Cannot reach 127.0.0.1" in err.message
    # Malformed http URLs fail before any DNS lookup.
    for url in (
        "http://exa mple/m.zip",
        "http://h:99999/m.zip",
        "https://u:p@h/m.zip",
    ):
        await refused(url, config, 400)
    assert_clean(config)


@pytest.mark.parametrize("mode", ["files", "unsized"])
async def test_oversized_download_is_413(config: ServerConfig, site: Site, mode: str) -> None:
    site.files["/big.zip"] = os.urandom(200_000)
    small = dataclasses.replace(config, download_max_bytes=100_000)
    err = await refused(f"{site.base}/{mode}/big.zip", small, 413)
    assert "download_max_bytes" in err.message
    assert_clean(config)


async def test_slow_download_times_out(config: ServerConfig, site: Site) -> None:
    site.files["/m.zip"] = zip_bytes(MODEL)
    quick = dataclasses.replace(config, download_read_timeout_s=0.3)
    with trio.fail_after(5):
        err = await refused(f"{site.base}/slow/m.zip", quick, 504)
    assert "timed out" in err.message
    assert_clean(config)


async def test_dropped_download_is_502(config: ServerConfig, site: Site) -> None:
    site.files["/m.zip"] = zip_bytes(MODEL)
    await refused(f"{site.base}/drop/m.zip", config, 502)
    assert_clean(config)


async def test_redirects_are_checked_against_allow_list(config: ServerConfig, site: Site) -> None:
    site.files["/m.zip"] = zip_bytes(MODEL)
    target = f"{site.base}/files/m.zip"
    source = await resolve_model(f"{site.base}/redirect/m.zip?to={target}", config)
    assert (source.model_dir / "model.py").is_file()
    narrow = dataclasses.replace(config, allowed_urls=(rf"{site.base}/redirect/.*",))
    err = await refused(f"{site.base}/redirect/x.zip?to={target}", narrow, 403)
    assert target in err.message
    await refused(f"{site.base}/redirect/y.zip?to=file:///etc/passwd", config, 400)


async def test_concurrent_registrations_share_one_download(
    config: ServerConfig, site: Site
) -> None:
    site.files["/m.zip"] = zip_bytes(MODEL)
    url = f"{site.base}/files/m.zip"
    sources: list[store.ModelSource] = []

    async def register() -> None:
        sources.append(await resolve_model(url, config))

    async with trio.open_nursery() as nursery:
        for _ in range(5):
            nursery.start_soon(register)
    assert site.hits["/files/m.zip"] == 1
    assert len({s.model_dir for s in sources}) == 1
    for source in sources[:-1]:
        await release(source)
        assert source.model_dir.exists()
    await release(sources[-1])
    assert not sources[0].model_dir.exists()
    assert_clean(config)


async def test_cancelled_download_leaves_nothing(config: ServerConfig, site: Site) -> None:
    site.files["/m.zip"] = zip_bytes(MODEL)
    start = trio.current_time()
    with trio.move_on_after(0.3) as scope:
        await resolve_model(f"{site.base}/slow/m.zip", config)
    assert scope.cancelled_caught
    # The stalled read was woken (socket shut down) and the temp file removed before return.
    assert trio.current_time() - start < 1.5
    assert_clean(config)


async def test_large_download_logs_progress(
    config: ServerConfig,
    site: Site,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr(download, "PROGRESS_MIN_BYTES", 1)
    monkeypatch.setattr(download, "PROGRESS_INTERVAL_S", 0.0)
    site.files["/m.zip"] = zip_bytes([*MODEL, ("file", "w.bin", os.urandom(600_000))])
    with caplog.at_level(logging.INFO, logger="djl.store"):
        await resolve_model(f"{site.base}/files/m.zip", config)
    lines = [r.getMessage() for r in caplog.records if r.name == "djl.store"]
    assert any("%" in line for line in lines) and any("Downloaded" in line for line in lines)


# -- §9 item 5: hostile archives --------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "data", "entry"),
    [
        ("slip.zip", zip_bytes([*MODEL, ("file", "../../evil.txt", b"x")]), "../../evil.txt"),
        ("slip.zip", zip_bytes([("file", "a\\..\\..\\evil.txt", b"x")]), "evil.txt"),
        (
            "abs.tar",
            tar_bytes([("file", "/tmp/djl-store-test-evil.txt", b"x")], "w"),
            "/tmp/djl-store-test-evil.txt",
        ),
        ("sym.tgz", tar_bytes([("sym", "passwd", "/etc/passwd")]), "passwd"),
        ("sym.tgz", tar_bytes([("dir", "d"), ("sym", "d/up", "../../x")]), "d/up"),
        ("hard.tgz", tar_bytes([("hard", "h", "../outside")]), "'h'"),
        (
            "loop.tgz",
            tar_bytes([("sym", "l1", "."), ("sym", "l2", "l1/.."), ("file", "l2/e", b"")]),
            "l1",
        ),
        ("fifo.tgz", tar_bytes([("fifo", "f")]), "'f'"),
        ("dev.tgz", tar_bytes([("chr", "tty")]), "tty"),
        ("zsym.zip", zip_bytes([("sym", "link", "../../../etc/passwd")]), "link"),
        ("dup.zip", zip_bytes([("file", "a", b"1"), ("file", "./a", b"2")]), "a"),
        ("mal.zip", zip_local_name_mismatch(), "Malicious zip file"),
        ("over.zip", zip_overlapping(), "overlap"),
    ],
)
async def test_unsafe_archives_are_refused(
    config: ServerConfig, tmp_path: Path, name: str, data: bytes, entry: str
) -> None:
    archive = write(tmp_path / "src" / name, data)
    before = snapshot(tmp_path)
    err = await refused(str(archive), config, 400)
    assert isinstance(err, SourceError) and entry in err.message
    assert snapshot(tmp_path) - before <= {"cache", "cache/cache", "cache/cache/repo"}
    assert not Path("/tmp/djl-store-test-evil.txt").exists()


async def test_inside_links_become_copies(config: ServerConfig, tmp_path: Path) -> None:
    data = tar_bytes(
        [
            ("dir", "w"),
            ("file", "w/v3.pt", b"weights"),
            ("sym", "model.pt", "w/v3.pt"),
            ("hard", "copy.pt", "w/v3.pt"),
            ("sym", "again.pt", "model.pt"),
        ]
    )
    source = await resolve_model(str(write(tmp_path / "m.tgz", data)), config)
    for name in ("model.pt", "copy.pt", "again.pt"):
        path = source.model_dir / name
        assert not path.is_symlink() and path.read_bytes() == b"weights"


@pytest.mark.parametrize(
    ("data", "limits", "key"),
    [
        (zip_bomb(8 << 20), {}, "archive_max_ratio"),
        (tar_bytes([("file", "zeros", bytes(8 << 20))]), {}, "archive_max_ratio"),
        (tar_pax_bomb(4 << 20), {}, "archive_max_ratio"),
        (
            tar_bytes([("file", f"f{i}", b"") for i in range(20)]),
            {"archive_max_entries": 10},
            "archive_max_entries",
        ),
        (
            tar_bytes([("file", "big", os.urandom(300_000))]),
            {"archive_max_bytes": 200_000},
            "archive_max_bytes",
        ),
        (
            tar_bytes([("file", "a", os.urandom(150_000)), ("hard", "b", "a")]),
            {"archive_max_bytes": 200_000},
            "archive_max_bytes",
        ),
    ],
)
async def test_archive_bombs_are_413(
    config: ServerConfig, tmp_path: Path, data: bytes, limits: dict[str, int], key: str
) -> None:
    archive = write(tmp_path / ("bomb.zip" if data[:2] == b"PK" else "bomb.tgz"), data)
    err = await refused(str(archive), dataclasses.replace(config, **limits), 413)
    assert key in err.message
    assert_clean(config)


@pytest.mark.parametrize(
    ("name", "data"),
    [
        ("junk.zip", b"not a zip at all"),
        ("empty.tgz", b""),
        ("cut.tgz", tar_bytes([("file", "w.bin", os.urandom(100_000))])[:50_000]),
        ("cut.zip", zip_bytes([("file", "w.bin", os.urandom(100_000))])[:50_000]),
        ("junk.tar", os.urandom(2048)),
        ("pax.tgz", tar_pax_bomb(17 << 20)),  # tarfile would read the header whole
    ],
)
async def test_corrupt_archives_are_400(
    config: ServerConfig, tmp_path: Path, name: str, data: bytes
) -> None:
    err = await refused(str(write(tmp_path / name, data)), config, 400)
    assert "archive" in err.message.lower()
    assert_clean(config)


# -- §4.4 engine inference --------------------------------------------------------------------


def test_engine_inference_sequence(tmp_path: Path) -> None:
    """ModelInfoTest: files added one after another to ``test_model``."""
    d = tmp_path / "test_model"
    d.mkdir()
    with pytest.raises(ModelNotFound, match="Failed to detect engine"):
        infer_engine(d, "test_model", {}, {})
    for file, engine in [
        ("test_model.json", "XGBoost"),
        ("test_model.onnx", "OnnxRuntime"),
        ("saved_model.pb", "TensorFlow"),
        ("config.pbtxt", "TritonServer"),
        ("test_model.pt", "PyTorch"),
    ]:
        (d / file).touch()
        assert infer_engine(d, "test_model", {}, {}) == engine
    assert infer_engine(d, "test_model", {}, {"engine": "MyEngine"}) == "MyEngine"
    with pytest.raises(ModelNotFound):
        infer_engine(tmp_path / "missing", "missing", {}, {})


@pytest.mark.parametrize(
    ("files", "options", "engine"),
    [
        # The spec's [REC]: model.py wins over model.pt (DJL itself would pick PyTorch).
        (["model.py", "model.pt"], {}, "Python"),
        (["m.py", "model.pt"], {}, "Python"),
        (["model.pt"], {}, "PyTorch"),
        (["m.pt", "other.py"], {}, "PyTorch"),  # only model.py / <prefix>.py count
        (["MAR-INF/MANIFEST.json"], {}, "Python"),
        (["x.onnx"], {"modelName": "x"}, "OnnxRuntime"),
        (["model.joblib"], {}, "Python"),
        (["config.json"], {}, "Python"),
        (["a.txt"], {"model_id": "org/model"}, "Python"),
        (["m.py"], {}, "Python"),  # <prefix>.py with artifact name "m"
        (["m-0002.params"], {}, "MXNet"),
    ],
)
def test_engine_rules(
    tmp_path: Path, files: list[str], options: dict[str, str], engine: str
) -> None:
    for name in files:
        write(tmp_path / name, b"")
    assert infer_engine(tmp_path, "m", options, {}) == engine


def test_engine_sagemaker_metadata(tmp_path: Path) -> None:
    meta = "Framework: x\nFrameworkVersion: 1\nModel: m\nModelType: PyTorchModel\nVersion: 1\n"
    write(tmp_path / "model.pt", b"")
    write(tmp_path / "metadata.yaml", (meta + "Task: t\nSchema: s\nSchemaHMAC: h\n").encode())
    assert infer_engine(tmp_path, "m", {}, {}) == "Python"
    write(tmp_path / "metadata.yaml", b"Framework: [unclosed")
    assert infer_engine(tmp_path, "m", {}, {}) == "PyTorch"


def test_engine_djl_model_id_not_supported(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="not supported"):
        infer_engine(tmp_path, "m", {"model_id": "djl://ai.djl.zoo/mlp"}, {})


# -- workflow files (§7.1) --------------------------------------------------------------------


async def test_fetch_text(config: ServerConfig, tmp_path: Path, site: Site) -> None:
    wf = write(tmp_path / "workflow.json", b'\xef\xbb\xbf{"name": "w"}')
    assert await fetch_text(str(wf), config) == '{"name": "w"}'
    assert await fetch_text(f"file://{wf}", config) == '{"name": "w"}'
    site.files["/w.yaml"] = b"name: w\n"
    assert await fetch_text(f"{site.base}/unsized/w.yaml", config) == "name: w\n"
    with pytest.raises(ModelNotFound):
        await fetch_text(str(tmp_path / "missing.json"), config)
    with pytest.raises(SourceError) as info:
        await fetch_text(str(tmp_path), config)
    assert info.value.status == 400
    small = dataclasses.replace(config, max_request_size=5)
    for url in (str(wf), f"{site.base}/files/w.yaml"):
        with pytest.raises(SourceError) as info:
            await fetch_text(url, small)
        assert info.value.status == 413
    write(tmp_path / "bin.json", b"\xff\xfe\x00")
    with pytest.raises(SourceError, match="UTF-8"):
        await fetch_text(str(tmp_path / "bin.json"), config)


# -- fuzzing: malformed archives and URLs end in a 4xx or success -----------------------------

VALID = [
    tar_bytes(MODEL),
    tar_bytes(MODEL, "w"),
    zip_bytes(MODEL),
    zip_bytes([("dir", "d"), ("file", "d/model.py", b"x" * 300), ("sym", "l", "d/model.py")]),
]


@st.composite
def malformed_archives(draw: st.DrawFn) -> tuple[str, bytes]:
    suffix = draw(st.sampled_from([".zip", ".tgz", ".tar", ".mar"]))
    if draw(st.booleans()):
        return suffix, draw(st.binary(max_size=600))
    data = bytearray(draw(st.sampled_from(VALID)))
    for _ in range(draw(st.integers(1, 8))):
        at = draw(st.integers(0, len(data) - 1))
        data[at] = draw(st.integers(0, 255))
    if draw(st.booleans()):
        data = data[: draw(st.integers(0, len(data)))]
    return suffix, bytes(data)


def _resolve_once(url: str, config: ServerConfig) -> None:
    async def main() -> None:
        try:
            source = await resolve_model(url, config)
        except DjlError as err:
            assert 400 <= err.status < 500, (url, err.status, err.message)
            return
        assert source.model_dir.is_absolute()
        await release(source)

    trio.run(main)


@settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
@given(malformed_archives())
def test_fuzz_malformed_archives(tmp_path: Path, archive: tuple[str, bytes]) -> None:
    root = Path(tempfile.mkdtemp(dir=tmp_path))
    path = write(root / "src" / f"m{archive[0]}", archive[1])
    config = ServerConfig(cache_dir=root / "cache")
    _resolve_once(str(path), config)
    assert_clean(config)
    assert snapshot(root) - {"cache", "cache/cache", "cache/cache/repo", "cache/download"} == {
        "src",
        f"src/m{archive[0]}",
    }


#: Any text, text behind a scheme, and paths on the test server ("SITE" is replaced).
urls = st.one_of(
    st.text(max_size=40),
    st.builds(
        lambda scheme, rest: scheme + rest,
        st.sampled_from(["", "/", "file:", "file://", "http://", "https://", "s3://", "x:"]),
        st.text(max_size=40),
    ),
    st.builds(
        lambda mode, rest, ext: f"SITE/{mode}/{rest}{ext}",
        st.sampled_from(["files", "redirect", "unsized", ""]),  # no remote failures (5xx)
        st.text(max_size=20),
        st.sampled_from(["", ".zip", ".tar.gz", "m.zip?to=/", "m.zip?a=%ff&b"]),
    ),
)


@settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
@given(urls)
def test_fuzz_urls(tmp_path: Path, site: Site, monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    site.files["/m.zip"] = zip_bytes(MODEL)
    monkeypatch.chdir(tmp_path)
    url = url.replace("SITE", site.base)
    root = Path(tempfile.mkdtemp(dir=tmp_path))
    # No DNS or outside network: http(s) only to the test server.
    config = ServerConfig(
        cache_dir=root / "cache",
        allowed_urls=(r"file:.*", r"[^:]*", rf"{site.base}/.*"),
        download_connect_timeout_s=2,
        download_read_timeout_s=2,
    )
    _resolve_once(url, config)
    assert_clean(config)
