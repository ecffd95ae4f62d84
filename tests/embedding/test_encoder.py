import pytest

from selectflow.tasks.embedding.encoder import default_model_path, resolve_model_path, weights_hash
from selectflow.tasks.errors import InputError


def test_missing_encoder_folder(tmp_path):
    with pytest.raises(InputError, match="does not exist; pass --model"):
        resolve_model_path(str(tmp_path / "nope"))


def test_folder_that_is_not_a_sentence_transformers_model(tmp_path):
    (tmp_path / "weights.bin").write_bytes(b"x")
    with pytest.raises(InputError, match="not a sentence-transformers model folder"):
        resolve_model_path(str(tmp_path))


def test_default_encoder_is_the_packaged_one_and_its_identity_is_its_weights():
    path = resolve_model_path(None)
    assert path == default_model_path().resolve() and (path / "modules.json").exists()
    assert weights_hash(path) == weights_hash(path) and len(weights_hash(path)) == 32
