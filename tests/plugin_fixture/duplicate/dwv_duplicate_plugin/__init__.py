"""Registers names that other plugins already use: diffwave-vocoder's `tacotron2` adapter and the
good fixture's `fixture-tiny` vocoder."""
from diffwave_vocoder import hookimpl


@hookimpl
def register_vocoders(register):
    register("fixture-tiny", lambda **options: None, description="a clashing tiny vocoder")


@hookimpl
def register_adapters(register):
    register("tacotron2", lambda target, **options: None, description="a clashing Tacotron 2 adapter")
