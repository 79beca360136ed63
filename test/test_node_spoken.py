"""Spoken commands through the node (prompt_mode spoken, the default): several targets from one
sentence, "stop"-like commands that clear and never detect, the command echo, transcript message
types other than String, and real speech (espeak-ng -> pocketsphinx -> node -> synthetic scene)."""
import time

import numpy as np
import pytest
from diagnostic_msgs.msg import KeyValue
from rclpy.qos import QoSDurabilityPolicy, QoSProfile, QoSReliabilityPolicy

from evf_sam_ros.msg import PromptCommand
from node_harness import Harness, make_image, wait_for

pytestmark = pytest.mark.ros
H, W = 60, 80
SPOKEN = {'prompt_mode': 'spoken', 'use_depth': False}


def _frames_until(h, pred, timeout=10.0):
    deadline, i = time.monotonic() + timeout, 0
    while time.monotonic() < deadline:
        i += 1
        h.image_pub.publish(make_image(H, W, stamp=(300 + i, 0)))
        if wait_for(pred, 0.15):
            return True
    return False


def _commands(h):
    got = []
    latched = QoSProfile(depth=5, reliability=QoSReliabilityPolicy.RELIABLE,
                         durability=QoSDurabilityPolicy.TRANSIENT_LOCAL)
    h.tester.create_subscription(PromptCommand, '/command', got.append, latched)
    return got


def test_two_targets_then_stop_clears_with_an_empty_result(ros_context):
    with Harness(ros_context, params=SPOKEN) as h:
        assert h.wait_connected()
        commands = _commands(h)
        h.prompt('Um, pick up the red cube and the blue ball please.')
        assert h.wait_prompts(2)
        assert h.node.scheduler.prompts == ['the red cube', 'the blue ball']
        assert _frames_until(h, lambda: h.last('segmentations') is not None and
                             len(h.last('segmentations').segmentations) == 2)
        seg = h.last('segmentations')
        assert seg.command.intent == 'pick' and list(seg.command.targets) == ['the red cube', 'the blue ball']
        assert seg.command.raw.startswith('Um, pick up')
        for word in ('Stop.', 'cancel', 'never mind', 'nothing'):
            h.prompt('the green cylinder')
            assert wait_for(lambda: h.node.scheduler.prompts == ['the green cylinder'])
            h.clear()
            h.prompt(word)
            assert h.wait_prompts(0)
            assert wait_for(lambda: any(len(s.segmentations) == 0 for s in h.received['segmentations']))
            empty = [s for s in h.received['segmentations'] if not s.segmentations][-1]
            assert empty.command.action == 'clear' and empty.command.raw == word
            n = h.count('segmentations')
            h.publish_frames(H, W, 5, first_stamp=500)
            time.sleep(0.3)
            assert all(not s.segmentations for s in h.received['segmentations'][n:]), word
        assert wait_for(lambda: any(c.action == 'clear' for c in commands))


def test_ignored_and_rejected_transcripts_say_why(ros_context):
    with Harness(ros_context, params=SPOKEN) as h:
        assert h.wait_connected()
        commands = _commands(h)
        h.prompt('the red cube')
        assert h.wait_prompts(1)
        h.prompt('um uh')
        assert wait_for(lambda: any(c.action == 'ignore' for c in commands))
        assert h.node.scheduler.prompts == ['the red cube']
        h.prompt('also the green ball')
        assert h.wait_prompts(2)
        assert wait_for(lambda: any(c.action == 'add' for c in commands))
        # 73 words: over the text-token limit (the fake takes the embedded model's)
        h.prompt('find the red cube ' + ' '.join(['left of the blue ball near the green cylinder behind the small '
                                                  'yellow ring'] * 5))
        assert wait_for(lambda: any(c.action == 'rejected' for c in commands))
        rejected = [c for c in commands if c.action == 'rejected'][-1]
        assert 'tokens long' in rejected.reason and list(rejected.targets) == ['the red cube', 'the green ball']
        assert h.node.scheduler.prompts == ['the red cube', 'the green ball']


@pytest.mark.ros_tools
def test_transcript_in_another_message_type(ros_context, ros_domain_id):
    """A whisper_msgs/Transcription-shaped type (a string field, no header): KeyValue.value here,
    published from another participant (as a speech node would); an empty field (a partial
    transcript) is ignored, not taken as 'clear'."""
    import rclpy
    params = dict(SPOKEN, transcript_type='diagnostic_msgs/msg/KeyValue', transcript_field='value')
    with Harness(ros_context, params=params, string_prompts=False) as h:
        other = rclpy.Context()
        rclpy.init(context=other, domain_id=ros_domain_id)
        speech_node = rclpy.create_node('speech_to_text', context=other)
        try:
            pub = speech_node.create_publisher(KeyValue, '/prompt', 10)
            assert wait_for(lambda: pub.get_subscription_count() > 0)
            pub.publish(KeyValue(key='final', value='find the yellow ring'))
            assert h.wait_prompts(1) and h.node.scheduler.prompts == ['the yellow ring']
            pub.publish(KeyValue(key='partial', value=''))
            time.sleep(0.3)
            assert h.node.scheduler.prompts == ['the yellow ring']
        finally:
            speech_node.destroy_node()
            rclpy.shutdown(context=other)


@pytest.mark.ros_tools
def test_unusable_transcript_type_leaves_the_node_unconfigured(ros_context, capfd):
    params = dict(SPOKEN, transcript_type='diagnostic_msgs/msg/KeyValue', transcript_field='nope')
    with Harness(ros_context, params=params) as h:
        assert h.node.predictor is None
    assert "transcript_field 'nope' is not a string field" in capfd.readouterr().err


@pytest.mark.slow
@pytest.mark.voice
def test_spoken_commands_end_in_the_right_target(ros_context):
    """espeak-ng speaks, pocketsphinx (scene grammar) transcribes, the node segments a synthetic
    scene with the embedded model; the result is checked against the scene's ground truth."""
    from evf_sam_ros import speech
    if not (speech.espeak_available() and speech.pocketsphinx_available()):
        pytest.skip('needs espeak-ng (apt) and pocketsphinx (requirements/test.txt)')
    from evf_sam_ros.model import load_model
    from evf_sam_ros.ros.synthetic_camera import scene_messages
    from evf_sam_ros.synthetic.scene import SceneConfig, generate_scene
    from evf_sam_ros.training.metrics import mask_iou

    scene = generate_scene(5, SceneConfig(width=256, height=192))
    # this test is about the speech -> command -> node path, not the model's quality (that is
    # test_default_model_quality): object 2, which the embedded model segments well (IoU 0.92)
    index = 2
    target = scene.objects[index]
    spoken = f'pick up the {target.colour} {target.shape}'
    grammar = speech.scene_grammar()
    import tempfile
    with tempfile.TemporaryDirectory() as d:
        transcript = speech.transcribe(speech.speak(spoken, f'{d}/cmd.wav'), grammar)
    params = dict(SPOKEN, warmup=False, score_threshold=0.3)
    with Harness(ros_context, predictor=load_model(None, device='cpu', dtype='fp32'), params=params) as h:
        assert h.wait_connected()
        h.prompt(transcript)
        assert h.wait_prompts(1), (spoken, transcript)
        rgb, _, _ = scene_messages(scene, h.tester.get_clock().now().to_msg(), 'camera_optical')
        deadline = time.monotonic() + 30

        def both():   # mask and segmentations are separate topics: either may arrive first
            return h.count('mask') > 0 and h.count('segmentations') > 0
        while time.monotonic() < deadline and not both():
            h.image_pub.publish(rgb)
            wait_for(both, 1.0)
        seg, mask = h.last('segmentations'), h.last('mask')
        lm = np.frombuffer(mask.data, np.uint8).reshape(mask.height, mask.width)
        iou = mask_iou(lm == 1, scene.mask(index))
        print(f'spoken {spoken!r} -> heard {transcript!r} -> {list(seg.command.targets)}: IoU {iou:.2f}')
        assert seg.command.intent == 'pick' and seg.segmentations[0].detected
        assert iou > 0.4   # measured 0.92 (embedded demo model, seed 5, object 2)
