"""The one directory writer: staged, locked, checksummed, atomically swapped in, recoverable.

Every artifact aprec writes (model checkpoints, sensitivity profiles, policies, run and
demo directories) is a directory written by ``write_directory``::

  with write_directory("runs/x", marker="config.json") as stage:
    (stage / "config.json").write_text("{}")

What it guarantees:

- **Refuse to replace.** An existing non-empty directory is replaced only with
  ``overwrite=True``, and never one that aprec did not write (no ``marker`` file and no
  manifest).
- **Lock.** The writer holds an ``fcntl.flock`` on ``.<name>.lock`` beside the directory for
  the whole write; a second writer of the same directory fails at once with
  ``DirectoryLockedError`` and replaces nothing. The kernel drops the lock when a process
  dies, so a killed writer never leaves it stale.
- **Checksums.** The staged files get a manifest, ``SHA256SUMS`` (the format of
  ``sha256sum``), and are fsynced before the swap; ``verify`` (called by every loader)
  recomputes it and names the first file that differs. A subdirectory with its own
  manifest (a profile inside a model checkpoint, a policy inside a run) is a separate
  artifact, verified by its own loader.
- **Atomic swap, recovered.** The old directory is renamed to ``.<name>.old-<tag>``, the
  staged one into place, the old one removed. A process killed between the two renames
  leaves only the ``.old`` directory: the next ``write_directory`` or ``verify`` of that
  path puts it back, and removes leftover ``.tmp-*`` staging directories, with a
  ``RecoveryWarning`` saying what it did.

Example:
  >>> import pathlib, tempfile
  >>> root = pathlib.Path(tempfile.mkdtemp())
  >>> with write_directory(root / "art", marker="a.txt") as stage:
  ...   _ = (stage / "a.txt").write_text("hello")
  >>> sorted(p.name for p in (root / "art").iterdir())
  ['SHA256SUMS', 'a.txt']
  >>> verify(root / "art") == root / "art"
  True
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import pathlib
import shutil
import uuid
import warnings
from collections.abc import Callable, Iterator

MANIFEST = "SHA256SUMS"
_CHUNK_BYTES = 1 << 20


class CheckpointError(ValueError):
  """An artifact exists but cannot be read, fails its checksums, or does not fit its use."""


class ArtifactExistsError(FileExistsError, ValueError):
  """The target directory already holds files and ``overwrite`` was not given (or it is a
  file, or holds something aprec did not write)."""


class DirectoryLockedError(RuntimeError):
  """Another process is writing the same directory right now."""


class RecoveryWarning(UserWarning):
  """An interrupted write was found and repaired (old directory restored, leftovers removed)."""


def _sibling(directory: pathlib.Path, kind: str, tag: str = "") -> pathlib.Path:
  return directory.parent / f".{directory.name}.{kind}{tag}"


@contextlib.contextmanager
def lock(directory: str | os.PathLike[str], *, blocking: bool = False) -> Iterator[bool]:
  """Holds the write lock of ``directory`` (``.<name>.lock`` beside it) for the block.

  Yields True once the lock is held. Unless ``blocking``, a lock held by another process
  raises ``DirectoryLockedError`` at once.
  """
  directory = pathlib.Path(directory)
  path = _sibling(directory, "lock")
  while True:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
    except OSError as e:
      os.close(fd)
      if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
        raise DirectoryLockedError(
            f"{directory} is being written by another process (it holds the lock {path}); "
            "wait for it to finish or choose another output directory"
        ) from None
      raise
    try:
      same = os.stat(path).st_ino == os.fstat(fd).st_ino
    except FileNotFoundError:
      same = False
    if same:  # else the holder unlinked it between our open and flock: take the new file
      break
    os.close(fd)
  try:
    yield True
  finally:
    with contextlib.suppress(FileNotFoundError):
      os.unlink(path)  # while still holding it, so no one can lock the unlinked inode
    os.close(fd)


@contextlib.contextmanager
def _lock_if_free(directory: pathlib.Path) -> Iterator[bool]:
  """Yields True holding the lock, or False if a writer holds it (or it cannot be taken)."""
  with contextlib.ExitStack() as stack:
    try:
      stack.enter_context(lock(directory))
    except (DirectoryLockedError, OSError):  # OSError: e.g. a read-only checkout
      yield False
      return
    yield True


def recover(directory: pathlib.Path) -> list[str]:
  """Repairs what an interrupted write of ``directory`` left (call with its lock held).

  Restores ``.old-*`` when the directory itself is missing, removes ``.old-*`` beside a
  complete directory and every ``.tmp-*`` staging directory. Returns what it did.
  """
  done = []
  backups = sorted(
      directory.parent.glob(f".{directory.name}.old-*"), key=lambda p: p.stat().st_mtime
  )
  if backups and not directory.exists():
    os.rename(backups[-1], directory)
    done.append(
        f"restored {directory} from {backups[-1].name} (a replace was interrupted "
        "between its two renames)"
    )
    backups = backups[:-1]
  for path in backups + sorted(directory.parent.glob(f".{directory.name}.tmp-*")):
    shutil.rmtree(path, ignore_errors=True)
    done.append(f"removed {path.name} left by an interrupted write")
  for line in done:
    warnings.warn(line, RecoveryWarning, stacklevel=3)
  return done


def _sha256(path: pathlib.Path) -> str:
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    while chunk := f.read(_CHUNK_BYTES):
      digest.update(chunk)
  return digest.hexdigest()


def _transient(name: str) -> bool:
  """A lock file or staging/backup directory of a writer at work beside its target."""
  return name.startswith(".") and (name.endswith(".lock") or ".tmp-" in name or ".old-" in name)


def _files(directory: pathlib.Path) -> list[pathlib.Path]:
  """Every file below ``directory`` that its manifest covers: not the manifest, not a
  nested artifact (a subdirectory with its own manifest, verified by its own loader), not
  a nested writer's lock or staging directory."""
  found = []
  for root, dirs, names in os.walk(directory):
    root = pathlib.Path(root)
    dirs[:] = sorted(d for d in dirs if not _transient(d) and not (root / d / MANIFEST).is_file())
    found += [
        root / n for n in names if not _transient(n) and not (root == directory and n == MANIFEST)
    ]
  return sorted(found)


def write_manifest(directory: str | os.PathLike[str]) -> pathlib.Path:
  """Writes ``SHA256SUMS`` (SHA-256 of every file below ``directory``); returns its path.

  ``write_directory`` calls it on the staged directory; call it yourself only to sign an
  artifact you have checked by other means (e.g. one written by an older aprec).
  """
  directory = pathlib.Path(directory)
  lines = [f"{_sha256(p)}  {p.relative_to(directory).as_posix()}\n" for p in _files(directory)]
  path = directory / MANIFEST
  path.write_text("".join(lines))
  return path


def verify(directory: str | os.PathLike[str]) -> pathlib.Path:
  """Recovers an interrupted write of ``directory``, then checks every file's SHA-256.

  Returns the directory. Raises ``FileNotFoundError`` if there is none and
  ``CheckpointError`` naming the first file that is missing, altered, or unlisted in
  the manifest, or the manifest if it is absent or unreadable.
  """
  directory = pathlib.Path(directory).expanduser().resolve()
  if any(directory.parent.glob(f".{directory.name}.old-*")) or any(
      directory.parent.glob(f".{directory.name}.tmp-*")
  ):
    with _lock_if_free(directory) as held:
      if held:  # else a writer is at work and its staging directory is not a leftover
        recover(directory)
  if not directory.is_dir():
    raise FileNotFoundError(f"no directory {directory}")
  manifest = directory / MANIFEST
  try:
    text = manifest.read_text()
  except FileNotFoundError:
    raise CheckpointError(
        f"{directory} has no {MANIFEST} (checksums), so it cannot be verified; it was written "
        "by an older aprec or by hand. Rewrite it, or sign it after checking it with "
        "aprec.checkpoint.write_manifest"
    ) from None
  except (OSError, UnicodeDecodeError) as e:
    raise CheckpointError(f"{manifest} is unreadable: {e}") from None
  listed = {}
  for n, line in enumerate(text.splitlines(), 1):
    digest, sep, name = line.partition("  ")
    if not sep or len(digest) != 64 or not name:
      raise CheckpointError(f"{manifest} line {n} is not '<sha256>  <file>': {line[:80]!r}")
    listed[name] = digest
  for name, digest in listed.items():
    path = directory / name
    if not path.is_file():
      raise CheckpointError(
          f"{path} is missing (listed in {manifest}); the artifact is " "incomplete"
      )
    if _sha256(path) != digest:
      raise CheckpointError(
          f"{path} fails its SHA-256 checksum ({MANIFEST}): the file was "
          "altered or damaged after it was written"
      )
  for path in _files(directory):
    if path.relative_to(directory).as_posix() not in listed:
      raise CheckpointError(
          f"{path} is not listed in {manifest}: the file was added after "
          "the artifact was written"
      )
  return directory


def replace_file(
    path: str | os.PathLike[str], write: Callable[[pathlib.Path], object]
) -> pathlib.Path:
  """Writes one file atomically: ``write(temporary)`` beside ``path``, then a rename.

  A reader sees the old file or the complete new one, never a partial one; a failed or
  killed ``write`` leaves the old file as it was (and no temporary, unless killed). The
  temporary keeps ``path``'s suffix, so writers that infer the format from it still work.

  Example:
    >>> import pathlib, tempfile
    >>> target = pathlib.Path(tempfile.mkdtemp()) / "trace.txt"
    >>> replace_file(target, lambda tmp: tmp.write_text("new")).read_text()
    'new'
  """
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.with_name(f".{path.stem}.tmp-{uuid.uuid4().hex[:8]}{path.suffix}")
  try:
    write(tmp)
    fd = os.open(tmp, os.O_RDONLY)
    try:
      os.fsync(fd)
    finally:
      os.close(fd)
    os.replace(tmp, path)
  finally:
    tmp.unlink(missing_ok=True)
  return path


def _fsync_tree(directory: pathlib.Path) -> None:
  for path in [*_files(directory), directory / MANIFEST]:
    fd = os.open(path, os.O_RDONLY)
    try:
      os.fsync(fd)
    finally:
      os.close(fd)
  for path in {directory, *(p.parent for p in _files(directory))}:
    _fsync_dir(path)


def _fsync_dir(path: pathlib.Path) -> None:
  fd = os.open(path, os.O_RDONLY)
  try:
    os.fsync(fd)
  finally:
    os.close(fd)


def check_target(
    directory: str | os.PathLike[str],
    *,
    overwrite: bool = False,
    marker: str | None = None,
    what: str = "directory written by aprec",
    flag: str = "--overwrite (overwrite=True)",
) -> pathlib.Path:
  """Raises unless ``directory`` may be written (see ``write_directory``); returns it absolute.

  Cheap: call it before long work so a bad ``--out`` fails first.
  """
  directory = pathlib.Path(directory).expanduser().resolve()
  if directory.exists() and not directory.is_dir():
    raise ArtifactExistsError(
        f"{directory} is a file, not a directory; give a directory " f"path for the {what}"
    )
  if directory.is_dir() and any(directory.iterdir()):
    ours = (directory / MANIFEST).is_file() or (
        marker is not None and (directory / marker).exists()
    )
    if not ours:
      raise ArtifactExistsError(
          f"{directory} is a non-empty directory that is not a {what} (no "
          f"{marker or MANIFEST}); refusing to replace it. Choose an empty or new directory"
      )
    if not overwrite:
      raise ArtifactExistsError(
          f"{directory} already holds a {what}; pass {flag} to "
          "replace it, or choose another directory"
      )
  for parent in directory.parents:
    if parent.exists():
      if not parent.is_dir():
        raise ArtifactExistsError(f"{parent} is a file, so {directory} cannot be created")
      break
  return directory


@contextlib.contextmanager
def write_directory(
    directory: str | os.PathLike[str],
    *,
    overwrite: bool = False,
    marker: str | None = None,
    what: str = "directory written by aprec",
    flag: str = "--overwrite (overwrite=True)",
) -> Iterator[pathlib.Path]:
  """Yields an empty staging directory that becomes ``directory`` when the block succeeds.

  Args:
    directory: the target; its parents are created.
    overwrite: replace a non-empty ``directory`` (only once the new one is complete).
    marker: a file that marks a directory of this kind (e.g. ``profile.json``); a
      non-empty directory with neither it nor a manifest is never replaced.
    what: the artifact's name in error messages; ``flag`` how to ask for ``overwrite``.

  Raises:
    ArtifactExistsError: ``directory`` is a file, holds something else, or holds an
      artifact and ``overwrite`` is False (checked before and after taking the lock).
    DirectoryLockedError: another process is writing ``directory``.
  """
  kw = dict(overwrite=overwrite, marker=marker, what=what, flag=flag)
  directory = check_target(directory, **kw)
  directory.parent.mkdir(parents=True, exist_ok=True)
  with lock(directory):
    recover(directory)
    check_target(directory, **kw)
    tag = uuid.uuid4().hex[:8]
    staging = _sibling(directory, "tmp-", tag)
    backup = _sibling(directory, "old-", tag)
    staging.mkdir()
    try:
      yield staging
      write_manifest(staging)
      _fsync_tree(staging)
    except BaseException:
      shutil.rmtree(staging, ignore_errors=True)
      raise
    had_old = directory.exists()
    if had_old:
      os.rename(directory, backup)
    try:
      os.rename(staging, directory)
    except BaseException:
      if had_old:
        os.rename(backup, directory)
      shutil.rmtree(staging, ignore_errors=True)
      raise
    _fsync_dir(directory.parent)
    if had_old:
      shutil.rmtree(backup, ignore_errors=True)
