"""Event slices: every event of a sample goes to exactly one worker, as Marlin would read it."""
import pytest

from ILCDIRAC.CalibrationSystem.Utilities.slicing import worker_slice


@pytest.mark.parametrize("nFiles, perFile, nWorkers", [(4, 250, 4), (3, 1000, 7), (10, 7, 69), (1, 5, 5)])
def test_slices_partition_the_sample(nFiles, perFile, nWorkers):
    files = [f"f{i}.slcio" for i in range(nFiles)]
    seen = []
    for worker in range(nWorkers):
        s = worker_slice(files, perFile, nWorkers, worker)
        first = files.index(s.files[0])
        start = first * perFile + s.skip
        assert 0 <= s.skip < perFile
        # the slice's files are exactly those it touches
        assert (start + s.events - 1) // perFile == first + len(s.files) - 1
        seen.extend(range(start, start + s.events))
    assert seen == list(range(nFiles * perFile))


def test_too_few_events_is_an_error():
    with pytest.raises(ValueError, match="cannot be shared"):
        worker_slice(["a"], 3, 4, 0)
    with pytest.raises(ValueError, match="not one of"):
        worker_slice(["a"], 30, 4, 4)
