"""Its hook raises while registering."""
from diffwave_vocoder import hookimpl


@hookimpl
def register_adapters(register):
    register("half-registered", lambda target: None)
    raise RuntimeError("fixture hook failure")
