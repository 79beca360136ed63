"""ROS-free parts of the node: image conversion, prompt parsing, gating, label maps, stats."""
import math
from types import SimpleNamespace

import numpy as np
import pytest

from evf_sam_ros.errors import InvalidImageError as ImageError
from evf_sam_ros.errors import InvalidPromptError as PromptError
from evf_sam_ros.geometry import Intrinsics
from evf_sam_ros.pipeline import (DepthFrame, PipelineSettings, SegmentationPipeline, build_label_map,
                                  overlay_bgr)
from evf_sam_ros.prompts import parse_prompt_command
from evf_sam_ros.ros.fake_predictor import FakePredictor, FakeResult, disc_mask, parse_fake_spec
from evf_sam_ros.ros.image_codec import decode_compressed, depth_from_msg, fill_image_msg, image_to_rgb
from evf_sam_ros.stats import RateMeter, RollingStats


def _msg(arr, encoding, pad=0, bigendian=False):
    arr = np.ascontiguousarray(arr)
    h, w = arr.shape[:2]
    row = arr[0].nbytes
    buf = np.zeros((h, row + pad), np.uint8)
    buf[:, :row] = arr.view(np.uint8).reshape(h, row)
    return SimpleNamespace(height=h, width=w, encoding=encoding, is_bigendian=bigendian,
                           step=row + pad, data=buf.tobytes())


@pytest.mark.parametrize('pad', [0, 8])
def test_colour_encodings_to_rgb(pad):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 255, (5, 7, 3), dtype=np.uint8)
    assert np.array_equal(image_to_rgb(_msg(rgb, 'rgb8', pad)), rgb)
    assert np.array_equal(image_to_rgb(_msg(rgb[..., ::-1], 'bgr8', pad)), rgb)
    rgba = np.concatenate([rgb, np.full((5, 7, 1), 9, np.uint8)], 2)
    assert np.array_equal(image_to_rgb(_msg(rgba, 'rgba8', pad)), rgb)
    bgra = np.concatenate([rgb[..., ::-1], np.full((5, 7, 1), 9, np.uint8)], 2)
    assert np.array_equal(image_to_rgb(_msg(bgra, 'bgra8', pad)), rgb)
    mono = rgb[..., 0]
    out = image_to_rgb(_msg(mono, 'mono8', pad))
    assert out.shape == (5, 7, 3) and np.array_equal(out[..., 2], mono)


def test_bad_images():
    rgb = np.zeros((4, 6, 3), np.uint8)
    with pytest.raises(ImageError, match="'16UC3' is not supported"):
        image_to_rgb(_msg(rgb, '16UC3'))
    m = _msg(rgb, 'rgb8')
    m.step = 5
    with pytest.raises(ImageError, match='step 5 is smaller'):
        image_to_rgb(m)
    m = _msg(rgb, 'rgb8')
    m.data = m.data[:-20]
    with pytest.raises(ImageError, match='truncated'):
        image_to_rgb(m)
    m = _msg(rgb, 'rgb8')
    m.height = 0
    with pytest.raises(ImageError, match='zero size'):
        image_to_rgb(m)


def test_depth_decoding_and_endianness():
    mm = np.array([[0, 1000], [2500, 65535]], np.uint16)
    d, scale = depth_from_msg(_msg(mm, '16UC1'))
    assert scale == 0.001 and np.array_equal(d, mm)
    be = _msg(mm.byteswap(), '16UC1', bigendian=True)
    assert np.array_equal(depth_from_msg(be)[0], mm)
    f = np.array([[np.nan, 1.5]], np.float32)
    d, scale = depth_from_msg(_msg(f, '32FC1', pad=4))
    assert scale == 1.0 and np.isnan(d[0, 0]) and d[0, 1] == 1.5
    with pytest.raises(ImageError, match="'bgr8' is not supported"):
        depth_from_msg(_msg(np.zeros((2, 2, 3), np.uint8), 'bgr8'))


def test_compressed_and_fill():
    import cv2
    bgr = np.zeros((8, 8, 3), np.uint8)
    bgr[..., 2] = 200   # red
    ok, png = cv2.imencode('.png', bgr)
    rgb = decode_compressed(SimpleNamespace(format='png', data=png.tobytes()))
    assert rgb[0, 0].tolist() == [200, 0, 0]
    with pytest.raises(ImageError, match='not a readable image'):
        decode_compressed(SimpleNamespace(format='jpeg', data=b'garbage'))
    with pytest.raises(ImageError, match='no data'):
        decode_compressed(SimpleNamespace(format='jpeg', data=b''))
    msg = fill_image_msg(SimpleNamespace(), np.arange(12, dtype=np.uint8).reshape(3, 4), 'mono8')
    assert (msg.height, msg.width, msg.step, msg.encoding) == (3, 4, 4, 'mono8')
    assert bytes(msg.data) == bytes(range(12))


def test_prompt_parsing():
    assert parse_prompt_command('') == []
    assert parse_prompt_command('the red mug on the left') == ['the red mug on the left']
    assert parse_prompt_command(' cup ; ;[semantic] table;') == ['cup', '[semantic] table']
    assert parse_prompt_command('a|b', delimiter='|') == ['a', 'b']
    for bad, why in [('   ', 'only whitespace'), (';;', 'only whitespace'),
                     ('x' * 50, 'max_prompt_chars=10'), ('a;b;c', 'max_prompts=2'),
                     ('[semantic]', "only the '[semantic]'")]:
        with pytest.raises(PromptError, match=why.replace('[', r'\[').replace(']', r'\]')):
            parse_prompt_command(bad, max_prompts=2, max_chars=10)


class _Fixed:
    """A predictor returning fixed results (gating and geometry are what is tested)."""

    has_object_score = True

    def __init__(self, results):
        self.results = results

    def encode_image(self, rgb):
        return rgb

    def segment(self, features, prompts):
        return self.results[:len(prompts)]


def test_pipeline_gating_label_map_and_depth():
    h, w = 40, 60
    a = disc_mask(h, w, 20, 20, 8)
    b = disc_mask(h, w, 26, 20, 8)  # overlaps a
    results = [FakeResult('a', a, 0.9), FakeResult('b', b, 0.8), FakeResult('c', a, 0.1),
               FakeResult('d', np.zeros((h, w), bool), 0.99), FakeResult('e', b, 0.9, -1.0)]
    rgb = np.zeros((h, w, 3), np.uint8)
    pipe = SegmentationPipeline(_Fixed(results), PipelineSettings(score_threshold=0.5, min_mask_area=10,
                                                                  mask_erosion_px=1))
    ts = pipe.run(rgb, list('abcde')).targets
    assert [t.detected for t in ts] == [True, True, False, False, False]
    assert 'score' in ts[2].reason and 'area' in ts[3].reason and 'object score' in ts[4].reason
    assert ts[0].area == a.sum() and ts[0].centroid == pytest.approx((20, 20))
    lm = build_label_map((h, w), ts)
    assert np.array_equal(lm == 1, a)                    # earlier prompt wins on overlap
    assert np.array_equal(lm == 2, b & ~a)
    assert np.array_equal(lm > 0, a | b)                 # union of the detected masks
    # depth decides only the 3D part: flat 1 m -> a position; NaN -> still detected, with the reason
    k = Intrinsics(100.0, 100.0, 29.5, 19.5)
    depth = np.ones((h, w), np.float32)
    t = pipe.run(rgb, ['a'], depth=lambda: (DepthFrame(depth, 1.0), k, '')).targets[0]
    assert t.has_position and t.centroid3d.position[2] == 1.0 and t.position_reason == ''
    t = pipe.run(rgb, ['a'], depth=lambda: (DepthFrame(depth * np.nan, 1.0), k, '')).targets[0]
    assert t.detected and not t.has_position and 'no valid depth' in t.position_reason
    t = pipe.run(rgb, ['a'], depth=lambda: (None, None, 'no camera_info received')).targets[0]
    assert t.detected and t.position_reason == 'no camera_info received'
    ov = overlay_bgr(rgb, pipe.run(rgb, ['a', 'b']).targets)
    assert ov.shape == (h, w, 3) and ov[a].any()


def test_stats():
    s = RollingStats(5)
    assert math.isnan(s.percentile(50))
    for v in range(10):
        s.add(v)
    assert s.percentile(50) == 7.0
    t = [0.0]
    r = RateMeter(2.0, clock=lambda: t[0])
    for i in range(11):
        t[0] = i * 0.1
        r.tick()
    assert r.rate() == pytest.approx(10.0)
    t[0] = 10.0
    assert r.rate() == 0.0


def test_fake_predictor():
    assert parse_fake_spec('fake:delay=0.2,score=0.5') == {'delay': 0.2, 'score': 0.5}
    p = FakePredictor()
    img = np.zeros((30, 40, 3), np.uint8)
    img[0, 0, :2] = (3, 1)
    f = p.encode_image(img)
    assert f['value'] == 3 + 256
    r = p.segment(f, ['x', 'absent y'])
    assert r[0].mask.sum() > 0 and r[1].score == 0.0 and not r[1].mask.any()
    with pytest.raises(RuntimeError):
        p.segment(f, ['fail'])
    ids, att = p.tokenize(['a b c', 'd'])
    assert att.sum(1).tolist() == [5, 3]


def test_bad_parameter_overrides_do_not_crash_the_node(ros_context, capfd):
    from rclpy.parameter import Parameter

    from evf_sam_ros.ros.node import SegmentNode
    node = SegmentNode(context=ros_context, predictor_factory=lambda *a: FakePredictor(),
                       parameter_overrides=[
                           Parameter('score_threshold', value=1),        # int for a double
                           Parameter('max_rate_hz', value=5000.0),       # out of range
                           Parameter('max_prompts', value='many'),       # wrong type
                           Parameter('mode', value='sometimes'),         # not a choice
                           Parameter('autostart', value=False)])
    try:
        assert node.get_parameter('score_threshold').value == 1.0
        assert node.get_parameter('max_rate_hz').value == 0.0
        assert node.get_parameter('max_prompts').value == 8
        assert node._p['mode'] == 'continuous'
        err = capfd.readouterr().err
        assert 'max_rate_hz=5000.0 rejected' in err and "max_prompts='many' rejected" in err
        assert "mode must be one of continuous, once" in err
    finally:
        node.close()
        node.destroy_node()


def test_an_exception_in_a_transition_is_logged_with_its_cause(ros_context, capfd, monkeypatch):
    """rclpy turns it into ERROR silently: the node logs what was raised and where, then stays unconfigured."""
    from lifecycle_msgs.msg import State
    from rclpy.lifecycle import TransitionCallbackReturn
    from rclpy.parameter import Parameter

    from evf_sam_ros.ros import node as node_module

    def broken_outputs(node):
        raise RuntimeError('boom')
    monkeypatch.setattr(node_module, 'Outputs', broken_outputs)
    node = node_module.SegmentNode(context=ros_context, predictor_factory=lambda *a: FakePredictor(),
                                   parameter_overrides=[Parameter('autostart', value=False)])
    try:
        assert node.trigger_configure() == TransitionCallbackReturn.ERROR
        assert node._state_machine.current_state[0] == State.PRIMARY_STATE_UNCONFIGURED
        err = capfd.readouterr().err
        assert 'on_configure raised RuntimeError: boom' in err and 'in broken_outputs' in err
        assert 'lifecycle error: releasing the model' in err
        assert node.diagnostics_values()['load_error'] == 'RuntimeError: boom'
    finally:
        node.close()
        node.destroy_node()
