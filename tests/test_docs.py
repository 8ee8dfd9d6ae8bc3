"""The documentation's links hold: every relative link in README.md, CHANGELOG.md and docs/ names a file (and
heading) that exists, every file under docs/figures/ is linked from a page, and the README stays a newcomer's page."""

import os
import re
import unicodedata

import pytest

from conftest import REPO_ROOT

LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.M | re.S)


def pages(root=REPO_ROOT):
    """Every markdown page of the project's documentation, as paths relative to ``root``."""
    found = [name for name in ("README.md", "CHANGELOG.md") if os.path.isfile(os.path.join(root, name))]
    for folder, _, files in os.walk(os.path.join(root, "docs")):
        found += [os.path.relpath(os.path.join(folder, name), root) for name in files if name.endswith(".md")]
    scripts_readme = os.path.join("scripts", "benchmarks", "README.md")
    if os.path.isfile(os.path.join(root, scripts_readme)):
        found.append(scripts_readme)
    return sorted(found)


def slug(heading):
    """The anchor GitHub gives a heading: lower case, punctuation but '-' and '_' dropped, spaces to '-'."""
    text = re.sub(r"[`*]", "", heading.strip().lower())
    text = "".join(ch for ch in text if ch in " -_" or unicodedata.category(ch)[0] in "LN")
    return text.replace(" ", "-")


def anchors(path):
    """The anchors of a markdown file's headings (outside code blocks), repeated ones numbered as GitHub does."""
    with open(path, encoding="utf-8") as handle:
        text = FENCE.sub("", handle.read())
    seen, result = {}, set()
    for heading in re.findall(r"^#{1,6} (.+)$", text, re.M):
        base = slug(heading)
        result.add(base if base not in seen else f"{base}-{seen[base]}")
        seen[base] = seen.get(base, 0) + 1
    return result


def links(page, root=REPO_ROOT):
    """``(target file relative to root, anchor or None)`` of every relative link of ``page``."""
    with open(os.path.join(root, page), encoding="utf-8") as handle:
        text = FENCE.sub("", handle.read())
    for target in LINK.findall(text):
        if re.match(r"^[a-z]+:", target):  # http:, https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        resolved = os.path.normpath(os.path.join(os.path.dirname(page), path)) if path else page
        yield resolved, anchor or None


def broken_links(root=REPO_ROOT):
    broken = []
    for page in pages(root):
        for target, anchor in links(page, root):
            full = os.path.join(root, target)
            if not os.path.exists(full):
                broken.append(f"{page}: {target} does not exist")
            elif anchor and target.endswith(".md") and anchor not in anchors(full):
                broken.append(f"{page}: {target} has no heading #{anchor}")
    return broken


def unlinked_figures(root=REPO_ROOT):
    linked = {target for page in pages(root) for target, _ in links(page, root)}
    figures = os.path.join(root, "docs", "figures")
    present = {os.path.relpath(os.path.join(folder, name), root)
               for folder, _, files in os.walk(figures) for name in files}
    return sorted(present - linked)


def test_every_link_names_an_existing_file_and_heading():
    assert broken_links() == []


def test_every_figure_is_linked_from_a_page():
    assert unlinked_figures() == []


def test_the_checks_find_a_broken_link_a_missing_heading_and_an_unlinked_figure(tmp_path):
    """The same checks on a small tree with one fault of each kind (so that the tests above can fail)."""
    (tmp_path / "docs" / "figures").mkdir(parents=True)
    (tmp_path / "docs" / "figures" / "used.png").write_bytes(b"png")
    (tmp_path / "docs" / "figures" / "orphan.json").write_text("{}")
    (tmp_path / "docs" / "page.md").write_text("# A page\n\n## Results at a glance (`--adamra-preset`)\n\n"
                                               "![plot](figures/used.png)\n")
    (tmp_path / "README.md").write_text(
        "# Read me\n\n[fine](docs/page.md#results-at-a-glance---adamra-preset) [gone](docs/none.md) "
        "[no heading](docs/page.md#nowhere) [web](https://example.org/x.md)\n"
        "```\n[inside a code block](docs/ignored.md)\n```\n")
    assert broken_links(str(tmp_path)) == ["README.md: docs/none.md does not exist",
                                           "README.md: docs/page.md has no heading #nowhere"]
    assert unlinked_figures(str(tmp_path)) == [os.path.join("docs", "figures", "orphan.json")]


def test_repeated_headings_get_numbered_anchors(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("# Runs\n\n## Seed 1\n\n## Seed 1\n\n```\n# not a heading\n```\n")
    assert anchors(str(page)) == {"runs", "seed-1", "seed-1-1"}


def test_readme_is_a_newcomers_page():
    with open(os.path.join(REPO_ROOT, "README.md"), encoding="utf-8") as handle:
        readme = handle.read()
    assert len(readme.splitlines()) <= 200
    assert "make demo" in readme and "make test" in readme
    hashes = [word for word in re.findall(r"\b[0-9a-f]{7,40}\b", readme) if re.search(r"[a-f]", word)
              and re.search(r"[0-9]", word)]
    assert hashes == [], f"commit hashes in README.md: {hashes}"
    assert not re.search(r"\b\d\d:\d\d UTC\b", readme), "clock times in README.md"


@pytest.mark.parametrize("page", ["docs/results.md", "docs/benchmarks.md", "docs/long-inputs.md"])
def test_reference_pages_stay_short(page):
    with open(os.path.join(REPO_ROOT, page), encoding="utf-8") as handle:
        assert len(handle.read().splitlines()) <= 420


def test_every_script_the_docs_name_exists():
    named = set()
    for page in pages():
        with open(os.path.join(REPO_ROOT, page), encoding="utf-8") as handle:
            named |= set(re.findall(r"\bscripts/[\w/]+\.(?:py|sh)\b", handle.read()))
    assert named and sorted(path for path in named if not os.path.isfile(os.path.join(REPO_ROOT, path))) == []
