"""The download-once cache, against a local HTTP server and file:// URLs (never the network)."""
from __future__ import annotations

import hashlib
import http.server
import threading
from pathlib import Path

import pytest

from attnbench.job import run_job
from attnbench.train.download import DownloadError, cache_dir, fetch

BODY = ("First Citizen:\nBefore we proceed any further, hear me speak.\n" * 50).encode()
SHA = hashlib.sha256(BODY).hexdigest()


@pytest.fixture
def server():
    """A server on 127.0.0.1 serving `state["body"]` at any path and counting GETs."""
    state = {"body": BODY, "gets": 0}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            state["gets"] += 1
            self.send_response(200)
            self.send_header("Content-Length", str(len(state["body"])))
            self.end_headers()
            self.wfile.write(state["body"])

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    state["url"] = f"http://127.0.0.1:{httpd.server_address[1]}/input.txt"
    yield state
    httpd.shutdown()
    httpd.server_close()


def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if not p.name.endswith(".lock"))


def test_downloads_once_and_verifies(server, tmp_path):
    path = fetch(server["url"], SHA, tmp_path, "shakespeare.txt")
    assert path.read_bytes() == BODY and server["gets"] == 1
    assert fetch(server["url"], SHA, tmp_path, "shakespeare.txt") == path
    assert server["gets"] == 1, "a cached, verified file is never fetched again"
    assert _leftovers(tmp_path) == ["shakespeare.txt"], "no temporary files left behind"


def test_checksum_mismatch_caches_nothing(server, tmp_path):
    server["body"] = BODY[:-10] + b"corrupted!"
    with pytest.raises(DownloadError) as exc:
        fetch(server["url"], SHA, tmp_path, "shakespeare.txt")
    msg = str(exc.value)
    assert "SHA-256" in msg and "nothing was cached" in msg and "data.path" in msg and "\n" not in msg
    assert _leftovers(tmp_path) == []


def test_corrupt_cached_file_is_fetched_again(server, tmp_path):
    (tmp_path / "shakespeare.txt").write_bytes(b"truncated")
    assert fetch(server["url"], SHA, tmp_path, "shakespeare.txt").read_bytes() == BODY
    assert server["gets"] == 1


def test_file_url(tmp_path):
    src = tmp_path / "src.txt"
    src.write_bytes(BODY)
    cache = tmp_path / "cache"
    assert fetch(src.as_uri(), SHA, cache, "x.txt").read_bytes() == BODY


def test_no_network_says_how_to_pass_a_local_copy(tmp_path):
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(DownloadError) as exc:
        fetch(f"http://127.0.0.1:{port}/input.txt", SHA, tmp_path / "c", "shakespeare.txt", timeout=5)
    msg = str(exc.value)
    assert "download failed" in msg and "data.path=" in msg and "\n" not in msg
    assert _leftovers(tmp_path / "c") == []


def test_cache_dir_default_and_env(monkeypatch, tmp_path):
    assert cache_dir(str(tmp_path)) == tmp_path
    monkeypatch.setenv("ATTNBENCH_CACHE", str(tmp_path / "env"))
    assert cache_dir(None) == tmp_path / "env"
    monkeypatch.delenv("ATTNBENCH_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir(None) == tmp_path / "xdg" / "attnbench"


def test_shakespeare_job_downloads_into_cache_dir(server, make_cfg, tmp_path):
    over = ["stages=[train]", "logger=none", "data=shakespeare", f"data.url={server['url']}", f"data.sha256={SHA}",
            f"data.cache_dir={tmp_path / 'cache'}", "train.steps=2", "train.batch_size=2", "train.seq_len=16",
            "train.eval_batches=1", "train.sample_tokens=8"]
    res = run_job(make_cfg(*over), tmp_path / "run")
    assert res["status"] == "ok" and (tmp_path / "cache" / "shakespeare.txt").is_file()
    assert res["train"]["data"]["vocab_size"] == len(set(BODY.decode())) == res["config"]["model"]["vocab_size"]
    res = run_job(make_cfg(*over), tmp_path / "run2")
    assert res["status"] == "ok" and server["gets"] == 1


def test_shakespeare_job_without_network_fails_with_one_line(make_cfg, tmp_path):
    res = run_job(make_cfg("stages=[train]", "logger=none", "data=shakespeare",
                           f"data.url=file://{tmp_path}/missing.txt"), tmp_path / "run")
    assert res["status"] == "failed" and "data.path=" in res["error"] and "\n" not in res["error"]


def test_shared_copy_by_path(make_cfg, shakespeare_path):
    from attnbench.train.data import prepare_data

    data = prepare_data(make_cfg("stages=[train]", "data=shakespeare", f"data.path={shakespeare_path}"))
    assert data.vocab_size == 65 and len(data.train_ids) + len(data.val_ids) == 1_115_394
