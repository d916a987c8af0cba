"""Errors a user can fix. Their message says what is wrong and where (file, tensor, field);
the CLI prints them without a traceback and the server turns them into 4xx/503 replies."""


class CoeflowError(Exception):
    """Base of every error whose message is meant for the user."""


class CheckpointError(CoeflowError):
    """A checkpoint directory is missing files, is corrupt, or contradicts its config."""


class UnsupportedModelError(CheckpointError):
    """The checkpoint's architecture or a config field is outside what coeflow implements."""


class ConfigError(CoeflowError):
    """A CoE file, hardware spec or command-line value is malformed."""
