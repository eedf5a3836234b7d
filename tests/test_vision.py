"""llmcourse.vision: data tensors, the cached recipes (atomic cache), the losses and measures, the image grid."""

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from llmcourse import vision  # noqa: E402


def test_mnist_tensors_shape_range_and_labels():
    x, y = vision.mnist_tensors("test", 16)
    assert x.shape == (500, 1, 16, 16) and x.dtype == torch.float32
    assert x.min() >= -1 and x.max() <= 1 and x.min() < -0.99 and x.max() > 0.9
    assert y.dtype == torch.int64 and sorted(y.unique().tolist()) == list(range(10))
    x28, _ = vision.mnist_tensors("test", 28)
    assert x28.shape == (500, 1, 28, 28)


def test_caption_fills_numeral_and_word():
    assert vision.caption("the number {w} ({n})", 7) == "the number seven (7)"
    assert not set(vision.CAPTIONS_TRAIN) & set(vision.CAPTIONS_UNSEEN)


def test_info_nce_matches_the_formula_and_prefers_the_diagonal():
    logits = torch.randn(5, 5, generator=torch.Generator().manual_seed(0))
    t = torch.arange(5)
    expected = (F.cross_entropy(logits, t) + F.cross_entropy(logits.T, t)) / 2
    assert torch.allclose(vision.info_nce(logits), expected)
    assert vision.info_nce(torch.eye(5) * 20) < 1e-6
    assert abs(vision.info_nce(torch.zeros(5, 5)).item() - np.log(5)) < 1e-6


def test_precision_at_k():
    sim = torch.tensor([[0.9, 0.1, 0.8], [0.2, 0.7, 0.3]])
    assert vision.precision_at_k(sim, torch.tensor([0, 1]), torch.tensor([0, 1, 0]), 1) == 1.0
    assert vision.precision_at_k(sim, torch.tensor([0, 1]), torch.tensor([0, 1, 0]), 2) == 0.75


def test_frechet_distance_is_zero_for_identical_sets_and_sees_a_shift():
    a = torch.randn(400, 3, generator=torch.Generator().manual_seed(0))
    assert abs(vision.frechet_distance(a, a)) < 1e-6
    assert abs(vision.frechet_distance(a, a + torch.tensor([2.0, 0, 0])) - 4.0) < 1e-6


def test_models_have_the_documented_shapes():
    x = torch.zeros(3, 1, 16, 16)
    clf = vision.DigitClassifier()
    assert clf(x).shape == (3, 10) and clf.features(x).shape == (3, 64)
    assert clf(torch.zeros(2, 1, 32, 32)).shape == (2, 10)  # larger images are judged at the trained size
    clip = vision.DigitCLIP()
    assert clip(x, torch.zeros(4, 384)).shape == (3, 4)
    assert torch.allclose(clip.encode_image(x).norm(dim=-1), torch.ones(3))


@pytest.mark.slow
def test_digit_classifier_trains_caches_atomically_and_reloads(tmp_path, monkeypatch):
    monkeypatch.setenv("LLMCOURSE_HOME", str(tmp_path))
    torch.set_num_threads(1)
    clf = vision.digit_classifier(epochs=1)
    files = list((tmp_path / "vision").iterdir())
    assert [f.suffix for f in files] == [".pt"]  # no temporary file left behind
    x, y = vision.mnist_tensors("test")
    with torch.no_grad():
        acc = (clf(x).argmax(1) == y).float().mean().item()
    assert acc > 0.7  # one epoch is enough to learn digits
    again = vision.digit_classifier(epochs=1)  # read from the cache: the same weights
    assert all(torch.equal(a, b) for a, b in zip(clf.state_dict().values(), again.state_dict().values()))
    assert len(list((tmp_path / "vision").iterdir())) == 1


def test_unknown_recipe_settings_change_the_cache_key():
    assert vision._key({"a": 1}) != vision._key({"a": 2})


def test_show_grid_draws_every_image_in_place():
    import matplotlib.pyplot as plt

    images = torch.rand(6, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
    ax = vision.show_grid(images, nrow=3, title="t")
    [shown] = ax.get_images()
    canvas = np.asarray(shown.get_array())
    assert canvas.shape == (2 * 9 - 1, 3 * 9 - 1)  # 2 rows x 3 columns of 8 x 8, one-pixel gaps
    for i in range(6):
        r, c = divmod(i, 3)
        assert np.array_equal(canvas[r * 9:r * 9 + 8, c * 9:c * 9 + 8], images[i, 0].numpy())
    assert (canvas[8, :] == -1).all() and (canvas[:, 8] == -1).all()  # the gaps are black
    assert shown.get_clim() == (-1, 1) and ax.get_title() == "t"
    plt.close("all")


def test_show_grid_with_titles_draws_one_titled_panel_per_image():
    import matplotlib.pyplot as plt

    images = torch.rand(5, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1  # (N, H, W) is accepted too
    axes = vision.show_grid(images, nrow=3, titles=[f"d{i}" for i in range(5)], title="t")
    assert axes.shape == (2, 3)
    panels = axes.flat
    for i, a in enumerate(panels):
        if i < 5:
            [shown] = a.get_images()
            assert np.array_equal(np.asarray(shown.get_array()), images[i].numpy()) and a.get_title() == f"d{i}"
        else:
            assert a.get_images() == [] and not a.axison  # the spare sixth panel stays empty
    assert axes[0, 0].figure.get_suptitle() == "t"
    plt.close("all")
