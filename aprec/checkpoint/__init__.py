"""Artifacts on disk: the one directory writer (staged, locked, checksummed, recoverable)
and model checkpoints (orbax parameters plus ``metadata.json``) written through it."""

from aprec.checkpoint._directory import MANIFEST as MANIFEST
from aprec.checkpoint._directory import ArtifactExistsError as ArtifactExistsError
from aprec.checkpoint._directory import CheckpointError as CheckpointError
from aprec.checkpoint._directory import DirectoryLockedError as DirectoryLockedError
from aprec.checkpoint._directory import RecoveryWarning as RecoveryWarning
from aprec.checkpoint._directory import check_target as check_target
from aprec.checkpoint._directory import lock as lock
from aprec.checkpoint._directory import recover as recover
from aprec.checkpoint._directory import replace_file as replace_file
from aprec.checkpoint._directory import verify as verify
from aprec.checkpoint._directory import write_directory as write_directory
from aprec.checkpoint._directory import write_manifest as write_manifest
from aprec.checkpoint._params import METADATA_FILE as METADATA_FILE
from aprec.checkpoint._params import PARAMS_DIR as PARAMS_DIR
from aprec.checkpoint._params import load_metadata as load_metadata
from aprec.checkpoint._params import params_hash as params_hash
from aprec.checkpoint._params import restore as restore
from aprec.checkpoint._params import save as save
from aprec.checkpoint._params import short_error as short_error
