"""The page's case history through its HTTP API: the real application (client/web/app.py and
client/web/cases.py) on a real database (SQLite and the session's PostgreSQL), in process with
Starlette's TestClient.

Only the page's gRPC client is replaced: a small stand-in that answers known uploads with a score and
the fingerprint the server would compute, and ``known_match`` from the project's own
``bank.match.BankWatcher`` on the same database, as the server's version-choosing step does.
"""

from __future__ import annotations

import dataclasses
import hashlib
import threading

import numpy as np
import pytest
from fastapi.testclient import TestClient

import client.web.app as web_app
from bank.cases import CaseHistory
from bank.match import BankWatcher
from bank.store import Bank, BankUnavailable
from client.cli import main as cli_main
from client.errors import INVALID_ARGUMENT, NOT_FOUND, ClientError
from client.evaluate.layouts import read_layout
from client.results import ExplainResult, ScoreResult
from client.web.settings import WebSettings
from contract import Mode
from tests import pdq_data
from tests.test_client import make_score

RNG = np.random.default_rng(23)
SHARED_TOKEN = "the-shared-page-token"
FRAMES = 20


def random_hex() -> str:
    return pdq_data.random_hex(RNG)


def flipped(pdq_hex: str, bits: int) -> str:
    return pdq_data.flipped(pdq_hex, bits, RNG)


def fingerprint(hashes: list[str]) -> str:
    return pdq_data.document(hashes)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class FakeTriton:
    """The page's gRPC client for known uploads (bytes -> fingerprint); anything else is refused."""

    def __init__(self, videos: dict[bytes, str], bank: str) -> None:
        self.videos = videos
        self.watcher = BankWatcher(bank, poll_s=0)
        self.calls: list[tuple[str, Mode]] = []

    async def score(self, data, frames, *, name=None, mode=Mode.SCORE, version=None) -> ScoreResult:
        self.calls.append((name, mode))
        if bytes(data) not in self.videos:
            raise ClientError(INVALID_ARGUMENT, "unsupported input: not a video")
        fingerprint_json = self.videos[bytes(data)]
        return dataclasses.replace(
            make_score(video=name, frames=frames),
            fingerprint=fingerprint_json,
            known_match=self.watcher.match(fingerprint_json),
        )

    async def explain(self, data, frames, *, name=None, version=None) -> ExplainResult:
        scored = await self.score(data, frames, name=name)
        fields = {field.name: getattr(scored, field.name) for field in dataclasses.fields(ScoreResult)}
        return ExplainResult(
            **fields,
            faces=np.zeros((frames, 3, 112, 112), np.float32),
            heatmap=np.zeros((frames, 112, 112), np.float32),
        )

    async def model_info(self, timeout_s=None):
        raise ClientError(NOT_FOUND, "this server has no model_info")

    async def ready_lengths(self, lengths, timeout_s=None):
        return {"score": [FRAMES], "verdict": [FRAMES], "explain": [FRAMES], "temporal": []}

    async def close(self) -> None:
        pass


@dataclasses.dataclass
class Page:
    http: TestClient
    tokens: dict[str, str]
    videos: dict[bytes, str]
    database: str
    triton: FakeTriton

    def score(self, data: bytes, token: str | None = None, name: str = "clip.mp4", path: str = "/api/score"):
        return self.http.post(
            path, files={"file": (name, data, "video/mp4")}, data={"frames": str(FRAMES)}, headers=auth(token)
        )

    def get(self, path: str, token: str | None = None, **params):
        return self.http.get(path, params=params, headers=auth(token))

    def post(self, path: str, body: dict, token: str | None = None):
        return self.http.post(path, json=body, headers=auth(token))


def auth(token: str | None) -> dict[str, str]:
    return {} if token is None else {"authorization": f"Bearer {token}"}


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request, tmp_path) -> str:
    if request.param == "sqlite":
        return str(tmp_path / "bank.sqlite3")
    return request.getfixturevalue("postgres_server").new_database()


def add_reviewer(database: str, name: str, capsys) -> str:
    """``deepfake reviewers add NAME``: the token is the one line it prints on stdout."""
    capsys.readouterr()
    assert cli_main(["reviewers", "add", name, "--bank", database, "--by", "admin"]) == 0
    printed = capsys.readouterr()
    assert "shown this once" in printed.err
    [token] = printed.out.split()
    return token


def make_page(database: str, monkeypatch, shared_token: str | None = None, bank: str | None = None):
    videos: dict[bytes, str] = {}
    triton = FakeTriton(videos, database)
    monkeypatch.setattr(web_app, "AsyncDeepfakeClient", lambda connection: triton)
    app = web_app.create_app(WebSettings(token=shared_token), bank=database if bank is None else bank)
    return app, videos, triton


@pytest.fixture
def page(database, monkeypatch, capsys) -> Page:
    """An open page (no shared token) keeping its history in ``database``; reviewers alice and bob."""
    tokens = {name: add_reviewer(database, name, capsys) for name in ("alice", "bob")}
    app, videos, triton = make_page(database, monkeypatch)
    with TestClient(app) as http:
        yield Page(http, tokens, videos, database, triton)


@pytest.fixture
def locked_page(database, monkeypatch, capsys) -> Page:
    """The same page behind the shared token (DEEPFAKE_WEB_TOKEN)."""
    tokens = {"alice": add_reviewer(database, "alice", capsys)}
    app, videos, triton = make_page(database, monkeypatch, shared_token=SHARED_TOKEN)
    with TestClient(app) as http:
        yield Page(http, tokens, videos, database, triton)


def clip(page: Page, hashes: list[str] | None = None) -> bytes:
    """A new upload the stand-in knows (its bytes, its fingerprint)."""
    data = RNG.bytes(64)
    page.videos[data] = fingerprint(hashes or [random_hex() for _ in range(6)])
    return data


# ----------------------------------------------------------------------------- recording


def test_each_scored_upload_is_recorded_as_a_case(page) -> None:
    data = clip(page)

    by_alice = page.score(data, page.tokens["alice"], name="first.mp4")
    anonymous = page.score(data, name="again.mp4")
    explained = page.score(data, page.tokens["bob"], name="third.mp4", path="/api/explain")

    for response in (by_alice, anonymous, explained):
        assert response.status_code == 200, response.text
    assert by_alice.json()["case"]["uploaded_by"] == "alice" and anonymous.json()["case"]["uploaded_by"] is None
    assert explained.json()["case"]["uploaded_by"] == "bob" and len(explained.json()["heatmap_png"]) == FRAMES
    listed = page.get("/api/cases", page.tokens["bob"], sha256=sha(data))
    assert listed.status_code == 200
    cases = listed.json()["cases"]
    assert [c["id"] for c in cases] == [
        explained.json()["case"]["id"],
        anonymous.json()["case"]["id"],
        by_alice.json()["case"]["id"],
    ]
    first = cases[-1]
    answer = by_alice.json()
    assert first["content_sha256"] == sha(data) == answer["case"]["content_sha256"]
    assert (first["file_name"], first["model"], first["frames"]) == ("first.mp4", f"deepfake_{FRAMES}", FRAMES)
    assert (first["prob_fake"], first["decision"], first["model_version"]) == (
        answer["prob_fake"],
        answer["decision"],
        answer["model_version"],
    )
    assert first["checkpoint_sha256"] == answer["checkpoint_sha256"] and first["known_match"] is None
    assert first["features"] == 6 and cases[0]["model"] == f"explain_{FRAMES}"
    one = page.get(f"/api/cases/{first['id']}", page.tokens["alice"])
    assert one.json()["id"] == first["id"] and one.json()["reviews"] == []


def test_a_refused_upload_records_nothing(page) -> None:
    response = page.score(b"garbage", page.tokens["alice"])

    assert response.status_code == 422
    assert page.get("/api/cases", page.tokens["alice"]).json()["cases"] == []


# ----------------------------------------------------------------------------- who is asking


def test_every_decision_is_recorded_under_the_tokens_reviewer(page) -> None:
    case_id = page.score(clip(page)).json()["case"]["id"]

    alice = page.post(f"/api/cases/{case_id}/review", {"decision": "fake", "note": "lips"}, page.tokens["alice"])
    bob = page.post(f"/api/cases/{case_id}/review", {"decision": "unsure", "reviewer": "bob"}, page.tokens["bob"])

    assert alice.status_code == 200 and bob.status_code == 200
    assert alice.json()["review"]["reviewer"] == "alice" and bob.json()["review"]["reviewer"] == "bob"
    reviews = page.get(f"/api/cases/{case_id}", page.tokens["alice"]).json()["reviews"]
    assert [(r["reviewer"], r["decision"], r["note"]) for r in reviews] == [
        ("alice", "fake", "lips"),
        ("bob", "unsure", ""),
    ]


@pytest.mark.parametrize("field", ["reviewer", "by"])
def test_one_reviewers_token_cannot_act_as_another(page, field) -> None:
    case_id = page.score(clip(page)).json()["case"]["id"]

    review = page.post(f"/api/cases/{case_id}/review", {"decision": "real", field: "bob"}, page.tokens["alice"])
    confirm = page.post(f"/api/cases/{case_id}/confirm", {"note": "x", field: "bob"}, page.tokens["alice"])

    for response in (review, confirm):
        assert response.status_code == 403
        assert response.json() == {
            "error": "this token is the reviewer alice's: a request acts as its own reviewer only, never as 'bob'",
            "status": "PERMISSION_DENIED",
        }
    # Nothing was written under either name.
    assert page.get(f"/api/cases/{case_id}", page.tokens["bob"]).json()["reviews"] == []
    assert Bank(page.database).entries() == []


def test_without_a_reviewers_token_the_history_is_closed(page) -> None:
    case_id = page.score(clip(page)).json()["case"]["id"]
    routes = [
        ("get", "/api/cases", None),
        ("get", f"/api/cases/{case_id}", None),
        ("get", "/api/cases/export.csv", None),
        ("post", f"/api/cases/{case_id}/review", {"decision": "fake"}),
        ("post", f"/api/cases/{case_id}/confirm", {}),
        ("post", "/api/cases/search-similar", {"case_id": case_id}),
    ]
    for token in (None, "not-anybodys-token"):
        for method, path, body in routes:
            response = page.get(path, token) if method == "get" else page.post(path, body, token)
            assert response.status_code == 401, (path, token)
            assert response.json()["status"] == "UNAUTHENTICATED" and "reviewer's own token" in response.json()["error"]
            assert response.headers["www-authenticate"] == "Bearer"
    assert page.get(f"/api/cases/{case_id}", page.tokens["bob"]).json()["reviews"] == []


def test_the_shared_token_opens_scoring_but_records_no_decision(locked_page) -> None:
    page = locked_page
    data = clip(page)

    missing = page.score(data)
    shared = page.score(data, SHARED_TOKEN)
    reviewer = page.score(data, page.tokens["alice"])
    case_id = shared.json()["case"]["id"]
    review = page.post(f"/api/cases/{case_id}/review", {"decision": "fake"}, SHARED_TOKEN)
    listing = page.get("/api/cases", SHARED_TOKEN)
    status = page.get("/api/cases/status", SHARED_TOKEN).json()

    assert missing.status_code == 401
    assert shared.status_code == 200 and shared.json()["case"]["uploaded_by"] is None
    # A reviewer's own token opens the page too, and names the uploader.
    assert reviewer.status_code == 200 and reviewer.json()["case"]["uploaded_by"] == "alice"
    assert page.get("/api/models", page.tokens["alice"]).status_code == 200
    for refused in (review, listing):
        assert refused.status_code == 403
        assert refused.json()["error"].startswith("the shared page token (DEEPFAKE_WEB_TOKEN) opens scoring only")
    assert status == {
        "history": True,
        "reviewer": None,
        "can_review": False,
        "why": status["why"],
        "retention_days": 365,
        "decisions": ["fake", "real", "unsure"],
    }
    assert "opens scoring only" in status["why"]
    assert page.get("/api/cases/status", page.tokens["alice"]).json()["reviewer"] == "alice"
    assert page.get("/api/cases/status").status_code == 401


def test_a_disabled_reviewer_is_refused_at_once(page) -> None:
    case_id = page.score(clip(page)).json()["case"]["id"]
    assert cli_main(["reviewers", "disable", "alice", "--bank", page.database]) == 0

    response = page.post(f"/api/cases/{case_id}/review", {"decision": "fake"}, page.tokens["alice"])

    assert response.status_code == 401 and response.json()["error"].startswith("the reviewer alice was disabled")
    assert page.post(f"/api/cases/{case_id}/review", {"decision": "fake"}, page.tokens["bob"]).status_code == 200


def test_the_status_names_the_reviewer(page) -> None:
    assert page.get("/api/cases/status", page.tokens["bob"]).json()["reviewer"] == "bob"
    anonymous = page.get("/api/cases/status").json()
    assert (anonymous["history"], anonymous["reviewer"], anonymous["can_review"]) == (True, None, False)
    assert "reviewer's own token" in anonymous["why"]


# ----------------------------------------------------------------------------- reviews, the bank


def test_review_bodies_are_checked(page) -> None:
    case_id = page.score(clip(page)).json()["case"]["id"]
    token = page.tokens["alice"]

    assert page.post(f"/api/cases/{case_id}/review", {"decision": "maybe"}, token).status_code == 400
    assert page.post(f"/api/cases/{case_id}/review", {"decision": "fake", "score": "1"}, token).status_code == 400
    assert page.post(f"/api/cases/{case_id}/review", {"decision": 1}, token).status_code == 400
    assert page.post("/api/cases/99999/review", {"decision": "fake"}, token).status_code == 404
    not_json = page.http.post(
        f"/api/cases/{case_id}/review", content=b"decision=fake", headers={**auth(token), "content-type": "text/plain"}
    )
    assert not_json.status_code == 415
    huge = page.post(f"/api/cases/{case_id}/review", {"decision": "fake", "note": "x" * 20000}, token)
    assert huge.status_code == 413
    assert page.get(f"/api/cases/{case_id}", token).json()["reviews"] == []
    assert page.get("/api/cases", token, sha256="abc").status_code == 400
    for refused in (page.get("/api/cases", token, limit="all"), page.get("/api/cases", token, limit="0")):
        assert refused.status_code == 400 and refused.json()["status"] == "BAD_REQUEST"
    for path in ("/api/cases/abc", "/api/cases/-1"):
        assert page.get(path, token).json() == {"error": f"no case '{path.rsplit('/', 1)[1]}'", "status": "NOT_FOUND"}
    assert page.post("/api/cases/x1/review", {"decision": "fake"}, token).status_code == 404


def test_a_confirmed_fake_is_matched_in_the_next_answer(page) -> None:
    hashes = [random_hex() for _ in range(8)]
    case_id = page.score(clip(page, hashes), page.tokens["alice"]).json()["case"]["id"]

    confirmed = page.post(f"/api/cases/{case_id}/confirm", {"note": "the viral one"}, page.tokens["bob"])
    again = page.post(f"/api/cases/{case_id}/confirm", {}, page.tokens["alice"])
    # A re-encoded copy trimmed by two seconds: its frames within a few bits of the original's.
    copy = page.score(clip(page, [flipped(h, 5) for h in hashes[2:]]), name="copy.mp4").json()
    unrelated = page.score(clip(page)).json()

    assert confirmed.status_code == 200, confirmed.text
    entry = confirmed.json()["entry"]
    assert (entry["label"], entry["note"], entry["created_by"]) == ("fake", "the viral one", "bob")
    assert confirmed.json()["review"]["bank_entry_id"] == entry["id"]
    assert again.status_code == 409 and f"already in the bank as entry {entry['id']}" in again.json()["error"]
    [kept] = Bank(page.database).entries()
    assert kept.id == entry["id"] and kept.created_by == "bob"
    assert copy["known_match"]["status"] == "match" and copy["known_match"]["id"] == entry["id"]
    assert copy["known_match"]["similarity"] == 1.0 and copy["known_match"]["note"] == "the viral one"
    assert unrelated["known_match"] is None
    # The copy's case keeps what the bank said of it.
    listed = page.get("/api/cases", page.tokens["alice"], sha256=copy["case"]["content_sha256"]).json()["cases"]
    assert listed[0]["known_match"]["id"] == entry["id"]


def test_a_case_without_a_fingerprint_cannot_be_confirmed(page) -> None:
    data = clip(page)
    page.videos[data] = None
    case_id = page.score(data).json()["case"]["id"]

    response = page.post(f"/api/cases/{case_id}/confirm", {}, page.tokens["alice"])

    assert response.status_code == 422 and "has no fingerprint" in response.json()["error"]
    assert page.post("/api/cases/424242/confirm", {}, page.tokens["alice"]).status_code == 404


# ----------------------------------------------------------------------------- searches and the export


def test_similar_cases_are_found_from_a_case_or_an_upload(page) -> None:
    hashes = [random_hex() for _ in range(10)]
    source = page.score(clip(page, hashes)).json()["case"]["id"]
    copy = page.score(clip(page, [flipped(h, 4) for h in hashes[1:]])).json()["case"]["id"]
    page.score(clip(page))  # unrelated

    by_case = page.post("/api/cases/search-similar", {"case_id": source}, page.tokens["alice"])
    upload = clip(page, [flipped(h, 3) for h in hashes[:9]])
    by_upload = page.http.post(
        "/api/cases/search-similar",
        files={"file": ("query.mp4", upload, "video/mp4")},
        headers=auth(page.tokens["alice"]),
    )

    assert by_case.status_code == 200 and by_upload.status_code == 200, by_upload.text
    assert [m["case"]["id"] for m in by_case.json()["matches"]] == [copy]
    assert by_case.json()["query"]["case_id"] == source
    assert {m["case"]["id"] for m in by_upload.json()["matches"]} == {source, copy}
    assert by_upload.json()["query"]["content_sha256"] == sha(upload) and by_upload.json()["known_match"] is None
    assert all(m["similarity"] >= 0.8 for m in by_upload.json()["matches"])
    # The upload was scored for its fingerprint only (the verdict model), not recorded as a case.
    assert page.triton.calls[-1] == ("query.mp4", Mode.VERDICT)
    assert page.get("/api/cases", page.tokens["alice"], sha256=sha(upload)).json()["cases"] == []
    assert page.post("/api/cases/search-similar", {"case_id": "x"}, page.tokens["alice"]).status_code == 400
    assert page.post("/api/cases/search-similar", {"case_id": 4242}, page.tokens["alice"]).status_code == 404


def test_a_search_upload_needs_a_reviewer_before_it_is_read(page) -> None:
    response = page.http.post("/api/cases/search-similar", files={"file": ("q.mp4", clip(page), "video/mp4")})

    assert response.status_code == 401 and page.triton.calls == []


def test_the_export_is_read_by_evaluate_and_train(page, tmp_path) -> None:
    fake, real, unsure = clip(page), clip(page), clip(page)
    ids = {}
    for name, data in (("fake.mov", fake), ("real.mp4", real), ("unsure.mp4", unsure)):
        ids[name] = page.score(data, name=name).json()["case"]["id"]
    page.post(f"/api/cases/{ids['fake.mov']}/confirm", {}, page.tokens["alice"])
    page.post(f"/api/cases/{ids['real.mp4']}/review", {"decision": "real"}, page.tokens["bob"])
    page.post(f"/api/cases/{ids['unsure.mp4']}/review", {"decision": "unsure"}, page.tokens["bob"])

    response = page.get("/api/cases/export.csv", page.tokens["alice"], media="videos/by-hash")

    assert response.status_code == 200
    assert response.headers["content-type"] == "text/csv; charset=utf-8"
    assert response.headers["content-disposition"] == 'attachment; filename="cases.csv"'
    assert response.headers["x-videos-left-out-unsure"] == "1"
    csv_path = tmp_path / "cases.csv"
    csv_path.write_bytes(response.content)
    media = tmp_path / "videos" / "by-hash"
    media.mkdir(parents=True)
    (media / f"{sha(fake)}.mov").write_bytes(fake)
    (media / f"{sha(real)}.mp4").write_bytes(real)
    videos = read_layout(csv_path)
    assert [(v.path, v.truth) for v in videos] == sorted(
        [(str(media / f"{sha(fake)}.mov"), 1), (str(media / f"{sha(real)}.mp4"), 0)]
    )
    from train.data import read_set

    assert [v.path for v in read_set(str(csv_path))] == [v.path for v in videos]
    assert page.get("/api/cases/export.csv", page.tokens["alice"], media="/etc").status_code == 400


def test_the_cli_exports_the_same_csv_and_gathers_the_media_by_hash(page, tmp_path, capsys) -> None:
    fake = clip(page)
    case_id = page.score(fake, name="Clip One.MP4").json()["case"]["id"]
    page.post(f"/api/cases/{case_id}/confirm", {}, page.tokens["alice"])
    originals = tmp_path / "originals"
    originals.mkdir()
    (originals / "Clip One.MP4").write_bytes(fake)
    (originals / "unrelated.mp4").write_bytes(b"other bytes")
    target = tmp_path / "set" / "cases.csv"
    target.parent.mkdir()
    capsys.readouterr()

    code = cli_main(["cases", "export", str(target), "--from", str(originals), "--bank", page.database])

    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "exported 1 reviewed video" in printed and "copied 1 video" in printed
    assert (target.parent / "media" / f"{sha(fake)}.mp4").read_bytes() == fake
    [video] = read_layout(target)
    assert (video.path, video.truth) == (str(target.parent / "media" / f"{sha(fake)}.mp4"), 1)
    exported = page.get("/api/cases/export.csv", page.tokens["alice"])
    assert exported.text == target.read_text()


# ----------------------------------------------------------------------------- no history, no database


def test_without_a_database_the_page_keeps_no_history(monkeypatch, tmp_path) -> None:
    monkeypatch.delenv("DEEPFAKE_BANK", raising=False)
    videos: dict[bytes, str] = {}
    triton = FakeTriton(videos, str(tmp_path / "for-known-match.sqlite3"))
    monkeypatch.setattr(web_app, "AsyncDeepfakeClient", lambda connection: triton)
    videos[b"video"] = fingerprint([random_hex()])

    with TestClient(web_app.create_app(WebSettings())) as http:
        scored = http.post("/api/score", files={"file": ("a.mp4", b"video", "video/mp4")})
        listed = http.get("/api/cases", headers=auth("whatever"))
        status = http.get("/api/cases/status").json()

    assert scored.status_code == 200 and scored.json()["case"] is None
    assert listed.status_code == 404 and "keeps no case history" in listed.json()["error"]
    assert status["history"] is False and status["can_review"] is False


def test_a_database_that_goes_away_answers_503_and_scoring_goes_on(page, tmp_path, monkeypatch) -> None:
    data = clip(page)
    case_id = page.score(data).json()["case"]["id"]
    history = page.http.app.state.cases.history

    def gone(*args, **kwargs):
        raise BankUnavailable(f"the bank {page.database} cannot be reached: connection refused")

    # The database goes away: every connection of the page's history fails until it comes back.
    with monkeypatch.context() as broken:
        broken.setattr(history.db, "connect", gone)
        scored = page.score(data)
        review = page.post(f"/api/cases/{case_id}/review", {"decision": "fake"}, page.tokens["alice"])
        listing = page.get("/api/cases", page.tokens["alice"])

    assert scored.status_code == 200 and scored.json()["case"]["status"] == "unavailable"
    assert "the case was not recorded" in scored.json()["case"]["reason"]
    for response in (review, listing):
        assert response.status_code == 503 and response.headers["retry-after"] == "5"
        assert "connection refused" in response.json()["error"]
    # It comes back: the next request works, and nothing was half-written meanwhile.
    assert page.post(f"/api/cases/{case_id}/review", {"decision": "fake"}, page.tokens["alice"]).status_code == 200
    assert len(page.get("/api/cases", page.tokens["alice"], sha256=sha(data)).json()["cases"]) == 1


def test_a_real_postgresql_outage_answers_503_then_the_page_works_again(postgres_server, monkeypatch, capsys) -> None:
    database = postgres_server.new_database()
    token = add_reviewer(database, "alice", capsys)
    app, videos, _ = make_page(database, monkeypatch)
    data = RNG.bytes(32)
    videos[data] = fingerprint([random_hex() for _ in range(4)])
    with TestClient(app) as http:
        case_id = http.post("/api/score", files={"file": ("a.mp4", data, "video/mp4")}).json()["case"]["id"]
        postgres_server.stop()
        try:
            review = http.post(f"/api/cases/{case_id}/review", json={"decision": "fake"}, headers=auth(token))
            scored = http.post("/api/score", files={"file": ("a.mp4", data, "video/mp4")})
        finally:
            postgres_server.start()
        again = http.post(f"/api/cases/{case_id}/confirm", json={}, headers=auth(token))

    assert review.status_code == 503 and "cannot be reached" in review.json()["error"]
    assert scored.status_code == 200 and scored.json()["case"]["status"] == "unavailable"
    assert again.status_code == 200 and again.json()["review"]["reviewer"] == "alice"


# ----------------------------------------------------------------------------- two pages at once


def test_two_pages_on_one_database_review_and_confirm_at_once(database, monkeypatch, capsys) -> None:
    tokens = {name: add_reviewer(database, name, capsys) for name in ("alice", "bob")}
    first, videos, _ = make_page(database, monkeypatch)
    second, second_videos, _ = make_page(database, monkeypatch)
    data = RNG.bytes(32)
    videos[data] = second_videos[data] = fingerprint([random_hex() for _ in range(5)])
    results: dict[str, list] = {"alice": [], "bob": []}
    with TestClient(first) as one, TestClient(second) as two:
        case_id = one.post("/api/score", files={"file": ("a.mp4", data, "video/mp4")}).json()["case"]["id"]
        barrier = threading.Barrier(2)

        def reviewer(http: TestClient, name: str) -> None:
            barrier.wait()
            for index in range(5):
                body = {"decision": "fake", "note": f"{name} {index}"}
                results[name].append(
                    http.post(f"/api/cases/{case_id}/review", json=body, headers=auth(tokens[name])).status_code
                )
            results[name].append(
                http.post(f"/api/cases/{case_id}/confirm", json={}, headers=auth(tokens[name])).status_code
            )

        threads = [
            threading.Thread(target=reviewer, args=(one, "alice")),
            threading.Thread(target=reviewer, args=(two, "bob")),
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    assert results["alice"][:5] == results["bob"][:5] == [200] * 5
    assert sorted([results["alice"][5], results["bob"][5]]) == [200, 409]
    case = CaseHistory(database).get(case_id)
    assert len(case.reviews) == 11 and len(Bank(database).entries()) == 1
    assert {r.reviewer for r in case.reviews} == {"alice", "bob"}
