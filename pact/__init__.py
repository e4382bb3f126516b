"""pact: long-context symbolic music generation with Perceiver AR on JAX.

Importing `pact` is cheap: JAX, Flax and the data libraries load only in the modules that
need them, so `pact --help` answers at once.
"""

__version__ = "0.1.0"
