"""metarun: a config-driven experiment runner for meta-learning."""

__version__ = "0.1.0"
