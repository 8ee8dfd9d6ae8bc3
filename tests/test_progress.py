"""adamra_fairseq/cli/progress.py: the status line adamra-compare shows while fairseq trains or generates."""

import io

from adamra_fairseq.cli.compare import parse_training_log
from adamra_fairseq.cli.progress import GenerationWatcher, Reporter, Status, TrainingWatcher

TRAIN_INNER = ("2026-11-30 20:33:10 | INFO | train_inner | epoch 002:    183 / 267 loss=7.567, nll_loss=6.651, "
               "ppl=100.52, wps=1281.7, ups=0.4, wpb=3241.2, bsz=200.2, num_updates={update}, lr=0.0013\n")
VALID = ("2026-11-30 20:31:14 | INFO | valid | epoch 002 | valid on 'valid' subset | loss 7.774 | nll_loss 6.858 | "
         "ppl 115.97 | wps 3424.2 | wpb 2331.4 | bsz 106.9 | num_updates {update} | best_loss 7.774\n")


def test_training_status_follows_the_log_as_it_grows(tmp_path):
    log = tmp_path / "train.log"
    watcher = TrainingWatcher(str(log), max_updates=1000)
    assert watcher() is None  # no log yet
    log.write_text("INFO | fairseq_cli.train | model transformer\n")
    assert watcher() is None  # no update yet
    with open(log, "a") as handle:
        handle.write(TRAIN_INNER.format(update=100))
        handle.write(TRAIN_INNER.format(update=150)[:40])  # a line still being written
    assert watcher() == "update 100/1000, loss 7.567"
    watcher.started -= 60  # 100 more updates in a minute: the 800 left take 8 minutes
    with open(log, "a") as handle:
        handle.write(TRAIN_INNER.format(update=150)[40:] + VALID.format(update=200))
    status = watcher()
    assert status == "update 200/1000, loss 7.567, valid 7.774, about 8.0 min left"
    assert status.progress == "update 200/1000, loss 7.567, valid 7.774"  # what moved, without the estimate


def test_training_status_with_a_time_budget(tmp_path):
    log = tmp_path / "train.log"
    watcher = TrainingWatcher(str(log), max_minutes=30)
    log.write_text(TRAIN_INNER.format(update=5))
    watcher.started -= 600
    assert watcher() == "update 5, loss 7.567, 20.0 min left"


def test_a_resumed_log_counts_from_where_this_run_starts(tmp_path):
    log = tmp_path / "train.log"
    log.write_text(TRAIN_INNER.format(update=100))  # the run before the resume
    watcher = TrainingWatcher(str(log), max_updates=1000)
    assert watcher() is None
    with open(log, "a") as handle:
        handle.write(TRAIN_INNER.format(update=150))
    assert watcher() == "update 150/1000, loss 7.567"
    watcher.started -= 60  # 100 updates of this run in a minute: the 750 left take 7.5 minutes
    with open(log, "a") as handle:
        handle.write(TRAIN_INNER.format(update=250))
    assert watcher() == "update 250/1000, loss 7.567, about 7.5 min left"


def test_a_stale_output_is_skipped_until_the_new_run_rewrites_it(tmp_path):
    output = tmp_path / "generate-test.txt.tmp"
    output.write_text("H-1\t-0.1\told\n" * 5)  # left by an interrupted generation
    watcher = GenerationWatcher(str(output), total=10)
    assert watcher() is None
    output.write_text("H-1\t-0.1\tnew\n")  # the new run truncates it
    assert watcher().startswith("1/10 sentences")


def test_generation_status_counts_hypotheses(tmp_path):
    output = tmp_path / "generate-test.txt.tmp"
    watcher = GenerationWatcher(str(output), total=40)
    assert watcher() is None
    output.write_text("S-3\tein Satz\nT-3\ta sentence\nH-3\t-0.5\ta sentence\nD-3\t-0.5\ta sentence\nH-7\t-0.2\tx\n")
    watcher.started -= 10  # 2 sentences in 10 s: 38 more take 190 s
    assert watcher() == "2/40 sentences, about 3.2 min left"


class FakeTerminal(io.StringIO):
    def __init__(self, tty):
        super().__init__()
        self.tty = tty

    def isatty(self):
        return self.tty


def test_reporter_rewrites_one_line_on_a_terminal_and_rate_limits_plain_output():
    terminal = FakeTerminal(True)
    reporter = Reporter("train", terminal)
    for text in ("update 1", "update 1", None, "update 2"):
        reporter.show(text)
    reporter.close()
    assert terminal.getvalue() == "\r      train: update 1\033[K\r      train: update 2\033[K\n"

    plain = FakeTerminal(False)
    reporter = Reporter("train", plain, interval=60)
    reporter.show("update 1")
    reporter.show("update 2")  # within the minute: not shown
    reporter.last_shown -= 60
    reporter.show("update 3")
    reporter.close()
    assert plain.getvalue() == "      train: update 1\n      train: update 3\n"


def test_plain_output_repeats_a_run_that_did_not_move_only_every_few_minutes():
    """Only the time estimate changed: no new line after a minute, one after five (the run is still alive)."""
    plain = FakeTerminal(False)
    reporter = Reporter("train", plain, interval=60, quiet_interval=300)
    reporter.show(Status("update 50/600, loss 7.1", "about 9.0 min left"))
    reporter.last_shown -= 61
    reporter.show(Status("update 50/600, loss 7.1", "about 8.0 min left"))  # nothing moved: not shown
    reporter.show(Status("update 51/600, loss 7.1", "about 8.0 min left"))  # moved, a minute passed: shown
    reporter.last_shown -= 299
    reporter.show(Status("update 51/600, loss 7.1", "about 4.0 min left"))  # not moved, under five minutes
    reporter.last_shown -= 1
    reporter.show(Status("update 51/600, loss 7.1", "about 3.0 min left"))  # not moved, five minutes: shown
    assert plain.getvalue().splitlines() == ["      train: update 50/600, loss 7.1, about 9.0 min left",
                                             "      train: update 51/600, loss 7.1, about 8.0 min left",
                                             "      train: update 51/600, loss 7.1, about 3.0 min left"]


def test_training_log_gives_validation_loss_by_update_and_by_minute(tmp_path):
    """adamra-compare's log parser: each validation at its update and at the minutes since the log began."""
    log = tmp_path / "train.log"
    log.write_text("2026-11-30 20:10:14 | INFO | fairseq_cli.train | model transformer\n"
                   + TRAIN_INNER.format(update=100)
                   + VALID.format(update=200)  # 21 minutes after the first line
                   + VALID.replace("20:31:14", "20:40:44").replace("7.774", "7.5").format(update=300))
    parsed = parse_training_log(str(log))
    assert parsed["valid_loss"] == [(200, 7.774), (300, 7.5)]
    assert parsed["valid_loss_minutes"] == [(21.0, 7.774), (30.5, 7.5)]
    assert parsed["updates"] == 300 and parsed["train_wps"] == 1281.7
