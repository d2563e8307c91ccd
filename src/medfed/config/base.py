"""What every configuration section shares: strict keys, bounds and path checks."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

SEED_MAX = 2**32 - 1  # numpy's seeds are 32-bit
COUNT_MAX = 10_000  # hospitals, epochs and the like: far beyond any real run, inside every int


def _no_nul(path: Path) -> Path:
    if "\0" in str(path):
        raise ValueError("a path cannot hold a NUL character")
    return path


# A file system path: any text without a NUL character (which no file system accepts).
FsPath = Annotated[
    Path, AfterValidator(_no_nul), Field(json_schema_extra={"pattern": "^[^\\u0000]*$"})
]


class Section(BaseModel):
    """A config section: unknown keys are errors, so typos do not pass silently."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)
