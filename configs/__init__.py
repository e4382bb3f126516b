"""Named configurations, installed as `pact.configs`; see `pact.config.load_config`."""
