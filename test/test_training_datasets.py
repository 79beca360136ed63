"""Dataset readers (user folder, RefCOCO), COCO mask decoding, metrics and the grammar tokenizer."""
import json
import pickle

import numpy as np
import pytest
from PIL import Image

from evf_sam_ros.training.datasets import (RefCocoDataset, SyntheticDataset, UserDataset, open_dataset,
                                           polygons_to_mask, rle_decode)
from evf_sam_ros.training.metrics import IoUAccumulator, mask_iou


def _encode_rle_string(counts):
    """COCO's compressed RLE encoder (maskApi.c rleToString), written out to test the decoder."""
    out = []
    for i, x in enumerate(counts):
        if i > 2:
            x -= counts[i - 2]
        more = True
        while more:
            c = x & 0x1F
            x >>= 5
            more = (x != -1) if (c & 0x10) else (x != 0)
            if more:
                c |= 0x20
            out.append(chr(c + 48))
    return ''.join(out)


def _mask_to_counts(mask):
    flat = mask.T.ravel()   # column-major
    counts, val, run = [], False, 0
    for v in flat:
        if v != val:
            counts.append(run)
            run, val = 0, v
        run += 1
    counts.append(run)
    return counts


def test_rle_decode_uncompressed_and_compressed():
    rng = np.random.default_rng(0)
    mask = np.zeros((23, 31), bool)
    mask[3:15, 5:20] = True
    mask[rng.random(mask.shape) > 0.9] = True
    counts = _mask_to_counts(mask)
    assert np.array_equal(rle_decode({'size': [23, 31], 'counts': counts}), mask)
    assert np.array_equal(rle_decode({'size': [23, 31], 'counts': _encode_rle_string(counts)}), mask)


def test_polygon_rasterisation():
    m = polygons_to_mask([[2, 2, 12, 2, 12, 8, 2, 8]], 10, 15)
    assert m.shape == (10, 15)
    assert m[5, 7] and not m[0, 0] and not m[9, 14]
    assert 60 <= m.sum() <= 80      # 11 x 7 inclusive pixels


def test_metrics_definitions():
    a = np.zeros((4, 4), bool)
    b = a.copy()
    assert mask_iou(a, b) == 1.0                # nothing predicted for a no-match expression
    b[0, 0] = True
    assert mask_iou(a, b) == 0.0
    acc = IoUAccumulator()
    p = np.zeros((4, 4), bool)
    p[:2] = True                # 8 px
    g = np.zeros((4, 4), bool)
    g[:1] = True                # 4 px, inside p -> IoU 0.5
    acc.add(p, g, 'x')
    acc.add(np.zeros((4, 4), bool), np.zeros((4, 4), bool), 'none')   # IoU 1, union 0
    s = acc.summary()
    assert s['all']['gIoU'] == pytest.approx(0.75)
    assert s['all']['cIoU'] == pytest.approx(0.5)     # 4 / 8
    assert s['x']['n'] == 1 and s['none']['gIoU'] == 1.0


def test_user_dataset(tmp_path):
    img = np.zeros((20, 30, 3), np.uint8)
    img[5:10, 5:10] = 255
    Image.fromarray(img).save(tmp_path / 'a.png')
    labels = np.zeros((20, 30), np.uint8)
    labels[5:10, 5:10] = 1
    labels[12:15, 20:25] = 2
    Image.fromarray(labels).save(tmp_path / 'a_labels.png')
    lines = [
        {'image': 'a.png', 'mask': 'a_labels.png', 'mask_value': 1, 'expressions': ['the white square', 'top left']},
        {'image': 'a.png', 'mask': 'a_labels.png', 'mask_value': 2, 'expressions': 'the dark one', 'kind': 'k'},
        {'image': 'a.png', 'mask': None, 'expressions': ['the banana']},
        {'image': 'a.png', 'mask': 'a_labels.png', 'expressions': ['both'], 'split': 'val'},
    ]
    (tmp_path / 'annotations.jsonl').write_text('\n'.join(json.dumps(x) for x in lines) + '\n')
    ds = UserDataset(tmp_path, split='train')
    assert len(ds) == 1
    s = ds[0]
    assert s.image.shape == (20, 30, 3)
    assert [e.text for e in s.exprs] == ['the white square', 'top left', 'the dark one', 'the banana']
    assert s.exprs[0].mask.sum() == 25 and s.exprs[2].mask.sum() == 15 and not s.exprs[3].mask.any()
    assert s.exprs[2].kind == 'k'
    val = open_dataset(f'user:{tmp_path}:val')
    assert [e.text for e in val[0].exprs] == ['both'] and val[0].exprs[0].mask.sum() == 40


def test_refcoco_reader(tmp_path):
    root = tmp_path / 'refer_seg'
    (root / 'refcoco').mkdir(parents=True)
    imgdir = root / 'images' / 'mscoco' / 'images' / 'train2014'
    imgdir.mkdir(parents=True)
    Image.fromarray(np.full((40, 50, 3), 128, np.uint8)).save(imgdir / 'COCO_train2014_000000000001.jpg')
    poly_mask = np.zeros((40, 50), bool)
    rle_mask = np.zeros((40, 50), bool)
    rle_mask[20:30, 30:45] = True
    instances = {
        'images': [{'id': 1, 'file_name': 'COCO_train2014_000000000001.jpg', 'height': 40, 'width': 50}],
        'annotations': [
            {'id': 10, 'image_id': 1, 'category_id': 1, 'bbox': [5, 5, 10, 10],
             'segmentation': [[5, 5, 15, 5, 15, 15, 5, 15]]},
            {'id': 11, 'image_id': 1, 'category_id': 2, 'bbox': [30, 20, 15, 10],
             'segmentation': {'size': [40, 50], 'counts': _encode_rle_string(_mask_to_counts(rle_mask))}},
        ],
        'categories': [{'id': 1, 'name': 'a'}, {'id': 2, 'name': 'b'}],
    }
    (root / 'refcoco' / 'instances.json').write_text(json.dumps(instances))
    refs = [
        {'ref_id': 0, 'ann_id': 10, 'image_id': 1, 'split': 'val', 'category_id': 1,
         'sentences': [{'sent': ' Left Square '}, {'sent': 'the grey box'}]},
        {'ref_id': 1, 'ann_id': 11, 'image_id': 1, 'split': 'val', 'category_id': 2,
         'sentences': [{'sent': 'right thing'}]},
        {'ref_id': 2, 'ann_id': 11, 'image_id': 1, 'split': 'train', 'category_id': 2,
         'sentences': [{'sent': 'train only'}]},
    ]
    with open(root / 'refcoco' / 'refs(unc).p', 'wb') as f:
        pickle.dump(refs, f)
    ds = RefCocoDataset(tmp_path, 'refcoco|unc|val')
    assert len(ds) == 1
    s = ds[0]
    assert [e.text for e in s.exprs] == ['left square', 'the grey box', 'right thing']
    poly_mask[5:16, 5:16] = True
    assert mask_iou(s.exprs[0].mask, poly_mask) > 0.95
    assert np.array_equal(s.exprs[2].mask, rle_mask)
    assert len(open_dataset(f'refcoco:{tmp_path}:refcoco|unc|train')[0].exprs) == 1
    with pytest.raises(FileNotFoundError):
        RefCocoDataset(tmp_path, 'refcocog|umd|val')


def test_synthetic_dataset_samples():
    ds = SyntheticDataset(123, 3)
    s = ds[0]
    assert s.image.shape == (192, 256, 3) and s.scene is not None
    for e in s.exprs:
        assert e.mask.shape == (192, 256)
        assert e.mask.any() == (e.target is not None)
    assert [e.text for e in ds[1].exprs] == [e.text for e in SyntheticDataset(124, 1)[0].exprs]


def test_grammar_tokenizer_layout(tmp_path):
    from evf_sam_ros.model.tokenizer import load_tokenizer
    from evf_sam_ros.training.tokenizer import build_tokenizer
    build_tokenizer(tmp_path)
    tok = load_tokenizer(tmp_path)
    ids = tok('find the red cube next to the green ball')['input_ids']
    assert ids[0] == 0 and ids[-1] == 2 and tok.pad_token_id == 1
    assert len(ids) == 11          # one piece per grammar word
    assert 3 not in ids            # no <unk>
    assert len(tok) < 300
