"""bench/pipeline.py's own checks: the lines it writes and how it verifies the collector's
output after a backlog (each counter of each word, final files only, without holding the
lines)."""
from __future__ import annotations

import pytest

from bench import pipeline


def test_input_lines_are_line_bytes_whatever_the_word_and_the_width():
    for n, word in ((3, b"counter"), (3, b"backlog"), (12_345_678, b"backlog")):
        block = b"".join(pipeline.lines_of(n, word, start=max(0, n - 3)))
        lines = block.splitlines(keepends=True)
        assert len(lines) == min(n, 3)
        assert {len(x) for x in lines} == {pipeline.LINE}
        assert lines[-1].startswith(word + b" ") and int(lines[-1].split()[1]) == n - 1


def test_verify_counts_each_word_and_counter_over_the_final_files_only(tmp_path):
    first = b"".join(pipeline.lines_of(3)).splitlines(keepends=True)
    more = b"".join(pipeline.lines_of(3, b"backlog")).splitlines(keepends=True)
    (tmp_path / "sub").mkdir()
    (tmp_path / "data-1").write_bytes(first[0] + first[1] + first[1] + more[2])
    (tmp_path / "sub" / "data-2").write_bytes(first[2] + b"garbage\n" + b"backlog 7 x\n")
    (tmp_path / ".data-3.tmp").write_bytes(more[0] + more[1])    # hidden: not final yet
    v = pipeline.verify(tmp_path, 3, (b"counter", b"backlog"))
    # backlog 0 and 1 lost; counter 1 twice; "garbage" and backlog 7 (out of range) malformed
    assert v == {"lines": 7, "lost": 2, "dup": 1, "malformed": 2}
    assert pipeline.report_loss("t", v, exact=False)
    ok = pipeline.verify(tmp_path, 3, (b"counter",))
    assert ok["lost"] == 0 and ok["dup"] == 1


@pytest.mark.parametrize("exact", [True, False])
def test_a_duplicate_fails_only_an_exactly_once_run(exact):
    v = {"lines": 4, "lost": 0, "dup": 1, "malformed": 0}
    assert pipeline.report_loss("t", v, exact=exact) is exact
