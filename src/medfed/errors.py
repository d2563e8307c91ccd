"""One exception type per family. Each message names what is at fault and what to do."""


class MedfedError(Exception):
    """Base of every error medfed reports to a user (the CLI prints it without a traceback)."""


class ConfigError(MedfedError):
    """A configuration value is missing or not allowed."""


class DataError(MedfedError):
    """A dataset is missing, malformed or unusable."""


class ModelError(MedfedError):
    """A model cannot be built or its weights cannot be loaded."""


class StoreError(MedfedError):
    """The run store (database, artifacts) cannot be reached or holds no such record."""


class FederationError(MedfedError):
    """A federated run cannot start, or stopped because of its hospitals or its server."""


class PrivacyError(MedfedError):
    """A privacy setting cannot be honoured (e.g. a model not compatible with DP-SGD)."""
