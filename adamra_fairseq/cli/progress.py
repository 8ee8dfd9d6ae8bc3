"""Progress of a long fairseq-train or fairseq-generate run, read from the files it writes.

adamra-compare runs fairseq in a child process with its output in a
file; a watcher here is polled every few seconds and returns one status
line (or None while there is nothing to say). :class:`Reporter` shows it:
rewritten in place on a terminal; otherwise (logs, CI) as a plain line at
most once a minute when the run moved, and every five minutes when it did not.
"""

import os
import re
import sys
import time
from typing import Callable, Optional

Watcher = Callable[[], Optional[str]]


def minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.0f} s"


class Status(str):
    """A status line; ``progress`` is its part that changes only when the run moves (no time estimate)."""

    progress: str

    def __new__(cls, progress: str, remaining: str = ""):
        status = super().__new__(cls, f"{progress}, {remaining}" if remaining else progress)
        status.progress = progress
        return status


class NewLines:
    """The lines written to a file after this reader was made: what it held then is skipped (a resumed
    training appends to its earlier log); when the file is rewritten (it shrank), reading starts over."""

    def __init__(self, path: str):
        self.path, self.partial = path, ""
        self.offset = os.path.getsize(path) if os.path.isfile(path) else 0

    def __call__(self):
        if not os.path.isfile(self.path):
            return []
        if os.path.getsize(self.path) < self.offset:
            self.offset, self.partial = 0, ""
        with open(self.path, errors="replace") as handle:
            handle.seek(self.offset)
            text = handle.read()
            self.offset = handle.tell()
        lines = (self.partial + text).split("\n")
        self.partial = lines.pop()
        return lines


class TrainingWatcher:
    """``update N/total, loss X, ETA`` from fairseq-train's log (``--log-format simple``).

    ``max_updates`` or ``max_minutes`` is the budget; the ETA extrapolates the
    update rate of this process (a resumed run starts counting where it resumed).
    """

    def __init__(self, log_path: str, max_updates: Optional[int] = None, max_minutes: Optional[float] = None):
        self.lines = NewLines(log_path)
        self.max_updates, self.max_minutes = max_updates, max_minutes
        self.started = time.time()
        self.first_update: Optional[int] = None
        self.update, self.loss, self.valid = 0, None, None

    def __call__(self) -> Optional[str]:
        for line in self.lines():
            step = re.search(r"num_updates[= ](\d+)", line)
            if step is None:
                continue
            if self.first_update is None:
                self.first_update = int(step.group(1))
            self.update = max(self.update, int(step.group(1)))
            loss = re.search(r"\bloss[= ]([0-9.]+)", line)
            if loss and "valid on" in line:
                self.valid = loss.group(1)
            elif loss and "train_inner" in line:
                self.loss = loss.group(1)
        if self.first_update is None:
            return None
        elapsed = time.time() - self.started
        parts = [f"update {self.update}" + (f"/{self.max_updates}" if self.max_updates else "")]
        if self.loss:
            parts.append(f"loss {self.loss}")
        if self.valid:
            parts.append(f"valid {self.valid}")
        remaining = ""
        if self.max_minutes:
            remaining = f"{minutes(max(self.max_minutes * 60 - elapsed, 0))} left"
        elif self.max_updates and self.update > self.first_update:
            rate = (self.update - self.first_update) / elapsed
            remaining = f"about {minutes((self.max_updates - self.update) / rate)} left"
        return Status(", ".join(parts), remaining)


class GenerationWatcher:
    """``N/total sentences, ETA`` from the hypotheses (``H-`` lines) fairseq-generate has written so far."""

    def __init__(self, output_path: str, total: Optional[int]):
        self.lines = NewLines(output_path)
        self.total, self.done = total, 0
        self.started = time.time()

    def __call__(self) -> Optional[str]:
        self.done += sum(line.startswith("H-") for line in self.lines())
        if not self.done:
            return None
        done = f"{self.done}" + (f"/{self.total}" if self.total else "") + " sentences"
        remaining = ""
        if self.total and self.done < self.total:
            seconds = (time.time() - self.started) / self.done * (self.total - self.done)
            remaining = f"about {minutes(seconds)} left"
        return Status(done, remaining)


class Reporter:
    """Shows a watcher's status: in place on a terminal; else a plain line when the run moved and ``interval``
    seconds passed, or when it did not move (only its time estimate changed) and ``quiet_interval`` passed."""

    def __init__(self, label: str, stream=None, interval: float = 60.0, quiet_interval: float = 300.0):
        self.label, self.stream = label, stream or sys.stdout
        self.in_place = self.stream.isatty()
        self.interval, self.quiet_interval = interval, quiet_interval
        self.last_shown, self.last_text, self.last_progress = 0.0, None, None

    def show(self, text: Optional[str]) -> None:
        if not text or text == self.last_text:
            return
        now = time.time()
        progress = getattr(text, "progress", text)
        if self.in_place:
            self.stream.write(f"\r      {self.label}: {text}\033[K")
        elif now - self.last_shown >= (self.interval if progress != self.last_progress else self.quiet_interval):
            self.stream.write(f"      {self.label}: {text}\n")
            self.last_shown = now
        else:
            return
        self.last_text, self.last_progress = text, progress
        self.stream.flush()

    def close(self) -> None:
        if self.in_place and self.last_text:
            self.stream.write("\n")
            self.stream.flush()
