"""Sharing saved folders on the Hub: a backbone folder, or a patch folder that names its backbone.

One backbone, many patches (Section 3.3): a patch repository holds only `patch_config.json`, `patch.safetensors`
and its card, and points at its backbone's repository with `base_model` / `base_model_relation: adapter`. A folder
written by training names the folder and, for a patch, the backbone as it was given (often a local path); pushing
names the Hub repositories instead, in a staged copy, and leaves the weights and their checksum as written.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path

from huggingface_hub import HfApi, ModelCard

from hub_cards.cards import retarget_card

from .modeling_peterrec import PeterRecPreTrainedModel
from .patch_config import PATCH_CONFIG_NAME
from .saving import read_patch, save_patch

CARD_NAME = "README.md"
_HUB_ID = re.compile(r"^[\w.-]+/[\w.-]+$")


def is_hub_id(name: str | None) -> bool:
    """Whether `name` is a Hub repository id (`namespace/name`) rather than a local path."""
    return bool(name) and _HUB_ID.match(name) is not None and not Path(name).exists()


def _backbone_id(folder: Path, base_model_id: str | None) -> str:
    """The backbone's Hub id for a patch folder: `base_model_id`, else the one recorded when it is a Hub id."""
    spec, _ = read_patch(folder)  # checks the weights against their checksum before anything is uploaded
    backbone = base_model_id or spec.backbone_repo_id
    if not is_hub_id(backbone):
        raise ValueError(
            f"{folder} was trained on the backbone {spec.backbone_repo_id!r}, which is not a Hub repo id "
            "('namespace/name'); push the backbone folder first and pass its repo id with --base_model_id "
            "(base_model_id=...)."
        )
    return backbone


def _stage(folder: Path, staging: Path, repo_id: str, base_model_id: str | None) -> Path:
    """A copy of `folder` whose card (and, for a patch, `patch_config.json`) names the Hub repositories."""
    staged = staging / folder.name
    shutil.copytree(folder, staged)
    if not (staged / CARD_NAME).is_file():
        raise FileNotFoundError(
            f"{folder} has no {CARD_NAME}; push folders as save_patch or pretraining wrote them, with their card."
        )
    if base_model_id is not None:
        # Edit the raw record so that the format version and any key this version does not know stay as written.
        record = json.loads((staged / PATCH_CONFIG_NAME).read_text())
        record["backbone_repo_id"] = base_model_id
        (staged / PATCH_CONFIG_NAME).write_text(json.dumps(record, indent=2) + "\n")
    retarget_card(ModelCard.load(staged / CARD_NAME), repo_id, base_model_id).save(staged / CARD_NAME)
    return staged


def push_folder_to_hub(
    folder: str | os.PathLike,
    repo_id: str,
    base_model_id: str | None = None,
    revision: str | None = None,
    private: bool = False,
    token: str | None = None,
    commit_message: str | None = None,
) -> str:
    """Uploads a backbone folder or a patch folder, as written, with its card; returns the commit's sha.

    This is what `peterrec push FOLDER REPO_ID [--base_model_id ID] [--revision BRANCH] [--private]` runs, and what
    `peterrec finetune --push_to_hub --hub_model_id REPO_ID` runs on the patch folder it saved (the patch alone,
    never the full task model; pass the backbone's repo id as `base_model_id` when the backbone was loaded from a
    local folder).

    - A backbone folder (`config.json`, weights, tokenizer files, card) goes up as is; only the card's title and
      loading snippets name `repo_id` instead of the folder.
    - A patch folder (`patch_config.json`, `patch.safetensors`, card) must name its backbone by Hub id: the one
      recorded at training time when it is one, else `base_model_id`, which then goes into the uploaded
      `patch_config.json` (`backbone_repo_id`) and card (`base_model`). The card's metrics and dataset are those of
      the folder. The weights and their checksum are uploaded unchanged, after being checked.

    Args:
        folder: the folder written by pretraining (`save_backbone`) or fine-tuning (`save_patch`).
        repo_id: the Hub repository to push to (created if missing).
        base_model_id: the backbone's Hub repo id, for a patch folder (required when the recorded backbone is a
            local path; overrides the recorded one otherwise).
        revision: branch to commit to (created from the default branch if missing); the default branch when None.
        private: create the repository as private.
        token: Hub token; the logged-in one when None.
        commit_message: defaults to "Upload PeterRec backbone" / "Upload PeterRec patch".

    Raises:
        FileNotFoundError: `folder` is neither a backbone folder nor a patch folder, or has no card.
        ValueError: a patch folder's backbone has no Hub repo id, or its weights fail their checks (`read_patch`).
    """
    folder = Path(folder)
    is_patch = (folder / PATCH_CONFIG_NAME).is_file()
    if not is_patch and not (folder / "config.json").is_file():
        raise FileNotFoundError(
            f"{folder} is neither a patch folder ({PATCH_CONFIG_NAME}) nor a backbone folder (config.json)."
        )
    if is_patch:
        base_model_id = _backbone_id(folder, base_model_id)
    elif base_model_id is not None:
        raise ValueError(f"{folder} is a backbone folder; --base_model_id only applies to patch folders.")
    kind = "patch" if is_patch else "backbone"
    api = HfApi(token=token)
    with tempfile.TemporaryDirectory() as staging:
        staged = _stage(folder, Path(staging), repo_id, base_model_id)
        api.create_repo(repo_id, private=private, exist_ok=True)
        if revision is not None:
            api.create_branch(repo_id, branch=revision, exist_ok=True)
        commit = api.upload_folder(
            repo_id=repo_id,
            folder_path=staged,
            revision=revision,
            commit_message=commit_message or f"Upload PeterRec {kind}",
        )
    return commit.oid


def push_patch_to_hub(
    model: PeterRecPreTrainedModel,
    repo_id: str,
    private: bool = False,
    commit_message: str = "Upload PeterRec patch",
    token: str | None = None,
    **save_kwargs,
) -> str:
    """Saves the patch of a task model (see `save_patch`, which takes the metrics and dataset) and pushes it with
    `push_folder_to_hub`; returns the commit's sha. To share a patch folder already saved, push the folder."""
    backbone_repo_id = save_kwargs.get("backbone_repo_id") or model.patch_config.backbone_repo_id
    if not is_hub_id(backbone_repo_id):
        raise ValueError(
            f"The patch card must name its backbone's Hub repo id ('namespace/name'), got "
            f"{backbone_repo_id!r}; push the backbone first and pass backbone_repo_id=..."
        )
    with tempfile.TemporaryDirectory() as staging:
        folder = save_patch(model, Path(staging) / "patch", repo_id=repo_id, **save_kwargs)
        return push_folder_to_hub(
            folder, repo_id, backbone_repo_id, private=private, token=token, commit_message=commit_message
        )


__all__ = ["is_hub_id", "push_folder_to_hub", "push_patch_to_hub"]
