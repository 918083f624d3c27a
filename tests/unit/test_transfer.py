"""Tars on the wire, both ends: `extract_bundle` judges every header before it writes,
bounds the declared and the written bytes, and leaves nothing behind when it refuses;
`Remote.pull` against a hostile processor (a tiny local HTTP responder) keeps nothing.

The hostile tars are real ones (tests/hostile_tar.py): read by Python's tarfile
unguarded, the 2 KB sparse tar here expands to 391 MiB.
"""

from __future__ import annotations

import http.server
import json
import re
import threading
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from medveil.errors import IntegrityError
from medveil.service.transfer import (
    BundleTooLargeError,
    archive_bound,
    extract_bundle,
    tar_size,
    tar_stream,
)
from tests.conftest import invoke
from tests.hostile_tar import (
    Member,
    MiB,
    declared,
    end,
    gnu_sparse,
    pax_sparse,
    read_back,
    regular,
    special,
    tar_of,
)

MANIFEST = regular("manifest.json", b"{}")
#: the names a bundle holds, as docs/architecture.md states them (the oracle, written
#: independently of transfer.py's pattern)
BUNDLE_NAME = re.compile(r"manifest\.json|[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)?\.npy")


def _extract(tmp_path: Path, blob: bytes, *, max_bytes: int = MiB) -> tuple[Path, list[str]]:
    archive = tmp_path / "in.tar"
    archive.write_bytes(blob)
    into = tmp_path / "into"
    into.mkdir()
    return into, extract_bundle(archive, into, what="the test tar", max_bytes=max_bytes)


def _refused(tmp_path: Path, blob: bytes, *, max_bytes: int = MiB,
             error: type[Exception] = IntegrityError) -> str:
    with pytest.raises(error) as caught:
        _extract(tmp_path, blob, max_bytes=max_bytes)
    assert list((tmp_path / "into").iterdir()) == []
    return str(caught.value)


def test_the_hostile_tars_are_what_they_claim():
    sparse = read_back(gnu_sparse("train.view.npy", stored=b"x" * 100, real_size=391 * MiB)
                       + end())
    assert sparse[0].issparse() and sparse[0].size == 391 * MiB
    pax = read_back(pax_sparse("train.view.npy", stored=b"x" * 100, real_size=195 * MiB)
                    + end())
    assert pax[0].issparse() and pax[0].size == 195 * MiB


@pytest.mark.parametrize("member", [
    gnu_sparse("train.view.npy", stored=b"x" * 100, real_size=391 * MiB),
    pax_sparse("train.view.npy", stored=b"x" * 100, real_size=195 * MiB),
    gnu_sparse("train.view.npy", stored=b"x" * 100, real_size=200),  # small, still refused
    regular("train.view.npy", b"abc", pax={"size": "3"}),
    regular("train.view.npy", b"abc", pax={"GNU.sparse.size": "3"}),
    special("train.view.npy", b"2"), special("train.view.npy", b"1"),
    special("train", b"5"), special("train.view.npy", b"3"), special("train.view.npy", b"6"),
], ids=["gnu-sparse", "pax-sparse", "small-sparse", "pax-size", "pax-gnu-size", "symlink",
        "hardlink", "folder", "char-device", "fifo"])
def test_a_member_that_is_not_a_plain_file_is_refused_before_anything_is_written(
        tmp_path, member):
    message = _refused(tmp_path, MANIFEST + member + end(), max_bytes=2**40)
    assert "train" in message and "send the folder medveil wrote" in message


def test_declared_sizes_are_bounded_in_sum_before_a_byte_is_written(tmp_path):
    two = MANIFEST + regular("a.npy", b"a" * 600_000) + regular("b.npy", b"b" * 600_000)
    message = _refused(tmp_path, two + end(), max_bytes=MiB, error=BundleTooLargeError)
    assert "1 MiB" in message and "nothing was written" in message
    (tmp_path / "ok").mkdir()
    into, names = _extract(tmp_path / "ok", two + end(), max_bytes=2 * MiB)
    assert sorted(names) == ["a.npy", "b.npy", "manifest.json"]
    assert (into / "b.npy").read_bytes() == b"b" * 600_000


@pytest.mark.parametrize("size", [2**33, 8**11 - 1, 4 * MiB])
def test_a_header_declaring_more_than_follows_is_refused(tmp_path, size):
    blob = MANIFEST + declared("train.view.npy", data=b"x" * 100, size=size) + end()
    _refused(tmp_path, blob, max_bytes=MiB, error=BundleTooLargeError)


def test_a_negative_base256_size_is_refused(tmp_path):
    member = bytearray(declared("train.view.npy", data=b"", size=0)[:512])
    member[124:136] = b"\xff" * 12
    from tests.hostile_tar import _seal

    _refused(tmp_path, MANIFEST + _seal(member) + end())


@pytest.mark.parametrize("name", ["../manifest.json", "a/train.view.npy", "/etc/passwd",
                                  "manifest.json\n", "Train.view.npy", "x.y.z.npy", ".npy"])
def test_a_name_a_bundle_never_holds_is_refused(tmp_path, name):
    _refused(tmp_path, MANIFEST + regular(name, b"x") + end())


def test_a_duplicate_a_missing_manifest_and_a_truncated_tar_are_refused(tmp_path):
    for index, blob in enumerate([
            MANIFEST + regular("a.npy", b"1") + regular("a.npy", b"2") + end(),
            regular("a.npy", b"1") + end(),
            (MANIFEST + regular("a.npy", b"x" * 5000))[:-1000]]):
        (tmp_path / str(index)).mkdir()
        _refused(tmp_path / str(index), blob)


def test_the_bundles_medveil_writes_pass(tmp_path):
    folder = tmp_path / "bundle"
    folder.mkdir()
    (folder / "manifest.json").write_text("{}")
    (folder / "train.view.npy").write_bytes(b"v" * 70_000)
    (folder / "labels.npy").write_bytes(b"")
    blob = b"".join(tar_stream(folder))
    assert len(blob) == tar_size(folder) <= archive_bound(70_002)
    into, names = _extract(tmp_path, blob, max_bytes=70_002)
    assert sorted(names) == ["labels.npy", "manifest.json", "train.view.npy"]
    assert (into / "train.view.npy").read_bytes() == b"v" * 70_000


KINDS = ["reg", "areg", "cont", "pax_mtime", "pax_size", "gnu_sparse", "pax_sparse", "lie",
         "dir", "sym", "lnk", "fifo", "chr", "blk"]
NAMES = st.one_of(
    st.sampled_from(["manifest.json", "train.view.npy", "test.labels.npy", "keys.npy",
                     "val.view.npy", "../x.npy", "a/b.npy", "manifest.json\n", "X.npy",
                     "a.b.c.npy", "manifest.json/", "train.view.npy x"]),
    st.text(alphabet="abcXYZ019._/\n-", min_size=1, max_size=20))
GOOD_NAMES = ["train.view.npy", "test.labels.npy", "keys.npy", "val.view.npy", "a_1.b2.npy"]
GOOD = st.builds(Member, kind=st.sampled_from(Member.LEGAL), name=st.sampled_from(GOOD_NAMES),
                 data=st.binary(max_size=3000))
ANY = st.builds(Member, kind=st.sampled_from(KINDS), name=NAMES, data=st.binary(max_size=3000))


@st.composite
def member_lists(draw) -> list[Member]:
    """Plain bundle files, and often one generated member of any kind and name among them
    (the interesting case: a single hostile member in an otherwise good bundle)."""
    members = draw(st.lists(GOOD, max_size=5, unique_by=lambda m: m.name))
    if draw(st.booleans()):
        members.insert(draw(st.integers(0, len(members))), draw(ANY))
    if draw(st.integers(0, 9)):  # mostly with a manifest
        members.insert(draw(st.integers(0, len(members))), Member("reg", "manifest.json", b"{}"))
    return members


def _legal(members: list[Member], max_bytes: int) -> bool:
    names = [m.name for m in members]
    return (all(m.kind in Member.LEGAL and BUNDLE_NAME.fullmatch(m.name) for m in members)
            and len(set(names)) == len(names) and "manifest.json" in names
            and sum(len(m.data) for m in members) <= max_bytes)


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(members=member_lists(),
       max_bytes=st.one_of(st.integers(min_value=0, max_value=12_000), st.just(2**40)))
def test_nothing_is_written_unless_every_member_is_a_plain_bundle_file_within_bounds(
        tmp_path_factory, members, max_bytes):
    tmp = tmp_path_factory.mktemp("tar")
    archive, into = tmp / "in.tar", tmp / "into"
    into.mkdir()
    try:
        archive.write_bytes(tar_of(members))
    except (ValueError, UnicodeError):  # a name tarfile cannot put in a header at all
        return
    legal = _legal(members, max_bytes)
    event("legal" if legal else "refused")
    try:
        names = extract_bundle(archive, into, what="generated", max_bytes=max_bytes)
    except IntegrityError:
        assert not legal, [(m.kind, m.name, len(m.data)) for m in members]
        assert list(into.iterdir()) == []
        return
    assert legal, [(m.kind, m.name, len(m.data)) for m in members]
    assert sorted(names) == sorted(m.name for m in members)
    for member in members:
        assert (into / member.name).read_bytes() == member.data
    assert sum(p.stat().st_size for p in into.iterdir()) <= max_bytes


@settings(max_examples=100, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(sizes=st.lists(st.integers(min_value=1, max_value=3000), min_size=1, max_size=4),
       which=st.integers(min_value=0), into_file=st.floats(min_value=0, max_value=1,
                                                          exclude_max=True))
def test_a_tar_cut_short_inside_a_file_is_refused_and_leaves_nothing(
        tmp_path_factory, sizes, which, into_file):
    parts = [MANIFEST] + [regular(f"s{i}.npy", bytes([i]) * n) for i, n in enumerate(sizes)]
    index = 1 + which % len(sizes)  # cut inside this member's data or its padding
    start = sum(map(len, parts[:index])) + 512
    cut = start + int(into_file * (len(parts[index]) - 512))
    tmp = tmp_path_factory.mktemp("cut")
    (tmp / "in.tar").write_bytes(b"".join(parts)[:cut])
    (tmp / "into").mkdir()
    with pytest.raises(IntegrityError, match="not a complete tar"):
        extract_bundle(tmp / "in.tar", tmp / "into", what="cut", max_bytes=MiB)
    assert list((tmp / "into").iterdir()) == []


# -- the client's side: Remote.pull and `medveil remote predict` against a hostile processor


class Processor(http.server.ThreadingHTTPServer):
    """A processor that answers a job at once and serves ``body`` as its results."""

    daemon_threads = True

    def __init__(self, body: bytes, *, repeat: int = 1) -> None:
        self.body, self.repeat, self.sent = body, repeat, 0
        super().__init__(("127.0.0.1", 0), _Handler)
        self.url = f"http://127.0.0.1:{self.server_address[1]}"
        threading.Thread(target=self.serve_forever, daemon=True).start()


class _Handler(http.server.BaseHTTPRequestHandler):
    server: Processor

    def log_message(self, *args) -> None:
        pass

    def _json(self, status: int, answer: dict) -> None:
        body = json.dumps(answer).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length", 0)))
        self._json(202, {"id": "job-" + "0" * 16, "status": "queued"})

    def do_GET(self) -> None:
        if self.path.startswith("/jobs/"):
            self._json(200, {"id": "job-" + "0" * 16, "kind": "predict", "status": "done",
                             "output": "results-" + "1" * 16, "queued_ahead": 0,
                             "error": None})
            return
        self.send_response(200)
        self.send_header("content-type", "application/x-tar")
        self.end_headers()  # no length: the client must bound what it reads itself
        try:
            for _ in range(self.server.repeat):
                self.wfile.write(self.server.body)
                self.server.sent += len(self.server.body)
        except (BrokenPipeError, ConnectionResetError):
            pass


@pytest.fixture()
def token(tmp_path) -> Path:
    path = tmp_path / "c.token"
    path.write_text("t0ken\n")
    path.chmod(0o600)
    return path


HOSTILE = {
    "gnu-sparse-391MiB": MANIFEST + gnu_sparse("test.logits.npy", stored=b"x" * 100,
                                               real_size=391 * MiB) + end(),
    "pax-sparse-195MiB": MANIFEST + pax_sparse("test.logits.npy", stored=b"x" * 100,
                                               real_size=195 * MiB) + end(),
    "declared-8GiB": MANIFEST + declared("test.logits.npy", data=b"x", size=2**33) + end(),
    "pax-size": MANIFEST + regular("test.logits.npy", b"x", pax={"size": str(2**30)}) + end(),
}


@pytest.mark.parametrize("name", list(HOSTILE))
def test_pull_from_a_hostile_processor_keeps_nothing(tmp_path, token, name):
    from medveil.service.client import Remote

    processor = Processor(HOSTILE[name])
    try:
        with pytest.raises(IntegrityError):
            Remote(processor.url, token).pull("results-" + "1" * 16, tmp_path / "out",
                                              max_bytes=MiB)
    finally:
        processor.shutdown()
    assert not (tmp_path / "out").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["c.token"]


def test_pull_stops_reading_an_endless_answer(tmp_path, token):
    from medveil.service.client import Remote

    processor = Processor(b"\0" * 65536, repeat=1000)  # 64 MiB, no length
    try:
        with pytest.raises(BundleTooLargeError, match="max-download-mb"):
            Remote(processor.url, token).pull("results-" + "1" * 16, tmp_path / "out",
                                              max_bytes=MiB)
    finally:
        processor.shutdown()
    assert processor.sent < 16 * MiB and not (tmp_path / "out").exists()


def test_a_hostile_processor_gets_one_line_and_exit_2_from_remote_predict(tmp_path, token):
    processor = Processor(HOSTILE["gnu-sparse-391MiB"])
    try:
        code, output = invoke("remote", "predict", "--server", processor.url, "--token-file",
                              str(token), "--release", "release-" + "2" * 16, "--out",
                              str(tmp_path / "res"), "--max-download-mb", "1", "--quiet")
    finally:
        processor.shutdown()
    assert code == 2, output
    lines = output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("medveil: error:") and "sparse" in lines[0]
    assert not (tmp_path / "res").exists()


def test_pull_refuses_a_result_id_the_service_never_gives(tmp_path, token):
    from medveil.service.client import Remote

    with pytest.raises(IntegrityError, match="not an id"):
        Remote("http://127.0.0.1:9", token).pull("../../etc", tmp_path / "out")
