"""A run killed with SIGKILL at an arbitrary iteration and restarted with --resume continues from its
last checkpoint (iteration, optimizer, scheduler, data position); in deterministic mode its final
weights equal an uninterrupted run's. Also the sampler's stream arithmetic on its own."""
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ITERS, PERIOD = 30, 10
OPTS = ["SOLVER.MAX_ITER", str(ITERS), "SOLVER.CHECKPOINT_PERIOD", str(PERIOD), "SOLVER.IMS_PER_BATCH", "4",
        "SOLVER.STEPS", "(15, 25)", "SOLVER.WARMUP_ITERS", "5", "SOLVER.AUTOCAST_DTYPE", "float32", "SEED", "3",
        "SOLVER.DETERMINISTIC", "True", "DATASETS.TRAIN", "('synthetic_pose_val_mini',)", "DATASETS.TEST", "()",
        "DATALOADER.NUM_WORKERS", "1", "INPUT.TOPDOWN.CACHE_IMAGES", "False"]


def _cmd(out, *extra):
    return [sys.executable, os.path.join(ROOT, "train_net.py"), "--config-file",
            os.path.join(ROOT, "projects/RLE/configs/synthetic_rle_topdown.yaml"), *OPTS, "OUTPUT_DIR", str(out), *extra]


def _weights(out):
    return torch.load(out / "model_final.pth", map_location="cpu", weights_only=True)


@pytest.mark.slow
def test_sigkill_then_resume_equals_an_uninterrupted_run(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    full = subprocess.run(_cmd(tmp_path / "full"), capture_output=True, text=True, cwd=ROOT, env=env, timeout=900)
    assert full.returncode == 0, full.stderr[-4000:]
    # the same run, killed (SIGKILL: no cleanup) as soon as its second checkpoint is on disk
    killed = tmp_path / "killed"
    proc = subprocess.Popen(_cmd(killed), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT, env=env)
    # the checkpoint file appears (atomic rename) before Detectron2 names it in `last_checkpoint`,
    # which is what --resume reads: wait for the name
    target = killed / f"model_{2 * PERIOD - 1:07d}.pth"
    tag = killed / "last_checkpoint"

    def _tagged():
        try:
            return tag.read_text().strip() == target.name
        except OSError:
            return False

    deadline = time.time() + 900
    while not _tagged() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert target.exists() and not (killed / "model_final.pth").exists(), "the run ended before it was killed"
    last = tag.read_text().strip()
    assert last.startswith("model_") and last != "model_final.pth", last
    resume_at = int(last[len("model_"):-len(".pth")]) + 1  # normally 2 * PERIOD; later if the kill came late
    # every checkpoint on disk is whole (atomic writes: a kill mid-write leaves at most a temporary
    # file beside them, never a truncated checkpoint); the last one is what --resume reads
    import torch

    for p in killed.glob("model_*.pth"):
        torch.load(p, map_location="cpu", weights_only=True)
    resumed = subprocess.run(_cmd(killed, "--resume"), capture_output=True, text=True, cwd=ROOT, env=env, timeout=900)
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    log = resumed.stdout + resumed.stderr
    assert f"resuming at iteration {resume_at}" in log and f"continues at sample {resume_at * 4}" in log, log[-3000:]
    a, b = _weights(tmp_path / "full"), _weights(killed)
    assert a["iteration"] == b["iteration"] == ITERS - 1
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    # optimizer and scheduler states travel in Detectron2's "trainer" entry, the stream seed in "data_sampler"
    assert str(a["trainer"]) == str(b["trainer"]) and a["data_sampler"] == b["data_sampler"]
    assert "optimizer" in a["trainer"]["_trainer"] and a["trainer"]["hooks"]


def test_sampler_resumes_the_stream_and_shards_it():
    from d2pose.data.samplers import ResumableTrainingSampler

    def take(s, n):
        it = iter(s)
        return [next(it) for _ in range(n)]

    whole = take(ResumableTrainingSampler(7, seed=5), 30)
    later = ResumableTrainingSampler(7, seed=5)
    later.start = 12
    assert take(later, 18) == whole[12:]
    # positions, and the same stream as Detectron2's TrainingSampler
    from detectron2.data.samplers import TrainingSampler

    assert take(TrainingSampler(7, seed=5), 30) == whole
    pos = ResumableTrainingSampler(7, seed=5, positions=True)
    pos.start = 4
    assert take(pos, 3) == [(4, whole[4]), (5, whole[5]), (6, whole[6])]
    # the seed travels with the checkpoints
    other = ResumableTrainingSampler(7, seed=99)
    other.load_state_dict(ResumableTrainingSampler(7, seed=5).state_dict())
    assert take(other, 30) == whole
    with pytest.raises(ValueError, match="another dataset"):
        ResumableTrainingSampler(8, seed=1).load_state_dict({"seed": 5, "size": 7})
