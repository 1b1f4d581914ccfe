"""Former home of transfer, patch files and serving; kept only until every caller imports the new modules."""

from ._io import atomic_folder
from .patch_config import PATCH_WEIGHTS_NAME
from .registry import METHODS
from .saving import load_patch, read_patch, save_patch
from .serving import MultiTaskPeterRec
from .sharing import push_patch_to_hub
from .transfer import backbone_fingerprint, prepare_for_transfer

PATCHED_METHODS = tuple(name for name, method in METHODS.items() if method.adds_patches)

__all__ = [
    "METHODS",
    "PATCHED_METHODS",
    "PATCH_WEIGHTS_NAME",
    "MultiTaskPeterRec",
    "atomic_folder",
    "backbone_fingerprint",
    "load_patch",
    "prepare_for_transfer",
    "push_patch_to_hub",
    "read_patch",
    "save_patch",
]
