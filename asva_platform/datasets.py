"""Where a dataset lives, as the data layer opens it (shared by preprocessing, training and evaluation)."""

from __future__ import annotations

import os
from typing import Any

from asva_model.data.config import DatasetConfig
from asva_platform.errors import UserError
from asva_platform.storage import Storage, is_s3, parse_uri


def dataset_access(dataset_cfg: DatasetConfig, storage: Storage) -> tuple[str, Any]:
    """``(root, filesystem)`` the data layer opens the dataset with: a local directory and None, or the
    ``bucket/prefix`` path inside a pyarrow S3 filesystem."""
    root = dataset_cfg.root
    if is_s3(root):
        fs, path = storage.filesystem(root)
        return path, fs
    local = parse_uri(root).key
    if not os.path.isdir(local):
        raise UserError(f"dataset.root {root}: directory not found")
    return local, None
