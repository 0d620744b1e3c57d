"""The torch-free checkpoint reader against files written by the real torch.save.

Every expectation comes from torch itself: what `torch.load` returns for the same file.
"""
from __future__ import annotations

import io
import os
import sys
import warnings
import zipfile
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest
import torch

from diffwave_vocoder.io.torch_pickle import TorchPickleError, UnsafePickleError, load_torch_pickle
from helpers import learner_state_dict, reference_params, save_like_learner, trained_reference

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # the reference runs on one thread

FORMATS = pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])


def _save(obj, path: Path, legacy: bool) -> Path:
    torch.save(obj, path, _use_new_zipfile_serialization=not legacy)
    return path


def _assert_same(ours, theirs, where: str = "") -> None:
    """`ours` (our loader) equals `theirs` (torch.load) leaf by leaf, tensors as numpy arrays."""
    if isinstance(theirs, torch.Tensor):
        assert isinstance(ours, np.ndarray), f"{where}: {type(ours)}"
        assert ours.shape == tuple(theirs.shape), where
        if theirs.dtype == torch.bfloat16:
            assert ours.dtype == ml_dtypes.bfloat16, where
            np.testing.assert_array_equal(ours.astype(np.float32), theirs.detach().float().numpy(), err_msg=where)
        else:
            expected = theirs.detach().numpy()
            assert ours.dtype == expected.dtype, f"{where}: {ours.dtype} != {expected.dtype}"
            np.testing.assert_array_equal(ours, expected, err_msg=where)
        assert ours.flags.c_contiguous and ours.flags.owndata, where
    elif isinstance(theirs, dict):
        assert type(ours) is type(theirs) or (isinstance(ours, dict) and type(theirs).__name__ == "AttrDict"), where
        assert list(ours) == list(theirs), where
        for key in theirs:
            _assert_same(ours[key], theirs[key], f"{where}/{key}")
    elif isinstance(theirs, (list, tuple)):
        assert type(ours) is type(theirs) and len(ours) == len(theirs), where
        for i, (a, b) in enumerate(zip(ours, theirs)):
            _assert_same(a, b, f"{where}[{i}]")
    else:
        assert type(ours) is type(theirs) and ours == theirs, f"{where}: {ours!r} != {theirs!r}"


@FORMATS
@pytest.mark.parametrize("fp16", [False, True], ids=["fp32", "fp16-scaler"])
def test_reference_training_dict(tmp_path, legacy, fp16):
    """A real lmnt training dict (model, Adam state after a step, GradScaler, AttrDict params as-is)."""
    params = reference_params()
    model, optimizer, scaler = trained_reference(params, fp16=fp16)
    state = learner_state_dict(model, optimizer, scaler, params, step=1)
    path = save_like_learner(state, tmp_path / "run", legacy=legacy)

    ours = load_torch_pickle(path)
    theirs = torch.load(path, weights_only=False)
    _assert_same(ours, theirs)
    assert type(ours["params"]) is dict and ours["params"] == dict(params)
    assert len(ours["model"]) == 254
    assert ours["optimizer"]["state"][0]["exp_avg"].shape == (64, 1, 1)
    assert ours["scaler"] == scaler.state_dict() and bool(ours["scaler"]) == fp16


def test_learner_params_as_plain_dict(tmp_path):
    """What the learner actually stores: dict(params), a small non-default model."""
    params = reference_params(residual_channels=8, residual_layers=3, dilation_cycle_length=2)
    model, optimizer, scaler = trained_reference(params)
    path = save_like_learner(learner_state_dict(model, optimizer, scaler, dict(params), step=7), tmp_path)
    ours = load_torch_pickle(path)
    _assert_same(ours, torch.load(path, weights_only=True))
    assert ours["step"] == 7 and ours["params"]["residual_channels"] == 8


@FORMATS
def test_model_directory_and_relative_symlink(tmp_path, monkeypatch, legacy):
    params = reference_params(residual_channels=4, residual_layers=2)
    model, optimizer, scaler = trained_reference(params)
    saved = save_like_learner(learner_state_dict(model, optimizer, scaler, dict(params), step=3),
                              tmp_path / "model", legacy=legacy)
    link = tmp_path / "model" / "weights.pt"
    assert os.readlink(link) == "weights-3.pt"  # relative, as the learner writes it

    # The directory is read from elsewhere, so the relative link must resolve against its own folder.
    monkeypatch.chdir(tmp_path.parent)
    from_dir, from_link, from_file = (load_torch_pickle(p) for p in (tmp_path / "model", link, saved))
    for loaded in (from_link, from_file):
        _assert_same(loaded, torch.load(saved, weights_only=True))
    _assert_same(from_dir, torch.load(saved, weights_only=True))


@FORMATS
def test_tensor_layouts_and_dtypes(tmp_path, legacy):
    base = torch.arange(60, dtype=torch.float32).reshape(5, 12) / 7
    obj = {
        "transposed": base.t(),
        "offset_slice": base[2:, 3:9],
        "strided": base[::2, ::3],
        "expanded": torch.tensor([1.5, -2.0, 3.25]).expand(4, 3),  # stride 0
        "scalar": torch.tensor(3.0),
        "empty": torch.zeros(0, 4),
        "parameter": torch.nn.Parameter(torch.randn(2, 3)),
        "shared": [base[1], base[:, 0]],  # two views of one storage
        **{str(dtype).split(".")[1]: (base * 5).to(dtype) for dtype in (
            torch.float16, torch.bfloat16, torch.float64, torch.int64, torch.int32, torch.int16,
            torch.int8, torch.uint8, torch.bool, torch.complex64)},
        "nested": ({"tuple": (1, 2.5, "x", None, True)},),
    }
    path = _save(obj, tmp_path / "layouts.pt", legacy)
    _assert_same(load_torch_pickle(path), torch.load(path, weights_only=False))


def _rewrite_zip(src: Path, dst: Path, edit) -> Path:
    """Copy a torch zip checkpoint member by member, letting `edit(name, data)` change contents."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as zout:
        for info in zin.infolist():
            data = edit(info.filename, zin.read(info.filename))
            if data is not None:
                zout.writestr(info.filename, data)
    return dst


def test_big_endian_zip(tmp_path):
    """A zip checkpoint whose byteorder file says "big" (as torch writes on big-endian machines)."""
    obj = {"f": torch.randn(3, 4), "h": torch.randn(5).half(), "bf": torch.randn(6).bfloat16(),
           "i": torch.arange(-3, 4), "c": torch.randn(2, dtype=torch.complex64), "b": torch.rand(4) > 0.5}
    little = _save(obj, tmp_path / "little.pt", legacy=False)
    with zipfile.ZipFile(little) as archive:
        pickled = archive.read("little/data.pkl")

    class DtypeOfKey(__import__("pickle").Unpickler):  # which dtype each storage key holds
        dtypes: dict = {}

        def find_class(self, module, name):
            return getattr(torch, name) if module == "torch" else (lambda *a: None)

        def persistent_load(self, pid):
            with warnings.catch_warnings():  # TypedStorage's deprecation notice
                warnings.simplefilter("ignore")
                self.dtypes[pid[2]] = pid[1].dtype

    DtypeOfKey(io.BytesIO(pickled)).load()

    def to_big(name, data):
        if name.endswith("/byteorder"):
            return b"big"
        if "/data/" in name:
            dtype = DtypeOfKey.dtypes[name.rsplit("/", 1)[1]]
            unit = torch.empty(0, dtype=dtype).element_size() // (2 if dtype.is_complex else 1)
            return np.frombuffer(data, f"u{unit}").byteswap().tobytes() if unit > 1 else data
        return data

    big = _rewrite_zip(little, tmp_path / "big.pt", to_big)
    assert big.read_bytes() != little.read_bytes()
    theirs = torch.load(big, weights_only=True)
    for key, tensor in torch.load(little, weights_only=True).items():  # torch reads the same values
        assert torch.equal(theirs[key], tensor), key
    _assert_same(load_torch_pickle(big), theirs)


def test_gpu_saved_storages_load_on_cpu(tmp_path):
    """The learner leaves Adam's state on the GPU: its storages say location "cuda:0"."""
    path = _save({"exp_avg": torch.randn(4, 2)}, tmp_path / "gpu.pt", legacy=False)
    cpu_id, cuda_id = b"X\x03\x00\x00\x00cpu", b"X\x06\x00\x00\x00cuda:0"
    gpu = _rewrite_zip(path, tmp_path / "gpu2.pt",
                       lambda name, data: data.replace(cpu_id, cuda_id) if name.endswith("data.pkl") else data)
    with zipfile.ZipFile(gpu) as archive:
        assert cuda_id in archive.read("gpu/data.pkl")
    _assert_same(load_torch_pickle(gpu), torch.load(gpu, map_location="cpu", weights_only=True))


class _SystemPayload:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


class _ExecPayload:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return exec, (f"open({str(self.marker)!r}, 'w').close()",)


@FORMATS
@pytest.mark.parametrize("payload, refused", [(_SystemPayload, f"{os.system.__module__}.system"),
                                              (_ExecPayload, "__builtin__.exec")], ids=["os.system", "exec"])
def test_malicious_payload_is_refused_and_never_runs(tmp_path, legacy, payload, refused):
    marker = tmp_path / "payload-ran"
    params = reference_params(residual_channels=4, residual_layers=2)
    model, optimizer, scaler = trained_reference(params)
    state = learner_state_dict(model, optimizer, scaler, params, step=1)
    state["params"]["evil"] = payload(marker)  # hidden deep inside an otherwise real checkpoint
    path = save_like_learner(state, tmp_path / "run", legacy=legacy)

    with pytest.raises(UnsafePickleError) as caught:
        load_torch_pickle(tmp_path / "run")
    message = str(caught.value)
    assert f"'{refused}'" in message and str(path) in message  # as named in the file (protocol 2)
    assert not marker.exists()

    # The payload is live: unrestricted torch.load runs it. This is what the allow-list prevents.
    torch.load(path, weights_only=False)
    assert marker.exists()


def test_refused_module_is_never_imported(tmp_path):
    name = "diffwave_vocoder_test_never_imported"
    (tmp_path / f"{name}.py").write_text("raise SystemExit('imported!')\nhook = None\n")
    pickled = f"\x80\x02c{name}\nhook\n)R.".encode("latin-1")  # PROTO 2, GLOBAL, EMPTY_TUPLE, REDUCE, STOP
    checkpoint = tmp_path / "evil.pt"
    with zipfile.ZipFile(checkpoint, "w") as archive:
        archive.writestr("archive/data.pkl", pickled)
        archive.writestr("archive/byteorder", "little")
    sys.path.insert(0, str(tmp_path))
    try:
        with pytest.raises(UnsafePickleError, match=f"'{name}.hook'"):
            load_torch_pickle(checkpoint)
    finally:
        sys.path.remove(str(tmp_path))
    assert name not in sys.modules


def test_tensor_reaching_past_its_storage_is_refused(tmp_path):
    """A tensor header claiming more elements than the stored bytes hold must not read memory."""
    path = _save({"w": torch.randn(4, 4)}, tmp_path / "ok.pt", legacy=False)
    truncated = _rewrite_zip(path, tmp_path / "bad.pt",
                             lambda name, data: data[:32] if "/data/" in name else data)
    with pytest.raises(TorchPickleError, match="reaches element 15 of storage .* holds only 8"):
        load_torch_pickle(truncated)


def test_not_a_checkpoint(tmp_path):
    text = tmp_path / "notes.pt"
    text.write_text("hello")
    with pytest.raises(TorchPickleError, match="notes.pt"):
        load_torch_pickle(text)
    plain_zip = tmp_path / "plain.pt"
    with zipfile.ZipFile(plain_zip, "w") as archive:
        archive.writestr("readme.txt", "not torch")
    with pytest.raises(TorchPickleError, match="exactly one '<folder>/data.pkl'"):
        load_torch_pickle(plain_zip)
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "weights-5.pt").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match=r"no weights.pt .*\['weights-5.pt'\]"):
        load_torch_pickle(tmp_path / "run")
    (tmp_path / "dangling.pt").symlink_to("missing.pt")
    with pytest.raises(FileNotFoundError, match="dangling symlink"):
        load_torch_pickle(tmp_path / "dangling.pt")
