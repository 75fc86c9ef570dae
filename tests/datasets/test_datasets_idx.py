"""The IDX reader on small synthetic files: round trips and broken files."""

import gzip

import numpy as np
import pytest

from normlab.datasets._idx import read_idx


def idx_bytes(a, code=0x08):
    a = np.asarray(a)
    header = bytes([0, 0, code, a.ndim]) + np.asarray(a.shape, dtype=">u4").tobytes()
    return header + a.astype(np.uint8).tobytes()


@pytest.fixture
def images():
    return np.arange(5 * 4 * 3, dtype=np.uint8).reshape(5, 4, 3)


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("ndim", [1, 3])
def test_round_trip(tmp_path, images, gz, ndim):
    a = images if ndim == 3 else np.array([3, 1, 4, 1, 5], dtype=np.uint8)
    data = idx_bytes(a)
    f = tmp_path / "f"
    f.write_bytes(gzip.compress(data) if gz else data)
    out = read_idx(f, ndim=ndim)
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, a)


def test_compression_is_detected_from_content_not_name(tmp_path, images):
    plain_named_gz = tmp_path / "train-images-idx3-ubyte.gz"
    plain_named_gz.write_bytes(idx_bytes(images))
    gz_named_plain = tmp_path / "train-images-idx3-ubyte"
    gz_named_plain.write_bytes(gzip.compress(idx_bytes(images)))
    np.testing.assert_array_equal(read_idx(plain_named_gz, ndim=3), images)
    np.testing.assert_array_equal(read_idx(gz_named_plain, ndim=3), images)


def test_empty_dimension_is_fine(tmp_path):
    f = tmp_path / "f"
    f.write_bytes(idx_bytes(np.zeros((0, 28, 28), dtype=np.uint8)))
    assert read_idx(f, ndim=3).shape == (0, 28, 28)


def _expect(tmp_path, payload, ndim, *fragments):
    f = tmp_path / "broken-idx-file"
    f.write_bytes(payload)
    with pytest.raises(ValueError) as info:
        read_idx(f, ndim=ndim)
    msg = str(info.value)
    assert str(f) in msg, "the message must name the file"
    for fragment in fragments:
        assert fragment in msg, f"{fragment!r} not in {msg!r}"


@pytest.mark.parametrize("gz", [False, True])
def test_truncated_data(tmp_path, images, gz):
    data = idx_bytes(images)[:-7]
    _expect(tmp_path, gzip.compress(data) if gz else data, 3, "truncated", "5 x 4 x 3 = 60", "53")


def test_truncated_header(tmp_path, images):
    _expect(tmp_path, idx_bytes(images)[:9], 3, "truncated inside its header")


@pytest.mark.parametrize("payload", [b"", b"\x00\x00"])
def test_too_short(tmp_path, payload):
    _expect(tmp_path, payload, 1, "too short", "00 00 08 01")


def test_trailing_bytes(tmp_path, images):
    _expect(tmp_path, idx_bytes(images) + b"\x00" * 3, 3, "3 unexpected bytes")


def test_png_is_recognized(tmp_path):
    png = b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR" + bytes(20)
    _expect(tmp_path, png, 3, "not an IDX file", "00 00 08 03", "PNG image")


def test_html_error_page_is_recognized(tmp_path):
    _expect(tmp_path, b"<!DOCTYPE html><html>404</html>", 1, "not an IDX file", "HTML")


@pytest.mark.parametrize(
    "payload, what",
    [
        (b"\xef\xbb\xbf\r\n  <html><body>Not Found</body></html>", "HTML"),
        (b"\n\n<?xml version='1.0'?><Error/>", "HTML or XML"),
        (b"version https://git-lfs.github.com/spec/v1\noid sha256:0123\nsize 9912422\n", "git lfs pull"),
        (b'{"message": "Not Found"}', "JSON document"),
    ],
)
def test_text_in_place_of_idx_is_recognized(tmp_path, payload, what):
    _expect(tmp_path, payload, 3, "not an IDX file", "00 00 08 03", what)


def test_gzipped_html_is_recognized(tmp_path):
    _expect(tmp_path, gzip.compress(b"<!DOCTYPE html><html>404</html>"), 3, "not an IDX file", "HTML")


def test_unknown_foreign_bytes(tmp_path):
    _expect(tmp_path, b"hello world, not idx", 1, "not an IDX file", "68 65 6c 6c")


def test_wrong_data_type_code(tmp_path, images):
    data = bytearray(idx_bytes(images))
    data[2] = 0x0D
    _expect(tmp_path, bytes(data), 3, "0x0D", "float32", "0x08")


def test_labels_read_as_images(tmp_path):
    _expect(tmp_path, idx_bytes(np.arange(10)), 3, "1 dimension(s)", "expected 3", "swapped")


@pytest.mark.parametrize("cut", [5, 30])
def test_truncated_gzip_stream(tmp_path, images, cut):
    gz = gzip.compress(idx_bytes(images))
    _expect(tmp_path, gz[: len(gz) - cut], 3, "gzip")


def test_corrupt_gzip(tmp_path):
    _expect(tmp_path, b"\x1f\x8b" + b"garbage" * 10, 3, "not a valid gzip file")


def test_huge_declared_size_is_a_clear_error(tmp_path):
    header = bytes([0, 0, 8, 3]) + np.array([2**32 - 1] * 3, dtype=">u4").tobytes()
    _expect(tmp_path, header + bytes(10), 3, "truncated")
