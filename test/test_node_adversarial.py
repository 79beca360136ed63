"""The node under hostile input and careless operation, each case a regression test of a defect
that was seen: logging that crashed the process, prompts over the model's real token limit,
malformed messages that allocated gigabytes, depth that erased detections, lifecycle transitions
with work in flight. Model limits come from the real embedded model, not from the fake."""
import time
import tracemalloc
from types import SimpleNamespace

import numpy as np
import pytest
from rclpy.parameter import Parameter

from evf_sam_ros.errors import InvalidImageError
from evf_sam_ros.model import load_model
from evf_sam_ros.ros.fake_predictor import FakePredictor
from evf_sam_ros.ros.image_codec import decode_compressed, depth_from_msg, image_to_rgb
from node_harness import Harness, camera_info, depth_image, make_image, wait_for

pytestmark = pytest.mark.ros
H, W = 60, 80


def _until(h, name, n=1, make=None, timeout=10.0):
    deadline, i = time.monotonic() + timeout, 0
    while time.monotonic() < deadline:
        i += 1
        h.image_pub.publish(make(i) if make else make_image(H, W, stamp=(50 + i, 0)))
        if wait_for(lambda: h.count(name) >= n, 0.15):
            return True
    return False


@pytest.fixture(scope='module')
def default_model():
    return load_model(None, device='cpu', dtype='fp32')


# ---- 1. logging at every severity, in every order, never kills the node or its worker ----------
def test_logging_severities_in_any_order_keep_the_stream_alive(ros_context, capfd):
    with Harness(ros_context, params={'max_image_age': 0.3, 'depth_sync_tolerance': 0.01}) as h:
        assert h.wait_connected()
        log = h.node.log
        for order in (('warn', 'error', 'info'), ('error', 'info', 'warn'), ('info', 'warn', 'error')):
            for sev in order:
                getattr(log, sev)(f'{sev} message', 'test', 0.0)
        h.set_prompt('cup', 1)
        h.info_pub.publish(camera_info(H, W))
        h.depth_pub.publish(depth_image(np.ones((H, W), np.float32), stamp=(1, 0)))   # out of sync: WARN
        h.prompt('fail here')                                                            # ERROR per frame
        assert wait_for(lambda: h.node.scheduler.prompts == ['fail here'])
        assert _until(h, 'segmentations', 0) and wait_for(
            lambda: h.node.diagnostics_values()['inference_errors'] >= 1)
        h.prompt('   ')                                                                  # WARN: rejected
        h.image_pub.publish(make_image(H, W, stamp=(3, 0)))
        time.sleep(0.5)                                                                  # stale: WARN
        h.set_prompt('cup', 1)
        n = h.count('segmentations')
        assert _until(h, 'segmentations', n + 5), 'the stream stopped after mixed-severity logs'
        assert h.node.worker.running
    err = capfd.readouterr().err
    assert 'severity cannot be changed' not in err and 'Traceback' not in err


def test_a_dead_worker_is_reported_and_restarted(ros_context):
    with Harness(ros_context, params={'use_depth': False}) as h:
        assert h.wait_connected()
        h.set_prompt('cup', 1)
        real = h.node.scheduler.wait_job
        calls = []

        def dies_once(timeout=0.5):
            if not calls:
                calls.append(1)
                raise SystemExit('simulated fault outside the per-frame guard')
            return real(timeout)
        h.node.scheduler.wait_job = dies_once
        assert wait_for(lambda: h.node.diagnostics_values()['worker_restarts'] == 1, 5.0)
        assert wait_for(lambda: any(s.level == s.ERROR and 'worker' in s.message
                                    for d in h.received['diagnostics'] for s in d.status), 5.0)
        n = h.count('segmentations')
        assert _until(h, 'segmentations', n + 2), 'no output after the worker restart'


# ---- 2. prompts over the REAL model's text-token limit are rejected at prompt time --------------
def test_prompt_over_the_real_models_token_limit_is_rejected(ros_context, default_model):
    params = {'use_depth': False, 'score_threshold': -1.0, 'min_mask_area': 1, 'warmup': False}
    with Harness(ros_context, predictor=default_model, params=params) as h:
        assert h.wait_connected()
        h.set_prompt('the red cube', 1)
        long = ' '.join(['the big red cube left of the small blue ball'] * 7)   # 70 words, > 62 tokens
        assert len(long) < h.node.params['max_prompt_chars']
        h.prompt(long)
        assert wait_for(lambda: h.node.diagnostics_values()['prompts_rejected'] == 1)
        assert 'tokens long' in h.node.log.last_message['prompt']
        assert h.node.scheduler.prompts == ['the red cube']
        assert _until(h, 'segmentations', 2, timeout=30)
        assert h.last('segmentations').segmentations[0].prompt == 'the red cube'


# ---- 4. tiny messages must not cost gigabytes ---------------------------------------------------
@pytest.mark.parametrize('encoding', ['rgb8', '32FC1', '16UC1'])
def test_huge_step_in_a_tiny_message_allocates_nothing(encoding):
    msg = SimpleNamespace(height=1, width=1, encoding=encoding, is_bigendian=False,
                          step=2**32 - 1, data=bytes(4))
    tracemalloc.start()
    try:
        out = (image_to_rgb(msg) if encoding == 'rgb8' else depth_from_msg(msg)[0])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # the defect allocated ~4 GB; the margin is for other threads of the test process (tracemalloc
    # counts them too)
    assert out.size >= 1 and peak < 24_000_000, peak
    msg.height = 3   # now the bytes cannot cover the rows: rejected, still without allocating
    with pytest.raises(InvalidImageError, match='truncated'):
        image_to_rgb(msg) if encoding == 'rgb8' else depth_from_msg(msg)


def test_oversized_images_rejected_before_decoding():
    import cv2
    ok, png = cv2.imencode('.png', np.zeros((8192, 8192), np.uint8), [cv2.IMWRITE_PNG_COMPRESSION, 9])
    msg = SimpleNamespace(format='png', data=png.tobytes())
    assert len(msg.data) < 400_000
    tracemalloc.start()
    try:
        with pytest.raises(InvalidImageError, match='max_image_pixels'):
            decode_compressed(msg, max_pixels=8_000_000)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # decoding would take 64 MB (200 MB as RGB); the margin is for other threads of the test process
    # (tracemalloc counts them too: 8 MB seen in CI)
    assert peak < 24_000_000, peak
    big = SimpleNamespace(height=5000, width=5000, encoding='rgb8', is_bigendian=False, step=15000,
                          data=bytes(3))
    with pytest.raises(InvalidImageError, match='max_image_pixels'):
        image_to_rgb(big, max_pixels=1_000_000)


def test_malformed_frames_through_the_node_are_warnings_not_errors(ros_context, capfd):
    with Harness(ros_context, params={'use_depth': False}) as h:
        assert h.wait_connected()
        h.set_prompt('cup', 1)
        bad = make_image(2, 1)
        bad.step = 2**32 - 1   # 6 data bytes claiming two rows of 4 GB
        h.image_pub.publish(bad)
        assert wait_for(lambda: h.node.diagnostics_values()['bad_frames'] >= 1)
        assert _until(h, 'segmentations')
    err = capfd.readouterr().err
    assert '[WARN]' in err and 'image rejected' in err
    assert not any('[ERROR]' in line and 'image rejected' in line for line in err.splitlines())


# ---- 5./6. depth decides only the 3D part --------------------------------------------------------
@pytest.mark.parametrize('case', ['inf', 'zero', 'negative', 'millimetres_in_32FC1', 'stamp_10s_early',
                                  'stamp_1h_late'])
def test_bad_depth_keeps_the_detection_and_says_why(ros_context, case, capfd):
    depth, stamp = np.ones((H, W), np.float32), None
    if case == 'inf':
        depth[:] = np.inf
    elif case == 'zero':
        depth[:] = 0.0
    elif case == 'negative':
        depth[:] = -1.0
    elif case == 'millimetres_in_32FC1':
        depth[:] = 800.0
    elif case == 'stamp_10s_early':
        stamp = -10
    else:
        stamp = 3600
    with Harness(ros_context) as h:
        assert h.wait_connected()
        h.set_prompt('cup', 1)

        def frame(i):
            s = 100 + i
            h.info_pub.publish(camera_info(H, W))
            h.depth_pub.publish(depth_image(depth, stamp=(s + (stamp or 0), 0)))
            return make_image(H, W, stamp=(s, 0))
        assert _until(h, 'segmentations', 2, make=frame)
        s = h.last('segmentations').segmentations[0]
        assert s.detected and not s.has_position and s.position_reason, s
        assert wait_for(lambda: h.node.diagnostics_values()['no_position'] >= 1)
    err = capfd.readouterr().err
    if case == 'millimetres_in_32FC1':
        assert err.count('looks like millimetres') == 1
    if case.startswith('stamp'):
        assert 'closest depth image is stamped' in s.position_reason


# ---- 7. degenerate image shapes are rejected with a message -------------------------------------
@pytest.mark.parametrize('shape', [(1, 2000), (2000, 1)])
def test_extreme_aspect_ratio_is_rejected_by_the_real_model(ros_context, default_model, shape):
    params = {'use_depth': False, 'warmup': False}
    with Harness(ros_context, predictor=default_model, params=params) as h:
        assert h.wait_connected()
        h.set_prompt('the red cube', 1)
        h.image_pub.publish(make_image(*shape))
        assert wait_for(lambda: h.node.diagnostics_values()['bad_frames'] >= 1, 20)
        assert 'aspect ratio' in h.node.log.last_message['image']
        assert _until(h, 'segmentations', timeout=30)


# ---- 11. silently wrong input is refused ----------------------------------------------------------
def test_implausible_camera_info_and_invisible_prompts_are_refused(ros_context):
    with Harness(ros_context) as h:
        assert h.wait_connected()
        info = camera_info(H, W)
        info.k[0] = info.k[4] = 1e-12
        h.info_pub.publish(info)
        assert wait_for(lambda: 'implausible' in h.node.log.last_message.get('camera_info', ''))
        h.set_prompt('cup', 1)
        h.prompt('\u200b\u200c\u2060\ufeff')
        assert wait_for(lambda: h.node.diagnostics_values()['prompts_rejected'] == 1)
        assert 'invisible' in h.node.log.last_message['prompt'] and h.node.scheduler.prompts == ['cup']


def test_parameter_ranges_and_integer_for_float_at_run_time(ros_context):
    with Harness(ros_context, params={'use_depth': False}) as h:
        assert not h.node.set_parameters([Parameter('score_threshold', value=1.5)])[0].successful
        r = h.node.set_parameters([Parameter('max_rate_hz', value=5)])[0]
        assert r.successful, r.reason
        assert h.node.params['max_rate_hz'] == 5.0 and h.node.scheduler.max_rate_hz == 5.0


# ---- 10. messages say what happened -------------------------------------------------------------
def test_enable_while_inactive_and_deactivate_are_explained(ros_context, capfd):
    from std_srvs.srv import SetBool
    with Harness(ros_context, params={'autostart': False}) as h:
        cli = h.tester.create_client(SetBool, '/enable')
        r = h.call(cli, SetBool.Request(data=True))
        assert 'starts once the node is active (now unconfigured)' in r.message
        h.node.trigger_configure()
        h.node.trigger_activate()
        h.node.trigger_deactivate()
    assert 'deactivated: inference stopped' in capfd.readouterr().err


# ---- 3. a service call in flight during deactivate / cleanup is answered, never crashes ---------
@pytest.mark.parametrize('transition', ['deactivate', 'cleanup'])
def test_segment_call_in_flight_during_a_transition(ros_context, transition):
    from evf_sam_ros.srv import Segment
    pred = FakePredictor(delay=0.5)
    with Harness(ros_context, predictor=pred, params={'use_depth': False, 'warmup': False}) as h:
        assert h.wait_connected()
        cli = h.tester.create_client(Segment, '/segment')
        assert cli.wait_for_service(timeout_sec=10)
        fut = cli.call_async(Segment.Request(prompts=['cup'], image=make_image(H, W)))
        assert wait_for(lambda: len(pred.calls) >= 1, 5)
        h.node.trigger_deactivate()
        if transition == 'cleanup':
            h.node.trigger_cleanup()
        assert wait_for(fut.done, 10), 'the in-flight call was never answered'
        assert h.node.predictor is None if transition == 'cleanup' else h.node.predictor is pred
        r = h.call(cli, Segment.Request(prompts=['cup'], image=make_image(H, W)))
        assert not r.success and 'not active' in r.message


def test_lifecycle_churn_while_frames_and_prompts_stream(ros_context, capfd, monkeypatch):
    """Deactivate/activate/cleanup/configure while a 30 Hz camera and a burst of prompt commands (accepted,
    rejected, clear) keep arriving: no callback meets a destroyed publisher, no error, and the node
    segments again afterwards."""
    import threading

    from evf_sam_ros.ros.outputs import Outputs
    prompt_set, frame = Outputs.prompt_set, Outputs.frame
    errors = []   # publishing failures of ours (rclpy only prints a callback's exception, later)

    def recorded(publish, delay):
        def wrapper(self, *args):
            time.sleep(delay)   # widen the publish window so that a teardown overlaps it
            try:
                return publish(self, *args)
            except Exception as exc:  # noqa: BLE001
                errors.append(repr(exc))
                raise
        return wrapper
    monkeypatch.setattr(Outputs, 'prompt_set', recorded(prompt_set, 0.02))
    monkeypatch.setattr(Outputs, 'frame', recorded(frame, 0.005))
    pred = FakePredictor(delay=0.02)
    with Harness(ros_context, predictor=pred, params={'use_depth': False, 'warmup': False,
                                                     'max_prompt_chars': 40}) as h:
        assert h.wait_connected()
        stop = threading.Event()
        texts = ['cup', 'cup; plate', 'x' * 60, '', 'ball']   # 'x' * 60: rejected (over max_prompt_chars)

        def talker():
            i = 0
            while not stop.is_set():
                h.prompt(texts[i % len(texts)])
                i += 1
                time.sleep(0.005)
        t = threading.Thread(target=talker, daemon=True)
        with h.streaming(H, W):
            t.start()
            try:
                for _ in range(4):
                    h.node.trigger_deactivate()
                    h.node.trigger_activate()
                    h.node.trigger_deactivate()
                    h.node.trigger_cleanup()
                    h.node.trigger_configure()
                    h.node.trigger_activate()
            finally:
                stop.set()
                t.join()
        assert errors == [], errors[:3]
        assert h._thread.is_alive(), f'the executor died (a callback raised): {h.spin_error}'
        assert h.node.worker.running
        h.set_prompt('cup', 1)
        n = h.count('segmentations')
        assert _until(h, 'segmentations', n + 2)
    err = capfd.readouterr().err
    assert 'Traceback' not in err and 'InvalidHandle' not in err and '[ERROR]' not in err, err[-3000:]


def test_lifecycle_shutdown_leaves_other_nodes_of_the_process_running(ros_context):
    """The shutdown transition ends this node (run_node then leaves), not the context that other nodes
    of the same process share (composition, a user's own executable)."""
    with Harness(ros_context, params={'use_depth': False, 'warmup': False}) as h:
        assert h.wait_connected()
        h.node.trigger_deactivate()
        h.node.trigger_shutdown()
        assert wait_for(h.node.finished.is_set, 3.0)
        time.sleep(0.5)
        assert ros_context.ok()
        assert h.node.predictor is None
