"""How the demo edition fares with real clients' tools: headless Chromium at phone and
desktop widths, SpamAssassin's local rules, and the reference MJML validator.

Each test skips, saying why, where its tool is missing (`make test` installs them
where the machine allows it: see tests/install-system-tools.sh).
"""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import ROOT, run_digest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
SPAMASSASSIN = shutil.which("spamassassin")
MJML_CLI = ROOT / "tests" / ".cache" / "mjml" / "node_modules" / ".bin" / "mjml"
CHROME_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run",
                "--disable-quic"]


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo run once for this module: its preview and outbox."""
    folder = tmp_path_factory.mktemp("demo")
    ran = run_digest("demo", "--out", str(folder / "out"), cwd=folder, timeout=120)
    assert ran.code == 0, ran.err
    return folder / "out"


WIDTHS = (320, 375, 600)
_MEASURE = """<!doctype html><html><body>%s
<pre id="result">pending</pre>
<script>
window.addEventListener("load", () => {
  const result = {};
  for (const frame of document.querySelectorAll("iframe")) {
    const doc = frame.contentDocument.documentElement;
    result[frame.width] = {scroll: doc.scrollWidth, client: frame.clientWidth};
  }
  document.getElementById("result").textContent = JSON.stringify(result);
});
</script></body></html>"""


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed "
                    "(tests/install-system-tools.sh installs it as root)")
def test_no_horizontal_scrolling_at_phone_and_desktop_widths(demo: Path, tmp_path: Path) -> None:
    # Headless Chromium will not make a window narrower than 500 px, so the edition is
    # shown in iframes of the widths under test.
    page = (demo / "preview" / "digest.html").read_text()
    frames = "".join(
        f'<iframe width="{w}" height="900" style="border:0" srcdoc="{html.escape(page)}">'
        "</iframe>" for w in WIDTHS
    )
    wrapper = tmp_path / "measure.html"
    wrapper.write_text(_MEASURE % frames)
    done = subprocess.run(
        [str(CHROMIUM), *CHROME_FLAGS, f"--user-data-dir={tmp_path / 'profile'}",
         "--virtual-time-budget=8000", "--window-size=1400,1000", "--dump-dom",
         wrapper.as_uri()],
        capture_output=True, text=True, timeout=120,
    )
    found = re.search(r'<pre id="result">(.*?)</pre>', done.stdout)
    assert found, done.stderr[-2000:]
    result = json.loads(html.unescape(found.group(1)))
    for width in WIDTHS:
        measured = result[str(width)]
        assert measured["scroll"] <= measured["client"], (
            f"horizontal scrolling at {width} px: content is {measured['scroll']} px wide")


@pytest.mark.skipif(SPAMASSASSIN is None, reason="Debian's spamassassin is not installed "
                    "(tests/install-system-tools.sh installs it as root)")
def test_spamassassin_local_rules_score_under_one(demo: Path) -> None:
    message = sorted((demo / "outbox").glob("*.eml"))[0].read_bytes()
    done = subprocess.run([str(SPAMASSASSIN), "-L", "-t"], input=message,
                          capture_output=True, timeout=120)
    report = done.stdout.decode("utf-8", "replace")
    found = re.search(r"X-Spam-Status: \w+, score=(-?[\d.]+)", report)
    assert found, report[-2000:]
    assert float(found.group(1)) < 1.0, report.split("Content analysis details:")[-1]


@pytest.mark.skipif(not MJML_CLI.exists(), reason="the reference MJML validator (npm mjml) is "
                    "not installed in tests/.cache (needs node and npm; see "
                    "tests/install-system-tools.sh)")
def test_generated_mjml_passes_the_reference_validator(demo: Path) -> None:
    done = subprocess.run(
        [str(MJML_CLI), "--validate", str(demo / "preview" / "digest.mjml"),
         "--config.validationLevel=strict"],
        capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
