"""`evf-sam segment` / `evf-sam info` on a tiny checkpoint."""
import json
import subprocess
import sys

import numpy as np
from PIL import Image

from evf_sam_ros.cli import main


def _write_image(path, h=48, w=64):
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(path)
    return path


def test_segment_writes_masks_overlay_and_summary(tmp_path, tiny_checkpoint_sam2):
    image = _write_image(tmp_path / 'scene.png')
    out = tmp_path / 'out'
    rc = main(['segment', str(image), 'the red cup', '[semantic] table',
               '--model', str(tiny_checkpoint_sam2), '--device', 'cpu', '--out', str(out)])
    assert rc == 0
    summary = json.loads((out / 'summary.json').read_text())
    assert [r['prompt'] for r in summary['results']] == ['the red cup', '[semantic] table']
    assert summary['image_size_hw'] == [48, 64]
    assert set(summary['timings_ms']) == {'load', 'encode_image', 'segment_all_prompts'}
    for entry in summary['results']:
        mask = np.asarray(Image.open(out / entry['mask_file']))
        assert mask.shape == (48, 64) and set(np.unique(mask)) <= {0, 255}
        assert entry['area'] == int((mask == 255).sum())
        assert entry['object_score'] is not None          # SAM-2 checkpoint
    overlay = np.asarray(Image.open(out / 'overlay.png'))
    assert overlay.shape == (48, 64, 3)


def test_segment_reports_bad_input_without_traceback(tmp_path, tiny_checkpoint_sam1):
    image = _write_image(tmp_path / 'scene.png')
    missing = tmp_path / 'no_such_model'
    proc = subprocess.run([sys.executable, '-m', 'evf_sam_ros.cli', 'segment', str(image), 'cup',
                           '--model', str(missing), '--device', 'cpu', '--out', str(tmp_path / 'o')],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert 'Traceback' not in proc.stderr and str(missing) in proc.stderr

    proc = subprocess.run([sys.executable, '-m', 'evf_sam_ros.cli', 'segment', str(tmp_path / 'nope.png'),
                           'cup', '--model', str(tiny_checkpoint_sam1), '--out', str(tmp_path / 'o')],
                          capture_output=True, text=True)
    assert proc.returncode != 0 and 'does not exist' in proc.stderr and 'Traceback' not in proc.stderr

    proc = subprocess.run([sys.executable, '-m', 'evf_sam_ros.cli', 'segment', str(image), '   ',
                           '--model', str(tiny_checkpoint_sam1), '--out', str(tmp_path / 'o')],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and 'Traceback' not in proc.stderr, proc.stderr


def test_info_prints_model_summary(tiny_checkpoint_sam1, capsys):
    assert main(['info', '--model', str(tiny_checkpoint_sam1), '--device', 'cpu']) == 0
    info = json.loads(capsys.readouterr().out)
    assert info['has_object_score'] is False and info['parameters'] > 0
