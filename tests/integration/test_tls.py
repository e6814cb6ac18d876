"""TLS end to end (spec §8.6): https listeners, management over TLS on its own listener, a
bad certificate at start-up, and https model downloads checked against a CA.

Certificates come from ``trustme``: a throw-away CA, and a server certificate it signs
for 127.0.0.1 and localhost. Nothing leaves the loopback interface.
"""

from __future__ import annotations

import ssl
from functools import partial
from pathlib import Path

import httpx
import pytest
import trio
import trustme
from serving import EXAMPLES, running_server, worker_pids
from store_helpers import ServerThread, Site, zip_bytes

from djl.__main__ import run_server
from djl.config import ConfigError, load_server_config


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def cert_files(ca: trustme.CA, tmp_path: Path) -> tuple[Path, Path, Path]:
    """(certificate chain, private key, CA certificate) PEM files for 127.0.0.1/2."""
    cert = ca.issue_cert("127.0.0.1", "127.0.0.2", "localhost")
    chain, key, ca_pem = tmp_path / "chain.pem", tmp_path / "key.pem", tmp_path / "ca.pem"
    cert.private_key_pem.write_to_path(str(key))
    chain.write_bytes(b"".join(blob.bytes() for blob in cert.cert_chain_pems))
    ca.cert_pem.write_to_path(str(ca_pem))
    return chain, key, ca_pem


def _causes(exc: BaseException | None) -> str:
    """The reprs of an exception and of everything it was raised from."""
    seen = []
    while exc is not None and len(seen) < 20:
        seen.append(repr(exc))
        exc = exc.__cause__ or exc.__context__
    return " <- ".join(seen)


def _config(tmp_path: Path, **overrides: str):
    return load_server_config(env={"DJL_CACHE_DIR": str(tmp_path / "cache"),
                                   "MODEL_SERVER_HOME": str(tmp_path)},
                              overrides={"load_models": "NONE", **overrides})


async def test_management_and_inference_on_separate_tls_listeners(tmp_path, cert_files):
    """Both listeners speak only TLS, with the configured certificate (a client that
    trusts the CA verifies it); each serves only its own routes."""
    chain, key, ca_pem = cert_files
    config = _config(tmp_path, inference_address="https://127.0.0.1:0",
                     management_address="https://127.0.0.2:0", certificate_file=str(chain),
                     private_key_file=str(key))
    assert config.dual_listeners
    before = worker_pids()
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        management, inference = await nursery.start(partial(run_server, config, shutdown=stop))
        try:
            assert management.startswith("https://") and inference.startswith("https://")
            verified = ssl.create_default_context(cafile=str(ca_pem))
            async with httpx.AsyncClient(verify=verified, timeout=60) as c:
                r = await c.post(f"{management}/models",
                                 params={"url": f"file:{EXAMPLES / 'echo'}/"})
                assert r.status_code == 200 and r.json() == {
                    "status": 'Model "echo" registered.'}
                listed = (await c.get(f"{management}/models")).json()["models"]
                assert [m["modelName"] for m in listed] == ["echo"]
                assert (await c.get(f"{management}/ping")).status_code == 404
                r = await c.post(f"{inference}/predictions/echo", content=b"sealed",
                                 headers={"content-type": "text/plain"})
                assert r.status_code == 200 and r.text == "sealed"
                r = await c.get(f"{inference}/models")
                assert r.status_code == 404 and r.json()["code"] == 404
            async with httpx.AsyncClient(timeout=10) as untrusting:  # the system CAs only
                for url in (management, inference):
                    with pytest.raises(httpx.ConnectError) as refused:
                        await untrusting.get(f"{url}/models")
                    assert "CERTIFICATE_VERIFY_FAILED" in _causes(refused.value)
                    with pytest.raises(httpx.HTTPError):  # no plain HTTP on a TLS port
                        await untrusting.get(url.replace("https://", "http://") + "/ping")
        finally:
            stop.set()
    assert worker_pids() - before == set()


@pytest.mark.parametrize("broken", ["not a certificate", "key of another certificate"])
def test_a_bad_certificate_stops_the_start_up_naming_the_files(tmp_path, cert_files, ca,
                                                               broken):
    """Refused while the configuration is read (djl-serving prints it as its one line and
    exits 1), not later as an SSL error of the socket layer."""
    chain, key, _ = cert_files
    if broken == "not a certificate":
        chain.write_text("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
        reason = "PEM"
    else:
        ca.issue_cert("127.0.0.1").private_key_pem.write_to_path(str(key))
        reason = "KEY_VALUES_MISMATCH"
    with pytest.raises(ConfigError) as caught:
        _config(tmp_path, inference_address="https://127.0.0.1:0",
                certificate_file=str(chain), private_key_file=str(key))
    message = str(caught.value)
    assert message.startswith(f"certificate_file {chain} and private_key_file {key} are not "
                              "a usable PEM certificate chain and its key: "), message
    assert reason in message, message


async def test_https_downloads_are_checked_against_the_configured_ca(
        tmp_path, cert_files, monkeypatch):
    """A model served over https by a certificate a private CA signed: refused (400,
    naming the verification failure) until SSL_CERT_FILE names that CA."""
    chain, key, ca_pem = cert_files
    echo = [("file", p.name, p.read_bytes()) for p in (EXAMPLES / "echo").iterdir()
            if p.is_file()]
    site = Site(files={"/echo.zip": zip_bytes(echo)})
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(chain, key)
    with ServerThread(site, tls=tls):
        url = f"{site.base}/f/echo.zip"
        assert url.startswith("https://")
        async with running_server(tmp_path) as server:
            c = server.client
            r = await c.post("/models", params={"url": url, "model_name": "untrusted"})
            assert r.status_code == 400, r.text
            message = r.json()["message"]
            assert "CERTIFICATE_VERIFY_FAILED" in message and url in message, message
            assert (await c.get("/models")).json() == {"models": []}
            monkeypatch.setenv("SSL_CERT_FILE", str(ca_pem))
            r = await c.post("/models", params={"url": url, "model_name": "trusted"})
            assert r.status_code == 200, r.text
            r = await c.post("/predictions/trusted", content=b"over tls",
                             headers={"content-type": "text/plain"})
            assert r.status_code == 200 and r.text == "over tls"
