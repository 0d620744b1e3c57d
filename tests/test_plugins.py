"""The registry against real installed metadata: our own entry points, and third-party plugin
distributions (tests/plugin_fixture) built and pip-installed into a temporary directory."""
from __future__ import annotations

import importlib
import json
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

import diffwave_vocoder
from diffwave_vocoder import builtin, registry
from diffwave_vocoder.adapters import CONVENTIONS, MelAdapter
from diffwave_vocoder.features.mel import MelConvention, compute_mel

FIXTURES = Path(__file__).parent / "plugin_fixture"
# Where the package under test is imported from; a subprocess must find this copy and its metadata.
PACKAGE_ROOT = Path(diffwave_vocoder.__file__).parents[1]


def run_python(code: str, *paths: Path, **env: str) -> subprocess.CompletedProcess:
    """`code` in a fresh interpreter that sees the package under test and `paths`, run outside the repository."""
    search = os.pathsep.join([*map(str, paths), str(PACKAGE_ROOT)])
    return subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True,
                          cwd=paths[0] if paths else None,
                          env={"PYTHONPATH": search, "PATH": "/usr/bin:/bin", "TF_CPP_MIN_LOG_LEVEL": "3", **env})


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
    registry.reload_plugins()


def test_own_vocoder_and_adapters_come_from_our_entry_point():
    registry.reload_plugins()
    vocoders, adapters = registry.list_vocoders(), registry.list_adapters()
    assert set(vocoders) == {"diffwave"} and set(adapters) == set(CONVENTIONS) | {"generic"}
    assert set(builtin.ADAPTER_DESCRIPTIONS) == set(CONVENTIONS)  # every toolkit recipe is registered
    for entry in (*vocoders.values(), *adapters.values()):
        assert entry.plugin == "builtin" and entry.distribution == f"diffwave-vocoder {diffwave_vocoder.__version__}"
    from importlib.metadata import entry_points

    declared = {ep.name: ep.value for ep in entry_points(group="diffwave_vocoder")}
    assert declared == {"builtin": "diffwave_vocoder.builtin"}


def test_listing_plugins_imports_neither_tensorflow_nor_librosa():
    code = ("import json, sys, diffwave_vocoder as dv; from diffwave_vocoder.cli import main; "
            "found = [sorted(dv.list_vocoders()), sorted(dv.list_adapters())]; main(['plugins']); "
            "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras', 'librosa'));"
            "print(json.dumps({'found': found, 'heavy': heavy}))")
    out = json.loads(run_python(code).stdout.strip().splitlines()[-1])
    assert out["found"] == [["diffwave"], sorted(set(CONVENTIONS) | {"generic"})]
    assert out["heavy"] == []


def test_third_party_plugin_is_found_through_installed_metadata(on_path, installed):
    with pytest.raises(ImportError):
        importlib.import_module("dwv_fixture_plugin")  # not importable until installed on the path
    on_path("good")
    registry.reload_plugins()
    vocoder_entry = registry.list_vocoders()["fixture-tiny"]
    adapter_entry = registry.list_adapters()["fixture-ln"]
    assert vocoder_entry.distribution == adapter_entry.distribution == "dwv-fixture-plugin 0.3.1"
    assert vocoder_entry.plugin == "fixture"
    assert Path(sys.modules["dwv_fixture_plugin"].__file__).is_relative_to(installed["good"])
    assert "diffwave" in registry.list_vocoders()  # ours still there

    vocoder = registry.load_vocoder("fixture-tiny", seed=3)
    assert vocoder.config.residual_layers == 2
    # The fixture adapter: natural-log mels on lmnt's filterbank -> lmnt's mel, exact where unclipped.
    audio = np.sin(2 * np.pi * 440 * np.arange(8192) / 22050).astype(np.float32) * 0.5
    source = MelConvention(compression="log", compression_params={"base": np.e, "guard": "clamp", "eps": 1e-5})
    ln_mel = compute_mel(audio, source)
    adapter = registry.get_adapter("fixture-ln")
    np.testing.assert_allclose(adapter(ln_mel), compute_mel(audio), atol=2e-6)
    waveform = vocoder.vocode(ln_mel.T, layout="torch", adapter="fixture-ln", seed=0)
    assert waveform.shape == (ln_mel.shape[0] * vocoder.hop_length,)


def test_a_fresh_process_discovers_the_installed_plugin(installed):
    code = ("import json, diffwave_vocoder as d; "
            "print(json.dumps({'v': sorted(d.list_vocoders()), 'a': sorted(d.list_adapters())}))")
    found = json.loads(run_python(code, installed["good"]).stdout.strip().splitlines()[-1])
    assert found["v"] == ["diffwave", "fixture-tiny"]
    assert "fixture-ln" in found["a"] and "tacotron2" in found["a"]


def test_broken_plugins_warn_by_name_and_the_others_still_load(on_path):
    on_path("good", "broken")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        registry.reload_plugins()
    messages = [str(w.message) for w in caught if issubclass(w.category, registry.PluginLoadWarning)]
    assert len(messages) == 3, messages
    by_name = {name: next(m for m in messages if f"plugin {name!r}" in m)
               for name in ("needs-missing", "misspelt", "raises")}
    assert all("dwv-broken-plugin 2.0.0" in m for m in messages)
    assert "dwv_package_that_does_not_exist" in by_name["needs-missing"]
    assert "register_vocoder" in by_name["misspelt"]
    assert "fixture hook failure" in by_name["raises"]
    # Nothing from a failing hook is kept; every good plugin is.
    assert "half-registered" not in registry.list_adapters()
    assert "never-registered" not in registry.list_vocoders()
    assert {"diffwave", "fixture-tiny"} <= set(registry.list_vocoders())
    assert {"fixture-ln", "tacotron2", "hifigan"} <= set(registry.list_adapters())


def test_names_two_plugins_claim_are_reported_and_only_those_names_raise(on_path):
    on_path("good", "duplicate")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        registry.reload_plugins()
    warned = sorted(str(w.message) for w in caught if issubclass(w.category, registry.PluginConflictWarning))
    conflicts = registry.list_conflicts()
    assert sorted(str(c) for c in conflicts) == warned
    ours, duplicate, good = (f"diffwave-vocoder {diffwave_vocoder.__version__}", "dwv-duplicate-plugin 1.0.0",
                             "dwv-fixture-plugin 0.3.1")
    assert {(c.kind, c.name): {(r.plugin, r.distribution) for r in c.registrations} for c in conflicts} == {
        ("adapter", "tacotron2"): {("builtin", ours), ("clash", duplicate)},
        ("vocoder", "fixture-tiny"): {("fixture", good), ("clash", duplicate)}}
    # Every other name of all three plugins stays usable, the clashing plugin's included...
    assert "tacotron2" not in registry.list_adapters() and "fixture-tiny" not in registry.list_vocoders()
    assert {"hifigan", "generic", "fixture-ln"} <= set(registry.list_adapters())
    assert isinstance(registry.get_adapter("fixture-ln"), MelAdapter)
    assert "diffwave" in registry.list_vocoders()
    # ...and requesting a conflicting name raises one line naming both plugins and distributions.
    requests = {"tacotron2": (lambda: registry.get_adapter("tacotron2"), ours),
                "fixture-tiny": (lambda: registry.load_vocoder("fixture-tiny"), good)}
    for name, (request, first) in requests.items():
        with pytest.raises(registry.PluginConflictError) as raised:
            request()
        message = str(raised.value)
        assert "\n" not in message and f"name {name!r}" in message
        assert f"{first!r}" in message and f"{duplicate!r}" in message and "'clash'" in message


def test_plugins_command_lists_conflicts_and_everything_else(installed):
    result = run_python("from diffwave_vocoder.cli import main; raise SystemExit(main(['plugins']))",
                        installed["good"], installed["duplicate"])
    lines = result.stdout.splitlines()
    conflicts = lines[lines.index("conflicts (each name is unusable until one of its plugins is removed):") + 1:]
    assert len(conflicts) == 2
    adapter, = (line for line in conflicts if line.startswith("  adapter name 'tacotron2' is registered by "))
    vocoder, = (line for line in conflicts if line.startswith("  vocoder name 'fixture-tiny' is registered by "))
    assert "'builtin'" in adapter and "dwv-duplicate-plugin 1.0.0" in adapter
    assert "plugin 'fixture' of 'dwv-fixture-plugin 0.3.1'" in vocoder and "'clash'" in vocoder
    assert any(line.startswith("  fixture-ln ") for line in lines)
    assert not any(line.startswith("  tacotron2 ") for line in lines)
    warnings_shown = result.stderr.strip().splitlines()
    assert len(warnings_shown) == 2 and all(line.startswith("warning: ") for line in warnings_shown)


def test_environment_variable_chooses_which_plugins_load(on_path, monkeypatch):
    on_path("good", "duplicate")
    monkeypatch.setenv("DIFFWAVE_VOCODER_PLUGINS", "")  # only this package's own
    registry.reload_plugins()
    assert set(registry.list_vocoders()) == {"diffwave"} and "fixture-ln" not in registry.list_adapters()
    assert registry.list_conflicts() == []
    assert registry.list_excluded() == ["dwv-duplicate-plugin 1.0.0", "dwv-fixture-plugin 0.3.1"]

    # Names as pip spells them or as Python does; leaving the clashing plugin out resolves both conflicts.
    monkeypatch.setenv("DIFFWAVE_VOCODER_PLUGINS", " dwv_fixture_plugin ")
    registry.reload_plugins()
    assert registry.list_vocoders()["fixture-tiny"].distribution == "dwv-fixture-plugin 0.3.1"
    assert registry.list_adapters()["tacotron2"].plugin == "builtin"
    assert registry.list_conflicts() == [] and registry.list_excluded() == ["dwv-duplicate-plugin 1.0.0"]

    monkeypatch.setenv("DIFFWAVE_VOCODER_PLUGINS", "dwv-fixture-plugin,dwv-misspelt-plugin")
    with pytest.warns(registry.PluginLoadWarning, match=r"\['dwv-misspelt-plugin'\], which declare no"):
        registry.reload_plugins()
    assert "fixture-tiny" in registry.list_vocoders()


def test_plugins_command_says_which_distributions_the_variable_leaves_out(installed):
    result = run_python("from diffwave_vocoder.cli import main; raise SystemExit(main(['plugins']))",
                        installed["good"], DIFFWAVE_VOCODER_PLUGINS="")
    assert "fixture-tiny" not in result.stdout and "  diffwave " in result.stdout
    assert result.stdout.splitlines()[-1] == ("not loaded (DIFFWAVE_VOCODER_PLUGINS='' leaves them out): "
                                              "dwv-fixture-plugin 0.3.1")
    assert result.stderr == ""


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
    (lambda: registry.load_vocoder("no-such-vocoder"), "neither an existing checkpoint directory nor a registered"),
    (lambda: registry.load_vocoder("diffwave", preset="no-such-preset"), "no shipped vocoder preset"),
    (lambda: registry.load_vocoder("diffwave", seed=3), "needs config="),
    (lambda: registry.load_vocoder("diffwave", preset="default", seed=3), "got preset and config/seed"),
    (lambda: registry.load_vocoder("/no/such/checkpoint"), "checkpoint not found"),
    (lambda: registry.load_vocoder(Path("/tmp"), seed=1), "takes none"),
    (lambda: registry.load_vocoder("diffwave", config=[1]), "config must be a DiffWaveConfig or a dict"),
    (lambda: registry.get_adapter("no-such-adapter"), "registered adapters: ["),
    (lambda: registry.get_adapter("tacotron2", target="lmnt"), "target must be a MelConvention"),
    (lambda: registry.get_adapter("tacotron2", fmx=8000), "unsupported option"),
    (lambda: registry.get_adapter("coqui", mel_fmx=8000), "unsupported Coqui audio setting(s) ['mel_fmx']"),
    (lambda: registry.get_adapter("tacotron2", method="lstsq"), "method must be one of"),
])
def test_bad_requests_are_value_errors_that_say_what_was_expected(call, message):
    with pytest.raises(ValueError) as raised:
        call()
    assert message in str(raised.value)


def test_vocode_refuses_an_adapter_built_for_another_convention(small_vocoder):
    foreign = MelAdapter(CONVENTIONS["tacotron2"](), target=CONVENTIONS["hifigan"]())
    with pytest.raises(ValueError, match="another mel convention"):
        small_vocoder.vocode(np.zeros((80, 4)), layout="torch", adapter=foreign)
