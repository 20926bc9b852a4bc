"""Progress bars in a log: whole lines now and then, not thousands of carriage-return redraws on one line."""

from __future__ import annotations

import io

import pytest

from multidistill.utils import progress


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def stderr(monkeypatch):
    monkeypatch.delenv("TQDM_MININTERVAL", raising=False)
    monkeypatch.delenv("TQDM_DISABLE", raising=False)

    def use(stream):
        monkeypatch.setattr("sys.stderr", stream)
        return stream

    return use


def test_a_bar_in_a_log_writes_whole_lines_at_most_every_interval(stderr, monkeypatch):
    log = stderr(io.StringIO())
    clock = iter(range(0, 10_000, 1))  # one second per update
    monkeypatch.setattr("tqdm.std.time", lambda: float(next(clock)))
    bar = progress.progress_bar(total=100, desc="train", dynamic_ncols=True)
    for _ in range(100):
        bar.update(1)
    bar.close()
    text = log.getvalue()
    assert "\r" not in text and text.endswith("\n")
    lines = text.splitlines()
    # the start, one line per 30 s of the 100 updates, and the end: a handful, not a hundred
    assert lines[0].startswith("train:   0%") and lines[-1].startswith("train: 100%")
    assert 3 <= len(lines) <= 100 // progress.LOG_INTERVAL_S + 3
    assert all(len(line) < 100 for line in lines)


def test_a_log_line_keeps_the_whole_postfix(stderr):
    """Cut at a fixed width, the loss terms of a feature objective fell off the end of the line."""
    log = stderr(io.StringIO())
    bar = progress.progress_bar(total=2, desc="train")
    terms = {f"term_{i}": f"{i}.0000" for i in range(12)}
    bar.set_postfix(**terms)
    bar.update(2)
    bar.close()
    assert all(f"term_{i}=" in log.getvalue().splitlines()[-1] for i in range(12))


def test_a_bar_that_clears_itself_writes_nothing_to_a_log(stderr):
    log = stderr(io.StringIO())
    for _ in progress.progress_bar(range(50), desc="eval sst2", leave=False):
        pass
    assert log.getvalue() == ""


def test_a_notebook_keeps_its_widgets(stderr, monkeypatch):
    """A notebook's stderr is no terminal: its bars stay tqdm's (tqdm.auto's pick), at tqdm's own interval."""
    stderr(io.StringIO())
    monkeypatch.setattr(progress.autonotebook, "tqdm", object)  # what tqdm.autonotebook is in a notebook: another class
    bar = progress.progress_bar(total=2, leave=False)
    assert not bar.disable and bar.mininterval < progress.LOG_INTERVAL_S


def test_in_a_terminal_the_bar_redraws_its_line(stderr):
    terminal = stderr(_Terminal())
    bar = progress.progress_bar(total=3, desc="train", mininterval=0)
    for _ in range(3):
        bar.update(1)
    bar.close()
    assert "\r" in terminal.getvalue()


def test_the_tqdm_environment_still_decides(stderr, monkeypatch):
    from multidistill.utils.quiet import bars_disabled

    log = stderr(io.StringIO())
    # read at each bar (tqdm itself reads it once, at import): set from Python after the import, it still counts
    monkeypatch.setenv("TQDM_MININTERVAL", "0.5")
    bar = progress.progress_bar(total=2)
    assert (bar.mininterval, bar.maxinterval) == (0.5, 10.0)
    monkeypatch.setenv("TQDM_MININTERVAL", "often")  # not a number: ignored, as tqdm ignores it
    assert progress.progress_bar(total=2).mininterval == progress.LOG_INTERVAL_S
    monkeypatch.delenv("TQDM_MININTERVAL")
    bar = progress.progress_bar(total=2)
    # and the monitor thread (on outside the CLI) does not refresh it more often than the interval
    assert bar.mininterval == bar.maxinterval == progress.LOG_INTERVAL_S
    monkeypatch.setenv("TQDM_DISABLE", "1")
    log.seek(0)
    log.truncate()

    for _ in progress.progress_bar(range(5), disable=bars_disabled(True)):
        pass
    assert log.getvalue() == ""
