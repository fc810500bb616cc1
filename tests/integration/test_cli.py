"""The `digest` command as a real process: exit codes, one-line errors, the contract."""

from __future__ import annotations

import email
import json
from datetime import UTC, datetime
from email import policy
from pathlib import Path

import pytest

from digest.deliver.sink import SmtpSink, free_port
from digest.demo import shifted_feed
from digest.sample import SAMPLE_FEED
from tests.conftest import SECRET, FeedServer, Route, config_text, run_digest

ENV = {"DIGEST_SECRET_KEY": SECRET}


def _one_clean_error(stderr: str) -> str:
    assert "Traceback" not in stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert lines and lines[0].startswith("error: "), stderr
    assert all(line.startswith(("error: ", "hint: ")) for line in lines), stderr
    return lines[0]


@pytest.fixture
def project(tmp_path: Path, feed_server: FeedServer) -> Path:
    feed_server.routes["/feed"] = Route(shifted_feed(SAMPLE_FEED.read_bytes(),
                                                     datetime.now(UTC)))
    (tmp_path / "config.toml").write_text(config_text(
        feeds=[("Meridian", feed_server.url("/feed"))], smtp_port=free_port()))
    return tmp_path


def test_config_error_is_one_line_and_exit_2(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text(config_text().replace("window_days = 7",
                                                                "window_dayz = 7"))
    ran = run_digest("gather", cwd=tmp_path)
    assert ran.code == 2
    line = _one_clean_error(ran.err)
    assert "config.toml:" in line and "window_dayz" in line


def test_missing_config_file_says_how_to_make_one(tmp_path: Path) -> None:
    ran = run_digest("gather", cwd=tmp_path)
    assert ran.code == 2
    _one_clean_error(ran.err)
    assert "digest init" in ran.err


def test_config_is_chosen_by_flag_or_environment(tmp_path: Path) -> None:
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    (folder / "custom.toml").write_text(config_text())
    assert run_digest("--config", str(folder / "custom.toml"), "articles", cwd=tmp_path).code == 0
    ran = run_digest("articles", cwd=tmp_path, env={"DIGEST_CONFIG": str(folder / "custom.toml")})
    assert ran.code == 0 and "0 articles" in ran.out
    assert (folder / "digest.db").exists()  # relative to the config file, not the cwd


def test_missing_secret_is_one_line_and_exit_2(project: Path) -> None:
    assert run_digest("gather", cwd=project).code == 0
    assert run_digest("subscribers", "add", "ann@example.org", cwd=project).code == 0
    ran = run_digest("send", cwd=project)
    assert ran.code == 2
    assert "DIGEST_SECRET_KEY is not set" in _one_clean_error(ran.err)


def test_unreachable_smtp_server_is_one_line_and_nonzero(project: Path) -> None:
    run_digest("gather", cwd=project)
    run_digest("subscribers", "add", "ann@example.org", cwd=project)
    ran = run_digest("send", cwd=project, env=ENV)
    assert ran.code == 1
    assert "cannot connect to SMTP server 127.0.0.1:" in _one_clean_error(ran.err)


def test_gather_articles_preview_send_through_the_command(project: Path) -> None:
    gathered = run_digest("gather", cwd=project)
    assert gathered.code == 0 and "Meridian: 15 new" in gathered.out
    listed = run_digest("articles", "--json", cwd=project)
    records = [json.loads(line) for line in listed.out.splitlines()]
    assert len(records) == 15
    for key in ("url", "title", "source", "published", "section", "author", "image", "summary"):
        assert key in records[0]
    datetime.fromisoformat(records[0]["published"])
    assert records[0]["source"] == "Meridian"

    preview_dir = project / "pv"
    shown = run_digest("preview", "--out", str(preview_dir), cwd=project, env=ENV)
    assert shown.code == 0, shown.err
    assert {p.name for p in preview_dir.iterdir()} == {"digest.html", "digest.txt",
                                                       "digest.eml", "digest.mjml"}
    msg = email.message_from_bytes((preview_dir / "digest.eml").read_bytes(),
                                   policy=policy.default)
    assert msg["To"] == "reader@example.com"  # no subscriber yet: a sample address

    config = (project / "config.toml").read_text()
    with SmtpSink() as sink:
        old_port = config.split("port = ")[1].split()[0]
        (project / "config.toml").write_text(
            config.replace(f"port = {old_port}", f"port = {sink.port}"))
        for address in ("ann@example.org", "bob@example.org"):
            assert run_digest("subscribers", "add", address, cwd=project).code == 0
        sent = run_digest("send", cwd=project, env=ENV)
        assert sent.code == 0, sent.err
        assert "sent 2" in sent.out
        again = run_digest("send", cwd=project, env=ENV)
        assert again.code == 0 and "already sent" in again.out
        assert len(sink.received) == 2


def test_subscribers_import_reports_bad_rows_and_keeps_good_ones(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text(config_text())
    (tmp_path / "list.csv").write_text(
        "email,name,city\n"
        "ann@example.org,Ann,Paris\n"
        "not-an-address,Bad,Rome\n"
        "ANN@example.org,Ann again,Oslo\n"
        "bob@example.org,,Lima\n"
        ",No email,\n"
    )
    ran = run_digest("subscribers", "import", "list.csv", cwd=tmp_path)
    assert ran.code == 0
    assert "imported 2 subscribers, skipped 3 rows" in ran.out
    assert "list.csv:3:" in ran.err and "not a valid email address" in ran.err
    assert "list.csv:4:" in ran.err and "appears twice" in ran.err
    assert "list.csv:6:" in ran.err
    listed = [json.loads(x) for x in run_digest("subscribers", "list", "--json",
                                                cwd=tmp_path).out.splitlines()]
    assert [(s["email"], s["name"], s["status"]) for s in listed] == [
        ("ann@example.org", "Ann", "confirmed"), ("bob@example.org", None, "confirmed")]
    assert listed[0]["attributes"] == {"city": "Paris"}
    removed = run_digest("subscribers", "remove", "Ann@Example.org", cwd=tmp_path)
    assert removed.code == 0
    gone = run_digest("subscribers", "remove", "ann@example.org", cwd=tmp_path)
    assert gone.code == 1 and "is not a subscriber" in _one_clean_error(gone.err)


def test_adding_a_bad_address_is_one_clean_error(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text(config_text())
    ran = run_digest("subscribers", "add", "nobody@", cwd=tmp_path)
    assert ran.code == 1 and "not a valid email address" in _one_clean_error(ran.err)


def test_init_writes_a_working_setup(tmp_path: Path) -> None:
    ran = run_digest("init", "site", cwd=tmp_path)
    assert ran.code == 0
    site = tmp_path / "site"
    assert (site / "config.toml").exists()
    assert (site / "email_templates" / "digest.mjml.j2").exists()
    assert run_digest("gather", cwd=site).code == 0
    again = run_digest("init", "site", cwd=tmp_path)
    assert again.code == 1 and "already exists" in _one_clean_error(again.err)


def test_demo_delivers_one_message_per_subscriber_and_writes_the_preview(tmp_path: Path) -> None:
    ran = run_digest("demo", cwd=tmp_path, timeout=60)
    assert ran.code == 0, ran.err
    outbox = tmp_path / "demo-output" / "outbox"
    emls = sorted(outbox.glob("*.eml"))
    assert len(emls) == 3
    recipients = set()
    for path in emls:
        msg = email.message_from_bytes(path.read_bytes(), policy=policy.default)
        assert msg.get_content_type() == "multipart/alternative"
        assert [p.get_content_type() for p in msg.iter_parts()] == ["text/plain", "text/html"]
        recipients.add(msg["To"].addresses[0].addr_spec)
    assert len(recipients) == 3
    preview = tmp_path / "demo-output" / "preview"
    assert {"digest.html", "digest.txt", "digest.eml", "digest.mjml"} <= {
        p.name for p in preview.iterdir()}
    assert str(outbox) in ran.out and str(preview) in ran.out
    # A second run starts afresh: still exactly one file per message.
    assert run_digest("demo", cwd=tmp_path, timeout=60).code == 0
    assert len(list(outbox.glob("*.eml"))) == 3


def test_subscriber_lifecycle_through_the_command(tmp_path: Path) -> None:
    import csv

    with SmtpSink() as sink:
        (tmp_path / "config.toml").write_text(config_text(smtp_port=sink.port))
        added = run_digest("subscribers", "add", "pend@example.org", "--pending", cwd=tmp_path,
                           env=ENV)
        assert added.code == 0 and "confirmation link was mailed" in added.out
        (tmp_path / "p.csv").write_text("email,name\nq1@example.org,Q\nq2@example.org,\n")
        imported = run_digest("subscribers", "import", "p.csv", "--status", "pending",
                              cwd=tmp_path, env=ENV)
        assert imported.code == 0 and "imported 2" in imported.out
        assert sorted(r.recipients[0] for r in sink.received) == [
            "pend@example.org", "q1@example.org", "q2@example.org"]
        assert all(b"/confirm/" in r.data for r in sink.received)
    run_digest("subscribers", "add", "conf@example.org", cwd=tmp_path)
    pending = run_digest("subscribers", "list", "--status", "pending", "--json", cwd=tmp_path)
    assert len(pending.out.splitlines()) == 3
    left = run_digest("subscribers", "unsubscribe", "CONF@example.org", cwd=tmp_path)
    assert left.code == 0 and "unsubscribed conf@example.org" in left.out
    exported = run_digest("subscribers", "export", "all.csv", cwd=tmp_path)
    assert exported.code == 0 and "wrote 4 subscribers" in exported.out
    rows = list(csv.DictReader((tmp_path / "all.csv").open()))
    conf = next(r for r in rows if r["email"] == "conf@example.org")
    assert conf["status"] == "unsubscribed" and conf["unsubscribed_at"]
    assert "administrator" in json.loads(conf["consent"])["method"]
    q1 = next(r for r in rows if r["email"] == "q1@example.org")
    assert json.loads(q1["consent"])["file"] == "p.csv" and q1["name"] == "Q"
    # An unsubscribed address cannot be imported back unasked.
    (tmp_path / "again.csv").write_text("email\nconf@example.org\n")
    again = run_digest("subscribers", "import", "again.csv", cwd=tmp_path)
    assert "imported 0" in again.out and "status unsubscribed" in again.err


def test_erasure_keeps_delivery_counts_anonymous(project: Path) -> None:
    import sqlite3

    with SmtpSink() as sink:
        config = (project / "config.toml").read_text()
        old_port = config.split("port = ")[1].split()[0]
        (project / "config.toml").write_text(
            config.replace(f"port = {old_port}", f"port = {sink.port}"))
        run_digest("gather", cwd=project)
        for address in ("ann@example.org", "bob@example.org"):
            run_digest("subscribers", "add", address, cwd=project)
        assert run_digest("send", "--skip-link-check", cwd=project, env=ENV).code == 0
    assert run_digest("subscribers", "remove", "ann@example.org", cwd=project).code == 0
    db = sqlite3.connect(project / "digest.db")
    assert db.execute("select count(*) from subscribers where email like 'ann%'").fetchone()[0] == 0
    rows = db.execute("select subscriber_id, status from deliveries order by id").fetchall()
    assert sorted(r[0] or 0 for r in rows) == [0, 2]  # Ann's row stays, without her
    assert [r[1] for r in rows] == ["sent", "sent"]


def test_file_mistakes_are_one_clean_error(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text(config_text())
    ran = run_digest("subscribers", "export", "/nonexistent/dir/out.csv", cwd=tmp_path)
    assert ran.code == 1 and "/nonexistent/dir/out.csv" in _one_clean_error(ran.err)
    missing = run_digest("subscribers", "import", "nope.csv", cwd=tmp_path)
    assert missing.code == 1 and "nope.csv" in _one_clean_error(missing.err)
