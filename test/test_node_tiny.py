"""The node in-process with a real (tiny, random-weight) checkpoint: the published label map is
exactly the union of the per-prompt masks the model gives for the same frame."""
import numpy as np
import pytest

from evf_sam_ros.model import load_model
from node_harness import Harness, make_image, wait_for

pytestmark = pytest.mark.ros
H, W = 60, 80


def test_label_map_is_union_of_model_masks(ros_context, tiny_checkpoint_sam1):
    pred = load_model(str(tiny_checkpoint_sam1), device='cpu', dtype='fp32')
    params = {'mode': 'once', 'use_depth': False, 'score_threshold': -1.0, 'min_mask_area': 1,
              'warmup': False}
    with Harness(ros_context, predictor=pred, params=params) as h:
        assert h.wait_connected()
        prompts = ['the red cup', 'the table', '[semantic] floor']
        h.set_prompt('; '.join(prompts), 3)
        img = make_image(H, W, value=7, stamp=(3, 5))
        h.image_pub.publish(img)
        assert wait_for(lambda: h.count('segmentations') and h.count('mask'), 60)
        seg, mask = h.last('segmentations'), h.last('mask')
        assert seg.header.stamp.sec == 3 and mask.header.frame_id == 'camera_optical'
        rgb = np.frombuffer(img.data, np.uint8).reshape(H, W, 3)
        results = pred.segment(pred.encode_image(rgb), prompts)
        expected = np.zeros((H, W), np.uint8)
        for k in range(len(results), 0, -1):        # earlier prompts win overlaps
            expected[results[k - 1].mask] = k
        lm = np.frombuffer(mask.data, np.uint8).reshape(H, W)
        assert np.array_equal(lm, expected)
        for k, (s, r) in enumerate(zip(seg.segmentations, results), start=1):
            assert s.prompt == r.prompt and s.label == k
            assert s.score == pytest.approx(r.score, abs=1e-6)
            assert s.detected == bool(r.mask.any())
            assert s.area == int(r.mask.sum())


def test_default_loader_device_auto_on_cpu_and_release(ros_context, tiny_checkpoint_sam1, capfd):
    """No injected factory: model_path -> evf_sam_ros.model.load_model; device auto falls back to
    the CPU with a warning, dtype auto -> fp32; cleanup drops the model."""
    import rclpy
    import torch
    from rclpy.parameter import Parameter

    from evf_sam_ros.ros.node import SegmentNode
    threads = torch.get_num_threads()   # the node sets it process-wide; restored below
    node = SegmentNode(context=ros_context, parameter_overrides=[
        Parameter('model_path', value=str(tiny_checkpoint_sam1)), Parameter('warmup', value=False),
        Parameter('torch_threads', value=1)])
    try:
        assert node._state_label() == 'active'
        pred = node.predictor
        assert str(pred.device) == 'cpu' and 'float32' in str(pred.dtype)
        assert 'CUDA is not available' in capfd.readouterr().err
        d = node.diagnostics_values()
        assert d['device'] == 'cpu' and d['model'] and d['gpu_memory_mb'] == 'n/a'
        node.trigger_deactivate()
        node.trigger_cleanup()
        assert node.predictor is None and node._state_label() == 'unconfigured'
    finally:
        node.close()
        node.destroy_node()
        torch.set_num_threads(threads)
    assert rclpy.ok(context=ros_context)
