"""Parallel paragraphs from the LibreOffice help pages.

Debian's ``libreoffice-help-en-us`` and ``libreoffice-help-de`` ship the same
help pages in both languages; every paragraph carries the same ``id``
attribute (``<p id="par_id3150534" ...>``) in both files, so pairing the
paragraphs by (relative file path, id) gives human-translated sentence pairs.
"""

import os
import re
from html.parser import HTMLParser
from typing import Dict, Iterator, List, Tuple

# Elements whose text content is one translation unit when they carry an id.
# Where the two packages put their help trees, relative to the folder they were extracted into.
HELP_ROOT_EN = "usr/share/libreoffice/help/en-US"
HELP_ROOT_DE = "usr/share/libreoffice/help/de"
_UNIT_TAGS = {"p", "h1", "h2", "h3", "h4", "h5", "h6", "td", "li"}
_SPACES = re.compile(r"\s+")


class _ParagraphCollector(HTMLParser):
    """Collects the text of every id-bearing unit element, keyed by id."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.units: Dict[str, str] = {}
        self._stack: List[Tuple[str, str, List[str]]] = []  # (tag, id, chunks)
        self._skip_depth = 0  # inside <script>/<style>

    def handle_starttag(self, tag, attrs):
        if tag in ("script", "style"):
            self._skip_depth += 1
            return
        if tag in _UNIT_TAGS:
            unit_id = dict(attrs).get("id")
            if unit_id:
                self._stack.append((tag, unit_id, []))

    def handle_endtag(self, tag):
        if tag in ("script", "style"):
            self._skip_depth = max(0, self._skip_depth - 1)
            return
        if self._stack and self._stack[-1][0] == tag:
            _, unit_id, chunks = self._stack.pop()
            text = _SPACES.sub(" ", "".join(chunks)).strip()
            if text and unit_id not in self.units:
                self.units[unit_id] = text
            if self._stack:  # nested unit: its text also belongs to the parent
                self._stack[-1][2].append(" " + text + " ")

    def handle_data(self, data):
        if self._stack and not self._skip_depth:
            self._stack[-1][2].append(data)


def paragraphs_of(html_path: str) -> Dict[str, str]:
    """Returns ``{unit_id: text}`` for one help page."""
    with open(html_path, encoding="utf-8", errors="replace") as handle:
        collector = _ParagraphCollector()
        collector.feed(handle.read())
        collector.close()
    return collector.units


def html_files(root: str) -> List[str]:
    """Relative paths of every ``.html`` file below ``root``, sorted."""
    found = []
    for directory, _, names in os.walk(root):
        for name in names:
            if name.endswith(".html"):
                found.append(os.path.relpath(os.path.join(directory, name), root))
    return sorted(found)


def aligned_pairs(
    en_root: str, de_root: str
) -> Iterator[Tuple[str, str, str]]:
    """Yields ``(relative_file, german, english)`` for paragraphs present in both trees.

    Files that exist in only one language and ids missing on either side are
    skipped. Order is deterministic: sorted files, then the English page order.
    """
    for relative in html_files(en_root):
        de_path = os.path.join(de_root, relative)
        if not os.path.isfile(de_path):
            continue
        english = paragraphs_of(os.path.join(en_root, relative))
        german = paragraphs_of(de_path)
        for unit_id, en_text in english.items():
            de_text = german.get(unit_id)
            if de_text:
                yield relative, de_text, en_text
