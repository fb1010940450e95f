"""Low-level checkpoint I/O: atomic directories, JSON metadata, safetensors.

Every checkpoint in the library is a directory written through
:func:`atomic_directory`, so an interrupted save never leaves a half-written
directory where a good checkpoint used to be, and every read error names the
file that is wrong.
"""
from __future__ import annotations

import contextlib
import importlib
import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any, Dict, Iterator

import torch

FORMAT_VERSION = 1
METADATA_FILE = "metadata.json"
MODULE_STATE_FILE = "module_state.safetensors"


class CheckpointError(RuntimeError):
    """A checkpoint file is missing, corrupt or does not fit the object."""


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a fresh sibling directory; on success it replaces ``path``.

    The content is written beside the target and renamed into place only when
    the ``with`` block finishes, so readers see either the old checkpoint or
    the complete new one. On error the partial directory is removed and the
    old checkpoint is untouched.
    """
    target = Path(path).absolute()
    target.parent.mkdir(parents=True, exist_ok=True)
    token = uuid.uuid4().hex[:8]
    staging = target.parent / f".{target.name}.writing-{token}"
    staging.mkdir()
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    backup = target.parent / f".{target.name}.old-{token}"
    if target.exists():
        os.replace(target, backup)
    os.replace(staging, target)
    if backup.exists():
        shutil.rmtree(backup, ignore_errors=True)


def write_json(path: Path, data: Any) -> None:
    with open(path, "w") as f:
        json.dump(data, f, indent=2, sort_keys=False)
        f.write("\n")


def read_json(path: Path) -> Dict[str, Any]:
    """Read a metadata file, naming it in every error."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint file {str(path)!r} does not exist")
    try:
        with open(path) as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"checkpoint file {str(path)!r} is corrupt: {e}") from e


def save_tensors(path: Path, tensors: Dict[str, torch.Tensor]) -> None:
    """Write tensors as safetensors (contiguous, CPU, unshared copies)."""
    from safetensors.torch import save_file

    save_file({k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()}, str(path))


def load_tensors(path: Path) -> Dict[str, torch.Tensor]:
    """Read a safetensors file, naming it when it is missing or corrupt."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint file {str(path)!r} does not exist")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(
            f"checkpoint file {str(path)!r} is corrupt or truncated: {e}"
        ) from e


def class_path(cls: type) -> str:
    """``"package.module:QualName"`` of a class, for metadata files."""
    return f"{cls.__module__}:{cls.__qualname__}"


def import_class(path: str, *, source: Path | None = None) -> type:
    """Import a class written by :func:`class_path`.

    Classes defined inside functions or in a script run as ``__main__`` cannot
    be re-imported from another process; the error says so instead of failing
    with a bare ``AttributeError``.
    """
    where = f" (from {str(source)!r})" if source else ""
    module_name, _, qualname = path.partition(":")
    if "<locals>" in qualname:
        raise CheckpointError(
            f"class {path!r}{where} was defined inside a function and cannot be "
            "imported again; define it at module level"
        )
    try:
        obj: Any = importlib.import_module(module_name)
        for part in qualname.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as e:
        hint = (
            " (it was defined in a script run as __main__; import it from a module instead)"
            if module_name == "__main__"
            else ""
        )
        raise CheckpointError(f"cannot import class {path!r}{where}{hint}: {e}") from e
    return obj


def config_to_json(value: Any, *, key: str = "model_config") -> Any:
    """Make a model config JSON-safe; callables become import paths."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, dict):
        return {str(k): config_to_json(v, key=f"{key}.{k}") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [config_to_json(v, key=f"{key}[{i}]") for i, v in enumerate(value)]
    if callable(value) and hasattr(value, "__qualname__") and hasattr(value, "__module__"):
        return {"__callable__": f"{value.__module__}:{value.__qualname__}"}
    if hasattr(value, "item") and callable(value.item):  # numpy / torch scalars
        return value.item()
    raise TypeError(
        f"{key} = {value!r} cannot be stored in checkpoint metadata (JSON): use "
        "numbers, strings, lists, dicts or importable functions"
    )


def config_from_json(value: Any) -> Any:
    if isinstance(value, dict):
        if set(value) == {"__callable__"}:
            return import_class(value["__callable__"])
        return {k: config_from_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [config_from_json(v) for v in value]
    return value
