"""Hand-written sensor_msgs/Image <-> numpy conversion (no cv_bridge).

Reading works on any object with the ``sensor_msgs/Image`` fields (``height``, ``width``,
``encoding``, ``is_bigendian``, ``step``, ``data``) and honours ``step`` (row padding); writing
fills ``data`` with an ``array.array('B')`` (fast; a list or bytes is checked element by element).
"""
from __future__ import annotations

import array

import numpy as np

__all__ = [
    'COLOUR_ENCODINGS',
    'ImageError',
    'decode_compressed',
    'depth_from_msg',
    'fill_image_msg',
    'image_to_rgb',
    'msg_to_array',
]

#: colour encodings the node accepts -> channels
COLOUR_ENCODINGS = {'rgb8': 3, 'bgr8': 3, 'rgba8': 4, 'bgra8': 4, 'mono8': 1}
_DEPTH_DTYPES = {'16UC1': np.uint16, 'mono16': np.uint16, '32FC1': np.float32}


class ImageError(ValueError):
    """An image message that cannot be used; the message says what was wrong and what to do."""


def msg_to_array(msg, dtype, channels: int) -> np.ndarray:
    """View ``msg.data`` as an (H, W[, C]) array of ``dtype``, checking sizes and honouring step."""
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    if h <= 0 or w <= 0:
        raise ImageError(f'image has zero size ({w}x{h}); check the camera driver')
    itemsize = np.dtype(dtype).itemsize
    row = w * channels * itemsize
    if step < row:
        raise ImageError(f'image step {step} is smaller than width*bytes per pixel = {row} '
                         f'({w}x{h} {msg.encoding}); the message is inconsistent')
    data = msg.data
    n = len(data)
    if n < step * (h - 1) + row:
        raise ImageError(f'image data has {n} bytes but {w}x{h} {msg.encoding} with step {step} '
                         f'needs {step * h}; the message is truncated or inconsistent')
    buf = np.frombuffer(data, dtype=np.uint8, count=min(n, step * h))
    if step == row:
        a = buf[:h * row].view(dtype)
    else:
        if n < step * h:  # last row without padding
            buf = np.concatenate([buf, np.zeros(step * h - n, np.uint8)])
        a = buf.reshape(h, step)[:, :row].copy().view(dtype)  # copy: rows must be contiguous
    if itemsize > 1 and bool(getattr(msg, 'is_bigendian', False)) != (np.little_endian is False):
        a = a.byteswap()
    return a.reshape((h, w, channels) if channels > 1 else (h, w))


def image_to_rgb(msg) -> np.ndarray:
    """``sensor_msgs/Image`` (rgb8, bgr8, rgba8, bgra8, mono8) -> HxWx3 uint8 RGB."""
    enc = msg.encoding
    ch = COLOUR_ENCODINGS.get(enc)
    if ch is None:
        raise ImageError(f"image encoding '{enc}' is not supported: publish rgb8, bgr8, rgba8, "
                         'bgra8 or mono8 (e.g. debayer/convert with image_proc first)')
    a = msg_to_array(msg, np.uint8, ch)
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


def depth_from_msg(msg) -> tuple[np.ndarray, float]:
    """Depth ``sensor_msgs/Image`` -> (raw HxW array, metres per unit): 16UC1 mm, 32FC1 m."""
    dtype = _DEPTH_DTYPES.get(msg.encoding)
    if dtype is None:
        raise ImageError(f"depth encoding '{msg.encoding}' is not supported: publish 16UC1 "
                         '(millimetres) or 32FC1 (metres), aligned to the colour image')
    a = msg_to_array(msg, dtype, 1)
    return a, (1.0 if dtype is np.float32 else 0.001)


def decode_compressed(msg) -> np.ndarray:
    """``sensor_msgs/CompressedImage`` (jpeg/png/...) -> HxWx3 uint8 RGB."""
    import cv2
    data = np.frombuffer(msg.data, dtype=np.uint8)
    if data.size == 0:
        raise ImageError('compressed image has no data')
    img = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if img is None or img.size == 0:
        raise ImageError(f"compressed image ({data.size} bytes, format '{msg.format}') could not "
                         'be decoded; publish jpeg or png (image_transport "compressed")')
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
