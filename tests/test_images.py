import struct
import subprocess
import sys
import warnings
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from styleprefs import images
from tests.conftest import make_photo


def test_find_images_walks_folders_in_a_stable_order(tmp_path):
    make_photo(tmp_path / "b" / "2.png")
    make_photo(tmp_path / "b" / "1.jpg")
    make_photo(tmp_path / "a.png")
    (tmp_path / "notes.txt").write_text("not an image")
    found = images.find_images([tmp_path])
    assert [p.relative_to(tmp_path).as_posix() for p in found] == ["a.png", "b/1.jpg", "b/2.png"]


def test_find_images_names_a_missing_path(tmp_path):
    with pytest.raises(images.ImageError, match="no such file"):
        images.find_images([tmp_path / "nope.jpg"])
    with pytest.raises(images.ImageError, match="no images found"):
        images.find_images([tmp_path])


@pytest.mark.parametrize("mode", ["L", "P", "RGBA", "LA", "CMYK"])
def test_every_mode_loads_as_rgb(tmp_path, mode):
    suffix = ".jpg" if mode == "CMYK" else ".png"
    path = make_photo(tmp_path / f"x{suffix}", mode=mode)
    t = images.load_image(path)
    assert t.shape == (3, 72, 96) and t.dtype == torch.float32
    assert 0 <= t.min() and t.max() <= 1


def test_sixteen_bit_png_keeps_its_range(tmp_path):
    arr = (np.linspace(0, 65535, 64 * 64).reshape(64, 64)).astype(np.uint16)
    path = tmp_path / "deep.png"
    Image.fromarray(arr).save(path)
    t = images.load_image(path)
    assert t.max() > 0.95 and t.min() < 0.05


@pytest.mark.parametrize("suffix", [".png", ".tif", ".pgm"])  # opened as I;16, I;16 and I
@pytest.mark.parametrize("top", [200, 4000])
def test_a_dark_sixteen_bit_image_is_not_brightened(tmp_path, suffix, top):
    """16-bit values are out of 65535, by the mode: chosen by the content, an image whose values all stayed under
    256 was read as 8-bit, up to 257× too bright."""
    arr = np.linspace(0, top, 48 * 64).reshape(48, 64).astype(np.uint16)
    path = tmp_path / f"dark{suffix}"
    Image.fromarray(arr).save(path)
    loaded = images.load_image(path)
    expected = torch.from_numpy(arr / 65535.0).float()
    assert (loaded - expected).abs().max() <= 0.5 / 255 + 1e-6  # 8-bit rounding, no more


def test_transparency_is_flattened_onto_white(tmp_path):
    img = Image.new("RGBA", (32, 32), (255, 0, 0, 0))
    img.save(tmp_path / "clear.png")
    assert torch.allclose(images.load_image(tmp_path / "clear.png"), torch.ones(3, 32, 32))


def test_exif_orientation_is_applied(tmp_path):
    img = Image.new("RGB", (80, 40), (10, 200, 30))
    exif = img.getexif()
    exif[0x0112] = 6  # rotate 90° clockwise when displayed
    img.save(tmp_path / "rotated.jpg", exif=exif)
    assert images.load_image(tmp_path / "rotated.jpg").shape == (3, 80, 40)


def test_bad_files_raise_one_clear_error(tmp_path):
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "text.jpg").write_text("hello")
    (tmp_path / "folder.png").mkdir()
    good = make_photo(tmp_path / "good.png")
    (tmp_path / "cut.png").write_bytes(good.read_bytes()[:200])
    for name in ("empty.jpg", "text.jpg", "folder.png", "cut.png"):
        with pytest.raises(images.ImageError, match=name):
            images.load_image(tmp_path / name)


def test_pixel_limit_is_checked_before_decoding(tmp_path):
    path = declared_png(tmp_path / "big.png", 200, 100)  # a header and no pixels: decoding it would fail otherwise
    with pytest.raises(images.ImageError, match="over the limit"):
        images.load_image(path, max_pixels=10_000)


def declared_png(path, width: int, height: int):
    """A PNG whose header declares width × height grey pixels but which holds none: what a header check sees."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b""))
    return path


def test_importing_styleprefs_leaves_pillows_bomb_limit_alone(tmp_path):
    """It was set to None for the whole process, turning Pillow's check off for any other code in it."""
    photo = make_photo(tmp_path / "p.png")
    code = ("from PIL import Image; default = Image.MAX_IMAGE_PIXELS; "
            "import styleprefs.cli, styleprefs.session; from styleprefs import images; "
            f"images.load_image({str(photo)!r}); print(default, Image.MAX_IMAGE_PIXELS)")
    default, after = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                    check=True).stdout.split()
    assert default == after == str(Image.MAX_IMAGE_PIXELS) != "None"


@pytest.mark.parametrize("width,height", [(15_000, 10_000), (20_000, 10_000)])  # Pillow: a warning; an error
def test_an_image_over_the_limit_gets_our_one_error_not_pillows(tmp_path, width, height):
    path = declared_png(tmp_path / "bomb.png", width, height)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(images.ImageError, match=f"bomb.png: {width}×{height} is over the limit of 100,000,000"):
            images.load_image(path)
    assert not caught


def test_a_raised_limit_is_ours_not_pillows(tmp_path):
    """Past Pillow's own limit (89 MP), a raised --max-pixels still decides, without Pillow's warning."""
    path = declared_png(tmp_path / "large.png", 15_000, 8_000)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(images.ImageError, match="large.png: not a readable image"):  # it holds no pixels
            images.load_image(path, max_pixels=200_000_000)
    assert not caught


def test_resize_keeps_aspect_ratio():
    img = Image.new("RGB", (400, 100))
    assert images.resize(img, max_side=200).size == (200, 50)
    assert images.resize(img, short_side=50).size == (200, 50)
    assert images.resize(img, max_side=1000).size == (400, 100)  # never enlarged by a cap


def test_save_is_atomic_and_round_trips(tmp_path):
    t = torch.rand(3, 20, 30)
    images.save_image(t, tmp_path / "out.png")
    assert torch.allclose(images.load_image(tmp_path / "out.png"), t, atol=1 / 255)
    assert [p.name for p in tmp_path.iterdir()] == ["out.png"]  # no temporary file left behind


def test_contact_sheet_has_a_cell_per_image_and_legible_labels():
    tiles = [torch.full((3, 50, 50), i / 16) for i in range(16)]
    sheet = images.contact_sheet(tiles, [str(i + 1) for i in range(16)], cell=128)
    assert sheet.size[0] == 4 * (128 + 6) + 6
    arr = np.asarray(sheet)
    # The label badges are bright yellow text: many such pixels in the first cell's corner.
    corner = arr[6:50, 6:50]
    assert ((corner[..., 0] > 200) & (corner[..., 1] > 200) & (corner[..., 2] < 120)).sum() > 30


def test_an_unreadable_file_is_named(tmp_path, monkeypatch):
    # Tests run as root here, where chmod 000 does not stop reading; simulate the OS refusing.
    path = make_photo(tmp_path / "locked.png")

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")
    monkeypatch.setattr(images.Image, "open", refuse)
    with pytest.raises(images.ImageError, match="locked.png: permission denied"):
        images.load_image(path)
