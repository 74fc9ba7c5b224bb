"""User-facing errors. Each carries one line that names the thing and the fix; the CLI prints it and exits 2."""


class Peft3dError(Exception):
    """Base class for errors that are the user's input, not a bug."""


class WeightsError(Peft3dError):
    """Weights missing, corrupt, or not matching the architecture."""


class DataError(Peft3dError):
    """Dataset missing, malformed or inconsistent."""


class ConfigError(Peft3dError):
    """Invalid grid, preset or method configuration."""
