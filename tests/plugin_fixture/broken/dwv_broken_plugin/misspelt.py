"""Implements a hook that does not exist (register_vocoder without the s)."""
from diffwave_vocoder import hookimpl


@hookimpl
def register_vocoder(register):
    register("never-registered", object)
