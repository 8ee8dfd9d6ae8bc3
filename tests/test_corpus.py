"""Corpus extraction, alignment, splitting and the preparation CLI on small fixture files."""

import os

import pytest

from adamra_fairseq.data import ding, libreoffice
from adamra_fairseq.data.corpus import CorpusError, check_parallel, split_of, split_pairs
from conftest import REPO_ROOT, run

PAGE_EN = """<html><body>
<h1 id="hd_1">Inserting Tables</h1>
<p id="par_1" class="paragraph">You can <a href="x.html">insert</a> a table &amp; a chart.</p>
<p id="par_2">Choose <span class="menuitem">Table - Insert</span>.</p>
<p id="par_only_en">Only in English.</p>
<p>No id here.</p>
<script>var p = "<p id='bogus'>";</script>
</body></html>"""
PAGE_DE = """<html><body>
<h1 id="hd_1">Tabellen einfügen</h1>
<p id="par_2">Wählen Sie <span class="menuitem">Tabelle - Einfügen</span>.</p>
<p id="par_1" class="paragraph">Sie können eine <a href="x.html">Tabelle</a> &amp; ein Diagramm
   einfügen.</p>
</body></html>"""


def write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(text)


def test_libreoffice_pairs_paragraphs_by_id(tmp_path):
    write(tmp_path / "en/text/a.html", PAGE_EN)
    write(tmp_path / "de/text/a.html", PAGE_DE)
    write(tmp_path / "en/text/only_en.html", PAGE_EN)  # no German file: skipped
    pairs = list(libreoffice.aligned_pairs(str(tmp_path / "en"), str(tmp_path / "de")))
    assert pairs == [
        ("text/a.html", "Tabellen einfügen", "Inserting Tables"),
        ("text/a.html", "Sie können eine Tabelle & ein Diagramm einfügen.", "You can insert a table & a chart."),
        ("text/a.html", "Wählen Sie Tabelle - Einfügen.", "Choose Table - Insert."),
    ]


DING_LINES = [
    "# comment :: line\n",
    "Abholung {f} | zur Abholung bereit | Die Ware ist zur Abholung bereit. :: "
    "collection | ready for collection | The goods are ready for collection.\n",
    "Haus {n} [arch.] | Das Haus ist alt. :: house | The house is old.\n",
    "Baum {m} | Bäume {pl} :: tree | trees\n",
    "kaputt | Das ist kaputt. :: broken | That is broken. | extra part\n",  # part counts differ
    "Satz {m}; Spruch {m} | Er sagte einen Satz.; Er sprach. :: sentence | He said a sentence.; He spoke.\n",
]


def test_ding_keeps_sentence_examples_only():
    pairs = list(ding.example_pairs(DING_LINES))
    assert pairs == [
        ("Abholung", "Die Ware ist zur Abholung bereit.", "The goods are ready for collection."),
        ("Haus", "Das Haus ist alt.", "The house is old."),
        ("Satz", "Er sagte einen Satz.", "He said a sentence."),
    ]


def test_split_is_deterministic_and_keeps_groups_together():
    triples = [(f"group{g}", f"quelle {g} nummer {i}", f"source {g} number {i}") for g in range(200) for i in range(3)]
    splits = split_pairs(triples, valid_percent=10, test_percent=10)
    again = split_pairs(list(reversed(triples)), valid_percent=10, test_percent=10)
    assert {k: sorted(v) for k, v in splits.items()} == {k: sorted(v) for k, v in again.items()}
    for name in ("train", "valid", "test"):
        groups = {source.split()[1] for source, _ in splits[name]}
        for group in groups:
            assert split_of(f"group{group}", 10, 10) == name
    assert len(splits["test"]) > 0 and len(splits["valid"]) > 0
    assert sum(len(v) for v in splits.values()) == len(triples)


def test_test_split_drops_labels_and_train_overlap():
    triples = [("a", "Hallo Welt wie geht", "Hello world how goes")] * 2 + [("b", "Ok", "Ok")]
    splits = split_pairs(triples, valid_percent=0, test_percent=100)
    assert splits["test"] == [("Hallo Welt wie geht", "Hello world how goes")]  # deduplicated, label dropped


def test_check_parallel_errors(tmp_path):
    write(tmp_path / "a.de", "eins\nzwei\n")
    write(tmp_path / "a.en", "one\n")
    write(tmp_path / "e.de", "")
    with pytest.raises(CorpusError, match="has 2 lines but .* has 1"):
        check_parallel(str(tmp_path / "a.de"), str(tmp_path / "a.en"))
    with pytest.raises(CorpusError, match="missing file"):
        check_parallel(str(tmp_path / "nope.de"), str(tmp_path / "a.en"))
    with pytest.raises(CorpusError, match="empty file"):
        check_parallel(str(tmp_path / "e.de"), str(tmp_path / "a.en"))


def test_debian_cli_builds_splits_from_a_fake_package_tree(tmp_path):
    root = tmp_path / "root"
    for index in range(40):
        write(root / f"usr/share/libreoffice/help/en-US/text/p{index}.html",
              f'<p id="a">Open the dialog number {index} now.</p><p id="b">Close window {index} again please.</p>')
        write(root / f"usr/share/libreoffice/help/de/text/p{index}.html",
              f'<p id="a">Öffnen Sie Dialog {index} jetzt.</p><p id="b">Schließen Sie Fenster {index} wieder.</p>')
    write(root / "usr/share/trans/de-en", "".join(
        f"Wort{index} | Das ist Satz {index}. :: word{index} | This is sentence {index}.\n" for index in range(300)))
    out = tmp_path / "raw"
    result = run(["python", "-m", "adamra_fairseq.data", "debian", "--root", str(root), "--out", str(out),
                  "--valid-percent", "20", "--test-percent", "20"])
    assert "sentence pairs: train" in result.stdout
    for name in ("train", "valid", "test-libreoffice", "test-ding"):
        check_parallel(str(out / f"{name}.de"), str(out / f"{name}.en"))
    assert open(out / "test-ding.en").read().count("This is sentence") > 20


@pytest.mark.parametrize("setup,args,message", [
    (None, ["check-parallel", "--langs", "de", "en", "{tmp}/missing"], "missing file: {tmp}/missing.de"),
    ({"m.de": "a\nb\n", "m.en": "a\n"}, ["check-parallel", "--langs", "de", "en", "{tmp}/m"], "has 2 lines but"),
    ({"e.de": "", "e.en": ""}, ["tokenize", "--lang", "de", "{tmp}/e.de", "{tmp}/out.de"], "empty file: {tmp}/e.de"),
    (None, ["debian", "--root", "{tmp}/nothing", "--out", "{tmp}/o"], "missing directory"),
])
def test_data_cli_reports_bad_input_in_one_line(tmp_path, setup, args, message):
    for name, text in (setup or {}).items():
        write(tmp_path / name, text)
    result = run(["python", "-m", "adamra_fairseq.data", *[a.format(tmp=tmp_path) for a in args]], check=False)
    assert result.returncode == 2
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1 and message.format(tmp=tmp_path) in error_lines[0]


def test_prepare_scripts_are_valid_bash():
    for name in ("common.sh", "prepare-debian-de-en.sh", "prepare-iwslt14.sh"):
        run(["bash", "-n", os.path.join(REPO_ROOT, "examples", "translation", name)])


def test_prepare_script_rejects_bad_options_and_keeps_built_data(tmp_path):
    script = os.path.join(REPO_ROOT, "examples", "translation", "prepare-debian-de-en.sh")
    (tmp_path / "work" / "raw").mkdir(parents=True)
    (tmp_path / "work" / "raw" / "keep.txt").write_text("user data")
    result = run(["bash", script, "--out", str(tmp_path / "work"), "--bpe-size", "-3"], check=False)
    assert result.returncode == 2 and "error: --bpe-size '-3'" in result.stderr
    result = run(["bash", script, "--out", str(tmp_path / "work"), "--debs", str(tmp_path / "nodebs")], check=False)
    assert result.returncode == 2 and "no libreoffice-help-en-us_*.deb" in result.stderr
    assert (tmp_path / "work" / "raw" / "keep.txt").read_text() == "user data"
    assert not (tmp_path / "work" / "debs").exists()  # only the .partial folder was written, never a complete-looking one


def test_iwslt_extraction_follows_the_fairseq_recipe(tmp_path):
    from adamra_fairseq.data import iwslt

    orig = tmp_path / "de-en"
    lines = {"de": [], "en": []}
    for index in range(46):
        lines["de"].append(f"Satz nummer {index} .")
        lines["en"].append(f"sentence number {index} .")
    for lang, meta in (("de", "<url>http://x</url>"), ("en", "<url>http://x</url>")):
        body = [meta, "<talkid>1</talkid>", f"<title>Titel {lang}</title>"] + lines[lang]
        write(orig / f"train.tags.de-en.{lang}", "\n".join(body) + "\n")
        for name in iwslt.TEST_FILES:
            write(orig / f"{name}.de-en.{lang}.xml",
                  f'<doc docid="1">\n<seg id="1"> {name} eins {lang} </seg>\n<seg id="2">it\u2019s {lang}</seg>\n</doc>\n')
    sides = iwslt.build_iwslt(str(orig))
    assert sides["train"]["de"][0] == "Titel de" and sides["train"]["en"][0] == "Titel en"
    assert len(sides["valid"]["de"]) == 47 // 23 and sides["valid"]["en"][0] == "sentence number 21 ."
    assert len(sides["train"]["de"]) + len(sides["valid"]["de"]) == 47
    assert len(sides["test"]["en"]) == 2 * len(iwslt.TEST_FILES)
    assert sides["test"]["en"][:2] == ["IWSLT14.TED.dev2010 eins en", "it's en"]
    (orig / "IWSLT14.TED.tst2012.de-en.de.xml").unlink()
    with pytest.raises(CorpusError, match="missing file: .*tst2012"):
        iwslt.build_iwslt(str(orig))
