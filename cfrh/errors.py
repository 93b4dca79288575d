"""The one family of errors a user meets. The CLIs catch ``CfrhError`` alone and print its one
line with exit code 1 (Click keeps 2 for usage errors); any other exception is a bug and keeps
its traceback. Importing this module imports nothing else (no torch, no open_clip)."""


class CfrhError(Exception):
    """A problem with what the user gave: the message names the file, key, row or option and
    what was expected."""


class DataError(CfrhError, ValueError):
    """Bad input data (a dataset file, a manifest line, an image, a feature file)."""


class CacheError(CfrhError):
    """A cache, run folder or index that cannot be used as asked (missing, incomplete, stale,
    made from other inputs, not writable)."""


class ConfigError(CfrhError, ValueError):
    """A config key or command-line option outside its type, choices or range."""


class WeightsUnavailable(CfrhError):
    """Pretrained weights that cannot be had here; the message says how to supply them offline."""


class TrainingError(CfrhError, FloatingPointError):
    """Training that cannot go on (a non-finite loss): names epoch, step and every loss term."""
