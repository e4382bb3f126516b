"""The `pact` command-line interface (installed as `pact.cli`).

Command modules only parse options, call library code and render results. They import JAX
and the data libraries inside the command bodies so that `pact --help` stays instant.
"""
