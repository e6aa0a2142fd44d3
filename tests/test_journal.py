import json
import logging
import math

import numpy as np
import pytest

from scanpy_autotune._record import TrialRecord
from scanpy_autotune._search import _journal
from scanpy_autotune._search._journal import Journal, to_json_safe

SETTINGS = {"space": "n_hidden: choice([64, 128])", "seed": 0, "train_size": 0.75, "data": "abc"}


def _lines(path):
    return path.read_text().splitlines()


def _record(trial_id, loss=1.5, **extra):
    return {"trial_id": trial_id, "status": "ok", "loss": loss, "params": {"n_hidden": 64}, **extra}


def test_new_journal_has_header_and_appends_fsynced_lines(tmp_path, monkeypatch):
    path = tmp_path / "sub" / "journal.jsonl"
    synced = []
    real_fsync = _journal.os.fsync

    def spy(fd):
        synced.append(fd)
        real_fsync(fd)

    monkeypatch.setattr(_journal.os, "fsync", spy)
    journal, records = Journal.open(path, SETTINGS)
    assert records == []
    assert json.loads(_lines(path)[0]) == {"kind": "header", "version": 1, "settings": SETTINGS}
    n_after_header = len(synced)
    assert n_after_header >= 1

    journal.append(_record(0))
    # the line is on disk (read through another handle) once append returns, and was fsynced
    assert len(_lines(path)) == 2
    assert len(synced) == n_after_header + 1
    journal.append(_record(1, loss=2.5))
    assert len(synced) == n_after_header + 2
    assert [json.loads(line)["kind"] for line in _lines(path)] == ["header", "trial", "trial"]
    assert json.loads(_lines(path)[2]) == {"kind": "trial", **_record(1, loss=2.5)}


def test_resume_returns_records_in_file_order(tmp_path):
    path = tmp_path / "j.jsonl"
    journal, _ = Journal.open(path, SETTINGS)
    for trial_id in (2, 0, 5):
        journal.append(_record(trial_id, loss=float(trial_id)))
    _, records = Journal.open(path, dict(SETTINGS))
    assert [r["trial_id"] for r in records] == [2, 0, 5]
    assert records[0] == _record(2, loss=2.0)
    assert "kind" not in records[0]


def test_nan_and_numpy_round_trip(tmp_path):
    path = tmp_path / "j.jsonl"
    journal, _ = Journal.open(path, SETTINGS)
    history = np.array([3.0, 2.0, np.nan, np.nan], dtype=np.float32)
    journal.append(
        {
            "trial_id": np.int64(0),
            "status": "fail",
            "loss": np.float64("nan"),
            "n_epochs": np.int32(2),
            "history": history,
            "elbo": float("inf"),
            "params": {"lr": np.float32(0.5), "flag": np.bool_(True)},
            "error": None,
        }
    )
    line = json.loads(_lines(path)[1])
    assert line["loss"] is None and line["elbo"] is None
    assert line["history"] == [3.0, 2.0, None, None]
    _, (raw,) = Journal.open(path, SETTINGS)  # as JSON: null stays None
    assert raw["trial_id"] == 0 and type(raw["trial_id"]) is int
    assert raw["loss"] is None and raw["history"] == [3.0, 2.0, None, None] and raw["elbo"] is None
    assert raw["n_epochs"] == 2 and raw["params"] == {"lr": 0.5, "flag": True} and raw["error"] is None
    # the search's decoder turns null numbers back into NaN, in the loss and the history
    journal.append({"trial_id": 1, "status": "fail", "loss": np.nan, "params": {"lr": 0.5},
                    "history": {"train_elbo": history, "validation_elbo": history}})
    with pytest.raises(ValueError, match="line 2"):  # the first line is no trial record (no history dict)
        Journal.open(path, SETTINGS, decode=TrialRecord.from_json)
    path.write_text("\n".join([_lines(path)[0], _lines(path)[2]]) + "\n")
    _, (record,) = Journal.open(path, SETTINGS, decode=TrialRecord.from_json)
    assert record.trial_id == 1 and math.isnan(record.loss)
    curve = record.history["validation_elbo"]
    assert curve[:2] == [3.0, 2.0] and all(math.isnan(v) for v in curve[2:])


def test_truncated_last_line_is_dropped_and_file_repaired(tmp_path, caplog):
    path = tmp_path / "j.jsonl"
    journal, _ = Journal.open(path, SETTINGS)
    journal.append(_record(0))
    journal.append(_record(1))
    good = path.read_bytes()
    with open(path, "ab") as fh:
        fh.write(b'{"kind": "trial", "trial_id": 2, "loss": 1.')  # crash mid-write
    with caplog.at_level(logging.WARNING, logger="scanpy_autotune"):
        journal, records = Journal.open(path, SETTINGS)
    assert [r["trial_id"] for r in records] == [0, 1]
    assert "incomplete last line 4" in caplog.text
    assert path.read_bytes() == good  # truncated back to the last good line
    journal.append(_record(2))
    _, records = Journal.open(path, SETTINGS)
    assert [r["trial_id"] for r in records] == [0, 1, 2]


def test_complete_last_line_without_newline_is_kept(tmp_path):
    path = tmp_path / "j.jsonl"
    journal, _ = Journal.open(path, SETTINGS)
    journal.append(_record(0))
    path.write_bytes(path.read_bytes().rstrip(b"\n"))
    journal, records = Journal.open(path, SETTINGS)
    assert [r["trial_id"] for r in records] == [0]
    assert path.read_bytes().endswith(b"\n")
    journal.append(_record(1))
    assert [json.loads(line)["trial_id"] for line in _lines(path)[1:]] == [0, 1]


def test_truncated_header_starts_afresh(tmp_path, caplog):
    path = tmp_path / "j.jsonl"
    path.write_bytes(b'{"kind": "header", "vers')
    with caplog.at_level(logging.WARNING, logger="scanpy_autotune"):
        journal, records = Journal.open(path, SETTINGS)
    assert records == []
    assert json.loads(_lines(path)[0])["settings"] == SETTINGS
    assert len(_lines(path)) == 1


def test_corrupt_middle_line_names_its_number(tmp_path):
    path = tmp_path / "j.jsonl"
    journal, _ = Journal.open(path, SETTINGS)
    journal.append(_record(0))
    journal.append(_record(1))
    lines = _lines(path)
    lines[1] = lines[1][:-5]
    path.write_text("\n".join(lines) + "\n")
    before = path.read_bytes()
    with pytest.raises(ValueError, match="corrupt at line 2"):
        Journal.open(path, SETTINGS)
    assert path.read_bytes() == before


def test_settings_mismatch_names_the_keys(tmp_path):
    path = tmp_path / "j.jsonl"
    journal, _ = Journal.open(path, SETTINGS)
    journal.append(_record(0))
    before = path.read_bytes()
    changed = {**SETTINGS, "seed": 1, "data": "xyz"}
    with pytest.raises(ValueError, match="use a new journal path or the same settings") as err:
        Journal.open(path, changed)
    message = str(err.value)
    assert "(data: journal 'abc', now 'xyz'; seed: journal 0, now 1)" in message  # each differing key, once
    with pytest.raises(ValueError, match="extra"):
        Journal.open(path, {**SETTINGS, "extra": 1})
    assert path.read_bytes() == before
    # JSON-equal settings match (tuple vs list, numpy scalars)
    path2 = tmp_path / "k.jsonl"
    Journal.open(path2, {"shape": (3, 4), "seed": np.int64(1)})
    _, records = Journal.open(path2, {"shape": [3, 4], "seed": 1})
    assert records == []


def test_duplicate_trial_ids_keep_the_first(tmp_path, caplog):
    path = tmp_path / "j.jsonl"
    journal, _ = Journal.open(path, SETTINGS)
    journal.append(_record(0, loss=1.0))
    journal.append(_record(1, loss=2.0))
    journal.append(_record(0, loss=3.0))
    with caplog.at_level(logging.WARNING, logger="scanpy_autotune"):
        _, records = Journal.open(path, SETTINGS)
    assert [(r["trial_id"], r["loss"]) for r in records] == [(0, 1.0), (1, 2.0)]
    assert "trial 0 more than once" in caplog.text


def test_not_a_journal_and_bad_records(tmp_path):
    path = tmp_path / "other.jsonl"
    path.write_text('{"a": 1}\n')
    with pytest.raises(ValueError, match="not a scanpy-autotune journal"):
        Journal.open(path, SETTINGS)
    journal, _ = Journal.open(tmp_path / "j.jsonl", SETTINGS)
    with pytest.raises(ValueError, match="trial_id"):
        journal.append({"loss": 1.0})
    with pytest.raises(TypeError, match="object"):
        journal.append({"trial_id": 1, "what": object()})
    # a failed append writes nothing
    assert len(_lines(tmp_path / "j.jsonl")) == 1


def test_to_json_safe():
    assert to_json_safe({1: (np.float32(1.5), np.array([[1, 2]]), -np.inf)}) == {
        "1": [1.5, [[1, 2]], None]
    }


@pytest.mark.parametrize("refusal", ["ENOLCK", "ENOSYS", "EOPNOTSUPP"])
def test_a_file_system_without_locks_uses_the_journal_unlocked_and_says_so(tmp_path, monkeypatch, caplog, refusal):
    # Lustre without -o flock answers ENOSYS, NFS without its lock service ENOLCK: no search holds the
    # journal, so it is not "in use by another search" (and the lock file's holder line is an old one)
    import errno
    import fcntl
    import os

    path = tmp_path / "search.jsonl"
    (tmp_path / "search.jsonl.lock").write_text("process 1 on a-node-long-gone\n")
    code = getattr(errno, refusal)

    def refuse(fd, operation):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(fcntl, "flock", refuse)
    with caplog.at_level(logging.WARNING, logger="scanpy_autotune"):
        journal, records = Journal.open(path, {"seed": 0}, lock=True)
    try:
        assert records == [] and path.exists()
        assert "does not support locks" in caplog.text and str(path) in caplog.text
        assert "a-node-long-gone" not in caplog.text
    finally:
        journal.close()
    monkeypatch.setattr(fcntl, "flock", lambda fd, operation: (_ for _ in ()).throw(OSError(errno.EWOULDBLOCK, "")))
    with pytest.raises(_journal.JournalLockedError, match="in use by another search"):
        Journal.open(path, {"seed": 0}, lock=True)
