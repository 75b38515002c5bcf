"""The README's first command: the demo on the embedded server, end to end."""

from __future__ import annotations

import html
import os
import re
import subprocess
import sys
from pathlib import Path

from baton.server import free_port, port_is_open
from systems.onboarding import OnboardingSystems
from tests.conftest import ROOT, SAMPLES

HIRES = ROOT / "samples" / "hr_onboarding"

# What the sample documents say that is nobody's business but the
# business's: vendor names, bank identifiers, totals (as the documents write
# them and as extracted).
PRIVATE = {
    "a vendor": ["ACME Industrial", "Nordlicht Elektrotechnik", "Harbour & Finch", "Globex Europe"],
    "an IBAN": ["NL91 ABNA", "NL91ABNA", "DE12 2005 0550", "DE12200505501234567890"],
    "an account": ["40-11-62", "71234568"],
    "a total": ["4,434.05", "4434.05", "5,041.55", "5041.55", "5.045,70", "5045.7"],
}
BANK = PRIVATE["an IBAN"] + PRIVATE["an account"]


def plaintext_in(files: list[Path], markers: list[str]) -> list[str]:
    found = []
    for path in files:
        data = path.read_bytes() if path.exists() else b""
        found += [f"{path.name}: {m}" for m in markers if m.encode() in data]
    return found


def read_as_text(page: Path) -> str:
    """An HTML page as a reader sees it: tags dropped, entities read, spaces folded."""
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", page.read_text())).split())


def database_files(path: Path) -> list[Path]:
    """An SQLite database and the journal files beside it."""
    return [path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")]


def test_demo_runs_every_sample_reviews_the_doubtful_and_stops_its_server(tmp_path: Path) -> None:
    port = free_port()
    # Its own folder: the test's fixtures write keys beside it in tmp_path.
    data = tmp_path / "demo"
    env = dict(os.environ, TEMPORAL_ADDRESS=f"127.0.0.1:{port}", BATON_DATA_DIR=str(data))
    env.pop("BATON_ERP_DB", None)
    # The demo makes its own payload key, as on a fresh clone.
    env.pop("BATON_PAYLOAD_KEYS", None)
    out = subprocess.run(
        [sys.executable, "-m", "baton.cli", "demo"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    samples = sorted(p.name for p in SAMPLES.iterdir())
    report = {line: lines[i + 1] for i, line in enumerate(lines) if line in samples}
    assert sorted(report) == samples
    assert report["invoice-acme-2026-0142.txt"].startswith("    entered as ERP #")
    assert "review skipped" in report["invoice-acme-2026-0142.txt"]
    assert "rita (reviewer) chose approve: missing_field" in report["invoice-missing-total.txt"]
    assert report["letter-unknown-type.txt"].startswith(
        "    rejected; rita (reviewer) chose reject"
    )
    assert report["invoice-quillon-new-account.txt"] == (
        "    stopped; sam (supervisor) stopped it: the document tells the AI to pay a new "
        "account: held for a fraud check"
    )
    assert f"http://localhost:{port + 1000}/namespaces/default/workflows/" in out.stdout
    renewals = {line: lines[i + 1] for i, line in enumerate(lines) if line.startswith("ACC-")}
    assert sorted(renewals) == ["ACC-1001", "ACC-1002", "ACC-1003"]
    assert renewals["ACC-1001"].startswith("    replied (as expected)")
    assert renewals["ACC-1002"].startswith("    replied_after_follow_up (as expected)")
    assert "cora (csm) changed it to executive_outreach" in renewals["ACC-1002"]
    assert renewals["ACC-1003"].startswith("    no_answer (as expected)")
    offers = sorted(p.name for p in HIRES.glob("*.json"))
    hires = {line: lines[i + 1] for i, line in enumerate(lines) if line in offers}
    assert sorted(hires) == offers
    for offer in ("engineer-berlin.json", "finance-london.json", "sales-remote-spain.json"):
        assert hires[offer].startswith("    completed (as expected): bank_details approved by ")
        assert "helen (hr) and frank (finance)" in hires[offer]
    engineer = hires["engineer-berlin.json"]
    assert "admin_approval approved by sofia (security)" in engineer
    assert "confirm approved by max (hiring_manager)" in engineer
    assert "admin_access ADM-" in engineer and "admin_access" not in hires["finance-london.json"]
    assert "badge" not in hires["sales-remote-spain.json"]
    assert hires["sales-amsterdam.json"].startswith(
        "    stopped (as expected): rachel (recruiter) withdrew the offer while it waited at "
        "bank_details: the candidate took another offer; undid "
    )
    assert hires["onsite-without-office.json"].startswith("    failed (as expected): ")
    assert "there is no office in ES" in hires["onsite-without-office.json"]
    hiring = data / "reports" / "period-hr_onboarding.html"
    assert f"period report {hiring}: {len(offers)} runs" in out.stdout
    # Each run's audit report, as an auditor reads it: who approved, who stopped, and why.
    html_of = {
        line: Path(lines[i + 3].split("audit report ", 1)[1].rsplit(": chain", 1)[0])
        for i, line in enumerate(lines)
        if line in samples
    }
    four_eyes = read_as_text(html_of["invoice-brightline-bl-88317.txt"])
    assert "rita (reviewer) approved gate “review” (round 1): approval 1 of 2" in four_eyes
    assert "vera (controller) approved gate “review”" in four_eyes
    assert "why: the total 13,336.40 USD is at or above 10,000: two people approve it" in four_eyes
    stopped = read_as_text(html_of["invoice-quillon-new-account.txt"])
    assert "sam (supervisor) stopped the run through the update channel" in stopped
    assert "why: check failed: the document speaks to an AI, not to a person" in stopped
    period = data / "reports" / "period-document_intake.html"
    assert f"period report {period}: {len(samples)} runs" in out.stdout
    assert period.read_text().count("<svg") >= 4, "the period report draws its charts"
    assert (data / "temporal.db").exists() and (data / "erp.sqlite").exists()
    readable_by_others = [
        f"{path.relative_to(data)} {path.stat().st_mode & 0o777:o}"
        for path in [data, *data.rglob("*")]
        if path.stat().st_mode & 0o077
    ]
    assert readable_by_others == [], "the data files are the user's alone"
    assert not port_is_open("127.0.0.1", port), "the demo stops the server it started"
    # After the check of file modes: opening the database may add its journal files.
    withdrawn = OnboardingSystems(data / "onboarding.sqlite").records_of("E-1046")
    assert withdrawn == {system: [] for system in withdrawn}, "the withdrawn hire is undone"
    assert (data / "payload-keys.toml").exists(), "the demo made its payload key"
    every_marker = [m for markers in PRIVATE.values() for m in markers]
    assert plaintext_in([SAMPLES / n for n in samples], every_marker), "the markers are real"
    assert plaintext_in(database_files(data / "temporal.db"), every_marker) == []
    assert (data / "audit.db").exists()
    assert plaintext_in(database_files(data / "audit.db"), BANK) == []
