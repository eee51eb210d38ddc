"""Times as the command line reads and prints them."""
import argparse

TIME_FORMS = "seconds (90, 2.5) or [h:]m:ss[.fff] (1:30, 1:02.5)"


def seconds(text: str) -> float:
    """A time given on the command line, in seconds: ``90``, ``2.5``, ``1:30``, ``1:02.5`` or
    ``1:00:05`` (minutes and seconds below 60 after the first field). Negative plain numbers
    pass (``--duration -1``). Raises ``argparse.ArgumentTypeError`` naming the forms."""
    text = str(text).strip()
    parts = text.split(":")
    try:
        if len(parts) == 1:
            return float(text)
        if len(parts) <= 3 and all(p and p.lstrip("0123456789.") == "" for p in parts):
            values = [float(p) for p in parts]
            if all(v < 60 for v in values[1:]) and all(v == int(v) for v in values[:-1]):
                total = 0.0
                for v in values:
                    total = total * 60 + v
                return total
    except ValueError:
        pass
    raise argparse.ArgumentTypeError(f"expected {TIME_FORMS}, not {text!r}")


def clock(value: float) -> str:
    """``value`` seconds as ``m:ss.fff`` (how summaries and messages print times)."""
    m, s = divmod(max(float(value), 0.0), 60.0)
    if round(s, 3) >= 60:
        m, s = m + 1, 0.0
    return f"{int(m)}:{s:06.3f}"
