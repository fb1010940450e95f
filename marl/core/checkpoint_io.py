"""Low-level checkpoint I/O: sealed directories, checksums, safe imports.

A checkpoint is a directory of JSON and safetensors files and nothing else.
Three kinds of directory carry a ``metadata.json`` of their own and are
called *nodes*: an algorithm checkpoint, a ``MultiRLModule`` checkpoint
(``.../rl_module/``) and a single module (``.../rl_module/<module_id>/``).
Each node's ``metadata.json`` seals its own files, so a node is verifiable
(and loadable) alone::

    {
      "kind": "algorithm" | "multi_rl_module" | "rl_module",
      "format_version": 2,
      ...                                   # what the kind needs (class path, spaces, ...)
      "files": {"<relative/posix/path>": "<sha256 hex>", ...},
      "children": ["<relative dir of a nested node>", ...],
      "metadata_sha256": "<sha256 hex of this object without this key>"
    }

``files`` lists every file below the node except the node's own
``metadata.json`` and the files inside nested nodes; a nested node's
``metadata.json`` is listed, so verifying from the top covers the whole tree
(a hash tree: the root seals its children's metadata, which seal their
files). ``metadata_sha256`` is the sha256 of the object's canonical JSON
(``sort_keys``, no spaces) without that key, so a flipped bit in a metadata
file is caught too. Checksums are integrity checks, not signatures: anyone
who can write the files can rewrite them.

Writes go through :func:`atomic_directory`: the content is written into a
hidden sibling and swapped into place in one step (``renameat2`` with
``RENAME_EXCHANGE`` on Linux; elsewhere two renames, and a load that finds the
path missing uses the complete copy a killed save left, see
:func:`locate_checkpoint`). Saving onto a path that holds something other
than a marl checkpoint is refused.

Nothing here unpickles or calls a name read from a file: :func:`import_object`
only imports module-level classes and functions, and refuses the standard
library.
"""
from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import hashlib
import importlib
import inspect
import json
import logging
import os
import re
import shutil
import sys
import uuid
from pathlib import Path, PurePosixPath
from typing import Any, Dict, Iterator, List, Optional, Set, Tuple

import torch

logger = logging.getLogger(__name__)

FORMAT_VERSION = 2
METADATA_FILE = "metadata.json"
MODULE_STATE_FILE = "module_state.safetensors"
#: The ``kind`` of every directory with a ``metadata.json`` that marl writes.
KINDS = ("algorithm", "multi_rl_module", "rl_module")
#: Files earlier marl versions wrote; never opened, and not "foreign" when overwriting.
LEGACY_SUFFIXES = (".pkl",)


class CheckpointError(RuntimeError):
    """A checkpoint file is missing, corrupt, refused or does not fit the object."""


# ------------------------------------------------------------------ plain files
def write_json(path: Path, data: Any) -> None:
    with open(path, "w") as f:
        json.dump(data, f, indent=2, sort_keys=False)
        f.write("\n")


def read_json(path: Path) -> Any:
    """Read a JSON file, naming it in every error."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint file {str(path)!r} does not exist")
    try:
        with open(path, "rb") as f:
            return json.loads(f.read().decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, ValueError) as e:
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


# -------------------------------------------------------------------- checksums
def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _metadata_digest(meta: Dict[str, Any]) -> str:
    body = {k: v for k, v in meta.items() if k != "metadata_sha256"}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def write_metadata(directory: Path, meta: Dict[str, Any]) -> None:
    """Seal ``directory`` as a checkpoint node: write its ``metadata.json``.

    Call it last, after every other file of the node (and every nested node)
    is written; the checksums are computed from what is on disk now.
    """
    directory = Path(directory)
    files: Dict[str, str] = {}
    children: List[str] = []
    for dirpath, dirnames, filenames in os.walk(directory):
        dirnames.sort()
        here = Path(dirpath)
        if here != directory and (here / METADATA_FILE).is_file():
            children.append(here.relative_to(directory).as_posix())
            files[(here / METADATA_FILE).relative_to(directory).as_posix()] = file_sha256(here / METADATA_FILE)
            dirnames[:] = []  # a nested node seals its own files
            continue
        for name in sorted(filenames):
            if here == directory and name == METADATA_FILE:
                continue
            files[(here / name).relative_to(directory).as_posix()] = file_sha256(here / name)
    sealed = {k: v for k, v in meta.items() if k not in ("files", "children", "metadata_sha256")}
    sealed.update(format_version=FORMAT_VERSION, files=files, children=children)
    sealed["metadata_sha256"] = _metadata_digest(sealed)
    write_json(directory / METADATA_FILE, sealed)


def _safe_relative(rel: Any, source: Path) -> PurePosixPath:
    """A relative path from a metadata file that stays inside its directory."""
    if not isinstance(rel, str) or not rel:
        raise CheckpointError(f"checkpoint file {str(source)!r} lists an invalid path {rel!r}")
    pure = PurePosixPath(rel)
    if pure.is_absolute() or "\\" in rel or any(part in ("", ".", "..") for part in rel.split("/")):
        raise CheckpointError(
            f"checkpoint file {str(source)!r} lists the path {rel!r}, which leaves the checkpoint directory"
        )
    return pure


def read_metadata(directory: Path) -> Dict[str, Any]:
    """Read and check a node's ``metadata.json`` (kind, format, its own digest).

    Does not hash the files it lists; :func:`verify_checkpoint` does.
    """
    path = Path(directory) / METADATA_FILE
    meta = read_json(path)
    if not isinstance(meta, dict):
        raise CheckpointError(f"checkpoint file {str(path)!r} is not a JSON object")
    kind = meta.get("kind")
    if kind not in KINDS:
        raise CheckpointError(
            f"{str(path)!r} is not a marl checkpoint (kind={kind!r}; expected one of {list(KINDS)})"
        )
    version = meta.get("format_version")
    if version != FORMAT_VERSION:
        hint = (
            "; it was written by an older marl without checksums and is not loaded unverified: "
            "load it with that version and save it again"
            if isinstance(version, int) and version < FORMAT_VERSION
            else ""
        )
        raise CheckpointError(
            f"{str(path)!r} has format_version {version!r}, this marl reads {FORMAT_VERSION}{hint}"
        )
    if meta.get("metadata_sha256") != _metadata_digest(meta):
        raise CheckpointError(
            f"checkpoint file {str(path)!r} does not match its own checksum (metadata_sha256): "
            "it is corrupt or was modified"
        )
    if not isinstance(meta.get("files"), dict) or not isinstance(meta.get("children"), list):
        raise CheckpointError(f"checkpoint file {str(path)!r} has no 'files'/'children' lists")
    return meta


@dataclasses.dataclass
class VerifiedCheckpoint:
    """A node whose files (and nested nodes' files) matched their checksums."""

    root: Path
    meta: Dict[str, Any]
    files: Set[Path]

    def covers(self, path: Path) -> bool:
        return Path(path).absolute() in self.files

    def require(self, path: Path) -> Path:
        """``path`` if the verification covered it; else a ``CheckpointError`` naming it."""
        path = Path(path)
        if not self.covers(path):
            if not path.exists():
                raise CheckpointError(f"checkpoint file {str(path)!r} does not exist")
            raise CheckpointError(
                f"checkpoint file {str(path)!r} is not listed in the checksums of "
                f"{str(self.root / METADATA_FILE)!r}; it was not written with this checkpoint"
            )
        return path


def verify_checkpoint(directory: Path, *, recursive: bool = True) -> VerifiedCheckpoint:
    """Check every file a node lists (and, if ``recursive``, its nested nodes).

    Raises ``CheckpointError`` naming the first file that is missing or whose
    sha256 differs from its metadata.
    """
    directory = Path(directory).absolute()
    meta = read_metadata(directory)
    source = directory / METADATA_FILE
    covered: Set[Path] = {source}
    for rel, expected in meta["files"].items():
        path = directory / _safe_relative(rel, source)
        if not path.is_file():
            raise CheckpointError(
                f"checkpoint file {str(path)!r} is missing (listed in {str(source)!r})"
            )
        if file_sha256(path) != expected:
            raise CheckpointError(
                f"checkpoint file {str(path)!r} does not match its sha256 in {str(source)!r}: "
                "it is corrupt, truncated or was modified"
            )
        covered.add(path)
    for rel in meta["children"]:
        child = directory / _safe_relative(rel, source)
        if (child / METADATA_FILE) not in covered:
            raise CheckpointError(
                f"{str(source)!r} names the nested checkpoint {rel!r} without a checksum of its metadata"
            )
        if recursive:
            covered |= verify_checkpoint(child).files
    return VerifiedCheckpoint(directory, meta, covered)


def _listed_files(directory: Path) -> Set[Path]:
    """Every file a node and its nested nodes list (metadata checked, files not hashed)."""
    directory = Path(directory).absolute()
    meta = read_metadata(directory)
    source = directory / METADATA_FILE
    listed = {source} | {directory / _safe_relative(rel, source) for rel in meta["files"]}
    for rel in meta["children"]:
        listed |= _listed_files(directory / _safe_relative(rel, source))
    return listed


# ------------------------------------------------------------- atomic directories
_LEFTOVER = re.compile(r"^\.(?P<name>.+)\.(?P<what>writing|old)-(?P<token>[0-9a-zA-Z-]+)$")


def _leftovers(target: Path) -> List[Tuple[Path, str, Optional[int]]]:
    """``(path, 'writing'|'old', pid or None)`` of saves of ``target`` that did not finish."""
    found = []
    if not target.parent.is_dir():
        return found
    for entry in target.parent.iterdir():
        match = _LEFTOVER.match(entry.name)
        if match is None or match["name"] != target.name:
            continue
        head = match["token"].split("-", 1)[0]
        pid = int(head) if head.isdigit() and "-" in match["token"] else None
        found.append((entry, match["what"], pid))
    return found


def _pid_alive(pid: Optional[int]) -> bool:
    if pid is None or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _is_ours(target: Path) -> Tuple[bool, str]:
    """Whether ``target`` may be replaced by a save, and if not, why."""
    if not target.exists() and not target.is_symlink():
        return True, ""
    if target.is_symlink() or not target.is_dir():
        return False, "it is not a directory"
    entries = list(target.iterdir())
    if not entries:
        return True, ""
    meta_path = target / METADATA_FILE
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError):
        return False, "it is not a marl checkpoint (no readable metadata.json)"
    if not isinstance(meta, dict) or meta.get("kind") not in KINDS:
        return False, f"it is not a marl checkpoint (metadata.json has kind={meta.get('kind') if isinstance(meta, dict) else None!r})"
    try:
        listed = _listed_files(target)
    except CheckpointError:
        return True, ""  # an older or damaged checkpoint of ours: replacing it is what the user asked
    foreign = [
        str(p.relative_to(target)) for p in sorted(target.rglob("*"))
        if p.is_file() and p.absolute() not in listed and not p.name.endswith(LEGACY_SUFFIXES)
    ]
    if foreign:
        return False, (
            f"it holds files that are not part of the checkpoint ({', '.join(foreign[:5])}"
            f"{', ...' if len(foreign) > 5 else ''})"
        )
    return True, ""


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one atomic step (Linux ``renameat2``); False if unsupported."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    renameat2.restype = ctypes.c_int
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (22, 38, 95):  # EINVAL, ENOSYS, EOPNOTSUPP: this filesystem cannot exchange
        return False
    raise OSError(err, f"cannot swap {str(a)!r} and {str(b)!r}: {os.strerror(err)}")


def clean_leftovers(target: Path, *, keep: Tuple[Path, ...] = ()) -> None:
    """Remove what killed saves of ``target`` left beside it (not those of live processes)."""
    for path, _, pid in _leftovers(Path(target).absolute()):
        if path in keep or _pid_alive(pid):
            continue
        shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a fresh sibling directory; on success it replaces ``path``.

    Readers see the old checkpoint or the complete new one, never a mix.
    ``path`` must be missing, an empty directory or a marl checkpoint;
    anything else raises ``CheckpointError`` naming it, and nothing is
    deleted. On error the partial directory is removed and the old
    checkpoint is untouched; leftovers of earlier killed saves of the same
    path are removed once the new checkpoint is in place.
    """
    target = Path(path).absolute()
    ours, why = _is_ours(target)
    if not ours:
        raise CheckpointError(
            f"refusing to save onto {str(target)!r}: {why}; nothing was changed. Choose another "
            "path, or move that directory away yourself"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    token = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
    staging = target.parent / f".{target.name}.writing-{token}"
    staging.mkdir()
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if target.is_dir() and _exchange(staging, target):
        shutil.rmtree(staging, ignore_errors=True)  # now holds the old checkpoint
    else:
        # No atomic swap here: between the two renames the path is missing, and
        # locate_checkpoint() finds the complete copy a kill would leave.
        backup = target.parent / f".{target.name}.old-{token}"
        if target.exists():
            os.replace(target, backup)
        os.replace(staging, target)
        shutil.rmtree(backup, ignore_errors=True)
    clean_leftovers(target)


def locate_checkpoint(path: str | os.PathLike) -> Path:
    """``path``, or the complete copy an interrupted save left beside it.

    A save killed between its two renames (systems without an atomic swap)
    leaves no directory at ``path`` but a complete hidden sibling
    (``.<name>.writing-*`` new, ``.<name>.old-*`` previous). This returns the
    newest such copy that verifies, with a warning naming it; the next save
    to ``path`` cleans the siblings up. Raises ``CheckpointError`` naming
    ``path`` when there is neither.
    """
    path = Path(path)
    if path.exists():
        return path
    candidates = []
    for leftover, what, _ in _leftovers(path.absolute()):
        try:
            verify_checkpoint(leftover)
        except CheckpointError:
            continue
        candidates.append((what == "writing", leftover.stat().st_mtime, leftover))
    if not candidates:
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist")
    survivor = max(candidates)[2]
    logger.warning(
        "checkpoint %r does not exist, but an interrupted save left a complete copy at %r; "
        "loading that (the next save to this path cleans it up)", str(path), str(survivor)
    )
    return survivor


# ---------------------------------------------------------------- safe imports
#: Top-level packages whose dataclasses a checkpoint may rebuild.
MARL_PACKAGES = ("marl", "envs", "learners")


def class_path(cls: Any) -> str:
    """``"package.module:QualName"`` of a class or function, for metadata files."""
    return f"{cls.__module__}:{cls.__qualname__}"


def _refused_module(module_name: str) -> Optional[str]:
    top = module_name.split(".", 1)[0]
    if module_name == "__main__":
        return "it was defined in a script run as __main__; import it from a module instead"
    if top in sys.stdlib_module_names or top in sys.builtin_module_names:
        return "checkpoints never name standard-library objects (they could run commands)"
    return None


def import_object(
    path: Any,
    *,
    source: Optional[Path] = None,
    key: Optional[str] = None,
    base: Optional[type | Tuple[type, ...]] = None,
) -> Any:
    """Import a module-level class or function written by :func:`class_path`.

    Only imports: nothing is called. Refused, with a ``CheckpointError``
    naming ``source`` and ``key``: anything that is not a class or function
    defined at module level of the module named (so no attribute walks into
    other modules), objects of the standard library or ``__main__``, and, with
    ``base``, classes that are not subclasses of it. Importing a module runs
    its import-time code; only load checkpoints whose import paths point at
    code you have installed.
    """
    where = "".join([f" ({key})" if key else "", f" in {str(source)!r}" if source else ""])
    if not isinstance(path, str) or path.count(":") != 1:
        raise CheckpointError(f"invalid import path {path!r}{where}: expected 'package.module:Name'")
    module_name, _, qualname = path.partition(":")
    if "<locals>" in qualname:
        raise CheckpointError(
            f"class {path!r}{where} was defined inside a function and cannot be "
            "imported again; define it at module level"
        )
    parts = qualname.split(".")
    if not module_name or not all(p.isidentifier() and not p.startswith("__") for p in parts) or not all(
        p.isidentifier() for p in module_name.split(".")
    ):
        raise CheckpointError(f"refused import path {path!r}{where}: not a module-level class or function")
    refused = _refused_module(module_name)
    if refused:
        raise CheckpointError(f"refused import path {path!r}{where}: {refused}")
    try:
        obj: Any = importlib.import_module(module_name)
        for part in parts:
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as e:
        raise CheckpointError(f"cannot import {path!r}{where}: {e}") from e
    # Classes may be nested in classes; functions must be top-level (no methods).
    kind_ok = inspect.isclass(obj) or (
        (inspect.isfunction(obj) or inspect.isbuiltin(obj)) and len(parts) == 1
    )
    if not kind_ok or getattr(obj, "__module__", None) != module_name or getattr(obj, "__qualname__", None) != qualname:
        raise CheckpointError(
            f"refused import path {path!r}{where}: it names a {type(obj).__name__}, not a class or "
            "function defined at module level of that module"
        )
    if base is not None and not (inspect.isclass(obj) and issubclass(obj, base)):
        bases = base if isinstance(base, tuple) else (base,)
        raise CheckpointError(
            f"refused import path {path!r}{where}: expected a subclass of "
            f"{' or '.join(b.__name__ for b in bases)}, got {obj!r}"
        )
    return obj


def import_class(path: Any, *, source: Optional[Path] = None, base: Optional[type] = None) -> type:
    """:func:`import_object` for a class (with ``base``, a subclass of it)."""
    obj = import_object(path, source=source, base=base)
    if not inspect.isclass(obj):
        raise CheckpointError(f"refused import path {path!r}: expected a class, got {obj!r}")
    return obj


# ----------------------------------------------------------- module model configs
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


def config_from_json(value: Any, *, source: Optional[Path] = None, key: str = "model_config") -> Any:
    """Inverse of :func:`config_to_json`; callables only through :func:`import_object`."""
    if isinstance(value, dict):
        if set(value) == {"__callable__"}:
            return import_object(value["__callable__"], source=source, key=key)
        return {k: config_from_json(v, source=source, key=f"{key}.{k}") for k, v in value.items()}
    if isinstance(value, list):
        return [config_from_json(v, source=source, key=f"{key}[{i}]") for i, v in enumerate(value)]
    return value
