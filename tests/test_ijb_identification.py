"""IJB-B/C 1:N (docs/method.md §3.6): insightface's arithmetic transcribed and compared, the exact open-set
rule checked by hand (a probe whose mate is absent, ties), the off-by-one shown, and the CLI end to end."""

from __future__ import annotations

import csv
import heapq
import math

import numpy as np
import pytest
import torch
from test_ijb import TEMPLATES, _checkpoint, _image2template_loop, _write_ijb, runner_invoke

from topofr_cli.errors import TopofrError
from topofr_cli.evaluation.ijb_identification import (
    IdentificationMeta,
    exact_threshold,
    identify_templates,
    open_set_search,
    read_identification_meta,
)

FPIRS = [1e-3, 1e-2, 1e-1]


# ---------------------------------------------------------------- insightface's 1:N script, transcribed


def _select_templates(template_feats, unique_templates, choose_templates, choose_ids):
    """Its image2template_feature for a chosen list: np.unique with return_index picks each template's
    first subject; the features are the pooled ones (the same pooling as 1:1)."""
    chosen, indices = np.unique(choose_templates, return_index=True)
    rows = [int(np.flatnonzero(unique_templates == t)[0]) for t in chosen]
    return template_feats[rows], chosen, choose_ids[indices]


def _gen_mask(query_ids, reg_ids):
    mask = []
    for query_id in query_ids:
        pos = [i for i, x in enumerate(reg_ids) if query_id == x]
        assert len(pos) == 1
        mask.append(pos[0])
    return mask


def _insightface_evaluation(query_feats, gallery_feats, mask, fars):
    query_num = query_feats.shape[0]
    similarity = np.dot(query_feats, gallery_feats.T)
    top_inds = np.argsort(-similarity)
    tops = []
    for k in (1, 5, 10):
        correct_num = 0
        for i in range(query_num):
            if mask[i] in top_inds[i, 0:k]:
                correct_num += 1
        tops.append(correct_num / query_num)
    required_topk = [math.ceil(query_num * x) for x in fars]
    top_sims = similarity
    pos_sims = []
    for i in range(query_num):
        gt = mask[i]
        pos_sims.append(top_sims[i, gt])
        top_sims[i, gt] = -2.0
    pos_sims = np.array(pos_sims)
    neg_sims = top_sims[np.where(top_sims > -2.0)]
    neg_sims = heapq.nlargest(max(required_topk), neg_sims)
    recalls, thresholds = [], []
    for pos in required_topk:
        th = neg_sims[pos - 1]
        recalls.append(np.sum(pos_sims > th) / query_num)
        thresholds.append(th)
    return tops, recalls, thresholds


def _random_meta(rng, dim=16, subjects=240, probes_per_subject=3, duplicate_gallery=True):
    """Gallery G1 (even subjects) and G2 (odd subjects), one template each; probes of every subject."""
    template_ids = rng.choice(np.arange(1, 100_000), subjects * (1 + probes_per_subject), replace=False)
    centres = rng.normal(size=(subjects, dim))
    feats = np.repeat(centres, 1 + probes_per_subject, axis=0) + 0.9 * rng.normal(
        size=(len(template_ids), dim)
    )
    if duplicate_gallery:  # two gallery templates with identical features: tied scores for every probe
        feats[(1 + probes_per_subject) * 3] = feats[0]
    feats /= np.linalg.norm(feats, axis=1, keepdims=True)
    order = np.argsort(template_ids)
    template_ids, feats = template_ids[order], feats[order]
    subject_of = np.repeat(np.arange(subjects) + 500, 1 + probes_per_subject)[order]
    gallery_rows = np.sort(
        np.searchsorted(template_ids, np.sort(template_ids[np.argsort(order)][:: 1 + probes_per_subject]))
    )
    is_gallery = np.zeros(len(template_ids), dtype=bool)
    is_gallery[gallery_rows] = True
    g1 = is_gallery & (subject_of % 2 == 0)
    g2 = is_gallery & (subject_of % 2 == 1)
    meta = IdentificationMeta(
        {"G1": (template_ids[g1], subject_of[g1]), "G2": (template_ids[g2], subject_of[g2])},
        (template_ids[~is_gallery], subject_of[~is_gallery]),
        {"G1": "g1.csv", "G2": "g2.csv", "probe": "probe.csv"},
    )
    return feats.astype(np.float32), template_ids, meta


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_insightface_rule_equals_its_arithmetic(seed):
    feats, template_ids, meta = _random_meta(np.random.default_rng(seed))
    result = identify_templates(feats, template_ids, meta, "IJBC", rule="insightface")

    # the script's main: concatenate both galleries, pool the chosen templates, mask, evaluate
    gallery_templates = np.concatenate([meta.galleries["G1"][0], meta.galleries["G2"][0]])
    gallery_subjects = np.concatenate([meta.galleries["G1"][1], meta.galleries["G2"][1]])
    g_feats, _, g_ids = _select_templates(feats, template_ids, gallery_templates, gallery_subjects)
    p_feats, _, p_ids = _select_templates(feats, template_ids, *meta.probes)
    mask = _gen_mask(p_ids, g_ids)
    tops, recalls, thresholds = _insightface_evaluation(p_feats, g_feats, mask, FPIRS)

    (merged,) = result.galleries
    assert merged.gallery == "G1+G2"
    assert list(merged.cmc.values()) == tops
    assert list(merged.tpir_at_fpir.values()) == recalls
    assert list(merged.thresholds.values()) == [float(t) for t in thresholds]


def test_insightface_rule_refuses_a_probe_without_a_mate():
    feats, template_ids, meta = _random_meta(np.random.default_rng(0))
    probes, subjects = meta.probes
    meta.probes = (probes, np.where(np.arange(len(subjects)) == 5, 10**6, subjects))
    with pytest.raises(TopofrError, match="has no gallery template"):
        identify_templates(feats, template_ids, meta, "IJBC", rule="insightface")


# ---------------------------------------------------------------- the exact open-set rule, by hand


def _unit(*angles_deg):
    a = np.radians(angles_deg)
    return np.stack([np.cos(a), np.sin(a)], axis=1)


def test_open_set_numbers_by_hand():
    # gallery subjects 1, 2, 3 at 0°, 90°, 180°; probe scores are cosines of the angle differences
    gallery = _unit(0, 90, 180)
    probes = _unit(10, 80, 45, 180, 135, 300)
    subjects = np.array([1, 2, 3, 3, 9, 8])  # probes 5, 6: subjects 9, 8 are not in the gallery
    result = open_set_search("G1", probes, subjects, gallery, np.array([1, 2, 3]), fpir_targets=[0.5, 0.49])
    # probe 3 (45°, subject 3) scores cos 45° on subjects 1 and 2 and -0.707 on its mate: rank 3
    # probe 2 (80°) is nearest subject 2 (cos 10°): rank 1; probes 1 and 4 rank 1
    assert result.cmc == {1: 0.75, 5: 1.0, 10: 1.0}
    assert (result.num_mated, result.num_nonmated) == (4, 2)
    # non-mated best scores: probe 5 (135°) cos 45° = 0.7071, probe 6 (300°) cos 60° = 0.5
    # FPIR 0.5 allows floor(0.5·2) = 1 false alarm: threshold 0.5, accept above it (probe 5 only)
    assert result.thresholds[0.5] == pytest.approx(0.5)
    # hits are rank-1 mates above 0.5: probes 1, 2 (cos 10°) and 4 (cos 0°) → 3 of 4
    assert result.tpir_at_fpir[0.5] == pytest.approx(0.75)
    # FPIR 0.49 allows no false alarm: threshold cos 45°, the same three mates score above it
    assert result.thresholds[0.49] == pytest.approx(np.cos(np.radians(45)))
    assert result.tpir_at_fpir[0.49] == pytest.approx(0.75)


def test_ties_count_against_the_mate_and_the_threshold():
    gallery = _unit(0, 0, 90)  # subjects 1 and 2 have the same template features: a tie
    probes = _unit(0, 0, 90)
    subjects = np.array([1, 7, 3])  # probe 2 is non-mated, its best score ties the mated one
    result = open_set_search("G1", probes, subjects, gallery, np.array([1, 2, 3]), fpir_targets=[0.0, 1.0])
    # probe 1's mate ties with subject 2 at 1.0: rank 2, not 1; probe 3's mate is alone at rank 1
    assert result.cmc[1] == 0.5 and result.cmc[5] == 1.0
    # FPIR 0: threshold 1.0 (the non-mated best score), accept strictly above: nothing
    assert result.thresholds[0.0] == pytest.approx(1.0)
    assert result.tpir_at_fpir[0.0] == 0.0
    # FPIR 1: one false alarm allowed of one: every score accepted, and the one rank-1 mate counts
    assert result.thresholds[1.0] == -np.inf
    assert result.tpir_at_fpir[1.0] == 0.5


def test_exact_threshold_admits_the_allowed_false_alarms_where_insightface_admits_one_fewer():
    scores = np.arange(100, 0, -1) / 100.0  # 100 non-mated best scores 1.00, 0.99, …, 0.01
    for fpir in FPIRS + [0.05, 0.123]:
        t = exact_threshold(scores, fpir)
        alarms = int((scores > t).sum())
        assert alarms == math.floor(fpir * 100 + 1e-9)  # the most that FPIR allows
        # insightface's index: the ceil(f·N)-th largest; strict acceptance admits ceil(f·N) − 1
        insightface_t = sorted(scores, reverse=True)[math.ceil(100 * fpir) - 1]
        insightface_alarms = int((scores > insightface_t).sum())
        whole = abs(fpir * 100 - round(fpir * 100)) < 1e-9
        assert insightface_alarms == (alarms - 1 if whole else alarms)


def test_split_results_agree_with_a_per_probe_loop():
    feats, template_ids, meta = _random_meta(np.random.default_rng(4), duplicate_gallery=False)
    result = identify_templates(feats, template_ids, meta, "IJBC")
    rows = {t: i for i, t in enumerate(template_ids)}
    probes = feats[[rows[t] for t in meta.probes[0]]]
    for split, gallery_result in zip(("G1", "G2"), result.galleries, strict=True):
        templates, subjects = meta.galleries[split]
        gallery = feats[[rows[t] for t in templates]]
        scores = probes @ gallery.T
        nonmated_best, hits = [], []
        for i, subject in enumerate(meta.probes[1]):
            if subject in subjects:
                j = list(subjects).index(subject)
                hits.append(scores[i, j] if scores[i].argmax() == j else -np.inf)
            else:
                nonmated_best.append(scores[i].max())
        nonmated_best = np.sort(nonmated_best)[::-1]
        for fpir in FPIRS:
            t = nonmated_best[math.floor(fpir * len(nonmated_best) + 1e-9)]
            assert gallery_result.tpir_at_fpir[fpir] == pytest.approx(np.mean(np.array(hits) > t))
        assert gallery_result.num_mated == len(hits)


# ---------------------------------------------------------------- files and the CLI


def _write_1n(root, galleries, probes, target="ijbc", names=("G1", "G2")):
    for name, rows in zip(names, galleries, strict=True):
        text = "TEMPLATE_ID,SUBJECT_ID,FILENAME\n" + "".join(f"{t},{s},img/{t}.jpg\n" for t, s in rows)
        (root / "meta" / f"{target}_1N_gallery_{name}.csv").write_text(text)
    text = "TEMPLATE_ID,SUBJECT_ID,FILENAME\n" + "".join(f"{t},{s},img/{t}.jpg\n" for t, s in probes)
    (root / "meta" / f"{target}_1N_probe_mixed.csv").write_text(text)


def test_reader_errors_name_the_file(tmp_path):
    (tmp_path / "meta").mkdir()
    _write_1n(tmp_path, [[(11, 1)], [(12, 2), (13, 2)]], [(14, 1)])
    with pytest.raises(TopofrError, match=r"gallery_G2.csv: subject 2 has several gallery templates"):
        read_identification_meta(tmp_path, "IJBC")
    _write_1n(tmp_path, [[(11, 1)], [(12, 2)]], [(14, 1), (14, 3)])
    with pytest.raises(TopofrError, match=r"probe_mixed.csv: template 14 is listed with two subjects"):
        read_identification_meta(tmp_path, "IJBC")
    (tmp_path / "meta" / "ijbc_1N_probe_mixed.csv").write_text("T,S\n14,x\n")
    with pytest.raises(TopofrError, match=r"probe_mixed.csv: line 2"):
        read_identification_meta(tmp_path, "IJBC")


def test_identification_end_to_end_through_the_cli(calibrated_backbone, tmp_path):
    root = tmp_path / "IJBC"
    _write_ijb(root)
    # gallery G1 = template 11 (subject 1), G2 = template 12 (subject 2); probes 13 (subject 1),
    # 14 (subject 2) and 15 (subject 3, in neither gallery)
    _write_1n(root, [[(11, 1), (11, 1)], [(12, 2)]], [(13, 1), (14, 2), (15, 3)])
    _checkpoint(tmp_path / "backbone.pth", calibrated_backbone)
    out = tmp_path / "out"
    args = ["eval", str(tmp_path / "backbone.pth"), "--ijb", str(root), "--out", str(out)]
    args += ["--batch-size", "4", "--workers", "1", "--device", "cpu", "--ijb-protocol", "both", "--json"]
    result = runner_invoke(args)
    assert result.exit_code == 0, result.output
    assert (out / "ijbc_tar_far.csv").is_file() and (out / "ijbc_1n.png").read_bytes()[:4] == b"\x89PNG"
    with open(out / "ijbc_1n.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert {r["gallery"] for r in rows} == {"G1", "G2"}
    assert rows[0]["model"].endswith("backbone.pth") and "topofr_version" in rows[0]
    g1 = [r for r in rows if r["gallery"] == "G1"]
    assert {(r["mated"], r["nonmated"]) for r in g1} == {("1", "2")}  # one mated probe, two non-mated
    assert [r["value"] for r in g1 if r["measure"] == "cmc"] == ["1.000000"] * 3  # one gallery template

    # 1:N alone embeds by itself; `both` reused the 1:1 run's templates: the same numbers
    one_n = runner_invoke([*args[:-2], "1:N", "--overwrite"])
    assert one_n.exit_code == 0, one_n.output
    with open(out / "ijbc_1n.csv") as handle:
        assert [r["value"] for r in csv.DictReader(handle)] == [r["value"] for r in rows]


def test_bad_protocol_and_missing_1n_file_are_one_line_exit_2(calibrated_backbone, tmp_path):
    root = tmp_path / "IJBC"
    _write_ijb(root)
    _checkpoint(tmp_path / "backbone.pth", calibrated_backbone)
    base = ["eval", str(tmp_path / "backbone.pth"), "--ijb", str(root), "--out", str(tmp_path / "out")]
    bad = runner_invoke([*base, "--ijb-protocol", "2:N"])
    assert bad.exit_code == 2 and "--ijb-protocol 2:N: expected one of 1:1, 1:N, both" in bad.output
    missing = runner_invoke([*base, "--ijb-protocol", "1:N", "--device", "cpu"])
    assert missing.exit_code == 2 and "ijbc_1N_gallery_G1.csv: IJB 1:N file not found" in missing.output
    assert not (tmp_path / "out" / "ijbc_1n.csv").exists()


def test_templates_pooled_as_for_1to1(calibrated_backbone, tmp_path):
    """1:N searches the very template features the 1:1 transcription pools (same flip/norm/score)."""
    from topofr_cli.evaluation.ijb import pool_templates
    from topofr_cli.evaluation.ijb_protocol import read_ijb_meta

    root = tmp_path / "IJBC"
    truth = _write_ijb(root)
    model = _checkpoint(tmp_path / "backbone.pth", calibrated_backbone)
    meta = read_ijb_meta(root, "IJBC")
    pooled = pool_templates(model, root, "IJBC", meta, flip=False, batch_size=4, num_workers=0)
    from PIL import Image

    from topofr_cli.data.align import align_face

    aligned = np.stack(
        [align_face(np.asarray(Image.open(root / "loose_crop" / f"{i}.jpg")), p) for i, _, _, p, _ in truth]
    )
    with torch.no_grad():
        emb = model(torch.from_numpy(aligned).permute(0, 3, 1, 2).float() / 255 * 2 - 1).numpy()
    emb = emb * np.array([s for *_, s in truth])[:, None]
    expected, tids = _image2template_loop(
        emb, np.array([t for _, t, *_ in truth]), np.array([m for _, _, m, *_ in truth])
    )
    assert list(pooled.template_ids) == list(tids) == sorted(TEMPLATES)
    np.testing.assert_allclose(pooled.features, expected, atol=1e-5)
