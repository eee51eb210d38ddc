"""xumx.progress: a bar only on a terminal; plain lines (no carriage returns) elsewhere."""
import io
import sys

from xumx.progress import Lines, on_terminal, progress_bar


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_a_bar_on_a_terminal(monkeypatch):
    from tqdm import tqdm
    monkeypatch.setattr(sys, "stderr", Terminal())
    assert on_terminal()
    with progress_bar(3, "tracks", unit="track") as bar:
        assert isinstance(bar, tqdm)
        bar.set_postfix_str("Alpha: separating")
        bar.update()
    assert "\r" in sys.stderr.getvalue() and "Alpha: separating" in sys.stderr.getvalue()


def test_plain_lines_elsewhere(monkeypatch):
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    assert not on_terminal()
    with progress_bar(2, "tracks", unit="track") as bar:
        assert isinstance(bar, Lines)
        bar.set_postfix_str("Alpha: separating")
        bar.update(1)                       # no line per update
        bar.set_postfix_str("Beta: scoring")
        bar.update(1)
        bar.set_postfix_str("after the last")
    assert sys.stderr.getvalue().splitlines() == [
        "tracks: 2 track(s)", "tracks 1/2: Alpha: separating", "tracks 2/2: Beta: scoring",
        "tracks 2/2: after the last"]
    with progress_bar(None, "song.mp3", unit="chunk") as bar:   # unknown total
        bar.update(5)
        bar.set_postfix_str("x")
    assert sys.stderr.getvalue().splitlines()[-2:] == ["song.mp3", "song.mp3 6: x"]


def test_quiet_says_nothing_anywhere(monkeypatch):
    for stream in (Terminal(), io.StringIO()):
        monkeypatch.setattr(sys, "stderr", stream)
        with progress_bar(2, "tracks", quiet=True, unit="track") as bar:
            bar.set_postfix_str("Alpha")
            bar.update()
        assert stream.getvalue() == ""


def test_a_closed_or_odd_stream_is_not_a_terminal():
    closed = io.StringIO()
    closed.close()
    assert not on_terminal(closed) and not on_terminal(object())


def test_off_a_terminal_a_bar_of_numbers_says_nothing(monkeypatch, capsys):
    """Training's running loss (``set_postfix``) is a bar's decoration: no line per step."""
    from xumx import progress
    monkeypatch.setattr(progress, "on_terminal", lambda stream=None: False)
    with progress_bar(3, "epoch 1", unit="step", lines=False) as bar:
        for _ in range(3):
            bar.update(1)
            bar.set_postfix(loss="0.1")
    assert capsys.readouterr().err == ""
