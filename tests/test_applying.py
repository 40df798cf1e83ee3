"""apply's bookkeeping (``applying``): the outputs left alone, the order progress is reported in, the result, and the
options refused before anything is read. The stylising itself is tested through real sessions in test_session.py."""

import pytest

from styleprefs import applying
from styleprefs.errors import BadInput
from styleprefs.pipeline import Item


def test_existing_outputs_are_left_alone_and_every_input_is_reported_once_in_order(tmp_path):
    jobs = [(tmp_path / f"in{k}.png", tmp_path / "out" / f"in{k}.png") for k in range(4)]
    jobs[1][1].parent.mkdir()
    jobs[1][1].write_bytes(b"made before")
    asked = []

    def stylise(todo):
        asked.extend(todo)
        yield Item(todo[0][0], todo[0][1], warnings=["w"])
        yield Item(todo[1][0], todo[1][1], error="not a readable image")
        yield Item(todo[2][0], todo[2][1])

    progress = []
    result = applying.run(jobs, True, stylise, lambda done, total, source: progress.append((done, total, source.name)))
    assert asked == [jobs[0], jobs[2], jobs[3]]  # the existing output is not stylised again
    assert progress == [(1, 4, "in1.png"), (2, 4, "in0.png"), (3, 4, "in2.png"), (4, 4, "in3.png")]
    assert result.existing == [jobs[1][1]] and result.outputs == [jobs[0][1], jobs[3][1]]
    assert result.skipped == [(jobs[2][0], "not a readable image")] and result.warnings == ["w"]
    assert jobs[1][1].read_bytes() == b"made before"

    again = []
    applying.run(jobs, False, lambda todo: again.extend(todo) or iter(()))
    assert again == jobs  # without skip_existing every input is stylised


@pytest.mark.parametrize("options, message", [
    (("gif", None, 8, 1.0), "the format must be png or jpg"),
    (("png", 8, 8, 1.0), "the long side must be between"),
    (("png", applying.MAX_APPLY_SIDE + 1, 8, 1.0), "the long side must be between"),
    (("png", None, 0, 1.0), "the batch must be between 1 and 256"),
    (("png", None, 8, 0.001), "the stroke scale must be between"),
    (("jpg", None, 8, applying.MAX_STROKE_SCALE * 2), "the stroke scale must be between"),
])
def test_bad_options_are_refused_with_one_line(options, message):
    """The core speaks of values and names the argument; the command line adds the flag."""
    with pytest.raises(BadInput, match=message) as refused:
        applying.check_options(*options)
    assert refused.value.option in ("fmt", "size", "max_batch", "stroke_scale")


def test_good_options_pass():
    applying.check_options("jpg", applying.MAX_APPLY_SIDE, 256, applying.MIN_STROKE_SCALE)
