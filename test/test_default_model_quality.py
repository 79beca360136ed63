"""Quality of the shipped default model on held-out synthetic scenes (seeds never used in training).

Thresholds are what the shipped model reaches (see evf_sam_ros/model/default_model/MODEL_CARD.md)
minus a margin; evaluation is deterministic on CPU.
"""
import numpy as np
import pytest

from evf_sam_ros.model import load_model
from evf_sam_ros.training.datasets import SyntheticDataset
from evf_sam_ros.training.evaluate import evaluate_predictor
from evf_sam_ros.synthetic.splits import TEST_SEED

N_SCENES = 60
# Minimum gIoU per expression kind on seeds 2,000,000 .. +59: the shipped model's scores there
# (all 0.458, colour 0.823, colour+shape 0.636, shape 0.433, relation 0.368, ordinal 0.298, position 0.324,
# size 0.300, no-match 0.417) minus a margin of ~0.05 for CPU kernel differences between machines.
# The goals (colour+shape >= 0.80, overall >= 0.60) are NOT reached (see MODEL_CARD.md).
THRESHOLDS = {'all': 0.41, 'colour': 0.77, 'colour_shape': 0.58, 'shape': 0.38, 'relation': 0.32,
              'ordinal': 0.25, 'position': 0.27, 'size': 0.25, 'no_match': 0.37}
# Median 3D centroid error (robust depth centroid of the predicted mask vs that of the true mask) for
# colour+shape expressions, both with the node's settings (pipeline.mask_centroid_3d): 0.5 cm on these scenes.
MAX_MEDIAN_CENTROID_ERROR_M = 0.03


@pytest.fixture(scope='module')
def results():
    predictor = load_model(None)
    assert predictor.is_default_model
    return evaluate_predictor(predictor, SyntheticDataset(TEST_SEED, N_SCENES))


def test_default_model_is_small_and_loads():
    import pathlib
    d = pathlib.Path(__file__).resolve().parents[1] / 'evf_sam_ros' / 'model' / 'default_model'
    size = sum(p.stat().st_size for p in d.iterdir() if p.is_file())
    assert size < 20e6
    assert (d / 'MODEL_CARD.md').is_file()
    assert 'synthetic' in (d / 'MODEL_CARD.md').read_text().lower()


@pytest.mark.parametrize('kind', sorted(THRESHOLDS))
def test_giou_per_kind(results, kind):
    s = results['scores'][kind]
    assert s['n'] > 10
    assert s['gIoU'] >= THRESHOLDS[kind], f'{kind}: gIoU {s["gIoU"]:.3f} < {THRESHOLDS[kind]}'


def test_centroid_error(results):
    err = results['centroid_error_m']['colour_shape']['median_surface']
    assert err <= MAX_MEDIAN_CENTROID_ERROR_M


def test_evaluation_is_deterministic(results):
    predictor = load_model(None)
    again = evaluate_predictor(predictor, SyntheticDataset(TEST_SEED, 3))
    first = evaluate_predictor(predictor, SyntheticDataset(TEST_SEED, 3))
    assert np.isclose(again['scores']['all']['gIoU'], first['scores']['all']['gIoU'])
