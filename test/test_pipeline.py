"""The ROS-free pipeline and scheduler: prompt checks by the loaded model (cached), one model user at
a time, whole settings snapshots, gating shared with the evaluation, the latest-frame slot, depth by
stamp, frame-loss estimate. No rclpy."""
import threading
import time

import numpy as np
import pytest

from evf_sam_ros.errors import InvalidPromptError
from evf_sam_ros.pipeline import PipelineSettings, SegmentationPipeline, gate
from evf_sam_ros.ros.fake_predictor import FakePredictor
from evf_sam_ros.scheduling import DepthBuffer, FrameScheduler
from evf_sam_ros.stats import FrameLossMeter

RGB = np.zeros((40, 60, 3), np.uint8)


def test_prompt_check_uses_the_model_and_is_cached():
    pred = FakePredictor()
    calls = []
    real = pred.tokenize
    pred.tokenize = lambda prompts: calls.append(tuple(prompts)) or real(prompts)
    pipe = SegmentationPipeline(pred)
    for _ in range(3):
        pipe.check_prompts(['the cup', 'the bowl'])
    long = ['word ' * (pred.max_text_tokens + 1)]
    for _ in range(2):
        with pytest.raises(InvalidPromptError, match='tokens long'):
            pipe.check_prompts(long)
    assert calls == [('the cup', 'the bowl'), tuple(long)]


def test_real_model_limit_and_auto_device(tmp_path):
    from evf_sam_ros.model import load_model
    pred = load_model(None, device='auto', dtype='auto')
    assert str(pred.device) == 'cpu' and str(pred.dtype) == 'torch.float32'   # no CUDA here
    pipe = SegmentationPipeline(pred)
    pipe.check_prompts(['the red cube'])
    with pytest.raises(InvalidPromptError, match='tokens long'):
        pipe.check_prompts([' '.join(f'cube{i}' for i in range(80))])


def test_one_model_user_at_a_time():
    pred = FakePredictor(delay=0.05)
    pipe = SegmentationPipeline(pred)
    threads = [threading.Thread(target=pipe.run, args=(RGB, ['cup'])) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert pred.max_concurrent == 1 and len(pred.calls) == 4


def test_a_frame_sees_one_settings_snapshot():
    pred = FakePredictor()
    pipe = SegmentationPipeline(pred, PipelineSettings(score_threshold=0.5))
    segment = pred.segment

    def segment_then_change(features, prompts):   # a parameter update lands during inference
        out = segment(features, prompts)
        pipe.update_settings(score_threshold=0.99)
        return out
    pred.segment = segment_then_change
    assert pipe.run(RGB, ['cup']).targets[0].detected          # gated with the settings it started with
    assert not pipe.run(RGB, ['cup']).targets[0].detected      # the next frame sees the new ones
    with pytest.raises(TypeError):
        pipe.update_settings(no_such_setting=1)


def test_gate_and_the_evaluation_agree():
    """The evaluation scores what the node would report: its gating (score, object score, area) and its
    3D centroid, through the same pipeline."""
    from types import SimpleNamespace

    from evf_sam_ros.geometry import Intrinsics
    from evf_sam_ros.training.datasets import Expr, Sample
    from evf_sam_ros.training.evaluate import evaluate_predictor

    assert 'object score' in gate(0.9, -1.0, 100, PipelineSettings(), True)
    assert gate(0.9, -1.0, 100, PipelineSettings(), False) == ''   # SAM-1: no object score
    assert 'min_mask_area' in gate(0.9, None, 10, PipelineSettings(min_mask_area=50), False)
    big, small = np.zeros((40, 40), bool), np.zeros((40, 40), bool)
    big[5:25, 5:25] = True
    small[30:35, 30:35] = True   # 25 px < the node's min_mask_area (50)
    # prompt -> (mask, score, object score): each case fails one of the node's gates, or none
    cases = {'ok': (big, 0.9, 1.0), 'low score': (big, 0.2, 1.0), 'no object': (big, 0.9, -1.0),
             'tiny': (small, 0.9, 1.0), 'nan': (big, float('nan'), 1.0)}
    pred = SimpleNamespace(has_object_score=True, encode_image=lambda rgb: {},
                           segment=lambda f, prompts: [SimpleNamespace(prompt=p, mask=cases[p][0], score=cases[p][1],
                                                                       object_score=cases[p][2]) for p in prompts])
    exprs = [Expr(p, cases[p][0], kind=p.replace(' ', '_')) for p in cases]
    scene = SimpleNamespace(depth=np.full((40, 40), 2.0, np.float32), intrinsics=Intrinsics(50, 50, 20, 20),
                            mask=lambda i: big, objects=[SimpleNamespace(center_cam=np.array([0.0, 0.0, 2.0]))])
    for e in exprs:
        e.target = 0
    sample = Sample(np.zeros((40, 40, 3), np.uint8), exprs, scene=scene)
    raw = evaluate_predictor(pred, [sample])
    gated = evaluate_predictor(pred, [sample], score_threshold=0.5)
    # each expression's ground truth is its own mask: raw masks all count (the paper's protocol, whatever
    # the score); gated, only what the node reports is right
    assert {k: v['gIoU'] for k, v in raw['scores'].items() if k != 'all'} == \
        {'ok': 1.0, 'low_score': 1.0, 'no_object': 1.0, 'tiny': 1.0, 'nan': 1.0}
    assert {k: v['gIoU'] for k, v in gated['scores'].items() if k != 'all'} == \
        {'ok': 1.0, 'low_score': 0.0, 'no_object': 0.0, 'tiny': 0.0, 'nan': 0.0}
    assert gated['centroid_error_m']['ok']['median_surface'] == pytest.approx(0.0, abs=1e-9)
    assert set(gated['centroid_error_m']) == {'all', 'ok'}   # only reported targets have a 3D position


def test_scheduler_keeps_only_the_latest_frame_and_respects_age_and_rate():
    s = FrameScheduler(max_age_s=0.2)
    s.configure(active=True)
    s.set_prompts(['cup'])
    for i in range(3):
        s.put(f'frame{i}')
    job, _ = s.wait_job(0.1)
    assert job.frame == 'frame2' and s.counts.dropped == 2
    s.put('old', now=time.monotonic() - 1.0)
    job, note = s.wait_job(0.05)
    assert job is None and note == 'stale' and s.counts.stale == 1
    s.configure(max_rate_hz=5.0, max_age_s=1.0)
    s.put('a')
    assert s.wait_job(0.3)[0].frame == 'a'
    s.put('b')
    assert s.wait_job(0.05)[0] is None        # within 1/5 s of the last start
    assert s.wait_job(0.3)[0].frame == 'b'


def test_once_mode_and_superseded_commands():
    s = FrameScheduler(mode='once')
    s.configure(active=True)
    s.set_prompts(['cup'])
    s.set_prompts(['bowl'])                    # replaces 'cup' before any frame
    assert s.counts.superseded == 1
    s.put('f1')
    job, _ = s.wait_job(0.05)
    assert job.prompts == ['bowl']
    s.put('f2')
    assert s.wait_job(0.05)[0] is None         # one result per command


def test_depth_buffer_by_stamp():
    b = DepthBuffer()
    assert b.closest(10**9, 0.05, wait_s=0)[1] == 'no depth image received'
    b.add(10**9, 'd1')
    b.add(2 * 10**9, 'd2')
    assert b.closest(2 * 10**9 + 10**7, 0.05, wait_s=0) == ('d2', '')
    item, why = b.closest(12 * 10**9, 0.05, wait_s=0)
    assert item is None and '10.000 s before' in why
    assert b.closest(12 * 10**9, 0.0, wait_s=0) == ('d2', '')   # tolerance 0: the newest


def test_frame_loss_estimate_from_stamps():
    rng = np.random.default_rng(0)
    m = FrameLossMeter()
    period = 10**9 // 30
    for i in range(600):
        if rng.random() < 0.25:                # a quarter of the camera's frames arrive
            m.add(10**9 + i * period)
    loss, hz = m.estimate()
    assert 0.65 < loss < 0.85 and 25 < hz < 35
    full = FrameLossMeter()
    for i in range(100):
        full.add(10**9 + i * period)
    assert full.estimate()[0] < 0.02
