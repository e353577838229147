"""d2pose.data.read_image on files of more than 8 bits per pixel: scaled to BGR uint8, not clipped."""
import cv2
import numpy as np

from d2pose.data import read_image


def test_16bit_png_is_scaled_not_clipped(tmp_path):
    values = np.array([[0, 257, 40000, 65535]], np.uint16)
    path = str(tmp_path / "depth16.png")
    assert cv2.imwrite(path, values)
    assert cv2.imread(path, cv2.IMREAD_UNCHANGED).dtype == np.uint16  # the file holds 16 bits
    image = read_image(path)
    assert image.shape == (1, 4, 3) and image.dtype == np.uint8
    # 40000 / 257 = 155.6: Detectron2's reader alone gives 255 for every value above 255
    assert image[0, :, 0].tolist() == [0, 1, 156, 255]
    assert (image[..., 0] == image[..., 1]).all() and (image[..., 1] == image[..., 2]).all()


def test_8bit_and_16bit_color_files_unchanged(tmp_path):
    gray = np.array([[0, 100, 255]], np.uint8)
    cv2.imwrite(str(tmp_path / "g8.png"), gray)
    assert read_image(str(tmp_path / "g8.png"))[0, :, 0].tolist() == [0, 100, 255]
    color = np.zeros((1, 2, 3), np.uint16)
    color[0, 1] = (40000, 20000, 0)  # BGR
    cv2.imwrite(str(tmp_path / "c16.png"), color)
    assert read_image(str(tmp_path / "c16.png"))[0, 1].tolist() == [156, 78, 0]
