"""The local Hub stand-in answers the real `huggingface_hub` client as the Hub would (SPEC §6)."""

from pathlib import Path

import pytest
import torch
from huggingface_hub import (
    HfApi,
    ModelCard,
    create_branch,
    create_repo,
    hf_hub_download,
    list_repo_files,
    model_info,
    snapshot_download,
    upload_file,
    upload_folder,
)
from huggingface_hub.errors import EntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError
from safetensors.torch import save_file

from tests.hub_server import git_blob_oid

README = "---\nlibrary_name: peterrec\ntags:\n- peterrec\n---\n\n# A test card\n"


@pytest.fixture
def uploaded(local_hub, tmp_path: Path) -> tuple[str, Path, str]:
    """A repo holding a small safetensors file and a README; returns (repo id, the uploaded folder, commit sha)."""
    folder = tmp_path / "upload"
    (folder / "sub").mkdir(parents=True)
    save_file(
        {"weight": torch.arange(12, dtype=torch.float32).reshape(3, 4)}, str(folder / "model.safetensors")
    )
    (folder / "README.md").write_text(README)
    (folder / "sub" / "notes.txt").write_text("nested file\n")
    repo_id = create_repo("tester/tiny").repo_id
    commit = upload_folder(repo_id=repo_id, folder_path=folder, commit_message="add files")
    return repo_id, folder, commit.oid


def test_create_repo_returns_url_on_local_endpoint(local_hub):
    url = create_repo("tester/empty")
    assert url.repo_id == "tester/empty"
    assert url.startswith(local_hub.endpoint)
    assert list_repo_files("tester/empty") == [".gitattributes"]


def test_create_repo_without_namespace_uses_token_user(local_hub):
    assert create_repo("alone").repo_id == f"{local_hub.user}/alone"


def test_create_existing_repo_conflicts_unless_exist_ok(local_hub):
    create_repo("tester/twice")
    create_repo("tester/twice", exist_ok=True)
    with pytest.raises(Exception, match="409"):
        create_repo("tester/twice")


def test_upload_folder_downloads_back_byte_identical(uploaded):
    repo_id, folder, _ = uploaded
    for name in ("model.safetensors", "README.md", "sub/notes.txt"):
        path = hf_hub_download(repo_id, name)
        assert Path(path).read_bytes() == (folder / name).read_bytes()


def test_download_by_commit_sha_returns_that_snapshot(uploaded):
    repo_id, folder, sha = uploaded
    upload_file(path_or_fileobj=b"changed\n", path_in_repo="sub/notes.txt", repo_id=repo_id)
    assert Path(hf_hub_download(repo_id, "sub/notes.txt")).read_bytes() == b"changed\n"
    old = hf_hub_download(repo_id, "sub/notes.txt", revision=sha)
    assert Path(old).read_bytes() == b"nested file\n"
    assert Path(old).parent.parent.name == sha
    assert Path(hf_hub_download(repo_id, "README.md", revision=sha[:10])).read_text() == README


def test_snapshot_download_fetches_every_file(uploaded):
    repo_id, folder, sha = uploaded
    snapshot = Path(snapshot_download(repo_id))
    assert snapshot.name == sha
    files = sorted(str(p.relative_to(snapshot)) for p in snapshot.rglob("*") if p.is_file())
    assert files == [".gitattributes", "README.md", "model.safetensors", "sub/notes.txt"]
    assert (snapshot / "model.safetensors").read_bytes() == (folder / "model.safetensors").read_bytes()


def test_model_info_lists_files_sha_and_card_data(uploaded):
    repo_id, folder, sha = uploaded
    info = model_info(repo_id)
    assert info.sha == sha
    assert info.library_name == "peterrec"
    assert info.tags == ["peterrec"]
    siblings = {s.rfilename: s for s in info.siblings}
    assert sorted(siblings) == [".gitattributes", "README.md", "model.safetensors", "sub/notes.txt"]
    weights = (folder / "model.safetensors").read_bytes()
    assert siblings["model.safetensors"].size == len(weights)
    assert siblings["model.safetensors"].blob_id == git_blob_oid(weights)
    assert model_info(repo_id, revision=sha).sha == sha


def test_list_repo_files_and_tree(uploaded):
    repo_id, _, _ = uploaded
    assert list_repo_files(repo_id) == [".gitattributes", "README.md", "model.safetensors", "sub/notes.txt"]
    top = {entry.path for entry in HfApi().list_repo_tree(repo_id)}
    assert top == {".gitattributes", "README.md", "model.safetensors", "sub"}


def test_branch_keeps_its_own_history(uploaded):
    repo_id, _, sha = uploaded
    create_branch(repo_id, branch="experiment")
    upload_file(
        path_or_fileobj=b"only here\n", path_in_repo="extra.txt", repo_id=repo_id, revision="experiment"
    )
    assert "extra.txt" in list_repo_files(repo_id, revision="experiment")
    assert "extra.txt" not in list_repo_files(repo_id)
    assert model_info(repo_id).sha == sha
    refs = HfApi().list_repo_refs(repo_id)
    assert sorted(branch.name for branch in refs.branches) == ["experiment", "main"]


def test_unchanged_upload_makes_no_commit(uploaded):
    repo_id, folder, sha = uploaded
    commit = upload_file(path_or_fileobj=folder / "README.md", path_in_repo="README.md", repo_id=repo_id)
    assert commit.oid == sha


def test_unknown_repo_raises_repository_not_found(local_hub):
    with pytest.raises(RepositoryNotFoundError):
        model_info("tester/missing")
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download("tester/missing", "config.json")


def test_unknown_revision_raises_revision_not_found(uploaded):
    repo_id, _, _ = uploaded
    with pytest.raises(RevisionNotFoundError):
        hf_hub_download(repo_id, "README.md", revision="no-such-branch")
    with pytest.raises(RevisionNotFoundError):
        model_info(repo_id, revision="0" * 40)


def test_missing_file_raises_entry_not_found(uploaded):
    repo_id, _, _ = uploaded
    with pytest.raises(EntryNotFoundError):
        hf_hub_download(repo_id, "absent.json")


def test_validate_yaml_accepts_good_card_and_rejects_bad_metadata(local_hub):
    ModelCard(README).validate()
    with pytest.raises(ValueError, match="base_model_relation"):
        ModelCard("---\nbase_model_relation: adapter\n---\n").validate()
    repo_id = create_repo("tester/cards").repo_id
    bad_index = "---\nmodel-index:\n- name: x\n  results:\n  - task: {type: t}\n---\ntext\n"
    with pytest.raises(ValueError, match="dataset"):
        upload_file(path_or_fileobj=bad_index.encode(), path_in_repo="README.md", repo_id=repo_id)
    assert list_repo_files(repo_id) == [".gitattributes"]


def test_transformers_push_to_hub_then_from_pretrained_gives_identical_weights(local_hub):
    from transformers import BertConfig, BertModel

    config = BertConfig(
        vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32
    )
    torch.manual_seed(0)
    model = BertModel(config)
    model.push_to_hub("tester/tiny-bert")
    loaded = BertModel.from_pretrained("tester/tiny-bert")
    expected, actual = model.state_dict(), loaded.state_dict()
    assert expected.keys() == actual.keys()
    for name, tensor in expected.items():
        assert torch.equal(tensor, actual[name]), name
    assert "model.safetensors" in list_repo_files("tester/tiny-bert")
