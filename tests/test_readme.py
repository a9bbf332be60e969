"""The README as a new user meets it: short, pictures of the bot before it asks for anything, links that
lead somewhere, and the test command CI runs. (The pictures themselves are re-taken by
``docs/make_screenshots.py``, run in ``test_demo_browser.py``.)"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")
PICTURE = re.compile(r"!\[[^\]]+\]\((docs/pictures/[\w-]+\.png)\)")
LINK = re.compile(r"(?<!!)\[[^\]]+\]\(([^)#:]+)(?:#[^)]*)?\)")


def readme_pictures() -> list[str]:
    return PICTURE.findall(README)


def test_the_readme_is_short() -> None:
    assert len(README.encode("utf-8")) < 20_000


def test_it_shows_at_least_three_pictures_that_exist() -> None:
    pictures = readme_pictures()
    assert len(set(pictures)) >= 3, pictures
    for picture in pictures:
        data = (ROOT / picture).read_bytes()
        assert data.startswith(b"\x89PNG\r\n\x1a\n"), picture


def test_the_pictures_come_before_it_asks_for_a_token_or_an_id() -> None:
    last_picture = max(README.index(picture) for picture in readme_pictures())
    for ask in ("@BotFather", "token", "Telegram id", "config.toml"):
        assert last_picture < README.index(ask), ask
    # The sandbox, which needs none of that, comes before the Quick start too.
    assert README.index("leadbot demo") < README.index("## Quick start")


def test_every_picture_in_docs_is_shown() -> None:
    shown = {Path(picture).name for picture in readme_pictures()}
    kept = {path.name for path in (ROOT / "docs" / "pictures").glob("*.png")}
    assert kept == shown  # none left behind that the README no longer shows (and the script no longer takes)


def test_every_link_to_a_file_of_the_repository_leads_somewhere() -> None:
    targets = LINK.findall(README)
    assert "docs/benchmarks.md" in targets and "docs/architecture.md" in targets and "docs/http-api.md" in targets
    assert "LICENSE" in targets and "CHANGELOG.md" in targets
    for target in targets:
        assert (ROOT / target).exists(), target


def test_the_test_command_is_the_one_ci_runs() -> None:
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    marked = re.search(r"# --- the README's test command.*?---\n(.+?)\n# ---", ci, re.S)
    assert marked is not None
    command = marked.group(1).strip()
    assert f"```sh\n{command}\n```" in README


def test_the_changelog_is_kept() -> None:
    changelog = (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")
    assert "## [Unreleased]" in changelog
    assert "MIT License" in (ROOT / "LICENSE").read_text(encoding="utf-8")
