"""The registry against real installed metadata: our own entry points, and third-party plugin
distributions (tests/plugin_fixture) built and pip-installed into a temporary directory."""
from __future__ import annotations

import importlib
import json
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from diffwave_vocoder import plugins
from diffwave_vocoder.adapters import CONVENTIONS, MelAdapter
from diffwave_vocoder.features.mel import MelConvention, compute_mel

FIXTURES = Path(__file__).parent / "plugin_fixture"


@pytest.fixture(scope="session")
def installed(tmp_path_factory) -> dict[str, Path]:
    """Each fixture distribution pip-installed (real wheel build, real dist-info) into its own dir."""
    targets = {}
    for name in ("good", "broken", "duplicate"):
        source = tmp_path_factory.mktemp(f"src-{name}") / name
        shutil.copytree(FIXTURES / name, source)  # build in a copy: never write into the repository
        target = tmp_path_factory.mktemp(f"site-{name}")
        subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation",
                        "--no-index", "--quiet", "--target", str(target), str(source)],
                       check=True, capture_output=True)
        targets[name] = target
    return targets


@pytest.fixture
def on_path(installed):
    """Put some installed fixture distributions on sys.path and rescan; undo everything afterwards."""
    added: list[str] = []

    def add(*names: str) -> None:
        for name in names:
            sys.path.insert(0, str(installed[name]))
            added.append(str(installed[name]))
        importlib.invalidate_caches()

    yield add
    for entry in added:
        sys.path.remove(entry)
    for module in [m for m in sys.modules if m.startswith(("dwv_fixture_plugin", "dwv_broken_plugin",
                                                           "dwv_duplicate_plugin"))]:
        del sys.modules[module]
    importlib.invalidate_caches()
    plugins.reload_plugins()


def test_own_vocoder_and_adapters_come_from_our_entry_points():
    plugins.reload_plugins()
    vocoders, adapters = plugins.list_vocoders(), plugins.list_adapters()
    assert vocoders["diffwave"].plugin == "diffwave"
    assert vocoders["diffwave"].distribution.startswith("diffwave-vocoder ")
    assert set(CONVENTIONS) | {"generic"} <= set(adapters)
    assert {r.plugin for name, r in adapters.items() if name in CONVENTIONS} == {"adapters"}
    from importlib.metadata import entry_points

    declared = {ep.name: ep.value for ep in entry_points(group="diffwave_vocoder")}
    assert declared["diffwave"] == "diffwave_vocoder.plugins"
    assert declared["adapters"] == "diffwave_vocoder.adapters.plugin"


def test_third_party_plugin_is_found_through_installed_metadata(on_path, installed):
    with pytest.raises(ImportError):
        importlib.import_module("dwv_fixture_plugin")  # not importable until installed on the path
    on_path("good")
    plugins.reload_plugins()
    vocoder_entry = plugins.list_vocoders()["fixture-tiny"]
    adapter_entry = plugins.list_adapters()["fixture-ln"]
    assert vocoder_entry.distribution == adapter_entry.distribution == "dwv-fixture-plugin 0.3.1"
    assert vocoder_entry.plugin == "fixture"
    assert Path(sys.modules["dwv_fixture_plugin"].__file__).is_relative_to(installed["good"])
    assert "diffwave" in plugins.list_vocoders()  # ours still there

    vocoder = plugins.load_vocoder("fixture-tiny", seed=3)
    assert vocoder.config.residual_layers == 2
    # The fixture adapter: natural-log mels on lmnt's filterbank -> lmnt's mel, exact where unclipped.
    audio = np.sin(2 * np.pi * 440 * np.arange(8192) / 22050).astype(np.float32) * 0.5
    source = MelConvention(compression="log", compression_params={"base": np.e, "guard": "clamp", "eps": 1e-5})
    ln_mel = compute_mel(audio, source)
    adapter = plugins.get_adapter("fixture-ln")
    np.testing.assert_allclose(adapter(ln_mel), compute_mel(audio), atol=2e-6)
    waveform = vocoder.vocode(ln_mel.T, layout="torch", adapter="fixture-ln", seed=0)
    assert waveform.shape == (ln_mel.shape[0] * vocoder.hop_length,)


def test_a_fresh_process_discovers_the_installed_plugin(installed):
    code = ("import json, diffwave_vocoder as d; "
            "print(json.dumps({'v': sorted(d.list_vocoders()), 'a': sorted(d.list_adapters())}))")
    env = {"PYTHONPATH": str(installed["good"]), "PATH": "/usr/bin:/bin", "TF_CPP_MIN_LOG_LEVEL": "3"}
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True, env=env,
                         cwd=installed["good"])
    found = json.loads(out.stdout.strip().splitlines()[-1])
    assert found["v"] == ["diffwave", "fixture-tiny"]
    assert "fixture-ln" in found["a"] and "tacotron2" in found["a"]


def test_broken_plugins_warn_by_name_and_the_others_still_load(on_path):
    on_path("good", "broken")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        plugins.reload_plugins()
    messages = [str(w.message) for w in caught if issubclass(w.category, plugins.PluginLoadWarning)]
    assert len(messages) == 3, messages
    by_name = {name: next(m for m in messages if f"plugin {name!r}" in m)
               for name in ("needs-missing", "misspelt", "raises")}
    assert all("dwv-broken-plugin 2.0.0" in m for m in messages)
    assert "dwv_package_that_does_not_exist" in by_name["needs-missing"]
    assert "register_vocoder" in by_name["misspelt"]
    assert "fixture hook failure" in by_name["raises"]
    # Nothing from a failing hook is kept; every good plugin is.
    assert "half-registered" not in plugins.list_adapters()
    assert "never-registered" not in plugins.list_vocoders()
    assert {"diffwave", "fixture-tiny"} <= set(plugins.list_vocoders())
    assert {"fixture-ln", "tacotron2", "hifigan"} <= set(plugins.list_adapters())


def test_two_plugins_claiming_one_name_is_an_error_naming_both_distributions(on_path):
    on_path("duplicate")
    with pytest.raises(plugins.PluginConflictError) as raised:
        plugins.reload_plugins()
    message = str(raised.value)
    assert "'tacotron2'" in message
    assert "diffwave-vocoder 0.1.0" in message and "dwv-duplicate-plugin 1.0.0" in message
    assert "'adapters'" in message and "'clash'" in message


def test_load_vocoder_by_path_or_by_name(tmp_path):
    from diffwave_vocoder import Vocoder, load_vocoder

    config = {"residual_layers": 2, "residual_channels": 4}
    made = load_vocoder("diffwave", config=config, seed=7)
    assert isinstance(made, Vocoder) and made.config.residual_channels == 4
    made.save(tmp_path / "ckpt")
    mel = np.full((5, 80), 0.5, np.float32)
    expected = made.vocode(mel, seed=1)
    for how in (tmp_path / "ckpt", str(tmp_path / "ckpt")):
        np.testing.assert_array_equal(load_vocoder(how).vocode(mel, seed=1), expected)
    np.testing.assert_array_equal(load_vocoder("diffwave", checkpoint=tmp_path / "ckpt").vocode(mel, seed=1),
                                  expected)


@pytest.mark.parametrize("call, message", [
    (lambda: plugins.load_vocoder("no-such-vocoder"), "neither an existing checkpoint directory nor a registered"),
    (lambda: plugins.load_vocoder("diffwave", preset="no-such-preset"), "no shipped vocoder preset"),
    (lambda: plugins.load_vocoder("diffwave", seed=3), "needs config="),
    (lambda: plugins.load_vocoder("diffwave", preset="default", seed=3), "got preset and config/seed"),
    (lambda: plugins.load_vocoder("/no/such/checkpoint"), "checkpoint not found"),
    (lambda: plugins.load_vocoder(Path("/tmp"), seed=1), "takes none"),
    (lambda: plugins.load_vocoder("diffwave", config=[1]), "config must be a DiffWaveConfig or a dict"),
    (lambda: plugins.get_adapter("no-such-adapter"), "registered adapters: ["),
    (lambda: plugins.get_adapter("tacotron2", target="lmnt"), "target must be a MelConvention"),
    (lambda: plugins.get_adapter("tacotron2", fmx=8000), "unsupported option"),
    (lambda: plugins.get_adapter("coqui", mel_fmx=8000), "unsupported Coqui audio setting(s) ['mel_fmx']"),
    (lambda: plugins.get_adapter("tacotron2", method="lstsq"), "method must be one of"),
])
def test_bad_requests_are_value_errors_that_say_what_was_expected(call, message):
    with pytest.raises(ValueError) as raised:
        call()
    assert message in str(raised.value)


def test_vocode_refuses_an_adapter_built_for_another_convention(small_vocoder):
    foreign = MelAdapter(CONVENTIONS["tacotron2"](), target=CONVENTIONS["hifigan"]())
    with pytest.raises(ValueError, match="another mel convention"):
        small_vocoder.vocode(np.zeros((80, 4)), layout="torch", adapter=foreign)
