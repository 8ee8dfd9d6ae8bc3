"""The document corpus: segment building, page split, separator round trip, document scoring."""

import json
import os

import pytest

from adamra_fairseq.data import documents
from adamra_fairseq.data.corpus import CorpusError, split_of
from adamra_fairseq.evaluation import document_scores, paired_paragraphs
from conftest import REPO_ROOT, run
from test_corpus import write


def test_grouping_keeps_pages_apart_respects_the_cap_and_page_order():
    pages = ["a", "a", "a", "b", "b", "c", "c", "c"]
    lengths = [3, 4, 2, 5, 5, 20, 1, 1]
    segments, dropped = documents.group_paragraphs(pages, lengths, max_tokens=10)
    # a: 3+1+4 = 8, then +1+2 = 11 > 10; b: 5+1+5 = 11 > 10; c: 20 is dropped, 1+1+1 = 3
    assert segments == [[0, 1], [2], [3], [4], [6, 7]]
    assert dropped == 1
    for segment in segments:
        assert len({pages[i] for i in segment}) == 1
        assert segment == list(range(segment[0], segment[-1] + 1))  # consecutive, in page order
        assert sum(lengths[i] for i in segment) + len(segment) - 1 <= 10


def test_a_dropped_paragraph_ends_its_segment():
    segments, dropped = documents.group_paragraphs(["p"] * 3, [2, 50, 2], max_tokens=10)
    assert segments == [[0], [2]] and dropped == 1  # paragraphs 0 and 2 were not neighbours


def test_grouping_rejects_a_non_positive_cap():
    with pytest.raises(CorpusError, match="must be positive"):
        documents.group_paragraphs(["a"], [1], max_tokens=0)


def _fake_help_tree(root, pages=30, paragraphs=6):
    for page in range(pages):
        en = "".join(f'<p id="p{i}">Paragraph {i} of page {page} says ¶ this.</p>' for i in range(paragraphs))
        de = "".join(f'<p id="p{i}">Absatz {i} der Seite {page} sagt das.</p>' for i in range(paragraphs))
        write(root / f"usr/share/libreoffice/help/en-US/text/page{page}.html", en)
        write(root / f"usr/share/libreoffice/help/de/text/page{page}.html", de)


def test_document_cli_splits_by_page_and_joins_aligned_paragraphs(tmp_path):
    root, raw, segments = tmp_path / "root", tmp_path / "raw", tmp_path / "seg"
    _fake_help_tree(root)
    run(["python", "-m", "adamra_fairseq.data", "debian-docs", "--root", str(root), "--out", str(raw),
         "--valid-percent", "20", "--test-percent", "20"])
    seen = {}
    for split, name in documents.SPLIT_FILES.items():
        pages = (raw / f"{name}.page").read_text().splitlines()
        for page in pages:
            assert split_of(page, 20, 20) == split  # the sentence corpus's page split
            seen.setdefault(page, set()).add(split)
        assert len(pages) == len((raw / f"{name}.de").read_text().splitlines())
    assert all(len(splits) == 1 for splits in seen.values()) and len(seen) == 30
    assert "¶" not in (raw / "train.en").read_text()  # the separator only ever marks boundaries

    segments.mkdir()
    run(["python", "-m", "adamra_fairseq.data", "join-docs", "--langs", "de", "en", "--max-tokens", "20",
         "--measure", str(raw / "train"), "--pages", str(raw / "train.page"), "--stats", str(segments / "s.json"),
         str(raw / "train"), str(segments / "train")])
    joined = {lang: (segments / f"train.{lang}").read_text().splitlines() for lang in ("de", "en")}
    paragraphs = {lang: (raw / f"train.{lang}").read_text().splitlines() for lang in ("de", "en")}
    # every paragraph is 7 words on both sides (the ¶ became a space): two per segment (7 + 1 + 7 = 15 <= 20)
    assert len(joined["en"]) == len(joined["de"]) == len(paragraphs["en"]) // 2
    for lang in ("de", "en"):
        split_back = [p for segment in joined[lang] for p in documents.split_paragraphs(segment)]
        assert split_back == paragraphs[lang]  # round trip, order and alignment kept
    for de, en in zip(joined["de"], joined["en"]):
        assert de.split()[1] == en.split()[1] and de.count("¶") == en.count("¶") == 1
    lengths = [int(x) for x in (segments / "train.tokens").read_text().split()]
    assert lengths == [15] * len(joined["en"])
    stats = json.loads((segments / "s.json").read_text())
    assert stats["segments"] == len(lengths) and stats["length_histogram"]["1-64"] == len(lengths)


def test_join_docs_reports_a_page_list_of_the_wrong_length(tmp_path):
    write(tmp_path / "p.de", "a\nb\n")
    write(tmp_path / "p.en", "a\nb\n")
    write(tmp_path / "p.page", "x\n")
    result = run(["python", "-m", "adamra_fairseq.data", "join-docs", "--langs", "de", "en", "--max-tokens", "5",
                  "--measure", str(tmp_path / "p"), "--pages", str(tmp_path / "p.page"),
                  str(tmp_path / "p"), str(tmp_path / "o")], check=False)
    assert result.returncode == 2
    assert "has 2 lines but" in result.stderr and "one line per paragraph" in result.stderr
    assert not os.path.exists(tmp_path / "o.de")


def test_paragraph_pairing_scores_every_reference_paragraph_once():
    assert paired_paragraphs("a ¶ b", "A ¶ B", "¶") == [("a", "A"), ("b", "B")]
    assert paired_paragraphs("a ¶ b ¶ c", "A ¶ B", "¶") == [("a", "A"), ("b c", "B")]
    assert paired_paragraphs("a", "A ¶ B ¶ C", "¶") == [("a", "A"), ("", "B"), ("", "C")]


def test_document_scores_count_mismatches_and_bucket_by_length():
    references = ["the cat sat on the mat ¶ it was happy", "a dog ran in the park today"]
    perfect = document_scores(references, references, "¶", [300, 40], lowercase=False)
    assert perfect["paragraphs"]["bleu"] == 100.0 and perfect["paragraphs"]["count"] == 3
    assert perfect["paragraphs"]["segments_with_other_paragraph_count"] == 0
    assert set(perfect["length_buckets"]) == {"1-128", "257-512"}
    merged = document_scores(["the cat sat on the mat it was happy", references[1]], references, "¶", [],
                             lowercase=False)
    assert merged["paragraphs"]["segments_with_other_paragraph_count"] == 1
    assert merged["paragraphs"]["bleu"] < 100.0 and "length_buckets" not in merged


def test_prepare_script_validates_the_document_options(tmp_path):
    script = os.path.join(REPO_ROOT, "examples", "translation", "prepare-debian-de-en.sh")
    for args, message in ((["--doc-max-tokens", "0"], "--doc-max-tokens '0' is not a positive integer"),
                          (["--doc-max-tokens", "256", "--spm"], "Moses + BPE pipeline only")):
        result = run(["bash", script, "--out", str(tmp_path / "w"), *args], check=False)
        assert result.returncode == 2 and message in result.stderr


@pytest.mark.slow  # about 3.5 minutes on one core: two short trainings and generations
def test_document_corpus_trains_generates_and_scores_split_paragraphs(tmp_path):
    """The document steps of the recipe on a toy corpus, then scripts/compare.py (AdaMRA only, a few updates)."""
    import sys

    from conftest import synthetic_pairs

    raw, work = tmp_path / "raw", tmp_path / "work"
    raw.mkdir()
    work.mkdir()
    for name, count, seed in (("train", 300, 1), ("valid", 24, 2), ("test-toy", 30, 3)):
        pairs = synthetic_pairs(count, seed)
        write(raw / f"{name}.de", "".join(de + "\n" for de, _ in pairs))
        write(raw / f"{name}.en", "".join(en + "\n" for _, en in pairs))
        write(raw / f"{name}.page", "".join(f"page{i // 6}\n" for i in range(count)))  # 6 paragraphs a page
    splits = "train valid test-toy"
    script = f"""source {REPO_ROOT}/examples/translation/common.sh
        step {work}/tok tokenize_splits {raw} de en 0 {splits}
        step {work}/bpe learn_apply_bpe {work}/tok de en 60 {splits}
        mkdir -p {work}/seg/raw
        for s in {splits}; do
            data_cli join-docs --langs de en --max-tokens 40 --measure {work}/bpe/$s --pages {raw}/$s.page \\
                {work}/bpe/$s {work}/seg/$s {raw}/$s {work}/seg/raw/$s
        done
        PREPROCESSING_EXTRA='"paragraph_separator": "¶", "max_tokens": 40' \\
            step {work}/data-bin binarize {work}/seg {work}/seg/raw de en moses subword_nmt 0 test-toy"""
    run(["bash", "-c", script])
    data_bin = work / "data-bin"
    config = json.loads((data_bin / "preprocessing.json").read_text())
    assert config["paragraph_separator"] == "¶" and config["max_tokens"] == 40
    segments = (data_bin / "test.ref.en").read_text().splitlines()
    assert len((data_bin / "test.tokens").read_text().split()) == len(segments)
    assert "¶" in (data_bin / "dict.en.txt").read_text()  # the separator is one vocabulary item

    out = tmp_path / "compare"
    result = run([sys.executable, "scripts/compare.py", "--data-bin", str(data_bin), "--models", "adamra",
                  "--seeds", "1", "--max-update", "3", "--warmup-updates", "2", "--threads", "1",
                  "--adamra-rates", "1,2", "--heads", "2", "--out", str(out)])
    scores = json.loads((out / "results.json").read_text())["runs"]["adamra"]["1"]["tests"]["test-toy"]
    assert scores["sentences"] == len(segments)
    assert scores["paragraphs"]["count"] == 30  # every reference paragraph scored once
    assert 0 <= scores["paragraphs"]["segments_with_other_paragraph_count"] <= len(segments)
    assert sum(bucket["segments"] for bucket in scores["length_buckets"].values()) == len(segments)
    assert "paragraphs split back out" in result.stdout
    train_log = (out / "adamra" / "seed1" / "train.log").read_text()
    assert "max_source_positions=56" in train_log and "max_tokens=4096" in train_log

    # a second run continues the first one's model (as sentence-level models continue on documents)
    continued = tmp_path / "continued"
    run([sys.executable, "scripts/compare.py", "--data-bin", str(data_bin), "--models", "adamra", "--seeds", "1",
         "--max-update", "2", "--warmup-updates", "2", "--threads", "1", "--adamra-rates", "1,2", "--heads", "2",
         "--init-from", f"adamra={out}", "--out", str(continued)])
    continued_log = (continued / "adamra" / "seed1" / "train.log").read_text()
    assert f"Loaded checkpoint {out}/adamra/seed1/checkpoint_last.pt" in continued_log
    from adamra_fairseq.cli.compare import previous_training_hours

    parent_hours = previous_training_hours(str(out / "adamra" / "seed1" / "checkpoint_last.pt"))
    assert 0 < parent_hours < previous_training_hours(str(continued / "adamra" / "seed1" / "checkpoint_last.pt"))
