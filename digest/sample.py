"""The files digest ships for a new setup: the sample config, the email templates and the
sample feed of a fictional publication. `digest init` writes them; the demo reads them."""

from __future__ import annotations

import shutil
from pathlib import Path

from .errors import DigestError
from .render import PACKAGED_TEMPLATES

DATA = Path(__file__).with_name("data")
SAMPLE_FEED = DATA / "sample-feed.xml"
CONFIG_TEMPLATE = DATA / "config.toml.in"
SAMPLE_IMAGES = DATA / "sample-images"


def sample_config(feed: str) -> str:
    """The commented sample config.toml, its source pointing at ``feed``."""
    return CONFIG_TEMPLATE.read_text(encoding="utf-8").replace("@SAMPLE_FEED@", feed)


def init(folder: Path, *, force: bool = False) -> list[Path]:
    """Write config.toml, email_templates/ and sample-feed.xml into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    targets = [folder / "config.toml", folder / "email_templates", folder / "sample-feed.xml"]
    existing = [t for t in targets if t.exists()]
    if existing and not force:
        raise DigestError(
            f"{existing[0]} already exists; nothing was written",
            hint="pass --force to overwrite, or choose another folder",
        )
    targets[0].write_text(sample_config("sample-feed.xml"), encoding="utf-8")
    if targets[1].exists():
        shutil.rmtree(targets[1])
    shutil.copytree(PACKAGED_TEMPLATES, targets[1],
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copyfile(SAMPLE_FEED, targets[2])
    return targets
