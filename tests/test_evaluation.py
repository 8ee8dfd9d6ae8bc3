"""Scores of fairseq-generate output: every report carries sacreBLEU's length ratio beside BLEU and chrF."""

from adamra_fairseq.evaluation import document_scores, _scores


def test_scores_give_the_length_ratio_of_hypotheses_to_references():
    hypotheses = ["the cat sat", "a dog"]
    references = ["the cat sat down", "a big dog"]
    scores = _scores(hypotheses, references, lowercase=False)
    words = sum(len(line.split()) for line in hypotheses), sum(len(line.split()) for line in references)
    assert (scores["hyp_len"], scores["ref_len"]) == words == (5, 7)
    assert scores["length_ratio"] == round(5 / 7, 3)
    assert _scores(references, references, lowercase=False)["length_ratio"] == 1.0


def test_length_buckets_carry_their_own_length_ratio():
    hypotheses = ["one two", "one two three four five six"]
    references = ["one two three four", "one two three four five six"]
    buckets = document_scores(hypotheses, references, "¶", [3, 300], lowercase=False)["length_buckets"]
    assert buckets["1-128"]["length_ratio"] == 0.5 and buckets["257-512"]["length_ratio"] == 1.0
