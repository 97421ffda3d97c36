import numpy as np
import pytest
import torch

from miners.embedders import PixelEmbedder, fingerprint, load_embedder, parse_spec


def test_parse_spec_spellings():
    assert parse_spec("open_clip:ViT-B-32/laion2b_s34b_b79k") == (
        "open_clip",
        "ViT-B-32",
        "laion2b_s34b_b79k",
    )
    assert parse_spec("open_clip:ViT-B-32//ckpt/m.pt") == ("open_clip", "ViT-B-32", "/ckpt/m.pt")
    assert parse_spec("open_clip:ViT-S-32") == ("open_clip", "ViT-S-32", None)
    assert parse_spec("tests.embedder:make")[0] == "factory"
    for bad in ("ViT-B-32", "open_clip:", "a b:c"):
        with pytest.raises(ValueError, match="embedder"):
            parse_spec(bad)


def test_pixel_embedder_matches_a_shifted_picture_not_another():
    rng = np.random.default_rng(0)
    a = np.kron(rng.integers(0, 255, (8, 8, 3)), np.ones((10, 10, 1))).astype(
        np.uint8
    )  # 80x80 blocks
    b = np.kron(rng.integers(0, 255, (8, 8, 3)), np.ones((10, 10, 1))).astype(np.uint8)
    e = PixelEmbedder()
    emb = e.embed_images(np.stack([a[:64, :64], a[3:67, 2:66], b[:64, :64]]))
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    assert emb[0] @ emb[1] > 0.8 and abs(emb[0] @ emb[2]) < 0.4


def test_pixel_embedder_texts_are_unit_and_word_based():
    t = PixelEmbedder().embed_texts(["a red dog", "A red dog!", "blue car"])
    assert t[0] @ t[1] == pytest.approx(1.0, abs=1e-5) and t[0] @ t[2] < 0.9


def test_factory_embedder_is_checked():
    e = load_embedder("miners.embedders:pixel_embedder")
    assert e.dim == 192 and e.image_size == 64
    with pytest.raises(ValueError, match="cannot import"):
        load_embedder("miners.embedders:nope")
    with pytest.raises(ValueError, match="without arguments"):
        load_embedder("miners.embedders:normalize")
    with pytest.raises(ValueError, match="lacks"):
        load_embedder("tests.miners.test_embedders:not_an_embedder")


def test_open_clip_random_weights_shapes_and_unit_rows():
    e = load_embedder("open_clip:ViT-S-32", device="cpu", batch_size=2)
    imgs = np.random.default_rng(0).integers(
        0, 255, (3, e.image_size, e.image_size, 3), dtype=np.uint8
    )
    x = e.embed_images(imgs)
    t = e.embed_texts(["a dog", "a cat", "a car"])
    assert x.shape == (3, e.dim) and t.shape == (3, e.dim) and x.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-4)
    # batching does not change the result
    np.testing.assert_allclose(e.embed_images(imgs[:1]), x[:1], atol=1e-4)
    with pytest.raises(ValueError, match="expected"):
        e.embed_images(imgs[:, :10])
    # random towers are the same in every process (Dask workers embed frames, the flow seeds)
    torch.manual_seed(123)
    again = load_embedder("open_clip:ViT-S-32", device="cpu", batch_size=2)
    np.testing.assert_allclose(again.embed_images(imgs), x, atol=1e-6)
    # the embedding service's device path: uint8 tensors in, unit rows out, same vectors
    on_device = e.encode_uint8(torch.from_numpy(imgs))
    assert isinstance(on_device, torch.Tensor) and on_device.shape == (3, e.dim)
    np.testing.assert_allclose(on_device.numpy(), x, atol=1e-5)


def test_open_clip_loads_a_local_checkpoint(tmp_path):
    import open_clip

    model = open_clip.create_model("ViT-S-32", pretrained=None)
    with torch.no_grad():
        model.visual.proj.mul_(0).add_(1.0)  # a weight a fresh random model would not have
    ckpt = tmp_path / "ckpt.pt"
    torch.save({"state_dict": model.state_dict()}, ckpt)
    e = load_embedder(f"open_clip:ViT-S-32/{ckpt}", device="cpu")
    assert torch.all(e.model.visual.proj == 1.0)
    assert fingerprint(f"open_clip:ViT-S-32/{ckpt}", e) != fingerprint("open_clip:ViT-S-32", e)


def test_unknown_open_clip_model_and_missing_tag_fail_clearly():
    with pytest.raises(ValueError, match="unknown open_clip model"):
        load_embedder("open_clip:NoSuchNet")
    with pytest.raises(Exception):  # noqa: B017 - open_clip raises RuntimeError offline
        load_embedder("open_clip:ViT-S-32/not_a_tag", device="cpu")


def test_device_cuda_without_gpu_is_a_config_error():
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    from miners.embedders import resolve_device

    assert resolve_device("auto") == "cpu"
    with pytest.raises(ValueError, match="CUDA"):
        resolve_device("cuda")


def not_an_embedder():
    return object()


def test_one_model_per_spec_and_device_whatever_the_batch_size():
    from miners.embedders import get_embedder

    a = get_embedder("open_clip:ViT-S-32", "cpu", 8)
    b = get_embedder("open_clip:ViT-S-32", "auto", 8)  # auto means cpu here: the same load
    c = get_embedder("open_clip:ViT-S-32", "cpu", 16)
    assert a is b and a.batch_size == 8 and c.batch_size == 16
    assert c is not a and c.model is a.model  # another size shares the model
    assert get_embedder("open_clip:ViT-S-32", "cpu", 16) is c  # and is the same object again
