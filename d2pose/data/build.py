"""Data loaders for the three pipelines, picked by `INPUT.PIPELINE`:
"detectron2" (Detectron2's own, e.g. Keypoint R-CNN), "topdown" (person crops) and "bottomup"."""
import logging

from detectron2.data import (
    DatasetMapper,
    MetadataCatalog,
    build_detection_test_loader,
    build_detection_train_loader,
    get_detection_dataset_dicts,
)

from .bottomup_mapper import BottomUpDatasetMapper
from .robust import SkipUnreadableImages, drop_missing_images
from .samplers import PositionedMapDataset, ResumableTrainingSampler
from .topdown import TopDownDatasetMapper, attach_person_detections, person_instances

__all__ = ["build_pose_train_loader", "build_pose_test_loader", "build_bottomup_mapper", "min_center_area"]

logger = logging.getLogger(__name__)


def build_bottomup_mapper(cfg, is_train: bool) -> BottomUpDatasetMapper:
    """The bottom-up pipeline's mapper of cfg (INPUT.BOTTOMUP, the flip indices of the first training
    or test dataset), for training or for testing."""
    b = cfg.INPUT.BOTTOMUP
    meta = MetadataCatalog.get(cfg.DATASETS.TRAIN[0] if is_train else cfg.DATASETS.TEST[0])
    return BottomUpDatasetMapper(is_train, flip_indices=meta.keypoint_flip_indices, input_size=b.INPUT_SIZE,
                                 stride=b.STRIDE, test_short_side=b.TEST_SHORT_SIDE, image_format=cfg.INPUT.FORMAT,
                                 max_rotation=b.MAX_ROTATION, scale_range=tuple(b.SCALE_RANGE),
                                 max_translation=b.MAX_TRANSLATION, flip_prob=b.FLIP_PROB, protocol=b.PROTOCOL,
                                 min_area=min_center_area(cfg))


def min_center_area(cfg) -> float:
    """The bottom-up small-person rule, INPUT.BOTTOMUP.MIN_CENTER_AREA (source-image pixels; people
    below it get no centre in training), checked: a number >= 0."""
    value = cfg.INPUT.BOTTOMUP.MIN_CENTER_AREA
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise ValueError(f"INPUT.BOTTOMUP.MIN_CENTER_AREA must be a source-image area in pixels >= 0 "
                         f"(32^2 = 1024 as the authors), got {value!r}")
    return float(value)


def build_pose_train_loader(cfg):
    """The training loader of cfg's pipeline. Its sampler (`loader.d2pose_sampler`) is a
    :class:`ResumableTrainingSampler` (a resumed run continues the data stream where it stopped);
    with `SOLVER.DETERMINISTIC: True` each sample's augmentation is seeded by its stream position."""
    pipeline = cfg.INPUT.PIPELINE
    if pipeline not in ("detectron2", "topdown", "bottomup"):
        raise ValueError(f"INPUT.PIPELINE must be 'detectron2', 'topdown' or 'bottomup', got {pipeline!r}")
    deterministic = bool(cfg.SOLVER.get("DETERMINISTIC", False))
    if deterministic and cfg.SEED < 0:
        raise ValueError("SOLVER.DETERMINISTIC: True needs a fixed SEED (>= 0), got SEED -1 (random)")
    if pipeline == "detectron2":
        from detectron2.data.build import _train_loader_from_config

        kwargs = _train_loader_from_config(cfg, mapper=DatasetMapper(cfg, True))
        dataset, mapper = kwargs.pop("dataset"), kwargs.pop("mapper")
        if cfg.DATALOADER.SAMPLER_TRAIN != "TrainingSampler":  # repeat-factor / subset samplers: Detectron2's
            kwargs["mapper"] = SkipUnreadableImages(mapper)
            return build_detection_train_loader(dataset=dataset, **kwargs)
        kwargs.pop("sampler", None)
    else:
        kwargs = dict(total_batch_size=cfg.SOLVER.IMS_PER_BATCH, aspect_ratio_grouping=cfg.DATALOADER.ASPECT_RATIO_GROUPING,
                      num_workers=cfg.DATALOADER.NUM_WORKERS)
        dataset = get_detection_dataset_dicts(cfg.DATASETS.TRAIN, filter_empty=False)
        if pipeline == "topdown":
            dataset = person_instances(dataset, min_keypoints=cfg.INPUT.TOPDOWN.MIN_KEYPOINTS)
            mapper = TopDownDatasetMapper(cfg, is_train=True)
        else:
            mapper = build_bottomup_mapper(cfg, True)
    sampler = ResumableTrainingSampler(len(dataset), seed=cfg.SEED if cfg.SEED >= 0 else None, positions=deterministic)
    mapper = SkipUnreadableImages(mapper)
    extra = {}
    if deterministic:  # aspect-ratio buckets would make a batch's samples depend on the buffering
        dataset, mapper = PositionedMapDataset(dataset, mapper, cfg.SEED), None
        extra["aspect_ratio_grouping"] = False
    kwargs.update(extra)
    # explicit arguments (no cfg): with cfg, Detectron2 would put its own DatasetMapper in place of None
    loader = build_detection_train_loader(dataset=dataset, mapper=mapper, sampler=sampler, **kwargs)
    loader.d2pose_sampler = sampler
    return loader


def build_pose_test_loader(cfg, dataset_name: str):
    pipeline = cfg.INPUT.PIPELINE
    if pipeline == "detectron2":
        proposals = None
        if cfg.MODEL.LOAD_PROPOSALS:  # as Detectron2's build_detection_test_loader(cfg, name)
            proposals = [cfg.DATASETS.PROPOSAL_FILES_TEST[list(cfg.DATASETS.TEST).index(dataset_name)]]
        dicts = get_detection_dataset_dicts([dataset_name], filter_empty=False, proposal_files=proposals)
        dicts = drop_missing_images(dicts, dataset_name)
        return build_detection_test_loader(dicts, mapper=SkipUnreadableImages(DatasetMapper(cfg, False), skip=False),
                                           num_workers=cfg.DATALOADER.NUM_WORKERS)
    dicts = drop_missing_images(get_detection_dataset_dicts([dataset_name], filter_empty=False), dataset_name)
    if pipeline == "topdown":
        if cfg.TEST.PERSON_DETECTIONS:
            dicts = attach_person_detections(dicts, cfg.TEST.PERSON_DETECTIONS, cfg.TEST.PERSON_DETECTION_SCORE_THRESH)
        return build_detection_test_loader(dicts, mapper=SkipUnreadableImages(TopDownDatasetMapper(cfg, is_train=False),
                                                                              skip=False),
                                           num_workers=cfg.DATALOADER.NUM_WORKERS)
    if pipeline == "bottomup":
        mapper = SkipUnreadableImages(build_bottomup_mapper(cfg, False), skip=False)
        return build_detection_test_loader(dicts, mapper=mapper, num_workers=cfg.DATALOADER.NUM_WORKERS)
    raise ValueError(f"INPUT.PIPELINE must be 'detectron2', 'topdown' or 'bottomup', got {pipeline!r}")
