"""The demo end to end (short version): node + embedded model + synthetic camera + spoken commands."""
import os
import re
import subprocess
import sys

import pytest

pytestmark = [pytest.mark.ros, pytest.mark.slow]


def test_demo_quick(tmp_path, ros_domain_id):
    out = tmp_path / 'demo'
    env = dict(os.environ, ROS_DOMAIN_ID=str(ros_domain_id), ROS_AUTOMATIC_DISCOVERY_RANGE='LOCALHOST')
    proc = subprocess.run([sys.executable, '-m', 'evf_sam_ros.demo', '--quick', '--out', str(out)], env=env,
                          capture_output=True, text=True, timeout=170)
    text = proc.stdout + proc.stderr
    assert proc.returncode == 0, text
    assert 'embedded default model' in text
    rows = [ln for ln in text.splitlines() if re.match(r'\s+\S.*\s(yes|NO)$', ln)]
    assert len(rows) >= 3 * 2, text          # printed per command and again in the final table
    assert re.search(r'\d+/3 commands correct', text)
    assert 'node stopped' in text
    pngs = sorted(p.name for p in out.glob('*.png'))
    assert len(pngs) == 3, pngs
    # nothing left running: the node's process group is gone
    log = (out / 'node.log').read_text()
    assert 'default' in log.lower()
    pid = int(re.search(r'node pid (\d+)', text).group(1))
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
