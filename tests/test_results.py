"""Run-folder records: written atomically, sealed by content hashes, damage read as "not complete"."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from dpbench.api import SyntheticTexts, TrainedModel
from dpbench.files import atomic_write, read_json, write_json
from dpbench.results import ArtifactError, load_artifact, load_result, save_artifact


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "state.json"
    write_json(target, {"round": 1})
    with pytest.raises(OSError, match="No space"):
        with atomic_write(target) as handle:
            handle.write('{"round": 2')
            raise OSError(28, "No space left on device")
    assert read_json(target) == {"round": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]
    with pytest.raises(OSError):
        with atomic_write(tmp_path / "new.npy", "wb") as handle:
            np.save(handle, np.ones(3))
            raise OSError(28, "No space left on device")
    assert not (tmp_path / "new.npy").exists()  # no empty checkpoint to block a resume


def _model(folder):
    folder.mkdir(parents=True)
    (folder / "config.json").write_text('{"n_layer": 1}')
    (folder / "model.safetensors").write_bytes(np.arange(64, dtype="<f4").tobytes())
    return folder


def test_a_trained_model_is_sealed_relative_to_its_run_folder(tmp_path):
    run = tmp_path / "run"
    save_artifact(run, TrainedModel(path=_model(run / "state" / "model")))
    assert read_json(run / "artifact.json")["path"] == "state/model"
    assert load_artifact(run).path == run / "state" / "model"

    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    shutil.rmtree(run)
    assert load_artifact(copy).path == copy / "state" / "model"  # the copy's own model, not the original's


@pytest.mark.parametrize("change", ["sign flip", "bit flip", "file removed"])
def test_a_changed_trained_model_is_refused(tmp_path, change):
    run = tmp_path / "run"
    model = _model(run / "state" / "model")
    save_artifact(run, TrainedModel(path=model))
    weights = model / "model.safetensors"
    data = bytearray(weights.read_bytes())
    if change == "sign flip":
        weights.write_bytes((-np.frombuffer(bytes(data), dtype="<f4")).tobytes())
    elif change == "bit flip":
        data[5] ^= 0x01
        weights.write_bytes(bytes(data))
    else:
        weights.unlink()
    with pytest.raises(ArtifactError, match="changed since the method returned"):
        load_artifact(run)


def test_a_trained_model_outside_the_run_folder_is_refused(tmp_path):
    with pytest.raises(TypeError, match="inside the run folder"):
        save_artifact(tmp_path / "run", TrainedModel(path=_model(tmp_path / "elsewhere")))


def test_changed_or_torn_synthetic_texts(tmp_path):
    save_artifact(tmp_path, SyntheticTexts(texts=("a", "b")))
    assert load_artifact(tmp_path).texts == ("a", "b")
    (tmp_path / "synthetic.jsonl").write_text('{"text": "a"}\n{"text": "c"}\n')
    with pytest.raises(ArtifactError, match="changed since the method returned"):
        load_artifact(tmp_path)
    (tmp_path / "synthetic.jsonl").unlink()  # as in a committed run folder, which keeps no texts
    with pytest.raises(ArtifactError, match="synthetic texts are missing"):
        load_artifact(tmp_path)
    (tmp_path / "artifact.json").write_text('{"type": "synth')  # torn record: the method is redone
    assert load_artifact(tmp_path) is None


def test_a_truncated_result_reads_as_not_complete(tmp_path):
    (tmp_path / "result.json").write_text('{"run_id": "x", "sui')
    assert load_result(tmp_path) is None
    write_json(tmp_path / "result.json", {"run_id": "x"})  # parses, but is no result
    assert load_result(tmp_path) is None


def test_a_cache_entry_is_built_once_while_others_wait(tmp_path):
    import threading
    import time

    from dpbench.cache import SuiteCache

    builds = []

    def build(folder):
        builds.append(folder)
        time.sleep(0.3)
        (folder / "value.txt").write_text("built")

    found = []
    workers = [threading.Thread(target=lambda: found.append(SuiteCache(tmp_path).get_or_build("ns", {"k": 1}, build)))
               for _ in range(3)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert len(builds) == 1 and len(set(found)) == 1
    assert (found[0] / "value.txt").read_text() == "built"


def test_a_run_notes_where_its_machine_dependent_cache_entries_were_built(tmp_path, monkeypatch):
    from dpbench import cache as cache_module
    from dpbench.cache import BUILT_ON, SuiteCache, read_inputs

    monkeypatch.setattr(cache_module, "this_machine", lambda device: f"CPU A ({device})")
    shared, run = SuiteCache(tmp_path / "cache"), tmp_path / "run"
    run.mkdir()
    assert read_inputs(run) is None  # a run made before the record
    view = shared.for_run(run)
    assert read_inputs(run) == {}  # a run that reads nothing machine-dependent says so
    model = view.get_or_build("models", {"k": 1}, lambda folder: None, machine_dependent="cpu")
    view.get_or_build("texts", {"k": 1}, lambda folder: None)  # deterministic work: not noted
    shared.get_or_build("models", {"k": 2}, lambda folder: None, machine_dependent="cpu")  # no run's view
    assert read_inputs(run) == {f"models/{model.name}": ["CPU A (cpu)"]}
    monkeypatch.setattr(cache_module, "this_machine", lambda device: f"CPU B ({device})")
    older = shared.get_or_build("models", {"k": 3}, lambda folder: None, machine_dependent="cpu")
    (older / BUILT_ON).unlink()  # an entry made before entries said where: counts as built here
    again = shared.for_run(run)  # resumed on another machine: the record keeps what came before
    again.get_or_build("models", {"k": 1}, lambda folder: None, machine_dependent="cpu")
    again.get_or_build("models", {"k": 3}, lambda folder: None, machine_dependent="cpu")
    assert read_inputs(run) == {f"models/{model.name}": ["CPU A (cpu)"], f"models/{older.name}": ["CPU B (cpu)"]}


def test_a_sealed_checkpoint_changed_on_disk_is_refused(tmp_path):
    from dpbench.files import CheckpointError, read_sealed, write_sealed

    write_sealed(tmp_path / "state.pt", b"\x00weights\x01")
    assert read_sealed(tmp_path / "state.pt") == b"\x00weights\x01"
    raw = bytearray((tmp_path / "state.pt").read_bytes())
    raw[-2] ^= 0x10
    (tmp_path / "state.pt").write_bytes(bytes(raw))
    with pytest.raises(CheckpointError):
        read_sealed(tmp_path / "state.pt")
