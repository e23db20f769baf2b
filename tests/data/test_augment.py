import torch

from edgecnn.data.augment import Augmentation, augment_batch


def test_augmentations_preserve_shape_range_and_are_seeded():
    x = torch.rand(16, 3, 32, 32)
    aug = Augmentation(hflip=True, vflip=True, rot90=True, jitter=0.2, crop_pad=2)
    a = augment_batch(x, aug, torch.Generator().manual_seed(0))
    b = augment_batch(x, aug, torch.Generator().manual_seed(0))
    assert a.shape == x.shape and torch.equal(a, b)
    assert a.min() >= 0 and a.max() <= 1
    assert not torch.equal(a, x)


def test_rotations_and_flips_only_permute_pixels():
    x = torch.rand(64, 3, 16, 16)
    flips = Augmentation(hflip=True, vflip=True, rot90=True, jitter=0.0)
    out = augment_batch(x, flips, torch.Generator().manual_seed(1))
    for i in range(64):  # every sample is a rearrangement of its own pixels
        assert torch.allclose(out[i].flatten().sort().values, x[i].flatten().sort().values)
