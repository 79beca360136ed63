"""Hand-written sensor_msgs/Image and CompressedImage <-> numpy conversion (no cv_bridge).

Reading works on any object with the ``sensor_msgs/Image`` fields (``height``, ``width``,
``encoding``, ``is_bigendian``, ``step``, ``data``) and honours ``step`` (row padding). Every size is
checked against the bytes actually present and against ``max_pixels`` *before* anything is
allocated: a few-byte message that claims 2^32 bytes per row, or a small PNG that decodes to
16384x16384, is rejected without touching memory. Writing fills ``data`` with an
``array.array('B')`` (fast; a list or bytes is checked element by element).
"""
from __future__ import annotations

import array
import io
import warnings

import numpy as np

from evf_sam_ros.errors import InvalidImageError
from evf_sam_ros.geometry import DEPTH_ENCODINGS

__all__ = [
    'COLOUR_ENCODINGS',
    'DEFAULT_MAX_PIXELS',
    'decode_compressed',
    'depth_from_msg',
    'fill_image_msg',
    'image_to_rgb',
    'msg_to_array',
]

#: colour encodings the node accepts -> channels
COLOUR_ENCODINGS = {'rgb8': 3, 'bgr8': 3, 'rgba8': 4, 'bgra8': 4, 'mono8': 1}
#: 8K UHD (7680x4320) and a little more; the node's ``max_image_pixels`` parameter overrides it
DEFAULT_MAX_PIXELS = 40_000_000


def _check_size(w: int, h: int, max_pixels: int, what: str) -> None:
    if h <= 0 or w <= 0:
        raise InvalidImageError(f'{what} has zero size ({w}x{h}); check the camera driver')
    if w * h > max_pixels:
        raise InvalidImageError(f'{what} is {w}x{h} = {w * h} pixels, more than max_image_pixels='
                                f'{max_pixels}; resize it upstream (e.g. image_proc/resize) or raise '
                                'max_image_pixels')


def msg_to_array(msg, dtype, channels: int, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """View ``msg.data`` as an (H, W[, C]) array of ``dtype``, checking sizes and honouring step."""
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    _check_size(w, h, max_pixels, f"image ('{msg.encoding}')")
    itemsize = np.dtype(dtype).itemsize
    row = w * channels * itemsize
    if step < row:
        raise InvalidImageError(f'image step {step} is smaller than width*bytes per pixel = {row} '
                                f'({w}x{h} {msg.encoding}); the message is inconsistent')
    n = len(msg.data)
    needed = step * (h - 1) + row   # the last row needs no padding
    if n < needed:
        raise InvalidImageError(f'image data has {n} bytes but {w}x{h} {msg.encoding} with step {step} '
                                f'needs {needed}; the message is truncated or inconsistent')
    buf = np.frombuffer(msg.data, dtype=np.uint8, count=needed)
    if step == row:
        a = buf.view(dtype)
    else:  # padded rows: a strided view over the bytes present, then one compact copy
        rows = np.lib.stride_tricks.as_strided(buf, shape=(h, row), strides=(step, 1), writeable=False)
        a = np.ascontiguousarray(rows).view(dtype)
    if itemsize > 1 and bool(getattr(msg, 'is_bigendian', False)) != (np.little_endian is False):
        a = a.byteswap()
    return a.reshape((h, w, channels) if channels > 1 else (h, w))


def image_to_rgb(msg, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """``sensor_msgs/Image`` (rgb8, bgr8, rgba8, bgra8, mono8) -> HxWx3 uint8 RGB."""
    enc = msg.encoding
    ch = COLOUR_ENCODINGS.get(enc)
    if ch is None:
        raise InvalidImageError(f"image encoding '{enc}' is not supported: publish rgb8, bgr8, rgba8, "
                                'bgra8 or mono8 (e.g. debayer/convert with image_proc first)')
    a = msg_to_array(msg, np.uint8, ch, max_pixels)
    if enc == 'rgb8':
        return a
    import cv2  # channel shuffles: several times faster than numpy fancy copies
    if enc == 'bgr8':
        return cv2.cvtColor(a, cv2.COLOR_BGR2RGB)
    if enc == 'rgba8':
        return cv2.cvtColor(a, cv2.COLOR_RGBA2RGB)
    if enc == 'bgra8':
        return cv2.cvtColor(a, cv2.COLOR_BGRA2RGB)
    return cv2.cvtColor(a, cv2.COLOR_GRAY2RGB)  # mono8


def depth_from_msg(msg, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[np.ndarray, float]:
    """Depth ``sensor_msgs/Image`` -> (raw HxW array, metres per unit): 16UC1 mm, 32FC1 m."""
    entry = DEPTH_ENCODINGS.get(msg.encoding)
    if entry is None:
        raise InvalidImageError(f"depth encoding '{msg.encoding}' is not supported: publish 16UC1 "
                                '(millimetres) or 32FC1 (metres), aligned to the colour image')
    dtype, scale = entry
    return msg_to_array(msg, dtype, 1, max_pixels), scale


def decode_compressed(msg, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """``sensor_msgs/CompressedImage`` (jpeg/png/...) -> HxWx3 uint8 RGB. The header's dimensions
    are read (PIL, no pixel decoding) and checked before the image is decoded."""
    import cv2
    from PIL import Image as PILImage, UnidentifiedImageError

    data = bytes(msg.data)
    if not data:
        raise InvalidImageError('compressed image has no data')
    try:
        with warnings.catch_warnings():
            warnings.simplefilter('ignore', PILImage.DecompressionBombWarning)
            with PILImage.open(io.BytesIO(data)) as header:
                w, h = header.size
    except PILImage.DecompressionBombError as exc:   # PIL refuses > 2 x its MAX_IMAGE_PIXELS itself
        raise InvalidImageError(f"compressed image ('{msg.format}') is larger than max_image_pixels={max_pixels} "
                                f'({exc}); resize it upstream') from None
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise InvalidImageError(f"compressed image ({len(data)} bytes, format '{msg.format}') is not a "
                                f'readable image ({exc}); publish jpeg or png (image_transport '
                                '"compressed")') from None
    _check_size(w, h, max_pixels, f"compressed image ('{msg.format}')")
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if img is None or img.size == 0:
        raise InvalidImageError(f"compressed image ({len(data)} bytes, format '{msg.format}') could "
                                'not be decoded; publish jpeg or png (image_transport "compressed")')
    return np.ascontiguousarray(img[..., ::-1])


def fill_image_msg(msg, arr: np.ndarray, encoding: str):
    """Fill a ``sensor_msgs/Image`` from a contiguous (H, W[, C]) uint8 array; returns msg."""
    arr = np.ascontiguousarray(arr)
    msg.height, msg.width = int(arr.shape[0]), int(arr.shape[1])
    msg.encoding = encoding
    msg.is_bigendian = False
    msg.step = int(arr.strides[0])
    msg.data = array.array('B', arr.tobytes())
    return msg
