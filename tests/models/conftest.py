import pytest


@pytest.fixture(scope="session")
def tiny_hf(tmp_path_factory):
    """name -> (HF model, tinyfast model) for the tiny random families, built once per session."""
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from models import tiny_models as tm

    from tinyfast.models import load_model

    cache = {}

    def get(name):
        if name not in cache:
            hf = tm.build(name)
            path = tm.save(hf, tmp_path_factory.mktemp(name))
            model, _ = load_model(path)
            cache[name] = (hf, model, path)
        return cache[name]

    return get
