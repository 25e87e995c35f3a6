"""Secrets (issue #17 item 1): API headers and params and the SQL password are never written
to a manifest, `_job.json`, the report or a message. Whole jobs run through the CLI against a
real API on 127.0.0.1 and a real PostgreSQL; every file written and every line printed is
searched for the secrets."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from aiohttp import web

from pipeline.config import ConfigError
from pipeline.fetch import ApiSource, Options
from pipeline.localsite import BackgroundSite
from pipeline.secrets import MASK, is_secret_name, redact_text

REPO = Path(__file__).resolve().parents[2]
TOKEN = "tok-7Hq2xZ9wLr4"
API_KEY = "key-Vb83nQe1Yk"
COOKIE = "sess-Jd62pUa0Tc"
PG_PASSWORD = "pw-Rt51mCx8Wd"


class SecuredApi(BackgroundSite):
    """Two pages of records behind a bearer token, an api_key parameter and a session cookie
    (401 without all three); /broken fails with 500 after the first page."""

    def __init__(self):
        super().__init__(start_timeout=10)
        self.token = TOKEN
        self.hits = 0

    async def handle(self, request: web.Request) -> web.Response:
        self.hits += 1
        if (request.headers.get("Authorization") != f"Bearer {self.token}"
                or request.query.get("api_key") != API_KEY or request.headers.get("Cookie") != f"session={COOKIE}"):
            return web.json_response({"error": "unauthorised"}, status=401)
        page = int(request.query.get("page", "1"))
        if request.path == "/broken" and page > 1:
            return web.Response(status=500, text=f"failed for api_key={API_KEY}")
        records = [{"id": page * 10 + i, "text": f"record {page}-{i} about secrets kept out"} for i in range(10)]
        return web.json_response({"items": records if page <= 2 else []})

    def make_app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("GET", "/{tail:.*}", self.handle)
        return app


def run_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """The CLI in its own process: what a user sees printed, tracebacks included."""
    return subprocess.run([sys.executable, "-m", "pipeline", *args], capture_output=True, text=True, cwd=REPO,
                          env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})}, timeout=600)


def run_here(job: Path, out: Path, stages: list[str] | None = None, env: dict | None = None,
             monkeypatch=None) -> tuple[str, str]:
    """The same job in this process (a new process costs ~10 s of imports): (printed, error)."""
    from pipeline.runner import run_job

    for key, value in (env or {}).items():
        monkeypatch.setenv(key, value)
    printed: list[str] = []
    try:
        run_job(job, out, only=stages, echo=printed.append)
    except Exception as error:  # noqa: BLE001 - the message is what the test inspects
        return "\n".join(printed), f"{type(error).__name__}: {error}"
    finally:
        for key in env or {}:
            monkeypatch.delenv(key)
    return "\n".join(printed), ""


def assert_nowhere(secrets: list[str], folder: Path, *printed: str) -> int:
    """No secret in any file under FOLDER (any byte) nor in the printed text; returns files read."""
    files = [p for p in folder.rglob("*") if p.is_file()]
    for path in files:
        data = path.read_bytes()
        for secret in secrets:
            assert secret.encode() not in data, f"{secret} written to {path}"
    for text in printed:
        for secret in secrets:
            assert secret not in text, f"{secret} printed: {text[-2000:]}"
    return len(files)


def api_job(path: Path, url: str, endpoint: str = "/items", token: str = TOKEN) -> Path:
    path.write_text(f"""
[job]
name = "secured api"
output = "{path.parent / 'out'}"
stages = ["fetch", "clean", "report"]

[engine]
workers = 0

[[fetch.sources]]
kind = "api"
url = "{url}{endpoint}"
allow_private = true
retries = 0
records_path = "items"
headers = {{Authorization = "Bearer {token}", Cookie = "env:TEST_API_COOKIE"}}
params = {{api_key = "{API_KEY}", lang = "en"}}

[clean]
min_words = 1
min_stop_words = 0
min_alpha_words_ratio = 0.0
max_top_2gram_char_ratio = 1.0
max_top_3gram_char_ratio = 1.0
max_top_4gram_char_ratio = 1.0
min_sentences = 0
min_punct_lines_ratio = 0.0

[report]
sample_rows = 100
""")
    return path


def test_api_secrets_are_in_no_file_and_no_output(tmp_path, monkeypatch, caplog):
    env = {"TEST_API_COOKIE": f"session={COOKIE}"}
    with SecuredApi() as api:
        job = api_job(tmp_path / "job.toml", api.url)
        out = tmp_path / "out"
        printed, error = run_here(job, out, env=env, monkeypatch=monkeypatch)
        assert error == "" and api.hits == 3  # two pages and the empty third
        assert "clean     in=20       out=20" in printed
        assert (out / "report" / "index.html").exists() and (out / "_job.json").exists()
        read = assert_nowhere([TOKEN, API_KEY, COOKIE], out, printed, caplog.text)
        assert read > 10
        source = json.loads((out / "raw" / "_manifest.json").read_text())["options"]["sources"][0]
        assert source["headers"] == {"Authorization": MASK, "Cookie": "env:TEST_API_COOKIE"}
        assert source["params"] == {"api_key": MASK, "lang": "en"}
        lineage = json.loads((out / "report" / "metrics.json").read_text())
        assert MASK in json.dumps(lineage)  # the report shows the redacted options

        # same secrets: the finished fetch is resumed, not re-run; a new token re-runs it
        run_here(job, out, ["fetch"], env, monkeypatch)
        assert api.hits == 3
        api.token = "tok-rotated-Qm31"
        rotated = api_job(tmp_path / "job.toml", api.url, token=api.token)
        printed, error = run_here(rotated, out, ["fetch"], env, monkeypatch)
        assert error == "" and api.hits == 6
        assert_nowhere([TOKEN, "tok-rotated-Qm31", API_KEY, COOKIE], out, printed, caplog.text)

        # a page that fails: the error names the page, not the key (the server echoes it too)
        broken = api_job(tmp_path / "broken.toml", api.url, endpoint="/broken", token=api.token)
        printed, error = run_here(broken, tmp_path / "out2", ["fetch"], env, monkeypatch)
        assert "/broken with {'api_key': '***', 'lang': 'en', 'page': '2'}: HTTP 500" in error
        assert_nowhere([api.token, API_KEY, COOKIE], tmp_path / "out2", printed, error, caplog.text)

        # the cookie's environment variable missing: a clear error naming the option
        printed, error = run_here(job, tmp_path / "out3", ["fetch"], {}, monkeypatch)
        assert "headers.Cookie = 'env:TEST_API_COOKIE': environment variable TEST_API_COOKIE is not set" in error


@pytest.mark.slow
def test_the_cli_prints_no_secret(tmp_path):
    """The same job as a user runs it: a process of its own, what it prints included."""
    with SecuredApi() as api:
        job = api_job(tmp_path / "job.toml", api.url)
        done = run_cli("run", str(job), env={"TEST_API_COOKIE": f"session={COOKIE}"})
        assert done.returncode == 0, done.stderr[-3000:]
        broken = api_job(tmp_path / "broken.toml", api.url, endpoint="/broken")
        failed = run_cli("run", str(broken), "--out", str(tmp_path / "out2"),
                         env={"TEST_API_COOKIE": f"session={COOKIE}"})
    assert "clean     in=20       out=20" in done.stdout
    assert failed.returncode != 0 and "'api_key': '***'" in failed.stderr
    assert_nowhere([TOKEN, API_KEY, COOKIE], tmp_path / "out", done.stdout, done.stderr, failed.stdout, failed.stderr)


def sql_job(path: Path, dsn: str, query: str) -> Path:
    path.write_text(f"""
[job]
name = "secured sql"
output = "{path.parent / 'out'}"
stages = ["fetch", "report"]

[engine]
workers = 0

[[fetch.sources]]
kind = "sql"
dsn = "{dsn}"
query = "{query}"

[report]
sample_rows = 100
""")
    return path


def test_sql_password_is_in_no_file_and_no_message(postgres_dsn, tmp_path, monkeypatch, caplog):
    # the test server trusts 127.0.0.1, so any password is accepted: the point is where it goes
    dsn = postgres_dsn.replace("postgres@", f"postgres:{PG_PASSWORD}@")
    query = "SELECT g AS id, 'row ' || g || ' of a secret table' AS text FROM generate_series(1, 50) g"
    jobs = tmp_path / "jobs"  # the job files hold the password (the point of env: is that they need not)
    jobs.mkdir()
    out = tmp_path / "out"
    printed, error = run_here(sql_job(jobs / "job.toml", dsn, query), out, monkeypatch=monkeypatch)
    assert error == "" and (out / "report" / "metrics.json").exists()
    assert_nowhere([PG_PASSWORD], out, printed, caplog.text)
    source = json.loads((out / "raw" / "_manifest.json").read_text())["options"]["sources"][0]
    assert source["dsn"] == postgres_dsn.replace("postgres@", "postgres:***@")
    assert json.loads((out / "raw" / "_manifest.json").read_text())["rows"] == 50

    # errors from the server or the driver: a bad query, then a refused connection
    bad = sql_job(jobs / "bad.toml", dsn, "SELECT * FROM no_such_table")
    printed, error = run_here(bad, tmp_path / "bad", monkeypatch=monkeypatch)
    assert "no_such_table" in error
    assert_nowhere([PG_PASSWORD], tmp_path / "bad", printed, error, caplog.text)
    refused = sql_job(jobs / "refused.toml", dsn.rsplit(":", 1)[0] + ":1/postgres", "SELECT 1 AS text")
    printed, error = run_here(refused, tmp_path / "refused", monkeypatch=monkeypatch)
    assert "SqlError" in error and "127.0.0.1" in error
    assert_nowhere([PG_PASSWORD], tmp_path / "refused", printed, error, caplog.text)

    # the DSN from the environment: the job file holds no secret at all
    env_job = sql_job(jobs / "env.toml", "env:TEST_PG_DSN", query)
    printed, error = run_here(env_job, tmp_path / "env", env={"TEST_PG_DSN": dsn}, monkeypatch=monkeypatch)
    assert error == ""
    manifest = json.loads((tmp_path / "env" / "raw" / "_manifest.json").read_text())
    assert manifest["options"]["sources"][0]["dsn"] == "env:TEST_PG_DSN" and manifest["rows"] == 50
    assert_nowhere([PG_PASSWORD], tmp_path / "env", printed, caplog.text)


def test_a_bad_source_table_is_echoed_without_its_secrets(tmp_path):
    job = tmp_path / "job.toml"
    job.write_text(f"""
[[fetch.sources]]
kind = "api"
headers = {{X-Api-Key = "{API_KEY}"}}
params = {{access_token = "{TOKEN}"}}
""")
    from pipeline.config import Job

    with pytest.raises(ConfigError) as caught:
        Job.load(job)
    assert "api needs a url" in str(caught.value)
    assert API_KEY not in str(caught.value) and TOKEN not in str(caught.value)
    assert "'X-Api-Key': '***'" in str(caught.value)


@pytest.mark.parametrize(("name", "secret"), [
    ("Authorization", True), ("Proxy-Authorization", True), ("Cookie", True), ("X-Api-Key", True),
    ("X-Auth-Token", True), ("api_key", True), ("apikey", True), ("access_token", True),
    ("client_secret", True), ("password", True), ("sig", True), ("Accept", False), ("lang", False),
    ("page", False), ("monkey", False), ("keywords", False), ("id_field", False), ("key_file", False),
])
def test_secret_names(name, secret):
    assert is_secret_name(name) is secret


def test_redact_text_forms():
    assert redact_text("postgresql://u:p%40ss@h:5/d?password=x&sslmode=require") \
        == "postgresql://u:***@h:5/d?password=***&sslmode=require"
    assert redact_text("GET /x?token=abc&page=2") == "GET /x?token=***&page=2"
    assert redact_text("Authorization: Bearer abc.def") == "Authorization: ***"
    assert redact_text("host=h password=pw user=u") == "host=h password=*** user=u"
    assert redact_text("{'api_key': 'env:K', 'q': 'x'}") == "{'api_key': 'env:K', 'q': 'x'}"


def test_fingerprint_follows_the_secret_but_shows_no_secret():
    def fingerprint(token: str) -> dict:
        return Options(sources=[ApiSource(url="http://example.org/a", headers={"Authorization": token})]).fingerprint_dict()

    first, same, other = fingerprint("Bearer one"), fingerprint("Bearer one"), fingerprint("Bearer two")
    assert first == same and first != other
    assert "one" not in json.dumps(first) and first["sources"][0]["headers"] == {"Authorization": MASK}
