"""Take docs/report-run.png and docs/report-period.png, the README's pictures of
the audit reports: real reports of the demo's runs.

    .venv/bin/python docs/report_screenshots.py [--out-dir docs]

It runs `baton demo` in a temporary directory on a free port, then opens two of
the reports it wrote in Debian's headless Chromium (`make chromium` installs
it): the per-run report of the four-eyes invoice (both approvers, the reasons
for review, the checks) and the period report with its charts.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from playwright.async_api import Browser, async_playwright

from baton.server import free_port
from docs.screenshot import ROOT, VIEWPORT, launch_chromium

FOUR_EYES_SAMPLE = "invoice-brightline-bl-88317.txt"
# Tall enough for the summary, the checks and the oversight acts; the timeline
# below them is a table of every record, read in the file itself.
RUN_REPORT_HEIGHT = 2600


def demo_reports(data_dir: Path) -> tuple[Path, Path]:
    """Run the demo into ``data_dir``; the four-eyes run's report and the period report."""
    env = dict(
        os.environ, BATON_DATA_DIR=str(data_dir), TEMPORAL_ADDRESS=f"127.0.0.1:{free_port()}"
    )
    for inherited in ("BATON_ERP_DB", "BATON_PAYLOAD_KEYS", "BATON_AUDIT_URL"):
        env.pop(inherited, None)
    out = subprocess.run(
        [sys.executable, "-m", "baton.cli", "demo"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    at = out.index(FOUR_EYES_SAMPLE)
    run_report = Path(out[at + 3].split("audit report ", 1)[1].rsplit(": chain", 1)[0])
    return run_report, data_dir / "reports" / "period-document_intake.html"


async def capture_report(browser: Browser, report: Path, out: Path, *, height: int | None) -> None:
    context = await browser.new_context(viewport=VIEWPORT)
    try:
        page = await context.new_page()
        await page.goto(report.as_uri())
        full = await page.evaluate("document.documentElement.scrollHeight")
        shown = min(full, height) if height else full
        clip = {"x": 0, "y": 0, "width": VIEWPORT["width"], "height": shown}
        await page.screenshot(path=out, full_page=True, clip=clip)
    finally:
        await context.close()


async def main(out_dir: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        run_report, period_report = demo_reports(Path(tmp) / "demo")
        async with async_playwright() as playwright:
            browser = await launch_chromium(playwright)
            await capture_report(
                browser, run_report, out_dir / "report-run.png", height=RUN_REPORT_HEIGHT
            )
            await capture_report(browser, period_report, out_dir / "report-period.png", height=None)
            await browser.close()
    print(f"wrote {out_dir / 'report-run.png'} and {out_dir / 'report-period.png'}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--out-dir", type=Path, default=ROOT / "docs")
    asyncio.run(main(parser.parse_args().out_dir))
