"""Training parity of LOGO-CAP HRNet-W32 with the authors' training code (fixture `logocap_w32` of
$D2POSE_TRAIN_PARITY_DATA, see its README.md and tests/train_parity.py).

The fixture holds what cherubicXN/logocap (DEKR underneath) computed for the forward fixture's
deterministic weights and a fixed batch of two 256 x 320 inputs: the targets of their data pipeline
(augmentation replaced by the identity), the training forward in train mode (heads, the decoder on the
detached maps, candidate matching, the KAM network, the adapted windows), every loss term and the
gradients of one backward. `check_logocap_train_parity` reproduces each step with d2pose's own code
(the COCO W32 config, INPUT.BOTTOMUP.PROTOCOL "dekr": the authors' data pipeline) and lists every
mismatch in a ParityReport:
1. targets from annotations.json through d2pose's bottom-up data path (the mapper the config builds,
   `BottomUpDatasetMapper.training_targets` with the identity affine and no flip), never from
   targets.npz: heatmaps and their loss weights, offsets and their weights, the decoder's ground
   truth (keypoints after the in-input check, areas);
2. the converted weights in the training model (`model.train()`), `LOGOCAP.training_outputs` on
   input.npz with those targets: raw outputs, the decoder's centres and keypoint expansion maps, the
   kept candidates and their matching, the KAMs, the heatmap windows and the adapted windows, the
   decoder's targets (per-cell OKS, their weights, the output-heatmap targets), and every loss term;
3. backward: gradients w.r.t. the raw outputs and the decoder's outputs (retain_grad), per-parameter
   gradient norms by the authors' names (the converter's name table inverted) and the full gradients
   of the last layers.
Coordinates: the authors' are pixel indices, d2pose's continuous (+0.5); the test converts.
The perturbed-fixture tests check that the comparison can fail: a keypoint moved by 3 px, and one
weight changed, each make the report fail on the arrays they must move.
"""
import numpy as np
import torch
from detectron2.modeling import build_model

from d2pose.data.build import build_bottomup_mapper
from d2pose.data.transforms.affine import affine_to_pixel_index
from d2pose_logocap.convert import convert_logocap_official, logocap_official_names
from tests.train_parity import (RAW_INPUT, ParityReport, TrainParityFixture, authors_state_dict,
                                changed_weight, config_path, module_fixture, moved_keypoint, training_cfg,
                                with_fixture_input)

FIXTURE = "logocap_w32"
CONFIG = config_path("LOGOCAP", "logocap_hrnet_w32_512_coco.yaml")
# the authors' data pipeline
AUTHORS_DATA = ["INPUT.BOTTOMUP.PROTOCOL", "dekr"]
# augmentation off: the input is the image (identity affine), no flip
IDENTITY = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
INDEX = np.array([0.5, 0.5, 0.0])  # continuous (x, y, v) -> the authors' pixel indices: subtract


def _dataset_dicts(annotations):
    """annotations.json (pixel-index keypoints, COCO v and boxes) as Detectron2 dataset dicts in
    d2pose's continuous convention (+0.5 on every keypoint, as COCO loading does)."""
    dicts = []
    for image in annotations["images"]:
        anns = []
        for person in image["people"]:
            kps = np.asarray(person["keypoints"], dtype=np.float64).reshape(-1, 3)
            kps[:, :2] += 0.5
            ann = dict(bbox=[float(v) for v in person["bbox"]], bbox_mode=1, keypoints=kps.reshape(-1).tolist(),
                       area=float(person["area"]), iscrowd=int(person.get("iscrowd", 0)), category_id=0)
            if "segmentation" in person:
                ann["segmentation"] = person["segmentation"]
            anns.append(ann)
        dicts.append(dict(file_name="", image_id=image["image_id"], height=image["height"], width=image["width"],
                          annotations=anns))
    return dicts


def make_targets(fixture: TrainParityFixture, report: ParityReport, cfg):
    """Training samples of the fixture's images through d2pose's bottom-up data path (augmentation
    off), with the targets that depend on the annotations only compared with the authors'."""
    size = fixture.annotations["input_size"]
    W, H = size["width"], size["height"]
    mapper = build_bottomup_mapper(cfg, True)
    assert mapper.protocol == "dekr"
    records = _dataset_dicts(fixture.annotations)
    samples = [mapper.training_targets(r, IDENTITY, False, input_wh=(W, H)) for r in records]
    report.target("heatmaps.t", torch.stack([s["heatmaps"] for s in samples]))
    # the decoder's ground truth: the people with labelled keypoints after the in-input check, their areas
    P = fixture.targets["meta_kpts"].shape[1]
    kpts, areas = np.zeros((len(samples), P, 17, 3)), np.zeros((len(samples), P))
    for i, s in enumerate(samples):
        n = min(len(s["keypoints"]), P)
        kpts[i, :n] = s["keypoints"][:n].double().numpy() - INDEX
        areas[i, :n] = s["areas"][:n].double().numpy()
        theirs = int((fixture.targets["meta_areas"][i] > 0).sum())  # zero-padded rows
        if len(s["keypoints"]) != theirs:
            report.fail(f"target meta_kpts: image {i} has {len(s['keypoints'])} people as ground truth, the "
                        f"authors' {theirs}")
    report.target("meta_kpts", kpts)
    report.target("meta_areas", areas)
    transform = np.vstack([affine_to_pixel_index(IDENTITY), [0.0, 0.0, 1.0]])  # the identity on pixel indices too
    report.target("meta_transform", np.stack([transform] * len(samples)))
    return samples


def _candidate_order(ours: np.ndarray, theirs: np.ndarray):
    """Per image, the index of our candidate at each of the authors' centres (matched by position;
    the top-k order among exactly equal scores is the sort's), or None where a centre is not ours."""
    order = []
    for b in range(theirs.shape[0]):
        where = {(float(x), float(y)): i for i, (x, y) in enumerate(ours[b, :, :2])}
        order.append([where.get((float(x), float(y))) for x, y in theirs[b, :, :2]])
    return order


def check_logocap_train_parity(fixture: TrainParityFixture) -> ParityReport:
    """Targets, training forward, losses and gradients of d2pose's LOGO-CAP W32 against the authors'
    (see the module docstring)."""
    report = ParityReport(fixture)
    official = authors_state_dict(fixture)
    state_dict, overrides = convert_logocap_official(official)
    cfg = training_cfg(CONFIG, *overrides, *RAW_INPUT, *AUTHORS_DATA)
    samples = make_targets(fixture, report, cfg)

    torch.manual_seed(0)
    model = build_model(cfg)
    model.load_state_dict(state_dict, strict=True)
    model.train()
    batch = with_fixture_input(fixture, samples)

    # the targets the losses read, in the authors' form: heatmap weights (one channel), offsets in the
    # head's units (cell - keypoint) / stride and their weights
    report.target("heatmaps.w", model.heatmap_loss_weights(batch)[:, :1])
    offsets_t, offsets_w = model.offset_loss_targets(batch)
    report.target("offsets.t", offsets_t)
    report.target("offsets.w", offsets_w)

    t = model.training_outputs(model.normalize(torch.stack([b["image"] for b in batch])), batch)
    for name in ("heatmaps", "raw_offsets", "embedding", "kams", "adapted"):
        t[name].retain_grad()
    losses = model.training_losses(t, batch)
    total = sum(losses.values())
    total.backward()

    # raw outputs
    report.array("heatmaps", t["heatmaps"])
    report.array("offsets", t["raw_offsets"])
    report.array("embedding", t["embedding"])
    # the decoder: centres on the upsampled map and the keypoint expansion maps, in pixel indices;
    # candidates matched to the authors' by position
    exp = fixture.expected
    centers = t["centers"].double().numpy() - INDEX
    order = _candidate_order(centers, exp["decoder_centers"])
    if any(i is None for o in order for i in o):
        report.fail(f"decoder_centers: the top-{centers.shape[1]} centres differ from the authors' "
                    f"({[sum(i is None for i in o) for o in order]} of theirs not ours per image)")
        order = [list(range(centers.shape[1]))] * centers.shape[0]
    perm = [np.asarray(o) for o in order]
    report.array("decoder_centers", np.stack([centers[b, p] for b, p in enumerate(perm)]))
    meshes = t["meshes"].double().numpy() - 0.5
    report.array("decoder_allposes", np.stack([meshes[b, p] for b, p in enumerate(perm)]))
    keep, assignment = t["keep"].numpy(), t["assignment"].numpy()
    report.array("candidate_mask", np.stack([keep[b, p] for b, p in enumerate(perm)]))
    report.array("candidate_assignment", np.stack([assignment[b, p] for b, p in enumerate(perm)]))
    # the kept candidates, in the authors' concatenation order (image, then their candidate index)
    ours_rows = {(int(b), int(i)): row for row, (b, i) in enumerate(zip(t["cand_image"], t["cand_index"]))}
    their_image, their_index = exp["candidate_image"], exp["candidate_index"]
    rows = [ours_rows.get((int(b), int(perm[b][i]))) for b, i in zip(their_image, their_index)]
    report.array("candidate_image", t["cand_image"])
    report.array("candidate_index", np.array([order[b].index(i) if i in order[b] else -1
                                              for b, i in zip(t["cand_image"].tolist(), t["cand_index"].tolist())]))
    if any(r is None for r in rows) or len(rows) != len(ours_rows):
        report.fail(f"candidate_mask: kept candidates {sorted(ours_rows)} are not the authors' "
                    f"{list(zip(their_image.tolist(), their_index.tolist()))}")
        rows = list(range(min(len(ours_rows), len(their_index))))
    rows = torch.as_tensor(rows, dtype=torch.long)

    def kept(name):
        return t[name].detach()[rows]

    report.array("oks_pred", kept("kams"))
    report.array("in_hm_windows", kept("windows_raw"))
    report.array("out_hm", kept("adapted"))
    # the decoder's targets (they depend on the predicted candidates: the noise floor's tolerances)
    targets = fixture.targets
    report.array("oks.joints", kept("kam_targets"), targets["oks.joints"], "target:oks.joints")
    report.array("oks.person", kept("kam_person"), targets["oks.person"], "target:oks.person")
    report.array("oks_weight", kept("kam_weights"), targets["oks_weight"], "target:oks_weight")
    report.array("out_hm (target)", kept("hm_targets"), targets["out_hm"], "target:out_hm")
    # the matched ground truth in pixel indices (the authors' third column is unused by the loss)
    report.array("pose_gt", kept("matched_gt")[..., :2] - 0.5, targets["pose_gt"][..., :2], "target:pose_gt")

    # the loss terms (the authors' factors applied: heatmaps 1.0, offsets 0.01, KAM 0.01, output heatmaps 1.0)
    theirs = fixture.losses["losses"]
    report.loss("loss_heatmaps", losses["loss_heatmap"], theirs["loss.heatmaps"])
    report.loss("loss_offsets", losses["loss_offset"], theirs["loss.offsets"])
    report.loss("loss_oks", losses["loss_kam"], theirs["loss.oks"])
    report.loss("loss_hm", losses["loss_output_heatmap"], theirs["loss.hm"])
    report.loss("total", total, theirs["total"])

    # gradients of the total: w.r.t. the raw outputs and the decoder's outputs, per parameter by the
    # authors' names, the last layers in full
    report.array("grad_heatmaps", t["heatmaps"].grad)
    report.array("grad_offsets", t["raw_offsets"].grad)
    report.array("grad_embedding", t["embedding"].grad)
    report.array("grad_oks_pred", t["kams"].grad[rows])
    report.array("grad_out_hm", t["adapted"].grad[rows])
    to_official = logocap_official_names(official)
    report.parameter_gradients(model, to_official.get)
    return report


fixture = module_fixture(FIXTURE)


def test_logocap_matches_the_authors_training_step(fixture):
    report = check_logocap_train_parity(fixture)
    report.assert_ok()
    report.assert_compared({
        "target:heatmaps.t", "target:heatmaps.w", "target:offsets.t", "target:offsets.w", "target:meta_kpts",
        "target:meta_areas", "heatmaps", "offsets", "embedding", "decoder_centers", "decoder_allposes",
        "candidate_mask", "candidate_assignment", "candidate_image", "candidate_index", "oks_pred",
        "in_hm_windows", "out_hm", "target:oks.joints", "target:oks.person", "target:oks_weight",
        "target:out_hm", "target:pose_gt", "loss:loss_heatmaps", "loss:loss_offsets", "loss:loss_oks",
        "loss:loss_hm", "loss:total", "grad_heatmaps", "grad_offsets", "grad_embedding", "grad_oks_pred",
        "grad_out_hm", "grad_norms"})


def test_logocap_train_parity_fails_on_a_moved_keypoint(fixture):
    """Image 1's large person: its left shoulder (index 5, visible, inside the input) 3 px to the right."""
    move = moved_keypoint(0, 1, 5, require=lambda person, kp: person["role"] == "large")
    report = check_logocap_train_parity(fixture.perturbed(annotations=move))
    report.assert_fails("target heatmaps.t", "target offsets.t", "grad_heatmaps")


def test_logocap_train_parity_fails_on_a_changed_weight(fixture):
    report = check_logocap_train_parity(changed_weight(fixture, "final_layer_cls.weight", (0, 0, 0, 0), 0.05))
    report.assert_fails("heatmaps", "loss loss_heatmaps", "grad_heatmaps", "last:final_layer_cls.weight")
