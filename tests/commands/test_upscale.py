"""Tests for `python -m drsan_jax.upscale` on real files of every supported kind."""

import os
import re
import struct
import subprocess
import sys
import zlib

import jax
import numpy as np
import pytest
from conftest import TINY, lr_crop, tiny_model
from PIL import Image as PILImage

from drsan_jax import api, upscale
from drsan_jax.data import imresize, read_image, write_image
from drsan_jax.models import init_params
from drsan_jax.weights.checkpoints import save_params_for_inference

# main() calls runtime.configure().
pytestmark = pytest.mark.usefixtures("no_runtime_side_effects")


@pytest.fixture
def ckpt(tiny_checkpoint):
    """The tiny x2 checkpoint shared by the suite, as --ckpt takes it."""
    return tiny_checkpoint


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, benchmark_dir):
    """One file per supported kind, made from crops of the benchmark images."""
    folder = tmp_path_factory.mktemp("inputs")
    rgb = lr_crop(benchmark_dir)  # (45, 61, 3)
    grey = lr_crop(benchmark_dir, "Set14/bridge.png")  # stored with one channel
    alpha = np.linspace(0, 255, rgb.shape[1]).astype(np.uint8)[None].repeat(rgb.shape[0], 0)
    images = {
        "rgb.png": rgb,
        "grey.png": grey,
        "rgba.png": np.dstack([rgb, alpha]),
        "deep.png": rgb.astype(np.uint16) * 257 + 128,
        "deep_grey.png": grey.astype(np.uint16) * 257 + 3,
        "photo.jpg": rgb,
        "photo.jpeg": rgb[::-1],
        "bitmap.bmp": rgb,
        "scan.tif": rgb,
        "scan16.tiff": rgb.astype(np.uint16) * 257,
    }
    for name, image in images.items():
        write_image(folder / name, image)
    return folder


def run(argv):
    """main() with its exit status, the usage errors of argparse included."""
    try:
        return upscale.main([str(a) for a in argv])
    except SystemExit as e:
        return e.code


def test_every_kind_of_file_keeps_its_format(inputs, ckpt, tmp_path, capsys):
    assert run([inputs, "--ckpt", ckpt, "--output", tmp_path]) == 0
    assert f"wrote 10 image(s) to {tmp_path}" in capsys.readouterr().err
    for src in sorted(inputs.iterdir()):
        image, sr = read_image(src), read_image(tmp_path / src.name)
        assert sr.dtype == image.dtype, src.name
        assert sr.shape == (2 * image.shape[0], 2 * image.shape[1], *image.shape[2:]), src.name
    up = api.load(ckpt)
    rgba = read_image(inputs / "rgba.png")
    np.testing.assert_array_equal(read_image(tmp_path / "rgba.png"), up.upscale(rgba))
    np.testing.assert_array_equal(read_image(tmp_path / "rgba.png")[..., 3],
                                  imresize(rgba[..., 3], 2))
    deep = read_image(tmp_path / "deep.png")
    np.testing.assert_array_equal(deep, up.upscale(read_image(inputs / "deep.png")))


def test_files_and_tiles_and_self_ensemble(inputs, ckpt, tmp_path, capsys):
    args = [inputs / "rgb.png", inputs / "grey.png", "--ckpt", ckpt, "--output", tmp_path,
            "--tile", "32", "--tile_overlap", "8", "--self_ensemble", "--scale", "2"]
    assert run(args) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["grey.png", "rgb.png"]
    # A bar over each picture's 2 x 3 tiles, with the time left ("<?" until the first tile).
    err = capsys.readouterr().err
    assert "rgb.png:   0%|" in err and "| 0/6 [00:00<?" in err
    expected = api.load(ckpt).upscale(read_image(inputs / "rgb.png"), self_ensemble=True,
                                      tile=32, overlap=8)
    np.testing.assert_array_equal(read_image(tmp_path / "rgb.png"), expected)


@pytest.mark.parametrize("case,message", [
    ("missing", "input .*nothing.png does not exist"),
    ("not_image", "notes.txt is not an image file"),
    ("no_image_inside", "fake.png is not an image file \\(it starts with b'not a pi'\\)"),
    ("empty_folder", "holds no images"),
    ("overwrite", "would overwrite an input"),
    ("same_name", "would both be written to"),
    ("no_ckpt", "--ckpt .*nowhere: cannot load a model: .*nowhere: no such file or folder"),
    ("wrong_ckpt", "--ckpt .*: cannot load a model: .*shape"),
    ("wrong_scale", "is a drsan .*x2 model; it cannot run at x3 \\(its scales: \\[2\\]\\)"),
    ("bad_tile", "--tile must be"),
    ("small_tile", "--tile must be .* at least 32 \\(smaller tiles come out darker\\), got '16'"),
    ("bad_overlap", "--tile_overlap 16 must be from 0 to below half of --tile 32"),
])
def test_usage_errors_name_the_problem(case, message, inputs, ckpt, tmp_path, capsys):
    rgb, out = inputs / "rgb.png", tmp_path / "out"
    (tmp_path / "empty").mkdir()
    (tmp_path / "notes.txt").write_text("not a picture")
    (tmp_path / "fake.png").write_text("not a picture")
    (tmp_path / "other").mkdir()
    write_image(tmp_path / "other" / "rgb.png", np.zeros((8, 8, 3), np.uint8))
    argv = {
        "missing": [tmp_path / "nothing.png", "--ckpt", ckpt, "--output", out],
        "not_image": [tmp_path / "notes.txt", "--ckpt", ckpt, "--output", out],
        "no_image_inside": [rgb, tmp_path / "fake.png", "--ckpt", ckpt, "--output", out],
        "empty_folder": [tmp_path / "empty", "--ckpt", ckpt, "--output", out],
        "overwrite": [rgb, "--ckpt", ckpt, "--output", inputs],
        "same_name": [rgb, tmp_path / "other" / "rgb.png", "--ckpt", ckpt, "--output", out],
        "no_ckpt": [rgb, "--ckpt", tmp_path / "nowhere", "--output", out],
        "wrong_ckpt": [rgb, "--ckpt", tmp_path / "wrong", "--output", out],
        "wrong_scale": [rgb, "--ckpt", ckpt, "--output", out, "--scale", "3"],
        "bad_tile": [rgb, "--ckpt", ckpt, "--output", out, "--tile", "big"],
        "small_tile": [rgb, "--ckpt", ckpt, "--output", out, "--tile", "16"],
        "bad_overlap": [rgb, "--ckpt", ckpt, "--output", out, "--tile", "32",
                        "--tile_overlap", "16"],
    }[case]
    if case == "wrong_ckpt":
        save_wrong_checkpoint(tmp_path / "wrong")
    assert run(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("python -m drsan_jax.upscale: error:"), err
    assert re.search(message, err), err
    assert not out.exists()


def save_wrong_checkpoint(path):
    """A checkpoint whose metadata promises another model than its parameters are."""
    params = init_params(tiny_model(2), jax.random.key(0))
    save_params_for_inference(path, {"scale": 2, **TINY, "features": 16}, params)


def test_an_unreadable_image_fails_alone_and_is_reported_once(inputs, ckpt, tmp_path, capsys):
    broken = tmp_path / "in" / "broken.png"
    broken.parent.mkdir()
    broken.write_bytes(b"\x89PNG\r\n\x1a\n truncated")  # an image by its first bytes
    assert run([broken, inputs / "rgb.png", "--ckpt", ckpt, "--output", tmp_path / "out"]) == 1
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "error" in line]
    assert len(lines) == 2, err
    assert lines[0].endswith(f"error: cannot read image {broken}: expected a PNG, BMP, JPEG or "
                             f"TIFF image with 8- or 16-bit unsigned samples and 1 (grey), 3 "
                             f"(RGB) or 4 (RGBA) channels (Truncated File Read)")
    assert lines[1] == (f"python -m drsan_jax.upscale: error: 1 of 2 images failed (each "
                        f"reported above); wrote the other 1 to {tmp_path / 'out'}/")
    assert err.count(str(broken)) == 1 and "`" not in err
    assert (tmp_path / "out" / "rgb.png").is_file()
    assert not (tmp_path / "out" / "broken.png").exists()


def test_help_describes_the_tile_choices(capsys):
    with pytest.raises(SystemExit):
        upscale.main(["--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert ("'auto' (the default: the whole image when it has at most 512x512 LR pixels and "
            "fits in memory, else tiles of that size, with a progress bar and the time left), "
            "'none' (always the whole image: faster, no progress, more memory), or a tile size "
            "in LR pixels") in help_text
    assert "tiles of auto" not in help_text


def test_a_file_that_is_no_image_stops_the_command_line_before_work(inputs, tmp_path):
    fake = tmp_path / "holiday.jpg"
    fake.write_text("<html>not a photo</html>")
    out = tmp_path / "out"
    argv = [sys.executable, "-m", "drsan_jax.upscale", str(inputs / "rgb.png"), str(fake),
            "--ckpt", "/nowhere", "--output", str(out)]  # the inputs are checked first
    result = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and not out.exists()
    assert result.stderr.splitlines() == [
        f"python -m drsan_jax.upscale: error: {fake} is not an image file (it starts with "
        f"b'<html>no'); expected a PNG, BMP, JPEG or TIFF image with 8- or 16-bit unsigned "
        f"samples and 1 (grey), 3 (RGB) or 4 (RGBA) channels"]
    verbose = subprocess.run([*argv, "--verbose"], capture_output=True, text=True, timeout=120)
    assert verbose.returncode == 2 and verbose.stderr.startswith("Traceback")


def test_module_entry_point_on_cpu(inputs, ckpt, tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "drsan_jax.upscale", str(inputs / "bitmap.bmp"), "--ckpt",
         str(ckpt), "--output", str(tmp_path), "--device", "cpu"],
        capture_output=True, text=True, env={**os.environ, "JAX_PLATFORMS": ""}, timeout=120)
    assert result.returncode == 0, result.stderr
    assert read_image(tmp_path / "bitmap.bmp").shape == (90, 122, 3)


def _upscale_peak_kib(picture, ckpt, output):
    """Run upscale on one picture in a fresh process; (result, its peak resident KiB)."""
    # VmHWM is this process's own high-water mark. ru_maxrss is not: Linux carries the parent's
    # peak over an exec from vfork, so under a long pytest session it measured pytest.
    code = ("import re, sys\nfrom drsan_jax import upscale\nstatus = upscale.main(sys.argv[1:])\n"
            "hwm = re.search(r'VmHWM:\\s*(\\d+)', open('/proc/self/status').read()).group(1)\n"
            "print('VmHWM', hwm, file=sys.stderr)\nsys.exit(status)")
    result = subprocess.run([sys.executable, "-c", code, str(picture), "--ckpt", str(ckpt),
                             "--output", str(output)],
                            capture_output=True, text=True, timeout=300,
                            env={**os.environ, "JAX_PLATFORMS": "cpu",
                                 "DRSAN_JAX_CACHE_DIR": "none"})
    return result, int(re.search(r"VmHWM (\d+)", result.stderr).group(1))


def test_a_hostile_header_is_one_line_without_the_memory_it_asks_for(inputs, tmp_path, ckpt):
    # 100000 x 100000 16-bit RGB claimed by a few kilobytes: 60 GB if believed.
    header = struct.pack(">IIBBBBB", 100000, 100000, 16, 2, 0, 0, 0)

    def chunk(kind, body):
        return (struct.pack(">I", len(body)) + kind + body
                + struct.pack(">I", zlib.crc32(kind + body)))

    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
                     + chunk(b"IDAT", zlib.compress(bytes(16 << 20), 9)) + chunk(b"IEND", b""))
    result, peak_kib = _upscale_peak_kib(bomb, ckpt, tmp_path / "out")
    assert result.returncode == 1, result.stderr
    lines = [line for line in result.stderr.splitlines() if "error" in line]
    assert lines[0] == (f"error: cannot read image {bomb}: its header claims 100000x100000 = "
                        f"10,000,000,000 pixels, over the limit of 1,073,741,824 (set "
                        f"DRSAN_JAX_MAX_IMAGE_PIXELS to a larger number of pixels to read it)")
    assert not (tmp_path / "out" / "bomb.png").exists()
    # The yardstick is the same command on a small real picture, measured the same way: what
    # JAX, the model and its compilation cost on this machine. Believing the header would cost
    # gigabytes more; the margin only absorbs allocator noise between two processes.
    fine, baseline_kib = _upscale_peak_kib(inputs / "bitmap.bmp", ckpt, tmp_path / "fine")
    assert fine.returncode == 0, fine.stderr
    assert peak_kib < baseline_kib + 256 * 1024, (peak_kib, baseline_kib)


def test_an_unwritable_output_folder_is_found_before_any_work(inputs, ckpt, tmp_path, capsys):
    if os.geteuid() == 0 and subprocess.run(["chattr", "+i", str(tmp_path)],
                                            capture_output=True).returncode:
        pytest.skip("running as root, and chattr +i is not allowed here")
    if os.geteuid() != 0:
        tmp_path.chmod(0o555)
    try:
        for output in (tmp_path, tmp_path / "new" / "folder"):
            assert run([inputs / "rgb.png", "--ckpt", ckpt, "--output", output]) == 2
            err = capsys.readouterr().err
            assert err.splitlines() == [
                f"python -m drsan_jax.upscale: error: --output {output}: cannot write there "
                f"(Operation not permitted); choose a folder you can write to"] or re.fullmatch(
                rf"python -m drsan_jax.upscale: error: --output {re.escape(str(output))}: cannot "
                rf"write there \(Permission denied\); choose a folder you can write to\n", err)
    finally:
        if os.geteuid() == 0:
            subprocess.run(["chattr", "-i", str(tmp_path)], check=True)
        else:
            tmp_path.chmod(0o755)
    assert list(tmp_path.iterdir()) == []


def test_pictures_come_out_as_viewers_show_them(ckpt, tmp_path, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    exif = PILImage.Exif()
    exif[0x0112] = 6  # the camera was turned: display rotated 90 degrees clockwise
    PILImage.fromarray(np.zeros((12, 20, 3), np.uint8)).save(folder / "turned.png", exif=exif)
    palette = PILImage.new("P", (20, 12))
    palette.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    palette.putdata([(x // 10) for _ in range(12) for x in range(20)])
    palette.save(folder / "sticker.png", transparency=1)
    frames = [PILImage.fromarray(np.full((12, 20, 3), v, np.uint8)) for v in (0, 255)]
    frames[0].save(folder / "moving.png", save_all=True, append_images=frames[1:])
    assert run([folder, "--ckpt", ckpt, "--output", tmp_path / "out"]) == 1
    err = capsys.readouterr().err
    assert f"error: cannot read image {folder / 'moving.png'}: it is an animation of 2 frames" \
        in err
    assert read_image(tmp_path / "out" / "turned.png").shape == (40, 24, 3)
    sticker = read_image(tmp_path / "out" / "sticker.png")
    assert sticker.shape == (24, 40, 4)
    assert sticker[:, :16, 3].min() == 255 and sticker[:, 24:, 3].max() == 0
    assert not (tmp_path / "out" / "moving.png").exists()
