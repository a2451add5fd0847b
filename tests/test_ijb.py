"""IJB-B/C 1:1 (§3.4): pooling/scoring/TAR@FAR against insightface's loops, meta-file errors, and a
tiny IJB-style directory evaluated end to end through the CLI."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import sklearn.metrics
import sklearn.preprocessing
import torch
from PIL import Image
from typer.testing import CliRunner

from topofr_cli.cli.app import app
from topofr_cli.data.align import ARCFACE_TEMPLATE, align_face
from topofr_cli.errors import TopofrError
from topofr_cli.evaluation.ijb_protocol import (
    TemplatePooler,
    image_features,
    read_ijb_meta,
    roc_curve,
    score_pairs,
    tar_at_far,
)
from topofr_cli.models import create_backbone

FARS = [1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1]


def runner_invoke(args):
    return CliRunner().invoke(app, args)


# ---------------------------------------------------------------- insightface's loops, transcribed


def _image2template_loop(img_feats, templates, medias):
    unique_templates = np.unique(templates)
    template_feats = np.zeros((len(unique_templates), img_feats.shape[1]))
    for count_template, uqt in enumerate(unique_templates):
        (ind_t,) = np.where(templates == uqt)
        face_feats, face_medias = img_feats[ind_t], medias[ind_t]
        unique_medias, counts = np.unique(face_medias, return_counts=True)
        media_feats = []
        for u, ct in zip(unique_medias, counts, strict=True):
            (ind_m,) = np.where(face_medias == u)
            media_feats += (
                [face_feats[ind_m]] if ct == 1 else [np.mean(face_feats[ind_m], axis=0, keepdims=True)]
            )
        template_feats[count_template] = np.sum(np.array(media_feats), axis=0)
    return sklearn.preprocessing.normalize(template_feats), unique_templates


def _verification_loop(template_feats, unique_templates, p1, p2):
    template2id = np.zeros((max(unique_templates) + 1, 1), dtype=int)
    for count, uqt in enumerate(unique_templates):
        template2id[uqt] = count
    feat1 = template_feats[template2id[p1]]
    feat2 = template_feats[template2id[p2]]
    return np.sum(feat1 * feat2, -1).flatten()


def _tar_loop(labels, scores):
    fpr, tpr, _ = sklearn.metrics.roc_curve(labels, scores)
    fpr, tpr = np.flipud(fpr), np.flipud(tpr)
    row = []
    for far in FARS:
        _, min_index = min(list(zip(abs(fpr - far), range(len(fpr)), strict=True)))
        row.append(tpr[min_index])
    return row


# ---------------------------------------------------------------- protocol pieces


def _random_protocol(seed, num_images=400, num_templates=60, num_pairs=3000, dim=24):
    rng = np.random.default_rng(seed)
    template_ids = rng.choice(np.arange(1, 10_000), num_templates, replace=False)
    templates = np.concatenate([template_ids, rng.choice(template_ids, num_images - num_templates)])
    medias = rng.integers(0, 40, num_images)  # shared media ids across templates, repeats inside them
    feats = rng.normal(size=(num_images, dim)).astype(np.float32)
    pairs = np.stack([rng.choice(template_ids[:20], num_pairs), rng.choice(template_ids, num_pairs)], axis=1)
    return feats, templates, medias, pairs, rng


@pytest.mark.parametrize("seed,block_bytes", [(0, 256 * 2**20), (1, 4 * 1024)])
def test_pooling_and_scores_match_insightface_loops(seed, block_bytes):
    feats, templates, medias, pairs, rng = _random_protocol(seed)
    scores_det = rng.uniform(0.5, 1.0, len(feats)).astype(np.float32)
    processed = image_features(feats, scores_det, use_norm_score=True, use_detector_score=True)
    np.testing.assert_allclose(processed, feats * scores_det[:, None], rtol=1e-6)

    pooler = TemplatePooler(templates, medias, feats.shape[1])
    for start in range(0, len(processed), 64):  # streamed in chunks
        pooler.add(processed[start : start + 64])
    scores = score_pairs(pooler.template_features(), pooler.template_ids, pairs, block_bytes=block_bytes)

    loop_feats, loop_templates = _image2template_loop(processed, templates, medias)
    np.testing.assert_array_equal(pooler.template_ids, loop_templates)
    np.testing.assert_allclose(pooler.template_features().numpy(), loop_feats, atol=1e-6)
    np.testing.assert_allclose(
        scores, _verification_loop(loop_feats, loop_templates, pairs[:, 0], pairs[:, 1]), atol=2e-6
    )


def test_no_norm_drops_the_norm_before_pooling():
    feats = np.array([[3.0, 4.0], [0.0, 2.0]], dtype=np.float32)
    out = image_features(feats, np.array([0.5, 1.0]), use_norm_score=False, use_detector_score=True)
    np.testing.assert_allclose(out, [[0.3, 0.4], [0.0, 1.0]], rtol=1e-6)


def test_roc_curve_matches_sklearn_with_ties():
    rng = np.random.default_rng(2)
    labels = rng.random(5000) < 0.1
    scores = np.round(rng.normal(size=5000) + labels, 1)  # many ties
    ours, theirs = roc_curve(labels, scores), sklearn.metrics.roc_curve(labels, scores)
    for a, b in zip(ours, theirs, strict=True):
        np.testing.assert_array_equal(a, b)


def test_tar_at_far_nearest_fpr_rule_by_hand():
    fpr = np.array([0.0, 0.0, 0.1, 0.1, 0.5, 1.0])
    tpr = np.array([0.0, 0.3, 0.5, 0.6, 0.9, 1.0])
    got = tar_at_far(fpr, tpr, (1e-6, 1e-2, 0.1, 0.7))
    # ties at the same FPR take the largest TPR; 0.7 is nearer 0.5 (gap 0.2) than 1.0 (gap 0.3)
    assert got == {1e-6: 0.3, 1e-2: 0.3, 0.1: 0.6, 0.7: 0.9}


def test_tar_at_far_matches_insightface_expression():
    rng = np.random.default_rng(4)
    labels = rng.random(20000) < 0.05
    scores = rng.normal(size=20000) + 2 * labels
    fpr, tpr, _ = roc_curve(labels, scores)
    assert list(tar_at_far(fpr, tpr, FARS).values()) == _tar_loop(labels, scores)


# ---------------------------------------------------------------- a tiny IJB directory

TEMPLATES = {
    11: [(0, 100), (1, 100), (2, 101)],
    12: [(3, 102)],
    13: [(4, 103), (5, 103)],
    14: [(6, 104), (7, 105)],
    15: [(8, 106), (9, 106), (10, 107)],
}  # template: [(image, media)]
PAIRS = [
    (11, 12, 1),
    (11, 13, 0),
    (11, 14, 0),
    (12, 13, 1),
    (12, 15, 0),
    (13, 14, 0),
    (13, 15, 1),
    (14, 15, 0),
    (11, 15, 0),
    (12, 14, 1),
]


def _write_ijb(root, *, landmark_rows=None):
    (root / "meta").mkdir(parents=True)
    (root / "loose_crop").mkdir()
    rng = np.random.default_rng(9)
    tid_rows, lmk_rows, truth = [], [], []
    for template, members in TEMPLATES.items():
        for image, media in members:
            name = f"{image}.jpg"
            rgb = rng.integers(0, 256, (150, 160, 3), dtype=np.uint8)
            Image.fromarray(rgb).save(root / "loose_crop" / name, quality=95)
            offset = rng.uniform(5, 30, 2)
            # float32 of the 4-decimal text, as insightface parses the landmark file
            points = np.round(ARCFACE_TEMPLATE * rng.uniform(0.9, 1.2) + offset, 4).astype(np.float32)
            score = rng.uniform(0.6, 1.0)
            tid_rows.append(f"{name} {template} {media}")
            lmk_rows.append(" ".join([name, *(f"{v:.4f}" for v in points.reshape(-1)), f"{score:.4f}"]))
            truth.append((image, template, media, points, np.float32(f"{score:.4f}")))
    (root / "meta" / "ijbc_face_tid_mid.txt").write_text("\n".join(tid_rows) + "\n")
    (root / "meta" / "ijbc_name_5pts_score.txt").write_text("\n".join(landmark_rows or lmk_rows) + "\n")
    (root / "meta" / "ijbc_template_pair_label.txt").write_text(
        "\n".join(f"{a} {b} {c}" for a, b, c in PAIRS) + "\n"
    )
    return truth


def _checkpoint(path, calibrated_backbone, seed=0):
    model = calibrated_backbone("mbf", 16, seed)
    torch.save(model.state_dict(), path)
    return model


def test_ijb_end_to_end_through_the_cli(calibrated_backbone, tmp_path):
    truth = _write_ijb(tmp_path / "IJBC")
    model = _checkpoint(tmp_path / "backbone.pth", calibrated_backbone)
    out = tmp_path / "out"
    result = runner_invoke(
        [
            "eval",
            str(tmp_path / "backbone.pth"),
            "--ijb",
            str(tmp_path / "IJBC"),
            "--target",
            "IJBC",
            "--out",
            str(out),
            "--batch-size",
            "4",
            "--num-workers",
            "1",
            "--device",
            "cpu",
            "--no-flip",
        ]
    )
    assert result.exit_code == 0, result.output

    # independent pipeline: align, embed (no flip, as asked), weight, insightface loops, sklearn ROC
    aligned = np.stack(
        [
            align_face(np.asarray(Image.open(tmp_path / "IJBC" / "loose_crop" / f"{i}.jpg")), p)
            for i, _, _, p, _ in truth
        ]
    )
    x = torch.from_numpy(aligned).permute(0, 3, 1, 2).float() / 255 * 2 - 1
    with torch.no_grad():
        feats = model(x).numpy()
    feats = feats * np.array([s for *_, s in truth])[:, None]
    templates = np.array([t for _, t, *_ in truth])
    medias = np.array([m for _, _, m, *_ in truth])
    tfeats, tids = _image2template_loop(feats, templates, medias)
    pairs = np.array(PAIRS)
    expected_scores = _verification_loop(tfeats, tids, pairs[:, 0], pairs[:, 1])
    scores = np.load(out / "ijbc_scores.npy")
    np.testing.assert_allclose(scores, expected_scores, atol=1e-4)
    with open(out / "ijbc_tar_far.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [float(r["far"]) for r in rows] == FARS
    # the TAR rule on the very scores written (float32 rounding may swap two near-equal scores)
    np.testing.assert_allclose([float(r["tar"]) for r in rows], _tar_loop(pairs[:, 2], scores), atol=1e-6)
    assert (out / "ijbc_roc.png").read_bytes()[:4] == b"\x89PNG"
    assert "TAR@FAR" in result.output


def test_ijb_meta_with_wrong_column_count_names_file_and_line(tmp_path):
    _write_ijb(tmp_path / "IJBC")
    lines = (tmp_path / "IJBC" / "meta" / "ijbc_face_tid_mid.txt").read_text().splitlines()
    lines[3] += " 7"
    (tmp_path / "IJBC" / "meta" / "ijbc_face_tid_mid.txt").write_text("\n".join(lines) + "\n")
    torch.save(create_backbone("mbf", 16).state_dict(), tmp_path / "b.pth")
    result = runner_invoke(
        [
            "eval",
            str(tmp_path / "b.pth"),
            "--ijb",
            str(tmp_path / "IJBC"),
            "--device",
            "cpu",
            "--out",
            str(tmp_path / "out"),
        ]
    )
    assert result.exit_code == 2
    assert "ijbc_face_tid_mid.txt: line 4: 4 columns, expected 3" in result.output
    assert not (tmp_path / "out").exists()


def test_ijb_unknown_template_and_bad_rows(tmp_path):
    _write_ijb(tmp_path / "IJBC")
    pairs = tmp_path / "IJBC" / "meta" / "ijbc_template_pair_label.txt"
    pairs.write_text(pairs.read_text() + "11 99 0\n")
    with pytest.raises(TopofrError, match=r"ijbc_template_pair_label.txt: row 11: template 99 has no images"):
        read_ijb_meta(tmp_path / "IJBC", "IJBC")
    pairs.write_text("11 12 x\n")
    with pytest.raises(TopofrError, match=r"line 1: column 3 is 'x', expected int"):
        read_ijb_meta(tmp_path / "IJBC", "IJBC")


def test_ijb_landmark_rows_must_match_image_rows(tmp_path):
    _write_ijb(tmp_path / "IJBC")
    path = tmp_path / "IJBC" / "meta" / "ijbc_name_5pts_score.txt"
    lines = path.read_text().splitlines()
    lines[2], lines[3] = lines[3], lines[2]
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(TopofrError, match=r"ijbc_name_5pts_score.txt: row 3 is 3.jpg, but row 3 .* is 2.jpg"):
        read_ijb_meta(tmp_path / "IJBC", "IJBC")


def test_missing_image_names_file_and_row(tmp_path):
    _write_ijb(tmp_path / "IJBC")
    (tmp_path / "IJBC" / "loose_crop" / "5.jpg").unlink()
    torch.save(create_backbone("mbf", 16).state_dict(), tmp_path / "b.pth")
    result = runner_invoke(
        [
            "eval",
            str(tmp_path / "b.pth"),
            "--ijb",
            str(tmp_path / "IJBC"),
            "--device",
            "cpu",
            "--num-workers",
            "0",
            "--no-flip",
        ]
    )
    assert result.exit_code == 2
    assert "5.jpg: image not found (row 6 of ijbc_name_5pts_score.txt)" in result.output


def test_template_positions_table_and_search_paths():
    from topofr_cli.evaluation import ijb_protocol

    ids = np.array([3, 7, 20])
    query = np.array([[7, 3], [20, 5], [-1, 21]])
    expected = np.array([[1, 0], [2, -1], [-1, -1]])
    np.testing.assert_array_equal(ijb_protocol.template_positions(ids, query), expected)
    sparse = np.array([3, 7, 10**12])  # id range too wide for a table: binary search
    np.testing.assert_array_equal(
        ijb_protocol.template_positions(sparse, np.array([10**12, 8, 3])), [2, -1, 0]
    )


def test_unit_features_normalises_each_image_before_pooling(calibrated_backbone, tmp_path):
    truth = _write_ijb(tmp_path / "IJBC")
    model = _checkpoint(tmp_path / "backbone.pth", calibrated_backbone)
    scores = {}
    for flag in ("--unit-features", "--no-norm"):  # the new name and the old one it replaces
        out = tmp_path / flag.strip("-")
        result = runner_invoke(
            [
                "eval",
                str(tmp_path / "backbone.pth"),
                "--ijb",
                str(tmp_path / "IJBC"),
                flag,
                "--out",
                str(out),
                "--batch-size",
                "4",
                "--workers",
                "0",
                "--device",
                "cpu",
                "--no-flip",
            ]
        )
        assert result.exit_code == 0, result.output
        scores[flag] = np.load(out / "ijbc_scores.npy")
    np.testing.assert_array_equal(scores["--unit-features"], scores["--no-norm"])

    # insightface with use_norm_score=False: each image feature L2-normalised, then detector-weighted
    aligned = np.stack(
        [
            align_face(np.asarray(Image.open(tmp_path / "IJBC" / "loose_crop" / f"{i}.jpg")), p)
            for i, _, _, p, _ in truth
        ]
    )
    x = torch.from_numpy(aligned).permute(0, 3, 1, 2).float() / 255 * 2 - 1
    with torch.no_grad():
        feats = model(x).numpy()
    feats = feats / np.linalg.norm(feats, axis=1, keepdims=True) * np.array([s for *_, s in truth])[:, None]
    tfeats, tids = _image2template_loop(
        feats, np.array([t for _, t, *_ in truth]), np.array([m for _, _, m, *_ in truth])
    )
    pairs = np.array(PAIRS)
    np.testing.assert_allclose(
        scores["--unit-features"], _verification_loop(tfeats, tids, pairs[:, 0], pairs[:, 1]), atol=1e-4
    )
