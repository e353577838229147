"""Checks every heatmap codec's tests share (core codecs here, method codecs in tests/projects/)."""
import numpy as np
import torch


def assert_encode_torch_equals_encode(codec, input_size, seed: int = 3):
    """`codec.encode_torch` on crop-normalised coordinates (some far outside the crop: weight 0) equals
    `codec.encode` on the same keypoints in crop pixels, heatmaps to 1e-6 and weights exactly.
    `input_size` is the crop's (W, H)."""
    rng = np.random.default_rng(seed)
    coords = rng.uniform(-0.3, 1.3, size=(4, 17, 2))
    vis = rng.integers(0, 3, size=(4, 17))
    hm_t, w_t = codec.encode_torch(torch.as_tensor(coords), torch.as_tensor((vis > 0).astype(np.float64)))
    for i in range(4):
        hm, w = codec.encode(coords[i] * np.asarray(input_size), vis[i])
        np.testing.assert_allclose(w_t[i].numpy(), w)
        np.testing.assert_allclose(hm_t[i].numpy(), hm, atol=1e-6)
