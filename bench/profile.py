"""``python -m bench.profile FILE [--top N]``: summarise a py-spy ``--format raw`` profile
(collapsed stacks, one ``frame;frame;...;leaf count`` per line, recorded with ``--threads``).

Reports, per thread kind (the event loop's MainThread vs the worker threads), the functions
with the most *self* samples (the leaf: where CPU is burnt) and the most *inclusive* samples
(anywhere on the stack: what the time is spent under). Percentages are of that thread kind's
active samples; py-spy drops idle samples, so these are shares of CPU-ish time.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

import attrs

_THREAD = re.compile(r"^thread \(\d+\): (?P<name>.*?)(?: \d+)?$")
_LINE = re.compile(r"^(?P<name>.*) \((?P<file>[^()]*?)(?::\d+)?\)$")


def frame_key(frame: str) -> str:
    """``function (path/file.py:123)`` → ``function (path/file.py)``: one entry per function."""
    match = _LINE.match(frame)
    return f"{match['name']} ({match['file']})" if match else frame


def package_of(frame: str) -> str:
    """``name (psycopg/_cursor_base.py:12)`` → ``psycopg``; stdlib modules by file stem."""
    match = _LINE.match(frame)
    if not match:
        return "?"
    path = match["file"]
    head = path.split("/")[0]
    return head.removesuffix(".py") if "/" in path or path.endswith(".py") else path


@attrs.define
class ThreadProfile:
    samples: int = 0
    self_: Counter[str] = attrs.field(factory=Counter)
    inclusive: Counter[str] = attrs.field(factory=Counter)
    packages: Counter[str] = attrs.field(factory=Counter)  # self samples by package
    own_code: Counter[str] = attrs.field(factory=Counter)  # inclusive, ordermgr functions only


def summarise(lines: Iterable[str]) -> dict[str, ThreadProfile]:
    threads: dict[str, ThreadProfile] = {}
    for line in lines:
        stack, _, count_text = line.rstrip("\n").rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        kind = "other"
        match = _THREAD.match(frames[0])
        if match:
            kind = "event loop (MainThread)" if match["name"] == "MainThread" else "worker threads"
            frames = frames[1:]
        if not frames:
            continue
        profile = threads.setdefault(kind, ThreadProfile())
        profile.samples += count
        keys = [frame_key(f) for f in frames]
        profile.self_[keys[-1]] += count
        profile.packages[package_of(frames[-1])] += count
        for key in set(keys):
            profile.inclusive[key] += count
            if "(ordermgr/" in key and "__main__" not in key:
                profile.own_code[key] += count
    return threads


def render(threads: dict[str, ThreadProfile], top: int) -> str:
    total = sum(p.samples for p in threads.values())
    out = [f"{total} active samples"]
    for kind, profile in sorted(threads.items(), key=lambda kv: -kv[1].samples):
        out.append(f"\n== {kind}: {profile.samples} samples ({profile.samples / total:.0%} of all)")
        sections = (("self, by package", profile.packages), ("self", profile.self_),
                    ("inclusive, ordermgr functions", profile.own_code), ("inclusive", profile.inclusive))
        for title, counter in sections:
            out.append(f"-- top {top} {title}")
            for key, count in counter.most_common(top):
                out.append(f"{count / profile.samples:7.1%}  {key}")
    return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__)
    parser.add_argument("file", type=Path)
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args(argv)
    with args.file.open(encoding="utf-8", errors="replace") as f:
        print(render(summarise(f), args.top))
    return 0


if __name__ == "__main__":
    sys.exit(main())
