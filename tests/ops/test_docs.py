"""docs/: the runbook answers every alert, and links between our pages resolve."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs"
OURS = ["architecture.md", "runbook.md", "migration-f5.md", "configuration.md"]
# Written by the promotion and replication work; not checked here until they exist.
ELSEWHERE = {"promotion.md", "replication.md"}


def anchors(page: Path) -> set[str]:
    """GitHub-style heading anchors."""
    out = set()
    for line in page.read_text().splitlines():
        m = re.match(r"^#{1,6}\s+(.*)$", line)
        if m:
            out.add(re.sub(r"[^a-z0-9 _-]", "", m.group(1).strip().lower()).replace(" ", "-"))
    return out


def test_every_alert_points_at_a_runbook_section() -> None:
    rules = yaml.safe_load((REPO / "deploy" / "prometheus" / "hotspare-rules.yml").read_text())
    have = anchors(DOCS / "runbook.md")
    for group in rules["groups"]:
        for rule in group["rules"]:
            url = rule["annotations"]["runbook_url"]
            page, _, anchor = url.partition("#")
            assert page == "docs/runbook.md", url
            assert anchor in have, f"{rule['alert']}: runbook has no section #{anchor}"


def test_runbook_covers_the_required_situations() -> None:
    have = anchors(DOCS / "runbook.md")
    for section in ("a-failover-happened", "planned-switchover", "failback-after-repair",
                    "full-resync", "fencing-on-hold"):
        assert section in have, section


def test_links_between_our_pages_resolve() -> None:
    for name in OURS:
        page = DOCS / name
        for target in re.findall(r"\]\(([^)#\s]+\.md)(?:#([^)]+))?\)", page.read_text()):
            file, anchor = target
            if file in ELSEWHERE and not (DOCS / file).exists():
                continue
            dest = (page.parent / file).resolve()
            assert dest.exists(), f"{name}: broken link to {file}"
            if anchor:
                assert anchor in anchors(dest), f"{name}: {file} has no section #{anchor}"
        for anchor in re.findall(r"\]\(#([^)]+)\)", page.read_text()):
            assert anchor in anchors(page), f"{name}: no section #{anchor}"


def test_architecture_links_the_generated_state_diagram() -> None:
    assert "(failover-states.md)" in (DOCS / "architecture.md").read_text()


def _relative_links(page: Path) -> list[tuple[str, str]]:
    """(file, anchor) of every relative Markdown link of ``page``, code blocks left out."""
    text = re.sub(r"^```.*?^```", "", page.read_text(), flags=re.S | re.M)
    text = re.sub(r"`[^`\n]*`", "", text)
    out = []
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto:: not inside the repo
            continue
        file, _, anchor = target.partition("#")
        out.append((file, anchor))
    return out


def test_every_relative_link_in_readme_and_docs_resolves() -> None:
    pages = [REPO / "README.md", *sorted(DOCS.glob("*.md"))]
    checked = 0
    for page in pages:
        for file, anchor in _relative_links(page):
            dest = (page.parent / file).resolve() if file else page
            where = f"{page.relative_to(REPO)}: link to {file or ''}{'#' + anchor if anchor else ''}"
            assert dest.exists(), f"{where}: no such file"
            assert dest.is_relative_to(REPO), f"{where}: points outside the repository"
            if anchor and dest.suffix == ".md":
                assert anchor in anchors(dest), f"{where}: no such section"
            checked += 1
    assert checked >= 20  # the pages do link to each other: an empty scan would prove nothing


def test_readme_and_docs_stand_alone() -> None:
    """No page leans on the design card outside the repository."""
    for page in [REPO / "README.md", *DOCS.glob("*.md")]:
        assert "shared/DESIGN.md" not in page.read_text(), page.name
    assert "(docs/design.md)" in (REPO / "README.md").read_text()
    assert "(design.md#contracts-others-rely-on)" in (DOCS / "architecture.md").read_text()
    assert "hotspare doctor" in (DOCS / "quickstart.md").read_text().split("## Check it all")[1]
